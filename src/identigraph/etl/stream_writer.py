"""Stream events into the graph exactly once in effect, whatever SQS redelivers or reorders.

One request per batch, one transaction on Neptune and on TinkerTransactionGraph, and the request is idempotent:
it can be sent again after a lost reply, a conflict or a server restart and changes nothing twice. Each event
is checked against its customer's de-duplication state inside the transaction, and applied only if new:

* **De-duplication state** is bounded by design: one ``_stream_state`` vertex per customer (``stream:<customer
  vertex id>``) holding the last ``dedup_window`` applied events as ``<occurred_at><sha(event_id)><sha(body)>``
  strings, and a ``floor``: the largest entry it ever evicted (the oldest go first). An event above the floor
  is new exactly when its entry is absent; one at or below it cannot be told apart from an evicted one and is
  reported (``floor``) instead of risking a double count. Its size is customers × window, however fast events
  come. The same event id with another body is reported (``conflict``), never applied.
* **Effects**, per new event, all order-independent so a stream consumed in any order equals a historical load:
  edges take min ``first_seen``, max ``last_seen`` and +1 on ``event_count`` and ``n_<type>``; the history events
  update the customer's summary as the Spark job computes it (``blocked`` = latest block newer than the latest
  lifting; the latest block by the same total order names reason, source and rule).
* **Identifier statistics** (``n_customers``, ``first_seen``/``last_seen``, ``n_blocked``, ``n_contested``) move in
  the same transaction: a new edge raises ``n_customers`` (and ``n_blocked``/``n_contested`` if the customer is
  blocked/contested), a customer whose ``blocked`` flips moves ``n_blocked`` on each identifier it links to, and
  ``n_block_reviews`` going 0 → >0 raises ``n_contested``. Nothing ever counts a hub's edges.

Hub identifiers (a carrier-NAT IP is in most batches) are what concurrent consumers conflict on. TinkerGraph
detects a conflict on any element the transaction *read* before another commit changed it, so the rows
touching identifiers that recur in the batch go last: the hub is read for the last moments of the transaction
only. Unchanged first/last seen are not written, so an identifier is modified only when something moved.

Rows are flat maps injected without gremlinpython's deep copy; the request's step count is fixed (one shape
per kind of event, chosen by ``choose``: 351 steps), so it stays under Neptune's step limit whatever the batch size.

Gremlin Server's CPU per event is what limits a consumer, and the request is shaped for it (bench/stream_write.py):
effects run inline in ``choose`` branches or inside ``map(... .fold())``, never in a ``side_effect`` holding a large
child, because TinkerPop closes such a child, recursively through every nested traversal, each time it runs dry — once
per event and per edge, which was a quarter of the server's CPU. An edge is merged by id and label only, with its
endpoints (the vertices in hand) given for creation: ``mergeE`` turns endpoints in its search map into two ``where``
children of the search traversal it builds per edge. On Gremlin Server only, the source also skips two
optimisation strategies and gives traversers an unmergeable sack (see ``StreamWriter._source``).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from gremlin_python.process.graph_traversal import GraphTraversal, __
from gremlin_python.process.strategies import FilterRankingStrategy, PathRetractionStrategy
from gremlin_python.process.traversal import Cardinality, Direction, Merge, P, T

from identigraph.errors import GraphError
from identigraph.etl.stream_events import Block, CareContact, CustomerCreated, IdentityEvent, Unblock
from identigraph.graph.client import GraphClient
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.graph.records import event_edges
from identigraph.graph.schema import CUSTOMER, EDGE_COUNT_PROPS, IDENTIFIER_PROPS, IDENTITY_EVENT_TYPES, customer_id

StreamEvent = IdentityEvent | CustomerCreated | Block | Unblock | CareContact

STATE_LABEL = "_stream_state"
# what the Spark job writes for a customer without history: a stream-created customer starts the same way
CUSTOMER_DEFAULTS = {"n_blocks": 0, "blocked": False, "n_block_reviews": 0}
# the counters of schema.IDENTIFIER_PROPS start at zero; first/last seen come with the first edge
IDENTIFIER_DEFAULTS = {k: 0 for k in IDENTIFIER_PROPS if k.startswith("n_")}
EDGE_DEFAULTS = {k: 0 for k in EDGE_COUNT_PROPS}
# An edge is searched by id and label only (its id hashes both endpoints and the label, so an id match is the
# same edge); the endpoints are the vertices the row already holds, given only when the edge is created.
_EDGE_CREATE = {Direction.OUT: Merge.out_v, Direction.IN: Merge.in_v, **EDGE_DEFAULTS}
NEW, DUPLICATE, CONFLICT, FLOOR = "new", "dup", "conflict", "floor"
_TS = 20  # width of the time part of an entry: %Y%m%d%H%M%S%f
_HID = 12  # hex digits of sha256(event_id)
_HBODY = 8  # hex digits of sha256(canonical body)
HOT = 3  # an identifier in this many events of one batch is treated as a hub: its rows go last
# Pure optimisations that cost Gremlin Server more than they save on this request: they walk its whole step tree
# once per request (PathRetractionStrategy was 16% of the server's CPU, FilterRankingStrategy 7%) and the request
# has no path() and no filter chain worth reordering. Gremlin Server only (see StreamWriter._source).
SKIPPED_STRATEGIES = (PathRetractionStrategy, FilterRankingStrategy)


def state_id(customer_vertex_id: str) -> str:
    """One de-duplication state vertex per customer, with an id derived from it, so a write can merge it by id."""
    return f"stream:{customer_vertex_id}"


def _ts(at: datetime) -> str:
    return at.astimezone(timezone.utc).strftime("%Y%m%d%H%M%S%f")


def fingerprint(event: StreamEvent) -> str:
    """Of the fields the contract defines (unknown extras are ignored there, so here too)."""
    canon = json.dumps(event.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:_HBODY]


def entry(event: StreamEvent) -> str:
    """What the customer's state remembers of an applied event; sorts by occurred_at."""
    return _ts(event.occurred_at) + hashlib.sha256(event.event_id.encode()).hexdigest()[:_HID] + fingerprint(event)


