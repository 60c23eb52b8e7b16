"""Training: full-batch when the graph fits, sampled mini-batches otherwise, DDP under torchrun.

Choices that matter for fraud:
- **Own labels hidden.** Each step hides the label-derived inputs of the nodes it is scored on (the
  "label trick"), so the model learns from neighbours' blocks, never from the node's own.
- **Imbalance** by a capped positive weight rather than resampling: resampling a graph changes the
  neighbourhoods the model sees.
- **Early stopping on validation AUPRC**, the metric that tracks "how much fraud at a usable precision".
- **Threshold for a target precision** on validation, flagged when the target was not reachable.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch_geometric.data import Data
from torch_geometric.loader import NodeLoader

from identigraph.model.config import ModelConfig
from identigraph.model.dataset import Targets
from identigraph.model.features import GraphTensors, mask_labels, shortcut_relations
from identigraph.model.metrics import summary, threshold_for_precision
from identigraph.model.nets import FraudGNN
from identigraph.model.sampler import TorchNeighborSampler


def select_device(spec: str = "auto") -> torch.device:
    """The torch device for ``--device``; asking for CUDA where there is none is an error, not a silent CPU run."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(spec)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda requested but no CUDA device is available")
    return device


@dataclass
class TrainResult:
    """A trained model with what the metrics file and the tuner record about how it was trained."""
    model: FraudGNN
    conv: str
    best_epoch: int
    threshold: float
    threshold_reached: bool
    history: list[dict] = field(default_factory=list)
    val: dict = field(default_factory=dict)
    seconds: float = 0.0
    epoch_seconds: float = 0.0
    device: str = "cpu"
    mode: str = "full"
    peak_memory_mb: float | None = None


def _data(t: GraphTensors) -> Data:
    return Data(x=t.x, edge_index=t.edge_index, edge_attr=t.edge_attr, edge_type=t.edge_type, num_nodes=len(t.x))


def _loader(t: GraphTensors, cfg: ModelConfig, nodes: np.ndarray, shuffle: bool = False) -> NodeLoader:
    """Sampled mini-batches seeded at ``nodes``; the batch's seeds come first (``batch.batch_size`` of them)."""
    data = _data(t)
    tc = cfg.training
    return NodeLoader(data, node_sampler=TorchNeighborSampler(data, tc.num_neighbors, seed=tc.seed),
                      input_nodes=torch.as_tensor(nodes), batch_size=tc.batch_size, shuffle=shuffle)


def _seeds_masked(x: torch.Tensor, t: GraphTensors, batch_size: int) -> torch.Tensor:
    """A sampled batch's inputs with its seeds' own labels hidden (the label trick, as ``mask_labels``)."""
    return mask_labels(t, torch.arange(batch_size), x)


@torch.no_grad()
def predict(model: FraudGNN, t: GraphTensors, nodes: np.ndarray, cfg: ModelConfig,
            device: torch.device | None = None, chunks: int | None = None, mode: str = "full") -> np.ndarray:
    """Probabilities for ``nodes``, each scored with its own labels hidden and its neighbours' visible."""
    with cpu_threads(len(t.x), cfg.training.threads):
        return _predict(model, t, nodes, cfg, device, chunks, mode)


def _predict(model: FraudGNN, t: GraphTensors, nodes: np.ndarray, cfg: ModelConfig,
             device: torch.device | None, chunks: int | None, mode: str) -> np.ndarray:
    device = device or next(model.parameters()).device
    model.eval()
    nodes = np.asarray(nodes, dtype=np.int64)
    out = np.zeros(len(nodes))
    if len(nodes) == 0:
        return out
    if mode == "sampled":
        parts = []
        for batch in _loader(t, cfg, nodes):
            b = batch.to(device)
            x = _seeds_masked(b.x, t, b.batch_size)
            parts.append(torch.sigmoid(model(x, b.edge_index, b.edge_type, b.edge_attr)[: b.batch_size].float()).cpu())
        return torch.cat(parts).numpy()
    chunks = chunks or cfg.training.predict_chunks
    order = np.random.default_rng(cfg.training.seed).permutation(len(nodes))
    ei, et, ea = t.edge_index.to(device), t.edge_type.to(device), t.edge_attr.to(device)
    for part in np.array_split(order, min(chunks, len(nodes))):
        idx = nodes[part]
        x = mask_labels(t, idx).to(device)
        targets = torch.as_tensor(idx, device=device)
        plans = _cached_plans(model, t, ei, et, ea, targets)
        out[part] = torch.sigmoid(model(x, ei, et, ea, targets=targets, plans=plans).float()).cpu().numpy()
    return out


_PLANS: dict[tuple, list] = {}


def _cached_plans(model: FraudGNN, t: GraphTensors, ei: torch.Tensor, et: torch.Tensor, ea: torch.Tensor,
                  targets: torch.Tensor) -> list:
    """Layer plans reused across epochs: validation scores the same nodes of the same graph every epoch."""
    key = (id(t), ei.data_ptr(), ei.shape[1], tuple(model.is_shortcut), len(model.convs),
           hash(targets.cpu().numpy().tobytes()))
    if key not in _PLANS:
        if len(_PLANS) >= 16:
            _PLANS.pop(next(iter(_PLANS)))
        _PLANS[key] = model.plan(ei, et, ea, len(t.x), targets)
    return _PLANS[key]


