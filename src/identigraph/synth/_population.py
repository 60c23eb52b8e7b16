"""Who exists: accounts, their roles (legit / ring / multi-account / ATO victim) and the identifiers
each one owns or shares. Events are drawn from this in ``_events``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from identigraph.synth._util import (
    CARRIER_OCTETS,
    COUNTRIES,
    COUNTRY_W,
    DATACENTER_OCTETS,
    DAY,
    DISPOSABLE,
    DOMAIN_W,
    DOMAINS,
    FIRST,
    HOUR,
    LAST,
    LEGIT,
    MULTI,
    PHONE_FMT,
    RESIDENTIAL_OCTETS,
    RING,
    SOFT,
    Pool,
    draw_unique,
    hex_strings,
    ipv4_sampler,
    ipv4_strings,
    ipv6_strings,
    lognormal,
    random_tokens,
    recency_times,
    rng_for,
)
from identigraph.synth.params import SynthParams

K_CARDS = 6  # card slots per account
NEVER = np.iinfo(np.int64).max // 4


@dataclass
class Population:
    """Column arrays, one row per account (generation order, not id order): everything ``_events`` and
    ``_ops`` draw from, declared so that a misspelt column is a type error, not a runtime AttributeError.

    Identifier columns hold pool codes (-1 = none); times are epoch seconds (``NEVER`` = not in this world).
    """

    n: int
    role: np.ndarray            # LEGIT / RING / MULTI / SOFT
    group: np.ndarray           # ring / cluster / household index, by role (-1: none)
    country: np.ndarray         # index into COUNTRIES
    created: np.ndarray
    act_end: np.ndarray         # end of own activity (churn, ring burn-out, takeover)
    activity: np.ndarray        # relative event rate of legit accounts
    fraud_start: np.ndarray     # -1: never fraudulent
    ato: np.ndarray             # bool: account-takeover victim
    email: np.ndarray
    email2: np.ndarray
    t_email2: np.ndarray
    phone: np.ndarray
    phone2: np.ndarray
    t_phone2: np.ndarray
    dev_main: np.ndarray
    dev_alt: np.ndarray
    alt_p: np.ndarray
    dev_tab: np.ndarray
    tab_p: np.ndarray
    dev_rep: np.ndarray
    t_rep: np.ndarray
    ip_base: np.ndarray         # [N, 3] home / proxy addresses
    n_base: np.ndarray
    ip_nat: np.ndarray          # [N, 4] carrier-NAT addresses
    n_nat: np.ndarray
    ip_office: np.ndarray
    ip_cum: np.ndarray          # [N, 5] cumulative choice weights: base, NAT, office, VPN, other
    vpn_pool: np.ndarray
    card: np.ndarray            # [N, K_CARDS]
    card_t: np.ndarray          # [N, K_CARDS] when each card is added
    cash_p: np.ndarray
    type_cum: np.ndarray        # [N, 2] cumulative event-type weights
    login_email_p: np.ndarray
    ring_sizes: np.ndarray
    soft_sizes: np.ndarray
    multi_sizes: np.ndarray
    hh_sizes: np.ndarray
    home: np.ndarray
    # the attacker kit, one row per takeover victim (victims in account order)
    victims: np.ndarray
    stealth: np.ndarray
    att_dev: np.ndarray
    att_ip: np.ndarray
    att_email: np.ndarray
    att_phone: np.ndarray
    att_card: np.ndarray
    resold: np.ndarray          # buyers of a churned customer's phone
    used_ip: set[Any] = field(default_factory=set)  # every address drawn, so later ones stay new


def _group_sizes(rng: np.random.Generator, target: int, lo: int, hi: int, draw) -> list[int]:
    """Sizes in [lo, hi] summing to at most ``target``; a remainder below ``lo`` stays unassigned."""
    sizes: list[int] = []
    rem = target
    while rem >= lo:
        s = int(min(max(draw(), lo), hi, rem))
        if 0 < rem - s < lo and rem <= hi:
            s = rem
        sizes.append(s)
        rem -= s
    return sizes


def _phones(rng: np.random.Generator, countries: np.ndarray, used: dict) -> list[str]:
    out = np.empty(countries.size, dtype=object)
    for cc in np.unique(countries).tolist():
        idx = np.flatnonzero(countries == cc)
        code, prefix, digits = PHONE_FMT[cc]
        lo = 10 ** (digits - 1) if prefix == "" else 0  # US numbers must not start with 0

        def numbers(k: int, lo: int = lo, digits: int = digits) -> np.ndarray:
            return rng.integers(lo, 10**digits, size=k)

        nums = draw_unique(numbers, idx.size, used.setdefault(cc, set()))
        out[idx] = [f"+{code}{prefix}{x:0{digits}d}" for x in nums.tolist()]
    return list(out)


def _emails(locals_: list[str], domains: np.ndarray, used: set) -> list[str]:
    """Raw addresses; a clash gets a numeric suffix, because two people never share a mailbox by chance."""
    out = []
    for loc, dom in zip(locals_, domains.tolist(), strict=True):
        e = f"{loc}@{dom}"
        k = 2
        while e in used:
            e = f"{loc}{k}@{dom}"
            k += 1
        used.add(e)
        out.append(e)
    return out


def _legit_locals(rng: np.random.Generator, first: np.ndarray, last: np.ndarray) -> list[str]:
    pat = rng.choice(6, size=first.size, p=[0.35, 0.2, 0.1, 0.1, 0.15, 0.1])
    n2 = rng.integers(1, 100, size=first.size).tolist()
    n4 = rng.integers(1, 10_000, size=first.size).tolist()
    out = []
    for f, la, p, a, b in zip(first.tolist(), last.tolist(), pat.tolist(), n2, n4, strict=True):
        if p == 0:
            out.append(f"{f}.{la}{a}")
        elif p == 1:
            out.append(f"{f}{la}{b}")
        elif p == 2:
            out.append(f"{f}_{la}")
        elif p == 3:
            out.append(f"{f}.{la}")
        elif p == 4:
            out.append(f"{f[0]}{la}{a}")
        else:
            out.append(f"{f}{b}")
    return out


def _ipv4_block(rng: np.random.Generator, k: int, used: set) -> np.ndarray:
    """``k`` new addresses inside one random residential /24."""
    while True:
        prefix = (int(rng.choice(RESIDENTIAL_OCTETS)) << 24) | (int(rng.integers(0, 1 << 16)) << 8)
        last = rng.choice(np.arange(1, 255), size=k, replace=False)
        block = prefix | last.astype(np.int64)
        if not any(int(a) in used for a in block):
            used.update(int(a) for a in block)
            return block


class _Draws:
    """The random streams, the pools and the already-drawn values shared by every step: steps run in a
    fixed order on these, so the world of a seed never changes."""

    def __init__(self, p: SynthParams) -> None:
        self.rng = rng_for(p.seed, "population")
        # the hard-world scenarios draw from their own stream: with them off, the classic world is unchanged
        self.rng_s = rng_for(p.seed, "hard_scenarios")
        self.pools = {k: Pool(k) for k in ("device", "ip", "email", "phone", "card")}
        self.used_ip: set[Any] = set()
        self.used_dev: set[Any] = set()
        self.used_card: set[Any] = set()
        self.used_phone: dict[str, set[Any]] = {}
        self.used_email: set[str] = set()

    def devices(self, k: int, role: str, rng: np.random.Generator | None = None) -> np.ndarray:
        r = self.rng if rng is None else rng
        v = draw_unique(lambda m: r.integers(-(2**63), 2**63 - 1, size=m, dtype=np.int64), k, self.used_dev)
        return self.pools["device"].add(hex_strings(v), role)

    def cards(self, k: int, role: str, rng: np.random.Generator | None = None) -> np.ndarray:
        r = self.rng if rng is None else rng
        v = draw_unique(lambda m: r.integers(-(2**63), 2**63 - 1, size=m, dtype=np.int64), k, self.used_card)
        return self.pools["card"].add(hex_strings(v, "card_"), role)

    def ipv4(self, k: int, octets: np.ndarray, role: str) -> np.ndarray:
        return self.pools["ip"].add(ipv4_strings(draw_unique(ipv4_sampler(self.rng, octets), k, self.used_ip)), role)

    def emails(self, locals_: list[str], domains: np.ndarray, role: str) -> np.ndarray:
        return self.pools["email"].add(_emails(locals_, domains, self.used_email), role)

    def phones(self, rng: np.random.Generator, countries: np.ndarray, role: str) -> np.ndarray:
        return self.pools["phone"].add(_phones(rng, countries, self.used_phone), role)


@dataclass
class _Roles:
    """Who is legit, in a ring, a multi-accounter or in a soft ring; bad actors first, in group order."""

    role: np.ndarray
    group: np.ndarray  # filled in further for households by _homes
    ring_sizes: list[int]
    multi_sizes: list[int]
    soft_sizes: list[int]
    ring_idx: np.ndarray
    multi_idx: np.ndarray
    soft_idx: np.ndarray
    legit_idx: np.ndarray

    @property
    def n_ring(self) -> int:
        return self.ring_idx.size

    @property
    def n_multi(self) -> int:
        return self.multi_idx.size

    @property
    def n_soft(self) -> int:
        return self.soft_idx.size

    @property
    def n_legit(self) -> int:
        return self.legit_idx.size


def _roles(p: SynthParams, d: _Draws) -> _Roles:
    N, rng, rng_s = p.customers, d.rng, d.rng_s
    ring_sizes = _group_sizes(
        rng, round(p.ring_share * N), p.ring_size_min, p.ring_size_max,
        lambda: p.ring_size_min + int(lognormal(rng, 5.0, 0.8, 1)[0]),
    )
    multi_sizes = _group_sizes(rng, round(p.multi_account_share * N), 3, 8, lambda: int(rng.integers(3, 9)))
    soft_sizes = _group_sizes(rng_s, round(p.soft_ring_share * N), 4, 16,
                              lambda: 4 + int(lognormal(rng_s, 3.0, 0.7, 1)[0]))
    n_ring, n_multi, n_soft = sum(ring_sizes), sum(multi_sizes), sum(soft_sizes)
    n_fraud = n_ring + n_multi
    n_bad = n_fraud + n_soft
    role = np.full(N, LEGIT, dtype=np.int8)
    role[:n_ring] = RING
    role[n_ring:n_fraud] = MULTI
    role[n_fraud:n_bad] = SOFT
    group = np.full(N, -1, dtype=np.int64)  # ring index / cluster index / household index, by role
    group[:n_ring] = np.repeat(np.arange(len(ring_sizes)), ring_sizes)
    group[n_ring:n_fraud] = np.repeat(np.arange(len(multi_sizes)), multi_sizes)
    group[n_fraud:n_bad] = np.repeat(np.arange(len(soft_sizes)), soft_sizes)
    return _Roles(role, group, ring_sizes, multi_sizes, soft_sizes, ring_idx=np.arange(n_ring),
                  multi_idx=np.arange(n_ring, n_fraud), soft_idx=np.arange(n_fraud, n_bad),
                  legit_idx=np.arange(n_bad, N))


@dataclass
class _Homes:
    """Households and the home line of every account that has one, and each account's country."""

    hh_sizes: list[int]
    in_hh: np.ndarray     # household members, household by household
    singles: np.ndarray   # legit accounts living alone
    home: np.ndarray      # home index per account (-1: none)
    home_ip: np.ndarray   # per home
    country: np.ndarray

    @property
    def n_hh(self) -> int:
        return len(self.hh_sizes)