def block_key(event: Block) -> str:
    """The Spark job's total order of blocks: (blocked_at, reason, source, rule_name or "")."""
    return f"{_ts(event.occurred_at)}|{event.reason}|{event.source}|{event.rule_name or ''}"


@dataclass
class WriteResult:
    """Consumers delete, retry or report each message by its event's outcome, so the outcomes keep the input order."""

    outcomes: list[str]  # per event passed in, in order: new | dup | conflict | floor
    committed_at_ms: int  # wall clock once the reply arrived: the commit happened before it
    attempts: int = 1
    seconds: float = 0.0
    conflicts: int = 0  # transaction conflicts retried by the client during this write
    rows: int = 0

    def count(self, outcome: str) -> int:
        return sum(1 for o in self.outcomes if o == outcome)

    @property
    def applied(self) -> int:
        return self.count(NEW)

    @property
    def duplicates(self) -> int:
        return self.count(DUPLICATE)


@dataclass
class _Prepared:
    rows: list[dict[Any, Any]] = field(default_factory=list)
    position: list[int] = field(default_factory=list)  # row index -> position in the events passed in
    repeats: dict[int, tuple[int, bool]] = field(default_factory=dict)  # position -> (first copy's position, same body)


def _plus(key: str, by: Any = 1) -> GraphTraversal:
    delta = __.constant(by) if not isinstance(by, GraphTraversal) else by
    return __.union(__.values(key), delta).sum_()


def _set(key: str, value: GraphTraversal, vertex: bool) -> GraphTraversal:
    # single cardinality on vertices (Neptune's default is set); edges take none
    return __.property(Cardinality.single, key, value) if vertex else __.property(key, value)


def _lower(t: GraphTraversal, key: str, label: str, vertex: bool = True) -> GraphTraversal:
    """Set ``key`` to the labelled value if that is lower (or the key is absent); unchanged means untouched.
    Both branches keep the element, so the choose runs inline: no side_effect() to close per traverser."""
    return t.choose(__.values(key).where(P.lte(label)), __.identity(), _set(key, __.select(label), vertex))


def _raise(t: GraphTraversal, key: str, label: str, vertex: bool = True) -> GraphTraversal:
    return t.choose(__.values(key).where(P.gte(label)), __.identity(), _set(key, __.select(label), vertex))


