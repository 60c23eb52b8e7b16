"""The historical load: input-contract tables → graph snapshot (Neptune CSV) [→ graph].

Runs as ``identigraph etl ...`` (local Spark) or unchanged under spark-submit::

    spark-submit --master yarn --archives identigraph-env.tar.gz#env \\
        --conf spark.pyspark.python=./env/bin/python src/identigraph/etl/job.py \\
        --input s3://bucket/platform/2026-06-30/ --snapshot s3://bucket/snapshots/2026-06-30/

The snapshot is written to a temporary sibling and renamed into place, so a failed run leaves no half
snapshot behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import uuid
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
    started = time.perf_counter()
    timings: dict[str, float] = {}
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise SchemaError(f"snapshot: {out} exists and is not empty (use --overwrite)")
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:8]}"
    out.parent.mkdir(parents=True, exist_ok=True)

    def step(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 2)
        console.print(f"  [green]✓[/] {name} ({timings[name]:.1f}s)")

    try:
        t0 = time.perf_counter()
        raw = {name: contract.read_table(spark, input_dir, name) for name in contract.TABLES}
        customers, q_customers = contract.validate_customers(raw["customers"])
        events, q_events = contract.validate_events(raw["identity_events"], key)
        blocks, q_blocks = contract.validate_blocks(raw["blocks"])
        care, q_care = contract.validate_care(raw["care_contacts"])
        events = events.persist()
        rows_read = {name: df.count() for name, df in raw.items()}
        cut = _parse_as_of(as_of)
        if cut is None:  # default: the latest valid event, so "now" is what the data says, not the clock
            latest = events.agg(F.max("occurred_at")).first()[0]
            cut = (latest.replace(tzinfo=timezone.utc) if latest else datetime.now(timezone.utc))
        step("read and validate", t0)

        t0 = time.perf_counter()
        ts = F.lit(cut).cast("timestamp")
        in_window = events.filter(F.col("occurred_at") <= ts)
        after_as_of = events.filter(F.col("occurred_at") > ts).count()
        blocks_h, care_h = history_at(blocks, care, cut)
        edges = identity_edges(in_window).persist()
        id_vertices = identifier_vertices(edges)
        cust = customer_vertices(customers.filter(F.col("created_at") <= ts), edges, blocks_h, care_h).persist()
        files = settings.etl.output_files
        for label in schema.IDENTIFIERS:
            _write_csv(_typed(id_vertices.filter(F.col("label") == label), {}, [("id", "~id"), ("label", "~label")]),
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
        for table, bad in (("customers", q_customers), ("identity_events", q_events), ("blocks", q_blocks),
                           ("care_contacts", q_care)):
            bad = bad.persist()
            counts = {f"{table}: {r['reason']}": r["count"] for r in bad.groupBy("reason").count().collect()}
            if counts:
                bad.coalesce(1).write.mode("overwrite").json(str(tmp / "_quarantine" / table))
            by_reason.update(counts)
            bad.unpersist()
        vertex_counts = {r["label"]: r["count"] for r in id_vertices.groupBy("label").count().collect()}
        vertex_counts[schema.CUSTOMER] = cust.count()
        edge_counts = {r["label"]: r["count"] for r in edges.groupBy("label").count().collect()}
        step("quarantine and counts", t0)

        summary = {
            "as_of": snapshot.format_ts(cut),
            "input": str(input_dir),
            "rows_read": rows_read,
            "quarantined": dict(sorted(by_reason.items())),
            "quarantined_total": sum(by_reason.values()),
            "events_after_as_of": after_as_of,
            "vertices": dict(sorted(vertex_counts.items())),
            "edges": dict(sorted(edge_counts.items())),
            "seconds": {**timings, "total": round(time.perf_counter() - started, 2)},
        }
        (tmp / snapshot.SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
        return summary
    finally:
        for df in ("events", "edges", "cust"):
            obj = locals().get(df)
            if isinstance(obj, DataFrame):
                obj.unpersist()
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """spark-submit entry point (also what ``identigraph etl`` calls)."""
    from identigraph.graph import pseudonym
    from identigraph.etl.report import print_summary

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
        settings = load_settings(args.config)
        spark = __import__("identigraph.etl.spark", fromlist=["session"]).session(settings)
        summary = run_etl(spark, settings, args.input, args.snapshot, pseudonym.resolve_key(settings),
                          as_of=args.as_of, overwrite=args.overwrite, console=console)
        print_summary(summary, console)
        if args.load_graph:
            from identigraph.etl.graph_load import load_snapshot

            stats = load_snapshot(spark, settings, args.snapshot, console=console)
            console.print(f"graph load: {stats['elements']:,} elements in {stats['seconds']:.1f}s "
                          f"({stats['elements_per_s']:,.0f}/s), {stats['retries']} retries")
    except IdentigraphError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
