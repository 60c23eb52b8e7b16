"""What the case page shows about a customer: its identifiers read live from the graph, and a drawing.

One traversal reads the customer, each of its identifiers with the identifier's stored statistics
(customers, blocked, contested, first seen) and at most ``cap + 1`` of the identifier's other customers
with their block status — a carrier-NAT IP with 5,000 customers costs ``cap + 1`` reads, and the drawing
shows it as one count node ("+4,992 customers, 12 blocked") instead of 5,000 dots.

Identifiers are shown by their keyed reference (``serving.records.identifier_ref``, the same the case
carries, so the page and the case's evidence match) unless the reviewer's key also holds
``identity:read``; then the graph's id is shown (emails and phones are keyed hashes in the graph anyway).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any
from xml.sax.saxutils import escape

from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import T

from identigraph.graph.client import GraphClient
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.graph.records import as_utc
from identigraph.graph.schema import CUSTOMER, customer_id
from identigraph.serving.records import identifier_ref


def _iso(value: Any) -> str | None:
    return as_utc(value).isoformat() if isinstance(value, datetime) else None


def read(client: GraphClient, customer: str, cap: int, deadline: float | None = None) -> dict[str, Any] | None:
    """The customer and its identifiers, each with statistics and up to ``cap`` other customers; None if the
    customer is not in the graph."""
    seed = customer_id(customer)
    rows = client.submit(lambda g: g.V(seed).project("props", "ids").by(__.element_map()).by(
        __.out_e().as_("e").in_v().project("id", "label", "stats", "link", "others")
        .by(T.id).by(T.label).by(__.element_map())
        .by(__.select("e").value_map("first_seen", "last_seen", "event_count"))
        .by(__.in_().not_(__.has_id(seed)).limit(cap + 1)
            .project("id", "blocked", "contested")
            .by(T.id).by(__.coalesce(__.values("blocked"), __.constant(False)))
            .by(__.coalesce(__.values("n_block_reviews"), __.constant(0))).fold())
        .fold()), deadline=deadline)
    if not rows:
        return None
    props = {k: v for k, v in rows[0]["props"].items() if isinstance(k, str)}
    identifiers = []
    for row in rows[0]["ids"]:
        stats = {k: v for k, v in row["stats"].items() if isinstance(k, str)}
        link = {k: (v[0] if isinstance(v, list) and v else v) for k, v in row["link"].items()}
        others = [{"customer_id": o["id"][len(CUSTOMER) + 1:], "blocked": o["blocked"] is True,
                   "contested": (o["contested"] or 0) > 0} for o in row["others"]]
        total = int(stats.get("n_customers") or len(others) + 1)
        identifiers.append({
            "vertex_id": row["id"], "label": row["label"],
            "customers_total": total, "others_total": max(total - 1, len(others)),
            "blocked": int(stats.get("n_blocked") or 0) - (props.get("blocked") is True),
            "contested": int(stats.get("n_contested") or 0) - ((props.get("n_block_reviews") or 0) > 0),
            "first_seen": _iso(stats.get("first_seen")) or _iso(link.get("first_seen")),
            "linked_since": _iso(link.get("first_seen")), "events": link.get("event_count"),
            "others": others[:cap], "others_capped": total - 1 > cap,
        })
    identifiers.sort(key=lambda i: (-max(i["blocked"], 0), -i["customers_total"], i["label"]))
    for i in identifiers:
        i["blocked"], i["contested"] = max(i["blocked"], 0), max(i["contested"], 0)
    return {"customer_id": customer, "props": props, "identifiers": identifiers}


def shown(hood: dict[str, Any], pseudo: Pseudonymiser, in_clear: bool) -> dict[str, Any]:
    """The read as a reviewer may see it: every identifier with its reference, and its id only ``in_clear``."""
    for i in hood["identifiers"]:
        i["ref"] = identifier_ref(pseudo, i["vertex_id"])
        i["shown_as"] = i["vertex_id"] if in_clear else i["ref"]
    if not in_clear:
        for i in hood["identifiers"]:
            i.pop("vertex_id")
    return hood


# ---- the drawing ----------------------------------------------------------------------------------------

_COLOURS = {"device": "#3b82f6", "ip": "#8b5cf6", "email": "#0ea5e9", "phone": "#14b8a6", "card": "#f59e0b"}


def svg(hood: dict[str, Any], size: int = 640) -> str:
    """The neighbourhood as SVG: the customer in the middle, its identifiers on a ring, each identifier's
    other customers fanned out beyond it (blocked ones red), and what was not drawn as one count node."""
    c = size / 2
    ids = hood["identifiers"]
    n = max(len(ids), 1)
    r1, r2 = size * 0.24, size * 0.42
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="neighbourhood" viewBox="0 0 {size} {size}" '
             f'width="{size}" height="{size}" role="img" aria-label="neighbourhood of the customer">',
             '<style>text{font:11px sans-serif;fill:#111}.cnt{font-weight:bold}</style>']
    nodes: list[str] = []
    placed: dict[str, tuple[float, float]] = {}  # a customer on two of the identifiers is one node, two lines
    seed_blocked = hood["props"].get("blocked") is True
    for k, ident in enumerate(ids):
        a = 2 * math.pi * k / n - math.pi / 2
        x, y = c + r1 * math.cos(a), c + r1 * math.sin(a)
        parts.append(f'<line x1="{c:.1f}" y1="{c:.1f}" x2="{x:.1f}" y2="{y:.1f}" stroke="#999"/>')
        for o in ident["others"]:
            if o["customer_id"] in placed:
                ox, oy = placed[o["customer_id"]]
                parts.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{ox:.1f}" y2="{oy:.1f}" stroke="#ccc"/>')
        drawn = [o for o in ident["others"] if o["customer_id"] not in placed]
        rest = ident["others_total"] - len(ident["others"])
        slots = len(drawn) + (rest > 0)
        spread = min(math.pi / max(n, 2) * 1.6, 0.22 * max(slots - 1, 1))
        for j in range(slots):
            b = a + (spread * (j / (slots - 1) - 0.5) if slots > 1 else 0)
            ox, oy = c + r2 * math.cos(b), c + r2 * math.sin(b)
            parts.append(f'<line x1="{x:.1f}" y1="{y:.1f}" x2="{ox:.1f}" y2="{oy:.1f}" stroke="#ccc"/>')
            if j < len(drawn):
                o = drawn[j]
                placed[o["customer_id"]] = (ox, oy)
                fill = "#dc2626" if o["blocked"] else ("#f97316" if o["contested"] else "#9ca3af")
                cls = "customer blocked" if o["blocked"] else "customer"
                nodes.append(f'<circle class="{cls}" cx="{ox:.1f}" cy="{oy:.1f}" r="6" fill="{fill}">'
                             f'<title>customer {escape(o["customer_id"])}'
                             f'{" (blocked)" if o["blocked"] else ""}</title></circle>')
            else:
                blocked_rest = max(ident["blocked"] - sum(o["blocked"] for o in ident["others"]), 0)
                nodes.append(f'<g class="count-node"><circle cx="{ox:.1f}" cy="{oy:.1f}" r="15" fill="#fff" '
                             f'stroke="#555" stroke-dasharray="3 2"/><text class="cnt" x="{ox:.1f}" '
                             f'y="{oy + 4:.1f}" text-anchor="middle">+{rest:,}</text><title>{rest:,} more '
                             f'customers share this {ident["label"]}, {blocked_rest:,} of them blocked</title></g>')
        colour = _COLOURS.get(ident["label"], "#6b7280")
        nodes.append(f'<g class="identifier"><rect x="{x - 9:.1f}" y="{y - 9:.1f}" width="18" height="18" rx="3" '
                     f'fill="{colour}"/><text x="{x:.1f}" y="{y - 13:.1f}" text-anchor="middle">'
                     f'{escape(ident["label"])} · {ident["customers_total"]:,}</text>'
                     f'<title>{escape(ident["shown_as"])}: {ident["customers_total"]:,} customers, '
                     f'{ident["blocked"]:,} blocked</title></g>')
    seed_fill = "#dc2626" if seed_blocked else "#111827"
    nodes.append(f'<g class="seed"><circle cx="{c:.1f}" cy="{c:.1f}" r="11" fill="{seed_fill}"/>'
                 f'<text x="{c:.1f}" y="{c + 26:.1f}" text-anchor="middle">{escape(hood["customer_id"])}</text></g>')
    legend = ('<g transform="translate(8,14)"><text>■ identifier (kind · customers)   '
              '<tspan fill="#dc2626">●</tspan> blocked   <tspan fill="#f97316">●</tspan> contested   '
              '<tspan fill="#9ca3af">●</tspan> other customer   ◌ +N not drawn</text></g>')
    return "".join(parts + nodes + [legend, "</svg>"])
