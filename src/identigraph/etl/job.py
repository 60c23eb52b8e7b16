"""The historical load: input-contract tables → graph snapshot (Neptune CSV) [→ graph].

Runs as ``identigraph etl ...`` (local Spark) or unchanged under spark-submit::

    spark-submit --master yarn --archives identigraph-env.tar.gz#env \\
        --conf spark.pyspark.python=./env/bin/python src/identigraph/etl/job.py \\
        --input /mnt/platform/2026-06-30 --snapshot /mnt/snapshots/2026-06-30

The snapshot is written to a temporary sibling and renamed into place, so a failed run leaves no half
snapshot behind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from rich.console import Console

from identigraph.config import Settings, load_settings
from identigraph.errors import IdentigraphError, SchemaError
from identigraph.etl import contract, snapshot
from identigraph.etl.transforms import customer_vertices, history_at, identifier_vertices, identity_edges
from identigraph.graph import schema


def _write_csv(df: DataFrame, path: Path, files: int) -> None:
    (df.coalesce(files).write.mode("overwrite")
       .option("header", True).option("quote", '"').option("escape", '"')  # RFC 4180: "" inside quotes
       .option("nullValue", "").option("emptyValue", '""')
       .option("timestampFormat", snapshot.TS_FORMAT_SPARK)
       .csv(str(path)))
    for junk in path.glob(".*.crc"):
        junk.unlink()


def _typed(df: DataFrame, columns: dict[str, str], system: list[tuple[str, str]]) -> DataFrame:
    cols = [F.col(src).alias(dst) for src, dst in system]
    cols += [F.col(name).alias(f"{name}:{typ}") for name, typ in columns.items()]
    return df.select(*cols)


def _parse_as_of(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise SchemaError(f"as_of: not an ISO-8601 timestamp: {value!r}") from None
    return ts.replace(tzinfo=timezone.utc) if ts.tzinfo is None else ts.astimezone(timezone.utc)


def run_etl(
    spark: SparkSession,
    settings: Settings,
    input_dir: Path,
    out: Path,
    key: bytes,
    as_of: str | datetime | None = None,
    overwrite: bool = False,
    console: Console | None = None,
) -> dict[str, Any]:
    """Build the snapshot; returns the job summary (also written to ``_summary.json``)."""
    console = console or Console(stderr=True)
    try:
        with snapshot.staged(out, overwrite) as tmp:
            summary = _build(spark, settings, input_dir, tmp, key, as_of, console)
            (tmp / snapshot.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        return summary
    finally:
        spark.catalog.clearCache()  # the validated inputs were cached; nothing of them outlives the job


def _build(spark: SparkSession, settings: Settings, input_dir: Path, tmp: Path, key: bytes,
           as_of: str | datetime | None, console: Console) -> dict[str, Any]:
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def step(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)
        console.print(f"  [green]✓[/] {name} ({timings[name]:.1f}s)")

    t0 = time.perf_counter()
    raw = {name: contract.read_table(spark, input_dir, name) for name in contract.TABLES}
    validated = {
        "customers": contract.validate_customers(raw["customers"]),
        "identity_events": contract.validate_events(raw["identity_events"], key),
        "blocks": contract.validate_blocks(raw["blocks"]),
        "care_contacts": contract.validate_care(raw["care_contacts"]),
    }
    customers, events = validated["customers"][0], validated["identity_events"][0].persist()
    blocks, care = validated["blocks"][0], validated["care_contacts"][0]
    cut = _parse_as_of(as_of)
    if cut is None:  # default: the latest valid event, so "now" is what the data says, not the clock
        micros = events.agg(F.unix_micros(F.max("occurred_at"))).first()[0]  # no driver-time-zone shift
        cut = (datetime.fromtimestamp(micros / 1e6, tz=timezone.utc) if micros is not None
               else datetime.now(timezone.utc))
    step("read and validate", t0)

    t0 = time.perf_counter()
    ts = F.lit(cut).cast("timestamp")
    in_window = events.filter(F.col("occurred_at") <= ts)
    blocks_h, care_h = history_at(blocks, care, cut)
    edges = identity_edges(in_window).persist()
    cust = customer_vertices(customers.filter(F.col("created_at") <= ts), edges, blocks_h, care_h).persist()
    id_vertices = identifier_vertices(edges, cust).persist()
    files = settings.etl.output_files
    for label in schema.IDENTIFIERS:
        _write_csv(_typed(id_vertices.filter(F.col("label") == label), snapshot.IDENTIFIER_COLUMNS,
                          [("id", "~id"), ("label", "~label")]),
                   tmp / "vertices" / label, files)
    _write_csv(_typed(cust, snapshot.CUSTOMER_COLUMNS, [("id", "~id"), ("label", "~label")]),
               tmp / "vertices" / schema.CUSTOMER, files)
    for edge_label in schema.EDGE_LABELS:
        _write_csv(_typed(edges.filter(F.col("label") == edge_label), snapshot.EDGE_COLUMNS,
                          [("id", "~id"), ("from_id", "~from"), ("to_id", "~to"), ("label", "~label")]),
                   tmp / "edges" / edge_label, files)
    _write_csv(blocks_h, tmp / "history" / "blocks", 1)
    _write_csv(care_h, tmp / "history" / "care_contacts", 1)
    step("build and write snapshot", t0)

    t0 = time.perf_counter()
    by_reason: dict[str, int] = {}
    tables: dict[str, dict[str, int]] = {}
    time_col = {"customers": "created_at", "identity_events": "occurred_at", "blocks": "blocked_at",
                "care_contacts": "contacted_at"}
    for table, (good, bad) in validated.items():
        counts = {f"{table}: {r['reason']}": r["count"] for r in bad.groupBy("reason").count().collect()}
        if counts:
            bad.coalesce(1).write.mode("overwrite").json(str(tmp / "_quarantine" / table))
        by_reason.update(counts)
        row = good.select(F.count(F.lit(1)).alias("good"),
                          F.sum(F.when(F.col(time_col[table]) > ts, 1).otherwise(0)).alias("after")).first()
        tables[table] = {"read": raw[table].count(), "good": row["good"], "quarantined": sum(counts.values()),
                         "after_as_of": row["after"] or 0}
        if tables[table]["read"] != tables[table]["good"] + tables[table]["quarantined"]:
            raise IdentigraphError(f"internal: {table} rows do not add up: {tables[table]}")
    vertex_counts = {r["label"]: r["count"] for r in id_vertices.groupBy("label").count().collect()}
    vertex_counts[schema.CUSTOMER] = cust.count()
    edge_counts = {r["label"]: r["count"] for r in edges.groupBy("label").count().collect()}
    step("quarantine and counts", t0)

    summary = {
        "as_of": snapshot.format_ts(cut),
        "input": str(input_dir),
        "rows_read": {t: c["read"] for t, c in tables.items()},
        "tables": tables,
        "quarantined": dict(sorted(by_reason.items())),
        "quarantined_total": sum(by_reason.values()),
        "events_after_as_of": tables["identity_events"]["after_as_of"],
        "vertices": dict(sorted(vertex_counts.items())),
        "edges": dict(sorted(edge_counts.items())),
        "seconds": {**timings, "total": round(time.perf_counter() - started, 2)},
    }
    return summary


def run_job(settings: Settings, input_dir: Path, out: Path, as_of: str | None = None, load_graph: bool = False,
            overwrite: bool = False, console: Console | None = None, summary_console: Console | None = None) -> dict:
    """What ``identigraph etl`` and spark-submit both run: snapshot, summary, optional graph load."""
    from identigraph.etl.report import print_summary
    from identigraph.etl.spark import session
    from identigraph.graph import pseudonym

    console = console or Console(stderr=True)
    spark = session(settings)
    summary = run_etl(spark, settings, input_dir, out, pseudonym.resolve_key(settings), as_of=as_of,
                      overwrite=overwrite, console=console)
    print_summary(summary, summary_console or console)
    if load_graph:
        from identigraph.etl.graph_load import load_and_report

        stats = load_and_report(spark, settings, out, console, summary_console)
        summary["graph_load"] = stats
    return summary


def main(argv: list[str] | None = None) -> int:
    """spark-submit entry point."""
    ap = argparse.ArgumentParser(prog="identigraph-etl", description="input contract → graph snapshot")
    ap.add_argument("--input", required=True, type=Path)
    ap.add_argument("--snapshot", required=True, type=Path)
    ap.add_argument("--as-of", default=None)
    ap.add_argument("--load-graph", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--config", type=Path, default=None)
    args = ap.parse_args(argv)
    console = Console(stderr=True)
    try:
        run_job(load_settings(args.config), args.input, args.snapshot, args.as_of, args.load_graph,
                args.overwrite, console)
    except IdentigraphError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
