"""The historical load: input-contract tables → graph snapshot (Neptune CSV) [→ graph].

Runs as ``identigraph etl ...`` (local Spark) or unchanged under spark-submit (the submitter's settings
win, see ``etl.spark``)::

    spark-submit --master yarn ... identigraph/etl/job.py \\
        --input-table platform --snapshot s3://bucket/graph --incremental

Input is the contract's files under a folder URI (``--input``: local, ``s3a://``, EMR's ``s3://``) or
Hive tables through the metastore (``--input-table``). Output is a versioned snapshot location
(``snapshot`` module): each run writes its own prefix, then its manifest, then ``LATEST``; a run that dies
part-way changes nothing a reader sees.

``--incremental`` merges the events newer than the published watermark into the published run: only
``identity_events`` partitions after the last one loaded are read (the folders or the metastore's
partitions; an unpartitioned table is read whole and filtered), events whose id an earlier run already
counted are quarantined as duplicates, edges merge (min first_seen, max last_seen, counts summed), and
customers, their history and every identifier statistic are recomputed from the merged edges and the
full customer, block and care tables (those are per-customer and small next to the events). The result
equals a full recompute; with no new partition (or no new event) the run is a no-op.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from rich.console import Console

from identigraph.config import Settings, load_settings
from identigraph.errors import IdentigraphError, SchemaError
from identigraph.etl import contract, snapshot
from identigraph.etl import fs as fsys
from identigraph.etl import spark as sparkcfg
from identigraph.etl.spark import drop_checksums, write_csv
from identigraph.etl.transforms import customer_vertices, history_at, identifier_vertices, identity_edges
from identigraph.graph import schema
from identigraph.timestamps import parse_field

log = logging.getLogger(__name__)


def _typed(df: DataFrame, columns: dict[str, str], system: list[tuple[str, str]]) -> DataFrame:
    cols = [F.col(src).alias(dst) for src, dst in system]
    cols += [F.col(name).alias(f"{name}:{typ}") for name, typ in columns.items()]
    return df.select(*cols)


EVENTS = "identity_events"
ALREADY_LOADED = "event_id: duplicate (an earlier run loaded this event)"
TIME_COLUMN = {"customers": "created_at", "identity_events": "occurred_at", "blocks": "blocked_at",
               "care_contacts": "contacted_at"}


def run_etl(
    spark: SparkSession,
    settings: Settings,
    input_dir: str | Path | None,
    out: str | Path,
    key: bytes,
    as_of: str | datetime | None = None,
    overwrite: bool = False,
    incremental: bool = False,
    input_tables: list[str] | None = None,
) -> dict[str, Any]:
    """Build and publish one snapshot run; returns the job summary (also the run's ``_summary.json``).

    ``incremental`` with nothing published yet is a full load; ``overwrite`` is needed for a full load
    into a location that already holds something. Progress goes to this module's logger."""
    fs = fsys.HadoopFS(spark)
    out = fsys.normalise(out)
    src = contract.source(input_dir, input_tables)
    current = snapshot.resolve(fs, out) if fs.exists(out) else None
    parent = current if current is not None and current.manifest is not None else None
    if incremental and parent is not None:
        if as_of is not None:
            raise SchemaError("as_of: an incremental load's as-of is its latest event; run a full load to cut earlier")
        if not parent.manifest.get("complete", False):  # type: ignore[union-attr]
            raise SchemaError(f"incremental: the published run {parent.run} was cut before its latest events; "
                              "run a full load first")
    else:
        if incremental:
            log.info("nothing published yet: a full load")
        incremental, parent = False, None
        if fs.exists(out) and snapshot.has_content(fs, out) and not overwrite:
            raise SchemaError(f"snapshot: {out} exists and is not empty (use --overwrite)")
    run_id = snapshot.new_run_id()
    prefix = fsys.join(out, snapshot.RUNS, run_id)
    state_uri = fsys.join(out, snapshot.STATE, "events", run_id)
    try:
        built = _build(spark, fs, settings, src, out, prefix, state_uri, key, as_of, parent)
        if built is None:
            assert parent is not None and parent.manifest is not None  # only a run over a published one is a no-op
            summary = {"mode": "incremental", "no_op": True, "run": parent.run, "as_of": parent.manifest["as_of"],
                       "input": src.describe()}
            log.info("✓ nothing newer than the published watermark: %s unchanged", out)
            return summary
        summary, manifest = built
        summary["run"] = manifest["run"] = run_id
        fs.write_bytes(fsys.join(prefix, snapshot.SUMMARY), (json.dumps(summary, indent=2) + "\n").encode())
        manifest["files"] = snapshot.run_files(fs, prefix)
        snapshot.publish(fs, out, run_id, manifest)
    except BaseException:
        for uri in (prefix, state_uri):  # best effort: a dead driver leaves them for the next run's GC
            with contextlib.suppress(Exception):
                fs.delete(uri)
        raise
    finally:
        spark.catalog.clearCache()  # the validated inputs were cached; nothing of them outlives the job
    snapshot.collect_garbage(fs, out, settings.etl.keep_runs)
    if current is not None and current.manifest is None and current.prefix == out:
        for name in snapshot.LEGACY:  # an unversioned snapshot replaced (--overwrite): its files go
            fs.delete(fsys.join(out, name))
    return summary


def _previous_edges(spark: SparkSession, parent: snapshot.Resolved) -> DataFrame:
    """The published run's edges, typed back from its CSV (the snapshot is the state)."""
    files = [fsys.join(parent.prefix, f["path"]) for f in parent.manifest["files"]  # type: ignore[index]
             if f["path"].startswith("edges/") and f["path"].endswith(".csv")]
    counts = list(snapshot.EDGE_COLUMNS)[2:]
    if not files:
        return spark.createDataFrame([], "id string, from_id string, to_id string, label string, "
                                     "first_seen timestamp, last_seen timestamp, "
                                     + ", ".join(f"{c} bigint" for c in counts))
    raw = spark.read.option("header", True).option("escape", '"').option("inferSchema", False).csv(files)
    return raw.select(
        F.col("`~id`").alias("id"), F.col("`~from`").alias("from_id"), F.col("`~to`").alias("to_id"),
        F.col("`~label`").alias("label"),
        F.col("`first_seen:Date`").cast("timestamp").alias("first_seen"),
        F.col("`last_seen:Date`").cast("timestamp").alias("last_seen"),
        *[F.col(f"`{c}:Long`").cast("long").alias(c) for c in counts])


def merge_edges(previous: DataFrame, new: DataFrame) -> DataFrame:
    """One row per edge: earliest first_seen, latest last_seen, counts summed (each event counted once)."""
    counts = list(snapshot.EDGE_COLUMNS)[2:]
    both = previous.unionByName(new.select(*previous.columns))
    return both.groupBy("id", "from_id", "to_id", "label").agg(
        F.min("first_seen").alias("first_seen"), F.max("last_seen").alias("last_seen"),
        *[F.sum(c).cast("long").alias(c) for c in counts]).select(*previous.columns)


def _already_loaded(events: DataFrame) -> DataFrame:
    """Quarantine rows for events an earlier run counted (emails/phones only as present or not)."""
    cols = [F.col(c).cast("string").alias(c) for c in ("event_id", "customer_id", "event_type")]
    cols.append(F.date_format("occurred_at", "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'").alias("occurred_at"))
    for c in contract.TABLES[EVENTS][4:]:
        value = F.col(c)
        if c in contract.PII_COLUMNS:
            value = F.when(value.isNotNull(), F.lit(contract.REDACTED))
        cols.append(value.cast("string").alias(c))
    return events.select(F.lit(EVENTS).alias("table"), F.lit(ALREADY_LOADED).alias("reason"),
                         F.struct(*cols).alias("row"))


@dataclass
class _Inputs:
    """What the run reads: the tables validated, the events it has not counted before, and where it stands
    against the published watermark."""
    known: dict[str, list[str] | None]          # partitions of each table (None: unpartitioned)
    before: dict[str, str]                      # the published watermark's partitions
    read_parts: dict[str, list[str]]            # the partitions read where not all of them are
    raw: dict[str, DataFrame]
    validated: dict[str, tuple[DataFrame, DataFrame]]   # table -> (good rows, quarantined rows)
    events: DataFrame                           # valid events not loaded by an earlier run
    again: DataFrame | None                     # valid events an earlier run loaded
    shuffle: int


@dataclass
class _Written:
    """The graph a run wrote, counted by label."""
    vertex_counts: dict[str, int]
    edge_counts: dict[str, int]


class _Steps:
    """Per-step timings for the summary, each logged as it ends so a long run shows where it is."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        self.timings[name] = round(time.perf_counter() - t0, 2)
        log.info("✓ %s (%.1fs)", name, self.timings[name])


def _read_inputs(spark: SparkSession, fs: fsys.FS, settings: Settings, src: contract.Source, out: str, key: bytes,
                 parent: snapshot.Resolved | None) -> _Inputs | None:
    """Read and validate the tables; ``None`` when an incremental run has nothing newer to add."""
    part_col = settings.etl.partition_column
    before = (parent.manifest or {}).get("watermark", {}).get("partitions", {}) if parent else {}
    known = {name: contract.partitions(spark, fs, src, name, part_col) for name in contract.TABLES}
    read_parts: dict[str, list[str]] = {}
    event_parts = known[EVENTS]
    if parent is not None and event_parts is not None:
        read_parts[EVENTS] = [p for p in event_parts if EVENTS not in before or p > before[EVENTS]]
    # blocks, care contacts and customers are read whole; where they are partitioned, a newer partition
    # of theirs is news too
    newer_elsewhere = any(v and (name not in before or v[-1] > before[name])
                          for name, v in known.items() if name != EVENTS)
    if parent is not None and known[EVENTS] is not None and not read_parts[EVENTS] and not newer_elsewhere:
        return None
    shuffle = sparkcfg.scale_for_input(spark, sum(contract.input_bytes(fs, src, n) for n in contract.TABLES))
    raw = {name: contract.read_table(spark, fs, src, name, part_col, read_parts.get(name))
           for name in contract.TABLES}
    validated = {
        "customers": contract.validate_customers(raw["customers"]),
        EVENTS: contract.validate_events(raw[EVENTS], key),
        "blocks": contract.validate_blocks(raw["blocks"]),
        "care_contacts": contract.validate_care(raw["care_contacts"]),
    }
    events = validated[EVENTS][0].persist()
    again = None
    if parent is not None:
        segments = [fsys.join(out, seg) for seg in parent.manifest.get("state", {}).get("events", [])]  # type: ignore[union-attr]
        if segments:
            seen = spark.read.parquet(*segments)
            again = events.join(seen, "event_id", "left_semi").persist()
            events = events.join(seen, "event_id", "left_anti").persist()
        if known[EVENTS] is None and not newer_elsewhere and events.isEmpty():
            return None  # unpartitioned events: every one of them already loaded
    return _Inputs(known, before, read_parts, raw, validated, events, again, shuffle)


def _cut_off(events: DataFrame, as_of: str | datetime | None, parent: snapshot.Resolved | None) -> datetime:
    """The run's as-of: the one asked for, else the latest valid event, so "now" is what the data says."""
    cut = parse_field(as_of, "as_of")
    if cut is not None:
        return cut
    # unix_micros: no driver-time-zone shift; an aggregate without grouping always has its one row
    micros = events.agg(F.unix_micros(F.max("occurred_at"))).first()[0]  # type: ignore[index]  # first() is Row | None
    latest = datetime.fromtimestamp(micros / 1e6, tz=timezone.utc) if micros is not None else None
    prev_cut = parse_field(parent.manifest["as_of"], "as_of") if parent is not None else None  # type: ignore[index]
    return max([t for t in (latest, prev_cut) if t is not None], default=datetime.now(timezone.utc))


def _write_graph(spark: SparkSession, settings: Settings, inputs: _Inputs, cut: datetime, prefix: str,
                 state_uri: str, parent: snapshot.Resolved | None) -> _Written:
    """Edges, vertices and history at the cut, written as the run's snapshot files, and the ids it counted."""
    validated = inputs.validated
    customers, blocks, care = validated["customers"][0], validated["blocks"][0], validated["care_contacts"][0]
    ts = F.lit(cut).cast("timestamp")
    in_window = inputs.events.filter(F.col("occurred_at") <= ts)
    blocks_h, care_h = history_at(blocks, care, cut)
    edges = identity_edges(in_window)
    if parent is not None:
        edges = merge_edges(_previous_edges(spark, parent), edges)
    edges = edges.persist()
    cust = customer_vertices(customers.filter(F.col("created_at") <= ts), edges, blocks_h, care_h).persist()
    id_vertices = identifier_vertices(edges, cust).persist()
    vertex_counts = {r["label"]: r["count"] for r in id_vertices.groupBy("label").count().collect()}
    vertex_counts[schema.CUSTOMER] = cust.count()
    edge_counts = {r["label"]: r["count"] for r in edges.groupBy("label").count().collect()}
    etl = settings.etl

    def files(n: int) -> int:
        return sparkcfg.output_files(n, etl.output_files, etl.rows_per_file)

    for label in schema.IDENTIFIERS:
        write_csv(_typed(id_vertices.filter(F.col("label") == label), snapshot.IDENTIFIER_COLUMNS,
                         [("id", "~id"), ("label", "~label")]),
                  fsys.join(prefix, "vertices", label), files(vertex_counts.get(label, 0)))
    write_csv(_typed(cust, snapshot.CUSTOMER_COLUMNS, [("id", "~id"), ("label", "~label")]),
              fsys.join(prefix, "vertices", schema.CUSTOMER), files(vertex_counts[schema.CUSTOMER]))
    for edge_label in schema.EDGE_LABELS:
        write_csv(_typed(edges.filter(F.col("label") == edge_label), snapshot.EDGE_COLUMNS,
                         [("id", "~id"), ("from_id", "~from"), ("to_id", "~to"), ("label", "~label")]),
                  fsys.join(prefix, "edges", edge_label), files(edge_counts.get(edge_label, 0)))
    write_csv(blocks_h, fsys.join(prefix, "history", "blocks"), 1)
    write_csv(care_h, fsys.join(prefix, "history", "care_contacts"), 1)
    # the ids this run counted, so a later run never counts them again (Parquet, outside the graph files)
    in_window.select("event_id").write.mode("overwrite").parquet(state_uri)
    drop_checksums(state_uri)
    return _Written(vertex_counts, edge_counts)


def _quarantine(inputs: _Inputs, cut: datetime, prefix: str) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Write the quarantined rows by table; count reasons and check every row read is either good or
    quarantined. Returns (count by "table: reason", counts by table)."""
    ts = F.lit(cut).cast("timestamp")
    by_reason: dict[str, int] = {}
    tables: dict[str, dict[str, int]] = {}
    for table, (good, bad) in inputs.validated.items():
        if table == EVENTS and inputs.again is not None:
            bad = bad.unionByName(_already_loaded(inputs.again))
        counts = {f"{table}: {r['reason']}": r["count"] for r in bad.groupBy("reason").count().collect()}
        if counts:
            bad.coalesce(1).write.mode("overwrite").json(fsys.join(prefix, "_quarantine", table))
            drop_checksums(fsys.join(prefix, "_quarantine", table))
        by_reason.update(counts)
        row = good.select(F.count(F.lit(1)).alias("good"),
                          F.sum(F.when(F.col(TIME_COLUMN[table]) > ts, 1).otherwise(0)).alias("after")).first()
        assert row is not None  # an aggregate without grouping always has its one row
        dupes = counts.get(f"{table}: {ALREADY_LOADED}", 0)
        tables[table] = {"read": inputs.raw[table].count(), "good": row["good"] - dupes,
                         "quarantined": sum(counts.values()), "after_as_of": row["after"] or 0}
        if table == EVENTS:
            tables[table]["already_loaded"] = dupes
        if tables[table]["read"] != tables[table]["good"] + tables[table]["quarantined"]:
            raise IdentigraphError(f"internal: {table} rows do not add up: {tables[table]}")
    return by_reason, tables


def _build(spark: SparkSession, fs: fsys.FS, settings: Settings, src: contract.Source, out: str, prefix: str,
           state_uri: str, key: bytes, as_of: str | datetime | None,
           parent: snapshot.Resolved | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    steps = _Steps()
    inputs = None
    with steps.step("read and validate"):
        inputs = _read_inputs(spark, fs, settings, src, out, key, parent)
        cut = _cut_off(inputs.events, as_of, parent) if inputs is not None else None
    if inputs is None or cut is None:
        return None
    with steps.step("build and write snapshot"):
        written = _write_graph(spark, settings, inputs, cut, prefix, state_uri, parent)
    with steps.step("quarantine and counts"):
        by_reason, tables = _quarantine(inputs, cut, prefix)
    known = inputs.known
    watermark = {"partitions": {**inputs.before, **{name: v[-1] for name, v in known.items() if v}},
                 "as_of": snapshot.format_ts(cut)}
    state = [*((parent.manifest or {}).get("state", {}).get("events", []) if parent else []),
             fsys.relative(out, state_uri)]
    summary: dict[str, Any] = {
        "as_of": snapshot.format_ts(cut),
        "mode": "incremental" if parent is not None else "full",
        "parent": parent.run if parent is not None else None,
        "input": src.describe(),
        "partitions_read": {name: inputs.read_parts.get(name, v) for name, v in known.items() if v is not None},
        "rows_read": {t: c["read"] for t, c in tables.items()},
        "tables": tables,
        "quarantined": dict(sorted(by_reason.items())),
        "quarantined_total": sum(by_reason.values()),
        "events_after_as_of": tables[EVENTS]["after_as_of"],
        "vertices": dict(sorted(written.vertex_counts.items())),
        "edges": dict(sorted(written.edge_counts.items())),
        "spark": {**sparkcfg.effective(spark), "shuffle_partitions": inputs.shuffle},
        "seconds": {**steps.timings, "total": round(time.perf_counter() - steps.started, 2)},
    }
    manifest = {
        "run": summary.get("run"), "parent": summary["parent"], "as_of": summary["as_of"],
        "complete": tables[EVENTS]["after_as_of"] == 0, "watermark": watermark, "state": {"events": state},
        "counts": {"vertices": summary["vertices"], "edges": summary["edges"]},
        "created_at": snapshot.format_ts(datetime.now(timezone.utc)),
    }
    return summary, manifest


def run_job(settings: Settings, input_dir: str | Path | None, out: str | Path, as_of: str | None = None,
            load_graph: bool = False, overwrite: bool = False, console: Console | None = None,
            summary_console: Console | None = None, incremental: bool = False,
            input_tables: list[str] | None = None) -> dict:
    """What ``identigraph etl`` and spark-submit both run: snapshot, summary, optional graph load; the
    summary table goes to ``summary_console`` (else ``console``), printed only when one is given."""
    from identigraph.etl.graph_load import load_and_report
    from identigraph.etl.report import print_summary
    from identigraph.etl.spark import session
    from identigraph.graph import pseudonym

    contract.source(input_dir, input_tables)  # a usage error should not cost a Spark start-up
    spark = session(settings, hive_dir=settings.etl.hive_dir if input_tables else None)
    summary = run_etl(spark, settings, input_dir, out, pseudonym.resolve_key(settings), as_of=as_of,
                      overwrite=overwrite, incremental=incremental, input_tables=input_tables)
    shown = summary_console or console
    if shown is not None and not summary.get("no_op"):
        print_summary(summary, shown)
    if load_graph and not summary.get("no_op"):
        summary["graph_load"] = load_and_report(spark, settings, out, shown)
    return summary


def main(argv: list[str] | None = None) -> int:
    """spark-submit entry point."""
    ap = argparse.ArgumentParser(prog="identigraph-etl", description="input contract → graph snapshot")
    ap.add_argument("--input", default=None, help="folder URI of the contract's files")
    ap.add_argument("--input-table", action="append", default=None,
                    help="Hive: a database, db.table (repeat per table) or NAME=db.table")
    ap.add_argument("--snapshot", required=True, help="snapshot location URI (versioned runs + LATEST)")
    ap.add_argument("--as-of", default=None)
    ap.add_argument("--incremental", action="store_true",
                    help="merge only what is newer than the published watermark")
    ap.add_argument("--load-graph", action="store_true")
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--config", type=Path, default=None)
    args = ap.parse_args(argv)
    console = Console(stderr=True)  # this entry point is the CLI layer of a spark-submit process
    logging.basicConfig(level=logging.INFO, format="  %(message)s", stream=sys.stderr)
    try:
        run_job(load_settings(args.config), args.input, args.snapshot, args.as_of, args.load_graph,
                args.overwrite, console, incremental=args.incremental, input_tables=args.input_table)
    except IdentigraphError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
