"""One small registry interface, two back-ends: MLflow (local, the default) and the SageMaker Model Registry.

The interface is what the lifecycle needs and no more — register, list, get, approve, reject, promote,
current, fetch — so the promotion logic, the gate and the CLI are written once and the back-end is a
configuration choice (``registry.backend``). Both keep the same facts:

- a **registry version** (MLflow's version number, SageMaker's ``ModelPackageVersion``): what people type;
- the **model version** (the content hash in metrics.json): what the API reports in every response;
- an **approval status** (pending → approved / rejected), set by a person;
- **stages** (staging, production), each held by at most one version at a time;
- the flat gate figures, so "not worse than production" needs no artifact download.

MLflow keeps approval as model-version tags and stages as registered-model aliases (aliases replaced the
deprecated stage transitions and move atomically from one version to the next).
"""

from __future__ import annotations

import getpass
import importlib
import json
import shutil
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from identigraph.lifecycle.config import STAGES, LifecycleConfig
from identigraph.lifecycle.gate import LifecycleError, flat_metrics

PENDING, APPROVED, REJECTED = "pending", "approved", "rejected"


@dataclass
class ModelVersion:
    """One registered model as every back-end reports it, so the flow never sees back-end types."""
    version: str                     # the registry's number
    model_version: str               # content hash: what the API reports
    status: str                      # pending | approved | rejected
    stages: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    source: str = ""                 # where the model files live
    created_at: str = ""
    notes: dict[str, str] = field(default_factory=dict)   # who approved/rejected, when, why

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def now() -> str:
    """Timestamps in registry records: UTC, seconds, ISO-8601."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def user() -> str:
    """Who acted, for the registry's audit trail ('unknown' where the platform cannot say)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def read_model_dir(model_dir: Path) -> tuple[str, dict[str, Any]]:
    """(model version, metrics.json) of a model directory, or a clear error."""
    try:
        metrics = json.loads((Path(model_dir) / "metrics.json").read_text())
        return str(metrics["version"]), metrics
    except (OSError, ValueError, KeyError) as exc:
        raise LifecycleError(f"{model_dir} is not a model directory (metrics.json: {exc})") from None


class Registry(ABC):
    """What the promotion flow needs of a model registry, so MLflow and SageMaker are interchangeable."""

    name: str

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: LifecycleConfig, data_path: Path) -> Registry:
        """The back-end as ``cfg`` configures it (``open_registry`` calls this on the class it resolved)."""

    @abstractmethod
    def register(self, model_dir: Path, description: str = "") -> ModelVersion: ...

    @abstractmethod
    def list(self) -> list[ModelVersion]: ...

    @abstractmethod
    def _set_status(self, version: str, status: str, by: str, note: str) -> None: ...

    @abstractmethod
    def _set_stage(self, version: str, stage: str) -> None: ...

    @abstractmethod
    def fetch(self, version: str, dest: Path) -> Path:
        """Copy the version's model files into ``dest`` (created); returns it."""

    def get(self, version: str) -> ModelVersion:
        for mv in self.list():
            if mv.version == str(version):
                return mv
        raise LifecycleError(f"{self.name}: no version {version}")

    def current(self, stage: str) -> ModelVersion | None:
        _check_stage(stage)
        return next((mv for mv in self.list() if stage in mv.stages), None)

    def approve(self, version: str, by: str | None = None, note: str = "") -> ModelVersion:
        self.get(version)
        self._set_status(str(version), APPROVED, by or user(), note)
        return self.get(version)

    def reject(self, version: str, by: str | None = None, reason: str = "") -> ModelVersion:
        mv = self.get(version)
        if mv.stages:
            raise LifecycleError(f"version {version} holds {', '.join(mv.stages)}: promote another version first")
        self._set_status(str(version), REJECTED, by or user(), reason)
        return self.get(version)

    def promote(self, version: str, stage: str) -> ModelVersion:
        """Mark ``version`` as the one in ``stage``; the previous holder loses it (no checks: see flow)."""
        _check_stage(stage)
        self.get(version)
        self._set_stage(str(version), stage)
        return self.get(version)


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise LifecycleError(f"unknown stage {stage!r}: one of {', '.join(STAGES)}")


