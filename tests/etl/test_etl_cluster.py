"""The historical load as a cluster runs it: S3 through s3a:// (moto's server, path-style, hadoop-aws with
the magic committer), Hive tables through an embedded Derby metastore, versioned runs, daily increments.

One module-scoped world and one Spark session (the conftest's) serve every test here.
"""

import csv
import io
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pandas as pd
import pytest
from pyspark.sql import functions as F

from identigraph.config_loader import packaged_default
from identigraph.etl import cloud_jars, job, snapshot
from identigraph.etl.fs import LocalFS, PyFS
from identigraph.etl.job import run_etl
from identigraph.services.process import free_port
from identigraph.synth import SynthParams, generate_world, write_world

KEY = b"cluster-test-key-0123456789abcdef"
# the module's fixtures run three full loads (one through S3): on a busy 2-core machine that is minutes
pytestmark = pytest.mark.timeout(1800)
BUCKET = "lake"


# ---- fixtures -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster") / "world"
    # three weeks: about twenty daily partitions, enough days to prune and few enough objects for moto
    params = SynthParams(customers=400, seed=11, stream_days=1, start=datetime(2026, 6, 9, tzinfo=timezone.utc),
                         end=datetime(2026, 6, 30, tzinfo=timezone.utc))
    write_world(generate_world(params), out, fmt="csv.gz")
    return out


@pytest.fixture(scope="module")
def s3(spark, settings):
    """moto's S3 server on a free port, wired into the session's Hadoop configuration (s3a://) and a
    boto3 client (PyFS, the model's reader)."""
    from moto.server import ThreadedMotoServer

    if cloud_jars.cached_jars(settings) is None:
        pytest.fail("hadoop-aws and the AWS SDK bundle are not in the Maven cache: run `make install`")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    for k, v in {"fs.s3a.endpoint": endpoint, "fs.s3a.endpoint.region": "us-east-1",
                 "fs.s3a.path.style.access": "true", "fs.s3a.connection.ssl.enabled": "false",
                 "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
                 "fs.s3a.access.key": "test", "fs.s3a.secret.key": "test",
                 "fs.s3a.change.detection.version.required": "false"}.items():
        conf.set(k, v)
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="test", aws_secret_access_key="test")
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()


def _events(spark, world: Path):
    return (spark.read.option("header", True).csv(str(world / "identity_events.csv.gz"))
            .withColumn("dt", F.substring("occurred_at", 1, 10)))


@pytest.fixture(scope="module")
def s3_input(spark, s3, world):
    """The world on S3 as a platform would keep it: Parquet, events in daily ``dt=`` partition folders."""
    base = f"s3a://{BUCKET}/platform"
    _events(spark, world).coalesce(1).write.partitionBy("dt").parquet(f"{base}/identity_events.parquet")
    for name in ("customers", "blocks", "care_contacts"):
        spark.read.option("header", True).csv(str(world / f"{name}.csv.gz")).write.parquet(f"{base}/{name}.parquet")
    return base


@pytest.fixture(scope="module")
def local_snap(spark, settings, world, tmp_path_factory):
    out = tmp_path_factory.mktemp("cluster") / "local-snap"
    run_etl(spark, settings, world, out, KEY)
    return out


@pytest.fixture(scope="module")
def s3_snap(spark, settings, s3, s3_input):
    loc = f"s3a://{BUCKET}/graph"
    summary = run_etl(spark, settings, s3_input, loc, KEY)
    return loc, summary


