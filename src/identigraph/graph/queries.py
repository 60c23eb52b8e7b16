"""Read queries the later stages share: identity, shared customers, bounded neighbourhoods, admin.

Every fan-out is capped: a carrier NAT IP can have thousands of customers, and one scoring request must
never drag them all in. Caps are explicit arguments and the true degree is always reported beside the
capped list, so callers can tell "3 customers" from "3 of 40,000".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource, __
from gremlin_python.process.traversal import Direction, P, T

from identigraph.errors import GraphError
from identigraph.graph.client import GraphClient
from identigraph.graph.schema import CUSTOMER, EDGE_PROPS, EDGE_TO_IDENTIFIER, customer_id


def _edge_dict(em: dict[Any, Any]) -> dict[str, Any]:
    out = {
        "edge_id": em[T.id],
        "label": em[T.label],
        "customer_id": em[Direction.OUT][T.id],
        "identifier_id": em[Direction.IN][T.id],
        "identifier_label": EDGE_TO_IDENTIFIER.get(em[T.label], em[Direction.IN].get(T.label)),
    }
    for key in EDGE_PROPS:
        if key in em:
            out[key] = em[key]
    return out


def _vertex_dict(em: dict[Any, Any]) -> dict[str, Any]:
    out = {"id": em[T.id], "label": em[T.label]}
    out.update({k: v for k, v in em.items() if isinstance(k, str)})
    return out


_Build = Callable[[GraphTraversalSource], GraphTraversal]


# The walk's request builders take the hop's ids as arguments rather than closing over the loop's
# variables, so each builder (run again on a retry) is bound to the ids it was made for.
def _vertex_maps(ids: list[str]) -> _Build:
    return lambda g: g.V(*ids).element_map()


def _out_edge_maps(ids: list[str]) -> _Build:
    return lambda g: g.V(*ids).out_e().element_map()


def _identifier_edges(ids: list[str], fanout_cap: int) -> _Build:
    return lambda g: (
        g.V(*ids).project("id", "degree", "edges")
        .by(T.id).by(__.coalesce(__.values("n_customers"), __.in_e().count()))
        .by(__.in_e().limit(fanout_cap + 1).element_map().fold())
    )


def customer_identity(client: GraphClient, customer: str, deadline: float | None = None) -> list[dict[str, Any]]:
    """The customer's identifiers with edge properties. ``customer`` is the raw customer id."""
    vid = customer_id(customer)
    rows = client.submit(lambda g: g.V(vid).out_e().element_map(), deadline=deadline)
    return sorted((_edge_dict(r) for r in rows), key=lambda e: (e["identifier_label"], e["identifier_id"]))


def shared_customers(client: GraphClient, customer: str, per_identifier_cap: int = 100) -> list[dict[str, Any]]:
    """For each of the customer's identifiers: its true customer count and up to ``cap`` other customers."""
    vid = customer_id(customer)
    rows = client.submit(lambda g: (
        g.V(vid).out()
        .project("identifier_id", "label", "customers_total", "others")
        .by(T.id).by(T.label).by(__.in_().count())
        .by(__.in_().has_id(P.neq(vid)).limit(per_identifier_cap).id_().fold())
    ))
    return rows


@dataclass
class Neighbourhood:
    """A bounded subgraph around seed customers, with enough bookkeeping to know what was cut."""

    seeds: list[str]
    vertices: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: dict[str, dict[str, Any]] = field(default_factory=dict)
    identifier_degree: dict[str, int] = field(default_factory=dict)
    truncated_identifiers: set[str] = field(default_factory=set)
    truncated_by_node_cap: bool = False

    @property
    def customers(self) -> list[str]:
        return [v for v, d in self.vertices.items() if d["label"] == CUSTOMER]


