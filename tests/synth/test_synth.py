"""The synthetic world: deterministic, conforming to the input contract, and containing the fraud
scenarios later stages are measured on."""

from __future__ import annotations

import ipaddress
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from identigraph.errors import SchemaError
from identigraph.synth import SynthParams, generate_world, write_world

UTC = timezone.utc
IDENTITY_TYPES = {"signup", "login", "add_payment_method", "profile_update", "booking"}
IDS = ["device_id", "ip", "email", "phone", "card_fingerprint"]
TABLE_COLUMNS = {
    "customers": ["customer_id", "created_at", "country", "lifetime_value"],
    "identity_events": ["event_id", "customer_id", "event_type", "occurred_at", *IDS],
    "blocks": ["customer_id", "blocked_at", "reason", "source", "rule_name", "unblocked_at"],
    "care_contacts": ["customer_id", "contacted_at", "topic"],
}
TS_COLUMNS = {"created_at", "occurred_at", "blocked_at", "unblocked_at", "contacted_at"}
E164 = re.compile(r"^\+[1-9]\d{7,14}$")
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


@pytest.fixture(scope="module")
def world():
    return generate_world(SynthParams(customers=2000, seed=7))


def _ts(x) -> pd.Timestamp:
    return pd.Timestamp(x)


def identity_all(w) -> pd.DataFrame:
    """Identity events from the table and the stream together."""
    s = w.stream[w.stream.event_type.isin(IDENTITY_TYPES)]
    return pd.concat([w.identity_events, s[w.identity_events.columns]], ignore_index=True)


def all_blocks(w) -> pd.DataFrame:
    s = w.stream[w.stream.event_type == "block"].rename(columns={"occurred_at": "blocked_at"})
    return pd.concat([w.blocks[["customer_id", "blocked_at", "reason"]], s[["customer_id", "blocked_at", "reason"]]])


def check_contract(w) -> None:
    """Everything the input contract promises, checked on one world."""
    p = w.params
    end, cut = _ts(p.end), _ts(p.end) - timedelta(days=p.stream_days)
    for name, cols in TABLE_COLUMNS.items():
        df = getattr(w, name)
        assert list(df.columns) == cols, name
        for c in cols:
            if c in TS_COLUMNS:
                assert str(df[c].dtype) == "datetime64[us, UTC]", (name, c)
            elif c == "lifetime_value":
                assert df[c].dtype == np.float64
            else:
                assert pd.api.types.is_string_dtype(df[c]), (name, c)
    cu, ev, bl, cc, st = w.customers, w.identity_events, w.blocks, w.care_contacts, w.stream

    # keys and enums
    assert cu.customer_id.is_unique and cu.customer_id.str.fullmatch(r"c\d{7,}").all()
    assert cu.created_at.notna().all() and (cu.lifetime_value >= 0).all()
    assert set(cu.country.dropna()) <= {"AE", "SA", "PK", "EG", "JO"}
    assert set(ev.event_type) <= IDENTITY_TYPES
    assert set(bl.reason) <= {"fraud", "abuse", "other"} and set(bl.source) <= {"manual", "rule"}
    assert (bl.rule_name.notna() == (bl.source == "rule")).all()
    assert set(cc.topic) <= {"block_review", "payment", "other"}
    assert (bl.unblocked_at.isna() | (bl.unblocked_at > bl.blocked_at)).all()

    # identifiers look like what the platform sends
    ids = identity_all(w)
    for ip in ids.ip.dropna().unique():
        ipaddress.ip_address(ip)
    assert ids.phone.dropna().map(lambda s: bool(E164.match(s))).all()
    assert ids.card_fingerprint.dropna().str.fullmatch(r"card_[0-9a-f]{16}").all()
    assert ids.device_id.dropna().str.fullmatch(r"[0-9a-f]{16}").all()
    assert ids.email.dropna().str.fullmatch(r"[^@\s]+@[a-z0-9.-]+\.[a-z]+").all()

    # ids unique across tables and stream
    all_ids = pd.concat([ev.event_id, st.event_id])
    assert all_ids.is_unique and all_ids.str.fullmatch(r"ev\d{9,}").all()

    # time: history before the cut, stream in [cut, end), nothing before the account exists
    for df, col in ((cu, "created_at"), (ev, "occurred_at"), (bl, "blocked_at"), (cc, "contacted_at")):
        assert (df[col] < cut).all() and (df[col] >= _ts(p.start)).all(), col
    assert (bl.unblocked_at.dropna() < cut).all()
    assert ((st.occurred_at >= cut) & (st.occurred_at < end)).all()
    assert st.occurred_at.is_monotonic_increasing
    created = pd.concat([
        cu.set_index("customer_id").created_at,
        st[st.event_type == "customer_created"].set_index("customer_id").occurred_at,
    ])
    assert created.index.is_unique
    assert set(created.index) == set(w.truth.customer_id)
    assert set(st[st.event_type == "customer_created"].customer_id).isdisjoint(cu.customer_id)
    for df, col in ((ids, "occurred_at"), (bl, "blocked_at"), (cc, "contacted_at"), (st, "occurred_at")):
        assert (df[col].to_numpy() >= created.reindex(df.customer_id).to_numpy()).all(), col

    # every signup happens exactly at creation, once
    su = ids[ids.event_type == "signup"].set_index("customer_id").occurred_at
    assert su.index.is_unique and (su == created.reindex(su.index)).all()

    # an unblock in the stream lifts a block that is open at the cut or blocked in the stream
    open_at_cut = set(bl[bl.unblocked_at.isna()].customer_id) | set(st[st.event_type == "block"].customer_id)
    assert set(st[st.event_type == "unblock"].customer_id) <= open_at_cut

    # stream JSON: exactly the contract's fields, absent values omitted
    allowed = {
        **{t: set(IDS) for t in IDENTITY_TYPES},
        "customer_created": {"country", "lifetime_value"},
        "block": {"reason", "source", "rule_name"},
        "unblock": set(),
        "care_contact": {"topic"},
    }
    required = {"block": {"reason", "source"}, "care_contact": {"topic"}}
    recs = list(w.stream_records())
    assert len(recs) == len(st)
    for r in recs:
        assert r["schema_version"] == 1 and isinstance(r["schema_version"], int)
        assert ISO_Z.match(r["occurred_at"]) and r["event_type"] in allowed
        extra = set(r) - {"schema_version", "event_id", "event_type", "customer_id", "occurred_at"}
        assert extra <= allowed[r["event_type"]], r
        assert required.get(r["event_type"], set()) <= extra, r
        assert all(v is not None for v in r.values())
        json.dumps(r)


