"""Stream events into the graph exactly once in effect, whatever SQS redelivers or reorders.

Each batch is one request — one transaction on Neptune and on TinkerTransactionGraph — that both creates a
marker vertex per event (``event:<event_id>``, label ``_applied_event``) and applies the events' deltas.
The marker is guarded by ``onMatch → fail()``: if any event of the batch was applied already (another
consumer, or this one before a crash or a lost reply), the whole request rolls back, the writer asks which
markers exist, and re-sends only the rest. So the de-duplication state lives in the graph, next to the
effect it protects, survives restarts, and is never out of step with it. Markers carry ``applied_at`` and
are swept after a retention longer than SQS can redeliver (14 days).

Identity events only so far: their edges merge with min ``first_seen``, max ``last_seen`` and summed counts,
so order does not matter.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import Merge, T

from identigraph.errors import GraphError
from identigraph.etl.stream_events import IdentityEvent
from identigraph.graph.client import GraphClient, is_connection_error
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.graph.records import aggregate, event_edges
from identigraph.graph.schema import CUSTOMER
from identigraph.graph.upsert import edge_merge, edge_rows

MARKER_LABEL = "_applied_event"
GUARD = "identigraph: event already applied"


def marker_id(event_id: str) -> str:
    return f"event:{event_id}"


@dataclass
class WriteResult:
    applied: int  # events whose effect this call put into the graph
    duplicates: int  # events already applied before this call (redeliveries, repeats in the batch)
    attempts: int


class StreamWriter:
    def __init__(self, client: GraphClient, pseudo: Pseudonymiser, max_attempts: int = 5) -> None:
        self.client = client
        self.pseudo = pseudo
        self.max_attempts = max_attempts

    def _applied(self, events: list[IdentityEvent]) -> set[str]:
        ids = [marker_id(e.event_id) for e in events]
        return set(self.client.submit(lambda g: g.V(*ids).id_()))  # a read: safe to retry

    def _request(self, g: Any, events: list[IdentityEvent], now: datetime) -> Any:
        edges = aggregate(r for e in events for r in event_edges(e.model_dump(), self.pseudo))
        markers = [{T.id: marker_id(e.event_id), T.label: MARKER_LABEL} for e in events]
        endpoints = {r.from_id: CUSTOMER for r in edges} | {r.to_id: r.identifier_label for r in edges}
        vertices = [{T.id: vid, T.label: label} for vid, label in endpoints.items()]
        t = g.inject(0).side_effect(
            __.constant(markers).unfold().merge_v()
            .option(Merge.on_create, __.constant({"applied_at": now}))
            .option(Merge.on_match, __.fail(GUARD)))
        if edges:
            t = t.side_effect(__.constant(vertices).unfold().merge_v())
            t = t.side_effect(edge_merge(__.constant(edge_rows(edges, "add")).unfold().as_("r"), "add"))
        return t

    def write(self, events: list[IdentityEvent]) -> WriteResult:
        unique = list({e.event_id: e for e in events}.values())
        before = self._applied(unique)
        for attempt in range(1, self.max_attempts + 1):
            done = before if attempt == 1 else self._applied(unique)
            fresh = [e for e in unique if marker_id(e.event_id) not in done]
            if not fresh:
                break
            now = datetime.now(timezone.utc)
            try:
                # not blindly retried: after a lost reply the request may have committed — re-check instead
                self.client.submit(lambda g: self._request(g, fresh, now), "iterate", idempotent=False)
                break
            except GraphError as exc:
                if GUARD not in str(exc):
                    raise
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
        else:
            raise GraphError(f"stream batch of {len(unique)} events not applied after {self.max_attempts} attempts")
        applied_now = self._applied(unique)
        missing = [e.event_id for e in unique if marker_id(e.event_id) not in applied_now]
        if missing:
            raise GraphError(f"{len(missing)} events of the batch are not in the graph after writing")
        return WriteResult(applied=len(unique) - len(before), duplicates=len(events) - (len(unique) - len(before)),
                           attempts=attempt)
