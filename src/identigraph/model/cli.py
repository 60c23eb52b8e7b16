"""``identigraph train | predict | evaluate``: registered on the main app by identigraph.cli."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from identigraph.terminal import make_console

if TYPE_CHECKING:
    from identigraph.model.config import ModelConfig

console = make_console()

_CONFIG = typer.Option(None, "--model-config", help="model YAML (default: $IDENTIGRAPH_MODEL_CONFIG or the "
                       "packaged model.yaml); IDENTIGRAPH_MODEL__SECTION__KEY env vars override it")
_SET = typer.Option(None, "--set", help="override a model config value, e.g. --set training.epochs=20")


def model_config_for(path: Path | None, sets: list[str] | None) -> ModelConfig:
    """The model configuration a command runs with: the file, the environment, then its ``--set`` options."""
    from identigraph.config_loader import parse_sets
    from identigraph.model.config import load_model_config

    return load_model_config(path, parse_sets(sets))


def train_cmd(
    snapshot: Path = typer.Option(..., "--snapshot", exists=True, file_okay=False, help="snapshot directory"),
    out: Path | None = typer.Option(None, "--out", help="model directory to write"),
    labels: Path | None = typer.Option(None, "--labels", exists=True, file_okay=False,
                                          help="labels directory from `identigraph label`"),
    target: str | None = typer.Option(None, "--target", help="LABEL.PROPERTY as target, e.g. customer.blocked"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N"),
    conv: str = typer.Option("edge", "--conv", help="edge (edge-aware RGCN) | rgcn (plain, the ablation)"),
    do_estimate: bool = typer.Option(False, "--estimate", help="only print expected memory, time and instance"),
    model_config: Path | None = _CONFIG,
    sets: list[str] | None = _SET,
) -> None:
    """Train the edge-aware relational GCN on a snapshot; write weights, encoders, threshold, metrics, card."""
    cfg = model_config_for(model_config, sets)
    if do_estimate:
        from identigraph.model.pipeline import estimate

        console.print_json(json.dumps(estimate(snapshot, cfg)))
        return
    if out is None:
        raise typer.BadParameter("--out is required unless --estimate", param_hint="--out")
    import torch.distributed as dist

    from identigraph.model.ddp import distributed_context

    with distributed_context() as rank:
        from identigraph.model.pipeline import run_train

        log = console.print if rank == 0 else (lambda _: None)
        target_out = out if rank == 0 else out.with_name(f".{out.name}.rank{rank}")
        _version, _metrics = run_train(snapshot, target_out, cfg, labels, target, device, conv, log)
        if rank != 0:
            import shutil

            shutil.rmtree(target_out, ignore_errors=True)
        if dist.is_initialized():
            dist.barrier()


def predict_cmd(
    snapshot: Path = typer.Option(..., "--snapshot", exists=True, file_okay=False),
    model: Path = typer.Option(..., "--model", exists=True, file_okay=False),
    out: Path = typer.Option(..., "--out", help="CSV: id, <label>_id, score"),
    model_config: Path | None = _CONFIG,
    sets: list[str] | None = _SET,
) -> None:
    """Score every target vertex of a snapshot (each with its own label-derived inputs hidden)."""
    from identigraph.model.pipeline import run_predict

    n = run_predict(snapshot, model, out, model_config_for(model_config, sets))
    console.print(f"scored {n:,} vertices → {out}")


def evaluate_cmd(
    snapshot: Path = typer.Option(..., "--snapshot", exists=True, file_okay=False),
    model: Path = typer.Option(..., "--model", exists=True, file_okay=False),
    labels: Path | None = typer.Option(None, "--labels", exists=True, file_okay=False),
    target: str | None = typer.Option(None, "--target"),
    truth: Path | None = typer.Option(None, "--truth", exists=True, dir_okay=False,
                                         help="ground truth CSV (customer_id,is_fraud,…) as synth writes"),
    backtest_snapshot: Path | None = typer.Option(
        None, "--backtest-snapshot", exists=True, file_okay=False,
        help="snapshot of an earlier as-of (e.g. `etl --as-of` 60 days back): temporal back-test against what "
             "the platform confirmed since"),
    backtest_labels: Path | None = typer.Option(None, "--backtest-labels", exists=True, file_okay=False,
                                                   help="labels built from --backtest-snapshot"),
    model_config: Path | None = _CONFIG,
    sets: list[str] | None = _SET,
) -> None:
    """AUROC, AUPRC, recall at precision 0.85/0.90, precision at recall 0.5: model vs ablation vs GBDT vs the
    neighbour-block rule; with --backtest-*, the temporal back-test and lead times."""
    from identigraph.errors import SchemaError
    from identigraph.model.pipeline import prepare, run_evaluate

    cfg = model_config_for(model_config, sets)
    if (backtest_snapshot is None) != (backtest_labels is None):
        raise SchemaError("--backtest-snapshot and --backtest-labels go together")
    past = None
    if backtest_snapshot is not None:
        past = prepare(backtest_snapshot, cfg, labels=backtest_labels)
    results = run_evaluate(snapshot, model, cfg, labels, target, truth, log=console.print, backtest=past)
    print_evaluation(results)
    console.print(f"saved {model / 'evaluation.json'}")


def print_evaluation(results: dict, out: Console = console) -> None:
    """The evaluation tables; shared with the demo so both read the same."""
    for view, rows in results["views"].items():
        table = Table(title=view.replace("_", " "))
        for col in ("", "n", "positives", "AUROC", "AUPRC", "R@P0.85", "R@P0.90", "P@R0.5"):
            table.add_column(col, justify="right" if col else "left")
        for name, m in rows.items():
            table.add_row(name, f"{m['n']:,}", f"{m['positives']:,}", *(f"{m[k]:.4f}" for k in (
                "auroc", "auprc", "recall_at_p85", "recall_at_p90", "precision_at_r50")))
        out.print(table)
    if "operating_point" in results:
        op = results["operating_point"]
        out.print(f"operating point (threshold {op['threshold']:.4f}) on unblocked test customers: "
                  f"{op['flagged']:,} flagged, precision {op['precision']:.3f}, recall {op['recall']:.3f}")
    if "training" in results:
        out.print("best epoch / epochs run: " + ", ".join(
            f"{name} {r['best_epoch']}/{r['epochs_run']}" for name, r in results["training"].items()))
    if "stacked_blend" in results:
        w = results["stacked_blend"]["weight_on_model"]
        out.print(f"stacked_blend (a candidate, not served): {w:.1f} × model + {1 - w:.1f} × GBDT on standardised "
                  f"logits, weight picked on validation (AUPRC {results['stacked_blend']['val_auprc']:.4f})")
    if results.get("by_fraud_type"):
        kinds = sorted({k for rows in results["by_fraud_type"].values() for k in rows})
        out.print("hidden fraud by scenario (unblocked test customers): AUROC against every honest customer · "
                  "share in the queue at precision 0.85 (positives)")
        table = Table(title="by fraud scenario")
        for col in ("", *kinds):
            table.add_column(col, justify="right" if col else "left")
        for name, rows in results["by_fraud_type"].items():
            table.add_row(name, *(f"{rows[k]['auroc']:.3f} · {rows[k]['recall_in_queue']:.2f} ({rows[k]['positives']})"
                                  if k in rows else "–" for k in kinds))
        out.print(table)
    if "backtest" in results:
        print_backtest(results["backtest"], out)


def print_backtest(bt: dict, out: Console = console) -> None:
    """The back-test and lead-time tables: what the model would have caught before the platform did."""
    out.print(f"back-test: trained as of {bt['scored_at'][:10]}, {bt['scored']:,} customers not blocked then, "
              f"judged {bt['horizon_days']:.0f} days later ({bt['current_as_of'][:10]})")
    for view, rows in bt["views"].items():
        table = Table(title=f"back-test vs {view.replace('_', ' ')}")
        for col in ("", "n", "positives", "AUROC", "AUPRC", "R@P0.85", "P@R0.5"):
            table.add_column(col, justify="right" if col else "left")
        for name, m in rows.items():
            table.add_row(name, f"{m['n']:,}", f"{m['positives']:,}",
                          *(f"{m[k]:.4f}" for k in ("auroc", "auprc", "recall_at_p85", "precision_at_r50")))
        out.print(table)
    if "confirmations" in bt:
        c = bt["confirmations"]
        out.print(f"the platform's {c['confirmed']:,} later fraud blocks, by the truth: {c['fraud_begun_by_then']:,} "
                  f"fraud visible then, {c['fraud_begun_after']:,} fraud begun after, {c['honest']:,} honest")
    table = Table(title="lead time: flagged at the back-test date (own threshold), blocked by the platform later")
    cols = ["", "flagged", "then blocked", "of confirmed", "median days", "p25–p75 days", "precision vs T",
            "precision vs truth"]
    right = "flagged_then_blocked_fraud" in next(iter(bt["lead_time"].values()), {})
    cols += ["then blocked, fraud", "median days, fraud"] if right else []
    for col in cols:
        table.add_column(col, justify="right" if col else "left")
    for name, lt in bt["lead_time"].items():
        span = f"{lt['p25_days']:.0f}–{lt['p75_days']:.0f}" if "p25_days" in lt else "–"
        extra = [f"{lt['flagged_then_blocked_fraud']:,}", f"{lt.get('median_days_fraud', float('nan')):.1f}"]
        table.add_row(name, f"{lt['flagged']:,}", f"{lt['flagged_then_blocked']:,}",
                      f"{lt['caught_early_share']:.3f}", f"{lt.get('median_days', float('nan')):.1f}", span,
                      f"{lt.get('precision_vs_confirmed_by_T', float('nan')):.3f}",
                      f"{lt.get('precision_vs_truth', float('nan')):.3f}", *(extra if right else []))
    out.print(table)