class MlflowRegistry(Registry):
    """MLflow's model registry on a local sqlite database (or any tracking URI MLflow accepts)."""

    name = "mlflow"

    def __init__(self, uri: str, model_name: str, artifact_root: Path | None = None) -> None:
        import logging
        import os

        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in CLI output
        from mlflow import MlflowClient

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # alembic's migration chatter on a new database
        logging.getLogger("alembic").setLevel(logging.WARNING)
        self.uri, self.model = uri, model_name
        self.client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        self.artifact_root = artifact_root

    @classmethod
    def from_config(cls, cfg: LifecycleConfig, data_path: Path) -> MlflowRegistry:
        """``registry.mlflow_uri`` when set, else a local sqlite registry under the data path."""
        if cfg.registry.mlflow_uri:
            return cls(cfg.registry.mlflow_uri, cfg.registry.model_name)
        return cls.local(Path(data_path) / "mlflow", cfg.registry.model_name)

    @classmethod
    def local(cls, root: Path, model_name: str) -> MlflowRegistry:
        root = Path(root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{root / 'registry.db'}", model_name, root / "artifacts")

    def _experiment(self) -> str:
        exp = self.client.get_experiment_by_name(self.model)
        if exp is not None:
            return exp.experiment_id
        location = self.artifact_root.as_uri() if self.artifact_root else None
        return self.client.create_experiment(self.model, artifact_location=location)

    def register(self, model_dir: Path, description: str = "") -> ModelVersion:
        from mlflow.exceptions import MlflowException

        model_version, metrics = read_model_dir(model_dir)
        flat = flat_metrics(metrics)
        run = self.client.create_run(self._experiment(), run_name=f"register-{model_version}",
                                     tags={"model_version": model_version})
        rid = run.info.run_id
        for key, value in flat.items():
            self.client.log_metric(rid, key, value)
        self.client.log_artifacts(rid, str(model_dir), "model")
        self.client.set_terminated(rid)
        try:
            self.client.get_registered_model(self.model)
        except MlflowException:
            self.client.create_registered_model(self.model, description="identigraph fraud model (edge-aware RGCN)")
        mv = self.client.create_model_version(
            self.model, source=f"{run.info.artifact_uri}/model", run_id=rid, description=description or None,
            tags={"model_version": model_version, "approval_status": PENDING, "registered_by": user(),
                  "registered_at": now(), "metrics": json.dumps(flat, sort_keys=True)})
        return self.get(str(mv.version))

    def list(self) -> list[ModelVersion]:
        from mlflow.exceptions import MlflowException

        try:
            aliases = self.client.get_registered_model(self.model).aliases or {}
        except MlflowException:
            return []
        stages: dict[str, list[str]] = {}
        for stage, version in aliases.items():
            stages.setdefault(str(version), []).append(stage)
        out = []
        for mv in self.client.search_model_versions(f"name='{self.model}'"):
            tags = mv.tags or {}
            out.append(ModelVersion(
                version=str(mv.version), model_version=tags.get("model_version", ""),
                status=tags.get("approval_status", PENDING), stages=sorted(stages.get(str(mv.version), [])),
                metrics=json.loads(tags.get("metrics", "{}")), source=mv.source or "",
                created_at=tags.get("registered_at", ""),
                notes={k: v for k, v in tags.items() if k.startswith(("approved", "rejected", "registered_by"))}))
        return sorted(out, key=lambda m: int(m.version))

    def _set_status(self, version: str, status: str, by: str, note: str) -> None:
        verb = "approved" if status == APPROVED else "rejected"
        for key, value in (("approval_status", status), (f"{verb}_by", by), (f"{verb}_at", now()),
                           (f"{verb}_note", note)):
            self.client.set_model_version_tag(self.model, version, key, value)

    def _set_stage(self, version: str, stage: str) -> None:
        self.client.set_registered_model_alias(self.model, stage, version)

    def fetch(self, version: str, dest: Path) -> Path:
        mv = self.client.get_model_version(self.model, str(version))
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        if mv.run_id is None:
            raise LifecycleError(f"version {version} has no training run to fetch its files from")
        got = Path(self.client.download_artifacts(mv.run_id, "model", str(dest)))
        for item in got.iterdir():  # download_artifacts nests the "model" folder: flatten it into dest
            shutil.move(str(item), dest / item.name)
        got.rmdir()
        return dest


BACKENDS: dict[str, str] = {
    "mlflow": "identigraph.lifecycle.registry.MlflowRegistry",
    "sagemaker": "identigraph.lifecycle.sagemaker_registry.SageMakerRegistry",
}
"""Back-end name → import path of its ``Registry`` class (as Feast maps online stores): a back-end module
imports this one, never the other way round, and only the chosen one (with its SDK) is imported."""


def open_registry(cfg: LifecycleConfig, data_path: Path, backend: str | None = None) -> Registry:
    """The configured back-end (``backend`` overrides ``registry.backend``)."""
    kind = backend or cfg.registry.backend
    if kind not in BACKENDS:
        raise LifecycleError(f"unknown registry backend {kind!r}: {' or '.join(BACKENDS)}")
    module, _, name = BACKENDS[kind].rpartition(".")
    cls: type[Registry] = getattr(importlib.import_module(module), name)
    return cls.from_config(cfg, data_path)
