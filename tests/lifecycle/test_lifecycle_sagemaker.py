"""SageMaker without AWS: the pipeline definition is built offline (a Stubber with nothing queued fails any
call the SDK would make), and training jobs are contract-tested request by request."""

from __future__ import annotations

import json
import shlex

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from typer.testing import CliRunner

from identigraph.cli import app
from identigraph.etl.snapshot import CsvPartWriter, edge_header, vertex_header
from identigraph.lifecycle.config import load_lifecycle_config
from identigraph.lifecycle.gate import LifecycleError
from identigraph.lifecycle.sagemaker_jobs import instance_for, launch_training, training_job_request
from identigraph.lifecycle.sagemaker_pipeline import definition, pipeline_session
from lifecycle_helpers import assert_cli_accepts

REGION = "eu-west-1"
ROLE = "arn:aws:iam::123456789012:role/identigraph-sagemaker"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/identigraph:abc123"
SETTINGS = {"sagemaker.role_arn": ROLE, "sagemaker.image_uri": IMAGE, "sagemaker.s3_uri": "s3://ml-bucket/identigraph"}


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch):
    """Dummy keys so botocore can sign, and no instance metadata: any real call would fail loudly."""
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", REGION), ("AWS_EC2_METADATA_DISABLED", "true")):
        monkeypatch.setenv(name, value)


@pytest.fixture
def tiny_snapshot(tmp_path):
    snap = tmp_path / "snap"
    w = CsvPartWriter(snap / "vertices" / "device" / "part-00000.csv", vertex_header("device"))
    for i in range(50):
        w.write([f"device:d{i}", "device"])
    w.close()
    w = CsvPartWriter(snap / "edges" / "has_device" / "part-00000.csv", edge_header())
    w.write(["e:1", "customer:c1", "device:d1", "has_device", None, None, 1, 0, 1, 0, 0, 0])
    w.close()
    return snap


def _steps(d: dict) -> dict:
    out = {}
    for s in d["Steps"]:
        out[s["Name"]] = s
        if s["Type"] == "Condition":
            for inner in s["Arguments"]["IfSteps"] + s["Arguments"]["ElseSteps"]:
                out[inner["Name"]] = inner
    return out


