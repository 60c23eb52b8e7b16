"""The historical load end to end: Spark local + the real Gremlin Server."""

import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from identigraph.errors import SchemaError
from identigraph.etl import snapshot
from identigraph.etl.export import export_snapshot
from identigraph.etl.fs import LocalFS
from identigraph.etl.graph_load import load_snapshot
from identigraph.etl.job import run_etl
from identigraph.graph import queries
from identigraph.graph.pseudonym import Pseudonymiser
from identigraph.graph.records import aggregate, event_edges
from identigraph.synth import SynthParams, generate_world, write_world

pytestmark = pytest.mark.services
KEY = b"etl-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("etl") / "world"
    write_world(generate_world(SynthParams(customers=400, seed=5)), out, fmt="csv.gz")
    return out


@pytest.fixture(scope="module")
def snap(spark, settings, world, tmp_path_factory):
    out = tmp_path_factory.mktemp("etl") / "snap"
    summary = run_etl(spark, settings, world, out, KEY)
    return out, summary


def run_dir(location: Path) -> Path:
    """The published run of a snapshot location (what LATEST names)."""
    return Path(snapshot.resolve(LocalFS(), location).prefix)


def _rows(root: Path) -> dict:
    root = run_dir(root)
    out = {}
    for kind in ("vertices", "edges"):
        for label in snapshot.labels(root, kind):
            for r in snapshot.iter_rows(root / kind / label):
                out[r["~id"]] = r
    return out


def test_snapshot_counts_match_an_independent_computation(snap, world):
    out, summary = snap
    events = pd.read_csv(world / "identity_events.csv.gz", dtype=str)
    customers = pd.read_csv(world / "customers.csv.gz", dtype=str)
    pairs = {}
    for col, label in [("device_id", "has_device"), ("ip", "used_ip"), ("email", "has_email"), ("phone", "has_phone"),
                       ("card_fingerprint", "has_card")]:
        sub = events.dropna(subset=[col])
        key = sub[col].str.lower() if col == "email" else sub[col]
        pairs[label] = len(set(zip(sub["customer_id"], key, strict=True)))
    assert summary["edges"] == pairs
    assert summary["quarantined_total"] == 0 and summary["events_after_as_of"] == 0
    assert summary["rows_read"]["identity_events"] == len(events)
    assert summary["vertices"]["customer"] == len(set(customers["customer_id"]) | set(events["customer_id"]))
    assert summary["vertices"]["device"] == events["device_id"].nunique()
    header = (run_dir(out) / "edges" / "has_card").glob("*.csv").__next__().read_text().splitlines()[0]
    assert header == ",".join(snapshot.edge_header())
    assert not list(out.rglob("_SUCCESS")) and not list(out.rglob("*.crc"))


def test_spark_and_python_paths_build_the_same_edges(snap, world):
    out, _ = snap
    events = pd.read_csv(world / "identity_events.csv.gz", dtype=str, keep_default_na=False, na_values=[""])
    python = {e.id: e for e in aggregate(r for ev in events.to_dict("records") for r in event_edges(ev, Pseudonymiser(KEY)))}
    spark_rows = {k: v for k, v in _rows(out).items() if k.startswith("e:")}
    assert set(python) == set(spark_rows)
    for eid, rec in python.items():
        row = spark_rows[eid]
        assert (row["~from"], row["~to"], row["~label"]) == (rec.from_id, rec.to_id, rec.label)
        assert row["first_seen"] == rec.first_seen and row["last_seen"] == rec.last_seen
        assert {k: row[k] for k in rec.counts} == rec.counts


def test_load_matches_snapshot_twice_and_round_trips_through_export(spark, settings, snap, graph, tmp_path):
    out, summary = snap
    stats = load_snapshot(spark, settings, out)
    counts = queries.counts(graph)
    assert counts == {**{f"v:{k}": v for k, v in summary["vertices"].items()}, **{f"e:{k}": v for k, v in summary["edges"].items()}}
    assert stats["elements"] >= sum(counts.values())
    once = queries.dump(graph)
    load_snapshot(spark, settings, out)
    assert queries.dump(graph) == once  # loading twice changes nothing

    exported = tmp_path / "exported"
    export_snapshot(graph, exported, page=500)
    assert _rows(exported) == _rows(out)
    # the identifier statistics in the graph are the upserter's recount from the loaded edges and customer
    # status; equal to the Spark job's aggregation, row for row, hubs and blocked counts included
    idents = [r for r in _rows(out).values() if r.get("n_customers") is not None]
    assert idents and max(r["n_customers"] for r in idents) > 1 and any(r["n_blocked"] for r in idents)


