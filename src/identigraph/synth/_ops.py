"""What the platform does about accounts: fraud detection (partial, late), false positives, contests
through customer care, unblocks. These are the noisy labels the later stages learn from."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from identigraph.synth._population import Population
from identigraph.synth._util import (
    ATO_RULES,
    DAY,
    HOUR,
    LEGIT,
    MULTI,
    MULTI_RULES,
    NONFRAUD_RULES,
    RING,
    RING_RULES,
    SOFT,
    lognormal,
    rng_for,
)
from identigraph.synth.params import SynthParams

# where no rule fired: a 0-d object array, because numpy's stubs refuse a bare None in np.where
_NO_RULE = np.array(None, dtype=object)


@dataclass
class Ops:
    """At most one block per account (arrays indexed by account), plus a flat list of care contacts."""

    block_t: np.ndarray  # -1: never blocked before as-of
    unblock_t: np.ndarray  # -1: still blocked at as-of (or never blocked)
    reason: np.ndarray
    source: np.ndarray
    rule: np.ndarray
    contact_cust: np.ndarray
    contact_t: np.ndarray
    contact_topic: np.ndarray
    household_fp: np.ndarray  # bool: blocked by the rule that hit the whole household


def _segment_min(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    if sizes.size == 0:
        return np.zeros(0, dtype=values.dtype)
    return np.minimum.reduceat(values, np.r_[0, np.cumsum(sizes)[:-1]])


def operations(p: SynthParams, pop: Population) -> Ops:
    rng = rng_for(p.seed, "operations")
    N, T1 = pop.n, p.t1
    delay_med = p.detection_delay_days * DAY
    block_t = np.full(N, -1, dtype=np.int64)
    unblock_t = np.full(N, -1, dtype=np.int64)
    reason = np.full(N, None, dtype=object)
    source = np.full(N, None, dtype=object)
    rule = np.full(N, None, dtype=object)

    def delay(k: int, median: float) -> np.ndarray:
        return np.maximum(2 * HOUR, lognormal(rng, median, 1.0, k)).astype(np.int64)

    def set_source(idx: np.ndarray, p_rule: float, rules: np.ndarray) -> None:
        is_rule = rng.random(idx.size) < p_rule
        source[idx] = np.where(is_rule, "rule", "manual")
        rule[idx] = np.where(is_rule, rules[rng.integers(0, rules.size, idx.size)], _NO_RULE)

    # rings: a ring is found as a whole (most members blocked together) or only piecemeal
    ring_idx = np.flatnonzero(pop.role == RING)
    g = pop.group[ring_idx]
    n_rings = pop.ring_sizes.size
    ring_found = rng.random(n_rings) < p.detection_prob
    ring_when = _segment_min(pop.created[ring_idx], pop.ring_sizes) + delay(n_rings, delay_med)
    with_ring = ring_found[g] & (rng.random(ring_idx.size) < 0.9)
    alone = ~ring_found[g] & (rng.random(ring_idx.size) < 0.1)
    t = np.where(
        with_ring,
        np.maximum(ring_when[g], pop.created[ring_idx] + HOUR) + rng.integers(0, DAY, ring_idx.size),
        pop.created[ring_idx] + delay(ring_idx.size, delay_med),
    )
    hit = ring_idx[(with_ring | alone) & (t < T1)]
    block_t[hit] = t[(with_ring | alone) & (t < T1)]
    reason[hit] = "fraud"
    set_source(hit, 0.7, RING_RULES)

    # multi-accounting: the cluster is found together; half the time it is filed as abuse, not fraud
    multi_idx = np.flatnonzero(pop.role == MULTI)
    g = pop.group[multi_idx]
    n_cl = pop.multi_sizes.size
    cl_found = rng.random(n_cl) < p.detection_prob
    cl_when = _segment_min(pop.created[multi_idx], pop.multi_sizes) + delay(n_cl, delay_med)
    cl_reason = np.where(rng.random(n_cl) < 0.5, "fraud", "abuse")
    t = np.maximum(cl_when[g], pop.created[multi_idx] + delay(multi_idx.size, DAY))
    t = t + rng.integers(0, 6 * HOUR, multi_idx.size)
    m = cl_found[g] & (rng.random(multi_idx.size) < 0.9) & (t < T1)
    hit = multi_idx[m]
    block_t[hit] = t[m]
    reason[hit] = cl_reason[g[m]]
    set_source(hit, 0.6, MULTI_RULES)

    # takeovers: found faster (victims complain), mostly by analysts
    v = pop.victims
    t = pop.fraud_start[v] + delay(v.size, 2 * DAY)
    m = (rng.random(v.size) < p.detection_prob) & (t < T1)
    block_t[v[m]] = t[m]
    reason[v[m]] = "fraud"
    set_source(v[m], 0.4, ATO_RULES)

    # soft rings: nothing ties the members together for the rules, so each is found (or not) alone
    rng_s = rng_for(p.seed, "hard_scenarios/operations")
    soft_idx = np.flatnonzero(pop.role == SOFT)
    t = pop.created[soft_idx] + np.maximum(2 * HOUR, lognormal(rng_s, 1.5 * delay_med, 1.0, soft_idx.size)).astype(np.int64)
    m = (rng_s.random(soft_idx.size) < p.soft_ring_detection_prob) & (t < T1)
    block_t[soft_idx[m]] = t[m]
    reason[soft_idx[m]] = "fraud"
    is_rule = rng_s.random(int(m.sum())) < 0.5
    source[soft_idx[m]] = np.where(is_rule, "rule", "manual")
    rule[soft_idx[m]] = np.where(is_rule, RING_RULES[rng_s.integers(0, RING_RULES.size, int(m.sum()))], _NO_RULE)

    contacts: list[tuple[np.ndarray, np.ndarray, str]] = []

    # some fraudsters contest too, so a block_review contact is no proof of innocence
    fraud_blocked = np.flatnonzero((block_t >= 0) & ((pop.role != LEGIT) | pop.ato))
    fc = fraud_blocked[rng.random(fraud_blocked.size) < 0.1]
    contacts.append((fc, block_t[fc] + np.maximum(600, lognormal(rng, DAY, 1.0, fc.size)).astype(np.int64), "block_review"))
    # ...and some talk their way out of it: wrong unblocks, after which they carry on
    if p.fraud_lift_rate > 0:
        lf = fraud_blocked[rng_s.random(fraud_blocked.size) < p.fraud_lift_rate]
        ct = block_t[lf] + np.maximum(600, lognormal(rng_s, DAY, 1.0, lf.size)).astype(np.int64)
        ut = ct + np.maximum(HOUR, lognormal(rng_s, 2 * DAY, 0.8, lf.size)).astype(np.int64)
        ok = ut < T1
        contacts.append((lf[ok], ct[ok], "block_review"))
        unblock_t[lf[ok]] = ut[ok]

    # legit accounts: false-positive fraud blocks and ordinary abuse/other blocks
    cand = np.flatnonzero((pop.role == LEGIT) & ~pop.ato & (pop.act_end - pop.created > DAY))
    draw = rng.random(cand.size)
    fp = cand[draw < p.false_positive_rate]
    nf = cand[(draw >= p.false_positive_rate) & (draw < p.false_positive_rate + p.nonfraud_block_rate)]
    for idx, is_fp in ((fp, True), (nf, False)):
        when = pop.created[idx] + DAY + (rng.random(idx.size) * (pop.act_end[idx] - pop.created[idx] - DAY)).astype(np.int64)
        block_t[idx] = when
        if is_fp:
            reason[idx] = "fraud"
            source[idx] = "rule"
            rule[idx] = RING_RULES[rng.integers(0, RING_RULES.size, idx.size)]
        else:
            reason[idx] = np.where(rng.random(idx.size) < 0.6, "abuse", "other")
            set_source(idx, 0.5, NONFRAUD_RULES)
        contest = rng.random(idx.size) < (p.contest_rate if is_fp else 0.3)
        ct = when + np.maximum(600, lognormal(rng, DAY, 0.8, idx.size)).astype(np.int64)
        contacts.append((idx[contest], ct[contest], "block_review"))
        lift_p = p.unblock_rate if is_fp else 0.4
        lift = contest & (rng.random(idx.size) < lift_p)
        ut = ct + np.maximum(HOUR, lognormal(rng, 2 * DAY, 0.8, idx.size)).astype(np.int64)
        ok = lift & (ct < T1) & (ut < T1)
        unblock_t[idx[ok]] = ut[ok]

    # a shared-device rule firing on a whole household: wrong blocks next to honest neighbours
    household_fp = np.zeros(N, dtype=bool)
    if p.household_fp_share > 0 and pop.hh_sizes.size:
        hh_members = np.flatnonzero((pop.role == LEGIT) & (pop.group >= 0))
        hit_hh = np.flatnonzero(rng_s.random(pop.hh_sizes.size) < p.household_fp_share)
        idx = hh_members[np.isin(pop.group[hh_members], hit_hh) & (block_t[hh_members] < 0) & ~pop.ato[hh_members]]
        g = pop.group[idx]
        uniq, inv = np.unique(g, return_inverse=True)
        lo = np.full(uniq.size, 0, dtype=np.int64)
        np.maximum.at(lo, inv, pop.created[idx] + DAY)
        hi = np.full(uniq.size, T1, dtype=np.int64)
        np.minimum.at(hi, inv, pop.act_end[idx])
        when = lo + (rng_s.random(uniq.size) * np.maximum(hi - lo, 0)).astype(np.int64)
        ok = (hi > lo)[inv]
        idx, when = idx[ok], (when[inv] + rng_s.integers(0, HOUR, idx.size))[ok]
        block_t[idx] = when
        household_fp[idx] = True
        reason[idx] = "fraud"
        source[idx] = "rule"
        rule[idx] = "shared_device"
        contest = rng_s.random(idx.size) < p.contest_rate
        ct = when + np.maximum(600, lognormal(rng_s, DAY, 0.8, idx.size)).astype(np.int64)
        contacts.append((idx[contest], ct[contest], "block_review"))
        ut = ct + np.maximum(HOUR, lognormal(rng_s, 2 * DAY, 0.8, idx.size)).astype(np.int64)
        ok = contest & (rng_s.random(idx.size) < p.unblock_rate) & (ct < T1) & (ut < T1)
        unblock_t[idx[ok]] = ut[ok]

    # ordinary care traffic, and takeover victims reporting the hijack
    years = (T1 - pop.created) / (365 * DAY)
    k = rng.poisson(p.care_contact_rate * years)
    cc = np.repeat(np.arange(N), k)
    ct = pop.created[cc] + (rng.random(cc.size) * (T1 - pop.created[cc])).astype(np.int64)
    topic = np.where(rng.random(cc.size) < 0.55, "payment", "other")
    rep = v[rng.random(v.size) < 0.6]
    rt = pop.fraud_start[rep] + np.maximum(1800, lognormal(rng, DAY, 1.0, rep.size)).astype(np.int64)

    cust = np.concatenate([c for c, _, _ in contacts] + [cc, rep])
    when = np.concatenate([t for _, t, _ in contacts] + [ct, rt])
    topics = np.concatenate([np.full(c.size, tp, dtype=object) for c, _, tp in contacts] + [topic.astype(object), np.full(rep.size, "other", dtype=object)])
    keep = when < T1
    return Ops(block_t=block_t, unblock_t=unblock_t, reason=reason, source=source, rule=rule,
               contact_cust=cust[keep], contact_t=when[keep], contact_topic=topics[keep], household_fp=household_fp)
