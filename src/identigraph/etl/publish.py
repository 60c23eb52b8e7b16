"""Replay a JSONL stream into the events queue — for demos, benchmarks and tests.

Lines are sent as they are (a malformed line is the consumer's poison to handle, which is the point of
replaying it); batches of 10, an optional steady rate, and entries SQS reports as failed are re-sent.
Nothing is dropped silently: what could not be sent after the retries is reported and fails the command.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from identigraph.config import Settings
from identigraph.errors import IdentigraphError

SQS_BATCH = 10


@dataclass
class PublishReport:
    sent: int = 0
    resent: int = 0
    failed: list[str] = field(default_factory=list)  # SQS error codes of entries given up on
    seconds: float = 0.0


def sqs_client(settings: Settings) -> Any:
    import boto3

    kwargs: dict[str, Any] = {"region_name": settings.queues.region}
    if settings.queue_endpoint:
        # ElasticMQ accepts any credentials; AWS uses the normal credential chain
        kwargs.update(endpoint_url=settings.queue_endpoint, aws_access_key_id="local", aws_secret_access_key="local")
    return boto3.client("sqs", **kwargs)


def lines(path: Path) -> Iterator[str]:
    with open(path) as fh:
        for line in fh:
            if line.strip():
                yield line.rstrip("\n")


def publish(
    sqs: Any,
    queue_url: str,
    bodies: Iterable[str],
    rate: float | None = None,
    attempts: int = 5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> PublishReport:
    """Send every body; ``rate`` caps messages per second over the whole run."""
    report = PublishReport()
    start = clock()
    batch: list[str] = []

    def flush() -> None:
        pending = {str(i): body for i, body in enumerate(batch)}
        for attempt in range(attempts):
            entries = [{"Id": i, "MessageBody": b} for i, b in pending.items()]
            response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
            for ok in response.get("Successful", []):
                pending.pop(ok["Id"], None)
            report.sent += len(entries) - len(pending)
            if not pending:
                return
            report.resent += len(pending)
            codes = {f["Id"]: f.get("Code", "?") for f in response.get("Failed", [])}
            if attempt == attempts - 1:
                report.failed.extend(codes.get(i, "?") for i in pending)
                return
            sleep(min(2.0, 0.05 * 2 ** attempt))

    def send() -> None:
        if rate:  # the n-th message may leave no earlier than n / rate seconds after the start
            wait = start + (report.sent + len(batch)) / rate - clock()
            if wait > 0:
                sleep(wait)
        flush()
        batch.clear()

    for body in bodies:
        batch.append(body)
        if len(batch) == SQS_BATCH:
            send()
    if batch:
        send()
    report.seconds = clock() - start
    return report


def publish_file(settings: Settings, path: Path, rate: float | None = None) -> PublishReport:
    sqs = sqs_client(settings)
    url = sqs.get_queue_url(QueueName=settings.queues.events)["QueueUrl"]
    report = publish(sqs, url, lines(path), rate=rate)
    if report.failed:
        raise IdentigraphError(f"{len(report.failed)} messages could not be sent after retries "
                               f"({sorted(set(report.failed))}); {report.sent} were sent")
    return report