def test_contract_conformance(world):
    check_contract(world)
    assert len(world.stream) > 0 and len(world.blocks) > 0 and len(world.care_contacts) > 0
    assert set(world.stream.event_type) >= IDENTITY_TYPES | {"customer_created", "care_contact"}


@pytest.mark.parametrize(
    "kw",
    [
        dict(customers=10, seed=1),
        dict(customers=300, seed=2, ring_share=0, multi_account_share=0, ato_share=0, household_share=0,
             office_share=0, vpn_share=0, mobile_share=0, false_positive_rate=0, nonfraud_block_rate=0),
        dict(customers=400, seed=3, ring_share=0.2, multi_account_share=0.2, ato_share=0.1, detection_prob=1.0,
             false_positive_rate=0.2, contest_rate=1, unblock_rate=1, stream_days=60),
        dict(customers=300, seed=4, start=datetime(2026, 1, 1), end=datetime(2026, 1, 20, 12, 30),
             stream_days=0.5, events_per_customer=5, growth=0),
    ],
)
def test_contract_holds_at_edges(kw):
    w = generate_world(SynthParams(**kw))
    check_contract(w)
    if kw.get("stream_days") == 60:  # a long window holds every stream event type
        assert set(w.stream.event_type) == IDENTITY_TYPES | {"customer_created", "block", "unblock", "care_contact"}


def test_same_seed_same_world_different_seed_different():
    a = generate_world(SynthParams(customers=400, seed=11))
    b = generate_world(SynthParams(customers=400, seed=11))
    c = generate_world(SynthParams(customers=400, seed=12))
    for name in ("customers", "identity_events", "blocks", "care_contacts", "stream", "truth", "identifiers"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), obj=name)
    assert list(a.stream_records()) == list(b.stream_records())
    assert not a.identity_events.equals(c.identity_events)
    assert not a.customers.created_at.equals(c.customers.created_at)


def test_volume_close_to_target(world):
    n = len(identity_all(world)) / len(world.truth)
    assert 16 <= n <= 24
    mix = identity_all(world).event_type.value_counts(normalize=True)
    assert mix["booking"] > 0.35 and mix["login"] > 0.25 and mix["profile_update"] < 0.06


