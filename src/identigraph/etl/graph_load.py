"""Snapshot → graph through the batched upsert path, one Spark partition per writer process.

Vertices first (so customers carry their properties before edges arrive), then edges partitioned by
identifier. Every partition opens its own client with the same
retries and batch bounds as any other writer; ``etl.load_partitions`` × ``graph.batch.concurrency``
bounds how many requests hit the graph at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from rich.console import Console

from identigraph.config import Settings
from identigraph.errors import GraphError, SchemaError
from identigraph.etl import snapshot
from identigraph.graph import schema
from identigraph.graph.schema import EdgeRecord, VertexRecord

log = logging.getLogger(__name__)


def vertex_record(row: dict[str, Any]) -> VertexRecord:
    """A snapshot row as the upserter's vertex; empty cells stay None so the graph clears what the snapshot no
    longer has."""
    # empty cells stay None: the snapshot is the state, so a value it no longer has is cleared in the graph
    props = {k: v for k, v in row.items() if not k.startswith("~")}
    return VertexRecord(row["~id"], row["~label"], props)


def edge_record(row: dict[str, Any]) -> EdgeRecord:
    """A snapshot row as the upserter's edge; an ``~id`` off the id scheme is refused, since upserts key on it."""
    counts = {k: int(row[k]) for k in schema.EDGE_COUNT_PROPS if row.get(k) is not None}
    rec = EdgeRecord(row["~from"], row["~label"], row["~to"], row["first_seen"], row["last_seen"], counts)
    if row["~id"] != rec.id:
        raise SchemaError(f"~id: edge {row['~id']} does not follow the id scheme (expected {rec.id})")
    return rec


def _load_partition(settings_json: dict[str, Any], columns: list[str], kind: str, rows: Iterable[Any]) -> Iterator[dict]:
    """Runs on an executor: its own client, its own upserter; yields one stats dict."""
    from identigraph.config import Settings as _Settings
    from identigraph.graph.client import GraphClient
    from identigraph.graph.upsert import Upserter

    settings = _Settings.model_validate(settings_json)
    header = snapshot.split_header(columns)
    typed = (snapshot.typed_row(header, row) for row in rows)
    with GraphClient(settings) as client:
        up = Upserter(client)
        if kind == "vertices":
            stats = up.vertices(vertex_record(r) for r in typed)
        else:
            stats = up.edges(edge_record(r) for r in typed)
    yield {"elements": stats.vertices + stats.edges, "requests": stats.requests, "retries": stats.retries}


def _load_rows(settings_json: dict[str, Any], columns: list[str], kind: str, rows: Iterable[Any]) -> Iterator[dict]:
    """``_load_partition`` over Spark Rows (plain tuples once pickled to the executor)."""
    return _load_partition(settings_json, columns, kind, (tuple(r) for r in rows))


def task_error(exc: BaseException) -> str:
    """The executor's own Python error line out of the Py4J/Spark text a failed task arrives in.

    That text is the worker's traceback followed by the JVM's stack, so its last line ("... 1 more") says
    nothing; the line that matters is the first unindented one after the last ``Traceback`` header.
    """
    lines = str(exc).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:
        for line in lines[starts[-1] + 1:]:
            if line.strip() and not line[0].isspace():
                return line
    text = [line for line in lines if line.strip()]
    return text[-1] if text else type(exc).__name__


def load_snapshot(spark: SparkSession, settings: Settings, snap: str | Path) -> dict:
    """Load a snapshot location (its published run) or any Gremlin CSV folder, vertices first; progress goes
    to this module's logger."""
    from identigraph.etl import fs as fsys

    settings_json = settings.model_dump(mode="json")
    parts = settings.etl.load_partitions
    totals = {"elements": 0, "requests": 0, "retries": 0}
    t0 = time.perf_counter()
    fs = fsys.HadoopFS(spark)
    resolved = snapshot.resolve(fs, snap)
    by_shape: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for f in snapshot.graph_files(fs, resolved.prefix):  # one Spark job per header shape
        by_shape.setdefault((f.kind, f.header), []).append(f.uri)
    groups = sorted(by_shape.items(), key=lambda kv: (kv[0][0] != "vertices", kv[0][1]))
    for (kind, _), files in groups:
        group = sorted({fsys.relative(resolved.prefix, fsys.parent(u)) for u in files})
        df = spark.read.option("header", True).option("escape", '"').option("inferSchema", False).csv(files)
        columns = df.columns
        if kind == "edges":
            # an identifier's edges all in one partition (and one lane in it): hub vertices such as carrier
            # NAT IPs are never written by two transactions at once, which otherwise starve each other
            df = df.repartition(parts, "~to")
        elif df.rdd.getNumPartitions() > parts:
            df = df.coalesce(parts)  # vertices never conflict: no shuffle needed
        t_group = time.perf_counter()
        try:
            results = df.rdd.mapPartitions(partial(_load_rows, settings_json, columns, kind)).collect()
        except Exception as exc:
            raise GraphError(f"graph load of {kind} ({', '.join(group)}) failed; what was written before "
                             f"stays (loads are idempotent, re-run to finish): {task_error(exc)[:500]}") from None
        n = sum(r["elements"] for r in results)
        for r in results:
            for key in totals:
                totals[key] += r[key]
        log.info("✓ loaded %s (%s): %s in %.1fs", kind, ", ".join(group), f"{n:,}", time.perf_counter() - t_group)
    seconds = time.perf_counter() - t0
    return {**totals, "seconds": round(seconds, 2), "elements_per_s": round(totals["elements"] / seconds, 1)
            if seconds else 0.0}


def load_and_report(spark: SparkSession, settings: Settings, snap: str | Path, console: Console | None) -> dict:
    """Load, then one line a person reads (when given a console): what ``etl --load-graph``, ``graph load``
    and the demo print."""
    stats = load_snapshot(spark, settings, snap)
    if console is None:
        return stats
    console.print(
        f"graph load: {stats['elements']:,} elements in {stats['seconds']:.1f}s "
        f"({stats['elements_per_s']:,.0f} elements/s), {stats['requests']:,} requests, {stats['retries']} retries")
    return stats
