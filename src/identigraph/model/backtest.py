"""Temporal back-test: would the model have caught, 60 days ago, the fraud the platform has confirmed since?

A hold-out split asks how well a model ranks labels it could have learnt from. The product question is
different: *train on what was known at T − 60 days, score everyone who was not blocked then, and see who the
platform went on to block* — and how many days earlier the model said so. So:

- the model (same configuration and conv), the plain-RGCN ablation, the GBDT baseline and the neighbour-
  block rule are all trained/fitted on the past snapshot and the labels built as of the past;
- they score every customer of the past snapshot **not blocked at the past as-of**;
- targets: **confirmed by T** — a fraud block after the past as-of that still stands in the current
  snapshot (what the platform itself found), and, when ground truth exists, **truth** — fraud that had begun
  by the past as-of (a takeover that starts later was an honest account when it was scored) — and
  **confirmed fraud by T**, the two together: the platform's later blocks that were right and could have been
  seen at the past as-of. The platform's recent blocks are the least reviewed (a wrong block is lifted only
  after a contest), so "confirmed by T" can be mostly wrong blocks and future takeovers; ``confirmations``
  says how many of each, and a model that ignores them is right to;
- **lead time**: for customers the model flagged at its own threshold (chosen on the past validation split
  for precision 0.85) and the platform then blocked, days from the past as-of (when the model scored them)
  to the platform's block — over all later blocks, and (``*_fraud`` keys, with truth) over the right ones.
  The back-test scores once, so the flag date is the past as-of for everyone.
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


def lead_times(flagged: np.ndarray, block_at: pd.Series, scored_at: pd.Timestamp, suffix: str = "") -> dict[str, Any]:
    """Days between the flag (the past as-of) and the platform's block, over flagged customers later blocked;
    ``suffix`` names the keys of a narrower set of blocks (``_fraud``: the right ones)."""
    hit = flagged & block_at.notna().to_numpy()
    days = ((block_at[hit] - scored_at).dt.total_seconds() / DAY_S).to_numpy()
    out: dict[str, Any] = {"flagged": int(flagged.sum()), "flagged_then_blocked": int(hit.sum()),
                           "confirmed": int(block_at.notna().sum())}
    if len(days):
        out.update(median_days=float(np.median(days)), mean_days=float(days.mean()),
                   p25_days=float(np.percentile(days, 25)), p75_days=float(np.percentile(days, 75)))
    out["caught_early_share"] = out["flagged_then_blocked"] / out["confirmed"] if out["confirmed"] else float("nan")
    return {k if k == "flagged" else k + suffix: v for k, v in out.items()}


def confirmations(block_at: pd.Series, truth: pd.DataFrame, scored_at: pd.Timestamp, label: str) -> dict[str, int]:
    """What the platform's later blocks were, by the truth: fraud visible at the back-test date, fraud that
    began after it (a takeover of a then-honest account), and honest customers (wrong blocks)."""
    ids = block_at.index[block_at.notna().to_numpy()]
    ever = pd.Series(truth["is_fraud"].astype(int).to_numpy() == 1,
                     index=f"{label}:" + truth["customer_id"].astype(str)).reindex(ids).fillna(False)
    begun = truth_at(truth, scored_at, label).reindex(ids).fillna(0.0) == 1.0
    return {"confirmed": len(ids), "fraud_begun_by_then": int(begun.sum()),
            "fraud_begun_after": int((ever & ~begun).sum()), "honest": int((~ever).sum())}


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
    fraud_block_at = None
    if truth is not None:
        targets["truth"] = truth_at(truth, scored_at, tg.label).reindex(ids).to_numpy(dtype=float)
        fraud_block_at = block_at.where(targets["truth"] == 1.0)
        targets["confirmed_fraud_by_T"] = fraud_block_at.notna().to_numpy(dtype=float)
    views = {}
    for target, y in targets.items():
        has = ~np.isnan(y)
        views[target] = {name: summary(y[has], s[has]) for name, s in models.items()}
    lead = {name: lead_times(models[name] >= thresholds[name], block_at, scored_at) for name in thresholds}
    for name in lead:
        flagged = models[name] >= thresholds[name]
        if fraud_block_at is not None:
            lead[name].update(lead_times(flagged, fraud_block_at, scored_at, suffix="_fraud"))
        for target, y in targets.items():
            f = flagged & ~np.isnan(y)
            lead[name][f"precision_vs_{target}"] = float(y[f].mean()) if f.any() else float("nan")
    current_as_of = _utc(current.as_of)
    out = {"scored_at": scored_at.isoformat(), "current_as_of": current_as_of.isoformat(),
           "horizon_days": (current_as_of - scored_at).total_seconds() / DAY_S, "scored": len(nodes),
           "views": views, "lead_time": lead, "thresholds": thresholds}
    if truth is not None:
        out["confirmations"] = confirmations(block_at, truth, scored_at, tg.label)
    return out
