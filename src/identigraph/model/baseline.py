"""The gradient-boosting baseline the GNN has to beat: own features + neighbour-aggregated features.

GADBench found that a GBDT over a node's features plus aggregates of its neighbours' ("XGBGraph") is as
good as most GNNs on fraud graphs, so this baseline is made strong on purpose:
- own activity and structure (the same encoded features the GNN gets, own label-derived columns removed);
- 1-hop: mean/max of each linked identifier's features (degree, age of first use, recency), per relation;
- 2-hop, *other* customers through each relation: mean/max of their features, label-derived ones included
  ("shares a card with blocked accounts"), computed as (sum over the identifier − self) / (degree − 1) so a
  customer's own block never reaches its own row;
- edge features per relation (mean/max): how recently, how often, how long after creation.
"""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pandas as pd
import torch
from torch_geometric.utils import scatter

from identigraph.model.config import ModelConfig
from identigraph.model.features import GraphTensors
from identigraph.model.frame import GraphFrame


def graph_features(t: GraphTensors, nodes: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The GADBench "XGBGraph" view of a node as one flat row (see the module docstring), with column names."""
    x = t.x
    n = x.shape[0]
    own_keep = torch.ones(x.shape[1], dtype=torch.bool)
    own_keep[t.label_cols] = False
    own_keep[t.mask_col] = False
    blocks, names = [x[:, own_keep]], [f"own[{j}]" for j in own_keep.nonzero().view(-1).tolist()]
    ei, et = t.edge_index, t.edge_type
    for r, rel in enumerate(t.relations):
        sel = (et == r).nonzero().view(-1)
        if sel.numel() == 0:
            continue
        src, dst = ei[0, sel], ei[1, sel]
        # 1-hop: the linked nodes' own features and the links' features
        for reduce in ("mean", "max"):
            blocks.append(scatter(x[src], dst, dim=0, dim_size=n, reduce=reduce))
            names += [f"{rel}:nbr_{reduce}[{j}]" for j in range(x.shape[1])]
            blocks.append(scatter(t.edge_attr[sel], dst, dim=0, dim_size=n, reduce=reduce))
            names += [f"{rel}:edge_{reduce}[{j}]" for j in range(t.edge_attr.shape[1])]
        # 2-hop through this relation's source nodes, excluding self: rel is U -> T, its edges (u, t)
        total = scatter(x[dst], src, dim=0, dim_size=n, reduce="sum")
        deg = scatter(torch.ones_like(src, dtype=x.dtype), src, dim=0, dim_size=n, reduce="sum")
        others = (total[src] - x[dst]) / (deg[src] - 1).clamp(min=1).unsqueeze(1)
        has_others = (deg[src] > 1).to(x.dtype).unsqueeze(1)
        for reduce in ("mean", "max"):
            blocks.append(scatter(others * has_others, dst, dim=0, dim_size=n, reduce=reduce))
            names += [f"{rel}:others_{reduce}[{j}]" for j in range(x.shape[1])]
        blocks.append(scatter((deg[src] - 1).clamp(min=0), dst, dim=0, dim_size=n, reduce="sum").unsqueeze(1))
        names.append(f"{rel}:n_others")
    feats = torch.cat(blocks, dim=1)[torch.as_tensor(nodes, dtype=torch.long)]
    return feats.numpy(), names


class GBDTBaseline:
    """LightGBM on :func:`graph_features`: the strong tabular yardstick the GNN has to beat."""

    def __init__(self, cfg: ModelConfig) -> None:
        b = cfg.baseline
        self.model = lgb.LGBMClassifier(n_estimators=b.n_estimators, learning_rate=b.learning_rate,
                                        num_leaves=b.num_leaves, min_child_samples=b.min_child_samples,
                                        subsample=0.8, subsample_freq=1, colsample_bytree=0.5,
                                        random_state=cfg.training.seed, n_jobs=2, verbose=-1)

    def fit(self, t: GraphTensors, train_nodes: np.ndarray, y: np.ndarray, val_nodes: np.ndarray,
            y_val: np.ndarray) -> GBDTBaseline:
        xt, _ = graph_features(t, train_nodes)
        xv, _ = graph_features(t, val_nodes)
        pos = max(float(y.sum()), 1.0)
        self.model.set_params(scale_pos_weight=min(20.0, (len(y) - pos) / pos))
        # eval_X/eval_y, not eval_set: LightGBM 4.7 deprecates eval_set (same validation set, same result)
        self.model.fit(xt, y, eval_X=xv, eval_y=y_val, eval_metric="average_precision",
                       callbacks=[lgb.early_stopping(50, verbose=False)])
        return self

    def predict(self, t: GraphTensors, nodes: np.ndarray) -> np.ndarray:
        xs, _ = graph_features(t, nodes)
        return np.asarray(self.model.predict_proba(xs))[:, 1]


def neighbour_block_scores(frame: GraphFrame, label: str = "customer", max_customers: int = 50) -> pd.Series:
    """The rule a fraud team writes first: "shares an identifier with customers blocked for fraud".

    Score = the highest share of *other* customers blocked for fraud on any of the customer's identifiers
    with at most ``max_customers`` customers (the hub guard of the labeling rules), plus 0.001 × their count
    to break ties. It is the calibration yardstick of the synthetic world: where it alone finds the hidden
    fraud, the world measures label propagation, not models.
    """
    vf = frame.vertices[label]
    blocked = vf["blocked"].to_numpy(dtype=float) == 1.0 if "blocked" in vf else np.zeros(len(vf), bool)
    fraud = (vf["last_block_reason"] == "fraud").to_numpy() if "last_block_reason" in vf else np.zeros(len(vf), bool)
    bad = pd.Series((blocked & fraud).astype(float), index=vf.index)
    best = pd.Series(0.0, index=vf.index)
    for (src, _, _), e in frame.edges.items():
        if src != label or len(e) == 0:
            continue
        own = e["src"].map(bad).fillna(0.0)
        by = own.groupby(e["dst"].to_numpy())
        deg = by.transform("size").to_numpy(dtype=float)
        bad_on = by.transform("sum").to_numpy()
        own = own.to_numpy()
        others = deg - 1
        ok = (deg <= max_customers) & (others > 0)
        score = np.where(ok, (bad_on - own) / np.maximum(others, 1) + 1e-3 * (bad_on - own), 0.0)
        per = pd.Series(score, index=e["src"].to_numpy()).groupby(level=0).max()
        best = np.maximum(best, per.reindex(best.index).fillna(0.0))
    return best
