"""The lifecycle's rules in one place: register behind the gate, approve, promote through staging.

- **register**: only if the gate passes (the bar, and not worse than production); a refusal raises with
  every reason, and nothing is written to the registry.
- **approve / reject**: a person's decision, recorded with who and why.
- **promote to staging**: approved versions only; deploy/staging switches to it (an API serving staging
  follows), then the registry marks it.
- **promote to production**: approved, currently in staging, and the automated staging check passes
  (behaviour scenarios on the candidate + a latency check against the staging API serving it). Then
  deploy/production switches atomically and the production API follows without a restart.

Deploy first, mark second: if the deployment fails the registry still names what actually serves; if
marking fails the deployment is switched back.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from identigraph.errors import Refused
from identigraph.lifecycle.config import LifecycleConfig
from identigraph.lifecycle.deploy import Deployments, notify
from identigraph.lifecycle.gate import Verdict, flat_metrics, registration_gate
from identigraph.lifecycle.registry import APPROVED, ModelVersion, Registry, read_model_dir


class Lifecycle:
    """Registration, promotion and deployment of model versions, each behind its gate, so no unchecked model is
    served."""
    def __init__(self, cfg: LifecycleConfig, registry: Registry, deployments: Deployments,
                 log: Callable[[str], None] = lambda _: None) -> None:
        self.cfg, self.registry, self.deploy, self.log = cfg, registry, deployments, log

    @classmethod
    def from_config(cls, cfg: LifecycleConfig, data_path: Path, backend: str | None = None,
                    log: Callable[[str], None] = lambda _: None) -> Lifecycle:
        from identigraph.lifecycle.registry import open_registry

        return cls(cfg, open_registry(cfg, data_path, backend), Deployments(Path(data_path) / cfg.deploy.dir), log)

    # ---- registration --------------------------------------------------------------------------------
    def gate(self, model_dir: Path) -> Verdict:
        _, metrics = read_model_dir(model_dir)
        production = self.registry.current("production")
        return registration_gate(flat_metrics(metrics), self.cfg.gate, production.metrics if production else None,
                                 production.version if production else None)

    def register(self, model_dir: Path, description: str = "") -> tuple[ModelVersion, Verdict]:
        verdict = self.gate(model_dir)
        if not verdict.ok:
            raise Refused(f"registration of {model_dir}", verdict)
        mv = self.registry.register(Path(model_dir), description)
        self.log(f"registered {model_dir} as version {mv.version} (model {mv.model_version}), pending approval")
        return mv, verdict

    # ---- decisions -----------------------------------------------------------------------------------
    def approve(self, version: str, by: str | None = None, note: str = "") -> ModelVersion:
        return self.registry.approve(version, by, note)

    def reject(self, version: str, by: str | None = None, reason: str = "") -> ModelVersion:
        return self.registry.reject(version, by, reason)

    # ---- promotion -----------------------------------------------------------------------------------
    def check(self, version: str, staging_url: str | None = None, snapshot: Path | None = None,
              api_key: str | None = None) -> tuple[Verdict, dict[str, Any]]:
        """The staging check alone (what CI's "test staging" job runs)."""
        from identigraph.lifecycle.staging import staging_check

        mv = self.registry.get(version)
        model_dir = self.deploy.install(self.registry, mv)
        scfg = self.cfg.promotion.staging_check
        snap = snapshot or scfg.snapshot or _trained_on(model_dir)
        return staging_check(model_dir, mv.model_version, scfg, snap, staging_url, api_key)

    def promote(self, version: str, stage: str, staging_url: str | None = None, snapshot: Path | None = None,
                api_key: str | None = None) -> tuple[ModelVersion, dict[str, Any]]:
        mv = self.registry.get(version)
        report: dict[str, Any] = {"version": mv.version, "model_version": mv.model_version, "stage": stage}
        verdict = Verdict(ok=True)
        if self.cfg.promotion.require_approval:
            verdict.add("approved", mv.status == APPROVED, f"version {version} is {mv.status}, not approved")
        if stage == "production":
            in_staging = self.registry.current("staging")
            verdict.add("in_staging", in_staging is not None and in_staging.version == mv.version,
                        f"version {version} must be in staging first (staging holds "
                        f"{in_staging.version if in_staging else 'nothing'})")
        if not verdict.ok:
            raise Refused(f"promotion of version {version} to {stage}", verdict)
        if stage == "production":
            checked, figures = self.check(version, staging_url, snapshot, api_key)
            report["staging_check"] = {"checks": checked.checks, **figures}
            if not checked.ok:
                raise Refused(f"promotion of version {version} to production (staging check)", checked)
            self.log(f"staging check passed: {len(checked.checks)} checks")
        model_dir = self.deploy.install(self.registry, mv)
        previous = self.deploy.point(stage, model_dir)
        try:
            mv = self.registry.promote(mv.version, stage)
        except Exception:
            if previous is not None:
                self.deploy.point(stage, previous)
            raise
        report["deployed"] = str(self.deploy.path(stage))
        report["previous"] = previous.name if previous else None
        self.log(f"version {mv.version} (model {mv.model_version}) is {stage}: {self.deploy.path(stage)} → "
                 f"{model_dir.name}")
        urls = self.cfg.deploy.notify.get(stage, [])  # type: ignore[call-overload]
        if urls:
            report["notify_failures"] = notify(urls, self.deploy.path(stage),
                                               os.environ.get(self.cfg.deploy.admin_key_env))
        report["pruned"] = self.deploy.prune(self.cfg.deploy.keep)
        return mv, report

    def sync(self) -> dict[str, str | None]:
        """Make each stage's deployment what the registry marks (a new serving host, a lost volume)."""
        done: dict[str, str | None] = {}
        for stage in ("staging", "production"):
            mv = self.registry.current(stage)
            if mv is not None and self.deploy.serving(stage) != mv.model_version:
                self.deploy.point(stage, self.deploy.install(self.registry, mv))
                self.log(f"{stage}: {self.deploy.path(stage)} → {mv.model_version} (version {mv.version})")
            done[stage] = mv.model_version if mv else None
        return done


def _trained_on(model_dir: Path) -> Path | None:
    source = read_model_dir(model_dir)[1].get("source", {}).get("snapshot")
    return Path(source) if source else None
