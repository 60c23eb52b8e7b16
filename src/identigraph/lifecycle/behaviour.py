"""Behaviour checks a candidate must pass before production: the regression scenarios of the model tests.

Metrics on a hold-out split say how well a model ranks the fraud it was labelled with; they do not say it
still does the obvious right things. These scenarios are those things, built on the snapshot the model is
judged against (tests/model/test_model_behaviour.py runs household and awkward_graphs from here on a freshly
trained model; its ring check uses an unseen world instead):

- ``fresh_ring``: ten brand-new accounts nobody has blocked, sharing two emulators and three stolen cards
  and coming through the proxy exit known fraudsters use most — the median score must reach the threshold;
- ``household``: three long-standing customers sharing a home IP and a tablet, each with their own phone,
  card, email and number — every score must stay below the threshold;
- ``awkward_graphs``: an isolated customer with no properties, one with blank values and an edge without
  properties, and a hub IP with 10,001 customers (true degree 40,000) — finite scores in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd

from identigraph.graph.schema import IDENTIFIERS
from identigraph.model.artifacts import LoadedModel
from identigraph.model.frame import GraphFrame

_EDGE_OF = {label: edge for label, (edge, _) in IDENTIFIERS.items()}


def extended(frame: GraphFrame, customers: list[dict], links: list[dict]) -> GraphFrame:
    """``frame`` plus new customers and links to identifiers (created when new), typed like the frame."""
    vertices = {k: v.copy() for k, v in frame.vertices.items()}
    edges = {k: v.copy() for k, v in frame.edges.items()}

    def typed(rows: pd.DataFrame, like: pd.DataFrame) -> pd.DataFrame:
        rows = rows.reindex(columns=like.columns)
        return rows.astype({c: like[c].dtype for c in rows.columns})

    vertices["customer"] = pd.concat([vertices["customer"],
                                      typed(pd.DataFrame(customers).set_index("~id"), vertices["customer"])])
    new_ids: dict[str, list[str]] = {}
    by_relation: dict[tuple[str, str, str], list[dict]] = {}
    for link in links:
        label = link["dst"].split(":", 1)[0]
        if link["dst"] not in vertices[label].index:
            new_ids.setdefault(label, []).append(link["dst"])
        by_relation.setdefault(("customer", _EDGE_OF[label], label), []).append(link)
    for label, ids in new_ids.items():
        vertices[label] = pd.concat([vertices[label], pd.DataFrame(index=pd.Index(list(dict.fromkeys(ids))))])
    for rel, rows in by_relation.items():
        edges[rel] = pd.concat([edges[rel], typed(pd.DataFrame(rows), edges[rel])], ignore_index=True)
    return GraphFrame(as_of=frame.as_of, vertices=vertices, edges=edges, types=frame.types, degree=frame.degree)


def customer(cid: str, frame: GraphFrame, days_old: float, ltv: float) -> dict:
    """A synthetic customer vertex row, aged relative to the frame's as-of."""
    return {"~id": f"customer:{cid}", "created_at": pd.Timestamp(frame.as_of) - timedelta(days=days_old),
            "country": "AE", "lifetime_value": ltv, "n_blocks": 0.0, "blocked": 0.0, "n_block_reviews": 0.0}


def link(cid: str, dst: str, frame: GraphFrame, first_days: float, last_days: float, n: int) -> dict:
    """A synthetic customer→identifier edge row, dated relative to the frame's as-of."""
    at = pd.Timestamp(frame.as_of)
    return {"src": f"customer:{cid}", "dst": dst, "first_seen": at - timedelta(days=first_days),
            "last_seen": at - timedelta(days=last_days), "event_count": float(n), "n_login": float(n),
            "n_signup": 1.0, "n_add_payment_method": 0.0, "n_profile_update": 0.0, "n_booking": 0.0}


def busiest_fraud_ip(frame: GraphFrame) -> str:
    """The IP with the most blocked customers: the proxy exit rings keep reusing in the synthetic world."""
    e = frame.edges[("customer", "used_ip", "ip")]
    blocked = frame.vertices["customer"]["blocked"] == 1.0
    on_blocked = e[e["src"].map(blocked).fillna(False).astype(bool)]
    return str(on_blocked["dst"].value_counts().index[0])


