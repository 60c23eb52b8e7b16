"""Conditional registration and the promotion rules: what passes, what is refused, and the reasons given."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from identigraph.cli import app
from identigraph.errors import ConfigError
from identigraph.lifecycle.config import GateConfig, load_lifecycle_config
from identigraph.lifecycle.deploy import Deployments
from identigraph.lifecycle.flow import Lifecycle, Refused
from identigraph.lifecycle.gate import flat_metrics, registration_gate
from lifecycle_helpers import fake_model, mlflow_registry

BAR = GateConfig(min={"test.recall_at_p85": 0.5, "test.auprc": 0.6}, threshold_reached=True,
                 max_drop_vs_production={"test.auprc": 0.03})


def _flat(auprc=0.8, recall=0.6, reached=True) -> dict:
    split = {"auprc": auprc, "recall_at_p85": recall}
    return flat_metrics({"val": split, "test": split, "threshold_reached": reached})


def test_gate_passes_a_model_over_the_bar_and_says_what_it_checked():
    verdict = registration_gate(_flat(), BAR)
    assert verdict.ok and verdict.reasons == []
    assert [c["check"] for c in verdict.checks] == ["min:test.recall_at_p85", "min:test.auprc", "threshold_reached",
                                                    "vs_production"]


def test_gate_refuses_below_the_bar_with_each_reason():
    verdict = registration_gate(_flat(auprc=0.55, recall=0.3, reached=False), BAR)
    assert not verdict.ok
    assert verdict.reasons == ["test.recall_at_p85 0.3000 < bar 0.5000", "test.auprc 0.5500 < bar 0.6000",
                               "validation never reached the target precision: the threshold is a best-F1 fallback"]


def test_gate_compares_with_production_within_the_tolerance():
    production = _flat(auprc=0.85)
    assert registration_gate(_flat(auprc=0.83), BAR, production, "7").ok  # 0.02 worse: within 0.03
    verdict = registration_gate(_flat(auprc=0.80), BAR, production, "7")
    assert not verdict.ok and verdict.reasons == [
        "test.auprc 0.8000 vs production 7 0.8500 (drop +0.0500, tolerance 0.0300)"]


def test_config_names_an_unknown_metric():
    with pytest.raises(ConfigError, match=r"gate.min.*unknown metric.*test.aurpc"):
        load_lifecycle_config(overrides={"gate.min": {"test.aurpc": 0.5}})


@pytest.fixture
def lifecycle(tmp_path):
    cfg = load_lifecycle_config(overrides={"gate.min": BAR.min, "gate.max_drop_vs_production": {"test.auprc": 0.03}})
    return Lifecycle(cfg, mlflow_registry(tmp_path / "mlflow"), Deployments(tmp_path / "deploy"))


def test_registration_refused_writes_nothing_and_promotion_rules_hold(lifecycle, tmp_path):
    with pytest.raises(Refused, match=r"(?s)refused.*test.auprc 0.5000 < bar 0.6000"):
        lifecycle.register(fake_model(tmp_path / "weak", "weak00000000", auprc=0.5))
    assert lifecycle.registry.list() == []

    mv, verdict = lifecycle.register(fake_model(tmp_path / "good", "good00000000", auprc=0.8))
    assert verdict.ok and mv.status == "pending"
    with pytest.raises(Refused, match="is pending, not approved"):
        lifecycle.promote(mv.version, "staging")
    lifecycle.approve(mv.version, by="alice")
    with pytest.raises(Refused, match="must be in staging first"):
        lifecycle.promote(mv.version, "production")

    _, report = lifecycle.promote(mv.version, "staging")
    staging = lifecycle.deploy.path("staging")
    assert staging.is_symlink() and lifecycle.deploy.serving("staging") == "good00000000"
    assert report["deployed"] == str(staging) and lifecycle.registry.current("staging").version == mv.version
    assert lifecycle.deploy.serving("production") is None

    staging.unlink()  # a new serving host: the registry says what each stage serves
    assert lifecycle.sync() == {"staging": "good00000000", "production": None}
    assert lifecycle.deploy.serving("staging") == "good00000000"


def test_cli_register_refuses_with_reasons_then_registers(tmp_path, monkeypatch):
    monkeypatch.setenv("IDENTIGRAPH__DATA_DIR", str(tmp_path / "data"))
    mlflow_registry(tmp_path / "data" / "mlflow")  # the default local registry under data_dir, pre-migrated
    conf = tmp_path / "lifecycle.yaml"
    conf.write_text(yaml.safe_dump({"gate": {"min": {"test.recall_at_p85": 0.5}}}))
    runner = CliRunner()
    weak = fake_model(tmp_path / "weak", "weak00000000", recall=0.2)
    r = runner.invoke(app, ["model", "register", str(weak), "--lifecycle-config", str(conf)])
    assert r.exit_code != 0 and "refused" in str(r.exception) and "test.recall_at_p85 0.2000 < bar" in r.output

    good = fake_model(tmp_path / "good", "good00000000", recall=0.7)
    r = runner.invoke(app, ["model", "register", str(good), "--lifecycle-config", str(conf)])
    assert r.exit_code == 0, r.output
    assert "registered version 1 (model good00000000)" in r.output
    r = runner.invoke(app, ["model", "approve", "1", "--by", "alice", "--lifecycle-config", str(conf)])
    assert r.exit_code == 0 and "approved" in r.output
    r = runner.invoke(app, ["model", "list", "--json", "--lifecycle-config", str(conf)])
    assert r.exit_code == 0 and '"status": "approved"' in r.output
    r = runner.invoke(app, ["model", "gate", str(weak), "--lifecycle-config", str(conf)])
    assert r.exit_code == 1
