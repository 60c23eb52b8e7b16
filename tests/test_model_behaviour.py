"""Behaviour tests, kept in CI like regression tests: a model trained on a small synthetic world must flag
a fresh fraud ring, leave a legitimate household alone, and give finite scores on awkward graphs."""

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


@pytest.fixture(scope="module")
def trained(spark, settings, tmp_path_factory):
    from identigraph.etl.job import run_etl
    from identigraph.labeling.job import run_labeling

    root = tmp_path_factory.mktemp("behaviour")
    write_world(generate_world(SynthParams(customers=4000, seed=5)), root / "world")
    run_etl(spark, settings, root / "world", root / "snapshot", KEY)
    run_labeling(spark, root / "snapshot", root / "labels")
    cfg = load_model_config(overrides={"training.epochs": 80})
    run_train(root / "snapshot", root / "model", cfg, labels=root / "labels", log=lambda _: None)
    return root, LoadedModel.load(root / "model"), read_snapshot(root / "snapshot")


@pytest.fixture(scope="module")
def fresh_world(spark, settings, trained):
    """A second world from another seed: rings the model has never seen, each partly caught as rings are."""
    from identigraph.etl.job import run_etl

    root = trained[0] / "fresh"
    write_world(generate_world(SynthParams(customers=2000, seed=99)), root / "world")
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
