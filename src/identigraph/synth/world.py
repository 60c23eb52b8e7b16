"""Assemble a synthetic world: the four contract tables, the stream, and the ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from identigraph.errors import SchemaError
from identigraph.synth._events import behaviour_events
from identigraph.synth._ops import Ops, operations
from identigraph.synth._population import Population, build_population
from identigraph.synth._util import (
    BOOKING,
    COUNTRIES,
    EVENT_TYPES,
    LEGIT,
    MULTI,
    RING,
    SOFT,
    Pool,
    fixed_ids,
    lognormal,
    rng_for,
)
from identigraph.synth.params import SynthParams

# order of records that share a second: an account exists before it acts, is blocked after
_K_CREATED, _K_IDENTITY, _K_CARE, _K_BLOCK, _K_UNBLOCK = range(5)

IDENTIFIER_COLUMNS = ("device_id", "ip", "email", "phone", "card_fingerprint")
STREAM_COLUMNS = (
    "event_id", "event_type", "customer_id", "occurred_at", *IDENTIFIER_COLUMNS,
    "country", "lifetime_value", "reason", "source", "rule_name", "topic",
)


@dataclass
class World:
    """A generated world held in memory. ``stream`` has one row per stream event (columns that do not
    apply to its type are null); ``identifiers`` says what each identifier really is (home IP, carrier
    NAT, emulator, stolen card...), ground truth like ``truth``, never part of the input contract."""

    params: SynthParams
    customers: pd.DataFrame
    identity_events: pd.DataFrame
    blocks: pd.DataFrame
    care_contacts: pd.DataFrame
    stream: pd.DataFrame
    truth: pd.DataFrame
    identifiers: pd.DataFrame
    stats: dict[str, Any] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        return {
            "customers": len(self.customers),
            "identity_events": len(self.identity_events),
            "blocks": len(self.blocks),
            "care_contacts": len(self.care_contacts),
            "stream": len(self.stream),
            "truth": len(self.truth),
        }

    def stream_records(self) -> Iterator[dict[str, Any]]:
        """Stream messages exactly as the contract's JSON: absent optional fields are omitted."""
        s = self.stream
        occurred = s["occurred_at"].dt.strftime("%Y-%m-%dT%H:%M:%SZ").tolist()
        cols = {c: s[c].astype(object).where(s[c].notna(), None).tolist() for c in STREAM_COLUMNS if c != "occurred_at"}
        for i in range(len(s)):
            rec: dict[str, Any] = {
                "schema_version": 1,
                "event_id": cols["event_id"][i],
                "event_type": cols["event_type"][i],
                "customer_id": cols["customer_id"][i],
                "occurred_at": occurred[i],
            }
            for c in STREAM_COLUMNS[4:]:
                v = cols[c][i]
                if v is not None:
                    rec[c] = float(v) if c == "lifetime_value" else v
            yield rec


def _ts(sec: np.ndarray) -> pd.Series:
    """Epoch seconds (-1 = null) to a timestamp[us, UTC] column."""
    a = np.asarray(sec, dtype=np.int64)
    x = (a * 1_000_000).astype("datetime64[us]")
    x[a < 0] = np.datetime64("NaT")
    return pd.Series(x).dt.tz_localize("UTC")


def _str(values: np.ndarray) -> pd.Series:
    # via Arrow: several times faster than pandas' own conversion of object arrays
    return pa.array(np.asarray(values, dtype=object), type=pa.string()).to_pandas()


@dataclass
class _CustomerValues:
    """What the tables say about each account besides its identifiers (generation order)."""

    ltv: np.ndarray      # lifetime value
    country: np.ndarray  # ISO code, None where the platform does not know


@dataclass
class _Ids:
    """Customer ids in creation order and one chronological event-id sequence over every record."""

    cnum: np.ndarray    # customer number per account
    cid: np.ndarray     # customer id per account
    idnum: np.ndarray   # event number per record, parts concatenated
    bounds: np.ndarray  # where each part starts in idnum
    new_c: np.ndarray   # accounts created in the stream window
    s_blk: np.ndarray   # accounts blocked in the stream window
    s_unb: np.ndarray   # accounts unblocked in the stream window
    s_care: np.ndarray  # care contacts in the stream window
    eid_part: list[np.ndarray]  # event ids of: identity events, creations, blocks, unblocks, care contacts


@dataclass
class _History:
    """The four contract tables: everything before the cut."""

    customers: pd.DataFrame
    identity_events: pd.DataFrame
    blocks: pd.DataFrame
    care_contacts: pd.DataFrame


