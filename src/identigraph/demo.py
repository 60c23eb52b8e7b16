"""The embedded demo behind ``make demo``: every stage that exists so far, on a small synthetic world.

Each later stage (Spark load, stream, labels, model, API) adds its step here, so ``make demo`` always
shows the whole pipeline as it stands.
"""

from __future__ import annotations

import json
import time

from rich.console import Console
from rich.rule import Rule

from identigraph.config import Settings


def run_demo(settings: Settings, customers: int, events: int, keep_running: bool, console: Console) -> dict:
    from identigraph.graph import pseudonym, queries
    from identigraph.graph.client import GraphClient
    from identigraph.graph.load_slice import load_slice
    from identigraph.services import local
    from identigraph.synth import SynthParams, generate_world, write_world

    summary: dict = {}
    t_all = time.perf_counter()
    console.print(Rule("1. local services"))
    for r in local.up(settings):
        console.print(f"  {r.name}: {r.detail} on {r.host}:{r.port} (pid {r.pid}, log {r.log})")
    try:
        console.print(Rule(f"2. synthetic world ({customers:,} customers)"))
        world_dir = settings.data_path / "demo" / "world"
        t0 = time.perf_counter()
        world = generate_world(SynthParams(customers=customers, seed=7))
        counts = write_world(world, world_dir, fmt="parquet", overwrite=True)
        console.print(f"  {world_dir}  ({time.perf_counter() - t0:.1f}s)")
        console.print(f"  {json.dumps(counts.get('counts', counts), default=str)}")
        summary["world"] = counts

        console.print(Rule(f"3. first {events:,} identity events into the graph (batched upserts)"))
        with GraphClient(settings) as client:
            queries.clear(client)
            report = load_slice(client, pseudonym.from_settings(settings), world_dir,
                                settings.data_path / "quarantine", events)
            up = report.upsert
            console.print(f"  {report.events:,} events → {up.edges:,} edges, {report.customers:,} customers "
                          f"in {up.requests} requests, {up.seconds:.1f}s ({up.elements_per_s:,.0f} elements/s), "
                          f"{up.retries} retries; quarantined {sum(report.quarantined.values())}")
            graph_counts = queries.counts(client)
            for key in sorted(graph_counts):
                console.print(f"  {key:<14} {graph_counts[key]:>8,}")
            summary["graph"] = graph_counts
            sample = world.truth[world.truth["fraud_type"] == "ring"]["customer_id"].head(1).tolist()
            if sample:
                hood = queries.neighbourhood(client, sample, hops=1, fanout_cap=20)
                console.print(f"  ring member {sample[0]}: {len(hood.customers) - 1} customers share its "
                              f"identifiers ({len(hood.truncated_identifiers)} hub identifiers capped)")
    finally:
        if not keep_running:
            console.print(Rule("services down"))
            for r in local.down(settings):
                console.print(f"  {r.name}: {r.detail}")
    console.print(f"demo finished in {time.perf_counter() - t_all:.1f}s")
    return summary
