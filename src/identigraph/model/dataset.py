"""Targets and splits: which nodes are labelled what, and which of them train, validate and test.

Targets come from the labeling job's ``labels.csv`` (empty label = unknown, never silently 0) or, for any
graph, from a vertex property (``--target LABEL.PROPERTY``, like Neptune ML). The split is by time when the
target label has a time property — the model is always asked about accounts newer than those it learned
from, as in production — and stratified otherwise. Cut-offs are quantiles of the *labelled* nodes, but every
node of the target label falls into a split by its time, so the test split also holds unlabelled nodes that
an evaluation against ground truth can use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from identigraph.errors import SchemaError
from identigraph.model.config import ModelConfig
from identigraph.model.frame import GraphFrame


@dataclass
class Targets:
    """Per-node labels and splits of the target vertices, aligned with the frame so tensors index them directly."""
    label: str                   # vertex label of the target nodes
    ids: np.ndarray              # vertex ids of all target-label nodes (frame order)
    y: np.ndarray                # float, NaN = unknown
    split: np.ndarray            # "train" | "val" | "test" per node
    kind: str                    # time | stratified | given


def parse_target(spec: str) -> tuple[str, str]:
    """``LABEL.PROPERTY`` split, with a message a user can act on when it is malformed."""
    if spec.count(".") != 1 or not all(spec.split(".")):
        raise SchemaError(f"--target must look like LABEL.PROPERTY (e.g. customer.blocked), not {spec!r}")
    label, prop = spec.split(".")
    return label, prop


def targets_from_property(frame: GraphFrame, spec: str) -> tuple[str, pd.Series]:
    """Labels read from a vertex property (e.g. ``customer.blocked``) when no labels job ran."""
    label, prop = parse_target(spec)
    if label not in frame.vertices:
        raise SchemaError(f"--target {spec}: no vertices labelled {label!r} (have {sorted(frame.vertices)})")
    vf = frame.vertices[label]
    if prop not in vf:
        raise SchemaError(f"--target {spec}: {label} vertices have no property {prop!r}")
    values = pd.to_numeric(vf[prop], errors="coerce")
    bad = values.notna() & ~values.isin([0.0, 1.0])
    if bad.any():
        raise SchemaError(f"--target {spec}: values must be 0/1/true/false/empty; {vf.index[bad][0]} has {vf[prop][bad].iloc[0]!r}")
    return label, values.astype(float)


def targets_from_labels(frame: GraphFrame, labels_dir: Path, label: str = "customer") -> pd.Series:
    """Labels from the labeling job's labels.csv, aligned with the frame's vertices (NaN where unknown)."""
    path = Path(labels_dir) / "labels.csv"
    if not path.exists():
        raise SchemaError(f"{labels_dir}: labels.csv is missing (run `identigraph label` first)")
    table = pd.read_csv(path, dtype={"customer_id": str, "label": "Float64"}, keep_default_na=True)
    if not {"customer_id", "label"} <= set(table.columns):
        raise SchemaError(f"{path}: needs columns customer_id and label")
    series = pd.Series(table["label"].astype(float).to_numpy(), index=f"{label}:" + table["customer_id"])
    return series.reindex(frame.vertices[label].index).astype(float)


def make_split(frame: GraphFrame, label: str, y: pd.Series, cfg: ModelConfig) -> tuple[np.ndarray, str]:
    """Train/val/test by the time property where configured or available (no future in training), else stratified."""
    vf = frame.vertices[label]
    n = len(vf)
    known = y.notna().to_numpy()
    if known.sum() < 10 or len(np.unique(y[known])) < 2:
        raise SchemaError(f"need at least 10 labelled {label} nodes of both classes, have {int(known.sum())}")
    f_train, f_val, _ = cfg.split_fractions
    kind = cfg.split
    tp = cfg.time_property
    has_time = tp is not None and tp in vf and vf[tp].notna().mean() > 0.5
    if kind == "time" and not has_time:
        raise SchemaError(f"split: time needs the time property {tp!r} on {label} vertices")
    if kind == "auto":
        kind = "time" if has_time else "stratified"
    split = np.full(n, "test", dtype=object)
    if kind == "time":
        ts = (pd.to_datetime(vf[tp], utc=True) - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
        cut1, cut2 = np.nanquantile(ts[known], [f_train, f_train + f_val])
        split[:] = np.where(ts <= cut1, "train", np.where(ts <= cut2, "val", "test"))
        split[np.isnan(ts)] = "train"  # no time: cannot be "the future", so never in val/test
    else:
        idx = np.flatnonzero(known)
        yk = y.to_numpy()[known]
        tr, rest = train_test_split(idx, train_size=f_train, stratify=yk, random_state=cfg.training.seed)
        va, _ = train_test_split(rest, train_size=f_val / (1 - f_train), stratify=y.to_numpy()[rest],
                                 random_state=cfg.training.seed)
        split[tr] = "train"
        split[va] = "val"
    return split, kind


def build_targets(frame: GraphFrame, cfg: ModelConfig, labels_dir: Path | None = None,
                  target: str | None = None, split: np.ndarray | None = None) -> Targets:
    """The training targets from the labeling job's labels or a vertex property (exactly one), with their split."""
    if (labels_dir is None) == (target is None):
        raise SchemaError("give exactly one of --labels DIR or --target LABEL.PROPERTY")
    if target is not None:
        label, y = targets_from_property(frame, target)
    else:
        label = cfg.target_label
        assert labels_dir is not None  # exactly one of the two, checked above
        y = targets_from_labels(frame, labels_dir, label)
    if split is None:
        split, kind = make_split(frame, label, y, cfg)
    else:
        kind = "given"
    return Targets(label=label, ids=frame.vertices[label].index.to_numpy(), y=y.to_numpy(dtype=float),
                   split=np.asarray(split, dtype=object), kind=kind)
