"""The request's neighbourhood: one bounded traversal that returns exactly what the model reads.

A 2-layer model's score for a customer reads the customer, its identifiers, and each identifier's other
customers (their own properties and how many links of each kind they have, not those links). So the API
asks the graph one question per request:

- the seed's properties and its links (``max_links`` at most);
- every identifier's stored statistics (``schema.IDENTIFIER_PROPS``: customers, first/last use, blocked and
  contested customers) — a carrier-NAT IP with 5,000 customers costs one vertex read, never a count;
- for identifiers with at most ``cap`` customers (the model's ``hub_degree``), those customers' links to it
  (``limit``, no global order: Neptune runs ``limit()`` natively, ``order()`` on a hub reads every edge),
  their properties and a per-label count of their links; a hub contributes nothing more, since the model
  represents hubs by their statistics in training too;
- the request's own identifiers (a signup, a new device), the same way.

Only the properties the encoder and the evidence read travel, and the traversal carries the request's
deadline as its ``evaluationTimeout``. A signup is scored before it is written: the account becomes a
virtual customer linked to the request's identifiers (ids built exactly as the ETL and the stream build
them), and a known customer acting from an identifier it never used gets the same virtual link.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gremlin_python.process.graph_traversal import GraphTraversal, __
from gremlin_python.process.traversal import P, T

from identigraph.graph.client import GraphClient
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.graph.records import identifier_vertex_id
from identigraph.graph.schema import (
    CUSTOMER,
    EDGE_COUNT_PROPS,
    EDGE_PROPS,
    IDENTIFIER_PROPS,
    IDENTIFIERS,
    customer_id,
    strip_ascii,
)
from identigraph.model.request_path import LinkSummary, RequestGraph

# what the evidence and the policy read of a customer, beyond the model's own columns
EVIDENCE_PROPS = ("created_at", "lifetime_value", "blocked", "n_block_reviews", "last_block_reason")


_COLUMN_TO_LABEL = {column: label for label, (_, column) in IDENTIFIERS.items()}


def identifier_ids(identifiers: Mapping[str, str | None], pseudo: Pseudonymiser) -> dict[str, str]:
    """Request identifiers (input-contract column names) → graph vertex ids, by label, canonicalised by the
    same function as the ETL's and the stream's (``graph.canonical``), so every spelling finds its vertex.

    Raises SchemaError naming the field; for emails and phones the message never repeats the value.
    """
    out = {}
    for column, raw in identifiers.items():
        if raw is None or not strip_ascii(str(raw)):
            continue  # blank = not given, as in the ETL
        label = _COLUMN_TO_LABEL[column]
        out[label] = identifier_vertex_id(label, raw, pseudo)
    return out


@dataclass
class Fetched:
    """What one bounded traversal returned for a request, with what was capped, so the response can say so."""
    graph: RequestGraph
    known: bool                                         # the customer is in the graph
    virtual: set[str] = field(default_factory=set)      # identifiers linked by this request only
    hubs: set[str] = field(default_factory=set)         # identifiers represented by their statistics alone
    links_capped: bool = False                          # the seed has more than max_links links

    def others(self, identifier: str) -> list[dict[str, Any]]:
        """Properties of the identifier's other customers that were fetched (none for a hub)."""
        seed = self.graph.seed
        return [self.graph.vertices[c][1] for c, _, i, _ in self.graph.edges if i == identifier and c != seed]


def _degree(cap: int) -> GraphTraversal:
    """An identifier's customers: its statistic, or (a graph written before statistics) a bounded count."""
    return __.coalesce(__.values("n_customers"), __.in_e().limit(cap + 1).count())


def _identifiers(seed: str, new: list[str]) -> GraphTraversal:
    mine = __.V(seed).out()
    return (__.union(mine, __.V(*new)) if new else mine).dedup()