def test_rings_share_devices_and_cards(world):
    ev = identity_all(world).merge(world.truth, on="customer_id")
    ring = ev[ev.fraud_type == "ring"]
    assert ring.group_id.nunique() >= 2
    for col in ("device_id", "card_fingerprint"):
        widest = ring.groupby(["group_id", col]).customer_id.nunique().groupby("group_id").max()
        assert (widest >= 5).all(), col
    # ring accounts are created in a burst of at most a few days
    cr = world.truth.merge(world.customers, on="customer_id")
    span = cr[cr.fraud_type == "ring"].groupby("group_id").created_at.agg(lambda s: s.max() - s.min())
    assert (span <= pd.Timedelta(days=5)).all()
    # and their devices are not shared with legit accounts
    ring_devices = set(ring.device_id.dropna())
    assert ring_devices.isdisjoint(ev[ev.fraud_type == "none"].device_id.dropna())


def test_hubs_and_households(world):
    ev = identity_all(world)
    roles = world.identifiers
    nat = ev[ev.ip.isin(roles[roles.role == "carrier_nat"].value)].groupby("ip").customer_id.nunique()
    assert nat.max() >= 200 and (nat >= 100).sum() >= 3
    assert ev.ip.dropna().map(lambda s: ipaddress.ip_address(s).version).eq(6).any()
    vpn = ev[ev.ip.isin(roles[roles.role == "vpn"].value)].groupby("ip").customer_id.nunique()
    assert vpn.max() >= 10
    hh = ev.merge(world.truth, on="customer_id")
    hh = hh[hh.group_id.str.startswith("hh", na=False) & hh.ip.isin(roles[roles.role == "home"].value)]
    shared = hh.groupby(["group_id", "ip"]).customer_id.nunique().groupby("group_id").max()
    assert (shared >= 2).mean() > 0.9
    # a legit customer keeps one email and one phone (rare changes), all distinct from others
    legit = ev.merge(world.truth, on="customer_id").query("fraud_type == 'none'")
    assert (legit.groupby("email").customer_id.nunique() == 1).all()
    assert legit.groupby("customer_id").email.nunique().mean() < 1.1


def test_multi_accounts_share_device_and_card(world):
    ev = identity_all(world).merge(world.truth, on="customer_id")
    ma = ev[ev.fraud_type == "multi_account"]
    for col in ("device_id", "card_fingerprint"):
        widest = ma.groupby(["group_id", col]).customer_id.nunique().groupby("group_id").max()
        assert (widest == ma.groupby("group_id").customer_id.nunique()).all(), col
    assert ma.groupby("customer_id").email.nunique().max() == 1  # each account its own address
    assert ma.email.nunique() == ma.customer_id.nunique()


def test_takeover_signature(world):
    ev = identity_all(world).merge(world.truth, on="customer_id")
    ato = world.truth[world.truth.fraud_type == "ato"]
    assert len(ato) >= 3
    for _, v in ato.iterrows():
        e = ev[ev.customer_id == v.customer_id].sort_values("occurred_at")
        before, after = e[e.occurred_at < v.fraud_start], e[e.occurred_at >= v.fraud_start]
        assert (v.fraud_start - before.occurred_at.min()) >= pd.Timedelta(days=90)
        first = after.iloc[0]
        assert first.event_type == "login" and first.occurred_at == v.fraud_start
        assert first.device_id not in set(before.device_id)
        prof = after[after.event_type == "profile_update"]
        if len(prof):
            assert prof.email.iloc[0] not in set(before.email.dropna())
            assert prof.phone.iloc[0] not in set(before.phone.dropna())
    # victims are valuable old accounts
    ltv = world.customers.merge(world.truth, on="customer_id").groupby("fraud_type").lifetime_value.median()
    assert ltv["ato"] > ltv["none"] > ltv["ring"]


def test_detection_is_partial_and_labels_are_noisy(world):
    tr, bl, cc = world.truth, world.blocks, world.care_contacts
    fraud = tr[tr.is_fraud == 1]
    assert 0 < fraud.caught.sum() < len(fraud)
    assert 0.3 < fraud.caught.mean() < 0.9
    legit = set(tr[tr.is_fraud == 0].customer_id)
    fp = bl[(bl.reason == "fraud") & bl.customer_id.isin(legit)]
    assert len(fp) >= 5 and (fp.source == "rule").all()
    contested = fp.customer_id.isin(cc[cc.topic == "block_review"].customer_id)
    assert contested.mean() > 0.5
    assert fp.unblocked_at.notna().sum() >= 1
    # only contested blocks are lifted, after the contact
    review = cc[cc.topic == "block_review"].groupby("customer_id").contacted_at.min()
    lifted = fp[fp.unblocked_at.notna()]
    assert (lifted.unblocked_at.to_numpy() > review.reindex(lifted.customer_id).to_numpy()).all()
    assert set(bl.reason) >= {"fraud", "abuse"}


