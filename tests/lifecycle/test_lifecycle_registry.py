"""The registry's two back-ends behind one interface.

MLflow runs for real on a local sqlite database. The SageMaker Model Registry is contract-tested: every
request to the ``sagemaker`` client is pinned with botocore's Stubber (names, values, approval statuses,
metadata keys), and S3 is moto, so the archive SageMaker hosting would unpack can be opened and checked.
"""

from __future__ import annotations

import io
import json
import tarfile
from datetime import datetime, timezone

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from identigraph.lifecycle import sagemaker_registry
from identigraph.lifecycle.gate import LifecycleError
from identigraph.lifecycle.sagemaker_registry import SageMakerRegistry
from lifecycle_helpers import fake_model, mlflow_registry

REGION = "eu-west-1"
GROUP = "identigraph-fraud"
GROUP_ARN = f"arn:aws:sagemaker:{REGION}:123456789012:model-package-group/{GROUP}"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/identigraph:abc123"
NOW = "2026-11-27T12:00:00+00:00"


# ---- MLflow ----------------------------------------------------------------------------------------------
def test_mlflow_register_approve_reject_promote_and_fetch(tmp_path):
    reg = mlflow_registry(tmp_path / "mlflow")
    assert reg.list() == [] and reg.current("production") is None
    first = reg.register(fake_model(tmp_path / "a", "aaaa00000001", auprc=0.81, recall=0.62))
    second = reg.register(fake_model(tmp_path / "b", "bbbb00000002"), description="retrained on June")
    third = reg.register(fake_model(tmp_path / "c", "cccc00000003"))
    assert [(m.version, m.model_version, m.status, m.stages) for m in (first, second, third)] == [
        ("1", "aaaa00000001", "pending", []), ("2", "bbbb00000002", "pending", []),
        ("3", "cccc00000003", "pending", [])]
    assert first.metrics["test.auprc"] == pytest.approx(0.81) and first.metrics["threshold_reached"] == 1.0

    approved = reg.approve("1", by="alice", note="ring recall up")
    assert approved.status == "approved" and approved.notes["approved_by"] == "alice"
    assert approved.notes["approved_note"] == "ring recall up"
    rejected = reg.reject("3", by="bob", reason="worse on account takeover")
    assert rejected.status == "rejected" and rejected.notes["rejected_note"] == "worse on account takeover"

    reg.promote("1", "staging")
    reg.promote("1", "production")
    reg.promote("2", "staging")  # a stage is held by one version: staging moves, production stays
    assert reg.current("staging").version == "2" and reg.current("production").version == "1"
    assert reg.get("1").stages == ["production"]
    with pytest.raises(LifecycleError, match="holds production"):
        reg.reject("1", reason="no")
    with pytest.raises(LifecycleError, match="unknown stage"):
        reg.promote("1", "prod")
    with pytest.raises(LifecycleError, match="no version 9"):
        reg.get("9")

    got = reg.fetch("2", tmp_path / "fetched")
    assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in (tmp_path / "b").iterdir())
    assert (got / "model.pt").read_bytes() == (tmp_path / "b" / "model.pt").read_bytes()


# ---- SageMaker Model Registry (contract) -----------------------------------------------------------------
@pytest.fixture
def aws(monkeypatch):
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", REGION)):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sagemaker_registry, "now", lambda: NOW)
    monkeypatch.setattr(sagemaker_registry, "user", lambda: "ci")
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="ml-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
        sm = boto3.client("sagemaker", region_name=REGION)
        with Stubber(sm) as stub:
            yield SageMakerRegistry(sm, s3, GROUP, "s3://ml-bucket/identigraph", IMAGE, ["ml.c5.xlarge"]), stub, s3
            stub.assert_no_pending_responses()


def _arn(v: int) -> str:
    return f"arn:aws:sagemaker:{REGION}:123456789012:model-package/{GROUP}/{v}"


