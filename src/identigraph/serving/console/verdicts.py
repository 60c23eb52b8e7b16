"""A verdict applied to the graph where policy says so: confirmed fraud blocks, legitimate lifts a block.

The change goes through the stream writer as a ``block``/``unblock`` event with the verdict's own event id
(``review-verdict-<id>``), so it is exactly the change any other manual block makes — the customer's block
history, its identifiers' blocked counts — and applying it twice (a retry after a lost reply, a console that
restarted before recording the outcome) changes nothing the second time.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from identigraph.etl.stream_events import Block, Unblock
from identigraph.etl.stream_writer import StreamWriter
from identigraph.serving.console.config import ConsoleConfig

BLOCKED, CLEARED, NONE = "blocked", "cleared", "none"


def event_id(verdict_id: int) -> str:
    """A verdict's stream event id: stable, so applying a verdict again is a duplicate, not a second block."""
    return f"review-verdict-{verdict_id}"


def graph_event(verdict: str, verdict_id: int, customer: str, blocked_now: bool, cfg: ConsoleConfig) -> Block | Unblock | None:
    """The event the policy asks for, or None (escalate, or nothing to change)."""
    base: dict[str, Any] = {"schema_version": 1, "event_id": event_id(verdict_id), "customer_id": customer,
                            "occurred_at": datetime.now(timezone.utc).isoformat()}
    if verdict == "confirm_fraud" and cfg.block_on_confirm and not blocked_now:
        return Block.model_validate({**base, "event_type": "block", "reason": "fraud", "source": "manual"})
    if verdict == "legitimate" and cfg.clear_on_legitimate and blocked_now:
        return Unblock.model_validate({**base, "event_type": "unblock"})
    return None


def apply(writer: StreamWriter, verdict: str, verdict_id: int, customer: str, blocked_now: bool,
          cfg: ConsoleConfig) -> str:
    """Write the event (idempotent on its id); the outcome to record with the verdict."""
    event = graph_event(verdict, verdict_id, customer, blocked_now, cfg)
    if event is None:
        return NONE
    writer.write([event])
    return BLOCKED if isinstance(event, Block) else CLEARED