def _homes(p: SynthParams, d: _Draws, r: _Roles) -> _Homes:
    N, rng, rng_s, group = p.customers, d.rng, d.rng_s, r.group
    hh_sizes = _group_sizes(
        rng, round(p.household_share * r.n_legit), 2, 5,
        lambda: int(rng.choice([2, 3, 4, 5], p=[0.45, 0.3, 0.15, 0.1])),
    )
    n_hh = len(hh_sizes)
    perm = rng.permutation(r.legit_idx)
    in_hh = perm[: sum(hh_sizes)]
    group[in_hh] = np.repeat(np.arange(n_hh), hh_sizes)
    singles = perm[sum(hh_sizes):]
    n_clusters = len(r.multi_sizes)
    home = np.full(N, -1, dtype=np.int64)
    home[in_hh] = group[in_hh]
    home[singles] = n_hh + np.arange(singles.size)
    home[r.multi_idx] = n_hh + singles.size + group[r.multi_idx]
    n_homes = n_hh + singles.size + n_clusters
    home_country = rng.choice(COUNTRIES.size, size=n_homes, p=COUNTRY_W)
    home_v6 = rng.random(n_homes) < p.ipv6_share
    home_ip = np.empty(n_homes, dtype=np.int64)
    home_ip[~home_v6] = d.ipv4(int((~home_v6).sum()), RESIDENTIAL_OCTETS, "home")
    home_ip[home_v6] = d.pools["ip"].add(ipv6_strings(rng, int(home_v6.sum()), d.used_ip), "home")

    country = np.empty(N, dtype=np.int64)
    has_home = home >= 0
    country[has_home] = home_country[home[has_home]]
    ring_country = rng.choice(COUNTRIES.size, size=max(len(r.ring_sizes), 1), p=COUNTRY_W)
    country[r.ring_idx] = ring_country[group[r.ring_idx]]
    soft_country = rng_s.choice(COUNTRIES.size, size=max(len(r.soft_sizes), 1), p=COUNTRY_W)
    country[r.soft_idx] = soft_country[group[r.soft_idx]]
    return _Homes(hh_sizes, in_hh, singles, home, home_ip, country)