def test_pipeline_definition_builds_offline_with_every_step(tmp_path):
    cfg = load_lifecycle_config(overrides=SETTINGS)
    session_boto = boto3.Session(region_name=REGION)
    sm = session_boto.client("sagemaker")
    with Stubber(sm):  # nothing queued: an SDK call to SageMaker would raise here
        d = definition(cfg, instance_for({"peak_memory_gib": 30.0, "mode": "full"}),
                       pipeline_session(REGION, sagemaker_client=sm, boto_session=session_boto))
    steps = _steps(d)
    assert [s["Name"] for s in d["Steps"]] == ["Prepare", "Train", "Evaluate", "QualityBar"]
    assert {n: s["Type"] for n, s in steps.items() if n.startswith(("Register", "Below"))} == {
        "Register-RegisterModel": "RegisterModel", "BelowBar": "Fail"}
    params = {p["Name"]: p.get("DefaultValue") for p in d["Parameters"]}
    assert params == {"ImageUri": IMAGE, "TrainingInstanceType": "ml.g6e.xlarge",  # 30 GiB × 1.2 > A10G's 24
                      "MinTestRecallAtP85": 0.3, "MinTestAuprc": 0.4}

    train = steps["Train"]["Arguments"]
    assert train["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}
    assert train["AlgorithmSpecification"]["ContainerEntrypoint"] == ["identigraph", "train"]
    assert {c["ChannelName"] for c in train["InputDataConfig"]} == {"snapshot", "labels"}
    assert train["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == {
        "Get": "Steps.Prepare.ProcessingOutputConfig.Outputs['snapshot'].S3Output.S3Uri"}

    evaluate = steps["Evaluate"]
    assert evaluate["PropertyFiles"] == [{"PropertyFileName": "EvaluationReport", "OutputName": "evaluation",
                                          "FilePath": "metrics.json"}]
    conditions = steps["QualityBar"]["Arguments"]["Conditions"]
    assert [(c["Type"], c["LeftValue"]["Std:JsonGet"]["Path"]) for c in conditions] == [
        ("GreaterThanOrEqualTo", "test.recall_at_p85"), ("GreaterThanOrEqualTo", "test.auprc"),
        ("Equals", "threshold_reached")]
    register = steps["Register-RegisterModel"]["Arguments"]
    assert register["ModelApprovalStatus"] == "PendingManualApproval"
    assert register["ModelPackageGroupName"] == "identigraph-fraud"
    assert register["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == {
        "Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}

    # the containers run our own CLI: every identigraph command in the steps exists with those options
    shell = [s["Arguments"]["AppSpecification"]["ContainerEntrypoint"][2] for s in (steps["Prepare"], evaluate)]
    commands = [shlex.split(part) for line in shell for part in line.split("&&")]
    commands.append(train["AlgorithmSpecification"]["ContainerEntrypoint"]
                    + train["AlgorithmSpecification"]["ContainerArguments"])
    assert_cli_accepts([c for c in commands if c[0] == "identigraph"], minimum=4)


def test_instance_sizing_follows_the_estimate():
    assert instance_for({"peak_memory_gib": 2.0, "mode": "full"}).type == "ml.g5.xlarge"
    assert instance_for({"peak_memory_gib": 35.0, "mode": "full"}).type == "ml.g6e.xlarge"
    assert instance_for({"peak_memory_gib": 60.0, "mode": "full"}).type == "ml.p4de.24xlarge"
    big = instance_for({"peak_memory_gib": 120.0, "mode": "full"})
    assert big.type == "ml.p4d.24xlarge" and "torchrun" in big.why
    assert instance_for({"peak_memory_gib": 3.0, "mode": "sampled"}).type == "ml.p4d.24xlarge"


def test_cli_pipeline_writes_the_definition_sized_from_a_snapshot(tmp_path, tiny_snapshot):
    out = tmp_path / "pipeline.json"
    r = CliRunner().invoke(app, ["sagemaker", "pipeline", "--out", str(out), "--snapshot", str(tiny_snapshot),
                                 "--target", "customer.blocked", "--role-arn", ROLE, "--image-uri", IMAGE,
                                 "--s3-uri", "s3://ml-bucket/identigraph"])
    assert r.exit_code == 0, r.output
    d = json.loads(out.read_text())
    steps = _steps(d)
    assert {p["Name"]: p.get("DefaultValue") for p in d["Parameters"]}["TrainingInstanceType"] == "ml.g5.xlarge"
    assert "--target" in steps["Train"]["Arguments"]["AlgorithmSpecification"]["ContainerArguments"]
    assert "identigraph label" not in steps["Prepare"]["Arguments"]["AppSpecification"]["ContainerEntrypoint"][2]
    missing = CliRunner().invoke(app, ["sagemaker", "pipeline"])
    assert missing.exit_code != 0 and "sagemaker.role_arn" in str(missing.exception)


def _job_request(name: str) -> dict:
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File",
                                   "ContainerEntrypoint": ["identigraph", "train"],
                                   "ContainerArguments": ["--snapshot", "/opt/ml/input/data/snapshot", "--out",
                                                          "/opt/ml/model", "--device", "auto", "--target",
                                                          "customer.blocked", "--set", "training.epochs=80"]},
        "RoleArn": ROLE,
        "InputDataConfig": [{"ChannelName": "snapshot", "DataSource": {"S3DataSource": {
            "S3DataType": "S3Prefix", "S3Uri": f"s3://ml-bucket/identigraph/jobs/{name}/snapshot/",
            "S3DataDistributionType": "FullyReplicated"}}}],
        "OutputDataConfig": {"S3OutputPath": f"s3://ml-bucket/identigraph/jobs/{name}/output"},
        "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
        "Tags": [{"Key": "project", "Value": "identigraph"}, {"Key": "instance-sizing", "Value": "set by the test"}],
    }


