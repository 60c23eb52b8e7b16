"""The labeling job end to end on a synthetic world: the leakage proof (a later snapshot labelled at an
earlier as-of equals the snapshot taken then, row for row), label quality against the truth, the CLI and
its refusals."""

import csv
import json
from datetime import timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from identigraph.cli import app
from identigraph.config_loader import packaged_default
from identigraph.errors import SchemaError
from identigraph.etl import snapshot
from identigraph.etl.fs import LocalFS
from identigraph.etl.job import run_etl
from identigraph.labeling.config import STATUSES
from identigraph.labeling.job import BLOCK_COLUMNS, LABEL_COLUMNS, run_labeling, snapshot_as_of
from identigraph.synth import SynthParams, generate_world, write_world

REPO = Path(__file__).resolve().parents[2]
CONFIG = packaged_default("labeling.yaml")
KEY = b"labeling-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def worlds(spark, settings, tmp_path_factory):
    """One world; its snapshot at the end (T2) and at T1, 60 days earlier; labels of both."""
    root = tmp_path_factory.mktemp("labeling")
    write_world(generate_world(SynthParams(customers=1500, seed=3)), root / "world")
    run_etl(spark, settings, root / "world", root / "snap_t2", KEY)
    t2 = snapshot_as_of(root / "snap_t2")
    t1 = t2 - timedelta(days=60)
    run_etl(spark, settings, root / "world", root / "snap_t1", KEY, as_of=t1)
    reports = {
        "t2": run_labeling(spark, root / "snap_t2", root / "labels_t2", config=CONFIG,
                           truth=root / "world" / "truth.csv"),
        "t2_at_t1": run_labeling(spark, root / "snap_t2", root / "labels_t2_at_t1", as_of=t1, config=CONFIG),
    }
    # the T1 snapshot's labels through the CLI: the command a person runs
    result = CliRunner().invoke(app, ["label", "--snapshot", str(root / "snap_t1"), "--out", str(root / "labels_t1"),
                                      "--labeling-config", str(CONFIG)])
    assert result.exit_code == 0, result.output
    return root, t1, t2, reports


def _labels(path: Path) -> dict[str, dict]:
    with open(path / "labels.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == LABEL_COLUMNS
        return {r["customer_id"]: r for r in reader}


def _blocks(snap: Path) -> list[dict]:
    return list(snapshot.iter_rows(Path(snapshot.resolve(LocalFS(), snap).prefix) / "history" / "blocks"))


def test_facts_after_as_of_cannot_change_any_label(worlds):
    root, t1, _, _ = worlds
    # the later snapshot really holds later facts, or this proves nothing
    cut = snapshot.format_ts(t1)  # history headers are untyped: ISO text, which sorts as time does
    later = [b for b in _blocks(root / "snap_t2") if b["blocked_at"] > cut or (b["unblocked_at"] or "") > cut]
    assert later
    then, rebuilt = _labels(root / "labels_t1"), _labels(root / "labels_t2_at_t1")
    assert then.keys() == rebuilt.keys()
    for cid, row in then.items():
        assert rebuilt[cid] == row, cid
    assert {r["label_as_of"] for r in then.values()} == {snapshot.format_ts(t1)}


def test_labels_move_with_as_of(worlds):
    root, _, _, _ = worlds
    then, now = _labels(root / "labels_t1"), _labels(root / "labels_t2")
    assert len(now) > len(then)
    changed = [cid for cid in then
               if (then[cid]["status"], then[cid]["evidence"]) != (now[cid]["status"], now[cid]["evidence"])]
    assert len(changed) > 10


def test_statuses_are_sane_and_labels_are_good(worlds):
    root, _, t2, reports = worlds
    rows = _labels(root / "labels_t2")
    with open(root / "world" / "truth.csv", newline="") as f:
        truth = {r["customer_id"]: r for r in csv.DictReader(f)}
    label_of = {"matured_fraud": "1", "corrected_fraud": "1", "matured_legit": "0"}
    for r in rows.values():
        assert r["status"] in STATUSES and r["label"] == label_of.get(r["status"], "")
        evidence = json.loads(r["evidence"])
        if r["status"] == "corrected_fraud":
            assert evidence["corrected_from"] not in ("contested", "lifted")
            assert not evidence.get("ever_contested") and not evidence.get("ever_lifted")
            assert all(hit["identifiers"] and hit["identifiers_matched"] >= 1 for hit in evidence["rules"])
        elif r["status"] in ("matured_fraud", "immature_block", "contested", "lifted", "non_fraud_block"):
            assert evidence["block"]["at"] <= snapshot.format_ts(t2)
    report = reports["t2"]
    assert report["customers"] == len(rows) == sum(report["statuses"].values())
    assert json.loads((root / "labels_t2" / "report.json").read_text()) == report
    quality = report["truth"]
    assert quality["customers_not_in_truth"] == 0
    assert quality["before_correction"]["precision"] >= 0.9
    assert quality["corrections"]["promoted"] > 0 and quality["corrections"]["precision"] >= 0.9
    assert quality["after_correction"]["recall"] > quality["before_correction"]["recall"]
    assert quality["after_correction"]["legit_precision"] >= 0.99
    for name, rule in report["rules"].items():  # a small world: only rules with enough firings are judged
        assert rule["fired"] < 10 or rule["precision"] >= 0.8, name
    # the ring a corrected customer sits in shows in its evidence: identifiers shared with matured fraud
    corrected = [r for r in rows.values() if r["status"] == "corrected_fraud"]
    assert sum(truth[r["customer_id"]]["is_fraud"] == "1" for r in corrected) >= 0.9 * len(corrected)


def test_refuses_an_as_of_after_the_snapshot_and_a_used_output(worlds, spark):
    root, _, t2, _ = worlds
    with pytest.raises(SchemaError, match="later than the snapshot's as-of"):
        run_labeling(spark, root / "snap_t2", root / "elsewhere", as_of=t2 + timedelta(seconds=1), config=CONFIG)
    with pytest.raises(SchemaError, match="exists and is not empty"):
        run_labeling(spark, root / "snap_t2", root / "labels_t2", config=CONFIG)
    with pytest.raises(SchemaError, match="must not be the snapshot"):
        run_labeling(spark, root / "snap_t2", root / "snap_t2" / "labels", config=CONFIG, overwrite=True)
    assert not (root / "elsewhere").exists()


def test_a_bad_value_in_a_snapshot_is_named(spark, tmp_path):
    snap = tmp_path / "snap"
    customers = snapshot.CsvPartWriter(snap / "vertices" / "customer" / "part-0.csv",
                                       snapshot.vertex_header("customer"))
    customers.write(["customer:c1", "customer", "2026-01-01T00:00:00.000Z"]
                    + [None] * (len(snapshot.CUSTOMER_COLUMNS) - 1))
    customers.close()
    blocks = snapshot.CsvPartWriter(snap / "history" / "blocks" / "part-0.csv", list(BLOCK_COLUMNS))
    blocks.write(["c1", "last tuesday", "fraud", "manual", None, None])
    blocks.close()
    with pytest.raises(SchemaError, match="history/blocks: a blocked_at is not a valid Date"):
        run_labeling(spark, snap, tmp_path / "labels", as_of="2026-06-01T00:00:00Z", config=CONFIG)
    assert not (tmp_path / "labels").exists()
