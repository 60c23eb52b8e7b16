"""`make demo`'s pipeline end to end on a tiny world, with its own services: every stage leaves output."""

from __future__ import annotations

import pytest
from rich.console import Console

from conftest import make_settings
from identigraph.demo import run_demo


@pytest.mark.services  # run_demo starts its own Gremlin Server and ElasticMQ (stage 1), not the session fixture
def test_demo_runs_every_stage_on_a_tiny_world(tmp_path):
    settings = make_settings(tmp_path / "data")
    console = Console(record=True, width=140)
    summary = run_demo(settings, customers=1500, keep_running=False, console=console,
                       model_overrides={"training.epochs": 25})
    text = console.export_text()
    assert summary["snapshot"]["tables"]["identity_events"]["good"] > 10_000
    assert summary["labels"]["customers"] > 1000
    assert summary["stream"].applied > 0 and summary["stream"].dead_lettered == 0
    assert summary["graph"]["v:customer"] >= 1400
    assert 0 < summary["model"]["threshold"] < 1 and summary["model"]["val"]["auprc"] > 0.5
    views = summary["evaluation"]["views"]
    assert set(views["test_unblocked_vs_truth"]) >= {"model", "rgcn_ablation", "gbdt_baseline"}
    for net in ("model", "rgcn_ablation"):  # where each network stopped, so a cut-short comparison shows
        run = summary["evaluation"]["training"][net]
        assert 1 <= run["best_epoch"] <= run["epochs_run"] <= 25
    assert "best epoch / epochs run: model " in text
    blend = summary["evaluation"]["stacked_blend"]  # the GNN + GBDT candidate, its weight from validation
    assert 0.0 <= blend["weight_on_model"] <= 1.0 and "stacked_blend" in views["test_unblocked_vs_truth"]
    assert "stacked_blend (a candidate, not served): " in text
    kinds = summary["evaluation"]["by_fraud_type"]["model"]  # hidden fraud per scenario, printed as a table
    assert kinds and sum(k["positives"] for k in kinds.values()) == views["test_unblocked_vs_truth"]["model"]["positives"]
    assert "by fraud scenario" in text
    decisions = summary["decisions"]
    assert {d["who"] for d in decisions} >= {"ring member (never blocked)", "household member (legitimate)"}
    for d in decisions:
        assert d["decision"] in {"allow", "review", "block"} and not d["degraded"] and d["model_version"]
    household = next(d for d in decisions if d["who"].startswith("household"))
    assert household["decision"] == "allow"
    review = summary["review"]  # the console took the cases scoring sent it, and the output says where it is
    assert review["sent"] >= 1 and review["arrived"] == review["sent"] and review["open"] >= review["arrived"]
    assert f"review console: {review['url']}" in text and review["url"].endswith("/review")
    assert f"local-reviewer-key; {review['open']} cases waiting" in text
    for stage in ("1. local services", "3. historical load", "6. train", "7. evaluation", "8. the scoring API",
                  "9. the review console", "services down"):
        assert stage in text
