"""The historical load at scale: Spark snapshot build (events/s) and graph load (elements/s), one run;
with ``--incremental``, a full load against an incremental one for one new day, in the same run.

Usage: python bench/etl.py [--customers 52000] [--out bench/results/etl.json]
       python bench/etl.py --incremental [--customers 52000] [--out bench/results/etl_incremental.json]

Spark runs in local[*] on this machine; the graph is the local Gremlin Server started for the run.
Incremental: the world's events in daily ``dt=`` Parquet folders; a full load of every day but the last
publishes the history, then the last day arrives and (1) ``--incremental`` merges it, (2) a full load of
all days recomputes the same snapshot. CPU is the Spark JVM and its Python workers (psutil, process tree).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from identigraph.config import load_settings
from identigraph.config_loader import packaged_default
from identigraph.etl.graph_load import load_snapshot
from identigraph.etl.job import run_etl
from identigraph.etl.spark import session
from identigraph.graph import queries
from identigraph.graph.client import GraphClient
from identigraph.services import local
from identigraph.services.process import free_port
from identigraph.synth import SynthParams, generate_world, write_world

REPO = Path(__file__).resolve().parents[1]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live descendants (the JVM and its Python workers)."""
    import psutil

    total = 0.0
    root = psutil.Process(pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def _partitioned_world(world: Path, out: Path) -> tuple[list[str], int]:
    """The world with identity_events in ``dt=`` folders; returns the days and the last day's events."""
    import shutil

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    out.mkdir(parents=True)
    for name in ("customers", "blocks", "care_contacts"):
        shutil.copy(world / f"{name}.parquet", out / f"{name}.parquet")
    events = pd.read_parquet(world / "identity_events.parquet")
    events["dt"] = pd.to_datetime(events["occurred_at"], utc=True).dt.strftime("%Y-%m-%d")
    pq.write_to_dataset(pa.Table.from_pandas(events, preserve_index=False), str(out / "identity_events.parquet"),
                        partition_cols=["dt"])
    days = sorted(events["dt"].unique())
    return days, int((events["dt"] == days[-1]).sum())


def incremental(args: argparse.Namespace, work: Path, settings) -> None:
    import shutil

    t0 = time.perf_counter()
    world = generate_world(SynthParams(customers=args.customers, seed=21))
    write_world(world, work / "world", fmt="parquet")
    n_events = len(world.identity_events)
    del world
    days, n_last = _partitioned_world(work / "world", work / "lake")
    last = work / "lake" / "identity_events.parquet" / f"dt={days[-1]}"
    held = work / f"dt={days[-1]}"
    shutil.move(last, held)  # the new day has not arrived yet
    print(f"world: {args.customers:,} customers, {n_events:,} events over {len(days)} days, "
          f"{n_last:,} on the last ({time.perf_counter() - t0:.1f}s)", flush=True)
    spark = session(settings)
    jvm = spark.sparkContext._gateway.proc.pid
    key = b"bench-key-0123456789abcdef"

    def timed(name: str, **kw) -> dict:
        cpu0, t = _cpu_seconds(jvm), time.perf_counter()
        summary = run_etl(spark, settings, work / "lake", **kw)
        out = {"seconds": round(time.perf_counter() - t, 1), "cpu_seconds": round(_cpu_seconds(jvm) - cpu0, 1),
               "events_read": summary["rows_read"]["identity_events"], "stages": summary["seconds"],
               "vertices": summary["vertices"], "edges": summary["edges"]}
        print(name, json.dumps(out), flush=True)
        return out

    history = timed("history", out=work / "daily", key=key)
    shutil.move(held, last)  # the day arrives
    inc = timed("incremental", out=work / "daily", key=key, incremental=True)
    full = timed("full", out=work / "full", key=key)
    noop_t = time.perf_counter()
    run_etl(spark, settings, work / "lake", work / "daily", key, incremental=True)
    noop_s = round(time.perf_counter() - noop_t, 1)
    spark.stop()
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "spark_master": settings.etl.master, "customers": args.customers, "events": n_events, "days": len(days),
        "new_day_events": n_last, "history_load": history, "incremental": inc, "full": full,
        "rerun_noop_seconds": noop_s,
        "same_counts": inc["vertices"] == full["vertices"] and inc["edges"] == full["edges"],
        "full_over_incremental": {"wall": round(full["seconds"] / inc["seconds"], 2),
                                  "cpu": round(full["cpu_seconds"] / inc["cpu_seconds"], 2)},
    }
    print(json.dumps({k: result[k] for k in ("same_counts", "full_over_incremental", "rerun_noop_seconds")}))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=52_000)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--load-only", type=Path, default=None, help="load this existing snapshot, skip the build")
    ap.add_argument("--incremental", action="store_true", help="full vs incremental load of one new day")
    args = ap.parse_args()
    args.out = args.out or REPO / "bench" / "results" / ("etl_incremental.json" if args.incremental else "etl.json")

    work = Path(tempfile.mkdtemp(prefix="identigraph-bench-etl-"))
    # IDENTIGRAPH__... variables still apply (to compare writer counts, batch sizes)
    settings = load_settings(packaged_default("identigraph.yaml"), overrides={
        "data_dir": str(work / "data"),
        "services": {"gremlin": {"port": free_port(), "heap": "6g"}, "elasticmq": {"port": free_port()}},
    })
    if args.incremental:
        incremental(args, work, settings)
        return
    if args.load_only:
        spark = session(settings)
        local.up(settings, ["gremlin-server"])
        try:
            print(json.dumps(load_snapshot(spark, settings, args.load_only)))
        finally:
            local.down(settings, ["gremlin-server"])
        return
    t0 = time.perf_counter()
    world = generate_world(SynthParams(customers=args.customers, seed=21))
    write_world(world, work / "world", fmt="parquet")
    n_events = len(world.identity_events)
    print(f"world: {args.customers:,} customers, {n_events:,} identity events in tables "
          f"({time.perf_counter() - t0:.1f}s)", flush=True)
    del world

    spark = session(settings)
    t0 = time.perf_counter()
    summary = run_etl(spark, settings, work / "world", work / "snapshot", b"bench-key-0123456789abcdef")
    spark_s = time.perf_counter() - t0
    elements = sum(summary["vertices"].values()) + sum(summary["edges"].values())
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "spark_master": settings.etl.master, "customers": args.customers, "events": n_events,
        "snapshot": {"seconds": round(spark_s, 1), "events_per_s": round(n_events / spark_s),
                     "stages": summary["seconds"], "elements": elements},
    }
    print(json.dumps(result["snapshot"]), flush=True)
    if not args.skip_load:
        local.up(settings, ["gremlin-server"])
        try:
            stats = load_snapshot(spark, settings, work / "snapshot")
            with GraphClient(settings) as client:
                in_graph = sum(queries.counts(client).values())
            result["load"] = {**stats, "elements_in_graph": in_graph,
                              "writers": settings.etl.load_partitions * settings.graph.batch.concurrency,
                              "rows_per_request": settings.graph.batch.max_records}
            print(json.dumps(result["load"]), flush=True)
        finally:
            local.down(settings, ["gremlin-server"])
    spark.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
