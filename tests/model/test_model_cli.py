"""`identigraph train | predict` on a graph whose target label is not `customer` (any public benchmark)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from typer.testing import CliRunner

from identigraph.cli import app
from identigraph.errors import SchemaError
from identigraph.etl import snapshot as snap
from test_model_units import _tiny_snapshot


def _node_snapshot(root, n: int = 120, seed: int = 3):
    """``node`` vertices with two features and ``is_fraud``; fraud nodes know each other, the rest at random."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < 0.25
    w = snap.CsvPartWriter(root / "vertices" / "node" / "part-0.csv", ["~id", "~label", "f0:Double", "f1:Double",
                                                                      "is_fraud:Int"])
    for i in range(n):
        w.write([f"node:{i}", "node", f"{rng.normal() + 2 * fraud[i]:.4f}", f"{rng.normal():.4f}", int(fraud[i])])
    w.close()
    w = snap.CsvPartWriter(root / "edges" / "knows" / "part-0.csv", ["~id", "~from", "~to", "~label"])
    k = 0
    for i in range(n):
        pool = np.flatnonzero(fraud) if fraud[i] else np.arange(n)
        for j in rng.choice(pool, size=3):
            if j != i:
                w.write([f"e{k}", f"node:{i}", f"node:{j}", "knows"])
                k += 1
    w.close()
    (root / snap.SUMMARY).write_text(json.dumps({"as_of": "2026-01-01T00:00:00.000Z"}))
    return root


def test_train_with_a_non_customer_target_then_predict_scores_those_vertices(tmp_path):
    snapshot, model = _node_snapshot(tmp_path / "snap"), tmp_path / "model"
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--snapshot", str(snapshot), "--target", "node.is_fraud", "--out", str(model),
                                 "--set", "training.epochs=3", "--set", "split=stratified"])
    assert result.exit_code == 0, result.output
    config = json.loads((model / "config.json").read_text())
    assert config["model"]["target_label"] == "node"
    assert "is_fraud" in config["model"]["label_columns"]["node"]  # the target is a label, never an input
    result = runner.invoke(app, ["predict", "--snapshot", str(snapshot), "--model", str(model),
                                 "--out", str(tmp_path / "preds.csv")])
    assert result.exit_code == 0, result.output
    preds = pd.read_csv(tmp_path / "preds.csv", dtype={"node_id": str})
    assert list(preds.columns) == ["id", "node_id", "score"] and len(preds) == 120
    assert "scored 120 vertices" in result.output and preds["score"].between(0, 1).all()


def test_predict_on_a_snapshot_without_the_target_label_is_an_error_not_an_empty_file(tmp_path):
    snapshot, model = _node_snapshot(tmp_path / "snap"), tmp_path / "model"
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--snapshot", str(snapshot), "--target", "node.is_fraud", "--out", str(model),
                                 "--set", "training.epochs=2", "--set", "split=stratified"])
    assert result.exit_code == 0, result.output
    other = _tiny_snapshot(tmp_path / "customers")  # customers and devices, no `node` vertices
    out = tmp_path / "preds.csv"
    result = runner.invoke(app, ["predict", "--snapshot", str(other), "--model", str(model), "--out", str(out)])
    assert result.exit_code != 0 and isinstance(result.exception, SchemaError)
    assert "no 'node' vertices to score" in str(result.exception)
    assert not out.exists()