def _drop_while_blocked(p: SynthParams, ev: dict[str, np.ndarray], ops: Ops) -> dict[str, np.ndarray]:
    """Blocked accounts cannot act until unblocked; nothing happens after the end."""
    bt = ops.block_t[ev["cust"]]
    ut = np.where(ops.unblock_t >= 0, ops.unblock_t, np.iinfo(np.int64).max)[ev["cust"]]
    keep = ~((bt >= 0) & (ev["t"] >= bt) & (ev["t"] < ut)) & (ev["t"] < p.t1)
    return {k: v[keep] for k, v in ev.items()}


def _customer_values(p: SynthParams, pop: Population, ev: dict[str, np.ndarray]) -> _CustomerValues:
    """Lifetime value: what the bookings paid; fraud mostly charged back or paid with promos."""
    N = pop.n
    rng = rng_for(p.seed, "assemble")
    bk = ev["etype"] == BOOKING
    fares = lognormal(rng, 18.0, 0.7, int(bk.sum()))
    ltv = np.bincount(ev["cust"][bk], weights=fares, minlength=N)
    ltv = np.round(ltv * np.select([pop.role == RING, pop.role == MULTI, pop.role == SOFT], [0.1, 0.4, 0.1], 1.0), 2)
    country = COUNTRIES[pop.country].astype(object)
    country[rng.random(N) < 0.01] = None  # the platform does not always know
    return _CustomerValues(ltv, country)


def _ids(p: SynthParams, pop: Population, ops: Ops, ev: dict[str, np.ndarray]) -> _Ids:
    N, cut = pop.n, p.cut
    # customer ids follow creation order, like a real autoincrement
    order = np.lexsort((np.arange(N), pop.created))
    cnum = np.empty(N, dtype=np.int64)
    cnum[order] = np.arange(1, N + 1)
    cid = fixed_ids("c", cnum, max(7, len(str(N))))

    # event ids: one chronological sequence over identity events and every stream record
    new_c = np.flatnonzero(pop.created >= cut)
    s_blk = np.flatnonzero(ops.block_t >= cut)
    s_unb = np.flatnonzero(ops.unblock_t >= cut)
    s_care = np.flatnonzero(ops.contact_t >= cut)
    parts = [
        (ev["t"], _K_IDENTITY, ev["cust"]),
        (pop.created[new_c], _K_CREATED, new_c),
        (ops.block_t[s_blk], _K_BLOCK, s_blk),
        (ops.unblock_t[s_unb], _K_UNBLOCK, s_unb),
        (ops.contact_t[s_care], _K_CARE, ops.contact_cust[s_care]),
    ]
    t_all = np.concatenate([x[0] for x in parts])
    k_all = np.concatenate([np.full(x[0].size, x[1], dtype=np.int8) for x in parts])
    c_all = np.concatenate([cnum[x[2]] for x in parts])
    seq = np.lexsort((np.arange(t_all.size), c_all, k_all, t_all))
    idnum = np.empty(t_all.size, dtype=np.int64)
    idnum[seq] = np.arange(1, t_all.size + 1)
    eid = fixed_ids("ev", idnum, max(9, len(str(t_all.size))))
    bounds = np.cumsum([0] + [x[0].size for x in parts])
    eid_part = [eid[bounds[i]: bounds[i + 1]] for i in range(len(parts))]
    return _Ids(cnum, cid, idnum, bounds, new_c, s_blk, s_unb, s_care, eid_part)


def _identity_columns(ev: dict[str, np.ndarray], pools: dict[str, Pool], ids: _Ids) -> dict[str, np.ndarray]:
    """Identity events as output columns (identifier codes resolved to strings), history and stream alike."""
    vals = {k: pools[k].array() for k in ("device", "ip", "email", "phone", "card")}
    return {
        "event_id": ids.eid_part[0],
        "customer_id": ids.cid[ev["cust"]],
        "event_type": EVENT_TYPES[ev["etype"]],
        "occurred_at": ev["t"],
        "device_id": vals["device"][ev["dev"]],
        "ip": vals["ip"][ev["ip"]],
        "email": vals["email"][ev["email"]],
        "phone": vals["phone"][ev["phone"]],
        "card_fingerprint": vals["card"][ev["card"]],
    }