@dataclass
class _Windows:
    """When each account is created and stops acting on its own; takeovers shorten ``act_end`` later."""

    created: np.ndarray
    act_end: np.ndarray
    activity: np.ndarray
    first_of_cluster: np.ndarray  # offset of each multi-account cluster's first member within multi_idx


def _windows(p: SynthParams, d: _Draws, r: _Roles) -> _Windows:
    N, T0, T1, rng, rng_s, group = p.customers, p.t0, p.t1, d.rng, d.rng_s, r.group
    ring_idx, multi_idx, soft_idx, legit_idx = r.ring_idx, r.multi_idx, r.soft_idx, r.legit_idx
    nL, n_ring, n_multi, n_soft, n_clusters = r.n_legit, r.n_ring, r.n_multi, r.n_soft, len(r.multi_sizes)
    created = np.empty(N, dtype=np.int64)
    created[legit_idx] = recency_times(rng, nL, T0, T1, p.growth)
    ring_start = recency_times(rng, len(r.ring_sizes), T0, T1 - HOUR, p.growth)
    burst = np.clip(lognormal(rng, 12 * HOUR, 1.0, len(r.ring_sizes)), HOUR, 5 * DAY)
    created[ring_idx] = ring_start[group[ring_idx]] + (rng.random(n_ring) * burst[group[ring_idx]]).astype(np.int64)
    multi_start = recency_times(rng, n_clusters, T0, T1 - HOUR, p.growth)
    multi_span = rng.uniform(7, 56, size=n_clusters) * DAY
    u = rng.random(n_multi)
    first_of_cluster = (np.r_[0, np.cumsum(r.multi_sizes)[:-1]].astype(np.int64) if n_clusters
                        else np.zeros(0, np.int64))
    u[first_of_cluster] = 0.0
    created[multi_idx] = multi_start[group[multi_idx]] + (u * multi_span[group[multi_idx]]).astype(np.int64)
    if n_soft:  # a looser burst than a ring's: days, not hours; after drift start only, when drifting
        lo = max(T0, T1 - int(p.drift_days * DAY)) if p.drift_days > 0 else T0
        soft_start = recency_times(rng_s, len(r.soft_sizes), lo, T1 - HOUR, p.growth)
        soft_burst = np.clip(lognormal(rng_s, 2 * DAY, 0.8, len(r.soft_sizes)), 6 * HOUR, 10 * DAY)
        g = group[soft_idx]
        created[soft_idx] = soft_start[g] + (rng_s.random(n_soft) * soft_burst[g]).astype(np.int64)
    created = np.minimum(created, T1 - 60)

    act_end = np.full(N, T1, dtype=np.int64)
    churn = rng.random(nL) < p.churn_share
    span = T1 - created[legit_idx]
    act_end[legit_idx] = np.where(churn, created[legit_idx] + 1 + (rng.random(nL) * span).astype(np.int64), T1)
    act_end[ring_idx] = created[ring_idx] + np.clip(lognormal(rng, 4 * DAY, 0.9, n_ring), 2 * HOUR, 60 * DAY).astype(np.int64)
    act_end[multi_idx] = created[multi_idx] + np.clip(lognormal(rng, 21 * DAY, 0.7, n_multi), DAY, 120 * DAY).astype(np.int64)
    act_end[soft_idx] = created[soft_idx] + np.clip(lognormal(rng_s, 6 * DAY, 0.9, n_soft), DAY, 60 * DAY).astype(np.int64)
    act_end = np.minimum(act_end, T1)

    activity = np.zeros(N)
    activity[legit_idx] = lognormal(rng, 1.0, 0.9, nL)
    return _Windows(created, act_end, activity, first_of_cluster)


