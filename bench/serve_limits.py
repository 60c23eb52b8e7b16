"""CPU per scoring request of the API process, in-process, before/after a change: what admission costs.

The speed target (p99 <= 50 ms at 200 requests/s on 2 cores) leaves ~10 ms of CPU per request for
everything, so every check on the request path has to be measured, not assumed cheap. This script times
the whole app in one process (requests driven straight into the ASGI app, so the middleware and the routes are in
it; Gremlin Server's CPU is not), on a small world loaded the way the API tests load it:

1. Gremlin Server + ElasticMQ on free ports, a synthetic world (default 1,500 customers) written through the
   graph layer's Python paths, a tiny model trained on its snapshot — all kept in ``--work`` for reuse;
2. warm-up, then ``--requests`` sequential ``POST /v1/score`` (90% logins of known customers with one of their
   devices and IPs, 10% signups with a donor's identifiers) driven straight into the ASGI app (no client,
   no sockets: what is measured is the app), process CPU (user+system, all threads) per request, median of
   ``--repeats`` passes, once per key kind (score-only; score + identity:read);
3. the same requests straight into ``ScoringService.score`` (no HTTP), and one pass of that under cProfile:
   where the CPU went, top functions by own time.

Run it on another checkout's code with ``PYTHONPATH=<that checkout>/src`` (same ``--work``: same world, graph
and model) to get the before figure. Wrap timed runs in the benchmark lock.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import inspect
import io
import json
import os
import platform
import pstats
import random
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the API tests' world loader: one way to build this graph

KEYS = {"scorer": ["score"], "reviewer": ["score", "identity:read"]}
IDENTIFIER_COLUMNS = ("device_id", "ip", "email", "phone", "card_fingerprint")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/identigraph-bench-serve-limits"))
    ap.add_argument("--customers", type=int, default=1500)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--label", default="this checkout")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    import orjson
    import pandas as pd
    import yaml

    import identigraph
    from identigraph.config import load_settings
    from identigraph.graph import pseudonym, queries
    from identigraph.graph.client import GraphClient
    from identigraph.serving.app import create_app
    from identigraph.serving.auth import key_digest
    from identigraph.serving.config import ServingConfig
    from identigraph.services import local
    from identigraph.services.process import free_port
    from identigraph.synth import SynthParams, generate_world

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ports_file = work / "ports.json"
    ports = json.loads(ports_file.read_text()) if ports_file.exists() else {"gremlin": free_port(),
                                                                           "elasticmq": free_port()}
    ports_file.write_text(json.dumps(ports))
    settings = load_settings(REPO / "conf" / "identigraph.yaml", environ={}, overrides={
        "data_dir": str(work / "data"), "pii": {"key": "bench-limits-pii-key-0123456789"},
        "services": {"gremlin": {"port": ports["gremlin"], "heap": "1g"}, "elasticmq": {"port": ports["elasticmq"]}}})
    params = SynthParams(customers=args.customers, seed=5, ring_share=0.06, multi_account_share=0.03, ato_share=0.02)
    world = generate_world(params)
    local.up(settings)
    result: dict = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "label": args.label,
                    "code": str(Path(identigraph.__file__).parent),
                    "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
                               f"Python {sys.version.split()[0]}",
                    "customers": args.customers, "requests_per_pass": args.requests, "passes": args.repeats}
    try:
        from test_serving_api import load_world

        with GraphClient(settings) as client:
            if queries.counts(client).get("v:customer", 0) != len(world.customers):
                load_world(client, world, pseudonym.from_settings(settings))
            model_dir = work / "model"
            if not (model_dir / "metrics.json").exists():
                from identigraph.etl.export import export_snapshot
                from identigraph.model.config import load_model_config
                from identigraph.model.pipeline import run_train

                export_snapshot(client, work / "snapshot")
                summary = json.loads((work / "snapshot" / "_summary.json").read_text())
                summary["as_of"] = pd.Timestamp(params.end).strftime("%Y-%m-%dT%H:%M:%SZ")
                (work / "snapshot" / "_summary.json").write_text(json.dumps(summary))
                cfg = load_model_config(REPO / "conf" / "model.yaml", {
                    "training.epochs": 30, "training.patience": 10, "split": "stratified", "network.hidden": 32})
                run_train(work / "snapshot", model_dir, cfg, target="customer.blocked", device="cpu",
                          log=lambda _: None)

        serving = yaml.safe_load((REPO / "conf" / "serving.yaml").read_text())
        serving = {k: v for k, v in serving.items() if k in ServingConfig.model_fields}  # an older checkout's keys
        serving["api_keys"] = [{"id": name, "sha256": key_digest(f"{name}-secret"), "scopes": scopes,
                                "rate_limit": {"per_second": 100_000, "burst": 100_000}}
                               for name, scopes in KEYS.items()]
        serving.update(as_of=params.end.isoformat(), audit_file=str(work / "audit.jsonl"), review_queue=False)
        app = create_app(settings, ServingConfig.model_validate(serving), model_dir)

        rng = random.Random(5)
        ev = world.identity_events
        recent = ev.dropna(subset=["device_id"]).sort_values("occurred_at").groupby("customer_id").tail(3)
        logins = [{"customer_id": r["customer_id"], "action": "login",
                   "identifiers": {c: r[c] for c in ("device_id", "ip") if isinstance(r[c], str)}}
                  for r in recent.to_dict("records")]
        donors = [{c: v for c, v in r.items() if c in IDENTIFIER_COLUMNS and isinstance(v, str)}
                  for r in ev[ev["event_type"] == "signup"].to_dict("records")]
        mix = [{"customer_id": f"signup-{i:06d}", "action": "signup", "identifiers": rng.choice(donors)}
               if rng.random() < 0.1 else rng.choice(logins) for i in range(args.requests)]

        service = app.state.service
        headers = {name: [(b"x-api-key", f"{name}-secret".encode()), (b"content-type", b"application/json")]
                   for name in KEYS}
        bodies = [orjson.dumps(b) for b in mix]

        async def asgi_pass(key: str) -> float:
            """Every request of the mix through the ASGI app (middleware, validation, route, thread pool)."""
            t0 = _cpu()
            for body in bodies:
                sent = []

                async def receive(body=body):
                    return {"type": "http.request", "body": body, "more_body": False}

                async def send(message):
                    sent.append(message)

                scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                         "scheme": "http", "path": "/v1/score", "raw_path": b"/v1/score", "query_string": b"",
                         "root_path": "", "headers": headers[key], "client": ("127.0.0.1", 1),
                         "server": ("127.0.0.1", 80), "state": {}}
                await app(scope, receive, send)
                assert sent[0]["status"] == 200, sent
            return (_cpu() - t0) * 1000 / len(bodies)

        def service_pass(detail: bool) -> float:
            """The same requests straight into ScoringService.score: no HTTP at all."""
            kwargs = {"detail": True} if detail else {}
            t0 = _cpu()
            for n, b in enumerate(mix):
                service.score(b["customer_id"], b["action"], b["identifiers"], "bench", f"r{n}", **kwargs)
            return (_cpu() - t0) * 1000 / len(mix)

        def median_of(fn, *a) -> dict:
            passes = [fn(*a) for _ in range(args.repeats)]
            return {"median": round(statistics.median(passes), 3), "passes": [round(p, 3) for p in passes]}

        async def asgi_all() -> dict:  # no lifespan: its shutdown would close the service the next passes use
            await asgi_pass("scorer")  # warm-up: connections, the server's JIT, torch's first calls
            out = {}
            for key in KEYS:
                passes = [await asgi_pass(key) for _ in range(args.repeats)]
                out[key] = {"median": round(statistics.median(passes), 3), "passes": [round(p, 3) for p in passes]}
            return out

        result["asgi_cpu_ms_per_request"] = asyncio.run(asgi_all())
        service_pass(False)
        result["service_cpu_ms_per_request"] = {"score_only": median_of(service_pass, False)}
        if "detail" in inspect.signature(service.score).parameters:
            result["service_cpu_ms_per_request"]["with_evidence"] = median_of(service_pass, True)
        profile = cProfile.Profile()
        profile.enable()
        service_pass(False)
        profile.disable()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(25)
        result["profile_top_tottime"] = [line for line in text.getvalue().splitlines() if line.strip()][-27:]
        result["degraded_of_50"] = sum(service.score(b["customer_id"], b["action"], b["identifiers"], "bench",
                                                     "d")["degraded"] for b in mix[:50])
        service.close()
    finally:
        local.down(settings)
    print(json.dumps({k: v for k, v in result.items() if k != "profile_top_tottime"}, indent=2))
    print("\n".join(result["profile_top_tottime"]))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