@contextmanager
def cpu_threads(num_nodes: int, configured: int = 0) -> Iterator[None]:
    """Intra-op threads for this graph size: small graphs run far faster on one thread.

    Measured: 20 epochs on a 250-node graph took 4.6 s with 2 OpenMP threads on a busy 2-core machine
    and 0.35 s with 1 — synchronisation dominates tiny matmuls. Large graphs keep torch's default.
    """
    before = torch.get_num_threads()
    threads = configured or (1 if num_nodes < 50_000 else before)
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(t: GraphTensors, targets: Targets, cfg: ModelConfig, conv: str = "edge", device: str = "auto",
          log: Callable[[str], None] = lambda _: None, mode: str = "auto",
          on_epoch: Callable[[int, float], bool] | None = None) -> TrainResult:
    """``on_epoch(epoch, val_auprc)`` returning False stops training there (a tuner pruning the trial)."""
    with cpu_threads(len(t.x), cfg.training.threads):
        return _train(t, targets, cfg, conv, device, log, mode, on_epoch)


@dataclass
class _Placement:
    """Where training runs and how: the device, whether under DDP, full-batch or sampled."""
    device: torch.device
    distributed: bool
    mode: str


@dataclass
class _Split:
    """Node indices of the labelled targets, and every node's label (NaN where unknown)."""
    y_all: torch.Tensor
    train_idx: np.ndarray
    val_idx: np.ndarray
    target_nodes: np.ndarray


@dataclass
class _Optimiser:
    """What one gradient step needs, shared by the full-batch and sampled epochs."""
    net: torch.nn.Module
    opt: torch.optim.Optimizer
    loss_fn: torch.nn.Module
    use_amp: bool
    rng: np.random.Generator

    def step(self, logits: torch.Tensor, y: torch.Tensor) -> float:
        loss = self.loss_fn(logits.float(), y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return float(loss.item())


def _place(t: GraphTensors, cfg: ModelConfig, device: str, mode: str) -> _Placement:
    dev = select_device(device)
    distributed = dist.is_available() and dist.is_initialized()
    if distributed and dev.type == "cuda":
        dev = torch.device("cuda", torch.cuda.current_device())  # ddp_context pinned this rank's GPU
    if mode == "auto":
        mode = "sampled" if distributed or len(t.x) > cfg.training.full_batch_max_nodes else "full"
    return _Placement(dev, distributed, mode)


def _split(t: GraphTensors, targets: Targets) -> _Split:
    node_of = t.index_of(targets.ids)
    y_all = torch.full((len(t.x),), float("nan"))
    y_all[torch.tensor(node_of)] = torch.tensor(targets.y, dtype=torch.float32)  # copies: inputs may be read-only
    known = ~np.isnan(targets.y)
    train_idx = node_of[known & (targets.split == "train")]
    val_idx = node_of[known & (targets.split == "val")]
    if len(val_idx) == 0 or np.nansum(targets.y[known & (targets.split == "val")]) == 0:
        raise ValueError("the validation split has no positive labels: cannot early-stop or pick a threshold")
    return _Split(y_all, train_idx, val_idx, t.nodes_of(targets.label))


def _shard(train_idx: np.ndarray, seed: int) -> np.ndarray:
    """This rank's equal share of the training nodes: every rank takes the same number of steps."""
    rank, world = dist.get_rank(), dist.get_world_size()
    perm = np.random.default_rng(seed).permutation(train_idx)
    per = len(perm) // world
    return perm[rank * per:(rank + 1) * per]


def _full_epoch(o: _Optimiser, t: GraphTensors, split: _Split, train_idx: np.ndarray, cfg: ModelConfig,
                tensors: tuple[torch.Tensor, ...], y_dev: torch.Tensor, dev: torch.device) -> list[float]:
    """One step on the whole graph: a random ``mask_rate`` share of the training nodes is scored, hidden."""
    tc = cfg.training
    xs, ei, et, ea = tensors
    perm = o.rng.permutation(train_idx)
    masked = perm[: max(1, math.ceil(tc.mask_rate * len(perm)))]
    hidden = masked
    if tc.label_dropout > 0:  # neighbours lose their labels too: structure must carry the signal
        others = split.target_nodes[o.rng.random(len(split.target_nodes)) < tc.label_dropout]
        hidden = np.union1d(masked, others)
    x = mask_labels(t, hidden, xs)
    m = torch.as_tensor(masked, device=dev)
    # only the scored nodes' receptive fields run: the last layer computes the masked half, no more
    with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=o.use_amp):
        logits = o.net(x, ei, et, ea, targets=m)
    return [o.step(logits, y_dev[m])]


