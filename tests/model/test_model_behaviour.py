"""Behaviour tests, kept in CI like regression tests: a model trained on a small hard synthetic world must
flag a fresh fraud ring and a ring that shares no hard identifier (soft signals only) in a world it never saw,
leave a legitimate household alone, and give finite scores on awkward graphs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from identigraph.lifecycle import behaviour
from identigraph.model.artifacts import LoadedModel
from identigraph.model.config import load_model_config
from identigraph.model.frame import read_snapshot
from identigraph.model.pipeline import run_predict, run_train
from identigraph.synth import SynthParams, generate_world, write_world

KEY = b"behaviour-test-key-0123456789abcd"
# the hard profile with its soft rings present throughout (no drift): the model has seen the pattern before
WORLD = dict(drift_days=0.0)
HARD_IDENTIFIERS = ("device", "card", "email", "phone")


@pytest.fixture(scope="module")
def trained(spark, settings, tmp_path_factory):
    from identigraph.etl.job import run_etl
    from identigraph.labeling.job import run_labeling

    root = tmp_path_factory.mktemp("behaviour")
    write_world(generate_world(SynthParams.profile("hard", customers=5000, seed=5, **WORLD)), root / "world")
    run_etl(spark, settings, root / "world", root / "snapshot", KEY)
    run_labeling(spark, root / "snapshot", root / "labels")
    cfg = load_model_config(overrides={"training.epochs": 80})
    run_train(root / "snapshot", root / "model", cfg, labels=root / "labels", log=lambda _: None)
    return root, LoadedModel.load(root / "model"), read_snapshot(root / "snapshot")


@pytest.fixture(scope="module")
def fresh_world(spark, settings, trained):
    """A second world from another seed: rings the model has never seen, each partly caught as rings are —
    except the soft rings, which nobody caught (a soft ring of 5–11 is rarely left whole at the usual rate)."""
    from identigraph.etl.job import run_etl

    root = trained[0] / "fresh"
    write_world(generate_world(SynthParams.profile("hard", customers=4000, seed=99, soft_ring_detection_prob=0.0,
                                                       **WORLD)), root / "world")
    run_etl(spark, settings, root / "world", root / "snapshot", KEY)
    return read_snapshot(root / "snapshot"), pd.read_csv(root / "world" / "truth.csv", dtype={"customer_id": str})


def test_a_fresh_fraud_ring_scores_above_the_threshold(trained, fresh_world):
    """The unblocked members of every ring in an unseen world: flagged although nobody blocked *them*."""
    _, model, _ = trained
    frame, truth = fresh_world
    blocked = frame.vertices["customer"]["blocked"] == 1.0
    rings = truth[truth["fraud_type"] == "ring"]
    members = ["customer:" + c for c in rings["customer_id"] if "customer:" + c in blocked.index]
    unblocked = [m for m in members if not blocked[m]]
    assert len(unblocked) >= 5
    scores = model.score(frame, unblocked)
    assert np.isfinite(scores).all()
    assert np.median(scores) >= model.threshold, (scores, model.threshold)  # most members are flagged


def test_a_ring_sharing_no_hard_identifier_with_nobody_blocked_scores_above_the_threshold(trained, fresh_world):
    """Soft rings of an unseen world with no member blocked: only the proxy /24 and the creation burst tie them."""
    _, model, _ = trained
    frame, truth = fresh_world
    vf = frame.vertices["customer"]
    soft = truth[truth["fraud_type"] == "soft_ring"].assign(vid="customer:" + truth["customer_id"])
    soft = soft[soft["vid"].isin(vf.index)]
    clean = soft.groupby("group_id")["vid"].apply(list)
    clean = clean[clean.map(lambda ids: not (vf.loc[ids, "n_blocks"] > 0).any())]
    members = [v for ids in clean for v in ids]
    assert len(clean) >= 2 and len(members) >= 8, clean
    # no device, card, email or phone of theirs has a second customer: nothing hard is shared
    for label in HARD_IDENTIFIERS:
        e = next(ef for (s, _, d), ef in frame.edges.items() if d == label)
        mine = e[e["src"].isin(members)]["dst"]
        assert (e[e["dst"].isin(mine)].groupby("dst").size() == 1).all(), label
    scores = model.score(frame, members)
    assert np.isfinite(scores).all()
    assert np.median(scores) >= model.threshold, (np.round(scores, 3), model.threshold)


def test_a_legitimate_household_sharing_a_home_ip_and_a_tablet_stays_below_the_threshold(trained):
    _, model, frame = trained
    g, home = behaviour.household(frame)
    scores = model.score(g, home)
    assert (scores < model.threshold).all(), (scores, model.threshold)


def test_isolated_customers_hubs_with_10000_customers_and_empty_values_give_finite_scores(trained):
    _, model, frame = trained
    g, ids = behaviour.awkward_graphs(frame, hub_size=10_001)
    assert ids[-1] == "customer:hub_9999" and g.degree["ip:198.51.100.1"] == 40_000
    scores = model.score(g, ids)
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()


def test_predict_writes_one_score_per_customer(trained, tmp_path):
    root, _, frame = trained
    n = run_predict(root / "snapshot", root / "model", tmp_path / "preds.csv", load_model_config())
    preds = pd.read_csv(tmp_path / "preds.csv", dtype={"customer_id": str})
    assert list(preds.columns) == ["id", "customer_id", "score"] and n == len(frame.vertices["customer"])
    assert (preds["id"] == "customer:" + preds["customer_id"]).all() and preds["score"].between(0, 1).all()


def test_backtest_trains_in_the_past_and_judges_against_what_the_platform_confirmed_since(spark, settings, trained):
    """Snapshot and labels 60 days back, from the same world: train there, score the customers not blocked
    then, and compare with the blocks that stand in today's snapshot (lead time) and with the truth."""
    from datetime import timedelta

    from identigraph.etl.job import run_etl
    from identigraph.labeling.job import run_labeling
    from identigraph.model.backtest import run_backtest
    from identigraph.model.pipeline import prepare, read_truth

    root, _, frame = trained
    as_of = pd.Timestamp(frame.as_of).to_pydatetime()
    run_etl(spark, settings, root / "world", root / "past", KEY, as_of=as_of - timedelta(days=60))
    run_labeling(spark, root / "past", root / "past_labels")
    cfg = load_model_config(overrides={"training.epochs": 30})
    past = prepare(root / "past", cfg, labels=root / "past_labels")
    assert pd.Timestamp(past.frame.as_of) == pd.Timestamp(as_of) - pd.Timedelta(days=60)
    truth = read_truth(root / "world" / "truth.csv")
    bt = run_backtest(past, frame, cfg, truth=truth, log=lambda _: None)
    assert bt["horizon_days"] == pytest.approx(60, abs=0.01)
    blocked_then = past.frame.vertices["customer"]["blocked"] == 1.0
    assert bt["scored"] == int((~blocked_then).sum())
    for view in ("confirmed_by_T", "truth", "confirmed_fraud_by_T"):
        rows = bt["views"][view]
        assert set(rows) == {"model", "rgcn_ablation", "gbdt_baseline", "neighbour_rule"}
        assert rows["model"]["positives"] > 0 and 0 <= rows["model"]["auprc"] <= 1
    # confirmed = a fraud block after the past as-of that still stands now, among customers scored then
    now = frame.vertices["customer"]
    standing = (now["blocked"] == 1.0) & (now["last_block_reason"] == "fraud") & \
        (now["last_block_at"] > pd.Timestamp(past.frame.as_of))
    scored = blocked_then.index[~blocked_then.to_numpy()]
    assert bt["views"]["confirmed_by_T"]["model"]["positives"] == int(standing.reindex(scored).fillna(False).sum())
    lead = bt["lead_time"]["model"]
    assert lead["confirmed"] == bt["views"]["confirmed_by_T"]["model"]["positives"]
    if lead["flagged_then_blocked"]:
        assert 0 <= lead["median_days"] <= 60
    # the right later blocks: confirmed and, by the truth, fraud that had begun by the back-test date
    start = pd.to_datetime(truth["fraud_start"], utc=True, errors="coerce")
    begun = pd.Series(((truth["is_fraud"] == 1) & (start <= pd.Timestamp(past.frame.as_of))).to_numpy(),
                      index="customer:" + truth["customer_id"].astype(str))
    right = standing.reindex(scored).fillna(False) & begun.reindex(scored).fillna(False)
    assert bt["views"]["confirmed_fraud_by_T"]["model"]["positives"] == lead["confirmed_fraud"] == int(right.sum())
    c = bt["confirmations"]
    assert c["confirmed"] == lead["confirmed"] and c["fraud_begun_by_then"] == int(right.sum())
    assert c["fraud_begun_by_then"] + c["fraud_begun_after"] + c["honest"] == c["confirmed"]
    assert lead["flagged_then_blocked_fraud"] <= lead["flagged_then_blocked"]
    # what `identigraph evaluate --backtest-*` prints
    from rich.console import Console

    from identigraph.model.cli import print_backtest
    out = Console(record=True, width=250)
    print_backtest(bt, out)
    text = out.export_text()
    assert f"{c['confirmed']:,} later fraud blocks, by the truth: {c['fraud_begun_by_then']:,} fraud visible" in text
    assert "back-test vs confirmed fraud by T" in text and "median days, fraud" in text
