"""``identigraph tune``: multi-fidelity hyperparameter search with early stopping of poor trials.

**Optuna with a Hyperband pruner**, not Syne Tune's ASHA: Optuna is one pip install, runs in this process
and drives our own training loop through a per-epoch callback (``train(on_epoch=…)``), so the graph is
read and encoded once and every trial shares it; Syne Tune's strength is running trials as separate
processes or SageMaker jobs, which for a model that trains in seconds to minutes per trial costs more in
start-up than it saves. Hyperband is the same idea as ASHA — successive halving on a budget, here epochs —
hedged over several brackets, so an aggressive early cut does not decide alone.

- The budget is epochs: ``min_epochs`` for everyone, ``max_epochs`` for the survivors of every rung.
  Each epoch reports validation AUPRC; a trial below its rung's cut stops at once (pruned).
- The objective is validation AUPRC or validation recall at the target precision — never the test
  split, which stays untouched for the comparison with the default configuration.
- The default configuration is the first trial, so the study always knows what it has to beat.
- A second objective (training seconds) gives a Pareto front of quality vs cost; Optuna cannot prune
  multi-objective studies, so such a study trains every trial to the end (or to early stopping).
- Output, beside the model trained with the best configuration: ``tuning.json`` (summary and every
  trial), ``tuning_trials.csv`` (the table), ``best_model_config.yaml`` (a model configuration to train with).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from identigraph.config_loader import set_dotted
from identigraph.errors import LifecycleError
from identigraph.lifecycle.config import SearchParam, TuneConfig
from identigraph.model.config import ModelConfig

Log = Callable[[str], None]


def _get(data: dict[str, Any], dotted: str) -> Any:
    for p in dotted.split("."):
        data = data[p]
    return data


def configured(base: ModelConfig, params: dict[str, Any], epochs: int | None = None) -> ModelConfig:
    """``base`` with dotted ``params`` applied; layers keep one neighbour fanout per layer."""
    data = base.model_dump(mode="json")
    for key, value in params.items():
        set_dotted(data, key, value)
    layers = data["network"]["layers"]
    fan = list(data["training"]["num_neighbors"])
    data["training"]["num_neighbors"] = (fan + [fan[-1]] * layers)[:layers]
    if epochs is not None:
        data["training"]["epochs"] = epochs
    return ModelConfig.model_validate(data)


def _suggest(trial: Any, name: str, p: SearchParam) -> Any:
    if p.type == "categorical":
        return trial.suggest_categorical(name, p.choices)
    if p.low is None or p.high is None:
        raise LifecycleError(f"tune.space.{name}: a {p.type} parameter needs low and high")
    if p.type == "int":
        return trial.suggest_int(name, int(p.low), int(p.high), log=p.log)
    return trial.suggest_float(name, float(p.low), float(p.high), log=p.log)


def _inside(value: Any, p: SearchParam) -> bool:
    if p.type == "categorical":
        return value in (p.choices or [])
    return p.low <= value <= p.high


@dataclass
class TuneResult:
    """The best trial and every trial, kept so a tuning run can be audited after the fact."""
    best_params: dict[str, Any]
    best_value: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    pareto: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pruned(self) -> int:
        return sum(t["state"] == "PRUNED" for t in self.trials)

    def summary(self) -> dict[str, Any]:
        done = [t for t in self.trials if t["state"] == "COMPLETE"]
        return {"trials": len(self.trials), "completed": len(done), "pruned": self.pruned,
                "epochs_trained": sum(t["epochs"] for t in self.trials), "seconds": round(self.seconds, 1),
                "best_value": self.best_value, "best_params": self.best_params}


def run_study(prepared: Any, base: ModelConfig, tcfg: TuneConfig, device: str = "cpu", log: Log = print) -> TuneResult:
    """Search ``tcfg.space`` on already-prepared tensors (the graph is encoded once for every trial)."""
    import optuna

    from identigraph.model.train import train

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    multi = tcfg.second_objective is not None
    sampler = optuna.samplers.TPESampler(seed=tcfg.seed, n_startup_trials=max(3, tcfg.trials // 3))
    if multi:
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    else:
        study = optuna.create_study(direction="maximize", sampler=sampler, pruner=optuna.pruners.HyperbandPruner(
            min_resource=tcfg.min_epochs, max_resource=tcfg.max_epochs, reduction_factor=tcfg.reduction_factor))
    defaults = base.model_dump(mode="json")
    start = {k: _get(defaults, k) for k, p in tcfg.space.items() if _inside(_get(defaults, k), p)}
    study.enqueue_trial(start, user_attrs={"is_default": True})
    metric = "auprc" if tcfg.objective == "val_auprc" else "recall_at_p85"
    records: list[dict[str, Any]] = []

    def objective(trial: Any) -> Any:
        params = {name: _suggest(trial, name, p) for name, p in tcfg.space.items()}
        cfg = configured(base, params, epochs=tcfg.max_epochs)
        seen = {"epochs": 0, "pruned": False}

        def on_epoch(epoch: int, val_auprc: float) -> bool:
            seen["epochs"] = epoch
            if multi:
                return True
            trial.report(val_auprc, epoch)
            if trial.should_prune():
                seen["pruned"] = True
                return False
            return True

        t0 = time.perf_counter()
        result = train(prepared.tensors, prepared.targets, cfg, device=device, on_epoch=on_epoch)
        seconds = time.perf_counter() - t0
        value = float(result.val[metric])
        row = {"trial": trial.number, "state": "PRUNED" if seen["pruned"] else "COMPLETE", "value": value,
               "epochs": seen["epochs"], "best_epoch": result.best_epoch, "seconds": round(seconds, 2),
               "default": bool(trial.user_attrs.get("is_default")), **params}
        records.append(row)
        log(f"trial {trial.number:3d} {row['state'].lower():9s} {tcfg.objective} {value:.4f} after "
            f"{seen['epochs']:3d} epochs ({seconds:.1f} s) {json.dumps(params, default=str)}")
        if seen["pruned"]:
            raise optuna.TrialPruned()
        return (value, seconds) if multi else value

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=tcfg.trials, timeout=tcfg.timeout_s, catch=(ValueError,))
    elapsed = time.perf_counter() - t0
    if multi:
        front = sorted(study.best_trials, key=lambda t: -t.values[0])
        best = front[0]
        pareto = [{"trial": t.number, "value": t.values[0], "train_seconds": t.values[1], **t.params} for t in front]
        return TuneResult(best.params, best.values[0], records, pareto, elapsed)
    return TuneResult(study.best_trial.params, study.best_value, records, [], elapsed)


def write_results(out: Path, result: TuneResult, tcfg: TuneConfig, best_cfg: ModelConfig,
                  extra: dict[str, Any] | None = None) -> None:
    """The tuned config and the trials, written where ``identigraph train --config`` can take them."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result.trials).to_csv(out / "tuning_trials.csv", index=False, float_format="%.6g")
    (out / "best_model_config.yaml").write_text(
        "# identigraph tune: the best configuration found (use with --model-config)\n"
        + yaml.safe_dump(best_cfg.model_dump(mode="json"), sort_keys=False))
    summary = {**result.summary(), "objective": tcfg.objective, "second_objective": tcfg.second_objective,
               "budget": {"min_epochs": tcfg.min_epochs, "max_epochs": tcfg.max_epochs,
                          "reduction_factor": tcfg.reduction_factor}, "pareto": result.pareto,
               "trials_table": result.trials, **(extra or {})}
    (out / "tuning.json").write_text(json.dumps(summary, indent=2, default=str))


def run_tune(snapshot: Path, out: Path, base: ModelConfig, tcfg: TuneConfig, labels: Path | None = None,
             target: str | None = None, device: str = "cpu", log: Log = print,
             prepared: Any = None) -> tuple[TuneResult, dict[str, Any]]:
    """Search, then train the best configuration to ``max_epochs`` into ``out`` and write the tables beside it."""
    from identigraph.model.pipeline import prepare, run_train

    p = prepared or prepare(snapshot, base, labels, target)
    result = run_study(p, base, tcfg, device, log)
    log(f"{len(result.trials)} trials ({result.pruned} pruned) in {result.seconds:.0f} s; best "
        f"{tcfg.objective} {result.best_value:.4f}: {json.dumps(result.best_params, default=str)}")
    best_cfg = configured(base, result.best_params, epochs=tcfg.max_epochs)
    version, metrics = run_train(snapshot, out, best_cfg, labels, target, device, log=log, prepared=p)
    write_results(out, result, tcfg, best_cfg, {"model_version": version, "test": metrics["test"]})
    return result, metrics
