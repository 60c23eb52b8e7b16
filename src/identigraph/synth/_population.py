"""Who exists: accounts, their roles (legit / ring / multi-account / ATO victim) and the identifiers
each one owns or shares. Events are drawn from this in ``_events``."""

from __future__ import annotations

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


class Pop:
    """Column arrays, one row per account (generation order, not id order)."""

    n: int


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
        nums = draw_unique(lambda k: rng.integers(lo, 10**digits, size=k), idx.size, used.setdefault(cc, set()))
        out[idx] = [f"+{code}{prefix}{x:0{digits}d}" for x in nums.tolist()]
    return list(out)


def _emails(locals_: list[str], domains: np.ndarray, used: set) -> list[str]:
    """Raw addresses; a clash gets a numeric suffix, because two people never share a mailbox by chance."""
    out = []
    for loc, dom in zip(locals_, domains.tolist()):
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
    for f, l, p, a, b in zip(first.tolist(), last.tolist(), pat.tolist(), n2, n4):
        if p == 0:
            out.append(f"{f}.{l}{a}")
        elif p == 1:
            out.append(f"{f}{l}{b}")
        elif p == 2:
            out.append(f"{f}_{l}")
        elif p == 3:
            out.append(f"{f}.{l}")
        elif p == 4:
            out.append(f"{f[0]}{l}{a}")
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