def _history(p: SynthParams, pop: Population, ops: Ops, ev: dict[str, np.ndarray], ev_cols: dict[str, np.ndarray],
             ids: _Ids, values: _CustomerValues) -> _History:
    cut, cnum, cid = p.cut, ids.cnum, ids.cid
    hist = np.flatnonzero(ev["t"] < cut)
    hist = hist[np.argsort(ids.idnum[ids.bounds[0]: ids.bounds[1]][hist], kind="stable")]
    identity_events = pd.DataFrame({
        k: (_ts(v[hist]) if k == "occurred_at" else _str(v[hist])) for k, v in ev_cols.items()
    })
    old = np.flatnonzero(pop.created < cut)
    old = old[np.argsort(cnum[old])]
    customers = pd.DataFrame({
        "customer_id": _str(cid[old]),
        "created_at": _ts(pop.created[old]),
        "country": _str(values.country[old]),
        "lifetime_value": values.ltv[old].astype(np.float64),
    })
    b = np.flatnonzero((ops.block_t >= 0) & (ops.block_t < cut))
    b = b[np.lexsort((cnum[b], ops.block_t[b]))]
    unb = np.where((ops.unblock_t[b] >= 0) & (ops.unblock_t[b] < cut), ops.unblock_t[b], -1)
    blocks = pd.DataFrame({
        "customer_id": _str(cid[b]),
        "blocked_at": _ts(ops.block_t[b]),
        "reason": _str(ops.reason[b]),
        "source": _str(ops.source[b]),
        "rule_name": _str(ops.rule[b]),
        "unblocked_at": _ts(unb),
    })
    cc = np.flatnonzero(ops.contact_t < cut)
    cc = cc[np.lexsort((cnum[ops.contact_cust[cc]], ops.contact_t[cc]))]
    care_contacts = pd.DataFrame({
        "customer_id": _str(cid[ops.contact_cust[cc]]),
        "contacted_at": _ts(ops.contact_t[cc]),
        "topic": _str(ops.contact_topic[cc]),
    })
    return _History(customers, identity_events, blocks, care_contacts)


def _stream(p: SynthParams, pop: Population, ops: Ops, ev: dict[str, np.ndarray], ev_cols: dict[str, np.ndarray],
            ids: _Ids, values: _CustomerValues) -> pd.DataFrame:
    """Every record from the cut on, in event-id (= chronological) order, with the stream's columns."""
    cid, new_c, s_blk, s_unb, s_care, eid_part = ids.cid, ids.new_c, ids.s_blk, ids.s_unb, ids.s_care, ids.eid_part
    live = np.flatnonzero(ev["t"] >= p.cut)
    frames = [pd.DataFrame({
        **{k: v[live] for k, v in ev_cols.items() if k not in ("event_id", "occurred_at")},
        "event_id": eid_part[0][live], "occurred_at": ev["t"][live],
    })]
    frames.append(pd.DataFrame({
        "event_id": eid_part[1], "event_type": "customer_created", "customer_id": cid[new_c],
        "occurred_at": pop.created[new_c], "country": values.country[new_c], "lifetime_value": values.ltv[new_c],
    }))
    frames.append(pd.DataFrame({
        "event_id": eid_part[2], "event_type": "block", "customer_id": cid[s_blk], "occurred_at": ops.block_t[s_blk],
        "reason": ops.reason[s_blk], "source": ops.source[s_blk], "rule_name": ops.rule[s_blk],
    }))
    frames.append(pd.DataFrame({
        "event_id": eid_part[3], "event_type": "unblock", "customer_id": cid[s_unb],
        "occurred_at": ops.unblock_t[s_unb],
    }))
    frames.append(pd.DataFrame({
        "event_id": eid_part[4], "event_type": "care_contact", "customer_id": cid[ops.contact_cust[s_care]],
        "occurred_at": ops.contact_t[s_care], "topic": ops.contact_topic[s_care],
    }))
    frames = [f for f in frames if len(f)]
    st = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(STREAM_COLUMNS))
    st = st.reindex(columns=list(STREAM_COLUMNS))
    st = st.sort_values("event_id", kind="stable").reset_index(drop=True)  # ids are chronological
    return pd.DataFrame({
        c: (
            _ts(st[c].to_numpy(dtype=np.int64)) if c == "occurred_at"
            else st[c].astype(np.float64) if c == "lifetime_value"
            else _str(st[c].astype(object).where(st[c].notna(), None).to_numpy())
        )
        for c in STREAM_COLUMNS
    })


