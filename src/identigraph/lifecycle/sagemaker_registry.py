"""The registry on SageMaker's Model Registry: one model package group, one model package per version.

Approval is SageMaker's own ``ModelApprovalStatus`` (``PendingManualApproval`` → ``Approved`` /
``Rejected``): that status change is the EventBridge event ("SageMaker Model Package State Change") a
deploy pipeline is triggered by, so approving here or in SageMaker Studio starts the same deployment.
SageMaker has no notion of stages, so a stage is a customer-metadata key (``stage.production`` = when it
was promoted): visible in Studio beside the metrics, and moved from one package to the next by promotion.

The model files go to S3 as ``model.tar.gz`` (the layout SageMaker hosting unpacks into /opt/ml/model)
with metrics.json beside it as the package's model-quality report. Calls are plain boto3, so contract
tests pin every request with botocore's Stubber.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

from identigraph.etl.neptune_bulk import parse_s3
from identigraph.lifecycle.config import LifecycleConfig
from identigraph.lifecycle.gate import LifecycleError, flat_metrics
from identigraph.lifecycle.registry import (
    APPROVED,
    PENDING,
    REJECTED,
    ModelVersion,
    Registry,
    now,
    read_model_dir,
    user,
)

_STATUS = {"PendingManualApproval": PENDING, "Approved": APPROVED, "Rejected": REJECTED}
_TO_SAGEMAKER = {v: k for k, v in _STATUS.items()}
_STAGE = "stage."
CONTENT_TYPES = ["application/json", "text/csv"]   # what the API's /invocations accepts and returns


def tar_model_dir(model_dir: Path) -> bytes:
    """A model directory as the model.tar.gz SageMaker expects (flat, files only)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for f in sorted(Path(model_dir).iterdir()):
            if f.is_file():
                tar.add(f, arcname=f.name)
    return buf.getvalue()


