"""Identity events → graph records in Python: the path for event-at-a-time writers (the stream consumer
to come) and the reference the Spark job is tested against, edge by edge.

Both use ``schema`` for ids and ``pseudonym`` for normalisation and the keyed hash, and both treat a blank
identifier as absent.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pandas as pd

from identigraph.errors import SchemaError
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.graph.schema import (
    CUSTOMER,
    IDENTIFIERS,
    IDENTITY_EVENT_TYPES,
    PII_LABELS,
    EdgeRecord,
    VertexRecord,
    customer_id,
    identifier_id,
    strip_ascii,
)
from identigraph.timestamps import as_utc

__all__ = ["aggregate", "as_utc", "customer_key", "customer_vertex", "event_edges", "identifier_vertex_id",
           "parse_ts"]


def parse_ts(value: Any, field: str) -> datetime:
    """UTC datetime from any value a row may hold (ISO-8601 string, pandas or numpy timestamp), for the
    record builders; naive values are UTC. Plain ISO strings elsewhere go through ``timestamps.parse_iso``."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise SchemaError(f"{field}: not an ISO-8601 timestamp: {value!r}") from None
    if ts is pd.NaT or pd.isna(ts):
        raise SchemaError(f"{field}: missing timestamp")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def customer_key(vertex_id: str) -> str:
    """``customer:c1`` → ``c1``: ids are opaque and may contain ':', so cut the prefix, never split."""
    return vertex_id.removeprefix(f"{CUSTOMER}:")


def identifier_vertex_id(label: str, raw: str, pseudo: Pseudonymiser) -> str:
    """The vertex id of one identifier, pseudonymised where it is PII (the Spark job does the same)."""
    value = pseudo.pseudonymise(label, raw) if label in PII_LABELS else raw
    return identifier_id(label, value)


def event_edges(event: Mapping[str, Any], pseudo: Pseudonymiser) -> list[EdgeRecord]:
    """Edges of one identity event (counts of 1). Raises SchemaError naming the bad field."""
    etype = event.get("event_type")
    if etype not in IDENTITY_EVENT_TYPES:
        raise SchemaError(f"event_type: unknown identity event type {etype!r}")
    cid = customer_id(event.get("customer_id"))  # type: ignore[arg-type]
    ts = parse_ts(event.get("occurred_at"), "occurred_at")
    out = []
    for label, (edge_label, column) in IDENTIFIERS.items():
        raw = event.get(column)
        if raw is None or (isinstance(raw, float) and pd.isna(raw)):
            continue
        if not isinstance(raw, str):
            raise SchemaError(f"{column}: must be a string")
        if not strip_ascii(raw):
            continue  # blank = not seen, as in the Spark job
        vid = identifier_vertex_id(label, raw, pseudo)
        out.append(EdgeRecord(cid, edge_label, vid, ts, ts, {"event_count": 1, f"n_{etype}": 1}))
    return out


def aggregate(records: Iterable[EdgeRecord]) -> list[EdgeRecord]:
    """Merge records of the same edge: min first_seen, max last_seen, summed counts."""
    acc: dict[str, EdgeRecord] = {}
    for r in records:
        prev = acc.get(r.id)
        if prev is None:
            acc[r.id] = r
            continue
        counts = dict(prev.counts)
        for k, v in r.counts.items():
            counts[k] = counts.get(k, 0) + v
        acc[r.id] = EdgeRecord(r.from_id, r.label, r.to_id, min(prev.first_seen, r.first_seen),
                               max(prev.last_seen, r.last_seen), counts)
    return list(acc.values())


def customer_vertex(row: Mapping[str, Any]) -> VertexRecord:
    """A customers-table row as a vertex, under the same rules as the Spark job's validation."""
    if row.get("created_at") is None or (not isinstance(row.get("created_at"), str) and pd.isna(row["created_at"])):
        raise SchemaError("created_at: missing")
    props: dict[str, Any] = {"created_at": parse_ts(row["created_at"], "created_at")}
    country = row.get("country")
    if isinstance(country, str) and country:
        if not re.fullmatch(r"[A-Z]{2}", country):
            raise SchemaError(f"country: not an ISO 3166-1 alpha-2 code: {country!r}")
        props["country"] = country
    ltv = row.get("lifetime_value")
    try:
        ltv = 0.0 if ltv is None or (not isinstance(ltv, str) and pd.isna(ltv)) else float(ltv)
    except ValueError:
        raise SchemaError(f"lifetime_value: not a number: {ltv!r}") from None
    if ltv < 0:
        raise SchemaError(f"lifetime_value: must be >= 0, got {ltv}")
    props["lifetime_value"] = ltv
    return VertexRecord(customer_id(row.get("customer_id")), CUSTOMER, props)  # type: ignore[arg-type]