@dataclass
class _Takeovers:
    """Account-takeover victims (old, valuable legit accounts) and when fraud starts on each account."""

    fraud_start: np.ndarray
    ato: np.ndarray

    @property
    def n_ato(self) -> int:
        return int(self.ato.sum())


def _takeovers(p: SynthParams, d: _Draws, r: _Roles, w: _Windows) -> _Takeovers:
    """Shortens ``w.act_end`` of the victims: their own activity stops when the attacker takes over."""
    N, T1, rng, created, legit_idx = p.customers, p.t1, d.rng, w.created, r.legit_idx
    n_bad = r.n_ring + r.n_multi + r.n_soft
    fraud_start = np.full(N, -1, dtype=np.int64)
    fraud_start[:n_bad] = created[:n_bad]
    eligible = legit_idx[(T1 - created[legit_idx]) >= 120 * DAY]
    n_ato = min(round(p.ato_share * N), eligible.size)
    ato = np.zeros(N, dtype=bool)
    if n_ato:
        weight = w.activity[eligible] * (T1 - created[eligible])
        victims = np.sort(rng.choice(eligible, size=n_ato, replace=False, p=weight / weight.sum()))
        ato[victims] = True
        lo = created[victims] + 90 * DAY
        fraud_start[victims] = lo + (rng.random(n_ato) * (T1 - HOUR - lo)).astype(np.int64)
        w.act_end[victims] = np.minimum(w.act_end[victims], fraud_start[victims])
    return _Takeovers(fraud_start, ato)


@dataclass
class _Contacts:
    """Each account's email and phone, and the second one some legit customers switch to."""

    email: np.ndarray
    email2: np.ndarray
    t_email2: np.ndarray
    phone: np.ndarray
    phone2: np.ndarray
    t_phone2: np.ndarray


