"""SageMaker training: the instance a run needs (from ``identigraph train --estimate``) and one training job.

The job runs our own image (deploy/Dockerfile) with ``identigraph train`` as its entry point — the same
command, code and feature encoder as a local run — reading SageMaker's channel folders and writing
/opt/ml/model, which SageMaker archives as model.tar.gz. Plain boto3 (``create_training_job``) rather than
the SDK's Estimator: one request that a contract test can pin field by field, and no SDK session that
looks for credentials or a default bucket on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from identigraph.lifecycle.config import SageMakerConfig
from identigraph.lifecycle.gate import LifecycleError

CHANNELS = "/opt/ml/input/data"
MODEL_OUT = "/opt/ml/model"


@dataclass(frozen=True)
class Instance:
    """The training instance chosen for a graph, with the reason, so the choice can be reviewed."""
    type: str
    gpus: int
    gpu_memory_gib: int
    why: str


# smallest first: the first whose per-GPU memory holds the estimated peak (with 20 % headroom)
_GPU_INSTANCES = [
    ("ml.g5.xlarge", 1, 24, "1 × A10G 24 GiB"),
    ("ml.g6e.xlarge", 1, 48, "1 × L40S 48 GiB"),
    ("ml.p4de.24xlarge", 8, 80, "A100 80 GiB (one GPU used: full-batch does not shard)"),
]
_MULTI_GPU = ("ml.p4d.24xlarge", 8, 40, "8 × A100 40 GiB, sampled mini-batches under torchrun/DDP")


def instance_for(estimate: dict[str, Any]) -> Instance:
    """A GPU training instance for ``identigraph.model.pipeline.estimate``'s figures.

    Full-batch training holds the whole graph on one GPU, so the question is per-GPU memory; past the
    largest single GPU the run switches to sampled mini-batches across the 8 GPUs of one instance.
    """
    need = float(estimate["peak_memory_gib"]) * 1.2
    if estimate.get("mode") != "sampled":
        for name, gpus, mem, why in _GPU_INSTANCES:
            if need <= mem:
                return Instance(name, gpus, mem, f"{why}; estimated peak {estimate['peak_memory_gib']:.1f} GiB")
    name, gpus, mem, why = _MULTI_GPU
    return Instance(name, gpus, mem, f"{why}; estimated peak {estimate['peak_memory_gib']:.1f} GiB")


def train_entry(instance: Instance) -> list[str]:
    """The container's command: torchrun across the GPUs on a multi-GPU instance, plain training otherwise."""
    if instance.type == _MULTI_GPU[0]:
        return ["torchrun", f"--nproc_per_node={instance.gpus}", "--no-python", "identigraph", "train"]
    return ["identigraph", "train"]


def train_arguments(labels: bool, target: str | None, sets: list[str] | None = None) -> list[str]:
    """``identigraph train`` arguments inside the container: channels in, /opt/ml/model out."""
    args = ["--snapshot", f"{CHANNELS}/snapshot", "--out", MODEL_OUT, "--device", "auto"]
    if labels:
        args += ["--labels", f"{CHANNELS}/labels"]
    elif target:
        args += ["--target", target]
    else:
        raise LifecycleError("training needs labels or a --target property")
    for s in sets or []:
        args += ["--set", s]
    return args


def _channel(name: str, uri: str) -> dict[str, Any]:
    return {"ChannelName": name, "DataSource": {"S3DataSource": {
        "S3DataType": "S3Prefix", "S3Uri": uri, "S3DataDistributionType": "FullyReplicated"}}}


def training_job_request(name: str, cfg: SageMakerConfig, instance: Instance, snapshot_s3: str,
                         labels_s3: str | None, target: str | None, output_s3: str,
                         sets: list[str] | None = None, volume_gib: int = 50) -> dict[str, Any]:
    """The CreateTrainingJob request for one run, built here so tests check it without AWS."""
    cfg.need("role_arn", "image_uri")
    channels = [_channel("snapshot", snapshot_s3)] + ([_channel("labels", labels_s3)] if labels_s3 else [])
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": cfg.image_uri, "TrainingInputMode": "File",
                                   "ContainerEntrypoint": train_entry(instance),
                                   "ContainerArguments": train_arguments(bool(labels_s3), target, sets)},
        "RoleArn": cfg.role_arn,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": output_s3},
        "ResourceConfig": {"InstanceType": instance.type, "InstanceCount": 1, "VolumeSizeInGB": volume_gib},
        "StoppingCondition": {"MaxRuntimeInSeconds": cfg.max_runtime_s},
        "Tags": [{"Key": "project", "Value": "identigraph"}, {"Key": "instance-sizing", "Value": instance.why[:256]}],
    }


def launch_training(sm: Any, request: dict[str, Any], wait: bool = False, poll_s: float = 30.0,
                    sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Start the job; with ``wait``, poll until it ends and raise with SageMaker's reason if it failed."""
    arn = sm.create_training_job(**request)["TrainingJobArn"]
    if not wait:
        return {"TrainingJobArn": arn, "TrainingJobStatus": "InProgress"}
    while True:
        d = sm.describe_training_job(TrainingJobName=request["TrainingJobName"])
        status = d["TrainingJobStatus"]
        if status == "Completed":
            return d
        if status in ("Failed", "Stopped"):
            raise LifecycleError(f"training job {request['TrainingJobName']} {status.lower()}: "
                                 f"{d.get('FailureReason', 'no reason given')}")
        sleep(poll_s)


def upload_dir(s3: Any, local: Path, uri: str) -> str:
    """Every file under ``local`` to ``uri`` (labels, small folders); returns the prefix URI."""
    from identigraph.etl.neptune_bulk import parse_s3

    bucket, prefix = parse_s3(uri)
    for f in sorted(Path(local).rglob("*")):
        if f.is_file():
            s3.upload_file(str(f), bucket, "/".join(p for p in (prefix, *f.relative_to(local).parts) if p))
    return f"s3://{bucket}/{prefix}".rstrip("/") + "/"
