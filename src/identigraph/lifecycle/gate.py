"""The registration bar: a model enters the registry only if its hold-out figures clear it.

Why a gate before the registry rather than a reviewer's judgement after: the registry is what a person
approves from, and an approver shown a model that misses the operating bar wastes their attention or,
worse, approves it. Every check is reported — passed or not — so a refusal says exactly what to fix.

"Not worse than production" compares the candidate's test figures with those recorded when the
production version was registered. The two were measured on their own snapshots, so small differences
are noise; the tolerance (``max_drop_vs_production``) is there to absorb that, not to allow regressions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from identigraph.errors import LifecycleError as LifecycleError  # re-exported: the lifecycle modules import it here
from identigraph.lifecycle.config import GATE_METRICS, GateConfig


@dataclass
class Verdict:
    """Every check a gate ran, passed or not, so a refusal lists all its reasons at once."""
    ok: bool
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def reasons(self) -> list[str]:
        return [c["detail"] for c in self.checks if not c["ok"]]

    def add(self, name: str, ok: bool, detail: str, **extra: Any) -> None:
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail, **extra})
        self.ok = self.ok and bool(ok)


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json → the figures the gate and the registry speak of (``test.auprc``, ``train_seconds``…)."""
    out = {name: float(metrics[split][m]) for name in GATE_METRICS
           for split, m in [name.split(".", 1)] if isinstance(metrics.get(split), dict) and m in metrics[split]}
    for key in ("threshold", "train_seconds"):
        if isinstance(metrics.get(key), (int, float)):
            out[key] = float(metrics[key])
    if "threshold_reached" in metrics:
        out["threshold_reached"] = 1.0 if metrics["threshold_reached"] else 0.0
    return out


def _fmt(x: float) -> str:
    return "missing" if x is None or math.isnan(x) else f"{x:.4f}"


def registration_gate(candidate: dict[str, float], cfg: GateConfig,
                      production: dict[str, float] | None = None, production_version: str | None = None) -> Verdict:
    """Check flat candidate figures against the bar and, when there is one, the production version's."""
    verdict = Verdict(ok=True)
    for name, bar in cfg.min.items():
        value = candidate.get(name, float("nan"))
        verdict.add(f"min:{name}", not math.isnan(value) and value >= bar,
                    f"{name} {_fmt(value)} {'≥' if value >= bar else '<'} bar {bar:.4f}", value=value, bar=bar)
    if cfg.threshold_reached:
        reached = candidate.get("threshold_reached", 0.0) == 1.0
        verdict.add("threshold_reached", reached,
                    "validation reached the target precision" if reached else
                    "validation never reached the target precision: the threshold is a best-F1 fallback")
    if production is None:
        verdict.add("vs_production", True, "no production version to compare with")
        return verdict
    for name, tolerance in cfg.max_drop_vs_production.items():
        value, current = candidate.get(name, float("nan")), production.get(name, float("nan"))
        if math.isnan(current):
            verdict.add(f"vs_production:{name}", True, f"production {production_version} has no {name}")
            continue
        drop = current - value
        ok = not math.isnan(value) and drop <= tolerance
        verdict.add(f"vs_production:{name}", ok,
                    f"{name} {_fmt(value)} vs production {production_version} {_fmt(current)} "
                    f"(drop {drop:+.4f}, tolerance {tolerance:.4f})", value=value, production=current)
    return verdict