def test_broken_rows_are_quarantined_and_the_rest_loads(spark, settings, world, tmp_path):
    src = tmp_path / "broken"
    src.mkdir()
    for name in ("customers", "blocks", "care_contacts"):
        pd.read_csv(world / f"{name}.csv.gz", dtype=str).to_csv(src / f"{name}.csv", index=False)
    events = pd.read_csv(world / "identity_events.csv.gz", dtype=str)
    bad = events.head(5).copy()
    bad.loc[bad.index[0], "ip"] = "999.0.0.1"
    bad.loc[bad.index[1], "event_type"] = "hack"
    bad.loc[bad.index[2], "occurred_at"] = "2026-13-45"
    bad.loc[bad.index[3], "customer_id"] = None
    bad.loc[bad.index[4], "email"] = "not-an-email-but-private"
    pd.concat([events.iloc[5:], bad, events.iloc[[7, 8]]]).to_csv(src / "identity_events.csv", index=False)
    out = tmp_path / "snap"
    summary = run_etl(spark, settings, src, out, KEY)
    assert summary["quarantined"] == {
        "identity_events: customer_id: missing": 1, "identity_events: email: not an email address": 1,
        "identity_events: event_id: duplicate": 2, "identity_events: event_type: unknown event type": 1,
        "identity_events: ip: not a valid IPv4 or IPv6 address": 1,
        "identity_events: occurred_at: missing or not an ISO-8601 timestamp": 1}
    lines = [json.loads(line) for f in (run_dir(out) / "_quarantine" / "identity_events").glob("*.json")
             for line in f.read_text().splitlines()]
    assert len(lines) == 7 and all(line["reason"] and line["row"] for line in lines)
    assert "not-an-email-but-private" not in json.dumps(lines)
    good = len(events) - 5
    assert sum(1 for _ in snapshot.iter_rows(run_dir(out) / "edges" / "has_device")) > 0
    assert summary["rows_read"]["identity_events"] == good + 7


def test_as_of_cuts_events_and_history(spark, settings, world, tmp_path):
    out = tmp_path / "cut"
    summary = run_etl(spark, settings, world, out, KEY, as_of="2026-01-01T00:00:00Z")
    events = pd.read_csv(world / "identity_events.csv.gz", dtype=str)
    later = (pd.to_datetime(events["occurred_at"], utc=True) > datetime(2026, 1, 1, tzinfo=timezone.utc)).sum()
    assert summary["events_after_as_of"] == later > 0
    for row in snapshot.iter_rows(run_dir(out) / "history" / "blocks"):
        assert row["blocked_at"] <= "2026-01-01T00:00:00.000Z"
        assert row["unblocked_at"] is None or row["unblocked_at"] <= "2026-01-01T00:00:00.000Z"
    for row in snapshot.iter_rows(run_dir(out) / "edges" / "used_ip"):
        assert row["last_seen"] <= datetime(2026, 1, 1, tzinfo=timezone.utc)
    with pytest.raises(SchemaError, match="exists and is not empty"):
        run_etl(spark, settings, world, out, KEY)
    with pytest.raises(SchemaError, match="as_of"):
        run_etl(spark, settings, world, tmp_path / "x", KEY, as_of="soon")
    assert not (tmp_path / "x").exists()


def test_spark_submit_runs_the_same_job_and_keeps_the_submitters_settings(settings, world, tmp_path):
    spark_submit = Path(sys.executable).with_name("spark-submit")
    job = Path(__file__).resolve().parents[2] / "src" / "identigraph" / "etl" / "job.py"
    out = tmp_path / "submitted"
    env = {**os.environ, "IDENTIGRAPH_PII_KEY": KEY.decode(), "PYSPARK_PYTHON": sys.executable,
           "IDENTIGRAPH__DATA_DIR": str(settings.data_path)}
    proc = subprocess.run([str(spark_submit), "--master", "local[2]", "--conf", "spark.sql.shuffle.partitions=16",
                           "--conf", "spark.ui.enabled=false", str(job),
                           "--input", str(world), "--snapshot", str(out)], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir(out) / "_summary.json").read_text())
    assert summary["edges"]["has_device"] > 0 and summary["quarantined_total"] == 0
    # the config says local[*] and derives shuffle partitions: the submitter's choices won
    assert summary["spark"]["master"] == "local[2]" and summary["spark"]["shuffle_partitions"] == 16


