"""A faster reader of Gremlin Server's GraphBinary responses, for the types our traversals return.

gremlinpython decodes GraphBinary one object at a time through a class per type, a ``BytesIO`` read per
field and an enum lookup per type code: ~3 µs an object. A scoring request's answer is 1,000–2,000 small
objects (maps of property names to values), so its decoding alone was ~4 ms of CPU, a third of the whole
request's budget. This reader walks the bytes with ``struct.unpack_from`` at an offset and one dispatch on
the type code, producing the very values gremlinpython produces (naive UTC datetimes, ``Traverser``s,
``T``/``Direction`` members, bulk sets expanded). Any type it does not know — paths, vertices, edges,
metrics, exotic numbers — makes the whole message fall back to gremlinpython's own reader, so nothing
is ever decoded differently, only faster.
"""

from __future__ import annotations

import struct
import uuid
from datetime import datetime, timedelta
from typing import Any

from gremlin_python.driver.serializer import GraphBinarySerializersV1
from gremlin_python.process.traversal import Direction, T, Traverser
from gremlin_python.statics import SingleByte

_I32 = struct.Struct(">i").unpack_from
_I64 = struct.Struct(">q").unpack_from
_F64 = struct.Struct(">d").unpack_from
_F32 = struct.Struct(">f").unpack_from
_I16 = struct.Struct(">h").unpack_from
_I8 = struct.Struct(">b").unpack_from
_EPOCH = datetime(1970, 1, 1)
_ENUMS = {0x20: T, 0x18: Direction}


class _Unsupported(Exception):
    """A type this fast decoder does not read: the caller falls back to gremlinpython's own decoder.

    Private control flow, not an ``IdentigraphError``: it is raised and caught inside this module and
    never reaches a user, so it names no fix and carries no status.
    """


def _read(b: bytes, i: int) -> tuple[Any, int]:
    """One fully qualified value at ``i``: (value, offset after it)."""
    code = b[i]
    if code == 0xFE:  # unspecified null
        return None, i + 2
    if b[i + 1] == 0x01:  # value flag: null
        return None, i + 2
    i += 2
    if code == 0x03:
        n = _I32(b, i)[0]
        i += 4
        return b[i:i + n].decode("utf-8"), i + n
    if code == 0x0A:
        return _bare_map(b, i)
    if code == 0x09 or code == 0x0B:
        n = _I32(b, i)[0]
        i += 4
        items = []
        for _ in range(n):
            v, i = _read(b, i)
            items.append(v)
        return (items if code == 0x09 else set(items)), i
    if code == 0x02:
        return _I64(b, i)[0], i + 8
    if code == 0x01:
        return _I32(b, i)[0], i + 4
    if code == 0x07:
        return _F64(b, i)[0], i + 8
    if code == 0x04:
        return _EPOCH + timedelta(milliseconds=_I64(b, i)[0]), i + 8
    if code == 0x27:
        return b[i] == 0x01, i + 1
    if code == 0x21:
        bulk = _I64(b, i)[0]
        v, i = _read(b, i + 8)
        return Traverser(v, bulk=bulk), i
    if code == 0x2A:
        n = _I32(b, i)[0]
        i += 4
        items = []
        for _ in range(n):
            v, i = _read(b, i)
            items.extend([v] * _I64(b, i)[0])
            i += 8
        return items, i
    if code == 0x08:
        return _F32(b, i)[0], i + 4
    if code == 0x26:
        return _I16(b, i)[0], i + 2
    if code == 0x24:
        return SingleByte(_I8(b, i)[0]), i + 1
    if code == 0x0C:
        return uuid.UUID(bytes=bytes(b[i:i + 16])), i + 16
    if code in _ENUMS:
        name, i = _read(b, i)
        return _ENUMS[code][name], i
    raise _Unsupported(f"GraphBinary type 0x{code:02x}")


class FastGraphBinarySerializer(GraphBinarySerializersV1):
    """gremlinpython's GraphBinary serializer with the response decoding above (requests unchanged)."""

    def deserialize_message(self, message: Any) -> dict[str, Any]:
        if isinstance(message, str):
            return super().deserialize_message(message)
        try:
            return self._fast(memoryview(message).tobytes() if not isinstance(message, bytes) else message)
        except (_Unsupported, IndexError, KeyError, struct.error, UnicodeDecodeError):
            return super().deserialize_message(message)

    @staticmethod
    def _fast(b: bytes) -> dict[str, Any]:
        i = 1  # version byte
        request_id = None
        if b[i] == 0x00:  # nullable UUID: value flag, then 16 bytes
            request_id = str(uuid.UUID(bytes=b[i + 1:i + 17]))
            i += 17
        else:
            i += 1
        status_code = _I32(b, i)[0]
        i += 4
        status_msg = None
        if b[i] == 0x00:  # nullable string
            n = _I32(b, i + 1)[0]
            status_msg = b[i + 5:i + 5 + n].decode("utf-8")
            i += 5 + n
        else:
            i += 1
        attrs, i = _bare_map(b, i)
        meta, i = _bare_map(b, i)
        data, i = _read(b, i)
        return {"requestId": request_id, "status": {"code": status_code, "message": status_msg, "attributes": attrs},
                "result": {"meta": meta, "data": data}}


def _bare_map(b: bytes, i: int) -> tuple[dict[Any, Any], int]:
    """A map written as a value only (no type code, no flag): its size, then fully qualified pairs."""
    n = _I32(b, i)[0]
    i += 4
    out = {}
    for _ in range(n):
        k, i = _read(b, i)
        if isinstance(k, (dict, list, set)):
            raise _Unsupported("unhashable map key")
        out[k], i = _read(b, i)
    return out, i
