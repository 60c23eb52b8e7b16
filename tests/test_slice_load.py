"""A synthetic world through the upsert path: counts, PII, quarantine."""

import json
import subprocess

import pandas as pd
import pytest

from identigraph.graph import queries
from identigraph.graph.load_slice import load_slice
from identigraph.synth import SynthParams, generate_world, write_world

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "w"
    write_world(generate_world(SynthParams(customers=300, seed=3)), out, fmt="csv")
    return out


def test_slice_matches_independent_count_and_stores_no_raw_pii(graph, pseudo, world_dir, tmp_path):
    report = load_slice(graph, pseudo, world_dir, tmp_path / "q", max_events=3000)
    events = pd.read_csv(world_dir / "identity_events.csv", nrows=3000, dtype=str)
    # independent count of distinct (customer, identifier) pairs straight from the raw table
    pairs = set()
    for col, label in [("device_id", "device"), ("ip", "ip"), ("email", "email"), ("phone", "phone"),
                       ("card_fingerprint", "card")]:
        sub = events.dropna(subset=[col])
        pairs |= {(c, label, v) for c, v in zip(sub["customer_id"], sub[col])}
    counts = queries.counts(graph)
    assert sum(v for k, v in counts.items() if k.startswith("e:")) == len(pairs) == report.upsert.edges
    assert counts["v:customer"] == events["customer_id"].nunique()
    assert report.events == 3000 and not report.quarantined

    vertices, edges = queries.dump(graph)
    dumped = json.dumps([vertices, edges], default=str)
    raw_emails = set(events["email"].dropna())
    raw_phones = set(events["phone"].dropna())
    assert raw_emails and raw_phones
    leaked = [x for x in raw_emails | raw_phones if x in dumped or x.lower() in dumped]
    assert leaked == []
    phone_digits = {p.lstrip("+") for p in raw_phones}
    assert not [d for d in phone_digits if d in dumped]


def test_bad_rows_are_quarantined_with_reason_and_rest_loads(graph, pseudo, world_dir, tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    events = pd.read_csv(world_dir / "identity_events.csv", nrows=50, dtype=str)
    broken = events.head(4).copy()
    broken.loc[broken.index[0], "ip"] = "300.1.1.1"
    broken.loc[broken.index[1], "event_type"] = "teleport"
    broken.loc[broken.index[2], "occurred_at"] = "not a time"
    broken.loc[broken.index[3], "email"] = "secret-but-invalid"
    dup = events.iloc[[10]]
    pd.concat([events.iloc[4:], broken, dup]).to_csv(src / "identity_events.csv", index=False)
    pd.read_csv(world_dir / "customers.csv", dtype=str).to_csv(src / "customers.csv", index=False)

    report = load_slice(graph, pseudo, src, tmp_path / "q")
    assert report.events == 46
    assert report.quarantined == {"identity_events: ip": 1, "identity_events: event_type": 1,
                                  "identity_events: occurred_at": 1, "identity_events: email": 1,
                                  "identity_events: event_id": 1}
    lines = [json.loads(line) for line in open(report.quarantine_file)]
    assert len(lines) == 5 and all(line["reason"] for line in lines)
    assert "secret-but-invalid" not in open(report.quarantine_file).read()


def test_cli_synth_and_load_slice(tmp_path, settings, services):
    import sys
    from pathlib import Path

    exe = str(Path(sys.executable).with_name("identigraph"))
    env_cfg = {"IDENTIGRAPH__DATA_DIR": str(settings.data_path),
               "IDENTIGRAPH__SERVICES__GREMLIN__PORT": str(settings.services.gremlin.port),
               "IDENTIGRAPH__SERVICES__ELASTICMQ__PORT": str(settings.services.elasticmq.port)}
    import os

    env = {**os.environ, **env_cfg}
    out = tmp_path / "cli-world"
    proc = subprocess.run([exe, "synth", "--out", str(out), "--customers", "50", "--seed", "1"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert (out / "identity_events.parquet").exists() and (out / "truth.csv").exists()
    again = subprocess.run([exe, "synth", "--out", str(out), "--customers", "50"], capture_output=True, text=True, env=env)
    assert again.returncode == 2 and "error:" in again.stderr
    proc = subprocess.run([exe, "graph", "load-slice", "--input", str(out), "--events", "200"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "events 200" in proc.stdout
    refused = subprocess.run([exe, "graph", "clear"], capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "--yes" in refused.stderr
