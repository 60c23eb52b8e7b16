"""Temporal back-test: would the model have caught, 60 days ago, the fraud the platform has confirmed since?

A hold-out split asks how well a model ranks labels it could have learnt from. The product question is
different: *train on what was known at T − 60 days, score everyone who was not blocked then, and see who the
platform went on to block* — and how many days earlier the model said so. So:

- the model (same configuration and conv), the plain-RGCN ablation, the GBDT baseline and the neighbour-
  block rule are all trained/fitted on the past snapshot and the labels built as of the past;
- they score every customer of the past snapshot **not blocked at the past as-of**;
- two targets: **confirmed by T** — a fraud block after the past as-of that still stands in the current
  snapshot (what the platform itself found), and, when ground truth exists, **truth** — fraud that had begun
  by the past as-of (a takeover that starts later was an honest account when it was scored);
- **lead time**: for customers the model flagged at its own threshold (chosen on the past validation split
  for precision 0.85) and the platform then blocked, days from the past as-of (when the model scored them)
  to the platform's block. The back-test scores once, so the flag date is the past as-of for everyone.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from identigraph.model.baseline import GBDTBaseline, neighbour_block_scores
from identigraph.model.config import ModelConfig
from identigraph.model.frame import GraphFrame
from identigraph.model.metrics import summary
from identigraph.model.train import predict, train

Log = Callable[[str], None]
DAY_S = 86_400.0


def _utc(ts: Any) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def confirmed_after(current: GraphFrame, since: pd.Timestamp, label: str = "customer") -> pd.Series:
    """Time of the standing fraud block placed after ``since`` per customer of ``current`` (NaT: none)."""
    vf = current.vertices[label]
    at = pd.to_datetime(vf["last_block_at"], utc=True) if "last_block_at" in vf else pd.Series(pd.NaT, index=vf.index)
    standing = vf["blocked"].to_numpy(dtype=float) == 1.0 if "blocked" in vf else np.zeros(len(vf), bool)
    fraud = (vf["last_block_reason"] == "fraud").to_numpy() if "last_block_reason" in vf else np.zeros(len(vf), bool)
    ok = standing & fraud & (at > since).to_numpy()
    return at.where(ok)


def truth_at(truth: pd.DataFrame, when: pd.Timestamp, label: str = "customer") -> pd.Series:
    """1 where fraud had begun by ``when``, 0 otherwise, indexed by vertex id."""
    start = pd.to_datetime(truth["fraud_start"], utc=True, errors="coerce")
    y = ((truth["is_fraud"].astype(int) == 1) & (start <= when)).astype(float)
    return pd.Series(y.to_numpy(), index=f"{label}:" + truth["customer_id"].astype(str))


def lead_times(flagged: np.ndarray, block_at: pd.Series, scored_at: pd.Timestamp) -> dict[str, Any]:
    """Days between the flag (the past as-of) and the platform's block, over flagged customers later blocked."""
    hit = flagged & block_at.notna().to_numpy()
    days = ((block_at[hit] - scored_at).dt.total_seconds() / DAY_S).to_numpy()
    out: dict[str, Any] = {"flagged": int(flagged.sum()), "flagged_then_blocked": int(hit.sum()),
                           "confirmed": int(block_at.notna().sum())}
    if len(days):
        out.update(median_days=float(np.median(days)), mean_days=float(days.mean()),
                   p25_days=float(np.percentile(days, 25)), p75_days=float(np.percentile(days, 75)))
    out["caught_early_share"] = out["flagged_then_blocked"] / out["confirmed"] if out["confirmed"] else float("nan")
    return out


def run_backtest(past: Any, current: GraphFrame, cfg: ModelConfig, conv: str = "edge",
                 truth: pd.DataFrame | None = None, log: Log = print) -> dict[str, Any]:
    """``past`` is a ``pipeline.Prepared`` of the past snapshot with labels built as of the past."""
    t, tg = past.tensors, past.targets
    scored_at = _utc(past.frame.as_of)
    known = ~np.isnan(tg.y)
    tr, va = known & (tg.split == "train"), known & (tg.split == "val")
    vf = past.frame.vertices[tg.label]
    blocked_then = vf["blocked"].to_numpy(dtype=float) == 1.0 if "blocked" in vf else np.zeros(len(vf), bool)
    sel = ~blocked_then
    nodes, ids = past.nodes[sel], tg.ids[sel]
    log(f"back-test: training on the snapshot as of {scored_at:%Y-%m-%d}, scoring {len(nodes):,} customers "
        f"not blocked then")
    models = {}
    thresholds = {}
    for name, c in (("model", conv), ("rgcn_ablation", "rgcn")):
        res = train(t, tg, cfg, conv=c, log=lambda _: None)
        models[name] = predict(res.model, t, nodes, cfg, mode=res.mode)
        thresholds[name] = res.threshold
        log(f"  {name}: best epoch {res.best_epoch}, {res.seconds:.0f} s")
    gbdt = GBDTBaseline(cfg).fit(t, past.nodes[tr], tg.y[tr], past.nodes[va], tg.y[va])
    models["gbdt_baseline"] = gbdt.predict(t, nodes)
    models["neighbour_rule"] = neighbour_block_scores(past.frame, tg.label).reindex(ids).to_numpy(dtype=float)
    block_at = confirmed_after(current, scored_at, tg.label).reindex(ids)
    targets = {"confirmed_by_T": block_at.notna().to_numpy(dtype=float)}
    if truth is not None:
        targets["truth"] = truth_at(truth, scored_at, tg.label).reindex(ids).to_numpy(dtype=float)
    views = {}
    for target, y in targets.items():
        has = ~np.isnan(y)
        views[target] = {name: summary(y[has], s[has]) for name, s in models.items()}
    lead = {name: lead_times(models[name] >= thresholds[name], block_at, scored_at) for name in thresholds}
    for name in lead:
        flagged = models[name] >= thresholds[name]
        for target, y in targets.items():
            f = flagged & ~np.isnan(y)
            lead[name][f"precision_vs_{target}"] = float(y[f].mean()) if f.any() else float("nan")
    current_as_of = _utc(current.as_of)
    return {"scored_at": scored_at.isoformat(), "current_as_of": current_as_of.isoformat(),
            "horizon_days": (current_as_of - scored_at).total_seconds() / DAY_S, "scored": len(nodes),
            "views": views, "lead_time": lead, "thresholds": thresholds}
