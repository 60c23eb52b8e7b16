"""Several stream events in one SQS message: ``{"events": [event, event, ...]}``.

Why: every SQS call costs the same whatever it carries, and at one event per message the queue's calls
(send, receive, extend, delete: one per 10 messages each) cost more CPU than the graph write itself —
ElasticMQ alone used ~2.3 ms per event in ``bench/stream.py``, the consumer's botocore calls most of its ~1.6.
Amazon SQS also bills per 64 KiB of payload, so a packed message costs what a single event costs. Producers
that can batch (an outbox relay, a Kinesis-style aggregator) pack; those that cannot keep sending one event
per message, and both kinds can share a queue.

The consumer treats each element as the message it would otherwise have been: a bad element is dead-lettered
alone, with its reason and its position (``<MessageId>:<index>`` as its source id), and the rest are applied;
the SQS message is deleted once every element is durable or dead-lettered. An element is redelivered with its
whole message, so it is de-duplicated by event id exactly as a single-event message is.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from identigraph.errors import PoisonMessage

KEY = "events"
# SQS's limit is 262,144 bytes per message and per send batch; what is left is room for the envelope
MAX_BYTES = 256_000


@dataclass(frozen=True)
class Packed:
    """One message body and how many events it carries (what a rate counts)."""

    body: str
    events: int


def pack(lines: Iterable[str], max_events: int, max_bytes: int = MAX_BYTES) -> Iterator[Packed]:
    """Message bodies holding up to ``max_events`` events and ``max_bytes`` bytes each, in the order given.

    A line that is not JSON is sent alone, as it came: it is the consumer's poison to report, and inside an
    envelope it would make every event beside it unreadable.
    """
    part: list[str] = []
    size = 0

    def flush() -> Iterator[Packed]:
        nonlocal part, size
        if part:
            body = part[0] if len(part) == 1 else f'{{"{KEY}":[{",".join(part)}]}}'
            yield Packed(body, len(part))
        part, size = [], 0

    for line in lines:
        try:
            json.loads(line)
        except ValueError:
            yield from flush()
            yield Packed(line, 1)
            continue
        n = len(line.encode()) + 1
        if part and (len(part) >= max_events or size + n + 16 > max_bytes):
            yield from flush()
        part.append(line)
        size += n
        if max_events <= 1:
            yield from flush()
    yield from flush()


def element_body(element: object) -> str:
    """How an unpacked element is re-encoded (and so how it reads in the DLQ): compact JSON."""
    return json.dumps(element, separators=(",", ":"))


def unpack(body: str) -> list[str] | None:
    """The element bodies of an envelope, or None when ``body`` is a single event (or not JSON: the parser
    reports it). An envelope without events is poison."""
    if f'"{KEY}"' not in body:  # a single event never has the key: skip parsing it twice
        return None
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or "event_type" in data or not isinstance(data.get(KEY), list):
        return None
    if not data[KEY]:
        raise PoisonMessage(f"{KEY}: an envelope needs at least one event")
    return [element_body(e) for e in data[KEY]]