def _contacts(p: SynthParams, d: _Draws, r: _Roles, h: _Homes, w: _Windows) -> _Contacts:
    N, rng, rng_s, group = p.customers, d.rng, d.rng_s, r.group
    ring_idx, multi_idx, soft_idx, legit_idx = r.ring_idx, r.multi_idx, r.soft_idx, r.legit_idx
    nL, n_ring, n_multi, n_soft = r.n_legit, r.n_ring, r.n_multi, r.n_soft
    created, act_end, in_hh = w.created, w.act_end, h.in_hh
    first = np.array(FIRST, dtype=object)[rng.integers(0, len(FIRST), N)]
    last = np.array(LAST, dtype=object)[rng.integers(0, len(LAST), N)]
    hh_last = np.array(LAST, dtype=object)[rng.integers(0, len(LAST), max(h.n_hh, 1))]
    share_last = in_hh[rng.random(in_hh.size) < 0.7]
    last[share_last] = hh_last[group[share_last]]
    # a multi-accounter is one person: same name behind every account
    if n_multi:
        person = multi_idx[0] + w.first_of_cluster[group[multi_idx]]
        first[multi_idx] = first[person]
        last[multi_idx] = last[person]
    email = np.empty(N, dtype=np.int64)
    dom = DOMAINS[rng.choice(DOMAINS.size, size=nL, p=DOMAIN_W)]
    email[legit_idx] = d.emails(_legit_locals(rng, first[legit_idx], last[legit_idx]), dom, "personal")
    tok = random_tokens(rng, n_ring, 9)
    email[ring_idx] = d.emails(list(tok), DISPOSABLE[rng.integers(0, DISPOSABLE.size, n_ring)], "disposable")
    # promo abusers vary one identity: numbers, plus-addressing, dots, other providers
    m_locals = []
    for f, la, v, a in zip(first[multi_idx].tolist(), last[multi_idx].tolist(),
                           rng.integers(0, 4, n_multi).tolist(), rng.integers(1, 1000, n_multi).tolist(), strict=True):
        m_locals.append([f"{f}.{la}{a}", f"{f}{la}+promo{a}", f"{f[0]}.{la}.{a}", f"{la}.{f}{a}"][v])
    email[multi_idx] = d.emails(m_locals, DOMAINS[rng.choice(DOMAINS.size, size=n_multi, p=DOMAIN_W)], "variant")

    phone = np.empty(N, dtype=np.int64)
    ccodes = COUNTRIES[h.country]
    phone[legit_idx] = d.phones(rng, ccodes[legit_idx], "personal")
    virt = np.where(rng.random(n_ring) < 0.6, np.where(rng.random(n_ring) < 0.5, "US", "GB"), ccodes[ring_idx])
    phone[ring_idx] = d.phones(rng, virt.astype(object), "virtual")
    # some rings recycle a handful of virtual numbers across accounts
    for ring in np.flatnonzero(rng.random(len(r.ring_sizes)) < 0.3).tolist():
        members = ring_idx[group[ring_idx] == ring]
        keep = members[: max(1, members.size // 4)]
        phone[members] = phone[rng.choice(keep, size=members.size)]
    mvirt = np.where(rng.random(n_multi) < 0.4, "US", COUNTRIES[h.country[multi_idx]])
    phone[multi_idx] = d.phones(rng, mvirt.astype(object), "secondary_sim")
    if n_soft:  # soft rings: every member its own throwaway address and virtual number
        email[soft_idx] = d.emails(list(random_tokens(rng_s, n_soft, 9)),
                                   DISPOSABLE[rng_s.integers(0, DISPOSABLE.size, n_soft)], "disposable")
        svirt = np.where(rng_s.random(n_soft) < 0.6, np.where(rng_s.random(n_soft) < 0.5, "US", "GB"),
                         ccodes[soft_idx])
        phone[soft_idx] = d.phones(rng_s, svirt.astype(object), "virtual")

    email2 = np.full(N, -1, dtype=np.int64)
    t_email2 = np.full(N, NEVER, dtype=np.int64)
    ch = legit_idx[rng.random(nL) < 0.03]
    ch = ch[act_end[ch] - created[ch] > DAY]
    loc2 = _legit_locals(rng, first[ch], last[ch])
    email2[ch] = d.emails(loc2, DOMAINS[rng.choice(DOMAINS.size, size=ch.size, p=DOMAIN_W)], "personal")
    t_email2[ch] = created[ch] + DAY + (rng.random(ch.size) * (act_end[ch] - created[ch] - DAY)).astype(np.int64)
    phone2 = np.full(N, -1, dtype=np.int64)
    t_phone2 = np.full(N, NEVER, dtype=np.int64)
    ch = legit_idx[rng.random(nL) < 0.02]
    ch = ch[act_end[ch] - created[ch] > DAY]
    phone2[ch] = d.phones(rng, ccodes[ch], "personal")
    t_phone2[ch] = created[ch] + DAY + (rng.random(ch.size) * (act_end[ch] - created[ch] - DAY)).astype(np.int64)
    return _Contacts(email, email2, t_email2, phone, phone2, t_phone2)


@dataclass
class _Devices:
    """Main, alternate, household-tablet and replacement device of each account, with their odds."""

    dev_main: np.ndarray
    dev_alt: np.ndarray
    alt_p: np.ndarray
    dev_tab: np.ndarray
    tab_p: np.ndarray
    dev_rep: np.ndarray
    t_rep: np.ndarray


def _devices(p: SynthParams, d: _Draws, r: _Roles, h: _Homes, w: _Windows) -> _Devices:
    N, rng, rng_s, group = p.customers, d.rng, d.rng_s, r.group
    ring_idx, multi_idx, soft_idx, legit_idx = r.ring_idx, r.multi_idx, r.soft_idx, r.legit_idx
    nL, n_ring, n_multi, n_soft, n_clusters = r.n_legit, r.n_ring, r.n_multi, r.n_soft, len(r.multi_sizes)
    created, act_end, in_hh, n_hh = w.created, w.act_end, h.in_hh, h.n_hh
    dev_main = np.full(N, -1, dtype=np.int64)
    dev_alt = np.full(N, -1, dtype=np.int64)
    alt_p = np.zeros(N)
    dev_tab = np.full(N, -1, dtype=np.int64)
    tab_p = np.zeros(N)
    dev_rep = np.full(N, -1, dtype=np.int64)
    t_rep = np.full(N, NEVER, dtype=np.int64)
    dev_main[legit_idx] = d.devices(nL, "phone")
    sec = legit_idx[rng.random(nL) < 0.25]
    dev_alt[sec] = d.devices(sec.size, "phone")
    alt_p[sec] = 0.3
    rep = legit_idx[rng.random(nL) < 0.15]
    dev_rep[rep] = d.devices(rep.size, "phone")
    t_rep[rep] = created[rep] + (rng.random(rep.size) * (act_end[rep] - created[rep])).astype(np.int64)
    tablet_hh = np.flatnonzero(rng.random(n_hh) < 0.35)
    tab_codes = np.full(max(n_hh, 1), -1, dtype=np.int64)
    tab_codes[tablet_hh] = d.devices(tablet_hh.size, "tablet")
    dev_tab[in_hh] = tab_codes[group[in_hh]]
    tab_p[in_hh] = np.where(dev_tab[in_hh] >= 0, 0.15, 0.0)

    ring_dev_n = [max(1, round(s / 6)) for s in r.ring_sizes]
    ring_dev_codes = d.devices(sum(ring_dev_n), "emulator")
    ring_dev_off = np.r_[0, np.cumsum(ring_dev_n)].astype(np.int64)
    if n_ring:
        g = group[ring_idx]
        nd = np.asarray(ring_dev_n)[g]
        dev_main[ring_idx] = ring_dev_codes[ring_dev_off[g] + rng.integers(0, nd)]
        two = nd >= 2
        dev_alt[ring_idx[two]] = ring_dev_codes[ring_dev_off[g[two]] + rng.integers(0, nd[two])]
        alt_p[ring_idx[two]] = 0.4
    if n_soft:  # a cheap real phone per member, never passed around
        dev_main[soft_idx] = d.devices(n_soft, "soft_ring_phone", rng_s)
    person_dev = d.devices(n_clusters, "multi_account_phone")
    person_dev2 = d.devices(n_clusters, "multi_account_phone")
    if n_multi:
        g = group[multi_idx]
        dev_main[multi_idx] = person_dev[g]
        has2 = rng.random(n_clusters) < 0.4
        dev_alt[multi_idx] = np.where(has2[g], person_dev2[g], -1)
        alt_p[multi_idx] = np.where(has2[g], 0.3, 0.0)
    return _Devices(dev_main, dev_alt, alt_p, dev_tab, tab_p, dev_rep, t_rep)


@dataclass
class _Ips:
    """Where each account connects from (home / proxy, carrier NAT, office, VPN) and how often."""

    ip_base: np.ndarray
    n_base: np.ndarray
    ip_nat: np.ndarray
    n_nat: np.ndarray
    ip_office: np.ndarray
    ip_cum: np.ndarray
    vpn_pool: np.ndarray
    proxy_pool: np.ndarray  # datacenter proxies, which attackers reuse


def _ips(p: SynthParams, d: _Draws, r: _Roles, h: _Homes, w: _Windows, t: _Takeovers) -> _Ips:
    N, rng, rng_s, group, country = p.customers, d.rng, d.rng_s, r.group, h.country
    ring_idx, multi_idx, soft_idx, legit_idx = r.ring_idx, r.multi_idx, r.soft_idx, r.legit_idx
    nL, n_multi, n_soft, singles = r.n_legit, r.n_multi, r.n_soft, h.singles
    ip_base = np.full((N, 3), -1, dtype=np.int64)
    n_base = np.ones(N, dtype=np.int64)
    has_home = h.home >= 0
    ip_base[has_home, 0] = h.home_ip[h.home[has_home]]
    proxy_pool = d.ipv4(max(30, 2 * len(r.ring_sizes) + t.n_ato // 2), DATACENTER_OCTETS, "proxy")
    for ring in range(len(r.ring_sizes)):
        members = ring_idx[group[ring_idx] == ring]
        k = int(rng.integers(2, 5))
        chosen = rng.choice(proxy_pool, size=k, replace=False)
        nb = np.minimum(3, k)
        ip_base[members, :nb] = chosen[:nb]
        n_base[members] = nb

    # soft rings: a residential-proxy /24 per ring; each address is also the home line of an honest single
    for ring in range(len(r.soft_sizes)):
        members = soft_idx[group[soft_idx] == ring]
        block = _ipv4_block(rng_s, int(rng_s.integers(3, 9)), d.used_ip)
        codes = d.pools["ip"].add(ipv4_strings(block), "residential_proxy")
        nbs = np.minimum(rng_s.integers(1, 4, members.size), codes.size)
        for i, m in zip(members.tolist(), nbs.tolist(), strict=True):
            ip_base[i, :m] = rng_s.choice(codes, size=m, replace=False)
            n_base[i] = m
        homes = singles[rng_s.integers(0, max(singles.size, 1), codes.size)] if singles.size else np.zeros(0, np.int64)
        keep = rng_s.random(homes.size) < 0.6
        ip_base[homes[keep], 0] = codes[keep]

    nat_total = p.nat_pool_size
    nat_n = np.maximum(3, np.round(nat_total * COUNTRY_W).astype(int))
    ip_nat = np.full((N, 4), -1, dtype=np.int64)
    n_nat = np.zeros(N, dtype=np.int64)
    mobile = np.zeros(N, dtype=bool)
    mobile[legit_idx] = rng.random(nL) < p.mobile_share
    mobile[ring_idx] = True
    mobile[soft_idx] = True
    # carrier-grade NAT rotates egress addresses, so a phone is seen behind several over its life
    k_nat = np.where(mobile, rng.choice([1, 2, 3, 4], size=N, p=[0.15, 0.3, 0.3, 0.25]), 0)
    k_nat[ring_idx] = np.minimum(k_nat[ring_idx], 2)
    k_nat[soft_idx] = np.minimum(k_nat[soft_idx], 2)
    for ci in range(COUNTRIES.size):
        pool_c = d.ipv4(int(nat_n[ci]), CARRIER_OCTETS, "carrier_nat")
        zipf = 1.0 / np.arange(1, pool_c.size + 1)
        who = np.flatnonzero((country == ci) & (k_nat > 0))
        kk = k_nat[who]
        picks = rng.choice(pool_c, size=int(kk.sum()), p=zipf / zipf.sum())
        rows = np.repeat(who, kk)
        cols = np.arange(rows.size) - np.repeat(np.cumsum(kk) - kk, kk)
        ip_nat[rows, cols] = picks
        n_nat[who] = kk
    if n_multi:  # one person, one SIM: every account of the cluster sees the same carrier IPs
        person = multi_idx[0] + w.first_of_cluster[group[multi_idx]]
        ip_nat[multi_idx] = ip_nat[person]
        n_nat[multi_idx] = n_nat[person]
        mobile[multi_idx] = mobile[person]

    ip_office = np.full(N, -1, dtype=np.int64)
    workers_all = legit_idx[rng.random(nL) < p.office_share]
    for ci in range(COUNTRIES.size):
        workers = rng.permutation(workers_all[country[workers_all] == ci])
        if workers.size == 0:
            continue
        sizes = _group_sizes(rng, workers.size, 1, 300, lambda: int(np.exp(rng.uniform(np.log(20), np.log(300)))))
        codes = d.ipv4(len(sizes), RESIDENTIAL_OCTETS, "office")
        ip_office[workers[: sum(sizes)]] = np.repeat(codes, sizes)

    vpn_pool = d.ipv4(int(min(60, max(10, N // 2000))), DATACENTER_OCTETS, "vpn")
    vpn_user = np.zeros(N, dtype=bool)
    vpn_user[legit_idx] = rng.random(nL) < p.vpn_share
    vpn_user[ring_idx] = True
    vpn_user[soft_idx] = rng_s.random(n_soft) < 0.3

    weight = np.zeros((N, 5))
    weight[legit_idx] = np.column_stack([
        np.full(nL, 0.5), 0.35 * mobile[legit_idx], 0.12 * (ip_office[legit_idx] >= 0),
        0.3 * vpn_user[legit_idx], np.full(nL, 0.03),
    ])
    weight[ring_idx] = [0.75, 0.2, 0.0, 0.05, 0.0]
    weight[multi_idx] = np.column_stack([np.full(n_multi, 0.6), 0.4 * mobile[multi_idx], np.zeros(n_multi),
                                         np.zeros(n_multi), np.full(n_multi, 0.02)])
    weight[soft_idx] = np.column_stack([np.full(n_soft, 0.65), np.full(n_soft, 0.3), np.zeros(n_soft),
                                        0.1 * vpn_user[soft_idx], np.full(n_soft, 0.02)])
    ip_cum = np.cumsum(weight / weight.sum(axis=1, keepdims=True), axis=1)
    return _Ips(ip_base, n_base, ip_nat, n_nat, ip_office, ip_cum, vpn_pool, proxy_pool)


@dataclass
class _Cards:
    """Up to ``K_CARDS`` payment cards per account, when each is added, and the odds of paying cash."""

    card: np.ndarray
    card_t: np.ndarray
    cash_p: np.ndarray
    ring_card_codes: np.ndarray  # the rings' stolen cards, which some takeovers reuse


def _cards(p: SynthParams, d: _Draws, r: _Roles, h: _Homes, w: _Windows) -> _Cards:
    N, rng, rng_s, group = p.customers, d.rng, d.rng_s, r.group
    ring_idx, multi_idx, soft_idx, legit_idx = r.ring_idx, r.multi_idx, r.soft_idx, r.legit_idx
    nL, n_multi, n_soft, n_clusters = r.n_legit, r.n_multi, r.n_soft, len(r.multi_sizes)
    created, act_end, in_hh, n_hh = w.created, w.act_end, h.in_hh, h.n_hh
    card = np.full((N, K_CARDS), -1, dtype=np.int64)
    card_t = np.full((N, K_CARDS), NEVER, dtype=np.int64)
    cash_p = np.zeros(N)
    carded = legit_idx[rng.random(nL) < 0.85]
    card[carded, 0] = d.cards(carded.size, "personal")
    card_t[carded, 0] = created[carded] + np.clip(lognormal(rng, HOUR, 1.5, carded.size), 60, 30 * DAY).astype(np.int64)
    two = carded[rng.random(carded.size) < 0.3]
    card[two, 1] = d.cards(two.size, "personal")
    card_t[two, 1] = created[two] + (rng.random(two.size) * (act_end[two] - created[two])).astype(np.int64)
    cash_p[legit_idx] = 0.15
    # households: one member's card also pays for the others
    hh_first = np.r_[0, np.cumsum(h.hh_sizes)[:-1]].astype(np.int64) if n_hh else np.zeros(0, np.int64)
    owner = in_hh[hh_first] if n_hh else np.zeros(0, np.int64)
    share_card = (rng.random(n_hh) < 0.25) & (card[owner, 0] >= 0) if n_hh else np.zeros(0, bool)
    members = in_hh[share_card[group[in_hh]] & ~np.isin(in_hh, owner)]
    card[members, 2] = card[owner[group[members]], 0]
    card_t[members, 2] = created[members] + (rng.random(members.size) * (act_end[members] - created[members])).astype(np.int64)

    ring_card_n = [max(2, s // 3) for s in r.ring_sizes]
    ring_card_codes = d.cards(sum(ring_card_n), "stolen")
    ring_card_off = np.r_[0, np.cumsum(ring_card_n)].astype(np.int64)
    for i in ring_idx.tolist():
        ring = group[i]
        pool_r = ring_card_codes[ring_card_off[ring]: ring_card_off[ring + 1]]
        m = min(pool_r.size, int(rng.integers(2, 6)), K_CARDS)
        card[i, :m] = rng.choice(pool_r, size=m, replace=False)
        card_t[i, :m] = created[i] + np.cumsum(lognormal(rng, 20 * 60, 1.0, m)).astype(np.int64)
    if n_soft:  # one or two stolen cards of its own per member, loaded minutes after signup
        k = rng_s.integers(1, 3, n_soft)
        codes = d.cards(int(k.sum()), "stolen", rng_s)
        off = np.r_[0, np.cumsum(k)[:-1]]
        for j in range(2):
            has = k > j
            card[soft_idx[has], j] = codes[off[has] + j]
            card_t[soft_idx[has], j] = created[soft_idx[has]] + np.clip(
                lognormal(rng_s, 15 * 60 * (j + 1), 1.0, int(has.sum())), 60, 2 * DAY).astype(np.int64)
    person_card = d.cards(n_clusters, "multi_account_card")
    if n_multi:
        g = group[multi_idx]
        card[multi_idx, 0] = person_card[g]
        card_t[multi_idx, 0] = created[multi_idx] + np.clip(lognormal(rng, HOUR, 1.0, n_multi), 60, 7 * DAY).astype(np.int64)
        own = multi_idx[rng.random(n_multi) < 0.25]
        card[own, 1] = d.cards(own.size, "multi_account_card")
        card_t[own, 1] = created[own] + (rng.random(own.size) * (act_end[own] - created[own])).astype(np.int64)
        cash_p[multi_idx] = 0.3
    return _Cards(card, card_t, cash_p, ring_card_codes)


def _behaviour_mix(p: SynthParams, r: _Roles) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative event-type weights and the odds a login shows the email, per account (no draws)."""
    N = p.customers
    type_cum = np.empty((N, 2))
    type_cum[r.legit_idx] = [0.55, 0.97]
    type_cum[r.ring_idx] = [0.5, 0.95]
    type_cum[r.multi_idx] = [0.7, 0.98]
    type_cum[r.soft_idx] = [0.55, 0.96]
    login_email_p = np.full(N, 0.3)
    login_email_p[r.ring_idx] = 0.8
    login_email_p[r.multi_idx] = 0.5
    login_email_p[r.soft_idx] = 0.6
    return type_cum, login_email_p


@dataclass
class _AttackerKit:
    """What the attacker brings to each takeover, one row per victim."""

    victims: np.ndarray
    stealth: np.ndarray  # keeps the victim's email and phone
    att_dev: np.ndarray
    att_ip: np.ndarray
    att_email: np.ndarray
    att_phone: np.ndarray
    att_card: np.ndarray


def _attacker_kit(p: SynthParams, d: _Draws, t: _Takeovers, ips: _Ips, cards: _Cards) -> _AttackerKit:
    rng, rng_s, n_ato, ring_card_codes = d.rng, d.rng_s, t.n_ato, cards.ring_card_codes
    victims = np.flatnonzero(t.ato)
    att_dev_pool = d.devices(max(1, n_ato // 3), "attacker")
    att_dev = att_dev_pool[rng.integers(0, att_dev_pool.size, n_ato)]
    att_ip = rng.choice(ips.proxy_pool, size=n_ato)
    att_email = d.emails(list(random_tokens(rng, n_ato, 10)), DISPOSABLE[rng.integers(0, DISPOSABLE.size, n_ato)],
                         "attacker")
    att_phone = d.phones(rng, np.full(n_ato, "US", dtype=object), "virtual")
    fresh = d.cards(n_ato, "stolen")
    from_ring = (rng.random(n_ato) < 0.5) & (ring_card_codes.size > 0)
    att_card = np.where(
        from_ring, ring_card_codes[rng.integers(0, max(ring_card_codes.size, 1), n_ato)] if ring_card_codes.size else fresh, fresh
    )
    # stealth takeovers keep the victim's email and phone; the attacker's phone is theirs alone
    stealth = rng_s.random(n_ato) < p.stealth_ato_share
    if stealth.any():
        att_dev[stealth] = d.devices(int(stealth.sum()), "attacker", rng_s)
        att_card[stealth] = fresh[stealth]
    return _AttackerKit(victims, stealth, att_dev, att_ip, att_email, att_phone, att_card)


def _resell_devices(p: SynthParams, d: _Draws, r: _Roles, w: _Windows, t: _Takeovers, dev: _Devices) -> np.ndarray:
    """Second-hand phones: a churned customer's phone becomes a newer customer's main device. Rewrites
    the buyers' devices in ``dev``; returns the buyers."""
    T1, rng_s, legit_idx, created, act_end, ato = p.t1, d.rng_s, r.legit_idx, w.created, w.act_end, t.ato
    if not (p.resold_device_share > 0 and r.n_legit):
        return np.zeros(0, dtype=np.int64)
    churned = legit_idx[(act_end[legit_idx] < T1 - 30 * DAY) & (dev.dev_main[legit_idx] >= 0) & ~ato[legit_idx]]
    churned = churned[rng_s.random(churned.size) < p.resold_device_share]
    order = legit_idx[np.argsort(created[legit_idx], kind="stable")]
    lo = np.searchsorted(created[order], act_end[churned] + 7 * DAY)
    pick = lo + rng_s.integers(0, 2_000, churned.size)
    ok = pick < order.size
    buyer = order[np.minimum(pick, order.size - 1)]
    ok &= ~np.isin(buyer, churned) & ~ato[buyer]
    buyer, seller = buyer[ok], churned[ok]
    buyer, first = np.unique(buyer, return_index=True)
    seller = seller[first]
    dev.dev_main[buyer] = dev.dev_main[seller]
    dev.dev_rep[buyer] = -1
    dev.t_rep[buyer] = NEVER
    return buyer


def build_population(p: SynthParams) -> tuple[Population, dict[str, Pool]]:
    """Every account and what it owns, drawn step by step in a fixed order (so a seed is one world)."""
    d = _Draws(p)
    roles = _roles(p, d)
    homes = _homes(p, d, roles)
    windows = _windows(p, d, roles)
    takeovers = _takeovers(p, d, roles, windows)
    contacts = _contacts(p, d, roles, homes, windows)
    devices = _devices(p, d, roles, homes, windows)
    ips = _ips(p, d, roles, homes, windows, takeovers)
    cards = _cards(p, d, roles, homes, windows)
    type_cum, login_email_p = _behaviour_mix(p, roles)
    kit = _attacker_kit(p, d, takeovers, ips, cards)
    resold = _resell_devices(p, d, roles, windows, takeovers, devices)
    pop = Population(
        n=p.customers, role=roles.role, group=roles.group, country=homes.country, created=windows.created,
        act_end=windows.act_end, activity=windows.activity, fraud_start=takeovers.fraud_start, ato=takeovers.ato,
        email=contacts.email, email2=contacts.email2, t_email2=contacts.t_email2, phone=contacts.phone,
        phone2=contacts.phone2, t_phone2=contacts.t_phone2, dev_main=devices.dev_main, dev_alt=devices.dev_alt,
        alt_p=devices.alt_p, dev_tab=devices.dev_tab, tab_p=devices.tab_p, dev_rep=devices.dev_rep,
        t_rep=devices.t_rep, ip_base=ips.ip_base, n_base=ips.n_base, ip_nat=ips.ip_nat, n_nat=ips.n_nat,
        ip_office=ips.ip_office, ip_cum=ips.ip_cum, vpn_pool=ips.vpn_pool, card=cards.card, card_t=cards.card_t,
        cash_p=cards.cash_p, type_cum=type_cum, login_email_p=login_email_p,
        ring_sizes=np.asarray(roles.ring_sizes), soft_sizes=np.asarray(roles.soft_sizes, dtype=np.int64),
        multi_sizes=np.asarray(roles.multi_sizes), hh_sizes=np.asarray(homes.hh_sizes), home=homes.home,
        victims=kit.victims, stealth=kit.stealth, att_dev=kit.att_dev, att_ip=kit.att_ip, att_email=kit.att_email,
        att_phone=kit.att_phone, att_card=kit.att_card, resold=resold, used_ip=d.used_ip,
    )
    return pop, d.pools
