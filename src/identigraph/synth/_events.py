"""What accounts do: identity events drawn, all at once, from the per-account profiles of ``_population``."""

from __future__ import annotations

import numpy as np

from identigraph.synth._population import K_CARDS, Population
from identigraph.synth._util import (
    ADD_PM,
    BOOKING,
    DAY,
    HOUR,
    LEGIT,
    LOGIN,
    MULTI,
    PROFILE,
    RESIDENTIAL_OCTETS,
    RING,
    SIGNUP,
    SOFT,
    Pool,
    diurnal,
    draw_unique,
    ipv4_sampler,
    ipv4_strings,
    lognormal,
    rng_for,
)
from identigraph.synth.params import SynthParams

COLS = ("cust", "t", "etype", "dev", "ip", "email", "phone", "card")


def _calibrate_counts(p: SynthParams, pop: Population, rng: np.random.Generator) -> np.ndarray:
    """Non-signup behaviour events per account; legit volume is scaled so the world hits
    ``events_per_customer`` on average."""
    n_norm = np.zeros(pop.n, dtype=np.int64)
    ring = pop.role == RING
    multi = pop.role == MULTI
    legit = pop.role == LEGIT
    n_norm[ring] = rng.poisson(12, int(ring.sum()))
    n_norm[multi] = rng.poisson(8, int(multi.sum()))
    soft = pop.role == SOFT
    if soft.any():
        n_norm[soft] = rng_for(p.seed, "hard_scenarios/events").poisson(12, int(soft.sum()))
    fixed = (
        pop.n
        + int(((pop.card >= 0) & (pop.card_t < pop.act_end[:, None])).sum())
        + int((pop.email2 >= 0).sum() + (pop.phone2 >= 0).sum())
        + int(n_norm.sum())
        + 9 * pop.victims.size
    )
    days = (pop.act_end - pop.created) / DAY
    exposure = pop.activity * days * legit
    budget = max(0.0, p.events_per_customer * pop.n - fixed)
    rate = budget / exposure.sum() if exposure.sum() > 0 else 0.0
    n_norm[legit] = rng.poisson(np.minimum(rate * exposure[legit], 20_000))
    return n_norm


def behaviour_events(p: SynthParams, pop: Population, pools: dict[str, Pool]) -> dict[str, np.ndarray]:
    rng = rng_for(p.seed, "events")
    N = pop.n
    n_norm = _calibrate_counts(p, pop, rng)

    # when and what ------------------------------------------------------------------------------
    c_norm = np.repeat(np.arange(N), n_norm)
    a, b = pop.created[c_norm], pop.act_end[c_norm]
    t_norm = a + (rng.random(c_norm.size) * (b - a)).astype(np.int64)
    t_norm = diurnal(rng, t_norm, a, b)
    u = rng.random(c_norm.size)
    tc = pop.type_cum[c_norm]
    e_norm = np.where(u < tc[:, 0], BOOKING, np.where(u < tc[:, 1], LOGIN, PROFILE))

    slot_ok = (pop.card >= 0) & (pop.card_t < pop.act_end[:, None])
    c_card, k_card = np.nonzero(slot_ok)
    t_card = pop.card_t[c_card, k_card]
    c_em = np.flatnonzero((pop.email2 >= 0) & (pop.t_email2 < pop.act_end))
    c_ph = np.flatnonzero((pop.phone2 >= 0) & (pop.t_phone2 < pop.act_end))

    cust = np.concatenate([np.arange(N), c_norm, c_card, c_em, c_ph])
    t = np.concatenate([pop.created, t_norm, t_card, pop.t_email2[c_em], pop.t_phone2[c_ph]])
    etype = np.concatenate([
        np.full(N, SIGNUP), e_norm, np.full(c_card.size, ADD_PM), np.full(c_em.size + c_ph.size, PROFILE)
    ]).astype(np.int8)
    n = cust.size

    # devices: the main phone (or its replacement), sometimes a second phone or the family tablet --
    main = np.where((pop.dev_rep[cust] >= 0) & (t >= pop.t_rep[cust]), pop.dev_rep[cust], pop.dev_main[cust])
    u = rng.random(n)
    alt_p = pop.alt_p[cust]
    dev = np.where((u < alt_p) & (pop.dev_alt[cust] >= 0), pop.dev_alt[cust], main)
    dev = np.where((u >= alt_p) & (u < alt_p + pop.tab_p[cust]) & (pop.dev_tab[cust] >= 0), pop.dev_tab[cust], dev)
    dev = np.where(etype == SIGNUP, main, dev)  # accounts are opened on the main phone
    web = (rng.random(n) < 0.02) & (etype != SIGNUP)  # web sessions without a fingerprint
    dev[web] = -1

    # IPs: home/proxy, carrier NAT, office, VPN exit, or a one-off network ---------------------------
    cat = (rng.random(n)[:, None] >= pop.ip_cum[cust]).sum(axis=1)
    cat = np.minimum(cat, 4)
    u = rng.random(n)
    ip = np.full(n, -1, dtype=np.int64)
    m = cat == 0
    ip[m] = pop.ip_base[cust[m], (u[m] * pop.n_base[cust[m]]).astype(np.int64)]
    m = cat == 1
    ip[m] = pop.ip_nat[cust[m], (u[m] * pop.n_nat[cust[m]]).astype(np.int64)]
    m = cat == 2
    ip[m] = pop.ip_office[cust[m]]
    m = cat == 3
    ip[m] = pop.vpn_pool[rng.integers(0, pop.vpn_pool.size, int(m.sum()))]
    m = cat == 4
    # one-off networks (cafe, hotel, roaming): new addresses, distinct from every pooled one
    fresh = draw_unique(ipv4_sampler(rng, RESIDENTIAL_OCTETS), int(m.sum()), pop.used_ip)
    ip[m] = pools["ip"].add(ipv4_strings(fresh), "one_off")
    ip[(rng.random(n) < 0.005) & (etype != SIGNUP)] = -1

    # email / phone: current values; carried on signup and profile updates, sometimes on logins -----
    cur_email = np.where(t >= pop.t_email2[cust], pop.email2[cust], pop.email[cust])
    cur_phone = np.where(t >= pop.t_phone2[cust], pop.phone2[cust], pop.phone[cust])
    full = (etype == SIGNUP) | (etype == PROFILE)
    login = etype == LOGIN
    email = np.where(full | (login & (rng.random(n) < pop.login_email_p[cust])), cur_email, -1)
    phone = np.where(full | (login & (rng.random(n) < 0.1)), cur_phone, -1)

    # cards: explicit on add_payment_method; bookings pay with a card already added, or cash --------
    card = np.full(n, -1, dtype=np.int64)
    off = N + c_norm.size
    card[off: off + c_card.size] = pop.card[c_card, k_card]
    bk = np.flatnonzero(etype == BOOKING)
    added = pop.card_t[cust[bk]] <= t[bk, None]
    cnt = added.sum(axis=1)
    pick = (rng.random(bk.size) * cnt).astype(np.int64)
    slot = np.argmax(np.cumsum(added, axis=1) > pick[:, None], axis=1)
    paid = (cnt > 0) & (rng.random(bk.size) >= pop.cash_p[cust[bk]])
    card[bk[paid]] = pop.card[cust[bk[paid]], slot[paid]]
    assert pop.card.shape[1] == K_CARDS

    out = dict(cust=cust, t=t, etype=etype, dev=dev, ip=ip, email=email, phone=phone, card=card)
    att = _takeover_events(p, pop, rng)
    return {k: np.concatenate([out[k], att[k]]) for k in COLS}


