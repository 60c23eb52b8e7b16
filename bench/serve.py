"""The scoring API under open-loop load: `identigraph serve` in its own process, this script as the caller.

Usage: python bench/serve.py [--customers 50000] [--rates 50,100,200,400] [--workers 1,2] [--seconds 30]
                             [--work DIR] [--model DIR] [--baseline-src DIR] [--out bench/results/serve.json]

1. A synthetic world (>= 50,000 customers) through the real pipeline: Spark snapshot, graph load into the
   local Gremlin Server; a model trained on that snapshot (epochs capped: latency does not depend on how
   well it was trained). ``--work DIR`` keeps all of it for the next run.
2. The request mix other teams send: 90% logins of known customers carrying the device and IP of one of
   their own recent events, 10% signups (new ids) carrying the identifiers of a world customer's signup —
   carrier-NAT IPs and other hubs included, as they come.
3. For each worker count: ``identigraph serve`` started as a subprocess (shipped conf/serving.yaml caps and
   policy, the snapshot's as-of); requests one at a time, then each rate for ``--seconds`` (open loop,
   latency from the due time: queueing counts). p50/p99, errors, degraded answers, the server's own stage
   timings from /metrics, CPU seconds per request of the API (all its processes) and of Gremlin Server.
4. ``--baseline-src DIR`` (a checkout of an older commit's ``src``): the same requests one at a time, and at
   a low rate, against that version's server with that version's shipped conf/serving.yaml on the same graph
   (``--baseline-model``: a model that version can load; the current model format is newer) — before/after
   ratios per stage and per request, measured in this run.
5. API vs batch: for known customers scored without identifiers, the API's score against `identigraph
   predict` on the snapshot and against the exact full-graph score (only the customer's own labels hidden):
   Spearman correlation, the share of decisions that differ, and the mean difference (is the API softer?).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import pandas as pd
import psutil
import yaml

from identigraph.config import load_settings
from identigraph.config_loader import packaged_default
from identigraph.graph import queries
from identigraph.graph.client import GraphClient
from identigraph.services import local
from identigraph.services.process import free_port
from identigraph.serving.auth import key_digest
from identigraph.serving.loadgen import gauge, run_open_loop, stage_breakdown, wait_until_ready
from identigraph.synth import SynthParams, generate_world, write_world

REPO = Path(__file__).resolve().parents[1]
KEY = "bench-scoring-key"
DETAIL_KEY = "bench-detail-key"
PII_KEY = "bench-pii-key-0123456789abcdef"
SEED = 21
IDENTIFIER_COLUMNS = ("device_id", "ip", "email", "phone", "card_fingerprint")


def _cpu_seconds(pid: int) -> float:
    """user + system CPU of a process and all its children (uvicorn's worker processes)."""
    try:
        proc = psutil.Process(pid)
        total = 0.0
        for p in [proc, *proc.children(recursive=True)]:
            t = p.cpu_times()
            total += t.user + t.system
        return total
    except psutil.NoSuchProcess:
        return 0.0


def _gremlin_pid(settings) -> int | None:
    for r in local.status(settings, ["gremlin-server"]):
        return r.pid
    return None


def snapshot_summary(snapshot: Path) -> dict:
    """The ``_summary.json`` of the run a snapshot location publishes (versioned with ``LATEST``, or plain)."""
    from identigraph.etl import fs as fsys
    from identigraph.etl import snapshot as snap

    fs = fsys.PyFS()
    return json.loads(fsys.read_text(fs, fsys.join(snap.resolve(fs, snapshot).prefix, snap.SUMMARY)))


def build(work: Path, settings, customers: int, epochs: int, model: Path | None) -> dict:
    """World → snapshot → graph → model, each step skipped when ``work`` already has it."""
    from identigraph.etl.graph_load import load_snapshot
    from identigraph.etl.job import run_etl
    from identigraph.etl.spark import session

    info: dict = {}
    params = SynthParams(customers=customers, seed=SEED)
    if not (work / "world" / "manifest.json").exists():
        t0 = time.perf_counter()
        write_world(generate_world(params), work / "world", fmt="parquet", overwrite=True)
        info["world_s"] = round(time.perf_counter() - t0, 1)
    snapshot = work / "snapshot"
    spark = None
    if not ((snapshot / "LATEST").exists() or (snapshot / "_summary.json").exists()):
        spark = session(settings)
        t0 = time.perf_counter()
        run_etl(spark, settings, work / "world", snapshot, PII_KEY.encode(), overwrite=True)
        info["etl_s"] = round(time.perf_counter() - t0, 1)
    expected = snapshot_summary(snapshot)["vertices"]["customer"]
    with GraphClient(settings) as client:
        loaded = queries.counts(client).get("v:customer", 0)
        if loaded != expected:  # a graph file that did not survive a restart is reloaded, never trusted
            queries.clear(client)
            spark = spark or session(settings)
            t0 = time.perf_counter()
            load_snapshot(spark, settings, snapshot)
            info["graph_load_s"] = round(time.perf_counter() - t0, 1)
    if spark is not None:
        spark.stop()
    model_dir = model or work / "model"
    if not (model_dir / "metrics.json").exists():
        from identigraph.model.config import load_model_config
        from identigraph.model.pipeline import run_train

        cfg = load_model_config(packaged_default("model.yaml"), {"training.epochs": epochs})
        t0 = time.perf_counter()
        run_train(work / "snapshot", model_dir, cfg, target="customer.blocked", device="cpu", log=print)
        info["train_s"] = round(time.perf_counter() - t0, 1)
    info["model_dir"] = str(model_dir)
    return info


def request_mix(work: Path, n: int) -> list[dict]:
    """90% logins of known customers with their own recent device and IP, 10% signups with a donor's identifiers."""
    rng = random.Random(SEED)
    events = pd.read_parquet(work / "world" / "identity_events.parquet",
                             columns=["customer_id", "event_type", "occurred_at", *IDENTIFIER_COLUMNS])
    recent = events.dropna(subset=["device_id"]).sort_values("occurred_at").groupby("customer_id").tail(3)
    logins = [{"customer_id": r["customer_id"], "action": "login",
               "identifiers": {c: r[c] for c in ("device_id", "ip") if isinstance(r[c], str)}}
              for r in recent.to_dict("records")]
    signups = events[events["event_type"] == "signup"].sample(n=min(3000, len(events)), random_state=SEED)
    donors = [{c: v for c, v in row.items() if c in IDENTIFIER_COLUMNS and isinstance(v, str)}
              for row in signups.to_dict("records")]
    out = []
    for i in range(n):
        if rng.random() < 0.1:
            out.append({"customer_id": f"bench-signup-{i:07d}", "action": "signup", "identifiers": rng.choice(donors)})
        else:
            out.append(rng.choice(logins))
    return out


class Server:
    """One ``identigraph serve`` process (this checkout, or ``src`` of another one for the baseline)."""

    def __init__(self, work: Path, model_dir: str, port: int, workers: int, serving_yaml: Path,
                 src: Path | None = None, settings_yaml: Path | None = None) -> None:
        settings_yaml = settings_yaml or work / "identigraph.yaml"
        cmd = [str(Path(sys.executable).parent / "identigraph"), "--config", str(settings_yaml), "serve",
               "--model", model_dir, "--serving-config", str(serving_yaml), "--port", str(port),
               "--workers", str(workers)]
        env = dict(os.environ, PYTHONPATH=str(src)) if src else dict(os.environ)
        self.url = f"http://127.0.0.1:{port}"
        with open(work / f"serve-{port}-{workers}.log", "w") as log:  # the child keeps its own copy
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        wait_until_ready(self.url, timeout_s=240)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def _settle(session: aiohttp.ClientSession) -> None:
    """A saturated server still works through requests its callers gave up on: let it finish."""
    for _ in range(600):
        async with session.get("/metrics") as r:
            if gauge(await r.text(), "identigraph_serving_in_flight") <= 1:
                return
        await asyncio.sleep(1)


async def measure(url: str, rates: list[float], seconds: float, mix: list[dict], pids: dict[str, int | None],
                  sequential_n: int = 200) -> tuple[dict, list[dict]]:
    # idle connections are dropped before uvicorn's 5 s keep-alive ends, so none is reused half-closed
    connector = aiohttp.TCPConnector(limit=2000, keepalive_timeout=2)
    async with aiohttp.ClientSession(base_url=url, headers={"X-API-Key": KEY}, connector=connector) as session:
        async def metrics() -> str:
            async with session.get("/metrics") as r:
                return await r.text()

        # warm-up: connections, the JVM's JIT, first calls of torch and numpy
        await run_open_loop(session, lambda i: ("POST", "/v1/score", mix[i]), rate=10, seconds=10)
        offset = 100
        before, cpu0 = await metrics(), {k: _cpu_seconds(p) for k, p in pids.items() if p}
        lat = []
        for i in range(sequential_n):  # one at a time: what a request costs with no queue in front of it
            body = mix[offset + i]
            t0 = time.perf_counter()
            async with session.post("/v1/score", json=body) as r:
                await r.read()
                assert r.status == 200, await r.text()
            lat.append((time.perf_counter() - t0) * 1000)
        offset += sequential_n
        sequential = {"requests": sequential_n, "p50_ms": round(float(np.percentile(lat, 50)), 2),
                      "p99_ms": round(float(np.percentile(lat, 99)), 2),
                      "stage_ms_per_request": stage_breakdown(before, await metrics()),
                      "cpu_ms_per_request": {k: round((_cpu_seconds(p) - cpu0[k]) * 1000 / sequential_n, 2)
                                             for k, p in pids.items() if p},
                      "loadavg_1m": round(os.getloadavg()[0], 2)}
        print(json.dumps({"sequential": sequential}), flush=True)
        results = []
        for rate in rates:
            before = await metrics()
            cpu0 = {k: _cpu_seconds(p) for k, p in pids.items() if p}
            load0 = os.getloadavg()[0]

            def make_at(i: int, start: int = offset) -> tuple[str, str, dict]:
                return "POST", "/v1/score", mix[(start + i) % len(mix)]

            run = await run_open_loop(session, make_at, rate=rate, seconds=seconds)
            offset += run.sent
            row = run.summary()
            row["stage_ms_per_request"] = stage_breakdown(before, await metrics())
            row["cpu_ms_per_request"] = {k: round((_cpu_seconds(p) - cpu0[k]) * 1000 / max(run.sent, 1), 2)
                                         for k, p in pids.items() if p}
            row["loadavg_1m_before"] = round(load0, 2)
            print(json.dumps(row), flush=True)
            results.append(row)
            await _settle(session)
    return sequential, results


async def _scores(url: str, customers: list[str]) -> list[dict]:
    """Known customers scored without identifiers, a few at a time (agreement, not load)."""
    sem = asyncio.Semaphore(4)
    async with aiohttp.ClientSession(base_url=url, headers={"X-API-Key": DETAIL_KEY}) as session:
        async def one(cid: str) -> dict:
            async with sem, session.post("/v1/score", json={"customer_id": cid}) as r:
                return await r.json()
        return await asyncio.gather(*(one(c) for c in customers))


def agreement(work: Path, url: str, model_dir: Path, n: int) -> dict:
    """The API against batch scoring on the snapshot the graph was loaded from."""
    from scipy.stats import spearmanr

    from identigraph.model.artifacts import LoadedModel
    from identigraph.model.config import load_model_config
    from identigraph.model.frame import read_snapshot
    from identigraph.model.pipeline import run_predict

    preds = work / "predict.csv"
    run_predict(work / "snapshot", model_dir, preds, load_model_config(packaged_default("model.yaml")))
    batch = pd.read_csv(preds, dtype={"customer_id": str}).set_index("customer_id")["score"]
    rng = np.random.default_rng(SEED)
    customers = sorted(rng.choice(batch.index.to_numpy(), size=min(n, len(batch)), replace=False).tolist())
    answers = asyncio.run(_scores(url, customers))
    api = pd.Series([a["score"] for a in answers], index=customers, dtype=float)
    loaded = LoadedModel.load(model_dir)
    full = loaded.tensors(read_snapshot(work / "snapshot"))
    exact = pd.Series([loaded.score_seed(full, f"customer:{c}")[0] for c in customers], index=customers)
    threshold = loaded.threshold

    def compare(other: pd.Series) -> dict:
        other = other.reindex(customers)
        return {"spearman": round(float(spearmanr(api, other).statistic), 5),
                "decisions_differ_share": round(float(((api >= threshold) != (other >= threshold)).mean()), 5),
                "mean_api_minus_other": round(float((api - other).mean()), 6),
                "max_abs_diff": round(float((api - other).abs().max()), 6),
                "flagged_api": int((api >= threshold).sum()), "flagged_other": int((other >= threshold).sum())}

    hubs = sum(a["neighbourhood"]["capped_identifiers"] > 0 for a in answers)
    return {"customers": len(customers), "with_hub": hubs, "threshold": threshold,
            "vs_identigraph_predict": compare(batch), "vs_exact_full_graph": compare(exact)}


def _shipped(src: Path, name: str) -> Path:
    """A version's own default file: packaged (src/identigraph/defaults) since issue 18, conf/ before."""
    packaged = src / "identigraph" / "defaults" / name
    return packaged if packaged.exists() else src.parent / "conf" / name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--rates", default="50,100,200,400")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--workers", default="1,2", help="worker counts to measure, e.g. 1,2")
    ap.add_argument("--work", type=Path, default=None, help="keep world, snapshot, graph and model here")
    ap.add_argument("--model", type=Path, default=None, help="serve this MODEL_DIR instead of training one")
    ap.add_argument("--serving-config", type=Path, default=packaged_default("serving.yaml"))
    ap.add_argument("--baseline-src", type=Path, default=None, help="src/ of an older checkout to compare with")
    ap.add_argument("--baseline-rate", type=float, default=5.0)
    ap.add_argument("--baseline-model", type=Path, default=None, help="MODEL_DIR for the baseline (default: --model)")
    ap.add_argument("--agreement", type=int, default=2000, help="customers for the API-vs-batch comparison")
    ap.add_argument("--build-only", action="store_true", help="build the world, graph and model into --work, stop")
    ap.add_argument("--keep-services", action="store_true",
                    help="leave Gremlin Server and ElasticMQ running for the next run (a 50k-customer graph takes "
                         "minutes to load)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "serve.json")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",") if r]
    worker_counts = [int(w) for w in args.workers.split(",") if w]

    work = (args.work or Path(f"/tmp/identigraph-bench-serve-{os.getpid()}")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ports_file = work / "ports.json"
    ports = json.loads(ports_file.read_text()) if ports_file.exists() else {
        "gremlin": free_port(), "elasticmq": free_port(), "api": free_port()}
    ports.setdefault("baseline", free_port())
    ports_file.write_text(json.dumps(ports))
    overrides = {"data_dir": str(work / "data"), "pii": {"key": PII_KEY},
                 "services": {"gremlin": {"port": ports["gremlin"], "heap": "4g"},
                              "elasticmq": {"port": ports["elasticmq"]}}}
    settings = load_settings(packaged_default("identigraph.yaml"), environ={}, overrides=overrides)
    (work / "identigraph.yaml").write_text(yaml.safe_dump(settings.model_dump(mode="json")))

    result: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "customers": args.customers, "seconds_per_rate": args.seconds,
        "request_mix": "90% logins of known customers with the device and IP of one of their 3 latest events, "
                       "10% signups (new ids) with a world customer's signup identifiers",
    }
    local.up(settings)
    servers: list[Server] = []
    try:
        result["build"] = build(work, settings, args.customers, args.epochs, args.model)
        print(json.dumps(result["build"]), flush=True)
        if args.build_only:
            return
        summary = snapshot_summary(work / "snapshot")
        snapshot_as_of = summary["as_of"]
        serving = yaml.safe_load(args.serving_config.read_text())
        bench_key = {"id": "bench", "sha256": key_digest(KEY), "scopes": ["score"],
                     "rate_limit": {"per_second": 100_000, "burst": 100_000}}
        # one caller team at up to 400/s: its own concurrency limit sized like the server's admission
        serving["api_keys"] = [dict(bench_key, max_concurrent=64),  # the load: a login path sees decisions only
                               dict(bench_key, id="bench-detail", sha256=key_digest(DETAIL_KEY),
                                    scopes=["score", "identity:read"])]  # agreement reads the neighbourhood
        serving["as_of"] = snapshot_as_of  # the graph's own clock: scores comparable with batch scoring
        (work / "serving.yaml").write_text(yaml.safe_dump(serving))
        result["serving_config"] = {k: serving[k] for k in ("neighbourhood", "graph", "max_in_flight")}
        mix = request_mix(work, 300_000)
        model_dir = result["build"]["model_dir"]
        result["graph"] = {"vertices": summary["vertices"], "edges": summary["edges"]}  # loaded from it
        result["by_workers"] = {}
        for workers in worker_counts:
            server = Server(work, model_dir, ports["api"], workers, work / "serving.yaml")
            servers.append(server)
            result["model_version"] = httpx.get(f"{server.url}/readyz").json()["model_version"]
            pids = {"api": server.proc.pid, "gremlin_server": _gremlin_pid(settings)}
            sequential, runs = asyncio.run(measure(server.url, rates, args.seconds, mix, pids))
            result["by_workers"][str(workers)] = {"sequential": sequential, "runs": runs}
            if workers == worker_counts[0] and args.agreement:
                result["agreement"] = agreement(work, server.url, Path(model_dir), args.agreement)
                print(json.dumps({"agreement": result["agreement"]}), flush=True)
            server.stop()
            servers.remove(server)
        if args.baseline_src:
            old = yaml.safe_load(_shipped(args.baseline_src, "serving.yaml").read_text())
            old["api_keys"], old["as_of"] = [bench_key], snapshot_as_of
            (work / "serving-baseline.yaml").write_text(yaml.safe_dump(old))
            result["baseline_model"] = str(args.baseline_model or model_dir)
            # that version's settings schema: its own identigraph.yaml, pointed at the same services
            old_settings = yaml.safe_load(_shipped(args.baseline_src, "identigraph.yaml").read_text())
            old_settings["data_dir"], old_settings["pii"]["key"] = str(work / "data"), PII_KEY
            for name in ("gremlin", "elasticmq"):
                old_settings["services"][name]["port"] = ports[name]
            (work / "identigraph-baseline.yaml").write_text(yaml.safe_dump(old_settings))
            server = Server(work, result["baseline_model"], ports["baseline"], 1, work / "serving-baseline.yaml",
                            args.baseline_src, work / "identigraph-baseline.yaml")
            servers.append(server)
            pids = {"api": server.proc.pid, "gremlin_server": _gremlin_pid(settings)}
            sequential, runs = asyncio.run(measure(server.url, [args.baseline_rate], args.seconds, mix, pids))
            result["baseline"] = {"src": str(args.baseline_src), "sequential": sequential, "runs": runs}
            new = result["by_workers"][str(worker_counts[0])]["sequential"]
            result["before_after"] = {
                "p50_ratio": round(sequential["p50_ms"] / new["p50_ms"], 2),
                "p99_ratio": round(sequential["p99_ms"] / new["p99_ms"], 2),
                "cpu_per_request_ratio": {k: round(v / max(new["cpu_ms_per_request"].get(k, 0), 1e-9), 2)
                                          for k, v in sequential["cpu_ms_per_request"].items()},
                "stage_ms": {"before": sequential["stage_ms_per_request"], "after": new["stage_ms_per_request"]},
            }
    finally:
        for server in servers:
            server.stop()
        if not args.keep_services:
            local.down(settings)
        if not args.build_only:  # what was measured is kept, even when a later step failed
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(result, indent=2) + "\n")
            print(f"-> {args.out}")


if __name__ == "__main__":
    main()
