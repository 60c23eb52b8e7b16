"""The verbs behind ``identigraph train | predict | evaluate``: snapshot in, model directory or figures out."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from identigraph.errors import SchemaError
from identigraph.model.artifacts import LoadedModel, save_model
from identigraph.model.backtest import run_backtest
from identigraph.model.baseline import GBDTBaseline, neighbour_block_scores
from identigraph.model.config import ModelConfig
from identigraph.model.dataset import Targets, build_targets, parse_target
from identigraph.model.features import FeatureEncoder, GraphTensors
from identigraph.model.frame import GraphFrame, read_snapshot
from identigraph.model.metrics import by_group, summary
from identigraph.model.stacking import Blend, fit_blend
from identigraph.model.train import TrainResult, predict, train

Log = Callable[[str], None]


@dataclass
class Prepared:
    """A snapshot ready to train on or score, so train, predict and tune prepare it one way."""
    frame: GraphFrame
    targets: Targets
    encoder: FeatureEncoder
    tensors: GraphTensors
    nodes: np.ndarray            # node index of each target vertex (targets order)


def prepare(snapshot: Path | GraphFrame, cfg: ModelConfig, labels: Path | None = None, target: str | None = None,
            split: np.ndarray | None = None, encoder: FeatureEncoder | None = None) -> Prepared:
    """Read, label and encode a snapshot (fitting the encoder unless one is given)."""
    frame = snapshot if isinstance(snapshot, GraphFrame) else read_snapshot(Path(snapshot))
    targets = build_targets(frame, cfg, labels, target, split)
    label_columns = {k: list(v) for k, v in cfg.label_columns.items()}
    if target is not None:  # the target property is a label: never an input of its own node
        tl, prop = parse_target(target)
        label_columns.setdefault(tl, [])
        if prop not in label_columns[tl]:
            label_columns[tl].append(prop)
    if encoder is None:
        encoder = FeatureEncoder(label_columns, hub_degree=cfg.hub_degree, shortcuts=cfg.shortcuts).fit(frame)
    tensors = encoder.transform(frame)
    return Prepared(frame, targets, encoder, tensors, tensors.index_of(targets.ids).astype(np.int64))


def _card(cfg: ModelConfig, result: TrainResult, metrics: dict[str, Any], source: str) -> str:
    test = metrics.get("test", {})
    return f"""# identigraph fraud model {{version}}

- **What**: edge-aware relational GCN ({cfg.network.layers} layers, width {cfg.network.hidden}) classifying
  `{cfg.target_label}` vertices; trained on {source}.
- **Split**: {metrics['split']}; best epoch {result.best_epoch}; {result.mode}-batch on {result.device},
  {result.epoch_seconds:.3f} s/epoch.
- **Threshold** {result.threshold:.4f}: chosen for validation precision {cfg.target_precision}
  ({'reached' if result.threshold_reached else 'NOT reachable on validation: best-F1 threshold used instead'}).
- **Validation** (against training labels): AUPRC {result.val.get('auprc', float('nan')):.4f},
  recall@P0.85 {result.val.get('recall_at_p85', float('nan')):.4f}.
- **Test** (against training labels, which miss uncaught fraud): AUPRC {test.get('auprc', float('nan')):.4f},
  AUROC {test.get('auroc', float('nan')):.4f}.
- **Inputs**: vertex properties and structure, edge properties (recency, counts, time since account
  creation); a node's own label-derived properties are hidden when it is scored. No per-node ids: scores
  customers and identifiers never seen in training.
