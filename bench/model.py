"""Model benchmark: repeated evaluation on hard synthetic worlds, the temporal back-test, Tolokers, speed.

Usage: python bench/model.py [--customers 50000] [--world-seeds 11,12,13] [--train-seeds 1,2,3]
                             [--profile hard] [--work DIR] [--only synthetic,backtest,tolokers,speed]
                             [--no-backtest] [--combine FILE,FILE…] [--tolokers-splits 5] [--tolokers-epochs N]
                             [--tolokers-nets model,rgcn_ablation]

- synthetic: for each world seed, synth (``--profile hard``) → Spark snapshot at T and at T − 60 days →
  labels for each → for each training seed: ``run_train`` (the shipped model) and ``run_evaluate`` with the
  back-test, i.e. the plain-RGCN ablation, the GBDT baseline and the neighbour-block rule on the same split,
  judged on unblocked test customers against the truth, plus the back-test (train as of T − 60, score the
  customers not blocked then, against the platform's confirmations by T and the truth, lead time). Figures
  are mean ± sd over every (world, training seed) run, and per world seed (mean over training seeds).
  ``--no-backtest`` leaves the back-test out (it trains two more models per run); ``--combine`` builds this
  section from the runs of result files written by such runs side by side (one per core), without training.
  The runs finished so far are kept in ``<out>.partial.json`` as it goes.
- backtest: the back-test alone on the same worlds (every (world, training seed)), with what the platform's
  later blocks were by the truth and the models against the right ones among them; not in the default run
  (``synthetic`` runs it too).
- tolokers: ../shared/data/tolokers.npz as a snapshot (test labels hidden), official splits 0–4, model vs
  plain RGCN vs GBDT vs the stacked blend of the model and the GBDT; ``--tolokers-epochs`` caps both
  networks (no early stop before the cap) for a run that must fit a session, ``--tolokers-nets model`` skips
  the ablation, and each finished split is kept in ``<out>.partial.json`` as it goes.
- speed: ``identigraph train`` on a 30,000-customer hard world as a whole process (wall time, CPU time,
  peak RSS of the process tree), under the benchmark lock when run by ``flock``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLI = [str(Path(sys.executable).parent / "identigraph")]
TOLOKERS = REPO.parent / "shared" / "data" / "tolokers.npz"
KEY = b"bench-model-key-0123456789abcdef"
BACKTEST_DAYS = 60
MODELS = ("model", "rgcn_ablation", "gbdt_baseline", "neighbour_rule")
METRICS = ("auroc", "auprc", "recall_at_p85")


def sh(args: list[str], **kw: Any) -> subprocess.CompletedProcess:
    print("$", " ".join(str(a) for a in args), flush=True)
    return subprocess.run([str(a) for a in args], check=True, cwd=REPO, **kw)


# ---- worlds ------------------------------------------------------------------------------------------------

def _built(snapshot: Path) -> bool:
    """A published snapshot: versioned (``LATEST``) or a plain folder with its summary."""
    return (snapshot / "LATEST").exists() or (snapshot / "_summary.json").exists()


def snapshot_as_of(snapshot: Path) -> datetime:
    """The as-of of the run a snapshot location publishes (its ``_summary.json``)."""
    from identigraph.etl import fs as fsys
    from identigraph.etl import snapshot as snap

    fs = fsys.PyFS()
    summary = json.loads(fsys.read_text(fs, fsys.join(snap.resolve(fs, snapshot).prefix, snap.SUMMARY)))
    return datetime.fromisoformat(summary["as_of"].replace("Z", "+00:00"))


def build_world(spark: Any, settings: Any, root: Path, customers: int, seed: int, profile: str) -> dict[str, Path]:
    """World, snapshot and labels at T (the snapshot's own as-of) and at T − BACKTEST_DAYS; reused when present."""
    from identigraph.etl.job import run_etl
    from identigraph.labeling.job import run_labeling
    from identigraph.synth import SynthParams, generate_world, write_world

    paths = {k: root / k for k in ("world", "snapshot", "labels", "past_snapshot", "past_labels")}
    if not (paths["world"] / "truth.csv").exists():
        write_world(generate_world(SynthParams.profile(profile, customers=customers, seed=seed)), paths["world"],
                    overwrite=True)
    if not _built(paths["snapshot"]):
        run_etl(spark, settings, paths["world"], paths["snapshot"], KEY, overwrite=True)
    as_of = snapshot_as_of(paths["snapshot"])
    if not _built(paths["past_snapshot"]):
        run_etl(spark, settings, paths["world"], paths["past_snapshot"], KEY,
                as_of=as_of - timedelta(days=BACKTEST_DAYS), overwrite=True)
    truth = paths["world"] / "truth.csv"
    for snap, labels in (("snapshot", "labels"), ("past_snapshot", "past_labels")):
        if not (paths[labels] / "labels.csv").exists():
            run_labeling(spark, paths[snap], paths[labels], truth=truth, overwrite=True)
    return paths


def _mean_sd(values: list[float]) -> dict[str, float]:
    a = np.asarray([v for v in values if v == v], dtype=float)
    return {"mean": float(a.mean()) if len(a) else float("nan"),
            "sd": float(a.std(ddof=1)) if len(a) > 1 else float("nan"), "n": len(a)}


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """mean ± sd of every (view, model, metric) over runs, and of the back-test's lead times."""
    out: dict[str, Any] = {"views": {}, "backtest": {}, "lead_time": {}}
    for view in runs[0]["evaluation"]["views"]:
        # runs from before a scorer existed (the stacked blend) lack it: "n" says over how many runs
        scorers = sorted({m for r in runs for m in r["evaluation"]["views"][view]})
        out["views"][view] = {m: {k: _mean_sd([r["evaluation"]["views"][view][m][k] for r in runs
                                               if m in r["evaluation"]["views"][view]]) for k in METRICS}
                              for m in scorers}
    bts = [r["evaluation"]["backtest"] for r in runs if "backtest" in r["evaluation"]]
    if bts:
        for view in bts[0]["views"]:
            out["backtest"][view] = {m: {k: _mean_sd([b["views"][view][m][k] for b in bts]) for k in METRICS}
                                     for m in bts[0]["views"][view]}
        for m in bts[0]["lead_time"]:
            keys = [k for k, v in bts[0]["lead_time"][m].items() if isinstance(v, (int, float))]
            out["lead_time"][m] = {k: _mean_sd([b["lead_time"][m].get(k, float("nan")) for b in bts]) for k in keys}
    kinds = [r["evaluation"]["by_fraud_type"] for r in runs if r["evaluation"].get("by_fraud_type")]
    if kinds:  # runs before the per-scenario figures existed have none; "n" says over how many runs
        out["by_fraud_type"] = {m: {k: {f: _mean_sd([b[m][k][f] for b in kinds if k in b[m]])
                                        for f in ("positives", "auroc", "recall_in_queue")}
                                    for k in sorted({k for b in kinds for k in b[m]})}
                                for m in kinds[0]}
    if all("train" in r for r in runs):
        out["train_seconds"] = _mean_sd([r["train"]["train_seconds"] for r in runs])
        out["best_epoch"] = _mean_sd([r["train"]["best_epoch"] for r in runs])
    return out


def _targets(per_world: dict[str, dict[str, Any]], view: str = "test_unblocked_vs_truth") -> dict[str, Any]:
    """The issue's bars, checked per world seed on the means over training seeds."""
    rows = {}
    for ws, agg in per_world.items():
        v = agg["views"][view]
        m, g, r = v["model"], v["gbdt_baseline"], v["rgcn_ablation"]
        sd = max(m["recall_at_p85"]["sd"], r["recall_at_p85"]["sd"])
        rows[ws] = {
            "model_ge_gbdt_recall_at_p85": m["recall_at_p85"]["mean"] >= g["recall_at_p85"]["mean"],
            "model_ge_gbdt_auprc": m["auprc"]["mean"] >= g["auprc"]["mean"],
            "model_minus_rgcn_recall_at_p85": m["recall_at_p85"]["mean"] - r["recall_at_p85"]["mean"],
            "model_minus_rgcn_auprc": m["auprc"]["mean"] - r["auprc"]["mean"],
            "seed_sd_recall_at_p85": sd,
            "edge_beats_rgcn_by_more_than_sd": (m["recall_at_p85"]["mean"] - r["recall_at_p85"]["mean"]) > sd,
            "neighbour_rule_recall_at_p85": v["neighbour_rule"]["recall_at_p85"]["mean"],
            "gbdt_recall_at_p85": g["recall_at_p85"]["mean"],
        }
        if "stacked_blend" in v:  # the stacked candidate against the model alone and the GBDT
            st = v["stacked_blend"]
            rows[ws].update({f"stacked_minus_{name}_{k}": st[k]["mean"] - v[name][k]["mean"]
                             for name in ("model", "gbdt_baseline") for k in ("auprc", "recall_at_p85")})
    return rows


def synthetic(work: Path, customers: int, world_seeds: list[int], train_seeds: list[int], profile: str,
              threads: int, with_backtest: bool = True, progress: Path | None = None) -> dict[str, Any]:
    """``progress``: the runs so far, rewritten after each, so a run cut short keeps what it finished."""

    from identigraph.config import load_settings
    from identigraph.model.config import load_model_config
    from identigraph.model.pipeline import prepare, run_evaluate, run_train

    settings = load_settings(None)
    spark = None
    runs: list[dict[str, Any]] = []
    worlds: dict[str, Any] = {}
    for ws in world_seeds:
        root = work / f"{profile}-{customers}-{ws}"
        paths, spark = _world(root, spark, settings, customers, ws, profile)
        base = load_model_config(overrides={"training.threads": threads})
        t0 = time.perf_counter()
        current = prepare(paths["snapshot"], base, labels=paths["labels"])
        past = prepare(paths["past_snapshot"], base, labels=paths["past_labels"]) if with_backtest else None
        prep_s = time.perf_counter() - t0
        label_report = json.loads((paths["labels"] / "report.json").read_text())
        world_runs = []
        for ts in train_seeds:
            cfg = load_model_config(overrides={"training.threads": threads, "training.seed": ts})
            model_dir = root / f"model-seed{ts}"
            print(f"== world {ws}, training seed {ts}", flush=True)
            _, metrics = run_train(paths["snapshot"], model_dir, cfg, labels=paths["labels"], prepared=current)
            evaluation = run_evaluate(paths["snapshot"], model_dir, cfg, labels=paths["labels"],
                                      truth=paths["world"] / "truth.csv", prepared=current,
                                      backtest=past if with_backtest else None)
            run = {"world_seed": ws, "train_seed": ts, "train": metrics, "evaluation": evaluation}
            print(json.dumps({"world": ws, "seed": ts, "test_unblocked_vs_truth": {
                m: {k: round(v[k], 4) for k in METRICS}
                for m, v in evaluation["views"]["test_unblocked_vs_truth"].items()}}), flush=True)
            world_runs.append(run)
            if progress is not None:
                progress.write_text(json.dumps({"customers": customers, "profile": profile,
                                                "runs": runs + world_runs}, indent=2, default=str))
        runs += world_runs
        worlds[str(ws)] = {"graph": {"nodes": len(current.tensors.x),
                                     "directed_edges": int(current.tensors.edge_index.shape[1]),
                                     "relations": len(current.tensors.relations),
                                     "node_features": int(current.tensors.x.shape[1]),
                                     "edge_features": int(current.tensors.edge_attr.shape[1])},
                           "prepare_seconds": prep_s, "label_truth": label_report.get("truth", {}).get("after_correction"),
                           "scenarios": json.loads((paths["world"] / "manifest.json").read_text())["scenarios"],
                           "aggregate": _aggregate(world_runs)}
    if spark is not None:
        spark.stop()
    return {"customers": customers, "profile": profile, "world_seeds": world_seeds, "train_seeds": train_seeds,
            "backtest_days": BACKTEST_DAYS, "runs": runs, "worlds": worlds, "aggregate": _aggregate(runs),
            "targets": _targets({ws: w["aggregate"] for ws, w in worlds.items()})}


def _world(root: Path, spark: Any, settings: Any, customers: int, seed: int, profile: str) -> tuple[dict[str, Path], Any]:
    """A world's paths, built (with a Spark session started on first need) unless ``root`` has them."""
    from identigraph.etl.spark import session

    if all((root / k / f).exists() for k, f in (("labels", "labels.csv"), ("past_labels", "labels.csv"))):
        return {k: root / k for k in ("world", "snapshot", "labels", "past_snapshot", "past_labels")}, spark
    spark = spark or session(settings)
    return build_world(spark, settings, root, customers, seed, profile), spark


def backtest(work: Path, customers: int, world_seeds: list[int], train_seeds: list[int], profile: str,
             threads: int) -> dict[str, Any]:
    """The temporal back-test alone (no hold-out evaluation): what the platform's later blocks were, by the
    truth, and every model against them, the truth, and the right ones among them."""
    from identigraph.config import load_settings
    from identigraph.model.backtest import run_backtest
    from identigraph.model.config import load_model_config
    from identigraph.model.pipeline import prepare, read_truth

    settings = load_settings(None)
    spark = None
    runs = []
    for ws in world_seeds:
        paths, spark = _world(work / f"{profile}-{customers}-{ws}", spark, settings, customers, ws, profile)
        base = load_model_config(overrides={"training.threads": threads})
        current = prepare(paths["snapshot"], base, labels=paths["labels"])
        past = prepare(paths["past_snapshot"], base, labels=paths["past_labels"])
        truth = read_truth(paths["world"] / "truth.csv")
        for ts in train_seeds:
            cfg = load_model_config(overrides={"training.threads": threads, "training.seed": ts})
            print(f"== back-test, world {ws}, training seed {ts}", flush=True)
            bt = run_backtest(past, current.frame, cfg, truth=truth, log=lambda m: print(m, flush=True))
            print(json.dumps({"world": ws, "seed": ts, "confirmations": bt["confirmations"], **{
                view: {m: round(v["auroc"], 4) for m, v in rows.items()} for view, rows in bt["views"].items()}}),
                flush=True)
            runs.append({"world_seed": ws, "train_seed": ts, "evaluation": {"views": {}, "backtest": bt}})
    if spark is not None:
        spark.stop()
    agg = _aggregate(runs)
    return {"customers": customers, "profile": profile, "world_seeds": world_seeds, "train_seeds": train_seeds,
            "backtest_days": BACKTEST_DAYS, "runs": runs,
            "aggregate": {"backtest": agg["backtest"], "lead_time": agg["lead_time"]},
            "confirmations": {k: _mean_sd([r["evaluation"]["backtest"]["confirmations"][k] for r in runs])
                              for k in runs[0]["evaluation"]["backtest"]["confirmations"]}}


def combine(files: list[Path]) -> dict[str, Any]:
    """One ``synthetic`` section from the runs of several result files (training seeds run as separate
    processes side by side), aggregated exactly as one run would have been."""
    runs: list[dict[str, Any]] = []
    worlds: dict[str, Any] = {}
    head: dict[str, Any] = {}
    for f in files:
        syn = json.loads(f.read_text())["synthetic"]
        head = head or {k: syn[k] for k in ("customers", "profile", "backtest_days")}
        runs += syn["runs"]
        for ws, w in syn["worlds"].items():
            worlds.setdefault(ws, {k: v for k, v in w.items() if k != "aggregate"})
    seen = [(r["world_seed"], r["train_seed"]) for r in runs]
    if len(set(seen)) != len(seen):
        raise SystemExit(f"combine: a (world, training seed) run appears twice in {files}")
    for ws, w in worlds.items():
        w["aggregate"] = _aggregate([r for r in runs if str(r["world_seed"]) == ws])
    return {**head, "world_seeds": sorted({r["world_seed"] for r in runs}),
            "train_seeds": sorted({r["train_seed"] for r in runs}), "runs": runs, "worlds": worlds,
            "aggregate": _aggregate(runs), "targets": _targets({ws: w["aggregate"] for ws, w in worlds.items()}),
            "combined_from": [str(f.relative_to(REPO)) if f.is_relative_to(REPO) else str(f) for f in files]}


# ---- Tolokers ----------------------------------------------------------------------------------------------

def tolokers_snapshot(out: Path, split: int) -> np.ndarray:
    """Tolokers as a Neptune-CSV snapshot: workers with 10 features, `banned` hidden on the test split."""
    from identigraph.etl import snapshot as snap

    d = np.load(TOLOKERS)
    x, y, edges = d["node_features"], d["node_labels"], d["edges"]
    test = d["test_masks"][split]
    split_names = np.where(d["train_masks"][split], "train", np.where(d["val_masks"][split], "val", "test"))
    if (out / snap.SUMMARY).exists():
        return split_names
    header = ["~id", "~label", *(f"f{j}:Double" for j in range(x.shape[1])), "banned:Int"]
    w = snap.CsvPartWriter(out / "vertices" / "worker" / "part-0.csv", header)
    for i in range(len(x)):
        w.write([f"worker:{i}", "worker", *(f"{v:.6g}" for v in x[i]), "" if test[i] else int(y[i])])
    w.close()
    w = snap.CsvPartWriter(out / "edges" / "knows" / "part-0.csv", ["~id", "~from", "~to", "~label"])
    for k, (a, b) in enumerate(edges):
        w.write([f"e{k}", f"worker:{a}", f"worker:{b}", "knows"])
    w.close()
    (out / snap.SUMMARY).write_text(json.dumps({"as_of": "2020-01-01T00:00:00.000Z"}))
    return split_names


def tolokers(work: Path, splits: int, threads: int, epochs: int | None = None,
             progress: Path | None = None, nets: tuple[str, ...] = ("model", "rgcn_ablation")) -> dict:
    """``epochs``: a cap for both networks (no early stop before it), for a run that must fit a session;
    ``progress``: rewritten after every split, so a run cut short keeps the splits it finished; ``nets``:
    which networks to train (the RGCN ablation equals the edge-aware conv here: Tolokers has no edge
    features). The stacked blend (``model.stacking``) takes its weight from the validation split."""
    from identigraph.model.baseline import GBDTBaseline
    from identigraph.model.config import load_model_config
    from identigraph.model.metrics import summary
    from identigraph.model.pipeline import prepare
    from identigraph.model.stacking import fit_blend
    from identigraph.model.train import predict, train

    y_true = np.load(TOLOKERS)["node_labels"]
    cap = {"training.epochs": epochs, "training.patience": epochs} if epochs else {}
    cfg = load_model_config(overrides={"target_label": "worker", "label_columns": {}, "time_property": None,
                                       "training.threads": threads, **cap})
    head = {"epochs_cap": epochs, "threads": threads, "nets": list(nets)}
    convs = {"model": "edge", "rgcn_ablation": "rgcn"}
    per_split = []
    for s in range(splits):
        root = work / f"tolokers-{s}"
        split = tolokers_snapshot(root, s)
        p = prepare(root, cfg, target="worker.banned", split=split)
        order = np.array([int(i.split(":")[1]) for i in p.targets.ids])
        test_nodes = p.nodes[split[order] == "test"]
        y_test = y_true[order][split[order] == "test"]
        known = ~np.isnan(p.targets.y)
        tr = known & (p.targets.split == "train")
        va = known & (p.targets.split == "val")
        row: dict[str, Any] = {"split": s}
        val_scores, test_scores = {}, {}
        for name in nets:
            conv = convs[name]
            t0 = time.perf_counter()
            res = train(p.tensors, p.targets, cfg, conv=conv,
                        log=lambda m, s=s, conv=conv: print(f"  [{s} {conv}] {m}", flush=True))
            test_scores[name] = predict(res.model, p.tensors, test_nodes, cfg, mode=res.mode)
            val_scores[name] = predict(res.model, p.tensors, p.nodes[va], cfg, mode=res.mode)
            row[name] = {**summary(y_test, test_scores[name]), "seconds": time.perf_counter() - t0,
                         "best_epoch": res.best_epoch, "epochs_run": len(res.history),
                         "epoch_seconds": res.epoch_seconds}
        t0 = time.perf_counter()
        gbdt = GBDTBaseline(cfg).fit(p.tensors, p.nodes[tr], p.targets.y[tr], p.nodes[va], p.targets.y[va])
        test_scores["gbdt_baseline"] = gbdt.predict(p.tensors, test_nodes)
        row["gbdt_baseline"] = {**summary(y_test, test_scores["gbdt_baseline"]), "seconds": time.perf_counter() - t0}
        net = nets[0]
        blend = fit_blend(p.targets.y[va], val_scores[net], gbdt.predict(p.tensors, p.nodes[va]))
        row["stacked_blend"] = {**summary(y_test, blend(test_scores[net], test_scores["gbdt_baseline"])),
                                "network": net, "weight_on_network": blend.weight, "val_auprc": blend.val_auprc}
        row["peak_rss_mb_so_far"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({m: round(v["auroc"], 4) for m, v in row.items() if isinstance(v, dict)}), flush=True)
        per_split.append(row)
        if progress is not None:
            progress.write_text(json.dumps({**head, "splits": per_split}, indent=2, default=str))
    mean = {m: {k: _mean_sd([r[m][k] for r in per_split]) for k in ("auroc", "auprc")}
            for m in (*nets, "gbdt_baseline", "stacked_blend")}
    return {**head, "splits": per_split, "mean": mean,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ---- speed -------------------------------------------------------------------------------------------------

def speed(work: Path, customers: int, seed: int, profile: str) -> dict[str, Any]:
    """``identigraph train`` as a whole process on a hard world: wall, CPU and peak RSS of the process tree."""
    from identigraph.config import load_settings
    from identigraph.etl.spark import session

    root = work / f"{profile}-{customers}-{seed}"
    if not (root / "labels" / "labels.csv").exists():
        settings = load_settings(None)
        spark = session(settings)
        build_world(spark, settings, root, customers, seed, profile)
        spark.stop()
    out = root / "speed-model"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    sh([*CLI, "train", "--snapshot", root / "snapshot", "--labels", root / "labels", "--out", out])
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"customers": customers, "seed": seed, "wall_seconds": wall,
            "cpu_seconds": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "peak_rss_mb": after.ru_maxrss / 1024, "train_seconds": metrics["train_seconds"],
            "epoch_seconds": metrics["epoch_seconds"], "best_epoch": metrics["best_epoch"],
            "epochs_run": metrics.get("epochs_run"), "mode": metrics["mode"],
            "val": metrics["val"], "test": metrics["test"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--world-seeds", default="11,12,13")
    ap.add_argument("--train-seeds", default="1,2,3")
    ap.add_argument("--profile", default="hard")
    ap.add_argument("--work", type=Path, default=None, help="keep worlds/snapshots here (reused when present)")
    ap.add_argument("--only", default="synthetic,tolokers,speed")
    ap.add_argument("--combine", default="",
                    help="FILE,FILE…: the synthetic section from these result files' runs (no training)")
    ap.add_argument("--no-backtest", action="store_true",
                    help="synthetic: the hold-out views only (the back-test trains two more models per run)")
    ap.add_argument("--tolokers-splits", type=int, default=5)
    ap.add_argument("--tolokers-epochs", type=int, default=None,
                    help="cap both networks' epochs (default: the model configuration's, with early stopping)")
    ap.add_argument("--tolokers-nets", default="model,rgcn_ablation",
                    help="the networks to train on Tolokers (model: edge-aware; rgcn_ablation: plain RGCN)")
    ap.add_argument("--speed-customers", type=int, default=30_000)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("BENCH_THREADS", "1")),
                    help="torch intra-op threads (1: faster than 2 on this shared 2-core VM)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "model.json")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="identigraph-bench-model-"))
    work.mkdir(parents=True, exist_ok=True)
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    result = {**previous, "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
                                     f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "gpu": "no GPU lent to this task (device status: not drawn)"}
    only = set(args.only.split(","))
    if args.combine:
        result["synthetic"] = combine([Path(f) for f in args.combine.split(",")])
        only -= {"synthetic"}
    seeds = [int(s) for s in args.world_seeds.split(",")]
    if "synthetic" in only:
        result["synthetic"] = synthetic(work, args.customers, seeds, [int(s) for s in args.train_seeds.split(",")],
                                        args.profile, args.threads, with_backtest=not args.no_backtest,
                                        progress=args.out.with_suffix(".partial.json"))
    if "backtest" in only:
        result["backtest"] = backtest(work, args.customers, seeds, [int(s) for s in args.train_seeds.split(",")],
                                      args.profile, args.threads)
    if "tolokers" in only:
        result["tolokers"] = tolokers(work, args.tolokers_splits, args.threads, args.tolokers_epochs,
                                      progress=args.out.with_suffix(".partial.json"),
                                      nets=tuple(args.tolokers_nets.split(",")))
    if "speed" in only:
        result["speed"] = speed(work, args.speed_customers, seeds[0], args.profile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
