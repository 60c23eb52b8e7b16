"""Hand-made identity graphs for model tests: small enough to reason about, typed like a snapshot."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd

from identigraph.etl.snapshot import EDGE_COLUMNS
from identigraph.graph.schema import CUSTOMER_PROPERTY_TYPES, IDENTIFIER_PROPERTY_TYPES, IDENTIFIERS
from identigraph.model.frame import GraphFrame

AS_OF = datetime(2026, 6, 30, tzinfo=timezone.utc)


def customer(cid: str, days_old: float = 400, blocked: bool = False, ltv: float = 100.0, **extra) -> dict:
    row = {"~id": f"customer:{cid}", "created_at": AS_OF - timedelta(days=days_old), "country": "AE",
           "lifetime_value": ltv, "n_blocks": 1 if blocked else 0, "blocked": 1.0 if blocked else 0.0,
           "n_block_reviews": 0}
    if blocked:
        row.update(last_block_at=AS_OF - timedelta(days=40), last_block_reason="fraud", last_block_source="manual")
    row.update(extra)
    return row


def link(cid: str, identifier: str, first_days: float = 300, last_days: float = 1, count: int = 10) -> dict:
    def ago(days: float | None):
        return None if days is None else AS_OF - timedelta(days=days)
    return {"src": f"customer:{cid}", "dst": identifier, "first_seen": ago(first_days),
            "last_seen": ago(last_days), "event_count": count, "n_login": count}


def make_frame(customers: list[dict], links: list[dict], degree: dict | None = None) -> GraphFrame:
    cust = pd.DataFrame(customers).set_index("~id")
    for col, typ in CUSTOMER_PROPERTY_TYPES.items():
        if col not in cust:
            cust[col] = None
        if typ == "Date":
            cust[col] = pd.to_datetime(cust[col], utc=True)
        elif typ in ("Int", "Double", "Bool"):
            cust[col] = pd.to_numeric(cust[col]).astype(float)
    cust = cust[list(CUSTOMER_PROPERTY_TYPES)]
    vertices = {"customer": cust}
    edges = {}
    types = {"customer": dict(CUSTOMER_PROPERTY_TYPES)}
    table = pd.DataFrame(links)
    for label, (edge_label, _) in IDENTIFIERS.items():
        types[edge_label] = dict(EDGE_COLUMNS)
        part = table[table["dst"].str.startswith(f"{label}:")] if len(table) else table
        ids = sorted(set(part["dst"])) if len(part) else []
        vertices[label] = pd.DataFrame(index=pd.Index(ids, name="~id"))
        types[label] = {}
        if len(part):
            e = part.reset_index(drop=True).copy()
            for col, typ in EDGE_COLUMNS.items():
                if col not in e:
                    e[col] = None
                e[col] = pd.to_datetime(e[col], utc=True) if typ == "Date" else pd.to_numeric(e[col]).astype(float)
            edges[("customer", edge_label, label)] = e[["src", "dst", *EDGE_COLUMNS]]
    return GraphFrame(as_of=AS_OF, vertices=vertices, edges=edges, types=types, degree=degree or {})


def with_stats(frame: GraphFrame) -> GraphFrame:
    """Identifier statistics as every writer stores them, computed from the frame's own edges."""
    status = frame.vertices["customer"]
    for (_, _, label), ef in frame.edges.items():
        linked = ef.join(status[["blocked", "n_block_reviews"]], on="src")
        g = linked.groupby("dst")
        stats = pd.DataFrame({"n_customers": g.size().astype(float), "first_seen": g["first_seen"].min(),
                              "last_seen": g["last_seen"].max(),
                              "n_blocked": g["blocked"].apply(lambda v: float((v == 1.0).sum())),
                              "n_contested": g["n_block_reviews"].apply(lambda v: float((v > 0).sum()))})
        frame.vertices[label] = stats.reindex(frame.vertices[label].index)
        frame.types[label] = dict(IDENTIFIER_PROPERTY_TYPES)
    return frame


def live_edge_terms(net):
    """Give an untrained net's edge terms random values: the residual gate starts at zero (the plain RGCN), and
    a test of the edge-aware path on an untrained net would otherwise not exercise the edges at all."""
    import torch

    from identigraph.model.nets import RelationalConv

    with torch.no_grad():
        for conv in net.modules():  # the net itself when it is one conv
            if isinstance(conv, RelationalConv) and conv.edge_features:
                conv.edge_weight.normal_(0.0, 0.3)
                conv.gate_bias.normal_(0.0, 0.3)
    return net
