"""Replay a JSONL stream into the events queue — for demos, benchmarks and tests.

Lines are sent as they are (a malformed line is the consumer's poison to handle, which is the point of
replaying it), one per message or ``pack`` per message (``etl.packing``); batches of 10 messages within
SQS's 256 KiB per call, an optional steady rate of events, and entries SQS reports as failed are re-sent. A call
that fails outright (the queue restarting) is retried too; it may have been stored before it failed, so a
retried batch can arrive twice (``ambiguous`` counts them), which the consumer's de-duplication absorbs.
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
from identigraph.etl.packing import MAX_BYTES, Packed, pack

SQS_BATCH = 10


@dataclass
class PublishReport:
    """What a publish run did, including what may have been sent twice, so a caller can reason about duplicates."""
    sent: int = 0  # messages
    events: int = 0  # events in the messages sent (more than ``sent`` when packed)
    resent: int = 0
    failed: list[str] = field(default_factory=list)  # SQS error codes of entries given up on
    seconds: float = 0.0
    ambiguous: int = 0  # entries re-sent after a call failed outright: they may be in the queue twice
    ambiguous_bodies: list[str] = field(default_factory=list, repr=False)


def sqs_client(settings: Settings, pool: int = 10) -> Any:
    """One client per process, shared by threads. Short connect time-outs and no hidden retries: callers
    decide how to ride out an outage."""
    import boto3
    from botocore.config import Config

    kwargs: dict[str, Any] = {"region_name": settings.queues.region, "config": Config(
        max_pool_connections=pool, connect_timeout=3, read_timeout=30,
        retries={"total_max_attempts": 2, "mode": "standard"})}
    if settings.queue_endpoint:
        # ElasticMQ accepts any credentials; AWS uses the normal credential chain
        kwargs.update(endpoint_url=settings.queue_endpoint, aws_access_key_id="local", aws_secret_access_key="local")
    return boto3.client("sqs", **kwargs)


def lines(path: Path) -> Iterator[str]:
    """Non-empty lines of a file, streamed: event files can be larger than memory."""
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
    outage_s: float = 300.0,
    events_per_message: int = 1,
) -> PublishReport:
    """Send every body, ``events_per_message`` to a message; ``rate`` caps events per second over the whole
    run. A queue that does not answer for ``outage_s`` fails the run."""
    report = PublishReport()
    start = clock()
    batch: list[Packed] = []
    batch_bytes = 0

    def flush() -> None:
        pending = {str(i): p.body for i, p in enumerate(batch)}
        events = {str(i): p.events for i, p in enumerate(batch)}
        for attempt in range(attempts):
            entries = [{"Id": i, "MessageBody": b} for i, b in pending.items()]
            down_since = None
            while True:
                try:
                    response = sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
                    break
                except Exception as exc:  # the queue is unreachable or restarting: wait for it
                    down_since = down_since or clock()
                    if clock() - down_since > outage_s:
                        raise IdentigraphError(f"queue unreachable for {outage_s:.0f}s: {exc}") from exc
                    report.ambiguous += len(entries)
                    report.ambiguous_bodies.extend(pending.values())
                    sleep(0.5)
            for ok in response.get("Successful", []):
                if pending.pop(ok["Id"], None) is not None:
                    report.events += events[ok["Id"]]
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
        nonlocal batch_bytes
        if rate:  # the n-th event may leave no earlier than n / rate seconds after the start
            wait = start + (report.events + sum(p.events for p in batch)) / rate - clock()
            if wait > 0:
                sleep(wait)
        flush()
        batch.clear()
        batch_bytes = 0

    for message in pack(bodies, events_per_message):
        size = len(message.body.encode())
        if batch and batch_bytes + size > MAX_BYTES:  # SQS limits a send batch's total as well
            send()
        batch.append(message)
        batch_bytes += size
        if len(batch) == SQS_BATCH:
            send()
    if batch:
        send()
    report.seconds = clock() - start
    return report


def publish_file(settings: Settings, path: Path, rate: float | None = None,
                 events_per_message: int = 1) -> PublishReport:
    """Publish a file of event bodies to the configured queue (what ``identigraph stream publish`` runs)."""
    sqs = sqs_client(settings)
    url = sqs.get_queue_url(QueueName=settings.queues.events)["QueueUrl"]
    report = publish(sqs, url, lines(path), rate=rate, events_per_message=events_per_message)
    if report.failed:
        raise IdentigraphError(f"{len(report.failed)} messages could not be sent after retries "
                               f"({sorted(set(report.failed))}); {report.sent} were sent")
    return report
