"""Stream events into the graph exactly once in effect, whatever SQS redelivers or reorders.

Each batch is one request — one transaction on Neptune and on TinkerTransactionGraph — that both creates a
marker vertex per event (``event:<event_id>``, label ``_applied_event``) and applies the events' deltas.
The marker is guarded by ``onMatch → fail()``: if any event of the batch was applied already (another
consumer, or this one before a crash or a lost reply), the whole request rolls back, the writer asks which
markers exist, and re-sends only the rest. So the de-duplication state lives in the graph, next to the
effect it protects, survives restarts, and is never out of step with it. Markers carry ``applied_at`` and
are swept after a retention longer than SQS can redeliver (14 days).

Every merge is order-independent: identity events' edges take min ``first_seen``, max ``last_seen`` and
summed counts; history events update the customer's summary the way the Spark job computes it (counts
summed, times maxed, the latest block's reason/source/rule kept, ``blocked`` = latest block newer than the
latest lifting), so a stream consumed in any order equals a historical load of the same events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import Cardinality, Merge, P, T

from identigraph.errors import GraphError
from identigraph.etl.stream_events import Block, CareContact, CustomerCreated, IdentityEvent, Unblock
from identigraph.graph.client import GraphClient, is_connection_error
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.graph.records import aggregate, event_edges
from identigraph.graph.schema import CUSTOMER, customer_id
from identigraph.graph.upsert import edge_merge, edge_rows, recount_identifier_stats

MARKER_LABEL = "_applied_event"
# what the Spark job writes for a customer without history: a stream-created customer starts the same way
CUSTOMER_DEFAULTS = {"n_blocks": 0, "blocked": False, "n_block_reviews": 0}
StreamEvent = IdentityEvent | CustomerCreated | Block | Unblock | CareContact
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

    def _applied(self, events: list[StreamEvent]) -> set[str]:
        ids = [marker_id(e.event_id) for e in events]
        return set(self.client.submit(lambda g: g.V(*ids).id_()))  # a read: safe to retry

    def _request(self, g: Any, events: list[StreamEvent], now: datetime) -> Any:
        identity = [e for e in events if isinstance(e, IdentityEvent)]
        edges = aggregate(r for e in identity for r in event_edges(e.model_dump(), self.pseudo))
        markers = [{T.id: marker_id(e.event_id), T.label: MARKER_LABEL} for e in events]
        customers = [{T.id: cid, T.label: CUSTOMER} for cid in sorted({customer_id(e.customer_id) for e in events})]
        identifiers = [{T.id: vid, T.label: label} for vid, label in sorted({(r.to_id, r.identifier_label) for r in edges})]
        t = g.inject(0).side_effect(
            __.constant(markers).unfold().merge_v()
            .option(Merge.on_create, __.constant({"applied_at": now}))
            .option(Merge.on_match, __.fail(GUARD)))
        t = t.side_effect(__.constant(customers).unfold().merge_v()
                          .option(Merge.on_create, __.constant(dict(CUSTOMER_DEFAULTS))))
        if edges:
            t = t.side_effect(__.constant(identifiers).unfold().merge_v())
            t = t.side_effect(edge_merge(__.constant(edge_rows(edges, "add")).unfold().as_("r"), "add"))
        history: dict[str, list[StreamEvent]] = {}
        for e in events:
            if not isinstance(e, IdentityEvent):
                history.setdefault(customer_id(e.customer_id), []).append(e)
        for cid, evs in sorted(history.items()):
            t = t.side_effect(_history_update(__.V(cid), evs))
        # identifier statistics, in the same transaction: recounted for what this batch touched (a stop-gap:
        # the incremental version that never recounts a hub belongs with the stream rework)
        touched = sorted({r.to_id for r in edges})
        if touched:
            t = t.side_effect(recount_identifier_stats(__.V(*touched)))
        if history:
            t = t.side_effect(recount_identifier_stats(__.V(*sorted(history)).out().dedup()))
        return t

    def write(self, events: list[StreamEvent]) -> WriteResult:
        unique = list({e.event_id: e for e in events}.values())
        before = self._applied(unique)
        uncertain = False  # did a request end in a way that leaves its outcome unknown?
        for attempt in range(1, self.max_attempts + 1):
            done = before if attempt == 1 else self._applied(unique)
            fresh = [e for e in unique if marker_id(e.event_id) not in done]
            if not fresh:
                break
            now = datetime.now(timezone.utc)
            try:
                # not blindly retried: after a lost reply the request may have committed — re-check instead
                self.client.submit(lambda g: self._request(g, fresh, now), "iterate", idempotent=False)
                uncertain = False
                break
            except GraphError as exc:
                if GUARD not in str(exc):
                    raise
            except Exception as exc:
                if not is_connection_error(exc):
                    raise
                uncertain = True
        else:
            raise GraphError(f"stream batch of {len(unique)} events not applied after {self.max_attempts} attempts")
        if uncertain:  # only then is a confirming read worth a request
            missing = [e.event_id for e in unique if marker_id(e.event_id) not in self._applied(unique)]
            if missing:
                raise GraphError(f"{len(missing)} events of the batch are not in the graph after writing")
        return WriteResult(applied=len(unique) - len(before), duplicates=len(events) - (len(unique) - len(before)),
                           attempts=attempt)

def _set_max(t: Any, key: str, value: Any, reducer: str = "max_") -> Any:
    return t.property(Cardinality.single, key, getattr(__.union(__.values(key), __.constant(value)), reducer)())


def _history_update(t: Any, events: list[StreamEvent]) -> Any:
    """One customer's history events of this batch, folded into its summary properties."""
    created = [e for e in events if isinstance(e, CustomerCreated)]
    blocks = [e for e in events if isinstance(e, Block)]
    unblocks = [e for e in events if isinstance(e, Unblock)]
    care = [e for e in events if isinstance(e, CareContact)]
    for e in created:
        t = _set_max(t, "created_at", e.occurred_at, "min_").property(Cardinality.single, "lifetime_value", e.lifetime_value)
        if e.country:
            t = t.property(Cardinality.single, "country", e.country)
    if blocks:
        latest = max(blocks, key=lambda b: (b.occurred_at, b.reason, b.source, b.rule_name or ""))
        describe = __.property(Cardinality.single, "last_block_reason", latest.reason) \
            .property(Cardinality.single, "last_block_source", latest.source)
        describe = (describe.property(Cardinality.single, "last_block_rule", latest.rule_name) if latest.rule_name
                    else describe.side_effect(__.properties("last_block_rule").drop()))
        # only a block at least as recent as the one the graph knows may describe the customer's last block
        t = t.side_effect(__.choose(__.values("last_block_at").is_(P.gt(latest.occurred_at)), __.identity(), describe))
        t = _set_max(t, "n_blocks", len(blocks), "sum_")
        t = _set_max(t, "last_block_at", latest.occurred_at)
    if unblocks:
        t = _set_max(t, "last_unblock_at", max(e.occurred_at for e in unblocks))
    if care:
        t = _set_max(t, "n_block_reviews", sum(e.topic == "block_review" for e in care), "sum_")
        t = _set_max(t, "last_care_at", max(e.occurred_at for e in care))
    if blocks or unblocks:
        lifted_since = __.as_("c").where("c", P.lt("c")).by("last_unblock_at").by("last_block_at")
        t = t.property(Cardinality.single, "blocked", __.choose(
            __.has("last_block_at"),
            __.choose(__.has("last_unblock_at"), __.choose(lifted_since, __.constant(True), __.constant(False)),
                      __.constant(True)),
            __.constant(False)))
    return t


def sweep_markers(client: GraphClient, older_than: datetime, batch: int = 10_000) -> int:
    """Drop markers applied before ``older_than``; run it with a cut-off beyond SQS's 14-day retention, so no
    message that could still be redelivered loses its marker. Returns how many were dropped."""
    dropped = 0
    while True:
        n = client.submit(lambda g: g.V().has_label(MARKER_LABEL).has("applied_at", P.lt(older_than))
                          .limit(batch).count(), "next")
        if n == 0:
            return dropped
        client.submit(lambda g: g.V().has_label(MARKER_LABEL).has("applied_at", P.lt(older_than))
                      .limit(batch).drop(), "iterate")
        dropped += n
