"""Label quality at scale: synthetic world → Spark snapshot → labeling job, measured against the truth.

Usage: python bench/labels.py [--customers 50000] [--seeds 7 11 21] [--out bench/results/labels.json]

The first seed is the one the default rule set (conf/labeling.yaml) was tuned on; the others verify it on
worlds it never saw. Each world is labelled twice: with the shipped policy, and with the unconfirmed-block
guard switched off (maturity exactly as the issue states it), so the guard's effect is measured, not claimed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from identigraph.config import load_settings
from identigraph.config_loader import packaged_default
from identigraph.etl.job import run_etl
from identigraph.etl.spark import session
from identigraph.labeling.config import load_labeling_config
from identigraph.labeling.job import run_labeling
from identigraph.labeling.report import print_report
from identigraph.synth import SynthParams, generate_world, write_world

REPO = Path(__file__).resolve().parents[1]
CONFIG = packaged_default("labeling.yaml")
TARGETS = {"matured_precision": 0.97, "corrections_gain": 0.30, "corrections_precision": 0.90}


def _quality(report: dict[str, Any]) -> dict[str, Any]:
    t = report["truth"]
    return {
        "matured": t["before_correction"], "final": t["after_correction"], "corrections": t["corrections"],
        "per_fraud_type": t["per_fraud_type"],
        "rules": {name: {k: r[k] for k in ("confidence", "fired", "only_rule", "true_fraud", "precision", "from")}
                  for name, r in report["rules"].items()},
    }


def _one_seed(spark: Any, settings: Any, work: Path, customers: int, seed: int, console: Console) -> dict[str, Any]:
    t0 = time.perf_counter()
    world = generate_world(SynthParams(customers=customers, seed=seed))
    write_world(world, work / "world", fmt="parquet")
    stats = world.stats
    del world
    summary = run_etl(spark, settings, work / "world", work / "snapshot", b"bench-key-0123456789abcdef")
    snapshot_s = time.perf_counter() - t0
    cfg = load_labeling_config(CONFIG)
    truth = work / "world" / "truth.csv"
    report = run_labeling(spark, work / "snapshot", work / "labels", config=CONFIG, truth=truth)
    print_report(report, console)
    no_guard = cfg.model_copy(update={"maturity": cfg.maturity.model_copy(update={"unconfirmed_blocks": None})})
    plain = run_labeling(spark, work / "snapshot", work / "labels_no_guard", config=no_guard, truth=truth)
    q, p = _quality(report), _quality(plain)
    met = {
        "matured_precision": q["matured"]["precision"] >= TARGETS["matured_precision"],
        "corrections_gain": q["corrections"]["gain_over_matured"] >= TARGETS["corrections_gain"],
        "corrections_precision": q["corrections"]["precision"] >= TARGETS["corrections_precision"],
    }
    return {
        "seed": seed, "customers_generated": customers, "customers_labelled": report["customers"],
        "as_of": report["as_of"], "fraud_in_truth": report["truth"]["fraud_customers"],
        "world": {k: stats[k] for k in ("fraud_accounts", "fraud_caught", "false_positive_blocks",
                                        "false_positives_contested", "false_positives_unblocked")},
        "seconds": {"world_and_snapshot": round(snapshot_s, 1), "snapshot_spark": summary["seconds"]["total"],
                    "labeling": report["seconds"]},
        "statuses": report["statuses"], "statuses_before_correction": report["statuses_before_correction"],
        "shipped_policy": q, "targets_met": met,
        "without_unconfirmed_guard": {"matured": p["matured"], "corrections": p["corrections"], "final": p["final"],
                                      "statuses": plain["statuses"]},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[7, 11, 21], help="the first is the tuning seed")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "labels.json")
    args = ap.parse_args()

    console = Console(stderr=True)
    root = Path(tempfile.mkdtemp(prefix="identigraph-bench-labels-"))
    settings = load_settings(packaged_default("identigraph.yaml"), overrides={"data_dir": str(root / "data")})
    spark = session(settings, app_name="identigraph-bench-labels")
    runs = []
    for i, seed in enumerate(args.seeds):
        console.rule(f"seed {seed} ({'tuning' if i == 0 else 'verification'})")
        run = _one_seed(spark, settings, root / f"seed{seed}", args.customers, seed, console)
        run["role"] = "tuning" if i == 0 else "verification"
        runs.append(run)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}",
        "spark_master": settings.etl.master, "config": "conf/labeling.yaml", "targets": TARGETS, "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for run in runs:
        q = run["shipped_policy"]
        console.print(f"seed {run['seed']} ({run['role']}): matured precision {q['matured']['precision']}, "
                      f"corrections +{q['corrections']['gain_over_matured']:.0%} true fraud at precision "
                      f"{q['corrections']['precision']}; without the guard matured precision "
                      f"{run['without_unconfirmed_guard']['matured']['precision']}; targets {run['targets_met']}")
    console.print(f"wrote {args.out} (work files in {root})")


if __name__ == "__main__":
    main()