def _described(v: int, status: str = "PendingManualApproval", **props: str) -> dict:
    return {"ModelPackageName": GROUP, "ModelPackageGroupName": GROUP, "ModelPackageVersion": v,
            "ModelPackageArn": _arn(v), "CreationTime": datetime(2026, 11, 27, tzinfo=timezone.utc),
            "ModelPackageStatus": "Completed",
            "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
            "ModelApprovalStatus": status,
            "InferenceSpecification": {"Containers": [{"Image": IMAGE, "ModelDataUrl":
                                                       f"s3://ml-bucket/identigraph/models/m{v}/model.tar.gz"}],
                                       "SupportedContentTypes": ["application/json"],
                                       "SupportedResponseMIMETypes": ["application/json"]},
            "CustomerMetadataProperties": {"model_version": f"m{v}", "test.auprc": "0.8", **props}}


def _group_exists(stub) -> None:
    stub.add_response("describe_model_package_group", {
        "ModelPackageGroupName": GROUP, "ModelPackageGroupArn": GROUP_ARN, "CreationTime": datetime(2026, 1, 1),
        "CreatedBy": {}, "ModelPackageGroupStatus": "Completed"}, {"ModelPackageGroupName": GROUP})


def test_contract_register_creates_the_group_uploads_and_creates_a_pending_package(aws, tmp_path):
    reg, stub, s3 = aws
    model = fake_model(tmp_path / "m", "abcdef123456", auprc=0.8, recall=0.6)
    stub.add_client_error("describe_model_package_group", service_error_code="ValidationException",
                          service_message="Model Package Group identigraph-fraud does not exist.",
                          expected_params={"ModelPackageGroupName": GROUP})
    stub.add_response("create_model_package_group", {"ModelPackageGroupArn": GROUP_ARN}, {
        "ModelPackageGroupName": GROUP, "ModelPackageGroupDescription": "identigraph fraud model (edge-aware RGCN)"})
    base = "s3://ml-bucket/identigraph/models/abcdef123456/"
    metadata = {"model_version": "abcdef123456", "registered_by": "ci", "registered_at": NOW,
                "val.auroc": "0.95", "val.auprc": "0.8", "val.recall_at_p85": "0.6", "val.recall_at_p90": "0.54",
                "val.precision_at_r50": "0.9", "test.auroc": "0.95", "test.auprc": "0.8",
                "test.recall_at_p85": "0.6", "test.recall_at_p90": "0.54", "test.precision_at_r50": "0.9",
                "threshold": "0.7", "train_seconds": "12.5", "threshold_reached": "1"}
    stub.add_response("create_model_package", {"ModelPackageArn": _arn(1)}, {
        "ModelPackageGroupName": GROUP, "ModelPackageDescription": "June retrain",
        "InferenceSpecification": {
            "Containers": [{"Image": IMAGE, "ModelDataUrl": base + "model.tar.gz",
                            "Environment": {"IDENTIGRAPH_MODEL_VERSION": "abcdef123456"}}],
            "SupportedContentTypes": ["application/json", "text/csv"],
            "SupportedResponseMIMETypes": ["application/json", "text/csv"],
            "SupportedRealtimeInferenceInstanceTypes": ["ml.c5.xlarge"]},
        "ModelMetrics": {"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                         "S3Uri": base + "metrics.json"}}},
        "ModelApprovalStatus": "PendingManualApproval",
        "CustomerMetadataProperties": metadata})
    stub.add_response("describe_model_package", _described(1), {"ModelPackageName": _arn(1)})

    mv = reg.register(model, "June retrain")
    assert (mv.version, mv.model_version, mv.status) == ("1", "m1", "pending")
    archive = s3.get_object(Bucket="ml-bucket", Key="identigraph/models/abcdef123456/model.tar.gz")["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:  # what /opt/ml/model will hold
        assert sorted(tar.getnames()) == ["config.json", "encoder.json", "metrics.json", "model.pt", "model_card.md"]
    report = s3.get_object(Bucket="ml-bucket", Key="identigraph/models/abcdef123456/metrics.json")["Body"].read()
    assert json.loads(report)["version"] == "abcdef123456"


def test_contract_approve_and_reject_set_sagemaker_approval_status(aws):
    reg, stub, _ = aws
    _group_exists(stub)
    stub.add_response("describe_model_package", _described(2), {"ModelPackageName": _arn(2)})
    stub.add_response("update_model_package", {"ModelPackageArn": _arn(2)}, {
        "ModelPackageArn": _arn(2), "ModelApprovalStatus": "Approved", "ApprovalDescription": "approved by alice: ok",
        "CustomerMetadataProperties": {"approved_by": "alice", "approved_at": NOW}})
    stub.add_response("describe_model_package", _described(2, "Approved", approved_by="alice"),
                      {"ModelPackageName": _arn(2)})
    assert reg.approve("2", by="alice", note="ok").status == "approved"

    stub.add_response("describe_model_package", _described(3), {"ModelPackageName": _arn(3)})
    stub.add_response("update_model_package", {"ModelPackageArn": _arn(3)}, {
        "ModelPackageArn": _arn(3), "ModelApprovalStatus": "Rejected",
        "ApprovalDescription": "rejected by bob: worse on ATO",
        "CustomerMetadataProperties": {"rejected_by": "bob", "rejected_at": NOW}})
    stub.add_response("describe_model_package", _described(3, "Rejected"), {"ModelPackageName": _arn(3)})
    assert reg.reject("3", by="bob", reason="worse on ATO").status == "rejected"


def test_contract_promote_moves_the_stage_key_from_the_previous_holder(aws):
    reg, stub, _ = aws
    _group_exists(stub)
    stub.add_response("describe_model_package", _described(2, "Approved"), {"ModelPackageName": _arn(2)})
    # current("production"): every package of the group, over two pages
    stub.add_response("list_model_packages", {"ModelPackageSummaryList": [
        {"ModelPackageArn": _arn(1), "ModelPackageGroupName": GROUP, "ModelPackageVersion": 1,
         "CreationTime": datetime(2026, 11, 1), "ModelPackageStatus": "Completed"}], "NextToken": "p2"},
        {"ModelPackageGroupName": GROUP, "SortBy": "CreationTime", "SortOrder": "Ascending"})
    stub.add_response("list_model_packages", {"ModelPackageSummaryList": [
        {"ModelPackageArn": _arn(2), "ModelPackageGroupName": GROUP, "ModelPackageVersion": 2,
         "CreationTime": datetime(2026, 11, 2), "ModelPackageStatus": "Completed"}]},
        {"ModelPackageGroupName": GROUP, "SortBy": "CreationTime", "SortOrder": "Ascending", "NextToken": "p2"})
    stub.add_response("describe_model_package",
                      _described(1, "Approved", **{"stage.production": "2026-11-01T00:00:00+00:00"}),
                      {"ModelPackageName": _arn(1)})
    stub.add_response("describe_model_package", _described(2, "Approved"), {"ModelPackageName": _arn(2)})
    stub.add_response("update_model_package", {"ModelPackageArn": _arn(2)}, {
        "ModelPackageArn": _arn(2), "CustomerMetadataProperties": {"stage.production": NOW}})
    stub.add_response("update_model_package", {"ModelPackageArn": _arn(1)}, {
        "ModelPackageArn": _arn(1), "CustomerMetadataPropertiesToRemove": ["stage.production"]})
    stub.add_response("describe_model_package", _described(2, "Approved", **{"stage.production": NOW}),
                      {"ModelPackageName": _arn(2)})
    mv = reg.promote("2", "production")
    assert mv.stages == ["production"] and mv.notes["production_since"] == NOW


def test_contract_fetch_unpacks_the_archive_and_missing_versions_are_named(aws, tmp_path):
    reg, stub, s3 = aws
    model = fake_model(tmp_path / "m", "m4")
    s3.put_object(Bucket="ml-bucket", Key="identigraph/models/m4/model.tar.gz",
                  Body=sagemaker_registry.tar_model_dir(model))
    _group_exists(stub)
    stub.add_response("describe_model_package", _described(4), {"ModelPackageName": _arn(4)})
    got = reg.fetch("4", tmp_path / "out")
    assert (got / "model.pt").read_bytes() == (model / "model.pt").read_bytes()
    stub.add_client_error("describe_model_package", service_error_code="ValidationException",
                          expected_params={"ModelPackageName": _arn(9)})
    with pytest.raises(LifecycleError, match="no version 9 in identigraph-fraud"):
        reg.get("9")
