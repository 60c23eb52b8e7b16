"""The dead-letter queue read per source message: ``identigraph dlq list``, ``compact`` and ``redrive``.

Why a source can be in the DLQ more than once: the consumer sends a poison message to the FIFO DLQ with its
source MessageId as deduplication id, then deletes the source. A crash in between makes SQS redeliver the
source, and the consumer dead-letters it again; FIFO drops that resend only within its 5-minute deduplication
window, so on a queue lagging more than that the DLQ holds it twice. No write-side scheme closes this (the send
and the delete are two systems), so whoever reads the DLQ de-duplicates by the ``source_message_id`` attribute.

Reading: messages are received with a visibility timeout (``hold_s``) and never deleted by the read, so all of
them are in flight at once and each is seen once; ``release`` makes them visible again (or the hold runs out).
FIFO hands out no message of a group while an earlier one of the same group is in flight. The consumer gives
each send a group of its own, so copies never hide each other; copies a consumer older than that sent share
their source's group, and one that a receive does not return with its head stays hidden until the head is
gone: ``unread`` (the queue's visible count after the read) counts what a read could not reach, and
``redrive``, which deletes heads, reaches them in later rounds.

Bodies carry IPs, device ids and emails (personal data): nothing here prints or logs one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from identigraph.config import Settings
from identigraph.errors import IdentigraphError
from identigraph.etl.publish import SQS_BATCH, publish

# what the consumer dead-letters with (``Consumer._dead_letter``): an event that cannot be read, one the graph
# refused, an event_id already applied with another body, an event older than the customer's applied floor
POISON, REFUSED, CONFLICT, FLOOR = KINDS = ("poison", "refused", "conflict", "floor")
REASON_CHARS = 200  # of the reason in a listing: a graph server's message can run to thousands


@dataclass
class DeadLetter:
    """One DLQ message, held by the read that received it."""
    message_id: str
    receipt: str
    source_id: str  # the ``source_message_id`` attribute (the message's own id when it has none)
    kind: str
    reason: str
    sent_ms: int
    body: str = field(repr=False)  # personal data: never printed


@dataclass
class Listing:
    """What one read received: every letter it holds, and what it could not reach."""
    letters: list[DeadLetter]
    held_until: float  # monotonic time the first letter's hold runs out
    complete: bool  # the read stopped on an empty queue, not on its time budget
    unread: int = 0  # visible after the read: hidden behind a held copy of their group, or sent meanwhile

    def by_source(self) -> dict[str, list[DeadLetter]]:
        """Copies per source message id, oldest first: the first is the one kept."""
        out: dict[str, list[DeadLetter]] = {}
        for letter in sorted(self.letters, key=lambda x: (x.sent_ms, x.message_id)):
            out.setdefault(letter.source_id, []).append(letter)
        return out


def _letter(m: dict[str, Any]) -> DeadLetter:
    attrs = m.get("MessageAttributes", {})

    def attr(name: str) -> str:
        return str(attrs.get(name, {}).get("StringValue", ""))

    return DeadLetter(message_id=m["MessageId"], receipt=m["ReceiptHandle"],
                      source_id=attr("source_message_id") or m["MessageId"], kind=attr("kind"),
                      reason=attr("reason"), sent_ms=int(m.get("Attributes", {}).get("SentTimestamp", 0)),
                      body=m["Body"])


def read(sqs: Any, url: str, hold_s: int = 120, wait_s: int = 1, empty_polls: int = 2) -> Listing:
    """Receive every message of the DLQ and hold it for ``hold_s`` (nothing is deleted). The read stops after
    ``empty_polls`` empty receives, or at half the hold, so whoever acts on the listing still holds it."""
    letters: dict[str, DeadLetter] = {}
    start = time.monotonic()
    empty, complete = 0, True
    while empty < empty_polls:
        if time.monotonic() - start > hold_s / 2:
            complete = False
            break
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=SQS_BATCH, WaitTimeSeconds=wait_s,
                                  VisibilityTimeout=hold_s, MessageAttributeNames=["All"],
                                  AttributeNames=["SentTimestamp"]).get("Messages", [])
        empty = 0 if got else empty + 1
        for m in got:  # a message received again (its hold ran out) counts once, with its latest receipt
            letters[m["MessageId"]] = _letter(m)
    visible = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
    return Listing(list(letters.values()), start + hold_s, complete,
                   int(visible["Attributes"]["ApproximateNumberOfMessages"]))


def _batch(fn: Callable[..., dict[str, Any]], url: str, entries: list[dict[str, Any]]) -> int:
    """A batch call (delete, change visibility) over ``entries``, 10 at a time: how many succeeded."""
    done = 0
    for i in range(0, len(entries), SQS_BATCH):
        part = [{"Id": str(j), **e} for j, e in enumerate(entries[i:i + SQS_BATCH])]
        done += len(fn(QueueUrl=url, Entries=part).get("Successful", []))
    return done


def delete(sqs: Any, url: str, letters: list[DeadLetter]) -> int:
    """Delete held letters; how many went (a receipt whose hold ran out may be refused)."""
    return _batch(sqs.delete_message_batch, url, [{"ReceiptHandle": x.receipt} for x in letters])


def release(sqs: Any, url: str, letters: list[DeadLetter]) -> None:
    """Make held letters visible again now (a refused one becomes visible when its hold runs out)."""
    _batch(sqs.change_message_visibility_batch, url,
           [{"ReceiptHandle": x.receipt, "VisibilityTimeout": 0} for x in letters])


def _event_id(body: str) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        return None
    value = data.get("event_id") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def entries(listing: Listing) -> list[dict[str, Any]]:
    """One row per distinct source message, without its body: id, kind, reason (cut), copies, event id."""
    return [{"source_message_id": sid, "kind": copies[0].kind, "reason": copies[0].reason[:REASON_CHARS],
             "copies": len(copies), "event_id": _event_id(copies[0].body)}
            for sid, copies in listing.by_source().items()]


def summary(listing: Listing) -> dict[str, Any]:
    """Messages read, distinct sources, extra copies, and what the read could not reach."""
    distinct = len(listing.by_source())
    return {"messages": len(listing.letters), "distinct": distinct,
            "duplicates": len(listing.letters) - distinct, "unread": listing.unread, "complete": listing.complete}


def _check_held(listing: Listing, margin_s: float = 5.0) -> None:
    if time.monotonic() > listing.held_until - margin_s:
        raise IdentigraphError("the DLQ read outlasted its hold: nothing deleted; run again with a longer --hold-s")


def compact(sqs: Any, url: str, hold_s: int = 120) -> dict[str, Any]:
    """Delete every copy of a source message but its oldest, so the DLQ holds each poison once.

    Safe to re-run and to kill half way: only copies beyond one this read holds are deleted, and the kept one
    is held (no other reader can take it) until it is released at the end or its hold runs out, so the last
    copy of a source is never deleted. Two compactions at once hold disjoint messages and keep one each."""
    listing = read(sqs, url, hold_s)
    groups = listing.by_source()
    extra = [x for copies in groups.values() for x in copies[1:]]
    _check_held(listing)
    deleted = delete(sqs, url, extra)
    release(sqs, url, [copies[0] for copies in groups.values()])
    return {**summary(listing), "deleted": deleted}


def redrive(sqs: Any, url: str, stream_url: str, hold_s: int = 120,
            kinds: set[str] | None = None) -> dict[str, Any]:
    """Send each distinct dead-lettered message back to the stream queue once, then delete all its copies
    (for after its cause is fixed: a producer's bug, a graph refusal). ``kinds`` (e.g. ``{"refused"}``): only
    sources whose oldest copy has one of these kinds; the rest stay in the DLQ untouched, so a fix for one
    cause does not send back poison that would only be dead-lettered again.

    Only what the first read holds is redriven; later rounds delete further copies of those sources (ones
    that were hidden behind a deleted copy of their FIFO group) and leave everything else, such as messages
    the consumer dead-letters anew meanwhile. Each body is sent before its copies are deleted: a crash in
    between sends it again on the next run, which is harmless for a valid event, since the consumer
    de-duplicates by event id in the graph (a resent poison message is dead-lettered again, once per send)."""
    if kinds is not None and not kinds <= set(KINDS):
        raise IdentigraphError(f"unknown dead-letter kind(s) {sorted(kinds - set(KINDS))}: one of {list(KINDS)}")
    listing = read(sqs, url, hold_s)
    groups = {sid: copies for sid, copies in listing.by_source().items() if kinds is None or copies[0].kind in kinds}
    _check_held(listing)
    report = publish(sqs, stream_url, [copies[0].body for copies in groups.values()])
    if report.failed:
        release(sqs, url, listing.letters)
        raise IdentigraphError(f"{len(report.failed)} messages could not be sent to the stream queue "
                               f"({sorted(set(report.failed))}): nothing deleted from the DLQ")
    deleted = delete(sqs, url, [x for x in listing.letters if x.source_id in groups])
    # by message id (one whose hold ran out is received again): not redriven, released at the end
    others: dict[str, DeadLetter] = {x.message_id: x for x in listing.letters if x.source_id not in groups}
    while True:
        more = read(sqs, url, hold_s)
        ours = [x for x in more.letters if x.source_id in groups]
        others.update((x.message_id, x) for x in more.letters if x.source_id not in groups)
        if not ours:
            break
        deleted += delete(sqs, url, ours)
    release(sqs, url, list(others.values()))
    return {**summary(listing), "sent": len(groups), "deleted": deleted, "left": len(others)}


def queue_urls(settings: Settings, sqs: Any) -> tuple[str, str]:
    """The stream queue's and the DLQ's URLs."""
    return (sqs.get_queue_url(QueueName=settings.queues.events)["QueueUrl"],
            sqs.get_queue_url(QueueName=settings.queues.dead_letter)["QueueUrl"])
