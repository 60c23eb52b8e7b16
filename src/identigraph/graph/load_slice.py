"""Load a slice of an input-contract directory into the graph through the upsert path (pandas, one process).

For the demo, tests and small worlds; the full history goes through the Spark job. Rows that break the
contract are written to a quarantine file with the reason and counted — never dropped silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from identigraph.errors import SchemaError
from identigraph.graph.client import GraphClient
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.graph.records import aggregate, customer_vertex, event_edges
from identigraph.graph.upsert import Upserter, UpsertStats

TABLE_SUFFIXES = (".parquet", ".csv.gz", ".csv")


def read_table(directory: Path, name: str, nrows: int | None = None) -> pd.DataFrame:
    """One contract table: ``NAME.parquet`` (file or folder), ``NAME.csv.gz`` or ``NAME.csv``."""
    for suffix in TABLE_SUFFIXES:
        path = directory / f"{name}{suffix}"
        if path.exists():
            if suffix == ".parquet":
                df = pd.read_parquet(path)
                return df.head(nrows) if nrows is not None else df
            return pd.read_csv(path, nrows=nrows, dtype=str, keep_default_na=False, na_values=[""])
    raise SchemaError(f"{name}: no {name}.parquet, {name}.csv.gz or {name}.csv in {directory}")


@dataclass
class SliceReport:
    customers: int = 0
    events: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    quarantine_file: str | None = None
    upsert: UpsertStats = field(default_factory=UpsertStats)


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if (v is None or (not isinstance(v, str) and pd.isna(v))) else str(v)) for k, v in row.items()}


def load_slice(
    client: GraphClient,
    pseudo: Pseudonymiser,
    input_dir: Path,
    quarantine_dir: Path,
    max_events: int | None = None,
) -> SliceReport:
    report = SliceReport()
    bad: list[dict[str, Any]] = []

    def quarantine(table: str, row: dict[str, Any], reason: str) -> None:
        # Raw email/phone are PII: the quarantine keeps only that they were present.
        clean = _jsonable(row)
        for pii in ("email", "phone"):
            if clean.get(pii):
                clean[pii] = "<redacted>"
        bad.append({"table": table, "reason": reason, "row": clean})
        key = f"{table}: {reason.split(':')[0]}"
        report.quarantined[key] = report.quarantined.get(key, 0) + 1

    events = read_table(input_dir, "identity_events", nrows=max_events)
    seen_events: set[str] = set()
    edges = []
    for row in events.to_dict("records"):
        event_id = row.get("event_id")
        if not isinstance(event_id, str) or not event_id:
            quarantine("identity_events", row, "event_id: missing")
            continue
        if event_id in seen_events:
            quarantine("identity_events", row, "event_id: duplicate")
            continue
        seen_events.add(event_id)
        try:
            edges.extend(event_edges(row, pseudo))
        except SchemaError as exc:
            quarantine("identity_events", row, str(exc))
            continue
        report.events += 1
    edges = aggregate(edges)
    wanted = {e.from_id for e in edges}

    customers = read_table(input_dir, "customers")
    vertices = []
    for row in customers.to_dict("records"):
        try:
            vertex = customer_vertex(row)
        except SchemaError as exc:
            quarantine("customers", row, str(exc))
            continue
        if vertex.id in wanted:
            vertices.append(vertex)
    report.customers = len(vertices)

    upserter = Upserter(client)
    upserter.vertices(vertices, report.upsert)
    upserter.edges(edges, report.upsert)

    if bad:
        quarantine_dir.mkdir(parents=True, exist_ok=True)
        path = quarantine_dir / "slice_load.jsonl"
        with open(path, "a") as fh:
            for entry in bad:
                fh.write(json.dumps(entry) + "\n")
        report.quarantine_file = str(path)
    return report
