"""Review cases: which review decisions become work for people, and getting them to the queue.

The queue is people's time, so it is rationed (``ReviewGate``): one case per customer per window, at most
``max_cases_per_window`` cases, and degraded decisions (graph or model down, a customer the graph does not
know) only when the policy says so and at most ``max_degraded_per_window`` of them. An outage then costs
a handful of cases, not one per request. Every decision is still answered and audited, with what became
of its case.

Sending happens on a background thread (``ReviewQueue``) so a slow SQS never adds to a caller's latency;
a send is retried a few times, and a case the queue would not take is written to a local file and
counted — never reported as queued, never silently gone.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from identigraph.serving.config import ReviewRouting
from identigraph.serving.metrics import ServingMetrics

log = logging.getLogger("identigraph.serving")

QUEUED, DUPLICATE, OVER_BUDGET, DEGRADED_HELD = "queued", "duplicate", "over_budget", "degraded_not_queued"


class ReviewGate:
    """Per window: which customers already have a case, how many cases and degraded cases were let through."""

    def __init__(self, cfg: ReviewRouting, clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg = cfg
        self.clock = clock
        self._lock = threading.Lock()
        self._window = -1
        self._seen: set[str] = set()
        self._cases = 0
        self._degraded = 0

    def admit(self, customer: str, degraded: bool) -> str:
        """QUEUED, or why not: DUPLICATE, OVER_BUDGET, DEGRADED_HELD."""
        cfg = self.cfg
        with self._lock:
            window = int(self.clock() // cfg.window_s)
            if window != self._window:
                self._window, self._seen, self._cases, self._degraded = window, set(), 0, 0
            if degraded and not cfg.degraded:
                return DEGRADED_HELD
            if customer in self._seen:
                return DUPLICATE
            if self._cases >= cfg.max_cases_per_window or (degraded and self._degraded >= cfg.max_degraded_per_window):
                return OVER_BUDGET
            self._seen.add(customer)
            self._cases += 1
            self._degraded += degraded
            return QUEUED


class ReviewQueue:
    """Review cases to SQS (ElasticMQ locally), sent by one background thread from a bounded buffer."""

    def __init__(self, sqs: Any, queue_name: str, metrics: ServingMetrics, unsent: Path, attempts: int = 3,
                 capacity: int = 10_000, backoff_s: float = 0.2) -> None:
        self.sqs = sqs
        self.queue_name = queue_name
        self.metrics = metrics
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.unsent_path = unsent
        unsent.parent.mkdir(parents=True, exist_ok=True)
        self._unsent_lock = threading.Lock()
        self._url: str | None = None
        self._pending: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=capacity)
        self.sent = 0
        self.unsent = 0
        self._thread = threading.Thread(target=self._run, name="review-queue", daemon=True)
        self._thread.start()

    def submit(self, case: dict[str, Any]) -> None:
        try:
            self._pending.put_nowait(case)
            self.metrics.review_pending.inc()
        except queue.Full:  # SQS down for long: the case goes to the file at once
            self._keep_unsent(case, "buffer full")

    def _send(self, case: dict[str, Any]) -> None:
        if self._url is None:
            self._url = self.sqs.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        self.sqs.send_message(QueueUrl=self._url, MessageBody=json.dumps(case, default=str), MessageAttributes={
            "decision": {"DataType": "String", "StringValue": str(case.get("decision"))},
            "request_id": {"DataType": "String", "StringValue": str(case.get("request_id"))},
        })

    def _keep_unsent(self, case: dict[str, Any], why: str) -> None:
        line = orjson.dumps({"unsent_because": why, "case": case}, default=str) + b"\n"
        with self._unsent_lock, open(self.unsent_path, "ab") as fh:
            fh.write(line)
        self.unsent += 1
        self.metrics.review_cases.labels(outcome="unsent").inc()

    def _run(self) -> None:
        while True:
            case = self._pending.get()
            try:
                if case is None:
                    return
                self.metrics.review_pending.dec()
                for attempt in range(1, self.attempts + 1):
                    try:
                        self._send(case)
                        self.sent += 1
                        self.metrics.review_cases.labels(outcome="sent").inc()
                        break
                    except Exception as exc:
                        self._url = None
                        if attempt == self.attempts:
                            log.warning("review_send_failed", extra={"request_id": case.get("request_id"),
                                                                                 "attempts": attempt, "error": type(exc).__name__})
                            self._keep_unsent(case, f"send failed {attempt} times")
                        else:
                            time.sleep(self.backoff_s * attempt)
            except Exception as exc:
                log.error("review_case_lost", extra={"request_id": case and case.get("request_id"),
                                                     "error": type(exc).__name__})
            finally:
                self._pending.task_done()

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait for what was submitted (tests, shutdown)."""
        done = threading.Event()

        def wait() -> None:
            self._pending.join()
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        done.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        self.drain(timeout_s)
        try:
            self._pending.put_nowait(None)
        except queue.Full:
            return
        self._thread.join(timeout_s)