def _sampled_epoch(o: _Optimiser, t: GraphTensors, split: _Split, loader: NodeLoader, cfg: ModelConfig,
                   target_label: str, dev: torch.device) -> list[float]:
    """One pass over the training nodes in sampled mini-batches, each batch's seeds hidden."""
    tc = cfg.training
    losses = []
    for batch in loader:
        b = batch.to(dev)
        x = _seeds_masked(b.x, t, b.batch_size)
        if tc.label_dropout > 0:
            is_target = t.node_type[b.n_id.cpu()] == t.type_names.index(target_label)
            drop = (torch.as_tensor(o.rng.random(len(x)) < tc.label_dropout) & is_target).to(x.device)
            drop[: b.batch_size] = False
            x = mask_labels(t, drop.nonzero().view(-1), x)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=o.use_amp):
            logits = o.net(x, b.edge_index, b.edge_type, b.edge_attr)[: b.batch_size]
        losses.append(o.step(logits, split.y_all[b.n_id[: b.batch_size].cpu()].to(dev)))
    return losses


def _train(t: GraphTensors, targets: Targets, cfg: ModelConfig, conv: str, device: str,
           log: Callable[[str], None], mode: str,
           on_epoch: Callable[[int, float], bool] | None = None) -> TrainResult:
    tc = cfg.training
    torch.manual_seed(tc.seed)
    np.random.seed(tc.seed)
    place = _place(t, cfg, device, mode)
    dev, mode = place.device, place.mode
    split = _split(t, targets)
    train_idx, val_idx = split.train_idx, split.val_idx
    y_train = split.y_all[torch.as_tensor(train_idx)]
    pos = float(y_train.sum())
    pos_weight = torch.tensor(min(tc.max_pos_weight, (len(y_train) - pos) / max(pos, 1.0)), device=dev)
    model = FraudGNN(t.x.shape[1], cfg.network.hidden, len(t.relations), t.edge_attr.shape[1],
                     cfg.network.layers, conv, cfg.network.dropout, shortcut_relations=shortcut_relations(t.relations),
                     relation_dropout=tc.relation_dropout, edge_gate=cfg.network.edge_gate,
                     edge_dropout=tc.edge_dropout).to(dev)
    net: torch.nn.Module = model
    if place.distributed:
        net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
        train_idx = _shard(train_idx, tc.seed)
    o = _Optimiser(net, torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay),
                   torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight), tc.amp and dev.type == "cuda",
                   np.random.default_rng(tc.seed))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    y_val = split.y_all[torch.as_tensor(val_idx)].numpy()
    # what is validated and kept: the weights, or their moving average over epochs (same keys either way)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(tc.ema_decay), use_buffers=True) \
        if tc.ema_decay > 0 else None
    kept: FraudGNN = ema.module if ema is not None else model  # type: ignore[assignment]
    best = (-1.0, 0, copy.deepcopy(kept.state_dict()))
    history: list[dict] = []
    started = time.perf_counter()
    epoch_times = []
    if mode == "full":
        tensors = (t.x.to(dev), t.edge_index.to(dev), t.edge_type.to(dev), t.edge_attr.to(dev))
        y_dev = split.y_all.to(dev)
    else:
        loader = _loader(t, cfg, train_idx, shuffle=True)
    for epoch in range(1, tc.epochs + 1):
        net.train()
        t0 = time.perf_counter()
        if mode == "full":
            losses = _full_epoch(o, t, split, train_idx, cfg, tensors, y_dev, dev)
        else:
            losses = _sampled_epoch(o, t, split, loader, cfg, targets.label, dev)
        if ema is not None:
            ema.update_parameters(model)
        epoch_times.append(time.perf_counter() - t0)
        val_scores = predict(kept, t, val_idx, cfg, dev, chunks=1, mode=mode)
        val = summary(y_val, val_scores)
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_auprc": val["auprc"],
                        "seconds": epoch_times[-1]})
        if val["auprc"] > best[0] + tc.min_delta or best[1] == 0:
            best = (val["auprc"], epoch, copy.deepcopy(kept.state_dict()))
        if epoch % 10 == 0 or epoch == 1:
            log(f"epoch {epoch:4d}  loss {history[-1]['loss']:.4f}  val AUPRC {val['auprc']:.4f}  "
                f"({epoch_times[-1]:.2f} s)")
        if epoch - best[1] >= tc.patience:
            log(f"early stop at epoch {epoch}: best validation AUPRC {best[0]:.4f} at epoch {best[1]}")
            break
        if on_epoch is not None and on_epoch(epoch, val["auprc"]) is False:
            log(f"stopped by the caller at epoch {epoch}")
            break
    model.load_state_dict(best[2])
    val_scores = predict(model, t, val_idx, cfg, dev, mode=mode)
    threshold, reached = threshold_for_precision(y_val, val_scores, cfg.target_precision)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return TrainResult(model=model, conv=conv, best_epoch=best[1], threshold=threshold, threshold_reached=reached,
                       history=history, val=summary(y_val, val_scores), seconds=time.perf_counter() - started,
                       epoch_seconds=float(np.median(epoch_times)), device=str(dev), mode=mode, peak_memory_mb=peak)