def _truth(pop: Population, ops: Ops, ids: _Ids) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Ground truth per customer, plus who is fraud and who of them was caught (for the stats)."""
    N, cid = pop.n, ids.cid
    is_fraud = (pop.role != LEGIT) | pop.ato
    ftype = np.select([pop.role == RING, pop.role == MULTI, pop.role == SOFT, pop.ato],
                      ["ring", "multi_account", "soft_ring", "ato"], "none")
    gid = np.full(N, None, dtype=object)
    for r, fmt in ((RING, "ring{:04d}"), (MULTI, "ma{:04d}"), (SOFT, "sring{:04d}"), (LEGIT, "hh{:05d}")):
        m = np.flatnonzero((pop.role == r) & (pop.group >= 0))
        gid[m] = [fmt.format(x) for x in pop.group[m].tolist()]
    caught = is_fraud & (ops.block_t >= 0) & (ops.reason == "fraud")
    t_order = np.argsort(ids.cnum)
    truth = pd.DataFrame({
        "customer_id": _str(cid[t_order]),
        "is_fraud": is_fraud[t_order].astype(np.int8),
        "fraud_type": _str(ftype[t_order]),
        "group_id": _str(gid[t_order]),
        "fraud_start": _ts(np.where(is_fraud, pop.fraud_start, -1)[t_order]),
        "caught": caught[t_order].astype(np.int8),
    })
    return truth, is_fraud, caught


def _identifiers(pools: dict[str, Pool]) -> pd.DataFrame:
    ident = []
    for kind, col in (("device", "device_id"), ("ip", "ip"), ("email", "email"), ("phone", "phone"), ("card", "card_fingerprint")):
        ident.append(pd.DataFrame({"kind": col, "value": pools[kind].values, "role": pools[kind].roles}))
    return pd.concat(ident, ignore_index=True).astype("str")


def _stats(pop: Population, ops: Ops, ids: _Ids, is_fraud: np.ndarray, caught: np.ndarray,
           n_identity_events: int) -> dict[str, Any]:
    fp = (pop.role == LEGIT) & ~pop.ato & (ops.block_t >= 0) & (ops.reason == "fraud")
    review = np.zeros(pop.n, dtype=bool)
    review[ops.contact_cust[ops.contact_topic == "block_review"]] = True
    return {
        "rings": int(pop.ring_sizes.size),
        "ring_accounts": int((pop.role == RING).sum()),
        "multi_account_clusters": int(pop.multi_sizes.size),
        "multi_accounts": int((pop.role == MULTI).sum()),
        "ato_victims": int(pop.ato.sum()),
        "stealth_ato_victims": int(pop.stealth.sum()),
        "soft_rings": int(pop.soft_sizes.size),
        "soft_ring_accounts": int((pop.role == SOFT).sum()),
        "resold_devices": int(pop.resold.size),
        "household_fp_blocks": int(ops.household_fp.sum()),
        "fraud_lifted": int((is_fraud & (ops.reason == "fraud") & (ops.unblock_t >= 0)).sum()),
        "fraud_accounts": int(is_fraud.sum()),
        "fraud_caught": int(caught.sum()),
        "fraud_blocked_abuse": int((is_fraud & (ops.reason == "abuse")).sum()),
        "households": int(pop.hh_sizes.size),
        "household_members": int(pop.hh_sizes.sum()),
        "false_positive_blocks": int(fp.sum()),
        "false_positives_contested": int((fp & review).sum()),
        "false_positives_unblocked": int((fp & (ops.unblock_t >= 0)).sum()),
        "nonfraud_blocks": int(((pop.role == LEGIT) & (ops.block_t >= 0) & (ops.reason != "fraud")).sum()),
        "stream_new_customers": int(ids.new_c.size),
        "identity_events_total": n_identity_events,
    }


def generate_world(params: SynthParams) -> World:
    """Deterministic for a given ``params`` (seed included): the same seed is the same world, byte for byte."""
    if not isinstance(params, SynthParams):
        raise SchemaError(f"params: expected SynthParams, got {type(params).__name__}")
    p = params
    pop, pools = build_population(p)
    ev = behaviour_events(p, pop, pools)
    ops = operations(p, pop)
    ev = _drop_while_blocked(p, ev, ops)
    values = _customer_values(p, pop, ev)
    ids = _ids(p, pop, ops, ev)
    ev_cols = _identity_columns(ev, pools, ids)
    hist = _history(p, pop, ops, ev, ev_cols, ids, values)
    stream = _stream(p, pop, ops, ev, ev_cols, ids, values)
    truth, is_fraud, caught = _truth(pop, ops, ids)
    return World(
        params=p, customers=hist.customers, identity_events=hist.identity_events, blocks=hist.blocks,
        care_contacts=hist.care_contacts, stream=stream, truth=truth, identifiers=_identifiers(pools),
        stats=_stats(pop, ops, ids, is_fraud, caught, int(ev["t"].size)),
    )