def _identity_branch() -> GraphTraversal:
    """Current traverser: the customer vertex (labelled ``cust``); the row is ``r``, its time ``tt``.

    The edges run inside ``map(... .fold())``: the fold drains them and map takes its one list, so the child is never
    run to exhaustion and never closed (a ``side_effect`` child is closed, whole tree, per traverser). Identifier
    statistics come last and filter: once ``event_count`` was raised, 1 means the edge was new."""
    per_edge = (__.select("r").select("E").unfold().as_("x")
                .merge_v(__.select("v")).option(Merge.on_create, __.constant(dict(IDENTIFIER_DEFAULTS))).as_("iv"))
    per_edge = _raise(_lower(per_edge, "first_seen", "tt"), "last_seen", "tt")
    per_edge = (per_edge.select("x").merge_e(__.select("m")).option(Merge.on_create, __.constant(_EDGE_CREATE))
                .option(Merge.out_v, __.select("cust")).option(Merge.in_v, __.select("iv")))
    per_edge = _raise(_lower(per_edge, "first_seen", "tt", False), "last_seen", "tt", False)
    per_edge = per_edge.property("event_count", _plus("event_count")).choose(__.select("r").select("y"))
    for etype in IDENTITY_EVENT_TYPES:
        per_edge = per_edge.option(etype, __.property(f"n_{etype}", _plus(f"n_{etype}")))
    per_edge = (
        per_edge.has("event_count", 1).select("iv")
        .property(Cardinality.single, "n_customers", _plus("n_customers"))
        .choose(__.select("cust").has("blocked", True),
                __.property(Cardinality.single, "n_blocked", _plus("n_blocked")))
        .choose(__.select("cust").has("n_block_reviews", P.gt(0)),
                __.property(Cardinality.single, "n_contested", _plus("n_contested")))
    )
    return __.map(per_edge.fold())


def _blocked_now() -> GraphTraversal:
    """``blocked`` = a block exists and no lifting after the latest one (the Spark job's definition)."""
    lifted_since = __.as_("cb").where("cb", P.lt("cb")).by("last_unblock_at").by("last_block_at")
    return __.choose(
        __.has("last_block_at"),
        __.choose(__.has("last_unblock_at"), __.choose(lifted_since, __.constant(True), __.constant(False)),
                  __.constant(True)),
        __.constant(False))


def _flip_blocked() -> GraphTraversal:
    """After ``blocked`` was recomputed: if it changed from ``wb``, every linked identifier's n_blocked moves."""
    return __.side_effect(
        __.select("cust").values("blocked").where(P.neq("wb"))
        .choose(__.is_(True),
                __.select("cust").out().property(Cardinality.single, "n_blocked", _plus("n_blocked")),
                __.select("cust").out().property(Cardinality.single, "n_blocked", _plus("n_blocked", -1))))


def _remember_blocked() -> GraphTraversal:
    return __.coalesce(__.values("blocked"), __.constant(False)).as_("wb").select("cust")


def _block_branch() -> GraphTraversal:
    describe = (
        __.select("st").property(Cardinality.single, "last_block_key", __.select("r").select("bk")).select("cust")
        .property(Cardinality.single, "last_block_reason", __.select("r").select("br"))
        .property(Cardinality.single, "last_block_source", __.select("r").select("bs"))
        .choose(__.select("r").select("bu"),
                __.property(Cardinality.single, "last_block_rule", __.select("r").select("bu")),
                __.side_effect(__.properties("last_block_rule").drop())))
    # only a block at least as late as every one known may describe the customer's last block: by the total
    # order when the stream saw the earlier one, by time when it came from the historical load
    later_known = __.union(
        __.select("st").values("last_block_key").where(P.gt("bkk")),
        __.select("cust").values("last_block_at").where(P.gt("tt")))
    return (
        _remember_blocked()
        .select("r").select("bk").as_("bkk").select("cust")
        .side_effect(__.choose(later_known, __.identity(), describe))
        .property(Cardinality.single, "n_blocks", _plus("n_blocks"))
        .property(Cardinality.single, "last_block_at", __.union(__.values("last_block_at"), __.select("tt")).max_())
        .property(Cardinality.single, "blocked", _blocked_now())
        .side_effect(_flip_blocked())
    )


