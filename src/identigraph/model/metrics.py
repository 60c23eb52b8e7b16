"""The figures every model, ablation and baseline is judged by, computed one way for all of them."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score


def recall_at_precision(y: np.ndarray, score: np.ndarray, precision: float) -> float:
    """How much fraud a team finds when it can only afford ``precision`` (0 if never reached)."""
    p, r, _ = precision_recall_curve(y, score)
    ok = p >= precision
    return float(r[ok].max()) if ok.any() else 0.0


def precision_at_recall(y: np.ndarray, score: np.ndarray, recall: float) -> float:
    """How clean the queue is when a team must find ``recall`` of the fraud (0 if never reached)."""
    p, r, _ = precision_recall_curve(y, score)
    ok = r >= recall
    return float(p[ok].max()) if ok.any() else 0.0


def threshold_for_precision(y: np.ndarray, score: np.ndarray, precision: float) -> tuple[float, bool]:
    """Lowest threshold whose precision reaches the target (most recall); else the best-F1 threshold.

    The flag says whether the target was reached, so the model card can say so instead of pretending.
    """
    p, r, t = precision_recall_curve(y, score)
    p, r = p[:-1], r[:-1]  # the last point has no threshold
    ok = p >= precision
    if ok.any():
        return float(t[ok].min()), True
    f1 = 2 * p * r / np.maximum(p + r, 1e-12)
    return float(t[int(np.argmax(f1))]) if len(t) else 0.5, False


def summary(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """The one row every scorer is reported with, so tables compare like with like (NaN: one class only)."""
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    if y.min() == y.max():
        return {"n": len(y), "positives": int(y.sum()), "auroc": float("nan"), "auprc": float("nan"),
                "recall_at_p85": float("nan"), "recall_at_p90": float("nan"), "precision_at_r50": float("nan")}
    return {
        "n": len(y), "positives": int(y.sum()),
        "auroc": float(roc_auc_score(y, score)), "auprc": float(average_precision_score(y, score)),
        "recall_at_p85": recall_at_precision(y, score, 0.85),
        "recall_at_p90": recall_at_precision(y, score, 0.90),
        "precision_at_r50": precision_at_recall(y, score, 0.5),
    }


def by_group(y: np.ndarray, score: np.ndarray, groups: np.ndarray, precision: float) -> dict[str, dict[str, float]]:
    """Per kind of positive (a fraud scenario), how it ranks against every negative (AUROC) and how much of it
    the queue at ``precision`` over all kinds holds: a model can win on average and miss one scenario whole."""
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    if y.min() == y.max():
        return {}
    cut, reached = threshold_for_precision(y, score, precision)
    flagged = score >= cut if reached else np.zeros(len(y), bool)
    neg = y == 0
    out = {}
    for g in sorted(set(np.asarray(groups)[y == 1].tolist())):
        pos = (y == 1) & (groups == g)
        both = pos | neg
        out[str(g)] = {"positives": int(pos.sum()), "auroc": float(roc_auc_score(y[both], score[both])),
                       "recall_in_queue": float(flagged[pos].mean())}
    return out