def test_contract_training_job_is_launched_and_followed_to_the_end():
    cfg = load_lifecycle_config(overrides=SETTINGS).sagemaker
    inst = instance_for({"peak_memory_gib": 1.0, "mode": "full"})
    request = training_job_request("identigraph-train-1", cfg, inst, "s3://ml-bucket/snap/", None,
                                   "customer.blocked", "s3://ml-bucket/out", ["training.epochs=80"])
    sm = boto3.client("sagemaker", region_name=REGION)
    with Stubber(sm) as stub:
        stub.add_response("create_training_job", {"TrainingJobArn": "arn:aws:sagemaker:eu-west-1:123456789012:"
                                                                    "training-job/identigraph-train-1"}, request)
        for status in ("InProgress", "Completed"):
            stub.add_response("describe_training_job", _described_job(status), {"TrainingJobName": "identigraph-train-1"})
        sleeps = []
        done = launch_training(sm, request, wait=True, poll_s=5, sleep=sleeps.append)
        stub.add_response("create_training_job", {"TrainingJobArn": "arn:x"}, request)
        stub.add_response("describe_training_job", _described_job("Failed", "CUDA out of memory"),
                          {"TrainingJobName": "identigraph-train-1"})
        with pytest.raises(LifecycleError, match="failed: CUDA out of memory"):
            launch_training(sm, request, wait=True, sleep=sleeps.append)
        stub.assert_no_pending_responses()
    assert done["TrainingJobStatus"] == "Completed" and sleeps == [5]
    assert request["AlgorithmSpecification"]["ContainerArguments"][-2:] == ["--set", "training.epochs=80"]
    assert request["ResourceConfig"]["InstanceType"] == "ml.g5.xlarge"


def _described_job(status: str, reason: str | None = None) -> dict:
    from datetime import datetime

    d = {"TrainingJobName": "identigraph-train-1", "TrainingJobArn": "arn:x", "TrainingJobStatus": status,
         "SecondaryStatus": "Completed" if status == "Completed" else "Training",
         "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File"},
         "ModelArtifacts": {"S3ModelArtifacts": "s3://ml-bucket/out/identigraph-train-1/output/model.tar.gz"},
         "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
         "StoppingCondition": {"MaxRuntimeInSeconds": 86400}, "CreationTime": datetime(2026, 11, 27)}
    if reason:
        d["FailureReason"] = reason
    return d


def test_contract_cli_sagemaker_train_uploads_the_snapshot_and_starts_the_job(tiny_snapshot, monkeypatch):
    from identigraph.etl import snapshot as snap

    name = "identigraph-train-test"
    expected = _job_request(name)
    monkeypatch.setattr(snap, "new_run_id", lambda: "run-1")  # a plain folder is uploaded under a fresh run id
    channel = expected["InputDataConfig"][0]["DataSource"]["S3DataSource"]
    channel["S3Uri"] += "run-1/"  # the job reads the prefix the snapshot went to
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        s3.create_bucket(Bucket="ml-bucket", CreateBucketConfiguration={"LocationConstraint": REGION})
        sm = boto3.client("sagemaker", region_name=REGION)
        clients = {"s3": s3, "sagemaker": sm}
        monkeypatch.setattr(boto3, "client", lambda service, **_: clients[service])
        with Stubber(sm) as stub:
            expected["Tags"][1]["Value"] = "1 × A10G 24 GiB; estimated peak 0.0 GiB"
            stub.add_response("create_training_job", {"TrainingJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:"
                                                                         f"training-job/{name}"}, expected)
            r = CliRunner().invoke(app, ["sagemaker", "train", "--snapshot", str(tiny_snapshot), "--target",
                                         "customer.blocked", "--set", "training.epochs=80", "--job-name", name,
                                         "--role-arn", ROLE, "--image-uri", IMAGE,
                                         "--s3-uri", "s3://ml-bucket/identigraph"])
            assert r.exit_code == 0, r.output
            stub.assert_no_pending_responses()
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="ml-bucket")["Contents"])
    assert keys == [f"identigraph/jobs/{name}/snapshot/run-1/edges/has_device/part-00000.csv",
                    f"identigraph/jobs/{name}/snapshot/run-1/vertices/device/part-00000.csv"]