def graph_rows(fs, location) -> tuple[dict, dict]:
    """Every vertex and edge row by ~id, and the history tables' lines, of a location's published run."""
    prefix = snapshot.resolve(fs, location).prefix
    rows = {}
    for f in snapshot.graph_files(fs, prefix):
        reader = csv.reader(io.StringIO(fs.read_bytes(f.uri).decode()))
        columns = snapshot.split_header(next(reader))
        for line in reader:
            row = snapshot.typed_row(columns, line)
            assert row["~id"] not in rows
            rows[row["~id"]] = row
    history = {}
    for table in ("blocks", "care_contacts"):
        lines = []
        for e in fs.list(f"{prefix}/history/{table}"):
            if e.name.endswith(".csv"):
                lines += fs.read_bytes(e.uri).decode().splitlines()[1:]
        history[table] = sorted(lines)
    return rows, history


def _key(uri: str) -> str:
    return uri.split(f"{BUCKET}/", 1)[1]


# ---- S3 -----------------------------------------------------------------------------------------------------

def test_s3_snapshot_equals_the_local_one_row_for_row(s3, s3_snap, local_snap):
    loc, summary = s3_snap
    s3_rows, s3_history = graph_rows(PyFS(s3), loc)
    local_rows, local_history = graph_rows(LocalFS(), local_snap)
    assert len(local_rows) > 500 and s3_rows == local_rows and s3_history == local_history
    # events were read from daily partition folders, every one of them in a full load
    assert len(summary["partitions_read"]["identity_events"]) > 10 and summary["quarantined_total"] == 0
    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key="graph/LATEST")["Body"].read())
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=f"graph/{pointer['prefix']}/_manifest.json")["Body"].read())
    listed = {f["path"] for f in manifest["files"]}
    present = {o["Key"].split(f"{pointer['prefix']}/", 1)[1]
               for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"graph/{pointer['prefix']}/")["Contents"]
               if not o["Key"].endswith("/")}  # S3A's directory markers: empty, and no loader reads them
    assert listed == present - {"_manifest.json"}  # the committer left nothing else (no _SUCCESS, no temp)
    assert not any("__magic" in p or "_temporary" in p or p.endswith("_SUCCESS") for p in present)
    assert manifest["counts"]["edges"] == summary["edges"] and manifest["watermark"]["partitions"]["identity_events"]


def test_model_reader_and_labeling_job_read_the_s3_snapshot(spark, s3, s3_snap, local_snap, tmp_path):
    from identigraph.labeling.job import run_labeling
    from identigraph.model.frame import read_snapshot

    loc, _ = s3_snap
    remote = read_snapshot(loc.replace("s3a://", "s3://"), fs=PyFS(s3))
    here = read_snapshot(local_snap)
    assert sorted(remote.vertices) == sorted(here.vertices) and remote.as_of == here.as_of
    for label, frame in here.vertices.items():
        pd.testing.assert_frame_equal(remote.vertices[label].sort_index(), frame.sort_index())
    run_labeling(spark, loc, f"s3a://{BUCKET}/labels")
    run_labeling(spark, local_snap, tmp_path / "labels")
    remote_labels = s3.get_object(Bucket=BUCKET, Key="labels/labels.csv")["Body"].read().decode()
    assert remote_labels == (tmp_path / "labels" / "labels.csv").read_text() and remote_labels.count("\n") > 100
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="labels/")["Contents"]]
    assert sorted(keys) == ["labels/labels.csv", "labels/report.json"]


