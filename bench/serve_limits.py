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
   where the CPU went, top functions by own time;
4. ``--parts probe``: the issue's black-box probe against the app under the real uvicorn (the project's
   protocol and options where the checkout has them), keys with the shipped limits: 40 idle
   unauthenticated sockets (headers, ``Content-Length: 1000``, one byte, silence) while a keyed client
   scores; one identity key reading depth-2 connections at ~6/s while another scores; an unauthenticated
   100 MB body (the process's peak RSS growth). Figures: statuses, latencies, degraded answers.

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
    ap.add_argument("--parts", default="cpu,probe", help="cpu, probe or both (comma-separated)")
    args = ap.parse_args()

    import orjson
    import pandas as pd
    import yaml

    import identigraph
    from identigraph.config import load_settings
    from identigraph.config_loader import packaged_default
    from identigraph.graph import pseudonym, queries
    from identigraph.graph.client import GraphClient
    from identigraph.services import local
    from identigraph.services.process import free_port
    from identigraph.serving.app import create_app
    from identigraph.serving.auth import key_digest
    from identigraph.serving.config import ServingConfig
    from identigraph.synth import SynthParams, generate_world

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ports_file = work / "ports.json"
    ports = json.loads(ports_file.read_text()) if ports_file.exists() else {"gremlin": free_port(),
                                                                           "elasticmq": free_port()}
    ports_file.write_text(json.dumps(ports))
    settings = load_settings(packaged_default("identigraph.yaml"), environ={}, overrides={
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
                cfg = load_model_config(packaged_default("model.yaml"), {
                    "training.epochs": 30, "training.patience": 10, "split": "stratified", "network.hidden": 32})
                run_train(work / "snapshot", model_dir, cfg, target="customer.blocked", device="cpu",
                          log=lambda _: None)

        serving = yaml.safe_load((packaged_default("serving.yaml")).read_text())
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

                async def send(message, sent=sent):
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

        parts = set(args.parts.split(","))
        if "cpu" in parts:
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
        if "probe" in parts:
            result["probe"] = probe(settings, ServingConfig, serving, model_dir, mix, world)
    finally:
        local.down(settings)
    print(json.dumps({k: v for k, v in result.items() if k != "profile_top_tottime"}, indent=2))
    print("\n".join(result.get("profile_top_tottime", [])))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")


PROBE_KEYS = {"scorer": (["score"], {"per_second": 500, "burst": 1000}),  # conf/serving.yaml's local keys
              "reader": (["identity:read"], {"per_second": 50, "burst": 100})}


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def probe(settings, config_cls, serving: dict, model_dir: Path, mix: list[dict], world) -> dict:
    """The issue's black-box probe, against the app under uvicorn in a thread of this process."""
    import socket
    import threading

    import httpx
    import uvicorn

    from identigraph.services.process import free_port
    from identigraph.serving.app import create_app
    from identigraph.serving.auth import key_digest

    serving = dict(serving, api_keys=[{"id": n, "sha256": key_digest(f"{n}-secret"), "scopes": sc, "rate_limit": rl}
                                      for n, (sc, rl) in PROBE_KEYS.items()])
    cfg = config_cls.model_validate(serving)
    try:
        from identigraph.serving.server import uvicorn_options
        options = uvicorn_options(cfg)
    except ImportError:  # a checkout without the header deadline: uvicorn as it was started there
        options = {"log_config": None, "access_log": False}
    app = create_app(settings, cfg, model_dir)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, **options))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    scorer = {"X-API-Key": "scorer-secret"}
    reader = {"X-API-Key": "reader-secret"}
    out: dict = {"loadavg_1m_before": os.getloadavg()[0]}

    def score_calls(n: int, pause: float, client) -> dict:
        statuses, ms, degraded = {}, [], 0
        for i in range(n):
            t0 = time.perf_counter()
            try:
                r = client.post(f"{url}/v1/score", json=mix[i % len(mix)], headers=scorer)
                code = str(r.status_code)
                degraded += r.status_code == 200 and bool(r.json().get("degraded"))
            except httpx.HTTPError as e:
                code = type(e).__name__
            ms.append((time.perf_counter() - t0) * 1000)
            statuses[code] = statuses.get(code, 0) + 1
            time.sleep(pause)
        ms.sort()
        return {"calls": n, "statuses": statuses, "degraded": degraded, "p50_ms": round(statistics.median(ms), 1),
                "max_ms": round(ms[-1], 1)}

    try:
        for _ in range(60):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.25)
        with httpx.Client(timeout=5) as client:
            score_calls(20, 0, client)  # warm-up
            out["baseline_scoring"] = score_calls(30, 0.05, client)

            idle = []
            for _ in range(40):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 1000\r\n\r\n{")
                idle.append(s)
            time.sleep(0.5)
            out["scoring_beside_40_idle_unauthenticated_sockets"] = score_calls(30, 0.05, client)
            for s in idle:
                s.close()

            customers = world.customers["customer_id"].tolist()
            reads: dict = {}
            read_ms: list[float] = []

            def read_load(seconds: float = 10.0, rate: float = 6.0) -> None:
                with httpx.Client(timeout=5) as rc:
                    end, i = time.monotonic() + seconds, 0
                    while time.monotonic() < end:
                        t0 = time.monotonic()
                        try:
                            r = rc.get(f"{url}/v1/customers/{customers[i % len(customers)]}/connections",
                                       params={"depth": 2}, headers=reader)
                            code = str(r.status_code)
                            if r.status_code != 200:
                                reads.setdefault("first_refusal", r.text[:160])
                        except httpx.HTTPError as e:
                            code = type(e).__name__
                        read_ms.append((time.monotonic() - t0) * 1000)
                        reads[code] = reads.get(code, 0) + 1
                        i += 1
                        time.sleep(max(0.0, 1 / rate - (time.monotonic() - t0)))

            t = threading.Thread(target=read_load)
            t.start()
            time.sleep(0.5)
            beside = score_calls(25, 0.3, client)
            t.join()
            read_ms.sort()
            out["identity_reads_depth2_6_per_s"] = {
                "reads": reads, "read_p50_ms": round(statistics.median(read_ms), 1) if read_ms else None,
                "read_max_ms": round(read_ms[-1], 1) if read_ms else None, "scoring_beside_them": beside}

        before = _peak_rss_mb()
        chunk = b"x" * (1 << 20)
        t0 = time.perf_counter()
        try:
            code = str(httpx.post(f"{url}/v1/score", content=iter([chunk] * 100), timeout=60,
                                  headers={"Content-Type": "application/json", "Content-Length": str(100 << 20)}
                                  ).status_code)
        except httpx.HTTPError as e:
            code = type(e).__name__
        out["unauthenticated_100MB_body"] = {"answer": code, "seconds": round(time.perf_counter() - t0, 2),
                                             "peak_rss_growth_mb": round(_peak_rss_mb() - before, 1)}
        out["loadavg_1m_after"] = os.getloadavg()[0]
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        app.state.service.close()
    return out


if __name__ == "__main__":
    main()