def test_no_raw_pii_reaches_the_graph(spark, settings, snap, world, graph):
    out, _ = snap
    load_snapshot(spark, settings, out)
    dumped = json.dumps(queries.dump(graph), default=str).lower()
    events = pd.read_csv(world / "identity_events.csv.gz", dtype=str)
    raw = set(events["email"].dropna().str.lower()) | set(events["phone"].dropna())
    digits = {p.lstrip("+") for p in events["phone"].dropna()}
    assert raw and not [x for x in raw | digits if x in dumped]
    assert '"email:' in dumped and '"phone:' in dumped  # they are there, as keyed hashes


def test_cli_synth_etl_load_and_clear_guard(settings, services, tmp_path):
    exe = str(Path(sys.executable).with_name("identigraph"))
    env = {**os.environ, "IDENTIGRAPH__DATA_DIR": str(settings.data_path),
           "IDENTIGRAPH__SERVICES__GREMLIN__PORT": str(settings.services.gremlin.port),
           "IDENTIGRAPH__SERVICES__ELASTICMQ__PORT": str(settings.services.elasticmq.port),
           "IDENTIGRAPH__ETL__MASTER": "local[2]", "IDENTIGRAPH__ETL__SHUFFLE_PARTITIONS": "4"}
    world_dir = tmp_path / "w"
    proc = subprocess.run([exe, "synth", "--out", str(world_dir), "--customers", "60", "--seed", "2"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    again = subprocess.run([exe, "synth", "--out", str(world_dir), "--customers", "60"], capture_output=True,
                           text=True, env=env)
    assert again.returncode == 2 and "error:" in again.stderr and "Traceback" not in again.stderr
    proc = subprocess.run([exe, "etl", "--input", str(world_dir), "--snapshot", str(tmp_path / "s"), "--load-graph"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "graph load:" in proc.stdout and "vertices: customer" in proc.stdout
    refused = subprocess.run([exe, "graph", "clear"], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
    cleared = subprocess.run([exe, "graph", "clear", "--yes"], capture_output=True, text=True, env=env)
    assert cleared.returncode == 0 and "dropped" in cleared.stdout


def test_malformed_csv_line_is_quarantined_whole(spark, settings, world, tmp_path):
    src = tmp_path / "malformed"
    src.mkdir()
    for name in ("customers", "blocks", "care_contacts"):
        pd.read_csv(world / f"{name}.csv.gz", dtype=str).to_csv(src / f"{name}.csv", index=False)
    events = pd.read_csv(world / "identity_events.csv.gz", dtype=str).head(200)
    text = events.to_csv(index=False)
    # a stray field: the phone would shift into card_fingerprint if the reader trusted positions
    text += "evX,c0000001,login,2026-01-01T00:00:00Z,dev,10.0.0.1,a@b.c,extra,+971500000000,card\n"
    (src / "identity_events.csv").write_text(text)
    summary = run_etl(spark, settings, src, tmp_path / "snap", KEY)
    assert summary["quarantined"] == {
        "identity_events: row: malformed CSV line (its fields do not match the header)": 1}
    assert summary["tables"]["identity_events"] == {"read": 201, "good": 200, "quarantined": 1, "after_as_of": 0,
                                                     "already_loaded": 0}
    dumped = "".join(f.read_text() for f in (run_dir(tmp_path / "snap") / "_quarantine").rglob("*.json"))
    assert "+971500000000" not in dumped and "a@b.c" not in dumped and "evX" not in dumped


def test_a_failed_load_names_the_executors_own_error(spark, settings, snap):
    """A task's failure reaches the driver as Py4J text ending in the JVM's stack ("... 1 more"): the error a
    person reads must be the executor's Python error instead."""
    from identigraph.errors import GraphError
    from identigraph.services.process import free_port

    out, _ = snap
    nowhere = settings.model_copy(update={"graph": settings.graph.model_copy(update={
        "port": free_port(), "retry": settings.graph.retry.model_copy(update={"attempts": 1})})})
    with pytest.raises(GraphError) as caught:
        load_snapshot(spark, nowhere, out)
    message = str(caught.value)
    assert "graph load of vertices" in message and "re-run to finish" in message
    assert "Cannot connect to host" in message and not message.rstrip().endswith("more")
