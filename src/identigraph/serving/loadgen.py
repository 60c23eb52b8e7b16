"""Open-loop load for the API: requests leave on a fixed schedule whether or not earlier ones came back.

A closed loop (send, wait, send) slows down with the server and so hides its queueing: the classic
"coordinated omission" that makes a saturated service look fine. Here request *i* is due at
``start + i / rate`` and its latency is counted from that due time, so time spent waiting behind a slow
server is part of what the caller would have seen. Used by ``bench/serve.py``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx
import numpy as np
import orjson


@dataclass
class RunResult:
    """One open-loop load run: offered rate, latencies from the due time and the errors, for the benchmarks."""
    rate: float
    seconds: float
    latencies_s: list[float] = field(default_factory=list)   # due time → response, successful requests
    errors: dict[str, int] = field(default_factory=dict)      # status code or exception name → count
    sent: int = 0
    degraded: int = 0                                          # answered, but without graph or model
    late_start_s: float = 0.0                                  # worst lag of a send behind its due time

    def summary(self) -> dict[str, Any]:
        lat = np.array(self.latencies_s) * 1000
        n_err = sum(self.errors.values())
        return {
            "offered_rate": self.rate, "seconds": self.seconds, "requests": self.sent,
            "achieved_rate": round(len(lat) / self.seconds, 1) if self.seconds else 0.0,
            "p50_ms": round(float(np.percentile(lat, 50)), 1) if lat.size else None,
            "p90_ms": round(float(np.percentile(lat, 90)), 1) if lat.size else None,
            "p99_ms": round(float(np.percentile(lat, 99)), 1) if lat.size else None,
            "max_ms": round(float(lat.max()), 1) if lat.size else None,
            "error_rate": round(n_err / self.sent, 4) if self.sent else 0.0, "errors": dict(self.errors),
            "degraded_rate": round(self.degraded / self.sent, 4) if self.sent else 0.0,
            "max_send_lag_ms": round(self.late_start_s * 1000, 1),
        }


async def run_open_loop(session: aiohttp.ClientSession, make_request: Callable[[int], tuple[str, str, Any]],
                        rate: float, seconds: float, timeout_s: float = 5.0) -> RunResult:
    """``make_request(i)`` gives (method, path, json body) for the i-th request.

    aiohttp rather than httpx: the caller shares the machine with the server it measures, and aiohttp
    spends about a third of httpx's CPU per request. One sender wakes at each due time and starts that
    request; requests in flight never delay the next send.
    """
    result = RunResult(rate=rate, seconds=seconds)
    n = int(rate * seconds)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05
    timeout = aiohttp.ClientTimeout(total=timeout_s)

    async def one(i: int, due: float) -> None:
        method, path, body = make_request(i)
        try:
            async with session.request(method, path, data=orjson.dumps(body), timeout=timeout,
                                       headers={"Content-Type": "application/json"}) as r:
                content = await r.read()
                if r.status == 200:
                    result.latencies_s.append(loop.time() - due)
                    if content.find(b'"degraded":true') >= 0:  # a review because the graph or model failed
                        result.degraded += 1
                else:
                    result.errors[str(r.status)] = result.errors.get(str(r.status), 0) + 1
        except Exception as exc:
            name = type(exc).__name__
            result.errors[name] = result.errors.get(name, 0) + 1

    tasks = []
    for i in range(n):
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - loop.time()))
        result.late_start_s = max(result.late_start_s, loop.time() - due)
        tasks.append(asyncio.ensure_future(one(i, due)))
    result.sent = n
    await asyncio.gather(*tasks)
    return result


_SAMPLE = re.compile(r'^(identigraph_serving_stage_seconds_(?:sum|count))\{stage="([a-z]+)"\} ([0-9.e+-]+)$', re.M)


def stage_totals(metrics_text: str) -> dict[str, tuple[float, float]]:
    """stage → (seconds summed, observations) from the server's /metrics text."""
    out: dict[str, list[float]] = {}
    for name, stage, value in _SAMPLE.findall(metrics_text):
        slot = out.setdefault(stage, [0.0, 0.0])
        slot[0 if name.endswith("_sum") else 1] = float(value)
    return {k: (v[0], v[1]) for k, v in out.items()}


def stage_breakdown(before: str, after: str) -> dict[str, float]:
    """Mean milliseconds per scoring request in each stage between two /metrics scrapes."""
    a, b = stage_totals(before), stage_totals(after)
    requests = b.get("policy", (0, 0))[1] - a.get("policy", (0, 0))[1]  # every scored request runs the policy
    if requests <= 0:
        return {}
    return {stage: round((s - a.get(stage, (0, 0))[0]) * 1000 / requests, 2) for stage, (s, _) in sorted(b.items())}


def wait_until_ready(url: str, timeout_s: float = 120.0) -> None:
    """Block until the server answers readyz, so a benchmark never measures a start-up."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url}/readyz", timeout=2)
            if r.status_code == 200:
                return
            last = r.text
        except httpx.HTTPError as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready after {timeout_s}s: {last}")


def gauge(metrics_text: str, name: str) -> float:
    """One value from a Prometheus text page (0 when absent), for benchmarks reading the server's own figures."""
    found = re.search(rf"^{name} ([0-9.e+-]+)$", metrics_text, re.M)
    return float(found.group(1)) if found else 0.0
