"""The automated staging check that gates production: behaviour scenarios + a short latency check.

Two different questions. The behaviour scenarios ask whether the candidate still does the obvious right
things (they run in-process on the candidate's files: no network, deterministic). The latency check asks
whether the candidate, deployed, answers like a production model should — so it goes through the real
staging API, and first makes sure staging is serving *this* candidate (a check that passes against the
previous model proves nothing). Requests are sent one after another (closed loop): this is a smoke check
of per-request latency and errors, not a capacity test — ``bench/serve.py`` measures capacity.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from identigraph.lifecycle.behaviour import run_behaviour
from identigraph.lifecycle.config import StagingCheckConfig
from identigraph.lifecycle.gate import Verdict

LOCAL_SCORING_KEY = "local-scoring-key"   # published with the packaged serving.yaml's local_only keys


def latency_check(url: str, api_key: str, customer_ids: list[str], expect_version: str,
                  cfg: StagingCheckConfig, timeout_s: float = 10.0) -> tuple[dict, list[dict]]:
    """(figures, checks): every response must be 200, not degraded, from ``expect_version``; p95 under the bar."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    versions: dict[str | None, int] = {}  # None: a response that names no version
    with httpx.Client(base_url=url.rstrip("/"), headers={"X-API-Key": api_key}, timeout=timeout_s) as client:
        for i in range(cfg.requests):
            t0 = time.perf_counter()
            try:
                r = client.post("/v1/score", json={"customer_id": customer_ids[i % len(customer_ids)]})
                body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                continue
            if r.status_code != 200:
                errors[str(r.status_code)] = errors.get(str(r.status_code), 0) + 1
                continue
            latencies.append(time.perf_counter() - t0)
            v = body.get("model_version")
            versions[v] = versions.get(v, 0) + 1
            if body.get("degraded"):
                errors["degraded"] = errors.get("degraded", 0) + 1
    lat = np.array(latencies) * 1000
    n_err = sum(errors.values())
    p95 = round(float(np.percentile(lat, 95)), 1) if lat.size else None
    figures = {"url": url, "requests": cfg.requests, "errors": errors, "versions": versions,
               "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None, "p95_ms": p95}
    rate = n_err / cfg.requests
    checks = [
        {"check": "staging:serves_candidate", "ok": set(versions) == {expect_version},
         "detail": f"staging answered with model versions {versions or 'none'}; candidate is {expect_version}"},
        {"check": "staging:errors", "ok": rate <= cfg.max_error_rate,
         "detail": f"{n_err}/{cfg.requests} failed or degraded {errors or ''} (allowed rate {cfg.max_error_rate})"},
        {"check": "staging:latency", "ok": p95 is not None and p95 <= cfg.p95_ms,
         "detail": f"p95 {figures['p95_ms']} ms over {len(latencies)} scored requests (bar {cfg.p95_ms} ms)"},
    ]
    return figures, checks


def staging_check(candidate_dir: Path, expect_version: str, cfg: StagingCheckConfig, snapshot: Path | None,
                  staging_url: str | None = None, api_key: str | None = None) -> tuple[Verdict, dict]:
    """Run both parts; the verdict lists every check, the dict holds the figures for the record."""
    from identigraph.graph.records import customer_key
    from identigraph.model.artifacts import LoadedModel
    from identigraph.model.frame import read_snapshot

    verdict, figures = Verdict(ok=True), dict[str, Any]()
    if snapshot is None or not Path(snapshot).exists():
        verdict.add("staging:snapshot", False, f"no graph snapshot to build the checks on ({snapshot}): set "
                                               f"promotion.staging_check.snapshot or pass --snapshot")
        return verdict, figures
    frame = read_snapshot(Path(snapshot))
    if cfg.behaviour:
        model = LoadedModel.load(candidate_dir, threads=None)
        for check in run_behaviour(model, frame, list(cfg.behaviour)):
            verdict.add(check["check"], check["ok"], check["detail"], scores=check["scores"])
    ids = [customer_key(v) for v in frame.vertices["customer"].index]
    sample = list(np.random.default_rng(0).choice(ids, size=min(len(ids), cfg.requests), replace=False))
    key = api_key or os.environ.get(cfg.api_key_env) or LOCAL_SCORING_KEY
    figures["latency"], checks = latency_check(staging_url or cfg.staging_url, key, sample, expect_version, cfg)
    for c in checks:
        verdict.add(c["check"], c["ok"], c["detail"])
    return verdict, figures
