"""Training modes beyond the default: sampled mini-batches, and DDP on CPU (gloo, two processes)."""

from __future__ import annotations

import copy
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

TOY_CONFIG = {"training.epochs": 40, "training.patience": 40, "split": "stratified", "training.batch_size": 32,
              "network.dropout": 0.0}


def _toy(n_rings: int = 8, n_homes: int = 40):
    customers, links = ring_and_households(n_rings, n_homes)
    frame = make_frame(customers, links)
    enc = FeatureEncoder(LABEL_COLS).fit(frame)
    t = enc.transform(frame)
    cfg = load_model_config(overrides=TOY_CONFIG)
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


def test_weight_averaging_keeps_the_moving_average_and_still_learns():
    t, targets, _ = _toy()
    nodes = t.index_of(targets.ids).astype(np.int64)

    def config(**sets):
        return load_model_config(overrides={**TOY_CONFIG, **sets})

    # an average that barely moves (decay ~1) is validated and kept: the epoch-1 weights, whichever epoch it
    # is picked at, where the raw weights win at a later epoch on labels that reward chasing noise
    noisy = copy.deepcopy(targets)
    noisy.y = np.random.default_rng(0).permutation(targets.y)
    first = train(t, noisy, config(**{"training.epochs": 1, "training.patience": 1}), mode="full")
    raw = train(t, noisy, config(), mode="full")
    frozen = train(t, noisy, config(**{"training.ema_decay": 0.999999}), mode="full")
    assert raw.best_epoch > 1
    w1, wf, wr = (r.model.state_dict() for r in (first, frozen, raw))
    assert w1.keys() == wf.keys()
    assert all(torch.allclose(w1[k].float(), wf[k].float(), atol=1e-5) for k in w1)
    assert not all(torch.allclose(w1[k].float(), wr[k].float(), atol=1e-5) for k in w1)
    ema_cfg = config(**{"training.ema_decay": 0.9})
    learnt = train(t, targets, ema_cfg, mode="full")
    assert summary(targets.y, predict(learnt.model, t, nodes, ema_cfg))["auroc"] > 0.95
