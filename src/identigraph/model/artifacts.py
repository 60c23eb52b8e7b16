"""MODEL_DIR: everything needed to score, and nothing from the training code path.

Layout: ``model.pt`` (weights + network hyper-parameters), ``encoder.json`` (fitted features),
``config.json`` (the training configuration), ``metrics.json`` (threshold, validation/test figures,
baselines), ``model_card.md``. The version is a content hash of the weights and encoder, so two
directories with the same version score identically.

Loading builds the network from its hyper-parameters and the encoder from its JSON; serving imports only
this module, ``frame`` and ``features`` — the same feature code that training used.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from identigraph.errors import SchemaError
from identigraph.etl.snapshot import staged
from identigraph.model.features import FeatureEncoder, GraphTensors, mask_labels
from identigraph.model.frame import GraphFrame
from identigraph.model.nets import FraudGNN
from identigraph.model.request_path import RequestEncoder, RequestGraph


def save_model(out: Path, model: FraudGNN, encoder: FeatureEncoder, config: dict[str, Any],
               metrics: dict[str, Any], card: str) -> str:
    """Write MODEL_DIR atomically (a half-written model is never served); returns the version."""
    out = Path(out)
    buf = io.BytesIO()
    torch.save({"hparams": model.hparams, "state_dict": model.state_dict()}, buf)
    enc = json.dumps(encoder.to_dict(), sort_keys=True)
    version = hashlib.sha256(buf.getvalue() + enc.encode()).hexdigest()[:12]
    metrics = {**metrics, "version": version, "created_at": datetime.now(timezone.utc).isoformat()}
    with staged(out, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "model.pt").write_bytes(buf.getvalue())
        (tmp / "encoder.json").write_text(enc)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=str))
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        (tmp / "model_card.md").write_text(card.replace("{version}", version))
    return version


def _normalised(values: np.ndarray) -> np.ndarray:
    top = np.abs(values).max() if len(values) else 0.0
    return values / top if top > 0 else np.zeros_like(values)


@dataclass
class LoadedModel:
    """A trained model as every consumer needs it (CLI, API, back-test): the same encoder, threshold and
    masking everywhere, so a score means the same thing wherever it is computed."""

    model: FraudGNN
    encoder: FeatureEncoder
    threshold: float
    version: str
    metrics: dict[str, Any]
    path: Path

    @classmethod
    def load(cls, model_dir: Path, threads: int | None = 1) -> LoadedModel:
        """``threads``: torch intra-op threads for this process (None leaves them alone).

        Scoring runs on neighbourhoods of a few hundred nodes, where one thread is several times faster
        than two fighting over tiny matmuls (see ``train.cpu_threads``); parallelism comes from requests.
        """
        if threads:
            torch.set_num_threads(threads)
        model_dir = Path(model_dir)
        try:
            blob = torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True)
            encoder = FeatureEncoder.from_dict(json.loads((model_dir / "encoder.json").read_text()))
            metrics = json.loads((model_dir / "metrics.json").read_text())
        except (OSError, ValueError, KeyError) as exc:
            raise SchemaError(f"{model_dir} is not a model directory: {exc}") from None
        model = FraudGNN(**{"edge_gate": "sigmoid", **blob["hparams"]})  # saved before the gate was a choice
        model.load_state_dict(blob["state_dict"])
        model.eval()
        return cls(model=model, encoder=encoder, threshold=float(metrics["threshold"]), version=metrics["version"],
                   metrics=metrics, path=model_dir)

    def tensors(self, frame: GraphFrame) -> GraphTensors:
        return self.encoder.transform(frame)

    @cached_property
    def request_encoder(self) -> RequestEncoder:
        return RequestEncoder(self.encoder)

    def _forward(self, t: GraphTensors, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        ei, et, ea = t.edge_index, t.edge_type, t.edge_attr
        if keep is not None:
            ei, et, ea = ei[:, keep], et[keep], ea[keep]
        return torch.sigmoid(self.model(x, ei, et, ea))

    def _index(self, t: GraphTensors, customer_vids: list[str]) -> np.ndarray:
        idx = t.index_of(customer_vids)
        missing = [v for v, i in zip(customer_vids, idx, strict=True) if np.isnan(float(i))]
        if missing:
            raise SchemaError(f"not in the scored graph: {missing[:3]}")
        return idx.astype(np.int64)

    @torch.no_grad()
    def score(self, frame: GraphFrame, customer_vids: list[str]) -> np.ndarray:
        """Probabilities for the given vertices, each with its own label-derived inputs hidden."""
        t = self.tensors(frame)
        idx = self._index(t, customer_vids)
        return self._forward(t, mask_labels(t, idx))[torch.as_tensor(idx)].numpy()

    def score_request(self, graph: RequestGraph) -> tuple[float, GraphTensors, int]:
        """The API's path: request encoder, then the seed-only forward. Returns (score, tensors, seed index)."""
        t = self.request_encoder.transform(graph)
        score, i = self.score_seed(t, graph.seed)
        return score, t, i

    @torch.no_grad()
    def score_seed(self, t: GraphTensors, vid: str) -> tuple[float, int]:
        """One vertex's probability with its own label-derived inputs hidden: the seed-only forward."""
        i = int(self._index(t, [vid])[0])
        layers = t.layer_edges(len(self.model.convs), i)
        logit = self.model(mask_labels(t, np.array([i])), t.edge_index, t.edge_type, t.edge_attr, targets=torch.tensor([i]),
                           layer_edges=layers)
        return float(torch.sigmoid(logit)[0]), i

    def explain(self, frame: GraphFrame, customer_vid: str, top_k: int = 10) -> dict[str, Any]:
        t = self.tensors(frame)
        return self.explain_tensors(t, int(self._index(t, [customer_vid])[0]), top_k)

    def explain_tensors(self, t: GraphTensors, i: int, top_k: int = 10) -> dict[str, Any]:
        """Cheap attributions: connection occlusion and gradient × input on the customer's own features.

        Occlusion removes one of the customer's links (both directions) and re-scores: the drop is that
        connection's impact. All occlusions run as one batched forward (one copy of the graph per link,
        seed-only), and the gradient comes from ``torch.autograd.grad``, which leaves the served module's
        parameters untouched: concurrent requests explain the same shared model.
        """
        target = torch.tensor([i])
        x = mask_labels(t, np.array([i])).requires_grad_(True)
        score = torch.sigmoid(self.model(x, t.edge_index, t.edge_type, t.edge_attr, targets=target))[0]
        (grad,) = torch.autograd.grad(score, x)
        grad_input = (grad[i] * x[i]).detach().numpy()
        base = float(score.detach())
        names = self.encoder.feature_names()
        order = np.argsort(-np.abs(grad_input))[:top_k]
        gi_norm = _normalised(grad_input)
        features = [{"name": names[j], "impact": float(grad_input[j]), "impact_norm": float(gi_norm[j])}
                    for j in order if grad_input[j] != 0]
        conns = self._occlusions(t, i, x.detach(), base)
        impacts = _normalised(np.array([c["impact"] for c in conns], dtype=float))
        for c, n in zip(conns, impacts, strict=True):
            c["impact_norm"] = float(n)
        conns.sort(key=lambda c: -abs(c["impact"]))
        return {"score": base, "connections": conns[:top_k], "features": features}

    @torch.no_grad()
    def _occlusions(self, t: GraphTensors, i: int, x0: torch.Tensor, base: float) -> list[dict[str, Any]]:
        ei = t.edge_index
        mine = ((ei[0] == i) | (ei[1] == i)).nonzero().view(-1)
        other = torch.where(ei[0, mine] == i, ei[1, mine], ei[0, mine])
        neighbours = torch.unique(other)
        k, n, m = len(neighbours), x0.size(0), ei.size(1)
        if k == 0:
            return []
        # copy c of the graph lacks the links between the customer and neighbours[c]
        keep = torch.ones(k, m, dtype=torch.bool)
        for c, nb in enumerate(neighbours.tolist()):
            keep[c, mine[other == nb]] = False
        copies, edges = keep.nonzero(as_tuple=True)
        batched = ei[:, edges] + copies * n
        scores = torch.sigmoid(self.model(x0.repeat(k, 1), batched, t.edge_type[edges], t.edge_attr[edges],
                                          targets=torch.arange(k) * n + i))
        out = []
        for c, nb in enumerate(neighbours.tolist()):
            rel = t.relations[int(t.edge_type[mine[other == nb][0]])].split("|")[1].removeprefix("rev_")
            out.append({"identifier_id": str(t.node_ids[nb]), "relation": rel, "impact": base - float(scores[c])})
        return out