def test_a_run_that_dies_mid_write_changes_nothing_readers_see(spark, settings, s3, s3_snap, s3_input,
                                                                local_snap, world, monkeypatch):
    loc, _ = s3_snap
    latest = s3.get_object(Bucket=BUCKET, Key="graph/LATEST")["Body"].read()
    run = json.loads(latest)["run"]
    manifest = s3.get_object(Bucket=BUCKET, Key=f"graph/runs/{run}/_manifest.json")["Body"].read()
    local_latest = (local_snap / "LATEST").read_bytes()
    local_manifest = (local_snap / "runs" / json.loads(local_latest)["run"] / "_manifest.json").read_bytes()
    before = graph_rows(LocalFS(), local_snap)
    real, calls = job.write_csv, []

    def dies_on_the_fourth_label(df, path, files):
        calls.append(path)
        if len(calls) == 4:
            raise RuntimeError("executor lost (injected)")
        real(df, path, files)

    monkeypatch.setattr(job, "write_csv", dies_on_the_fourth_label)
    with pytest.raises(RuntimeError, match="injected"):
        run_etl(spark, settings, s3_input, loc, KEY, overwrite=True)
    assert len(calls) == 4  # three labels were written before the failure
    assert s3.get_object(Bucket=BUCKET, Key="graph/LATEST")["Body"].read() == latest
    assert s3.get_object(Bucket=BUCKET, Key=f"graph/runs/{run}/_manifest.json")["Body"].read() == manifest
    assert snapshot.resolve(PyFS(s3), loc).run == run
    runs = {o["Key"].split("/")[2] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="graph/runs/")["Contents"]}
    assert runs == {run}  # the dead run's parts were cleaned up

    calls.clear()
    with pytest.raises(RuntimeError, match="injected"):
        run_etl(spark, settings, world, local_snap, KEY, overwrite=True)
    assert (local_snap / "LATEST").read_bytes() == local_latest
    assert (local_snap / "runs" / json.loads(local_latest)["run"] / "_manifest.json").read_bytes() == local_manifest
    assert graph_rows(LocalFS(), local_snap) == before
    assert [p.name for p in (local_snap / "runs").iterdir()] == [json.loads(local_latest)["run"]]


# ---- Hive, daily increments ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hive_days(spark, world):
    """``platform.*`` in the embedded metastore; identity_events partitioned by ``dt``, without its last day
    yet. Returns (days, the last day's rows as Spark rows, a day-1 event re-sent on the last day)."""
    spark.sql("CREATE DATABASE IF NOT EXISTS platform")
    events = _events(spark, world)
    days = sorted(r["dt"] for r in events.select("dt").distinct().collect())
    events.filter(F.col("dt") < days[-1]).coalesce(1).write.partitionBy("dt").format("parquet").saveAsTable(
        "platform.identity_events")
    for name in ("customers", "blocks", "care_contacts"):
        spark.read.option("header", True).csv(str(world / f"{name}.csv.gz")).write.format("parquet").saveAsTable(
            f"platform.{name}")
    last_day = events.filter(F.col("dt") == days[-1])
    # a redelivered event: the same event (same id, same content) lands again in the last day's partition
    resent = events.filter(F.col("dt") == days[-2]).filter(F.col("device_id").isNotNull()).limit(1) \
        .withColumn("dt", F.lit(days[-1]))
    return days, last_day, resent


