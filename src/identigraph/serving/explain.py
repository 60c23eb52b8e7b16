"""Explanations a reviewer can verify: graph evidence first, the model's attributions second.

A reviewer cannot check "feature 17 contributed 0.3"; they can check "this card is used by 4 other
accounts, 3 of them blocked, all created within 2 days" by opening those accounts. So every decision
carries the evidence read off the neighbourhood it was scored on — each of the customer's identifiers
with its true number of customers, how many of the others are blocked or contested their block, and when
it was first seen — and then the model's own gradient×input impacts per connection and per feature, raw
and normalised to [-1, 1]. Both come from data already in hand: no extra graph request, nothing slow on
the hot path. (No GNNExplainer-style explainer is run at all; a review case could afford one, but the
evidence above is what reviewers act on.)

Evidence is identifier-level data: it goes to the review queue (with keyed references instead of ids,
``serving.records``) and to callers whose key may read identities, never to a scoring-only key, for which
it would be a way to ask whether an email or phone is registered.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from identigraph.graph.records import as_utc
from identigraph.serving.neighbourhood import Fetched


def _ts(value: Any) -> datetime | None:
    return as_utc(value) if isinstance(value, datetime) else None


def _span(days: float) -> str:
    if days < 1:
        return f"{max(days * 24, 0):.0f} hours"
    return f"{days:.0f} day" + ("s" if round(days) != 1 else "")


def evidence(fetched: Fetched) -> list[dict[str, Any]]:
    """One item per identifier of the seed: who else uses it, and how many of them are blocked or contested.

    Small identifiers are read off the customers fetched with them; a hub (its statistics only) off its
    stored counts, less the seed's own block or contest — "shares an IP with 4,867 others, 12 blocked" is
    exact without reading 4,867 customers.
    """
    graph = fetched.graph
    seed = graph.seed
    own = graph.vertices[seed][1]
    items: list[dict[str, Any]] = []
    for _, _, vid, link in (e for e in graph.edges if e[0] == seed):
        label, stats = graph.vertices[vid]
        others = fetched.others(vid)
        degree = int(stats.get("n_customers") or len(others) + 1)
        virtual = vid in fetched.virtual
        if vid in fetched.hubs:
            mine = 0 if virtual else 1  # the stored counts include the seed's own link, unless it is new
            blocked_n = int(stats.get("n_blocked") or 0) - mine * (own.get("blocked") is True)
            contested_n = int(stats.get("n_contested") or 0) - mine * ((own.get("n_block_reviews") or 0) > 0)
            blocked: list[dict[str, Any]] = []
        else:
            blocked = [o for o in others if o.get("blocked") is True]
            blocked_n = len(blocked)
            contested_n = sum((o.get("n_block_reviews") or 0) > 0 for o in others)
        created = [t for t in (_ts(o.get("created_at")) for o in (blocked or others)) if t is not None]
        first = _ts(stats.get("first_seen")) or _ts(link.get("first_seen"))
        items.append({
            "identifier_id": vid,
            "identifier_label": label,
            "customers_total": degree,
            "others_seen": len(others),
            "blocked": max(blocked_n, 0),
            "contested": max(contested_n, 0),
            "block_reasons": sorted({o["last_block_reason"] for o in blocked if o.get("last_block_reason")}),
            "created_within_days": round((max(created) - min(created)).total_seconds() / 86_400, 2)
            if len(created) > 1 else None,
            "first_seen": first.isoformat() if first else None,
            "new_in_request": virtual,
        })
    items.sort(key=lambda i: (-i["blocked"], -i["contested"], i["customers_total"] <= 1, i["customers_total"]))
    for item in items:
        item["text"] = describe(item)  # names the identifier: for callers allowed to see it (records re-describe)
    return items


def describe(item: dict[str, Any], shown_as: str | None = None) -> str:
    """The item as a sentence; ``shown_as`` names the identifier instead of its id (a record's reference)."""
    label, vid = item["identifier_label"], shown_as or item["identifier_id"]
    others = item["customers_total"] - 1
    if others <= 0:
        text = f"{label} {vid} is used by no other account"
    else:
        text = f"shares {label} {vid} with {others:,} other account" + ("s" if others != 1 else "")
        if item["others_seen"] < others:
            text += " (counts from its statistics)"
        if item["blocked"]:
            text += f", {item['blocked']} blocked"
            if item["created_within_days"] is not None:
                text += f" created within {_span(item['created_within_days'])}"
        if item["contested"]:
            text += f", {item['contested']} contested a block"
    if item["first_seen"]:
        text += f"; first seen {item['first_seen'][:10]}"
    if item["new_in_request"]:
        text += " (new in this request)"
    return text


def blocked_on_identifier(items: list[dict[str, Any]]) -> dict[str, int]:
    """Per identifier label, the most blocked others on any one identifier: what the hard rules read."""
    out: dict[str, int] = {}
    for item in items:
        out[item["identifier_label"]] = max(out.get(item["identifier_label"], 0), item["blocked"])
    return out


def model_attribution(raw: dict[str, Any], top_k: int) -> dict[str, Any]:
    """The model's explain() output, trimmed to ``top_k`` and made JSON-safe."""
    def clean(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for r in rows[:top_k]:
            out.append({k: (round(float(v), 6) if isinstance(v, (int, float)) and not isinstance(v, bool) else v)
                        for k, v in r.items()})
        return out

    return {"connections": clean(list(raw.get("connections", []))), "features": clean(list(raw.get("features", [])))}
