"""Contract tests for the Neptune bulk-load path: S3 via moto, neptunedata via botocore's Stubber."""

import json
import shutil

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from identigraph.errors import GraphError, SchemaError
from identigraph.etl import neptune_bulk, snapshot
from identigraph.etl.fs import LocalFS
from identigraph.etl.snapshot import CsvPartWriter, edge_header, vertex_header

ROLE = "arn:aws:iam::123456789012:role/NeptuneLoadFromS3"


@pytest.fixture
def tiny_snapshot(tmp_path):
    snap = tmp_path / "snap"
    w = CsvPartWriter(snap / "vertices" / "device" / "part-00000.csv", vertex_header("device"))
    w.write(["device:d1", "device"])
    w.close()
    w = CsvPartWriter(snap / "edges" / "has_device" / "part-00000.csv", edge_header())
    w.write(["e:1", "customer:c1", "device:d1", "has_device", None, None, 1, 0, 1, 0, 0, 0])
    w.close()
    (snap / "history" / "blocks").mkdir(parents=True)
    (snap / "history" / "blocks" / "part-00000.csv").write_text("customer_id\nc1\n")
    return snap


def _neptune():
    return boto3.client("neptunedata", region_name="eu-west-1", endpoint_url="https://db.example:8182",
                        aws_access_key_id="x", aws_secret_access_key="x")


def _status(status):
    return {"status": "200 OK", "payload": {"overallStatus": {"status": status, "totalRecords": 2}}}


COMMON = {"format": "csv", "s3BucketRegion": "eu-west-1", "iamRoleArn": ROLE, "mode": "AUTO",
          "failOnError": False, "parallelism": "MEDIUM",
          # never FALSE→TRUE: a bulk load must not replace the last_seen/counts the stream wrote
          "updateSingleCardinalityProperties": False, "queueRequest": True}


def _expect_chain(stub, source):
    stub.add_response("start_loader_job", {"status": "200 OK", "payload": {"loadId": "v-1"}},
                      {"source": f"{source}/vertices/", **COMMON})
    stub.add_response("start_loader_job", {"status": "200 OK", "payload": {"loadId": "e-1"}},
                      {"source": f"{source}/edges/", "dependencies": ["v-1"], **COMMON})
    stub.add_response("get_loader_job_status", _status("LOAD_IN_PROGRESS"),
                      {"loadId": "v-1", "details": True, "errors": True})
    stub.add_response("get_loader_job_status", _status("LOAD_COMPLETED"),
                      {"loadId": "v-1", "details": True, "errors": True})
    stub.add_response("get_loader_job_status", _status("LOAD_COMPLETED"),
                      {"loadId": "e-1", "details": True, "errors": True})


def _s3():
    s3 = boto3.client("s3", region_name="eu-west-1")
    s3.create_bucket(Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return s3


def test_contract_local_snapshot_is_uploaded_to_a_fresh_run_prefix_and_loads_chained(tiny_snapshot):
    with mock_aws():
        s3 = _s3()
        neptune = _neptune()
        with Stubber(neptune) as stub:
            run = "20260630T000000Z-abcd0123"
            _expect_chain(stub, f"s3://bkt/snaps/{run}")
            sleeps = []
            location = tiny_snapshot.parent / "location"  # as the ETL publishes: runs/<run>/…, LATEST
            (location / "runs").mkdir(parents=True)
            shutil.copytree(tiny_snapshot, location / "runs" / run)
            snapshot.publish(LocalFS(), str(location), run, {"run": run, "as_of": None, "files": []})
            result = neptune_bulk.bulk_load(s3, neptune, location, "s3://bkt/snaps/", ROLE, "eu-west-1",
                                            poll_s=3, sleep=sleeps.append)
            stub.assert_no_pending_responses()
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="bkt")["Contents"])
        assert keys == [f"snaps/{run}/edges/has_device/part-00000.csv", f"snaps/{run}/vertices/device/part-00000.csv"]
        assert result["uploaded"] == 2 and result["edges"]["status"] == "LOAD_COMPLETED" and sleeps == [3]
        with pytest.raises(SchemaError, match="not empty; refusing to mix runs"):
            neptune_bulk.bulk_load(s3, _neptune(), location, "s3://bkt/snaps/", ROLE, "eu-west-1")


def _publish_on_s3(s3, tiny_snapshot, run):
    """The tiny snapshot as the ETL publishes it on S3: runs/<run>/…, its manifest, LATEST."""
    files = []
    for path in sorted(p for p in tiny_snapshot.rglob("*.csv")):
        rel = path.relative_to(tiny_snapshot).as_posix()
        s3.upload_file(str(path), "bkt", f"graph/runs/{run}/{rel}")
        files.append({"path": rel, "bytes": path.stat().st_size})
    s3.put_object(Bucket="bkt", Key=f"graph/runs/{run}/_manifest.json",
                  Body=json.dumps({"run": run, "as_of": "2026-06-30T00:00:00.000Z", "files": files}))
    s3.put_object(Bucket="bkt", Key="graph/LATEST", Body=json.dumps({"run": run, "prefix": f"runs/{run}"}))


def test_contract_snapshot_in_s3_loads_in_place_from_its_run_and_refuses_foreign_files(tiny_snapshot):
    with mock_aws():
        s3 = _s3()
        _publish_on_s3(s3, tiny_snapshot, "r1")
        neptune = _neptune()
        with Stubber(neptune) as stub:
            _expect_chain(stub, "s3://bkt/graph/runs/r1")
            result = neptune_bulk.bulk_load(s3, neptune, "s3://bkt/graph", None, ROLE, "eu-west-1",
                                            sleep=lambda s: None)
            stub.assert_no_pending_responses()
        assert result["uploaded"] == 0 and result["run"] == "r1" and result["source"] == "s3://bkt/graph/runs/r1"
        # a file the manifest does not list (another run's leftover) under the run's prefix: refused
        s3.put_object(Bucket="bkt", Key="graph/runs/r1/edges/has_device/part-99999.csv", Body=b"~id,~from,~to\n")
        with pytest.raises(SchemaError, match="does not match its manifest"):
            neptune_bulk.bulk_load(s3, _neptune(), "s3://bkt/graph", None, ROLE, "eu-west-1")


def test_contract_failed_load_raises_with_errors():
    neptune = _neptune()
    with Stubber(neptune) as stub:
        stub.add_response("get_loader_job_status", {"status": "200 OK", "payload": {
            "overallStatus": {"status": "LOAD_FAILED"}, "errors": {"errorLogs": [{"errorCode": "PARSING_ERROR"}]}}},
            {"loadId": "v-9", "details": True, "errors": True})
        with pytest.raises(GraphError, match=r"LOAD_FAILED.*PARSING_ERROR"):
            neptune_bulk.wait_for_load(neptune, "v-9", sleep=lambda s: None)


def test_bad_s3_uri_and_empty_snapshot(tmp_path):
    with pytest.raises(SchemaError, match="s3://bucket/prefix"):
        neptune_bulk.parse_s3("https://bucket/x")
    with pytest.raises(SchemaError, match="no vertex or edge CSV"):
        neptune_bulk.upload_snapshot(object(), tmp_path, "s3://b/p")
    with pytest.raises(SchemaError, match="needs --s3"):
        neptune_bulk.bulk_load(object(), object(), tmp_path, None, ROLE, "eu-west-1")