def traversal(g: Any, seed: str, new: list[str], customer_props: list[str], cap: int, max_links: int) -> GraphTraversal:
    """The whole fetch as one request (see the module docstring). The identifiers are walked twice: once for
    their statistics and links, once for their customers, each customer once however many it shares."""
    small = lambda: __.where(_degree(cap).is_(P.lte(cap)))  # noqa: E731 — gremlinpython traversals are mutable
    others = lambda: __.in_e().where(__.out_v().has_id(P.neq(seed))).limit(cap)  # noqa: E731
    return (
        g.inject(0).project("seed", "links", "identifiers", "customers")
        .by(__.V(seed).value_map(*customer_props).by(__.unfold()).fold())
        .by(__.V(seed).out_e().limit(max_links)
            .project("i", "l", "p").by(__.in_v().id_()).by(T.label).by(__.value_map(*EDGE_PROPS)).fold())
        .by(_identifiers(seed, new).project("i", "l", "s", "e").by(T.id).by(T.label)
            .by(__.value_map(*IDENTIFIER_PROPS).by(__.unfold()))
            .by(small().local(others()).project("c", "p").by(__.out_v().id_()).by(__.value_map(*EDGE_PROPS)).fold())
            .fold())
        .by(_identifiers(seed, new).where(_degree(cap).is_(P.lte(cap))).local(others()).out_v().dedup()
            .project("c", "p", "n", "f", "l").by(T.id)
            .by(__.value_map(*customer_props).by(__.unfold()))
            .by(__.out_e().group_count().by(T.label))
            .by(__.out_e().values("first_seen").min_())
            .by(__.out_e().values("last_seen").max_()).fold())
    )


def _summary(counts: Mapping[str, int], firsts: list[Any], lasts: list[Any]) -> LinkSummary:
    firsts = [t for t in firsts if isinstance(t, datetime)]
    lasts = [t for t in lasts if isinstance(t, datetime)]
    return LinkSummary(dict(counts), min(firsts, default=None), max(lasts, default=None))


def fetch(client: GraphClient, customer: str, ids: dict[str, str], customer_props: list[str], cap: int,
          max_links: int, as_of: datetime, action: str, deadline: float | None = None) -> Fetched:
    """Graph neighbourhood of ``customer`` (raw id) with the request's identifiers ``ids`` linked to it.

    ``as_of`` is naive UTC (as gremlinpython returns dates). Raises what ``GraphClient.submit`` raises.
    """
    seed = customer_id(customer)
    props = sorted(set(customer_props) | set(EVIDENCE_PROPS))
    new = sorted(set(ids.values()))
    row = client.submit(lambda g: traversal(g, seed, new, props, cap, max_links), "next", deadline=deadline)
    known = bool(row["seed"])
    vertices: dict[str, tuple[str, dict[str, Any]]] = {
        seed: (CUSTOMER, dict(row["seed"][0]) if known else {"created_at": as_of, "lifetime_value": 0.0})}
    stats = {r["i"]: (r["l"], dict(r["s"])) for r in row["identifiers"]}
    edges = [(seed, r["l"], r["i"], dict(r["p"])) for r in row["links"]]
    out = Fetched(RequestGraph(as_of=as_of, seed=seed, vertices=vertices, edges=edges), known,
                  links_capped=len(row["links"]) >= max_links)
    linked = {e[2] for e in edges}
    for label, vid in sorted(ids.items()):
        if vid in linked:
            continue
        elabel = IDENTIFIERS[label][0]
        counts = {name: 0 for name in EDGE_COUNT_PROPS}
        counts.update({"event_count": 1, f"n_{action}": 1})
        edges.append((seed, elabel, vid, {"first_seen": as_of, "last_seen": as_of, **counts}))
        out.virtual.add(vid)
        label_now, s = stats.get(vid, (label, {}))
        # the statistics the graph will hold once the stream writes this link
        stats[vid] = (label_now, {**s, "n_customers": int(s.get("n_customers") or 0) + 1,
                                  "first_seen": min(s.get("first_seen") or as_of, as_of),
                                  "last_seen": max(s.get("last_seen") or as_of, as_of)})
    for vid, (label, s) in stats.items():
        vertices[vid] = (label, s)
        if int(s.get("n_customers") or 0) > cap:  # the request's own link can make one a hub
            out.hubs.add(vid)
    for r in row["customers"]:
        vertices[r["c"]] = (CUSTOMER, dict(r["p"]))
        out.graph.summaries[r["c"]] = _summary(r["n"], [r["f"]], [r["l"]])
    for ident in row["identifiers"]:
        if ident["i"] in out.hubs:
            continue
        elabel = IDENTIFIERS[ident["l"]][0]
        edges += [(r["c"], elabel, ident["i"], dict(r["p"])) for r in ident["e"] if r["c"] in vertices]
    mine: dict[str, int] = {}
    for _, elabel, _, _ in (e for e in edges if e[0] == seed):
        mine[elabel] = mine.get(elabel, 0) + 1
    out.graph.summaries[seed] = _summary(mine, [e[3].get("first_seen") for e in edges if e[0] == seed],
                                         [e[3].get("last_seen") for e in edges if e[0] == seed])
    return out

