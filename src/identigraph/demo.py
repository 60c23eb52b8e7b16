"""The embedded demo behind ``make demo``: the whole pipeline on a synthetic world, stage by stage.

services → world → Spark historical load → labels → stream → graph → train → evaluation → API decisions
→ review console → services down (``keep_running``: the API and console serve until Ctrl-C, and the services
stay up after). Every stage prints what it produced; ``run_demo`` returns the same as a dict so a test can
check each stage on a tiny world.
"""

from __future__ import annotations

import time

from rich.console import Console

from identigraph.config import Settings
from identigraph.terminal import stage_rule


def run_demo(settings: Settings, customers: int, keep_running: bool, console: Console,
             model_overrides: dict | None = None) -> dict:
    """Every stage in order on one fresh world, so a newcomer sees the whole system work before reading it."""
    from identigraph.etl.graph_load import load_and_report
    from identigraph.etl.job import run_etl
    from identigraph.etl.report import print_summary
    from identigraph.etl.spark import session
    from identigraph.graph import pseudonym, queries
    from identigraph.graph.client import GraphClient
    from identigraph.services import local
    from identigraph.synth import SynthParams, generate_world, write_world

    summary: dict = {}
    t_all = time.perf_counter()
    console.print(stage_rule("1. local services"))
    for r in local.up(settings):
        console.print(f"  {r.name}: {r.detail} on {r.host}:{r.port} (pid {r.pid}, log {r.log})")
    try:
        console.print(stage_rule(f"2. synthetic world ({customers:,} customers)"))
        demo_dir = settings.data_path / "demo"
        t0 = time.perf_counter()
        world = generate_world(SynthParams(customers=customers, seed=7))
        counts = write_world(world, demo_dir / "world", fmt="parquet", overwrite=True)
        console.print(f"  {demo_dir / 'world'} in {time.perf_counter() - t0:.1f}s: "
                      + ", ".join(f"{k} {v:,}" for k, v in counts.items() if isinstance(v, int)))

        console.print(stage_rule("3. historical load (Spark): tables → snapshot → graph"))
        spark = session(settings)
        snap = run_etl(spark, settings, demo_dir / "world", demo_dir / "snapshot", pseudonym.resolve_key(settings),
                       overwrite=True)
        print_summary(snap, console)
        with GraphClient(settings) as client:
            queries.clear(client)
        load_and_report(spark, settings, demo_dir / "snapshot", console)
        summary["snapshot"] = snap

        console.print(stage_rule("3b. training labels (Spark): label maturity, then graph correction of uncaught fraud"))
        from identigraph.labeling.job import run_labeling
        from identigraph.labeling.report import print_report

        labels = run_labeling(spark, demo_dir / "snapshot", demo_dir / "labels", truth=demo_dir / "world" / "truth.csv",
                              overwrite=True)
        print_report(labels, console)
        summary["labels"] = labels

        console.print(stage_rule("4. the last days through the queue (stream consumer)"))
        from identigraph.etl.consumer import Consumer
        from identigraph.etl.publish import publish_file

        sent = publish_file(settings, demo_dir / "world" / "stream.jsonl")
        quick = settings.model_copy(update={"stream": settings.stream.model_copy(update={"wait_s": 1})})
        with GraphClient(settings) as client:
            t0 = time.perf_counter()
            stats = Consumer(quick, client=client).run(until_empty=True)
            seconds = time.perf_counter() - t0
        console.print(f"  published {sent.sent:,} events; consumed {stats.received:,} in {seconds:.1f}s: "
                      f"{stats.applied:,} applied, {stats.duplicates:,} duplicates, "
                      f"{stats.dead_lettered:,} dead-lettered")
        summary["stream"] = stats

        console.print(stage_rule("5. the graph"))
        with GraphClient(settings) as client:
            graph_counts = queries.counts(client)
            for key in sorted(graph_counts):
                console.print(f"  {key:<14} {graph_counts[key]:>9,}")
            summary["graph"] = graph_counts
            ring = world.truth[(world.truth["fraud_type"] == "ring")]["customer_id"].head(1).tolist()
            if ring:
                hood = queries.neighbourhood(client, ring, hops=1, fanout_cap=20)
                blocked = sum(1 for c in hood.customers if hood.vertices[c].get("blocked"))
                console.print(f"  ring member {ring[0]}: {len(hood.customers) - 1} customers share its identifiers, "
                              f"{blocked} of them blocked; {len(hood.truncated_identifiers)} hub identifiers capped")

        console.print(stage_rule("6. train the edge-aware relational GCN (CPU) on the matured + corrected labels"))
        from identigraph.model.config import load_model_config
        from identigraph.model.pipeline import prepare, run_evaluate, run_train

        cfg = load_model_config(overrides=model_overrides)
        prepared = prepare(demo_dir / "snapshot", cfg, labels=demo_dir / "labels")
        _version, metrics = run_train(demo_dir / "snapshot", demo_dir / "model", cfg, labels=demo_dir / "labels",
                                     log=lambda m: console.print(f"  {m}"), prepared=prepared)
        summary["model"] = metrics

        console.print(stage_rule("7. evaluation: model vs plain RGCN vs GBDT, unblocked customers against the truth"))
        from identigraph.model.cli import print_evaluation

        evaluation = run_evaluate(demo_dir / "snapshot", demo_dir / "model", cfg, labels=demo_dir / "labels",
                                  truth=demo_dir / "world" / "truth.csv", log=lambda m: console.print(f"  {m}"),
                                  prepared=prepared)
        print_evaluation(evaluation, console)
        summary["evaluation"] = evaluation

        console.print(stage_rule("8. the scoring API: a ring member, an account-takeover victim, a household member"))
        from identigraph.demo_api import score_examples

        summary["decisions"], summary["review"] = score_examples(settings, demo_dir, world.truth, console,
                                                                 keep_running=keep_running)
    finally:
        if not keep_running:
            console.print(stage_rule("services down"))
            for r in local.down(settings):
                console.print(f"  {r.name}: {r.detail}")
        else:
            console.print("  the local services stay up: `identigraph services down` stops them")
    console.print(f"demo finished in {time.perf_counter() - t_all:.1f}s")
    return summary