- **Limits**: labels lag fraud (uncaught fraud is labelled legitimate); judge it with `identigraph evaluate`.
"""


def effective_config(cfg: ModelConfig, p: Prepared) -> ModelConfig:
    """The configuration the model was really trained with: ``--target`` decides the target label and adds
    its property to the label columns, and ``config.json`` must say so or ``predict`` scores the wrong
    vertices."""
    label_columns = {k: list(v) for k, v in cfg.label_columns.items()}
    for label, cols in p.encoder.label_columns.items():
        label_columns[label] = list(dict.fromkeys([*label_columns.get(label, []), *cols]))
    return cfg.model_copy(update={"target_label": p.targets.label, "label_columns": label_columns})


def run_train(snapshot: Path, out: Path, cfg: ModelConfig, labels: Path | None = None, target: str | None = None,
              device: str = "auto", conv: str = "edge", log: Log = print,
              prepared: Prepared | None = None) -> tuple[str, dict[str, Any]]:
    """What ``identigraph train`` runs: prepare, train, write the model directory with its metrics."""
    p = prepared or prepare(snapshot, cfg, labels, target)
    cfg = effective_config(cfg, p)
    t, tg = p.tensors, p.targets
    counts = pd.Series(tg.split).value_counts().to_dict()
    log(f"graph: {len(t.x):,} nodes, {t.edge_index.shape[1]:,} directed edges, {len(t.relations)} relations, "
        f"{t.x.shape[1]} node / {t.edge_attr.shape[1]} edge features; split ({tg.kind}) {counts}")
    result = train(t, tg, cfg, conv=conv, device=device, log=log)
    test_mask = (tg.split == "test") & ~np.isnan(tg.y)
    test_scores = predict(result.model, t, p.nodes[test_mask], cfg, mode=result.mode)
    metrics: dict[str, Any] = {
        "threshold": result.threshold, "threshold_reached": result.threshold_reached,
        "target_precision": cfg.target_precision, "best_epoch": result.best_epoch, "split": tg.kind,
        "val": result.val, "test": summary(tg.y[test_mask], test_scores),
        "train_seconds": result.seconds, "epoch_seconds": result.epoch_seconds, "epochs_run": len(result.history),
        "device": result.device,
        "mode": result.mode, "peak_memory_mb": result.peak_memory_mb, "conv": conv,
        "source": {"snapshot": str(snapshot), "labels": str(labels) if labels else None, "target": target},
    }
    source = f"labels {labels}" if labels else f"vertex property {target}"
    config = {"model": cfg.model_dump(mode="json"), "target": target, "labels": str(labels) if labels else None,
              "as_of": p.frame.as_of.isoformat(), "split_counts": counts}
    version = save_model(out, result.model.cpu(), p.encoder, config, metrics, _card(cfg, result, metrics, source))
    log(f"model {version} → {out}: threshold {result.threshold:.4f}, test AUPRC {metrics['test']['auprc']:.4f}")
    return version, metrics


def run_predict(snapshot: Path, model_dir: Path, out: Path, cfg: ModelConfig) -> int:
    """What ``identigraph predict`` runs: score every target vertex of a snapshot with a saved model."""
    loaded = LoadedModel.load(model_dir)
    label = trained_target_label(Path(model_dir))
    frame = read_snapshot(Path(snapshot))
    if len(frame.vertices.get(label, ())) == 0:
        raise SchemaError(f"{snapshot}: no {label!r} vertices to score — the model {loaded.version} classifies "
                          f"{label!r} vertices and the snapshot has {sorted(frame.vertices) or 'none'}")
    t = loaded.tensors(frame)
    nodes = t.nodes_of(label)
    scores = predict(loaded.model, t, nodes, cfg)
    ids = t.node_ids[nodes]
    prefix = f"{label}:"
    table = pd.DataFrame({"id": ids, f"{label}_id": [i.removeprefix(prefix) for i in ids], "score": scores})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    table.to_csv(tmp, index=False, float_format="%.6f")
    tmp.replace(out)
    return len(table)


def trained_target_label(model_dir: Path) -> str:
    """The vertex label a model directory classifies. Models written before ``config.json`` recorded the
    effective target label kept the default there; their ``--target`` names the real one."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    if config.get("target"):
        return parse_target(config["target"])[0]
    return config["model"]["target_label"]


def read_truth(truth: Path) -> pd.DataFrame:
    """The synthetic world's truth.csv, ids kept as text."""
    return pd.read_csv(truth, dtype={"customer_id": str})


def _truth_series(truth: pd.DataFrame, label: str) -> pd.Series:
    return pd.Series(truth["is_fraud"].astype(int).to_numpy(), index=f"{label}:" + truth["customer_id"])