def fresh_ring(frame: GraphFrame) -> tuple[GraphFrame, list[str]]:
    """A ring of new accounts on shared emulators, stolen cards and a known proxy: a model must score it high."""
    proxy = busiest_fraud_ip(frame)
    ring = [f"fresh_ring_{i}" for i in range(10)]
    links = []
    for i, c in enumerate(ring):
        links += [link(c, f"device:fresh_emulator_{i % 2}", frame, 3, 0.5, 6),
                  link(c, f"card:fresh_stolen_{i % 3}", frame, 2.9, 1, 2),
                  link(c, f"card:fresh_stolen_{(i + 1) % 3}", frame, 2.8, 1, 2),
                  link(c, proxy, frame, 3, 0.5, 6), link(c, f"email:fresh{i}", frame, 3, 1, 3)]
    customers = [customer(c, frame, days_old=3 + 0.1 * i, ltv=4.0) for i, c in enumerate(ring)]
    return extended(frame, customers, links), [f"customer:{c}" for c in ring]


def household(frame: GraphFrame) -> tuple[GraphFrame, list[str]]:
    """A long-standing household sharing an IP and a tablet: a model must not score it as a ring."""
    home = [f"home_{i}" for i in range(3)]
    links = []
    for i, c in enumerate(home):
        links += [link(c, "ip:192.0.2.44", frame, 580, 1, 120), link(c, "device:family_tablet", frame, 400, 3, 25),
                  link(c, f"device:own_phone_{i}", frame, 590, 1, 200), link(c, f"card:own_card_{i}", frame, 585, 2, 60),
                  link(c, f"email:own_{i}", frame, 600, 2, 30), link(c, f"phone:own_{i}", frame, 600, 2, 30)]
    customers = [customer(c, frame, days_old=600 + 40 * i, ltv=350.0) for i, c in enumerate(home)]
    return extended(frame, customers, links), [f"customer:{c}" for c in home]


def awkward_graphs(frame: GraphFrame, hub_size: int = 10_001) -> tuple[GraphFrame, list[str]]:
    """Shapes that break naive encoders (a lonely customer, one with blank properties, a huge hub): scoring must
    not fail."""
    members = [f"hub_{i}" for i in range(hub_size)]
    customers = [customer(c, frame, days_old=100 + i % 300, ltv=50.0) for i, c in enumerate(members)]
    customers += [{"~id": "customer:lonely"}, {"~id": "customer:blank", "country": None, "created_at": pd.NaT}]
    links = [link(c, "ip:198.51.100.1", frame, 90, 1, 5) for c in members]
    links.append({"src": "customer:blank", "dst": "device:blank_device"})  # an edge without properties
    g = extended(frame, customers, links)
    g.degree = {**g.degree, "ip:198.51.100.1": 40_000}  # the API passes true degrees of capped hubs
    return g, ["customer:lonely", "customer:blank", "customer:hub_0", f"customer:hub_{hub_size - 2}"]


def _finite(scores: np.ndarray, _threshold: float) -> bool:
    return bool(np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all())


# name → (scenario, expectation on (scores, threshold), what the expectation says)
SCENARIOS: dict[str, tuple[Callable[[GraphFrame], tuple[GraphFrame, list[str]]],
                           Callable[[np.ndarray, float], bool], str]] = {
    "fresh_ring": (fresh_ring, lambda s, t: bool(np.isfinite(s).all() and np.median(s) >= t),
                   "median score of a fresh 10-account ring ≥ threshold"),
    "household": (household, lambda s, t: bool((s < t).all()),
                  "every member of a legitimate household < threshold"),
    "awkward_graphs": (awkward_graphs, _finite, "finite scores in [0, 1] on isolated, blank and hub customers"),
}


def run_behaviour(model: LoadedModel, frame: GraphFrame, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Each scenario's scores against the model's own threshold: ``{check, ok, detail, scores}``."""
    out = []
    for name in names or list(SCENARIOS):
        build, expect, says = SCENARIOS[name]
        g, ids = build(frame)
        scores = model.score(g, ids)
        ok = expect(scores, model.threshold)
        out.append({"check": f"behaviour:{name}", "ok": ok,
                    "detail": f"{name}: {says} — {'passed' if ok else 'FAILED'} (scores median "
                              f"{float(np.nanmedian(scores)):.3f}, max {float(np.nanmax(scores)):.3f}, "
                              f"threshold {model.threshold:.3f})",
                    "scores": [round(float(x), 4) for x in scores]})
    return out
