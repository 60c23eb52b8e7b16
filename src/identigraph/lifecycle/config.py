"""Typed lifecycle and tuning configuration (``lifecycle.yaml``, ``tune.yaml``).

Strict like every other tree here: a mistyped bar (``test.auprc`` vs ``test.aurpc``) silently falling back
to "no bar" would register anything, so unknown keys and unknown metric names are errors that name them.
Read like every other configuration (``identigraph.config_loader``): ``--lifecycle-config`` /
``--tune-config``, ``$IDENTIGRAPH_LIFECYCLE_CONFIG`` / ``$IDENTIGRAPH_TUNE_CONFIG`` or the packaged
defaults, then ``IDENTIGRAPH_LIFECYCLE__…`` / ``IDENTIGRAPH_TUNE__…`` variables, then dotted overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from identigraph.config_loader import LIFECYCLE, TUNE, StrictModel, load_config
from identigraph.errors import ConfigError

Stage = Literal["staging", "production"]
STAGES: tuple[str, ...] = ("staging", "production")
# what metrics.json holds per split (identigraph.model.metrics.summary)
_SPLIT_METRICS = ("auroc", "auprc", "recall_at_p85", "recall_at_p90", "precision_at_r50")
GATE_METRICS = tuple(f"{split}.{m}" for split in ("val", "test") for m in _SPLIT_METRICS)


def _known_metrics(bars: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(bars) - set(GATE_METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(GATE_METRICS)}")
    return bars


class RegistryConfig(StrictModel):
    """Where versions are registered: MLflow locally, SageMaker's Model Registry in AWS."""

    backend: Literal["mlflow", "sagemaker"] = "mlflow"
    model_name: str = Field("identigraph-fraud", pattern=r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,62}$")
    mlflow_uri: str | None = None


class GateConfig(StrictModel):
    """The registration bar: absolute minimums and the drop allowed against what production serves."""

    min: dict[str, float] = Field(default_factory=lambda: {"test.recall_at_p85": 0.3, "test.auprc": 0.4})
    threshold_reached: bool = True
    max_drop_vs_production: dict[str, float] = Field(default_factory=dict)

    @field_validator("min", "max_drop_vs_production")
    @classmethod
    def _metrics(cls, bars: dict[str, float]) -> dict[str, float]:
        return _known_metrics(bars)


Behaviour = Literal["fresh_ring", "household", "awkward_graphs"]
_ALL_BEHAVIOURS: tuple[Behaviour, ...] = ("fresh_ring", "household", "awkward_graphs")


class StagingCheckConfig(StrictModel):
    """What a version must show on the staging API before it may go to production."""

    behaviour: list[Behaviour] = Field(default_factory=lambda: list(_ALL_BEHAVIOURS))
    snapshot: Path | None = None
    staging_url: str = "http://127.0.0.1:8081"
    api_key_env: str = "IDENTIGRAPH_STAGING_API_KEY"
    requests: int = Field(40, ge=1, le=10_000)
    p95_ms: float = Field(500.0, gt=0)
    max_error_rate: float = Field(0.0, ge=0, le=1)


class PromotionConfig(StrictModel):
    """A person approves; a machine checks staging: both stand between a model and production."""

    require_approval: bool = True
    staging_check: StagingCheckConfig = Field(default_factory=StagingCheckConfig)


class DeployConfig(StrictModel):
    """Where each stage's model directory lives and who hears about a promotion."""

    dir: Path = Path("deploy")
    keep: int = Field(5, ge=0)
    notify: dict[Stage, list[str]] = Field(default_factory=dict)
    admin_key_env: str = "IDENTIGRAPH_ADMIN_API_KEY"


class SageMakerConfig(StrictModel):
    """The AWS side of the lifecycle; nothing here is needed to run it locally."""

    region: str = "eu-west-1"
    role_arn: str | None = None
    image_uri: str | None = None
    s3_uri: str | None = Field(None, pattern=r"^s3://[a-z0-9.\-]{3,63}(/.*)?$")
    pipeline_name: str = "identigraph-model-build"
    processing_instance_type: str = "ml.m5.2xlarge"
    inference_instance_types: list[str] = Field(default_factory=lambda: ["ml.c5.xlarge"])
    max_runtime_s: int = Field(86_400, ge=60)
    graph_config: str = "conf/neptune.yaml"
    subnets: list[str] = Field(default_factory=list)             # VPC of the Neptune cluster, for processing
    security_group_ids: list[str] = Field(default_factory=list)

    def need(self, *names: str) -> None:
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            raise ConfigError(f"sagemaker.{', sagemaker.'.join(missing)} must be set (the lifecycle configuration or the "
                              f"command's options)")


class LifecycleConfig(StrictModel):
    """Registry, bar, promotion and deployment: one file for the path from a trained model to production."""

    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    sagemaker: SageMakerConfig = Field(default_factory=SageMakerConfig)


class SearchParam(StrictModel):
    """One hyperparameter's range, as Optuna samples it."""

    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None


class TuneConfig(StrictModel):
    """The tuning budget and search space: epochs are the fidelity Hyperband prunes on."""

    objective: Literal["val_auprc", "val_recall_at_p85"] = "val_auprc"
    second_objective: Literal["train_seconds"] | None = None
    trials: int = Field(20, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    min_epochs: int = Field(4, ge=1)
    max_epochs: int = Field(60, ge=2)
    reduction_factor: int = Field(3, ge=2)
    seed: int = 7
    space: dict[str, SearchParam] = Field(default_factory=dict)


def load_lifecycle_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                          environ: Mapping[str, str] | None = None) -> LifecycleConfig:
    """``overrides``: dotted keys (``{"gate.min": {...}}``) that replace what file and environment say."""
    return load_config(LIFECYCLE, LifecycleConfig, path, environ=environ, sets=overrides)


def load_tune_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                     environ: Mapping[str, str] | None = None) -> TuneConfig:
    """The search space and budget; ``overrides`` as for :func:`load_lifecycle_config`."""
    return load_config(TUNE, TuneConfig, path, environ=environ, sets=overrides)
