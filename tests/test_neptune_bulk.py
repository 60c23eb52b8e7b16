"""Contract tests for the Neptune bulk-load path: S3 via moto, neptunedata via botocore's Stubber."""

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from identigraph.errors import GraphError, SchemaError
from identigraph.etl import neptune_bulk
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


def test_contract_bulk_load_uploads_graph_files_and_chains_jobs(tiny_snapshot):
    with mock_aws():
        s3 = boto3.client("s3", region_name="eu-west-1")
        s3.create_bucket(Bucket="bkt", CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
        neptune = _neptune()
        with Stubber(neptune) as stub:
            common = {"format": "csv", "s3BucketRegion": "eu-west-1", "iamRoleArn": ROLE, "mode": "AUTO",
                      "failOnError": True, "parallelism": "MEDIUM", "updateSingleCardinalityProperties": True,
                      "queueRequest": True}
            stub.add_response("start_loader_job", {"status": "200 OK", "payload": {"loadId": "v-1"}},
                              {"source": "s3://bkt/snaps/2026/vertices/", **common})
            stub.add_response("start_loader_job", {"status": "200 OK", "payload": {"loadId": "e-1"}},
                              {"source": "s3://bkt/snaps/2026/edges/", "dependencies": ["v-1"], **common})
            stub.add_response("get_loader_job_status", _status("LOAD_IN_PROGRESS"),
                              {"loadId": "v-1", "details": True, "errors": True})
            stub.add_response("get_loader_job_status", _status("LOAD_COMPLETED"),
                              {"loadId": "v-1", "details": True, "errors": True})
            stub.add_response("get_loader_job_status", _status("LOAD_COMPLETED"),
                              {"loadId": "e-1", "details": True, "errors": True})
            sleeps = []
            result = neptune_bulk.bulk_load(s3, neptune, tiny_snapshot, "s3://bkt/snaps/2026/", ROLE, "eu-west-1",
                                            poll_s=3, sleep=sleeps.append)
            stub.assert_no_pending_responses()
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="bkt")["Contents"])
    assert keys == ["snaps/2026/edges/has_device/part-00000.csv", "snaps/2026/vertices/device/part-00000.csv"]
    assert result["uploaded"] == 2 and result["edges"]["status"] == "LOAD_COMPLETED" and sleeps == [3]


def test_contract_failed_load_raises_with_errors():
    neptune = _neptune()
    with Stubber(neptune) as stub:
        stub.add_response("get_loader_job_status", {"status": "200 OK", "payload": {
            "overallStatus": {"status": "LOAD_FAILED"}, "errors": {"errorLogs": [{"errorCode": "PARSING_ERROR"}]}}},
            {"loadId": "v-9", "details": True, "errors": True})
        with pytest.raises(GraphError, match="LOAD_FAILED.*PARSING_ERROR"):
            neptune_bulk.wait_for_load(neptune, "v-9", sleep=lambda s: None)


def test_bad_s3_uri_and_empty_snapshot(tmp_path):
    with pytest.raises(SchemaError, match="s3://bucket/prefix"):
        neptune_bulk.parse_s3("https://bucket/x")
    with pytest.raises(SchemaError, match="no vertex or edge CSV"):
        neptune_bulk.upload_snapshot(object(), tmp_path, "s3://b/p")
