"""The request's neighbourhood: the graph's bounded k-hop fetch, plus what the request itself says.

A signup is scored before it is written: the account is not in the graph yet, so it becomes a virtual
customer vertex linked to the identifiers in the request, and the graph's neighbourhood of those
identifiers is pulled in around it. A known customer acting from a new device gets the same virtual edge,
so "a years-old account logs in from a device three blocked accounts use" is seen at the login, not after
the stream has written it. Identifier ids are built exactly as the ETL and the stream build them (same
normalisation, same keyed hash for emails and phones), or the virtual edges would point at nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import Order, T

from identigraph.graph import queries
from identigraph.graph.client import GraphClient
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.graph.queries import Neighbourhood
from identigraph.graph.records import identifier_vertex_id
from identigraph.graph.schema import CUSTOMER, EDGE_COUNT_PROPS, IDENTIFIERS, customer_id, edge_id
from identigraph.serving.config import NeighbourhoodCaps

_PREFIX = CUSTOMER + ":"


def identifier_ids(identifiers: Mapping[str, str | None], pseudo: Pseudonymiser) -> dict[str, str]:
    """Request identifiers (input-contract column names) → graph vertex ids, by label.

    Raises SchemaError naming the field; for emails and phones the message never repeats the value.
    """
    column_to_label = {column: label for label, (_, column) in IDENTIFIERS.items()}
    out = {}
    for column, raw in identifiers.items():
        if raw is None or not str(raw).strip():
            continue  # blank = not given, as in the ETL
        label = column_to_label[column]
        out[label] = identifier_vertex_id(label, raw, pseudo)
    return out


@dataclass
class RequestHood:
    hood: Neighbourhood
    seed: str                                    # the customer's vertex id
    known: bool                                  # the customer is in the graph
    virtual_edges: list[str] = field(default_factory=list)


def _merge(into: Neighbourhood, other: Neighbourhood) -> None:
    for vid, props in other.vertices.items():
        into.vertices.setdefault(vid, props)
    for eid, e in other.edges.items():
        into.edges.setdefault(eid, e)
    for vid, degree in other.identifier_degree.items():
        into.identifier_degree.setdefault(vid, degree)
    into.truncated_identifiers |= other.truncated_identifiers
    into.truncated_by_node_cap |= other.truncated_by_node_cap


def _identifier_customers(client: GraphClient, ids: list[str], cap: int) -> dict[str, dict[str, Any]]:
    """True degree and the ``cap`` most recently seen customers of each identifier that exists."""
    rows = client.submit(lambda g: (
        g.V(*ids).project("id", "degree", "customers")
        .by(T.id).by(__.in_e().count())
        .by(__.in_e().order().by("last_seen", Order.desc).limit(cap).out_v().id_().fold())
    ))
    return {r["id"]: r for r in rows}


def fetch(client: GraphClient, customer: str, ids: dict[str, str], caps: NeighbourhoodCaps, as_of: datetime,
          action: str) -> RequestHood:
    """Graph neighbourhood of ``customer`` (raw id) with the request's identifiers ``ids`` linked to it."""
    hood = queries.neighbourhood(client, [customer], hops=caps.hops, fanout_cap=caps.fanout_cap,
                                 max_customers=caps.max_customers)
    seed = customer_id(customer)
    known = seed in hood.vertices
    linked = {e["identifier_id"] for e in hood.edges.values() if e["customer_id"] == seed}
    new = {label: vid for label, vid in ids.items() if vid not in linked}
    out = RequestHood(hood, seed, known)
    if not new:
        return out
    found = _identifier_customers(client, list(new.values()), caps.fanout_cap)
    reached: list[str] = []
    for vid in new.values():
        row = found.get(vid)
        degree = row["degree"] if row else 0
        hood.identifier_degree[vid] = degree + 1  # the request's own link counts
        if degree > caps.fanout_cap:
            hood.truncated_identifiers.add(vid)
        for cust in row["customers"] if row else []:
            if cust != seed and cust not in hood.vertices and cust not in reached:
                reached.append(cust)
    budget = caps.max_customers - len(hood.customers) - (0 if known else 1)
    if len(reached) > budget:
        reached, hood.truncated_by_node_cap = reached[:max(budget, 0)], True
    if reached:
        # the identifiers' customers are one hop from the seed: walk the remaining hops from them
        more = queries.neighbourhood(client, [c[len(_PREFIX):] for c in reached], hops=caps.hops - 1,
                                     fanout_cap=caps.fanout_cap, max_customers=budget)
        _merge(hood, more)
    if not known:
        # a signup: no history, no value yet
        hood.vertices[seed] = {"id": seed, "label": CUSTOMER, "created_at": as_of, "lifetime_value": 0.0}
    for label, vid in new.items():
        hood.vertices.setdefault(vid, {"id": vid, "label": label})
        edge_label = IDENTIFIERS[label][0]
        eid = edge_id(seed, edge_label, vid)
        counts = {name: 0 for name in EDGE_COUNT_PROPS}
        counts.update({"event_count": 1, f"n_{action}": 1})
        hood.edges[eid] = {"edge_id": eid, "label": edge_label, "customer_id": seed, "identifier_id": vid,
                           "identifier_label": label, "first_seen": as_of, "last_seen": as_of, **counts}
        out.virtual_edges.append(eid)
    return out
