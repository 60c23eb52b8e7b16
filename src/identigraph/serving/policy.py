"""Score + graph facts → allow, review or block. Pure: no I/O, so every case is a unit test.

The business rule it encodes: automatic blocks are for fraud that costs little to get wrong. A customer
who has paid us a lot goes to a person instead, because a wrongly blocked high-value customer is the most
expensive mistake a fraud team makes. For the same reason nothing is ever blocked on missing or degraded
data — a graph that did not answer is not evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from identigraph.serving.config import PolicyConfig

RANK = {"allow": 0, "review": 1, "block": 2}


@dataclass(frozen=True)
class Facts:
    """What the policy may look at; built by the scoring service from the neighbourhood."""

    score: float | None
    lifetime_value: float | None
    # identifier label -> the most blocked *other* customers found on any one identifier of that label
    blocked_on_identifier: dict[str, int] = field(default_factory=dict)
    # why data is missing (graph down, model missing, customer unknown): each forces a degraded review
    missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """A decision with the reasons and rules behind it, kept apart from the public reasons a caller sees."""
    decision: str
    reasons: list[str]
    degraded: bool
    rules: list[str] = field(default_factory=list)  # hard rules that fired
    # the reasons as a scoring-only caller sees them: a fired rule's threshold, not the count behind it
    public_reasons: list[str] = field(default_factory=list)


def _value_decision(ltv: float | None, cfg: PolicyConfig) -> tuple[str, str]:
    boundary = cfg.lifetime_value_boundary
    if ltv is None:
        return "review", "lifetime value unknown: sent to manual review"
    if ltv < boundary:
        return "block", f"lifetime value {ltv:,.2f} < {boundary:,.2f}: blocked automatically"
    return "review", f"lifetime value {ltv:,.2f} >= {boundary:,.2f}: sent to manual review"


def decide(facts: Facts, cfg: PolicyConfig, threshold: float) -> Verdict:
    """Score, value and hard rules into allow, review or block; missing data never blocks automatically."""
    if facts.missing or facts.score is None:
        missing = list(facts.missing) or ["no score"]
        degraded = [*missing, "degraded data never blocks automatically: sent to manual review"]
        return Verdict("review", degraded, True, public_reasons=degraded)
    reasons: list[str] = []
    public: list[str] = []
    decision: str = "allow"
    if facts.score >= threshold:
        decision, why = _value_decision(facts.lifetime_value, cfg)
        reasons += [f"score {facts.score:.3f} >= threshold {threshold:.3f}", why]
    else:
        reasons.append(f"score {facts.score:.3f} < threshold {threshold:.3f}")
    public += reasons
    fired = []
    for rule in cfg.hard_rules:
        n = facts.blocked_on_identifier.get(rule.identifier, 0)
        if n < rule.min_blocked:
            continue
        fired.append(rule.name)
        wanted: str = rule.at_least
        why = ""
        if wanted == "block":
            wanted, why = _value_decision(facts.lifetime_value, cfg)
        reasons.append(f"rule {rule.name}: a {rule.identifier} shared with {n} blocked accounts "
                       f"(>= {rule.min_blocked})" + (f"; {why}" if why else ""))
        public.append(f"rule {rule.name}: a {rule.identifier} shared with at least {rule.min_blocked} blocked "
                      f"accounts" + (f"; {why}" if why else ""))
        if RANK[wanted] > RANK[decision]:
            decision = wanted
    return Verdict(decision, reasons, False, fired, public)