def neighbourhood(
    client: GraphClient,
    customers: list[str],
    hops: int = 2,
    fanout_cap: int = 50,
    max_customers: int = 1000,
    deadline: float | None = None,
) -> Neighbourhood:
    """k-hop customer neighbourhood: seeds → their identifiers → customers sharing them → … (``hops`` times).

    Each identifier contributes at most ``fanout_cap`` customers (whichever the graph returns first: an order
    on a hub would read every edge, on Neptune too) and its true degree from its stored statistics; the walk
    stops adding customers at ``max_customers``.
    """
    if hops < 0 or fanout_cap < 1 or max_customers < 1:
        raise GraphError("neighbourhood: hops >= 0, fanout_cap >= 1 and max_customers >= 1 are required")
    seeds = [customer_id(c) for c in customers]
    hood = Neighbourhood(seeds=seeds)
    frontier = [s for s in seeds]
    seen_customers: set[str] = set()
    seen_identifiers: set[str] = set()
    for depth in range(hops + 1):
        frontier = [c for c in frontier if c not in seen_customers]
        if not frontier:
            break
        seen_customers.update(frontier)
        for v in client.submit(_vertex_maps(frontier), deadline=deadline):
            hood.vertices[v[T.id]] = _vertex_dict(v)
        out_edges = client.submit(_out_edge_maps(frontier), deadline=deadline)
        new_identifiers = []
        for em in out_edges:
            e = _edge_dict(em)
            hood.edges[e["edge_id"]] = e
            if e["identifier_id"] not in seen_identifiers:
                seen_identifiers.add(e["identifier_id"])
                new_identifiers.append(e["identifier_id"])
                hood.vertices.setdefault(e["identifier_id"], {"id": e["identifier_id"],
                                                              "label": e["identifier_label"]})
        if depth == hops or not new_identifiers:
            break
        rows = client.submit(_identifier_edges(new_identifiers, fanout_cap), deadline=deadline)
        next_frontier: list[str] = []
        for row in rows:
            hood.identifier_degree[row["id"]] = row["degree"]
            if row["degree"] > fanout_cap:
                hood.truncated_identifiers.add(row["id"])
            for em in row["edges"][:fanout_cap]:
                e = _edge_dict(em)
                cust = e["customer_id"]
                if cust not in seen_customers and cust not in next_frontier:
                    if len(seen_customers) + len(next_frontier) >= max_customers:
                        hood.truncated_by_node_cap = True
                        continue
                    next_frontier.append(cust)
                if cust in seen_customers or cust in next_frontier:
                    hood.edges[e["edge_id"]] = e
        frontier = next_frontier
    # customers reached at the last hop still need their own properties
    missing = [c for c in frontier if c not in hood.vertices]
    if missing:
        for v in client.submit(_vertex_maps(missing), deadline=deadline):
            hood.vertices[v[T.id]] = _vertex_dict(v)
    return hood


def counts(client: GraphClient) -> dict[str, int]:
    """Per-label counts are how loads and tests check what a graph holds without reading every element."""
    vertices = client.submit(lambda g: g.V().group_count().by(T.label), "next")
    edges = client.submit(lambda g: g.E().group_count().by(T.label), "next")
    return {**{f"v:{k}": v for k, v in vertices.items()}, **{f"e:{k}": v for k, v in edges.items()}}


def dump(client: GraphClient) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every vertex and edge with properties. For tests and small graphs; exports page instead."""
    vertices = [_vertex_dict(v) for v in client.submit(lambda g: g.V().element_map())]
    edges = [_edge_dict(e) for e in client.submit(lambda g: g.E().element_map())]
    return sorted(vertices, key=lambda v: v["id"]), sorted(edges, key=lambda e: e["edge_id"])


def clear(client: GraphClient, batch: int = 10_000) -> int:
    """Drop everything, in bounded transactions. Refuses Neptune unless the config allows it."""
    cfg = client.settings.graph
    if cfg.kind == "neptune" and not cfg.allow_clear_neptune:
        raise GraphError("refusing to clear a Neptune graph: set graph.allow_clear_neptune: true to allow it")
    dropped = 0
    while True:
        n = client.submit(lambda g: g.V().limit(batch).count(), "next")
        if n == 0:
            return dropped
        client.submit(lambda g: g.V().limit(batch).drop(), "iterate")
        dropped += n
