"""The graph snapshot: Amazon Neptune's Gremlin bulk-load CSV, one format for three uses.

Neptune's bulk loader reads it as it is, the model trains from it, and anyone can bring their own graph
in it. Layout::

    SNAPSHOT/vertices/<label>/part-*.csv     ~id,~label,<name>:<Type>,...
    SNAPSHOT/edges/<label>/part-*.csv        ~id,~from,~to,~label,<name>:<Type>,...
    SNAPSHOT/history/blocks/part-*.csv       raw block history known at as-of (input-contract columns)
    SNAPSHOT/history/care_contacts/part-*.csv
    SNAPSHOT/_quarantine/<table>/            rows that broke the contract, with the reason
    SNAPSHOT/_summary.json                   as-of, counts, quarantine by reason, durations

CSV is RFC-4180: fields quoted with ``"`` and embedded quotes doubled (not Spark's default backslash).
Timestamps are ISO-8601 UTC with milliseconds (``2026-06-30T08:15:00.000Z``); empty means no value.

The history tables carry what the labeling job needs (every block with reason, source and lifting, every
care contact) at full fidelity; the customer vertices carry a summary of the same facts at as-of
(``blocked``, ``n_blocks``, ``last_block_*``, ``n_block_reviews``, …) for scoring and explanations.
"""

from __future__ import annotations

import csv
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from identigraph.errors import SchemaError
from identigraph.graph import schema

TS_FORMAT_SPARK = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"

CUSTOMER_COLUMNS = schema.CUSTOMER_PROPERTY_TYPES  # name -> Neptune type, in header order
IDENTIFIER_COLUMNS = schema.IDENTIFIER_PROPERTY_TYPES
EDGE_COLUMNS: dict[str, str] = {
    "first_seen": "Date",
    "last_seen": "Date",
    **{name: "Long" for name in schema.EDGE_COUNT_PROPS},
}
SUMMARY = "_summary.json"


def vertex_header(label: str) -> list[str]:
    cols = schema.vertex_property_types(label)
    return ["~id", "~label", *(f"{k}:{t}" for k, t in cols.items())]


def edge_header() -> list[str]:
    return ["~id", "~from", "~to", "~label", *(f"{k}:{t}" for k, t in EDGE_COLUMNS.items())]


def format_ts(value: datetime) -> str:
    value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def parse_value(raw: str, neptune_type: str, column: str) -> Any:
    """One CSV cell to a Python value; empty is None."""
    if raw == "" or raw is None:
        return None
    try:
        if neptune_type == "Date":
            return datetime.fromisoformat(raw.replace("Z", "+00:00")).astimezone(timezone.utc)
        if neptune_type in ("Int", "Long", "Short", "Byte"):
            return int(raw)
        if neptune_type in ("Double", "Float"):
            return float(raw)
        if neptune_type == "Bool":
            if raw.lower() not in ("true", "false"):
                raise ValueError(raw)
            return raw.lower() == "true"
    except ValueError:
        raise SchemaError(f"{column}: {raw!r} is not a valid {neptune_type}") from None
    return raw


def split_header(header: list[str]) -> list[tuple[str, str]]:
    """``name:Type`` → (name, Type); system columns keep their ``~`` name and type ``System``."""
    out = []
    for col in header:
        if col.startswith("~"):
            out.append((col, "System"))
        elif ":" in col:
            name, typ = col.rsplit(":", 1)
            out.append((name, typ.rstrip("[]")))
        else:
            out.append((col, "String"))
    return out


def csv_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.csv") if p.is_file()) if folder.exists() else []


def iter_rows(folder: Path) -> Iterator[dict[str, Any]]:
    """Rows of every CSV part in ``folder``, typed by their headers (streams: bounded memory)."""
    for path in csv_files(folder):
        with open(path, newline="") as fh:
            reader = csv.reader(fh)
            try:
                header = next(reader)
            except StopIteration:
                continue
            columns = split_header(header)
            for line in reader:
                yield typed_row(columns, line)


def typed_row(columns: list[tuple[str, str]], values: Any) -> dict[str, Any]:
    """One CSV line as a dict: ``~`` columns as text, the others by their header type."""
    return {name: (value if typ == "System" else parse_value(value or "", typ, name))
            for (name, typ), value in zip(columns, values)}


def labels(snapshot: Path, kind: str) -> list[str]:
    root = snapshot / kind
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.exists() else []


@contextmanager
def staged(out: Path, overwrite: bool = False) -> Iterator[Path]:
    """A sibling temporary directory that replaces ``out`` only when the block completes: a failed run
    leaves the previous snapshot (or nothing), never half of a new one."""
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise SchemaError(f"snapshot: {out} exists and is not empty (use --overwrite)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


class CsvPartWriter:
    """RFC-4180 writer of one part file, used by ``graph export`` (Spark writes its own parts)."""

    def __init__(self, path: Path, header: list[str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "w", newline="")
        self._writer = csv.writer(self._fh, quoting=csv.QUOTE_MINIMAL, doublequote=True, lineterminator="\n")
        self._writer.writerow(header)
        self.rows = 0

    def write(self, values: list[Any]) -> None:
        self._writer.writerow(["" if v is None else (format_ts(v) if isinstance(v, datetime) else
                                                     ("true" if v is True else "false" if v is False else v))
                               for v in values])
        self.rows += 1

    def close(self) -> None:
        self._fh.close()