def run_evaluate(snapshot: Path | GraphFrame, model_dir: Path, cfg: ModelConfig, labels: Path | None = None,
                 target: str | None = None, truth: Path | None = None, log: Log = print,
                 split: np.ndarray | None = None, prepared: Prepared | None = None,
                 backtest: Prepared | None = None) -> dict[str, Any]:
    """Model vs plain RGCN vs GBDT (and the neighbour-block rule) on the same split, judged on test.

    Two views: against the training labels (what production sees), and — with ``truth`` — against ground
    truth on customers *not blocked* at as-of, which is the question that matters: does it find the fraud
    nobody caught? The train split's unblocked customers are scored too: if the model merely echoed its
    labels, its recall there (where hidden fraud was labelled legitimate) would collapse. ``backtest`` (the
    snapshot and labels of an earlier as-of, see ``model.backtest``) adds the temporal back-test against
    what the platform confirmed between then and this snapshot.
    """
    loaded = LoadedModel.load(model_dir)
    p = prepared or prepare(snapshot, cfg, labels, target, split, encoder=loaded.encoder)
    truth_table = read_truth(Path(truth)) if truth is not None else None
    t, tg = p.tensors, p.targets
    known = ~np.isnan(tg.y)
    train_nodes = p.nodes[known & (tg.split == "train")]
    val_nodes = p.nodes[known & (tg.split == "val")]
    log("training the plain RGCN ablation on the same split …")
    ablation = train(t, tg, cfg, conv="rgcn", log=lambda _: None)
    log("training the GBDT baseline (own + neighbour-aggregated features) …")
    gbdt = GBDTBaseline(cfg).fit(t, train_nodes, tg.y[known & (tg.split == "train")], val_nodes,
                                 tg.y[known & (tg.split == "val")])
    scorers = {
        "model": lambda nodes: predict(loaded.model, t, nodes, cfg),
        "rgcn_ablation": lambda nodes: predict(ablation.model, t, nodes, cfg, mode=ablation.mode),
        "gbdt_baseline": lambda nodes: gbdt.predict(t, nodes),
    }
    y_val = tg.y[known & (tg.split == "val")]
    blend: Blend | None = None
    if len(np.unique(y_val)) == 2:  # a stacked GNN + GBDT candidate, its weight picked on validation
        blend = fit_blend(y_val, scorers["model"](val_nodes), scorers["gbdt_baseline"](val_nodes))
    if tg.label in p.frame.vertices and "blocked" in p.frame.vertices[tg.label]:
        rule = neighbour_block_scores(p.frame, tg.label)
        scorers["neighbour_rule"] = lambda nodes: rule.reindex(t.node_ids[nodes]).to_numpy(dtype=float)
    views: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    test = tg.split == "test"
    views["test_vs_labels"] = (p.nodes[test & known], tg.y[test & known])
    if truth is not None:
        truth_y = _truth_series(truth_table, tg.label).reindex(tg.ids).to_numpy(dtype=float)
        vf = p.frame.vertices[tg.label]
        blocked = vf["blocked"].to_numpy(dtype=float) == 1.0 if "blocked" in vf else np.zeros(len(vf), bool)
        has_truth = ~np.isnan(truth_y)
        for name, part in (("test_unblocked_vs_truth", test), ("train_unblocked_vs_truth", tg.split == "train")):
            sel = part & ~blocked & has_truth
            views[name] = (p.nodes[sel], truth_y[sel])
    results: dict[str, Any] = {"views": {}, "threshold": loaded.threshold, "version": loaded.version}
    if blend is not None:
        results["stacked_blend"] = {"weight_on_model": blend.weight, "val_auprc": blend.val_auprc}
    # where each network stopped: a best epoch at the cap says it had not converged, and a comparison
    # between the two is only fair when neither was cut short
    results["training"] = {
        "model": {k: loaded.metrics.get(k) for k in ("best_epoch", "epochs_run", "train_seconds")},
        "rgcn_ablation": {"best_epoch": ablation.best_epoch, "epochs_run": len(ablation.history),
                          "train_seconds": ablation.seconds}}
    scores: dict[str, dict[str, np.ndarray]] = {}
    for view, (nodes, y) in views.items():
        scores[view] = {name: fn(nodes) for name, fn in scorers.items()}
        if blend is not None:  # from the two scores just computed: no second prediction per view
            scores[view]["stacked_blend"] = blend(scores[view]["model"], scores[view]["gbdt_baseline"])
        results["views"][view] = {name: summary(y, s) for name, s in scores[view].items()}
    if truth_table is not None:  # at the model's own operating threshold, on the unblocked test customers
        nodes, y = views["test_unblocked_vs_truth"]
        flagged = scores["test_unblocked_vs_truth"]["model"] >= loaded.threshold
        results["operating_point"] = {
            "threshold": loaded.threshold, "flagged": int(flagged.sum()),
            "precision": float(y[flagged].mean()) if flagged.any() else float("nan"),
            "recall": float(flagged[y == 1].mean()) if (y == 1).any() else float("nan")}
    if truth_table is not None and "fraud_type" in truth_table:
        # the same customers per fraud scenario: which kinds of hidden fraud each scorer finds
        nodes, y = views["test_unblocked_vs_truth"]
        kind = truth_table.set_index(f"{tg.label}:" + truth_table["customer_id"])["fraud_type"]
        kinds = kind.reindex(t.node_ids[nodes]).fillna("none").astype(str).to_numpy()
        results["by_fraud_type"] = {name: by_group(y, s, kinds, cfg.target_precision)
                                    for name, s in scores["test_unblocked_vs_truth"].items()}
    if backtest is not None:
        results["backtest"] = run_backtest(backtest, p.frame, cfg, conv=loaded.metrics.get("conv", "edge"),
                                           truth=truth_table, log=log)
    out = Path(model_dir) / "evaluation.json"
    out.write_text(json.dumps(results, indent=2))
    return results