def test_recent_fraud_is_caught_less():
    kw = dict(ring_share=0.1, multi_account_share=0.1, ato_share=0.05, detection_prob=0.9)
    w = generate_world(SynthParams(customers=4000, seed=0, **kw))
    f = w.truth[w.truth.is_fraud == 1]
    age = w.params.end - f.fraud_start
    recent, old = f[age < pd.Timedelta(days=14)], f[age > pd.Timedelta(days=60)]
    assert len(recent) >= 20 and len(old) >= 200
    assert recent.caught.mean() < old.caught.mean()


def test_truth_consistent_with_blocks(world):
    tr = world.truth
    blocks = all_blocks(world)
    fraud_blocked = set(blocks[blocks.reason == "fraud"].customer_id)
    expect = tr.customer_id.isin(fraud_blocked) & (tr.is_fraud == 1)
    assert (tr.caught.astype(bool) == expect).all()
    assert (tr.is_fraud.astype(bool) == (tr.fraud_type != "none")).all()
    assert (tr.fraud_start.notna() == tr.is_fraud.astype(bool)).all()
    assert tr.group_id[tr.fraud_type == "ring"].str.startswith("ring").all()
    assert tr.group_id[tr.fraud_type == "multi_account"].str.startswith("ma").all()
    sizes = tr[tr.fraud_type == "ring"].groupby("group_id").size()
    assert sizes.between(5, 40).all()
    # a blocked fraudster stops acting
    ev = identity_all(world)
    first_block = blocks[blocks.customer_id.isin(tr[tr.is_fraud == 1].customer_id)].groupby("customer_id").blocked_at.min()
    e = ev[ev.customer_id.isin(first_block.index)]
    assert (e.occurred_at.to_numpy() < first_block.reindex(e.customer_id).to_numpy()).all()


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        (dict(customers=5), "customers"),
        (dict(customers="many"), "customers"),
        (dict(detection_prob=1.5), "detection_prob"),
        (dict(bogus=1), "bogus"),
        (dict(end=datetime(2020, 1, 1, tzinfo=UTC)), "end"),
        (dict(stream_days=10_000), "stream_days"),
        (dict(ring_size_min=30, ring_size_max=10), "ring_size_min"),
    ],
)
def test_validation_names_the_field(kw, field):
    with pytest.raises(SchemaError, match=field):
        SynthParams(**kw)


def test_params_defaults_and_bad_inputs(tmp_path):
    p = SynthParams()
    assert p.start == datetime(2024, 7, 1, tzinfo=UTC) and p.end == datetime(2026, 6, 30, tzinfo=UTC)
    assert SynthParams(start=datetime(2024, 7, 1)).start.tzinfo is not None  # naive means UTC
    with pytest.raises(SchemaError, match="customers"):
        SynthParams.model_validate({"customers": 1})
    with pytest.raises(SchemaError, match="params"):
        generate_world({"customers": 100})
    w = generate_world(SynthParams(customers=50, seed=1))
    with pytest.raises(SchemaError, match="fmt"):
        write_world(w, tmp_path / "out", fmt="xlsx")
    assert not (tmp_path / "out").exists()


def _read_table(path: Path, fmt: str) -> pd.DataFrame:
    if fmt == "parquet":
        return pd.read_parquet(path)
    df = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str)
    return df