def test_day_two_reads_only_its_partition_counts_a_resent_event_once_and_equals_a_full_recompute(
        spark, settings, world, hive_days, tmp_path):
    days, last_day, resent = hive_days
    daily = tmp_path / "daily"
    first = run_etl(spark, settings, None, daily, KEY, input_tables=["platform"], incremental=True)
    assert first["mode"] == "full" and first["partitions_read"]["identity_events"] == days[:-1]

    last_day.unionByName(resent).write.mode("append").partitionBy("dt").format("parquet").saveAsTable(
        "platform.identity_events")
    n_new = last_day.count()
    second = run_etl(spark, settings, None, daily, KEY, input_tables=["platform"], incremental=True)
    assert second["mode"] == "incremental" and second["parent"] == first["run"]
    assert second["partitions_read"]["identity_events"] == [days[-1]]
    # only the new partition was read: its rows and the re-sent one, nothing of the earlier days
    assert second["rows_read"]["identity_events"] == n_new + 1
    assert second["tables"]["identity_events"]["already_loaded"] == 1
    assert second["quarantined"] == {f"identity_events: {job.ALREADY_LOADED}": 1}

    full = run_etl(spark, settings, None, tmp_path / "full", KEY, input_tables=["platform"])
    assert full["rows_read"]["identity_events"] == sum(first["rows_read"].values()) - sum(
        v for k, v in first["rows_read"].items() if k != "identity_events") + n_new + 1
    inc_rows, inc_history = graph_rows(LocalFS(), daily)
    full_rows, full_history = graph_rows(LocalFS(), tmp_path / "full")
    assert inc_rows == full_rows and inc_history == full_history  # identifier statistics included
    assert second["vertices"] == full["vertices"] and second["edges"] == full["edges"]

    # the re-sent event counts once: its device edge has exactly the events with distinct ids
    ev = resent.first()
    events = pd.read_csv(world / "identity_events.csv.gz", dtype=str)
    mine = events[(events["customer_id"] == ev["customer_id"]) & (events["device_id"] == ev["device_id"])]
    edge = next(r for r in inc_rows.values() if r.get("~label") == "has_device"
                and r["~from"] == f"customer:{ev['customer_id']}" and r["~to"] == f"device:{ev['device_id']}")
    assert edge["event_count"] == mine["event_id"].nunique() == len(mine)
    stats = inc_rows[f"device:{ev['device_id']}"]
    assert stats["n_customers"] == events.loc[events["device_id"] == ev["device_id"], "customer_id"].nunique()

    latest = (daily / "LATEST").read_bytes()
    again = run_etl(spark, settings, None, daily, KEY, input_tables=["platform"], incremental=True)
    assert again.get("no_op") and (daily / "LATEST").read_bytes() == latest
    manifest = snapshot.resolve(LocalFS(), daily).manifest
    assert len(manifest["state"]["events"]) == 2 and manifest["watermark"]["partitions"]["identity_events"] == days[-1]


# ---- any Gremlin CSV layout ------------------------------------------------------------------------------

def _flatten(src: Path, dst: Path) -> None:
    """The same graph as one vertices/nodes.csv and one edges/edges.csv, labels in ~label."""
    prefix = Path(snapshot.resolve(LocalFS(), src).prefix)
    for kind, name in (("vertices", "nodes.csv"), ("edges", "edges.csv")):
        frames = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted((prefix / kind).rglob("*.csv"))]
        table = pd.concat(frames, ignore_index=True).fillna("")
        (dst / kind).mkdir(parents=True)
        table.to_csv(dst / kind / name, index=False)
    (dst / snapshot.SUMMARY).write_text((prefix / snapshot.SUMMARY).read_text())


def test_a_flat_layout_gremlin_csv_trains_and_predicts(local_snap, tmp_path):
    from identigraph.model.config import load_model_config
    from identigraph.model.frame import read_snapshot
    from identigraph.model.pipeline import run_predict, run_train

    flat = tmp_path / "flat"
    _flatten(local_snap, flat)
    assert sorted(p.name for p in flat.rglob("*.csv")) == ["edges.csv", "nodes.csv"]
    theirs, ours = read_snapshot(flat), read_snapshot(local_snap)
    assert sorted(theirs.vertices) == sorted(ours.vertices) and sorted(theirs.edges) == sorted(ours.edges)
    for label, frame in ours.vertices.items():
        mine = theirs.vertices[label]
        # one file for every label: a column no row of this label fills is not this label's
        assert set(mine.columns) <= set(frame.columns)
        assert frame.drop(columns=list(mine.columns)).isna().all().all()
        pd.testing.assert_frame_equal(mine.loc[frame.index], frame[list(mine.columns)])
    cust = ours.vertices["customer"]
    cfg = load_model_config(packaged_default("model.yaml"), {
        "training.epochs": 3, "training.patience": 3, "split": "stratified", "network.hidden": 16})
    run_train(flat, tmp_path / "model", cfg, target="customer.blocked", device="cpu", log=lambda _: None)
    n = run_predict(flat, tmp_path / "model", tmp_path / "scores.csv", cfg)
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert n == len(cust) == len(scores) and scores["score"].between(0, 1).all()
