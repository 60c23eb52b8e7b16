"""The historical load at scale: Spark snapshot build (events/s) and graph load (elements/s), one run.

Usage: python bench/etl.py [--customers 52000] [--out bench/results/etl.json]

Spark runs in local[*] on this machine; the graph is the local Gremlin Server started for the run.
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

from identigraph.services.process import free_port
from identigraph.config import load_settings
from identigraph.etl.graph_load import load_snapshot
from identigraph.etl.job import run_etl
from identigraph.etl.spark import session
from identigraph.graph import queries
from identigraph.graph.client import GraphClient
from identigraph.services import local
from identigraph.synth import SynthParams, generate_world, write_world

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=52_000)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "etl.json")
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--load-only", type=Path, default=None, help="load this existing snapshot, skip the build")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="identigraph-bench-etl-"))
    # IDENTIGRAPH__... variables still apply (to compare writer counts, batch sizes)
    settings = load_settings(REPO / "conf" / "identigraph.yaml", overrides={
        "data_dir": str(work / "data"),
        "services": {"gremlin": {"port": free_port(), "heap": "6g"}, "elasticmq": {"port": free_port()}},
    })
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