def estimate(snapshot: Path, cfg: ModelConfig) -> dict[str, Any]:
    """Memory and time a training run needs, and the instance to ask for (Neptune ML's sizing question).

    Counted from the snapshot's line counts, the network width and a one-second matmul probe of this
    machine; GPU time assumes 10 % of an A10G's fp32 peak on sparse gathers — an estimate, stated as such.
    """
    from identigraph.etl import snapshot as snap

    def lines(kind: str) -> int:
        total = 0
        for label in snap.labels(Path(snapshot), kind):
            for f in snap.csv_files(Path(snapshot) / kind / label):
                with open(f, "rb") as fh:
                    total += max(sum(1 for _ in fh) - 1, 0)
        return total

    n, e = lines("vertices"), 2 * lines("edges")
    h, layers, d_in, d_e = cfg.network.hidden, cfg.network.layers, 64, 12
    params = d_in * h + layers * (10 * (h * h + 2 * d_e * h) + h * h) + h * h
    activ = 4 * (n * (d_in + 6 * h * layers) + e * (d_e + 4 * h) * layers)   # bytes kept for backward
    peak = activ * 1.5 + 16 * params + 4 * (n * d_in + e * (d_e + 3))
    flops = 3 * layers * (2 * n * h * h + e * (4 * d_e * h + 3 * h))
    a = torch.randn(512, 512)
    import time as _t
    t0, reps = _t.perf_counter(), 0
    while _t.perf_counter() - t0 < 0.5:
        a @ a
        reps += 1
    cpu_flops = reps * 2 * 512**3 / (_t.perf_counter() - t0)
    epochs = cfg.training.epochs
    full = n <= cfg.training.full_batch_max_nodes
    gb = peak / 2**30
    if gb < 20:
        rec = "ml.g5.xlarge (1 × A10G 24 GiB)" if n > 200_000 else "CPU is enough (e.g. ml.m5.2xlarge)"
    elif gb < 70:
        rec = "ml.p4d.24xlarge (A100 40 GiB; or full-batch on one H100 80 GiB)"
    else:
        rec = "mini-batch (sampled) training, several GPUs with torchrun/DDP: ml.p4d.24xlarge"
    return {"nodes": n, "directed_edges": e, "parameters": params, "peak_memory_gib": round(gb, 3),
            "mode": "full" if full else "sampled", "epoch_seconds_cpu": flops / (0.3 * cpu_flops),
            "epoch_seconds_gpu": flops / 3e12, "max_epochs": epochs,
            "train_minutes_cpu": flops / (0.3 * cpu_flops) * epochs / 60, "recommendation": rec}
