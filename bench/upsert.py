"""Batched upserts vs one traversal per element, into the local Gremlin Server, measured in one run.

Usage: python bench/upsert.py [--customers 5000] [--single 1500] [--out bench/results/upsert.json]

Elements = vertices + edges that exist in the graph afterwards (counted by the server, not assumed).
Every configuration starts from an empty graph; the one-per-request baseline writes a prefix of the
same records (it is ~20× slower, so the whole set would take minutes) and its rate is per element too.
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

from gremlin_python.process.traversal import T

from identigraph.config import BatchLimits, load_settings
from identigraph.config_loader import packaged_default
from identigraph.graph import queries
from identigraph.graph.client import GraphClient
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.graph.records import aggregate, customer_vertex, event_edges
from identigraph.graph.upsert import (
    Upserter,
    _edge_traversal,
    _endpoint_traversal,
    _vertex_rows,
    _vertex_traversal,
    edge_rows,
)
from identigraph.services import local
from identigraph.services.process import free_port
from identigraph.synth import SynthParams, generate_world

REPO = Path(__file__).resolve().parents[1]


def _records(customers: int):
    world = generate_world(SynthParams(customers=customers, seed=11))
    pseudo = Pseudonymiser(b"bench-key-0123456789abcdef")
    edges = []
    for event in world.identity_events.to_dict("records"):
        edges.extend(event_edges(event, pseudo))
    edges = aggregate(edges)
    edges.sort(key=lambda e: e.from_id)  # a customer's edges together, as a partitioned Spark load sends them
    wanted = {e.from_id for e in edges}
    vertices = [v for v in (customer_vertex(r) for r in world.customers.to_dict("records")) if v.id in wanted]
    return vertices, edges, len(world.identity_events)


def _run(client, vertices, edges, limits):
    queries.clear(client)
    up = Upserter(client, limits)
    t0 = time.perf_counter()
    stats = up.vertices(vertices)
    up.edges(edges, stats)
    seconds = time.perf_counter() - t0
    counts = queries.counts(client)
    elements = sum(counts.values())
    return {"max_records": limits.max_records, "concurrency": limits.concurrency, "rows": len(vertices) + len(edges),
            "elements": elements, "seconds": round(seconds, 3), "elements_per_s": round(elements / seconds),
            "requests": stats.requests, "retries": stats.retries}


def _one_per_request(client, vertices, edges):
    """The naive client: one request per vertex (customers, then every endpoint) and one per edge."""
    queries.clear(client)
    endpoints = {e.to_id: e.identifier_label for e in edges} | {e.from_id: "customer" for e in edges}
    t0 = time.perf_counter()
    for v in vertices:
        client.submit(lambda g, v=v: _vertex_traversal(g, _vertex_rows([v]), tuple(sorted(v.props))), "next")
    for vid, label in endpoints.items():
        client.submit(lambda g, row=[{T.id: vid, T.label: label}]: _endpoint_traversal(g, row), "next")
    for e in edges:
        client.submit(lambda g, rows=edge_rows([e], "max"): _edge_traversal(g, rows, "max"), "next")
    seconds = time.perf_counter() - t0
    elements = sum(queries.counts(client).values())
    return {"mode": "one traversal per element", "elements": elements, "seconds": round(seconds, 3),
            "elements_per_s": round(elements / seconds), "requests": len(vertices) + len(endpoints) + len(edges)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=5000)
    ap.add_argument("--single", type=int, default=1500, help="edges written one per request")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "upsert.json")
    args = ap.parse_args()

    data = Path(tempfile.mkdtemp(prefix="identigraph-bench-"))
    settings = load_settings(packaged_default("identigraph.yaml"), environ={}, overrides={
        "data_dir": str(data),
        "services": {"gremlin": {"port": free_port()}, "elasticmq": {"port": free_port()}},
    })
    t0 = time.perf_counter()
    vertices, edges, n_events = _records(args.customers)
    print(f"world: {args.customers} customers, {n_events} events -> {len(vertices)} customer rows, "
          f"{len(edges)} edge rows ({time.perf_counter() - t0:.1f}s)", flush=True)
    local.up(settings, ["gremlin-server"])
    results = []
    try:
        with GraphClient(settings, pool_size=4) as client:
            _run(client, vertices[:200], edges[:1000], BatchLimits(max_records=500))  # JIT warm-up
            for limits in (BatchLimits(max_records=2000, concurrency=1), BatchLimits(max_records=1000, concurrency=2),
                           BatchLimits(max_records=500, concurrency=2), BatchLimits(max_records=250, concurrency=2),
                           BatchLimits(max_records=500, concurrency=3), BatchLimits(max_records=200, concurrency=1)):
                results.append(_run(client, vertices, edges, limits))
                print(json.dumps(results[-1]), flush=True)
            sub_edges = edges[: args.single]
            sub_ids = {e.from_id for e in sub_edges}
            sub_vertices = [v for v in vertices if v.id in sub_ids]
            single = _one_per_request(client, sub_vertices, sub_edges)
            print(json.dumps(single), flush=True)
    finally:
        local.down(settings, ["gremlin-server"])
    best = max(results, key=lambda r: r["elements_per_s"])
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "tinkerpop": settings.services.gremlin.version,
        "customers": args.customers, "events": n_events,
        "batched": results, "one_per_request": single,
        "best_batched_elements_per_s": best["elements_per_s"],
        "speedup_best_vs_one_per_request": round(best["elements_per_s"] / single["elements_per_s"], 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"best batched {best['elements_per_s']:,} elements/s (max_records={best['max_records']}, "
          f"concurrency={best['concurrency']}); one per request {single['elements_per_s']:,} elements/s; "
          f"speed-up {report['speedup_best_vs_one_per_request']}x  -> {args.out}")


if __name__ == "__main__":
    main()
