"""Typed lifecycle and tuning configuration (conf/lifecycle.yaml, conf/tune.yaml).

Strict like every other tree here: a mistyped bar (``test.auprc`` vs ``test.aurpc``) silently falling back
to "no bar" would register anything, so unknown keys and unknown metric names are errors that name them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from identigraph.config import _describe
from identigraph.errors import ConfigError

CONF = Path(__file__).resolve().parents[3] / "conf"
Stage = Literal["staging", "production"]
STAGES: tuple[str, ...] = ("staging", "production")
# what metrics.json holds per split (identigraph.model.metrics.summary)
_SPLIT_METRICS = ("auroc", "auprc", "recall_at_p85", "recall_at_p90", "precision_at_r50")
GATE_METRICS = tuple(f"{split}.{m}" for split in ("val", "test") for m in _SPLIT_METRICS)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _known_metrics(bars: dict[str, float]) -> dict[str, float]:
    unknown = sorted(set(bars) - set(GATE_METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; known: {list(GATE_METRICS)}")
    return bars


class RegistryConfig(_Strict):
    backend: Literal["mlflow", "sagemaker"] = "mlflow"
    model_name: str = Field("identigraph-fraud", pattern=r"^[A-Za-z0-9](-*[A-Za-z0-9]){0,62}$")
    mlflow_uri: str | None = None


class GateConfig(_Strict):
    min: dict[str, float] = Field(default_factory=lambda: {"test.recall_at_p85": 0.3, "test.auprc": 0.4})
    threshold_reached: bool = True
    max_drop_vs_production: dict[str, float] = Field(default_factory=dict)

    @field_validator("min", "max_drop_vs_production")
    @classmethod
    def _metrics(cls, bars: dict[str, float]) -> dict[str, float]:
        return _known_metrics(bars)


class StagingCheckConfig(_Strict):
    behaviour: list[Literal["fresh_ring", "household", "awkward_graphs"]] = Field(
        default_factory=lambda: ["fresh_ring", "household", "awkward_graphs"])
    snapshot: Path | None = None
    staging_url: str = "http://127.0.0.1:8081"
    api_key_env: str = "IDENTIGRAPH_STAGING_API_KEY"
    requests: int = Field(40, ge=1, le=10_000)
    p95_ms: float = Field(500.0, gt=0)
    max_error_rate: float = Field(0.0, ge=0, le=1)


class PromotionConfig(_Strict):
    require_approval: bool = True
    staging_check: StagingCheckConfig = Field(default_factory=StagingCheckConfig)


class DeployConfig(_Strict):
    dir: Path = Path("deploy")
    keep: int = Field(5, ge=0)
    notify: dict[Stage, list[str]] = Field(default_factory=dict)
    admin_key_env: str = "IDENTIGRAPH_ADMIN_API_KEY"


class SageMakerConfig(_Strict):
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
            raise ConfigError(f"sagemaker.{', sagemaker.'.join(missing)} must be set (conf/lifecycle.yaml or the "
                              f"command's options)")


class LifecycleConfig(_Strict):
    registry: RegistryConfig = Field(default_factory=RegistryConfig)
    gate: GateConfig = Field(default_factory=GateConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    sagemaker: SageMakerConfig = Field(default_factory=SageMakerConfig)


class SearchParam(_Strict):
    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[Any] | None = None


class TuneConfig(_Strict):
    objective: Literal["val_auprc", "val_recall_at_p85"] = "val_auprc"
    second_objective: Literal["train_seconds"] | None = None
    trials: int = Field(20, ge=1)
    timeout_s: float | None = Field(None, gt=0)
    min_epochs: int = Field(4, ge=1)
    max_epochs: int = Field(60, ge=2)
    reduction_factor: int = Field(3, ge=2)
    seed: int = 7
    space: dict[str, SearchParam] = Field(default_factory=dict)


T = TypeVar("T", bound=BaseModel)


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``"a.b"``, creating the levels that are missing."""
    *parents, leaf = dotted.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[leaf] = value


def _load(model: type[T], path: Path, overrides: dict[str, Any] | None) -> T:
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path))) from None


def load_lifecycle_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> LifecycleConfig:
    """``overrides``: dotted keys (``{"gate.min": {...}}``) applied over the file."""
    return _load(LifecycleConfig, Path(path) if path else CONF / "lifecycle.yaml", overrides)


def load_tune_config(path: Path | None = None, overrides: dict[str, Any] | None = None) -> TuneConfig:
    return _load(TuneConfig, Path(path) if path else CONF / "tune.yaml", overrides)
