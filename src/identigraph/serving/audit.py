"""Where decisions go besides the caller: an audit log of every one, and the review queue for reviews.

The audit log answers "who asked, what did we decide, with which model" months later, when a customer
disputes a block. It holds ids, never raw identifiers: a request's email or phone is already a keyed hash by
the time anything is written. The review queue is the human half of the policy; sending to it happens on a
background thread so a slow SQS never adds to a caller's latency, and a failed send is counted and logged,
not retried forever (the audit log still has the decision).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("identigraph.serving")


class AuditLog:
    """Append-only JSON lines; one ``write`` per decision, flushed so a crash loses at most the line in hand."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "ab", buffering=0)  # one write(2) per line: nothing waits in a buffer
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record, default=str) + b"\n"
        with self._lock:
            self._fh.write(line)

    def close(self) -> None:
        with self._lock:
            self._fh.close()


class ReviewQueue:
    """Review cases to SQS (ElasticMQ locally), sent by one background thread from a bounded buffer."""

    def __init__(self, sqs: Any, queue_name: str, capacity: int = 10_000) -> None:
        self.sqs = sqs
        self.queue_name = queue_name
        self._url: str | None = None
        self._pending: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=capacity)
        self.sent = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="review-queue", daemon=True)
        self._thread.start()

    def submit(self, case: dict[str, Any]) -> bool:
        """False when the buffer is full (SQS down for long): the caller counts it; the audit log has it."""
        try:
            self._pending.put_nowait(case)
            return True
        except queue.Full:
            self.failed += 1
            return False

    def _send(self, case: dict[str, Any]) -> None:
        if self._url is None:
            self._url = self.sqs.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        self.sqs.send_message(QueueUrl=self._url, MessageBody=json.dumps(case, default=str), MessageAttributes={
            "decision": {"DataType": "String", "StringValue": str(case.get("decision"))},
            "request_id": {"DataType": "String", "StringValue": str(case.get("request_id"))},
        })

    def _run(self) -> None:
        while True:
            case = self._pending.get()
            try:
                if case is None:
                    return
                self._send(case)
                self.sent += 1
            except Exception as exc:  # noqa: BLE001 — a queue outage must not kill the sender
                self.failed += 1
                log.warning(json.dumps({"event": "review_send_failed", "request_id": case and case.get("request_id"),
                                        "error": f"{type(exc).__name__}: {str(exc)[:200]}"}))
            finally:
                self._pending.task_done()

    def drain(self, timeout_s: float = 5.0) -> None:
        """Wait for what was submitted (tests, shutdown)."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._pending.join(), done.set()), daemon=True).start()
        done.wait(timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        self.drain(timeout_s)
        try:
            self._pending.put_nowait(None)
        except queue.Full:
            return
        self._thread.join(timeout_s)
