"""Training modes beyond the default: sampled mini-batches, and DDP on CPU (gloo, two processes)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from identigraph.model.config import load_model_config
from identigraph.model.dataset import build_targets
from identigraph.model.features import FeatureEncoder
from identigraph.model.metrics import summary
from identigraph.model.train import predict, train
from model_graphs import make_frame
from test_model_units import LABEL_COLS, ring_and_households


def _toy(n_rings: int = 8, n_homes: int = 40):
    customers, links = ring_and_households(n_rings, n_homes)
    frame = make_frame(customers, links)
    enc = FeatureEncoder(LABEL_COLS).fit(frame)
    t = enc.transform(frame)
    cfg = load_model_config(overrides={"training.epochs": 40, "training.patience": 40, "split": "stratified",
                                       "training.batch_size": 32, "network.dropout": 0.0})
    targets = build_targets(frame, cfg, target="customer.blocked")
    # learnable target: ring membership (rings are structurally obvious)
    targets.y = np.asarray(frame.vertices["customer"].index.str.startswith("customer:r"), dtype=float)
    return t, targets, cfg


def test_sampled_minibatch_training_learns_the_toy_graph():
    t, targets, cfg = _toy()
    res = train(t, targets, cfg, mode="sampled")
    assert res.mode == "sampled"
    nodes = t.index_of(targets.ids).astype(np.int64)
    scores = predict(res.model, t, nodes, cfg, mode="sampled")
    assert np.isfinite(scores).all()
    assert summary(targets.y, scores)["auroc"] > 0.95


def _ddp_worker(rank: int, world: int, init_file: str, out: dict) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        t, targets, cfg = _toy()
        cfg.training.epochs = 3
        res = train(t, targets, cfg)
        digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in res.model.parameters())).hexdigest()
        out[rank] = (res.mode, digest, len(res.history))
    finally:
        dist.destroy_process_group()


def test_ddp_on_cpu_with_gloo_two_processes_ends_with_identical_weights(tmp_path):
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True)
    assert set(out.keys()) == {0, 1}
    (mode0, w0, epochs0), (mode1, w1, epochs1) = out[0], out[1]
    assert mode0 == mode1 == "sampled"
    assert w0 == w1 and epochs0 == epochs1 == 3  # gradients were averaged: both ranks hold the same model
