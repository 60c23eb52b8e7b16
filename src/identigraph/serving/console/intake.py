"""Review queue → console store, exactly once: insert, commit, and only then delete the message.

A console that stops between the two leaves the message on the queue; it comes back after its visibility
timeout and the insert, keyed on the case id (the scoring request id), finds it already there — so a case
is never lost and never doubled. A message that is not a case is kept in the store with its reason
(``rejected_messages``) and deleted, so it cannot come back forever.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from identigraph.serving.console.store import ConsoleStore

log = logging.getLogger("identigraph.serving")
_REQUIRED = ("request_id", "customer_id")


def parse_case(body: str) -> dict[str, Any]:
    """The case a message carries; ValueError saying what is wrong otherwise."""
    try:
        case = json.loads(body)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(case, dict):
        raise ValueError("not a JSON object")
    missing = [k for k in _REQUIRED if not isinstance(case.get(k), str) or not case[k]]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    for k in ("score", "lifetime_value"):
        if case.get(k) is not None and not isinstance(case[k], (int, float)):
            raise ValueError(f"{k} is not a number")
    return case


class CaseIntake:
    """A background thread that long-polls the review queue and moves its cases into the store."""

    def __init__(self, sqs: Any, queue_name: str, store: ConsoleStore, wait_s: int = 2) -> None:
        self.sqs, self.queue_name, self.store, self.wait_s = sqs, queue_name, store, wait_s
        self.received = self.duplicates = self.rejected = 0
        self._url: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CaseIntake:
        self._thread = threading.Thread(target=self._run, name="review-intake", daemon=True)
        self._thread.start()
        return self

    def poll_once(self) -> int:
        """One receive; returns how many messages it handled."""
        if self._url is None:
            self._url = self.sqs.get_queue_url(QueueName=self.queue_name)["QueueUrl"]
        got = self.sqs.receive_message(QueueUrl=self._url, MaxNumberOfMessages=10, WaitTimeSeconds=self.wait_s)
        messages = got.get("Messages", [])
        for m in messages:
            try:
                case = parse_case(m["Body"])
            except ValueError as exc:
                self.store.reject(m["MessageId"], str(exc), m["Body"])
                self.rejected += 1
            else:
                if self.store.add_case(case):
                    self.received += 1
                else:
                    self.duplicates += 1
            # only now, with the case committed: a failure above leaves the message for a redelivery
            self.sqs.delete_message(QueueUrl=self._url, ReceiptHandle=m["ReceiptHandle"])
        return len(messages)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception as exc:
                self._url = None
                log.warning("review_intake_failed", extra={"error": type(exc).__name__})
                self._stop.wait(1.0)

    def close(self, timeout_s: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s if timeout_s is not None else self.wait_s + 5)