def _takeover_events(p: SynthParams, pop: Population, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The attacker's session: new device and proxy IP log in, swap email and phone, add a card, spend.

    A stealth takeover swaps nothing: its profile step is one more login with the victim's own email, so
    only the new device and card, linked years into the account's life from a fraud proxy, give it away.
    """
    v = pop.victims
    k = v.size
    T = pop.fraud_start[v]
    t_prof = T + rng.integers(5 * 60, 3600, k)
    t_card = t_prof + rng.integers(5 * 60, 2 * HOUR, k)
    life = np.clip(lognormal(rng, 2 * DAY, 0.8, k), 2 * HOUR, 20 * DAY).astype(np.int64)
    n_more = rng.poisson(5, k) + 1
    c_more = np.repeat(np.arange(k), n_more)
    lo = t_card[c_more]
    t_more = lo + 60 + (rng.random(c_more.size) * life[c_more]).astype(np.int64)
    e_more = np.where(rng.random(c_more.size) < 0.7, BOOKING, LOGIN)

    idx = np.concatenate([np.arange(k), np.arange(k), np.arange(k), c_more])
    t = np.concatenate([T, t_prof, t_card, t_more])
    etype = np.concatenate([np.full(k, LOGIN), np.full(k, PROFILE), np.full(k, ADD_PM), e_more]).astype(np.int8)
    n = idx.size
    ip = pop.att_ip[idx]
    ip = np.where(rng.random(n) < 0.25, pop.vpn_pool[rng.integers(0, max(pop.vpn_pool.size, 1), n)], ip)
    old_email = np.where(pop.t_email2[v] <= T, pop.email2[v], pop.email[v])
    email = np.where(t >= t_prof[idx], pop.att_email[idx], old_email[idx])
    email = np.where((etype == LOGIN) & (rng.random(n) < 0.5) & (t > T[idx]), -1, email)
    phone = np.where(etype == PROFILE, pop.att_phone[idx], -1)
    quiet = pop.stealth[idx]
    email = np.where(quiet & (email == pop.att_email[idx]), old_email[idx], email)
    # payments and bookings carry no email, for attackers as for everyone (one did: a giveaway no platform sends)
    email = np.where((etype == ADD_PM) | (etype == BOOKING), -1, email)
    phone = np.where(quiet, -1, phone)
    etype = np.where(quiet & (etype == PROFILE), LOGIN, etype).astype(np.int8)
    card = np.where((etype == ADD_PM) | (etype == BOOKING), pop.att_card[idx], -1)
    keep = t < p.t1
    return dict(
        cust=v[idx][keep], t=t[keep], etype=etype[keep], dev=pop.att_dev[idx][keep], ip=ip[keep],
        email=email[keep], phone=phone[keep], card=card[keep],
    )