@pytest.mark.parametrize("fmt", ["parquet", "csv", "csv.gz"])
def test_write_and_read_back(tmp_path, fmt):
    w = generate_world(SynthParams(customers=300, seed=3))
    out = tmp_path / "world"
    counts = write_world(w, out, fmt=fmt)
    assert counts == w.counts()
    names = sorted(x.name for x in out.iterdir())
    assert names == sorted([f"{t}.{fmt}" for t in TABLE_COLUMNS] + ["stream.jsonl", "truth.csv", "manifest.json"])
    for name, cols in TABLE_COLUMNS.items():
        df = _read_table(out / f"{name}.{fmt}", fmt)
        src = getattr(w, name)
        assert list(df.columns) == cols and len(df) == len(src)
        for c in cols:
            if c in TS_COLUMNS and fmt != "parquet":
                assert df[c].dropna().str.match(ISO_Z).all()
                got = pd.to_datetime(df[c], utc=True).astype("datetime64[us, UTC]")
            elif c == "lifetime_value" and fmt != "parquet":
                got = df[c].astype(float)
            else:
                got = df[c]
            pd.testing.assert_series_equal(got, src[c], check_names=False, check_dtype=fmt == "parquet", obj=c)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        schema = pq.read_schema(out / "identity_events.parquet")
        assert str(schema.field("occurred_at").type) == "timestamp[us, tz=UTC]"
        assert str(schema.field("ip").type) == "string"
    lines = (out / "stream.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == list(w.stream_records())
    truth = pd.read_csv(out / "truth.csv", keep_default_na=False, na_values=[""])
    assert list(truth.columns) == ["customer_id", "is_fraud", "fraud_type", "group_id", "fraud_start", "caught"]
    assert truth.is_fraud.tolist() == w.truth.is_fraud.tolist() and truth.caught.tolist() == w.truth.caught.tolist()
    assert truth.fraud_start.isna().tolist() == (truth.is_fraud == 0).tolist()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["seed"] == 3 and manifest["counts"] == counts and manifest["params"]["customers"] == 300


def test_gzip_output_is_reproducible(tmp_path):
    w = generate_world(SynthParams(customers=100, seed=3))
    write_world(w, tmp_path / "a", fmt="csv.gz")
    write_world(w, tmp_path / "b", fmt="csv.gz")
    for name in TABLE_COLUMNS:
        assert (tmp_path / "a" / f"{name}.csv.gz").read_bytes() == (tmp_path / "b" / f"{name}.csv.gz").read_bytes()


def test_write_is_atomic(tmp_path, monkeypatch):
    w = generate_world(SynthParams(customers=100, seed=3))
    out = tmp_path / "world"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(SchemaError, match="not empty"):
        write_world(w, out)
    assert [x.name for x in out.iterdir()] == ["keep.txt"]

    # a failure half-way leaves the old directory exactly as it was and no temporary litter
    import identigraph.synth.io as sio

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(sio, "_write_csv", boom)
    with pytest.raises(OSError, match="disk full"):
        write_world(w, out, fmt="csv", overwrite=True)
    assert [x.name for x in out.iterdir()] == ["keep.txt"]
    assert sorted(x.name for x in tmp_path.iterdir()) == ["world"]
    monkeypatch.undo()

    fresh = tmp_path / "fresh"
    real = sio.pq.write_table
    written = []

    def second_fails(table, path, *a, **k):
        if written:
            raise OSError("disk full")
        written.append(path)
        real(table, path, *a, **k)

    monkeypatch.setattr(sio.pq, "write_table", second_fails)
    with pytest.raises(OSError):
        write_world(w, fresh)
    monkeypatch.undo()
    assert len(written) == 1  # one file had been written before the failure
    assert not fresh.exists() and sorted(x.name for x in tmp_path.iterdir()) == ["world"]

    write_world(w, out, overwrite=True)
    assert "keep.txt" not in {x.name for x in out.iterdir()}
    assert (out / "customers.parquet").exists()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["world"]

    empty = tmp_path / "empty"
    empty.mkdir()
    write_world(w, empty)  # an empty directory is fine without overwrite
    assert (empty / "manifest.json").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(SchemaError, match="not a directory"):
        write_world(w, tmp_path / "file", overwrite=True)


# ---- the hard profile: fraud that hides its sharing, noisy operations, drift ---------------------------------

@pytest.fixture(scope="module")
def hard():
    return generate_world(SynthParams.profile("hard", customers=6000, seed=4))


def test_profiles_classic_is_the_default_and_unknown_names_are_errors():
    assert SynthParams.profile("classic", customers=500, seed=3) == SynthParams(customers=500, seed=3)
    hard = SynthParams.profile("hard", customers=500, detection_prob=0.7)
    assert hard.soft_ring_share > 0 and hard.detection_prob == 0.7  # overrides win over the preset
    with pytest.raises(SchemaError, match="profile"):
        SynthParams.profile("impossible")
    with pytest.raises(SchemaError, match="soft_ring_share"):
        SynthParams(ring_share=0.3, soft_ring_share=0.3)


def test_hard_world_keeps_the_contract(hard):
    check_contract(hard)
    st = hard.stats
    assert st["soft_rings"] >= 5 and st["stealth_ato_victims"] >= 5 and st["household_fp_blocks"] >= 5
    assert st["fraud_lifted"] >= 1 and st["resold_devices"] >= 5


def test_soft_rings_share_no_hard_identifier_only_a_proxy_block_and_a_burst(hard):
    ev = identity_all(hard).merge(hard.truth, on="customer_id")
    soft = ev[ev.fraud_type == "soft_ring"]
    assert soft.group_id.nunique() >= 5
    for col in ("device_id", "card_fingerprint", "email", "phone"):
        users = ev.dropna(subset=[col]).groupby(col).customer_id.nunique()
        assert (users.reindex(soft[col].dropna().unique()) == 1).all(), col  # nobody else, ring or not
    # the ring's proxy addresses sit in one /24 per ring, and honest homes sit behind them too
    roles = hard.identifiers
    proxy = set(roles[roles.role == "residential_proxy"].value)
    on_proxy = soft[soft.ip.isin(proxy)]
    prefixes = on_proxy.assign(p24=on_proxy.ip.str.rsplit(".", n=1).str[0]).groupby("group_id").p24.nunique()
    assert (prefixes == 1).all()
    shared = on_proxy.groupby(["group_id", "ip"]).customer_id.nunique().groupby("group_id").max()
    assert (shared >= 2).mean() > 0.5
    assert ev[(ev.fraud_type == "none") & ev.ip.isin(proxy)].customer_id.nunique() >= 5
    cr = hard.truth.merge(hard.customers, on="customer_id")
    span = cr[cr.fraud_type == "soft_ring"].groupby("group_id").created_at.agg(lambda s: s.max() - s.min())
    assert (span <= pd.Timedelta(days=10)).all()
    # drift: the pattern exists only in the last drift_days
    first = cr[cr.fraud_type == "soft_ring"].created_at.min()
    assert first >= pd.Timestamp(hard.params.end) - pd.Timedelta(days=hard.params.drift_days)


def test_stealth_takeovers_show_only_in_edge_timing(hard):
    ev = identity_all(hard).merge(hard.truth, on="customer_id")
    ato = hard.truth[hard.truth.fraud_type == "ato"]
    quiet = 0
    for _, v in ato.iterrows():
        e = ev[ev.customer_id == v.customer_id]
        before, after = e[e.occurred_at < v.fraud_start], e[e.occurred_at >= v.fraud_start]
        if (after.event_type == "profile_update").any():
            continue
        quiet += 1
        assert set(after.email.dropna()) <= set(before.email.dropna())  # the victim's own address
        assert after.phone.isna().all()
        new_dev = set(after.device_id.dropna()) - set(before.device_id.dropna())
        assert len(new_dev) == 1
        assert after.card_fingerprint.dropna().isin(before.card_fingerprint.dropna()).mean() < 1
    assert quiet >= 5


def test_wrong_blocks_hit_whole_households_and_some_fraud_talks_its_way_out(hard):
    tr, bl, cc = hard.truth, hard.blocks, hard.care_contacts
    hh = bl[bl.rule_name.eq("shared_device")].merge(tr, on="customer_id")
    hh = hh[hh.group_id.str.startswith("hh", na=False)]
    per = hh.groupby("group_id").agg(n=("customer_id", "size"), span=("blocked_at", lambda s: s.max() - s.min()))
    assert (per.n >= 2).sum() >= 3 and (per.span[per.n >= 2] <= pd.Timedelta(hours=1)).all()
    lifted = bl[bl.unblocked_at.notna()].merge(tr, on="customer_id")
    lifted_fraud = lifted[lifted.is_fraud == 1]
    assert len(lifted_fraud) >= 1
    review = cc[cc.topic == "block_review"].groupby("customer_id").contacted_at.min()
    assert (lifted_fraud.unblocked_at.to_numpy() > review.reindex(lifted_fraud.customer_id).to_numpy()).all()


def test_resold_phones_join_honest_accounts_years_apart(hard):
    ev = identity_all(hard).merge(hard.truth, on="customer_id")
    legit = ev[ev.fraud_type == "none"].dropna(subset=["device_id"])
    roles = hard.identifiers
    phones = set(roles[(roles.kind == "device_id") & (roles.role == "phone")].value)
    use = legit[legit.device_id.isin(phones)].groupby(["device_id", "customer_id"]).occurred_at.agg(["min", "max"])
    multi = use.groupby(level=0).filter(lambda g: len(g) == 2)
    assert len(multi) >= 10
    gaps = multi.groupby(level=0).apply(lambda g: g["min"].max() - g["max"].min())
    assert (gaps >= pd.Timedelta(days=7)).mean() > 0.8  # the second owner starts after the first stopped
