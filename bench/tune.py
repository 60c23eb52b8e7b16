"""Tuning benchmark: what `identigraph tune` buys over the default configuration, on a synthetic world.

Usage: python bench/tune.py [--customers 10000] [--seed 7] [--trials 12] [--max-epochs 30]
                            [--targets customer.blocked,labels] [--work DIR]

synth world → Spark snapshot → labeling job; then per training target (the raw ``blocked`` property, and
the labeling job's corrected labels) the default configuration trained for
``--max-epochs`` → ``run_tune`` (Optuna TPE + Hyperband pruning on per-epoch validation AUPRC, the same
``--max-epochs`` budget for every surviving trial) → the best configuration retrained. Both models are
judged on the test split, which the search never sees: against the training labels (what production
measures) and against the synthetic ground truth. Writes bench/results/tune.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).parent / "identigraph")]
THREADS = int(os.environ.get("BENCH_THREADS", "1"))  # one intra-op thread: the VM is shared (bench/model.py)


def sh(args: list) -> None:
    print("$", " ".join(str(a) for a in args), flush=True)
    subprocess.run([str(a) for a in args], check=True, cwd=REPO)


def world(work: Path, customers: int, seed: int, labels: bool) -> tuple[Path, Path | None, Path]:
    w, snap, lab = work / "world", work / "snapshot", work / "labels"
    if not (w / "truth.csv").exists():
        sh([*CLI, "synth", "--out", w, "--customers", customers, "--seed", seed, "--overwrite"])
    if not ((snap / "LATEST").exists() or (snap / "_summary.json").exists()):
        sh([*CLI, "etl", "--input", w, "--snapshot", snap, "--overwrite"])
    if labels and not (lab / "labels.csv").exists():
        sh([*CLI, "label", "--snapshot", snap, "--out", lab, "--truth", w / "truth.csv", "--overwrite"])
    return snap, lab if labels else None, w / "truth.csv"


def vs_truth(model_dir: Path, prepared, cfg, truth: Path) -> dict:
    """AUPRC and recall@P0.85 against ground truth on the test split's customers not blocked at as-of."""
    from identigraph.model.artifacts import LoadedModel
    from identigraph.model.metrics import summary
    from identigraph.model.pipeline import _truth_series
    from identigraph.model.train import predict

    tg = prepared.targets
    y = _truth_series(truth, tg.label).reindex(tg.ids).to_numpy(dtype=float)
    vf = prepared.frame.vertices[tg.label]
    blocked = vf["blocked"].to_numpy(dtype=float) == 1.0 if "blocked" in vf else np.zeros(len(vf), bool)
    sel = (tg.split == "test") & ~blocked & ~np.isnan(y)
    scores = predict(LoadedModel.load(model_dir).model, prepared.tensors, prepared.nodes[sel], cfg)
    return summary(y[sel], scores)


def compare(work: Path, snap: Path, labels: Path | None, target: str | None, truth: Path, args) -> dict:
    """Default vs tuned for one training target, on one prepared graph."""
    from identigraph.lifecycle.config import load_tune_config
    from identigraph.lifecycle.tune import run_tune
    from identigraph.model.config import load_model_config
    from identigraph.model.pipeline import prepare, run_train

    base = load_model_config(overrides={"training.epochs": args.max_epochs, "training.threads": THREADS})
    t0 = time.perf_counter()
    prepared = prepare(snap, base, labels=labels, target=target)
    prepare_s = time.perf_counter() - t0
    log = lambda m: print(m, flush=True)  # noqa: E731

    t0 = time.perf_counter()
    _, default = run_train(snap, work / "default", base, labels, target, "cpu", log=log, prepared=prepared)
    default_s = time.perf_counter() - t0
    tcfg = load_tune_config(overrides={"trials": args.trials, "max_epochs": args.max_epochs,
                                       "min_epochs": args.min_epochs})
    t0 = time.perf_counter()
    study, tuned = run_tune(snap, work / "tuned", base, tcfg, labels, target, "cpu", log=log, prepared=prepared)
    tune_s = time.perf_counter() - t0
    keys = ("auprc", "recall_at_p85", "auroc", "n", "positives")

    def figures(name: str, metrics: dict) -> dict:
        return {"val": {k: metrics["val"][k] for k in keys}, "test": {k: metrics["test"][k] for k in keys},
                "test_unblocked_vs_truth": vs_truth(work / name, prepared, base, truth),
                "best_epoch": metrics["best_epoch"]}

    return {"training_target": "labels (labeling job)" if labels else target, "split": prepared.targets.kind,
            "nodes": len(prepared.tensors.x), "prepare_seconds": prepare_s,
            "budget": {"trials": args.trials, "min_epochs": args.min_epochs, "max_epochs": args.max_epochs,
                       "reduction_factor": tcfg.reduction_factor, "objective": tcfg.objective},
            "default": {**figures("default", default), "train_seconds": default_s},
            "tuned": {**figures("tuned", tuned), "params": study.best_params},
            "search": {**study.summary(), "tune_seconds_including_final_training": tune_s,
                       "trials_table": study.trials}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--customers", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--max-epochs", type=int, default=30)
    ap.add_argument("--min-epochs", type=int, default=3)
    ap.add_argument("--targets", default="customer.blocked,labels",
                    help="comma-separated: a LABEL.PROPERTY and/or 'labels' (the labeling job's labels)")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="identigraph-bench-tune-"))
    work.mkdir(parents=True, exist_ok=True)
    targets = args.targets.split(",")

    t_all = time.perf_counter()
    snap, labels, truth = world(work, args.customers, args.seed, "labels" in targets)
    runs = {}
    for target in targets:
        print(f"\n=== {target} ===", flush=True)
        runs[target] = compare(work / target, snap, labels if target == "labels" else None,
                               None if target == "labels" else target, truth, args)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
                   f"load average {os.getloadavg()[0]:.1f} at the end",
        "world": {"customers": args.customers, "seed": args.seed},
        "runs": runs, "wall_seconds": time.perf_counter() - t_all,
    }
    out = REPO / "bench" / "results" / "tune.json"
    out.write_text(json.dumps(result, indent=2, default=str))
    print(f"\n{'':34s}{'val AUPRC':>10s}{'test AUPRC':>11s}{'test R@P.85':>12s}{'truth AUPRC':>12s}")
    for target, run in runs.items():
        for name in ("default", "tuned"):
            r = run[name]
            print(f"{target + ' ' + name:34s}{r['val']['auprc']:10.4f}{r['test']['auprc']:11.4f}"
                  f"{r['test']['recall_at_p85']:12.4f}{r['test_unblocked_vs_truth']['auprc']:12.4f}")
        s = run["search"]
        print(f"  {s['trials']} trials, {s['pruned']} pruned, {s['epochs_trained']} epochs, search+final "
              f"{s['tune_seconds_including_final_training']:.0f} s")
    print(f"wall {result['wall_seconds']:.0f} s → {out}")


if __name__ == "__main__":
    main()
