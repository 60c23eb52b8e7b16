"""A short tuning run on a hand-made graph (rings and households): trials are pruned early through the
per-epoch callback, the default configuration is in the study, and the time objective gives a Pareto front."""

from __future__ import annotations

import json

import numpy as np
import pytest

from identigraph.lifecycle.config import load_tune_config
from identigraph.lifecycle.tune import configured, run_study, run_tune
from identigraph.model.config import load_model_config
from identigraph.model.pipeline import prepare
from identigraph.model.train import train
from model_graphs import make_frame
from test_model_units import ring_and_households


@pytest.fixture(scope="module")
def toy():
    frame = make_frame(*ring_and_households(n_rings=8, n_homes=40, blocked_per_ring=3))
    base = load_model_config(overrides={"split": "stratified", "training.patience": 50, "network.hidden": 16})
    p = prepare(frame, base, target="customer.blocked")
    # 10% of labels flipped: on clean labels every configuration reaches AUPRC 1.0 and there is nothing to prune
    flip = np.random.default_rng(0).random(len(p.targets.y)) < 0.1
    p.targets.y = np.where(flip, 1 - p.targets.y, p.targets.y)
    return base, p


def test_on_epoch_returning_false_stops_training(toy):
    base, p = toy
    seen = []
    result = train(p.tensors, p.targets, configured(base, {}, epochs=30), on_epoch=lambda e, v: seen.append(v) or e < 3)
    assert len(result.history) == 3 and len(seen) == 3 and np.isfinite(seen).all()


def test_hyperband_prunes_poor_trials_and_keeps_the_default_in_the_study(toy, tmp_path):
    base, p = toy
    tcfg = load_tune_config(overrides={"trials": 9, "min_epochs": 2, "max_epochs": 18, "reduction_factor": 3,
                                       "seed": 3})
    result, metrics = run_tune(tmp_path / "unused-snapshot", tmp_path / "model", base, tcfg,
                               target="customer.blocked", log=lambda _: None, prepared=p)
    trials = result.trials
    assert len(trials) == 9 and trials[0]["default"]
    assert {k: trials[0][k] for k in ("network.hidden", "network.layers", "training.lr")} == {
        "network.hidden": 16, "network.layers": 2, "training.lr": 0.005}  # the base configuration, first
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    assert any(t["epochs"] < 18 for t in pruned) and all(t["epochs"] == 18 for t in trials if t not in pruned)
    assert result.best_value == max(t["value"] for t in trials if t["state"] == "COMPLETE")
    saved = json.loads((tmp_path / "model" / "tuning.json").read_text())
    assert saved["pruned"] == len(pruned) and saved["best_params"] == result.best_params
    assert saved["test"] == metrics["test"] and (tmp_path / "model" / "model.pt").exists()


def test_time_as_second_objective_gives_a_pareto_front_without_pruning(toy):
    base, p = toy
    tcfg = load_tune_config(overrides={"trials": 3, "max_epochs": 6, "second_objective": "train_seconds"})
    result = run_study(p, base, tcfg, log=lambda _: None)
    assert result.pruned == 0 and result.pareto
    assert all({"value", "train_seconds"} <= set(row) for row in result.pareto)
