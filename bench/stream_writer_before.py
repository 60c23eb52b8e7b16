"""The stream writer's traversal shape before issue 14's server-CPU work (commit 0ed431a), kept so that
bench/stream_write.py can measure the old shape against the new one in one run without git. Not used by identigraph.

Only the builders that changed are here (side_effect children, five copies of the identity branch, every strategy
on); the unchanged branches, row preparation and outcome handling are the package's own.
"""

from __future__ import annotations

from typing import Any

from gremlin_python.process.graph_traversal import GraphTraversal, __
from gremlin_python.process.traversal import Cardinality, Merge, P, T

from identigraph.etl import stream_writer as current
from identigraph.etl.stream_writer import (
    CUSTOMER_DEFAULTS,
    EDGE_DEFAULTS,
    IDENTIFIER_DEFAULTS,
    IDENTITY_EVENT_TYPES,
    NEW,
    _block_branch,
    _care_branch,
    _created_branch,
    _plus,
    _set,
    _unblock_branch,
)


def _lower(key: str, label: str, vertex: bool = True) -> GraphTraversal:
    return __.choose(__.values(key).where(P.lte(label)), __.identity(), _set(key, __.select(label), vertex))


def _raise(key: str, label: str, vertex: bool = True) -> GraphTraversal:
    return __.choose(__.values(key).where(P.gte(label)), __.identity(), _set(key, __.select(label), vertex))


def _identity_branch() -> GraphTraversal:
    count_by_type = __.choose(__.select("r").select("y"))
    for etype in IDENTITY_EVENT_TYPES:
        count_by_type = count_by_type.option(etype, __.property(f"n_{etype}", _plus(f"n_{etype}")))
    new_edge_stats = (
        __.has("event_count", 0).select("iv")
        .property(Cardinality.single, "n_customers", _plus("n_customers"))
        .side_effect(__.select("cust").has("blocked", True).select("iv")
                     .property(Cardinality.single, "n_blocked", _plus("n_blocked")))
        .side_effect(__.select("cust").has("n_block_reviews", P.gt(0)).select("iv")
                     .property(Cardinality.single, "n_contested", _plus("n_contested")))
    )
    return __.side_effect(
        __.select("r").select("E").unfold().as_("x")
        .merge_v(__.select("v")).option(Merge.on_create, __.constant(dict(IDENTIFIER_DEFAULTS))).as_("iv")
        .side_effect(_lower("first_seen", "tt")).side_effect(_raise("last_seen", "tt"))
        .select("x").merge_e(__.select("m")).option(Merge.on_create, __.constant(dict(EDGE_DEFAULTS)))
        .side_effect(new_edge_stats)
        .side_effect(_lower("first_seen", "tt", False)).side_effect(_raise("last_seen", "tt", False))
        .property("event_count", _plus("event_count"))
        .side_effect(count_by_type)
    )


def _apply(window: int) -> GraphTraversal:
    by_type = __.choose(__.select("r").select("y"))
    identity = _identity_branch()
    for etype in IDENTITY_EVENT_TYPES:
        by_type = by_type.option(etype, identity)
    by_type = (by_type.option("customer_created", _created_branch()).option("block", _block_branch())
               .option("unblock", _unblock_branch()).option("care_contact", _care_branch()))
    evict = (__.filter_(__.properties("applied").count().is_(P.gt(window)))
             .property(Cardinality.single, "floor", __.values("applied").min_())
             .side_effect(__.properties("applied").order().by(T.value).limit(1).drop()))
    return (
        __.property(Cardinality.set_, "applied", __.select("kk"))
        .side_effect(evict)
        .select("r").merge_v(__.select("c")).option(Merge.on_create, __.constant(dict(CUSTOMER_DEFAULTS))).as_("cust")
        .side_effect(by_type)
        .constant(NEW)
    )


def _events(window: int) -> GraphTraversal:
    """The package's ``_events`` around the old ``_apply`` (its wrapper around the decision did not change)."""
    saved = current._apply
    current._apply = _apply
    try:
        return current._events(window)
    finally:
        current._apply = saved


class StreamWriter(current.StreamWriter):
    """The package's writer sending the old shape, every strategy on, no sack."""

    def _request(self, g: Any, prep: Any) -> GraphTraversal:
        events = _events(self.window)
        events.bytecode.step_instructions[0] = ["constant", prep.rows]
        return g.inject(0).map(events)

