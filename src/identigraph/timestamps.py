"""ISO-8601 timestamps, parsed one way in every stage.

Manifests, snapshots, stream events and review verdicts all carry ISO-8601 strings, mostly with a ``Z``
suffix. The stages differ only in what they do with a value that names no zone, and in how they report a
bad one; those are parameters here, not copies.
"""

from __future__ import annotations

from datetime import datetime, timezone

from identigraph.errors import SchemaError


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are UTC in this project (gremlinpython and Spark hand them back naive)."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def parse_iso(value: str, *, to_utc: bool = True) -> datetime:
    """An ISO-8601 string as a datetime; raises ``ValueError`` so pydantic validators can wrap it.

    ``to_utc`` (the default) reads a naive value as UTC and converts an offset to UTC; without it the value
    comes back as written (naive stays naive, an offset is kept), for callers that check or compare as is.
    """
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return as_utc(parsed) if to_utc else parsed


def parse_field(value: str | datetime | None, field: str) -> datetime | None:
    """A UTC datetime from an optional setting or manifest value; a bad string is a ``SchemaError`` naming
    ``field`` (what the CLI prints). ``None`` and datetimes pass through untouched."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return parse_iso(value)
    except ValueError:
        raise SchemaError(f"{field}: not an ISO-8601 timestamp: {value!r}") from None