def _unblock_branch() -> GraphTraversal:
    return (
        _remember_blocked()
        .property(Cardinality.single, "last_unblock_at",
                  __.union(__.values("last_unblock_at"), __.select("tt")).max_())
        .property(Cardinality.single, "blocked", _blocked_now())
        .side_effect(_flip_blocked())
    )


def _care_branch() -> GraphTraversal:
    return (
        __.coalesce(__.values("n_block_reviews"), __.constant(0)).as_("wr").select("cust")
        .property(Cardinality.single, "n_block_reviews", _plus("n_block_reviews", __.select("r").select("rv")))
        .property(Cardinality.single, "last_care_at", __.union(__.values("last_care_at"), __.select("tt")).max_())
        .side_effect(__.select("wr").is_(0).select("cust").has("n_block_reviews", P.gt(0))
                     .out().property(Cardinality.single, "n_contested", _plus("n_contested")))
    )


def _created_branch() -> GraphTraversal:
    return (
        __.property(Cardinality.single, "created_at", __.union(__.values("created_at"), __.select("tt")).min_())
        .property(Cardinality.single, "lifetime_value", __.select("r").select("ltv"))
        .side_effect(__.select("r").select("cc").as_("ccv").select("cust")
                     .property(Cardinality.single, "country", __.select("ccv")))
    )


def _apply(window: int) -> GraphTraversal:
    """Current traverser: the customer's state vertex (``st``). Records the event, evicts, applies its effect.

    The effect is an inline choose (every branch keeps one traverser), not a side_effect: TinkerPop closes a
    side_effect's child, recursively, each time it runs dry, and this one holds most of the request's steps.
    Identity events (the only rows with ``E``) share one branch instead of one copy per event type."""
    history = (__.choose(__.select("r").select("y")).option("customer_created", _created_branch())
               .option("block", _block_branch()).option("unblock", _unblock_branch())
               .option("care_contact", _care_branch()))
    return (
        __.property(Cardinality.set_, "applied", __.select("kk"))
        .choose(__.properties("applied").count().is_(P.gt(window)),
                __.property(Cardinality.single, "floor", __.values("applied").min_())
                .side_effect(__.properties("applied").order().by(T.value).limit(1).drop()))
        .select("r").merge_v(__.select("c")).option(Merge.on_create, __.constant(dict(CUSTOMER_DEFAULTS))).as_("cust")
        .choose(__.select("r").select("E"), _identity_branch(), history)
        .constant(NEW)
    )


def _events(window: int) -> GraphTraversal:
    """Rows → one outcome per row, grouped: {outcome: [row index, ...]}. The rows are put in afterwards."""
    decide = __.choose(
        __.values("applied").substring(_TS, _TS + _HID).where(P.eq("hh")),
        __.choose(__.values("applied").where(P.eq("kk")), __.constant(DUPLICATE), __.constant(CONFLICT)),
        __.choose(__.values("floor").where(P.gte("kk")),
                  __.choose(__.values("floor").where(P.eq("kk")), __.constant(DUPLICATE), __.constant(FLOOR)),
                  _apply(window)))
    return (
        __.constant([]).unfold().as_("r")
        .select("k").as_("kk").select("r").select("h").as_("hh").select("r").select("t").as_("tt")
        .select("r").merge_v(__.select("s")).as_("st")
        .map(decide).as_("o")
        .group().by(__.select("o")).by(__.select("r").select("i").fold())
    )