class SageMakerRegistry(Registry):
    """Versions as model packages of one group, so SageMaker's own approval and deployment see them."""

    name = "sagemaker"

    @classmethod
    def from_config(cls, cfg: LifecycleConfig, data_path: Path) -> SageMakerRegistry:
        """Clients for the configured region; needs ``sagemaker.s3_uri`` and ``sagemaker.image_uri``."""
        import boto3

        sm = cfg.sagemaker
        sm.need("s3_uri", "image_uri")
        assert sm.s3_uri is not None and sm.image_uri is not None  # need() raised otherwise
        return cls(boto3.client("sagemaker", region_name=sm.region), boto3.client("s3", region_name=sm.region),
                   cfg.registry.model_name, sm.s3_uri, sm.image_uri, sm.inference_instance_types)

    def __init__(self, sagemaker: Any, s3: Any, group: str, s3_uri: str, image_uri: str,
                 inference_instances: list[str] | None = None) -> None:
        self.sm, self.s3, self.group = sagemaker, s3, group
        self.bucket, self.prefix = parse_s3(s3_uri)
        self.image_uri = image_uri
        self.inference_instances = inference_instances or ["ml.c5.xlarge"]
        self._group_arn: str | None = None

    def _ensure_group(self) -> str:
        if self._group_arn:
            return self._group_arn
        try:
            self._group_arn = self.sm.describe_model_package_group(ModelPackageGroupName=self.group)[
                "ModelPackageGroupArn"]
        except self.sm.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] not in ("ValidationException", "ResourceNotFound"):
                raise
            self._group_arn = self.sm.create_model_package_group(
                ModelPackageGroupName=self.group,
                ModelPackageGroupDescription="identigraph fraud model (edge-aware RGCN)")["ModelPackageGroupArn"]
        return self._group_arn

    def _arn(self, version: str) -> str:
        return self._ensure_group().replace(":model-package-group/", ":model-package/") + f"/{version}"

    def register(self, model_dir: Path, description: str = "") -> ModelVersion:
        model_version, metrics = read_model_dir(model_dir)
        flat = flat_metrics(metrics)
        self._ensure_group()
        key = "/".join(p for p in (self.prefix, "models", model_version) if p) + "/"
        self.s3.put_object(Bucket=self.bucket, Key=key + "model.tar.gz", Body=tar_model_dir(model_dir))
        self.s3.put_object(Bucket=self.bucket, Key=key + "metrics.json",
                           Body=(Path(model_dir) / "metrics.json").read_bytes(), ContentType="application/json")
        base = f"s3://{self.bucket}/{key}"
        props = {"model_version": model_version, "registered_by": user(), "registered_at": now(),
                 **{k: f"{v:.6g}" for k, v in flat.items()}}
        arn = self.sm.create_model_package(
            ModelPackageGroupName=self.group,
            ModelPackageDescription=(description or f"identigraph model {model_version}")[:1024],
            InferenceSpecification={
                "Containers": [{"Image": self.image_uri, "ModelDataUrl": base + "model.tar.gz",
                                "Environment": {"IDENTIGRAPH_MODEL_VERSION": model_version}}],
                "SupportedContentTypes": CONTENT_TYPES, "SupportedResponseMIMETypes": CONTENT_TYPES,
                "SupportedRealtimeInferenceInstanceTypes": self.inference_instances},
            ModelMetrics={"ModelQuality": {"Statistics": {"ContentType": "application/json",
                                                          "S3Uri": base + "metrics.json"}}},
            ModelApprovalStatus="PendingManualApproval",
            CustomerMetadataProperties=props,
        )["ModelPackageArn"]
        return self.get(arn.rsplit("/", 1)[1])

    def _describe(self, arn: str) -> ModelVersion:
        d = self.sm.describe_model_package(ModelPackageName=arn)
        props = d.get("CustomerMetadataProperties", {})
        metrics, notes, stages = {}, {}, []
        for k, v in props.items():
            if k.startswith(_STAGE):
                stages.append((v, k[len(_STAGE):]))
                notes[f"{k[len(_STAGE):]}_since"] = v
            elif k.startswith(("val.", "test.")) or k in ("threshold", "threshold_reached", "train_seconds"):
                metrics[k] = float(v)
            elif k.startswith(("approved", "rejected", "registered_by")):
                notes[k] = v
        if d.get("ApprovalDescription"):
            notes["approval_description"] = d["ApprovalDescription"]
        created = d.get("CreationTime")
        return ModelVersion(
            version=str(d["ModelPackageVersion"]), model_version=props.get("model_version", ""),
            status=_STATUS.get(d["ModelApprovalStatus"], d["ModelApprovalStatus"]),
            stages=[s for _, s in sorted(stages)], metrics=metrics,
            source=d["InferenceSpecification"]["Containers"][0]["ModelDataUrl"],
            created_at=props.get("registered_at", created.isoformat() if created else ""), notes=notes)

    def list(self) -> list[ModelVersion]:
        arns: list[str] = []
        kwargs: dict[str, Any] = {"ModelPackageGroupName": self.group, "SortBy": "CreationTime",
                                  "SortOrder": "Ascending"}
        while True:
            page = self.sm.list_model_packages(**kwargs)
            arns += [s["ModelPackageArn"] for s in page["ModelPackageSummaryList"]]
            if not page.get("NextToken"):
                break
            kwargs["NextToken"] = page["NextToken"]
        versions = [self._describe(a) for a in arns]
        # a stage is held by one version: if a promotion was interrupted between its two updates, the
        # most recent promotion wins (stage values are ISO times)
        for stage in {s for v in versions for s in v.stages}:
            holders = sorted((v for v in versions if stage in v.stages), key=lambda v: v.notes[f"{stage}_since"])
            for v in holders[:-1]:
                v.stages.remove(stage)
        return sorted(versions, key=lambda m: int(m.version))

    def get(self, version: str) -> ModelVersion:
        try:
            return self._describe(self._arn(str(version)))
        except self.sm.exceptions.ClientError as exc:
            if exc.response["Error"]["Code"] in ("ValidationException", "ResourceNotFound"):
                raise LifecycleError(f"sagemaker: no version {version} in {self.group}") from None
            raise

    def _set_status(self, version: str, status: str, by: str, note: str) -> None:
        verb = "approved" if status == APPROVED else "rejected"
        self.sm.update_model_package(
            ModelPackageArn=self._arn(version), ModelApprovalStatus=_TO_SAGEMAKER[status],
            ApprovalDescription=f"{verb} by {by}" + (f": {note}" if note else ""),
            CustomerMetadataProperties={f"{verb}_by": by, f"{verb}_at": now()})

    def _set_stage(self, version: str, stage: str) -> None:
        previous = self.current(stage)
        self.sm.update_model_package(ModelPackageArn=self._arn(version),
                                     CustomerMetadataProperties={_STAGE + stage: now()})
        if previous is not None and previous.version != version:
            self.sm.update_model_package(ModelPackageArn=self._arn(previous.version),
                                         CustomerMetadataPropertiesToRemove=[_STAGE + stage])

    def fetch(self, version: str, dest: Path) -> Path:
        bucket, key = parse_s3(self.get(version).source)
        body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
        return dest