def build_population(p: SynthParams) -> tuple[Pop, dict[str, Pool]]:
    N, T0, T1 = p.customers, p.t0, p.t1
    rng = rng_for(p.seed, "population")
    # the hard-world scenarios draw from their own stream: with them off, the classic world is unchanged
    rng_s = rng_for(p.seed, "hard_scenarios")
    pools = {k: Pool(k) for k in ("device", "ip", "email", "phone", "card")}
    used_ip: set = set()
    used_dev: set = set()
    used_card: set = set()
    used_phone: dict = {}
    used_email: set = set()
    pop = Pop()
    pop.n = N

    def new_devices(k: int, role: str) -> np.ndarray:
        v = draw_unique(lambda m: rng.integers(-(2**63), 2**63 - 1, size=m, dtype=np.int64), k, used_dev)
        return pools["device"].add(hex_strings(v), role)

    def new_cards(k: int, role: str) -> np.ndarray:
        v = draw_unique(lambda m: rng.integers(-(2**63), 2**63 - 1, size=m, dtype=np.int64), k, used_card)
        return pools["card"].add(hex_strings(v, "card_"), role)

    def new_ipv4(k: int, octets: np.ndarray, role: str) -> np.ndarray:
        return pools["ip"].add(ipv4_strings(draw_unique(ipv4_sampler(rng, octets), k, used_ip)), role)

    # ---- roles --------------------------------------------------------------------------------------
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
    ring_idx = np.arange(n_ring)
    multi_idx = np.arange(n_ring, n_fraud)
    soft_idx = np.arange(n_fraud, n_bad)
    legit_idx = np.arange(n_bad, N)
    nL = legit_idx.size

    # ---- households and homes -------------------------------------------------------------------
    hh_sizes = _group_sizes(
        rng, round(p.household_share * nL), 2, 5, lambda: int(rng.choice([2, 3, 4, 5], p=[0.45, 0.3, 0.15, 0.1]))
    )
    n_hh = len(hh_sizes)
    perm = rng.permutation(legit_idx)
    in_hh = perm[: sum(hh_sizes)]
    group[in_hh] = np.repeat(np.arange(n_hh), hh_sizes)
    singles = perm[sum(hh_sizes):]
    n_clusters = len(multi_sizes)
    home = np.full(N, -1, dtype=np.int64)
    home[in_hh] = group[in_hh]
    home[singles] = n_hh + np.arange(singles.size)
    home[multi_idx] = n_hh + singles.size + group[multi_idx]
    n_homes = n_hh + singles.size + n_clusters
    home_country = rng.choice(COUNTRIES.size, size=n_homes, p=COUNTRY_W)
    home_v6 = rng.random(n_homes) < p.ipv6_share
    home_ip = np.empty(n_homes, dtype=np.int64)
    home_ip[~home_v6] = new_ipv4(int((~home_v6).sum()), RESIDENTIAL_OCTETS, "home")
    home_ip[home_v6] = pools["ip"].add(ipv6_strings(rng, int(home_v6.sum()), used_ip), "home")

    country = np.empty(N, dtype=np.int64)
    has_home = home >= 0
    country[has_home] = home_country[home[has_home]]
    ring_country = rng.choice(COUNTRIES.size, size=max(len(ring_sizes), 1), p=COUNTRY_W)
    country[ring_idx] = ring_country[group[ring_idx]]
    soft_country = rng_s.choice(COUNTRIES.size, size=max(len(soft_sizes), 1), p=COUNTRY_W)
    country[soft_idx] = soft_country[group[soft_idx]]

    # ---- creation and activity windows ----------------------------------------------------------
    created = np.empty(N, dtype=np.int64)
    created[legit_idx] = recency_times(rng, nL, T0, T1, p.growth)
    ring_start = recency_times(rng, len(ring_sizes), T0, T1 - HOUR, p.growth)
    burst = np.clip(lognormal(rng, 12 * HOUR, 1.0, len(ring_sizes)), HOUR, 5 * DAY)
    created[ring_idx] = ring_start[group[ring_idx]] + (rng.random(n_ring) * burst[group[ring_idx]]).astype(np.int64)
    multi_start = recency_times(rng, n_clusters, T0, T1 - HOUR, p.growth)
    multi_span = rng.uniform(7, 56, size=n_clusters) * DAY
    u = rng.random(n_multi)
    first_of_cluster = np.r_[0, np.cumsum(multi_sizes)[:-1]].astype(np.int64) if n_clusters else np.zeros(0, np.int64)
    u[first_of_cluster] = 0.0
    created[multi_idx] = multi_start[group[multi_idx]] + (u * multi_span[group[multi_idx]]).astype(np.int64)
    if n_soft:  # a looser burst than a ring's: days, not hours; after drift start only, when drifting
        lo = max(T0, T1 - int(p.drift_days * DAY)) if p.drift_days > 0 else T0
        soft_start = recency_times(rng_s, len(soft_sizes), lo, T1 - HOUR, p.growth)
        soft_burst = np.clip(lognormal(rng_s, 2 * DAY, 0.8, len(soft_sizes)), 6 * HOUR, 10 * DAY)
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

    # ---- account takeover victims: old, valuable legit accounts ---------------------------------
    fraud_start = np.full(N, -1, dtype=np.int64)
    fraud_start[:n_bad] = created[:n_bad]
    eligible = legit_idx[(T1 - created[legit_idx]) >= 120 * DAY]
    n_ato = min(round(p.ato_share * N), eligible.size)
    ato = np.zeros(N, dtype=bool)
    if n_ato:
        w = activity[eligible] * (T1 - created[eligible])
        victims = np.sort(rng.choice(eligible, size=n_ato, replace=False, p=w / w.sum()))
        ato[victims] = True
        lo = created[victims] + 90 * DAY
        fraud_start[victims] = lo + (rng.random(n_ato) * (T1 - HOUR - lo)).astype(np.int64)
        act_end[victims] = np.minimum(act_end[victims], fraud_start[victims])

    # ---- names, emails, phones ------------------------------------------------------------------
    first = np.array(FIRST, dtype=object)[rng.integers(0, len(FIRST), N)]
    last = np.array(LAST, dtype=object)[rng.integers(0, len(LAST), N)]
    hh_last = np.array(LAST, dtype=object)[rng.integers(0, len(LAST), max(n_hh, 1))]
    share_last = in_hh[rng.random(in_hh.size) < 0.7]
    last[share_last] = hh_last[group[share_last]]
    # a multi-accounter is one person: same name behind every account
    if n_multi:
        person = multi_idx[0] + first_of_cluster[group[multi_idx]]
        first[multi_idx] = first[person]
        last[multi_idx] = last[person]
    email = np.empty(N, dtype=np.int64)
    dom = DOMAINS[rng.choice(DOMAINS.size, size=nL, p=DOMAIN_W)]
    email[legit_idx] = pools["email"].add(
        _emails(_legit_locals(rng, first[legit_idx], last[legit_idx]), dom, used_email), "personal"
    )
    tok = random_tokens(rng, n_ring, 9)
    email[ring_idx] = pools["email"].add(
        _emails(list(tok), DISPOSABLE[rng.integers(0, DISPOSABLE.size, n_ring)], used_email), "disposable"
    )
    # promo abusers vary one identity: numbers, plus-addressing, dots, other providers
    m_locals = []
    for f, l, v, a in zip(first[multi_idx].tolist(), last[multi_idx].tolist(),
                          rng.integers(0, 4, n_multi).tolist(), rng.integers(1, 1000, n_multi).tolist()):
        m_locals.append([f"{f}.{l}{a}", f"{f}{l}+promo{a}", f"{f[0]}.{l}.{a}", f"{l}.{f}{a}"][v])
    email[multi_idx] = pools["email"].add(
        _emails(m_locals, DOMAINS[rng.choice(DOMAINS.size, size=n_multi, p=DOMAIN_W)], used_email), "variant"
    )

    phone = np.empty(N, dtype=np.int64)
    ccodes = COUNTRIES[country]
    phone[legit_idx] = pools["phone"].add(_phones(rng, ccodes[legit_idx], used_phone), "personal")
    virt = np.where(rng.random(n_ring) < 0.6, np.where(rng.random(n_ring) < 0.5, "US", "GB"), ccodes[ring_idx])
    phone[ring_idx] = pools["phone"].add(_phones(rng, virt.astype(object), used_phone), "virtual")
    # some rings recycle a handful of virtual numbers across accounts
    for r in np.flatnonzero(rng.random(len(ring_sizes)) < 0.3).tolist():
        members = ring_idx[group[ring_idx] == r]
        keep = members[: max(1, members.size // 4)]
        phone[members] = phone[rng.choice(keep, size=members.size)]
    mvirt = np.where(rng.random(n_multi) < 0.4, "US", COUNTRIES[country[multi_idx]])
    phone[multi_idx] = pools["phone"].add(_phones(rng, mvirt.astype(object), used_phone), "secondary_sim")
    if n_soft:  # soft rings: every member its own throwaway address and virtual number
        email[soft_idx] = pools["email"].add(_emails(list(random_tokens(rng_s, n_soft, 9)),
                                                     DISPOSABLE[rng_s.integers(0, DISPOSABLE.size, n_soft)],
                                                     used_email), "disposable")
        svirt = np.where(rng_s.random(n_soft) < 0.6, np.where(rng_s.random(n_soft) < 0.5, "US", "GB"),
                         ccodes[soft_idx])
        phone[soft_idx] = pools["phone"].add(_phones(rng_s, svirt.astype(object), used_phone), "virtual")

    email2 = np.full(N, -1, dtype=np.int64)
    t_email2 = np.full(N, NEVER, dtype=np.int64)
    ch = legit_idx[rng.random(nL) < 0.03]
    ch = ch[act_end[ch] - created[ch] > DAY]
    loc2 = _legit_locals(rng, first[ch], last[ch])
    email2[ch] = pools["email"].add(
        _emails(loc2, DOMAINS[rng.choice(DOMAINS.size, size=ch.size, p=DOMAIN_W)], used_email), "personal"
    )
    t_email2[ch] = created[ch] + DAY + (rng.random(ch.size) * (act_end[ch] - created[ch] - DAY)).astype(np.int64)
    phone2 = np.full(N, -1, dtype=np.int64)
    t_phone2 = np.full(N, NEVER, dtype=np.int64)
    ch = legit_idx[rng.random(nL) < 0.02]
    ch = ch[act_end[ch] - created[ch] > DAY]
    phone2[ch] = pools["phone"].add(_phones(rng, ccodes[ch], used_phone), "personal")
    t_phone2[ch] = created[ch] + DAY + (rng.random(ch.size) * (act_end[ch] - created[ch] - DAY)).astype(np.int64)

    # ---- devices --------------------------------------------------------------------------------
    dev_main = np.full(N, -1, dtype=np.int64)
    dev_alt = np.full(N, -1, dtype=np.int64)
    alt_p = np.zeros(N)
    dev_tab = np.full(N, -1, dtype=np.int64)
    tab_p = np.zeros(N)
    dev_rep = np.full(N, -1, dtype=np.int64)
    t_rep = np.full(N, NEVER, dtype=np.int64)
    dev_main[legit_idx] = new_devices(nL, "phone")
    sec = legit_idx[rng.random(nL) < 0.25]
    dev_alt[sec] = new_devices(sec.size, "phone")
    alt_p[sec] = 0.3
    rep = legit_idx[rng.random(nL) < 0.15]
    dev_rep[rep] = new_devices(rep.size, "phone")
    t_rep[rep] = created[rep] + (rng.random(rep.size) * (act_end[rep] - created[rep])).astype(np.int64)
    tablet_hh = np.flatnonzero(rng.random(n_hh) < 0.35)
    tab_codes = np.full(max(n_hh, 1), -1, dtype=np.int64)
    tab_codes[tablet_hh] = new_devices(tablet_hh.size, "tablet")
    dev_tab[in_hh] = tab_codes[group[in_hh]]
    tab_p[in_hh] = np.where(dev_tab[in_hh] >= 0, 0.15, 0.0)

    ring_dev_n = [max(1, round(s / 6)) for s in ring_sizes]
    ring_dev_codes = new_devices(sum(ring_dev_n), "emulator")
    ring_dev_off = np.r_[0, np.cumsum(ring_dev_n)].astype(np.int64)
    if n_ring:
        g = group[ring_idx]
        nd = np.asarray(ring_dev_n)[g]
        dev_main[ring_idx] = ring_dev_codes[ring_dev_off[g] + rng.integers(0, nd)]
        two = nd >= 2
        dev_alt[ring_idx[two]] = ring_dev_codes[ring_dev_off[g[two]] + rng.integers(0, nd[two])]
        alt_p[ring_idx[two]] = 0.4
    if n_soft:  # a cheap real phone per member, never passed around
        v = draw_unique(lambda m: rng_s.integers(-(2**63), 2**63 - 1, size=m, dtype=np.int64), n_soft, used_dev)
        dev_main[soft_idx] = pools["device"].add(hex_strings(v), "soft_ring_phone")
    person_dev = new_devices(n_clusters, "multi_account_phone")
    person_dev2 = new_devices(n_clusters, "multi_account_phone")
    if n_multi:
        g = group[multi_idx]
        dev_main[multi_idx] = person_dev[g]
        has2 = rng.random(n_clusters) < 0.4
        dev_alt[multi_idx] = np.where(has2[g], person_dev2[g], -1)
        alt_p[multi_idx] = np.where(has2[g], 0.3, 0.0)

    # ---- IPs ------------------------------------------------------------------------------------
    ip_base = np.full((N, 3), -1, dtype=np.int64)
    n_base = np.ones(N, dtype=np.int64)
    ip_base[has_home, 0] = home_ip[home[has_home]]
    proxy_pool = new_ipv4(max(30, 2 * len(ring_sizes) + n_ato // 2), DATACENTER_OCTETS, "proxy")
    for r, s in enumerate(ring_sizes):
        members = ring_idx[group[ring_idx] == r]
        k = int(rng.integers(2, 5))
        chosen = rng.choice(proxy_pool, size=k, replace=False)
        nb = np.minimum(3, k)
        ip_base[members, :nb] = chosen[:nb]
        n_base[members] = nb

    # soft rings: a residential-proxy /24 per ring; each address is also the home line of an honest single
    for r, s in enumerate(soft_sizes):
        members = soft_idx[group[soft_idx] == r]
        block = _ipv4_block(rng_s, int(rng_s.integers(3, 9)), used_ip)
        codes = pools["ip"].add(ipv4_strings(block), "residential_proxy")
        nb = np.minimum(rng_s.integers(1, 4, members.size), codes.size)
        for i, m in zip(members.tolist(), nb.tolist()):
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
        pool_c = new_ipv4(int(nat_n[ci]), CARRIER_OCTETS, "carrier_nat")
        w = 1.0 / np.arange(1, pool_c.size + 1)
        who = np.flatnonzero((country == ci) & (k_nat > 0))
        kk = k_nat[who]
        picks = rng.choice(pool_c, size=int(kk.sum()), p=w / w.sum())
        rows = np.repeat(who, kk)
        cols = np.arange(rows.size) - np.repeat(np.cumsum(kk) - kk, kk)
        ip_nat[rows, cols] = picks
        n_nat[who] = kk
    if n_multi:  # one person, one SIM: every account of the cluster sees the same carrier IPs
        person = multi_idx[0] + first_of_cluster[group[multi_idx]]
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
        codes = new_ipv4(len(sizes), RESIDENTIAL_OCTETS, "office")
        ip_office[workers[: sum(sizes)]] = np.repeat(codes, sizes)

    vpn_pool = new_ipv4(int(min(60, max(10, N // 2000))), DATACENTER_OCTETS, "vpn")
    vpn_user = np.zeros(N, dtype=bool)
    vpn_user[legit_idx] = rng.random(nL) < p.vpn_share
    vpn_user[ring_idx] = True
    vpn_user[soft_idx] = rng_s.random(n_soft) < 0.3

    w = np.zeros((N, 5))
    w[legit_idx] = np.column_stack([
        np.full(nL, 0.5), 0.35 * mobile[legit_idx], 0.12 * (ip_office[legit_idx] >= 0),
        0.3 * vpn_user[legit_idx], np.full(nL, 0.03),
    ])
    w[ring_idx] = [0.75, 0.2, 0.0, 0.05, 0.0]
    w[multi_idx] = np.column_stack([np.full(n_multi, 0.6), 0.4 * mobile[multi_idx], np.zeros(n_multi),
                                    np.zeros(n_multi), np.full(n_multi, 0.02)])
    w[soft_idx] = np.column_stack([np.full(n_soft, 0.65), np.full(n_soft, 0.3), np.zeros(n_soft),
                                   0.1 * vpn_user[soft_idx], np.full(n_soft, 0.02)])
    ip_cum = np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1)

    # ---- cards ----------------------------------------------------------------------------------
    card = np.full((N, K_CARDS), -1, dtype=np.int64)
    card_t = np.full((N, K_CARDS), NEVER, dtype=np.int64)
    cash_p = np.zeros(N)
    carded = legit_idx[rng.random(nL) < 0.85]
    card[carded, 0] = new_cards(carded.size, "personal")
    card_t[carded, 0] = created[carded] + np.clip(lognormal(rng, HOUR, 1.5, carded.size), 60, 30 * DAY).astype(np.int64)
    two = carded[rng.random(carded.size) < 0.3]
    card[two, 1] = new_cards(two.size, "personal")
    card_t[two, 1] = created[two] + (rng.random(two.size) * (act_end[two] - created[two])).astype(np.int64)
    cash_p[legit_idx] = 0.15
    # households: one member's card also pays for the others
    hh_first = np.r_[0, np.cumsum(hh_sizes)[:-1]].astype(np.int64) if n_hh else np.zeros(0, np.int64)
    owner = in_hh[hh_first] if n_hh else np.zeros(0, np.int64)
    share_card = (rng.random(n_hh) < 0.25) & (card[owner, 0] >= 0) if n_hh else np.zeros(0, bool)
    members = in_hh[share_card[group[in_hh]] & ~np.isin(in_hh, owner)]
    card[members, 2] = card[owner[group[members]], 0]
    card_t[members, 2] = created[members] + (rng.random(members.size) * (act_end[members] - created[members])).astype(np.int64)

    ring_card_n = [max(2, s // 3) for s in ring_sizes]
    ring_card_codes = new_cards(sum(ring_card_n), "stolen")
    ring_card_off = np.r_[0, np.cumsum(ring_card_n)].astype(np.int64)
    for i in ring_idx.tolist():
        r = group[i]
        pool_r = ring_card_codes[ring_card_off[r]: ring_card_off[r + 1]]
        m = min(pool_r.size, int(rng.integers(2, 6)), K_CARDS)
        card[i, :m] = rng.choice(pool_r, size=m, replace=False)
        card_t[i, :m] = created[i] + np.cumsum(lognormal(rng, 20 * 60, 1.0, m)).astype(np.int64)
    if n_soft:  # one or two stolen cards of its own per member, loaded minutes after signup
        k = rng_s.integers(1, 3, n_soft)
        v = draw_unique(lambda m: rng_s.integers(-(2**63), 2**63 - 1, size=m, dtype=np.int64), int(k.sum()), used_card)
        codes = pools["card"].add(hex_strings(v, "card_"), "stolen")
        off = np.r_[0, np.cumsum(k)[:-1]]
        for j in range(2):
            has = k > j
            card[soft_idx[has], j] = codes[off[has] + j]
            card_t[soft_idx[has], j] = created[soft_idx[has]] + np.clip(
                lognormal(rng_s, 15 * 60 * (j + 1), 1.0, int(has.sum())), 60, 2 * DAY).astype(np.int64)
    person_card = new_cards(n_clusters, "multi_account_card")
    if n_multi:
        g = group[multi_idx]
        card[multi_idx, 0] = person_card[g]
        card_t[multi_idx, 0] = created[multi_idx] + np.clip(lognormal(rng, HOUR, 1.0, n_multi), 60, 7 * DAY).astype(np.int64)
        own = multi_idx[rng.random(n_multi) < 0.25]
        card[own, 1] = new_cards(own.size, "multi_account_card")
        card_t[own, 1] = created[own] + (rng.random(own.size) * (act_end[own] - created[own])).astype(np.int64)
        cash_p[multi_idx] = 0.3

    # ---- behaviour mix --------------------------------------------------------------------------
    type_cum = np.empty((N, 2))
    type_cum[legit_idx] = [0.55, 0.97]
    type_cum[ring_idx] = [0.5, 0.95]
    type_cum[multi_idx] = [0.7, 0.98]
    type_cum[soft_idx] = [0.55, 0.96]
    login_email_p = np.full(N, 0.3)
    login_email_p[ring_idx] = 0.8
    login_email_p[multi_idx] = 0.5
    login_email_p[soft_idx] = 0.6

    # ---- attacker kit for each takeover -----------------------------------------------------------
    victims = np.flatnonzero(ato)
    att_dev_pool = new_devices(max(1, n_ato // 3), "attacker")
    pop.att_dev = att_dev_pool[rng.integers(0, att_dev_pool.size, n_ato)]
    pop.att_ip = rng.choice(proxy_pool, size=n_ato)
    pop.att_email = pools["email"].add(
        _emails(list(random_tokens(rng, n_ato, 10)), DISPOSABLE[rng.integers(0, DISPOSABLE.size, n_ato)], used_email),
        "attacker",
    )
    pop.att_phone = pools["phone"].add(_phones(rng, np.full(n_ato, "US", dtype=object), used_phone), "virtual")
    fresh = new_cards(n_ato, "stolen")
    from_ring = (rng.random(n_ato) < 0.5) & (ring_card_codes.size > 0)
    pop.att_card = np.where(
        from_ring, ring_card_codes[rng.integers(0, max(ring_card_codes.size, 1), n_ato)] if ring_card_codes.size else fresh, fresh
    )
    # stealth takeovers keep the victim's email and phone; the attacker's phone is theirs alone
    stealth = rng_s.random(n_ato) < p.stealth_ato_share
    if stealth.any():
        v = draw_unique(lambda m: rng_s.integers(-(2**63), 2**63 - 1, size=m, dtype=np.int64), int(stealth.sum()), used_dev)
        pop.att_dev[stealth] = pools["device"].add(hex_strings(v), "attacker")
        pop.att_card[stealth] = fresh[stealth]
    pop.stealth = stealth
    pop.victims = victims

    # second-hand phones: a churned customer's phone becomes a newer customer's main device
    resold = np.zeros(0, dtype=np.int64)
    if p.resold_device_share > 0 and nL:
        churned = legit_idx[(act_end[legit_idx] < T1 - 30 * DAY) & (dev_main[legit_idx] >= 0) & ~ato[legit_idx]]
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
        dev_main[buyer] = dev_main[seller]
        dev_rep[buyer] = -1
        t_rep[buyer] = NEVER
        resold = buyer
    pop.resold = resold
    pop.used_ip = used_ip

    for name, val in dict(
        role=role, group=group, country=country, created=created, act_end=act_end, activity=activity,
        fraud_start=fraud_start, ato=ato, email=email, email2=email2, t_email2=t_email2, phone=phone,
        phone2=phone2, t_phone2=t_phone2, dev_main=dev_main, dev_alt=dev_alt, alt_p=alt_p, dev_tab=dev_tab,
        tab_p=tab_p, dev_rep=dev_rep, t_rep=t_rep, ip_base=ip_base, n_base=n_base, ip_nat=ip_nat,
        n_nat=n_nat, ip_office=ip_office, ip_cum=ip_cum, vpn_pool=vpn_pool, card=card, card_t=card_t,
        cash_p=cash_p, type_cum=type_cum, login_email_p=login_email_p, ring_sizes=np.asarray(ring_sizes),
        soft_sizes=np.asarray(soft_sizes, dtype=np.int64),
        multi_sizes=np.asarray(multi_sizes), hh_sizes=np.asarray(hh_sizes), home=home,
    ).items():
        setattr(pop, name, val)
    return pop, pools