class StreamWriter:
    """Binds the client, the pseudonymisation key and the de-duplication window every batch of one stream must share."""

    def __init__(self, client: GraphClient, pseudo: Pseudonymiser, window: int | None = None) -> None:
        self.client = client
        self.pseudo = pseudo
        self.window = window or client.settings.stream.dedup_window
        self._template: tuple[Any, Any] | None = None

    def prepare(self, events: list[StreamEvent]) -> _Prepared:
        """Flat rows in write order (history, then identity events, those on recurring identifiers last)."""
        prep = _Prepared()
        first: dict[str, tuple[int, str]] = {}
        unique: list[int] = []
        for pos, e in enumerate(events):
            fp = fingerprint(e)
            if e.event_id in first:  # a repeat inside the batch: only the first copy goes to the graph
                prep.repeats[pos] = (first[e.event_id][0], first[e.event_id][1] == fp)
                continue
            first[e.event_id] = (pos, fp)
            unique.append(pos)
        edges = {pos: event_edges(events[pos].model_dump(), self.pseudo)
                 for pos in unique if isinstance(events[pos], IdentityEvent)}
        heat = Counter(r.to_id for recs in edges.values() for r in recs)

        def order(pos: int) -> tuple[int, int]:
            if pos not in edges:
                return (0, 0)
            return (1, max((heat[r.to_id] for r in edges[pos]), default=0) >= HOT)

        for pos in sorted(unique, key=order):
            e = events[pos]
            cid = customer_id(e.customer_id)
            row: dict[Any, Any] = {
                "i": len(prep.rows), "y": e.event_type, "c": {T.id: cid, T.label: CUSTOMER},
                "s": {T.id: state_id(cid), T.label: STATE_LABEL}, "t": e.occurred_at,
                "k": entry(e), "h": hashlib.sha256(e.event_id.encode()).hexdigest()[:_HID],
            }
            if isinstance(e, IdentityEvent):
                row["E"] = [{"v": {T.id: r.to_id, T.label: r.identifier_label},
                             "m": {T.id: r.id, T.label: r.label}}
                            for r in edges[pos]]
            elif isinstance(e, CustomerCreated):
                row["ltv"] = float(e.lifetime_value)
                if e.country:
                    row["cc"] = e.country
            elif isinstance(e, Block):
                row.update(br=e.reason, bs=e.source, bk=block_key(e))
                if e.rule_name:
                    row["bu"] = e.rule_name
            elif isinstance(e, CareContact):
                row["rv"] = int(e.topic == "block_review")
            prep.rows.append(row)
            prep.position.append(pos)
        return prep

    def _request(self, g: Any, prep: _Prepared) -> GraphTraversal:
        rows = prep.rows
        events = _events(self.window)
        # the rows go straight into the constant: gremlinpython would otherwise deep-copy every nested map
        events.bytecode.step_instructions[0] = ["constant", rows]
        return self._source(g).inject(0).map(events)

    def _source(self, g: Any) -> Any:
        """On Gremlin Server: skip the strategies that cost more than they save here, and give every traverser a
        sack with no merge operator, which makes TinkerPop hash traversers by identity instead of hashing their
        paths (each carries its row map) whenever one enters a step. Neither changes what the request writes.
        Not on Neptune: it plans requests with its own engine, and neither was checked there (a step it does not run
        natively sends the whole request to its slower fallback engine)."""
        return g if self.client.is_neptune else g.with_sack(0).without_strategies(*SKIPPED_STRATEGIES)

    def write(self, events: list[StreamEvent]) -> WriteResult:
        """Apply the events; raises what the client raises (connection errors, GraphError). Safe to call again
        with the same events after any failure: the request is idempotent."""
        prep = self.prepare(events)
        outcomes: list[str] = [""] * len(events)
        t0 = time.perf_counter()
        retries_before = self.client.retries
        if prep.rows:
            reply = self.client.submit(lambda g: self._request(g, prep), "next", idempotent=True)
            for outcome, indices in reply.items():
                for i in indices:
                    outcomes[prep.position[i]] = outcome
        for pos, (orig, same) in prep.repeats.items():
            # a copy of an event applied (or found) here is a duplicate; one with another body is a conflict;
            # a copy of one that could not be decided shares its fate
            outcomes[pos] = CONFLICT if not same else (outcomes[orig] if outcomes[orig] in (CONFLICT, FLOOR) else DUPLICATE)
        if "" in outcomes:
            raise GraphError(f"the graph answered for {len(prep.rows)} rows but not for all of them")
        return WriteResult(outcomes=outcomes, committed_at_ms=int(time.time() * 1000) + 1,
                           seconds=time.perf_counter() - t0, conflicts=self.client.retries - retries_before,
                           rows=len(prep.rows))
