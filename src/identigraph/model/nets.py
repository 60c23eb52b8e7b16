"""The edge-aware relational GCN, and the plain RGCN it is measured against.

A plain RGCN sees only *that* a customer used a device. The production system this mirrors found the
signal is in *how*: a card added minutes after signup, a device used once three years after the account was
created, two accounts that joined the same IP within an hour of each other. So each relation's message is
the neighbour's transformed state gated by, and shifted by, the edge's own features::

    m_ij = (W_r h_j) ⊙ (1 + tanh(A_r e_ij + a_r)) + B_r e_ij
    h_i' = W_0 h_i + b + Σ_r mean_{j ∈ N_r(i)} m_ij + M · max_{j ∈ N(i)} m_ij

- **Residual edge terms** (``edge_gate="residual"``): A_r, B_r and a_r start at zero, so the conv starts as the
  plain RGCN and the edges move a message only where that lowers the loss. The earlier gate, σ(A_r e + a_r)
  with A_r random, halved every message at init and lost to the RGCN ablation on the hard worlds; models
  saved with it still load with it (``"sigmoid"``).

- **mean and max**: the mean per relation is RGCN's 1/|N_r(i)| normalisation (a hub does not drown its
  neighbours); the max keeps the one blocked neighbour among many that a mean averages away.
- **Deep and shortcut relations.** Deep relations (customer ⇄ shared identifier) run in every layer.
  Shortcut relations — a customer's *private* identifiers (``own_``, used by nobody else) and *co-links*
  between customers sharing a small identifier (``co_``, whose edge features are pairwise: how far apart
  the two accounts were created and linked) — run only in the last layer, from the source's input
  embedding. That keeps the receptive field at one customer hop (what the API fetches) and takes the
  ~85 % of identifiers that are private out of the message passing.
- **Transform, then gather**: W_r is applied to each distinct source once, then gathered per edge.
- **Only what is needed**: with ``targets``, layer L computes the targets, layer L-1 the sources of their
  deep edges, and so on — the API scores one customer, training scores customers and never pays for
  identifiers' last layer.

``conv="rgcn"`` is the ablation: the same network and aggregation with the edge terms removed, i.e. RGCN's
message ``W_r h_j``. Layers are wrapped with LayerNorm, ReLU, dropout and a residual connection.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

CONVS = ("edge", "rgcn")
# "residual": m = (W_r h) ⊙ (1 + tanh(A e + a)) + B e with A, B, a zero at init — the RGCN's message until the
# edges move it; "sigmoid": the gate before (halves every message at init), kept so saved models load as trained
EDGE_GATES = ("residual", "sigmoid")
# at most this many edges in a layer: messages per edge in a dozen ops instead of a loop over relations
# (the API's request graphs, tens of edges, where the loop's fixed cost per op is the whole forward)
SMALL_GRAPH_EDGES = 2048
# index_reduce is the one scatter-max that needs no [E, d] index copy; its "beta" notice is not news here
warnings.filterwarnings("ignore", message="index_reduce\\(\\) is in beta")


@dataclass
class LayerPlan:
    """One layer's edges, grouped by relation, with everything that does not change between epochs."""

    out_nodes: Tensor | None         # global ids of the nodes this layer computes (None: all)
    counts: list[int]                # edges per relation, in relation order
    src: list[Tensor]                # per relation: distinct sources (rows of the state that relation reads)
    inverse: list[Tensor]            # per relation: edge → position in src
    edge_attr: list[Tensor]          # per relation
    dst: Tensor                      # all edges, relation order: position in out_nodes (or global id)
    key: Tensor                      # dst * R + relation, for per-(node, relation) normalisation and dropout
    norm: Tensor                     # [E, 1] 1 / |N_r(i)|
    num_out: int
    # small layers (≤ SMALL_GRAPH_EDGES edges) only, in the same edge order as dst: (source rows, relations,
    # attributes); the per-relation fields above are then empty
    per_edge: tuple[Tensor, Tensor, Tensor] | None = None
    # per relation: its edges' one attribute row [1, edge_dim] when they all share it (a graph without link
    # properties, e.g. Tolokers), else None — the gate and shift are then one row, folded into W_r
    constant_attr: list[Tensor | None] | None = None


def _positions(nodes: Tensor, num_nodes: int) -> Tensor:
    pos = torch.full((num_nodes,), -1, dtype=torch.long, device=nodes.device)
    pos[nodes] = torch.arange(nodes.numel(), device=nodes.device)
    return pos


def _plan(edge_index: Tensor, edge_type: Tensor, edge_attr: Tensor, num_relations: int, num_nodes: int,
          out_nodes: Tensor | None, src_rows: Tensor | None = None, per_edge: bool | None = None) -> LayerPlan:
    """``src_rows`` (optional): per edge, the row of its source in the state it reads (default: global id);
    ``per_edge``: messages per edge (True) or per relation (False); None: by size (``SMALL_GRAPH_EDGES``)."""
    if out_nodes is not None:
        dst = _positions(out_nodes, num_nodes)[edge_index[1]]
        num_out = out_nodes.numel()
    else:
        dst, num_out = edge_index[1], num_nodes
    src = edge_index[0] if src_rows is None else src_rows
    if per_edge if per_edge is not None else edge_type.numel() <= SMALL_GRAPH_EDGES:
        key = dst * num_relations + edge_type
        deg = torch.bincount(key, minlength=num_out * num_relations)
        norm = (1.0 / deg.index_select(0, key).to(edge_attr.dtype)).unsqueeze(1)
        return LayerPlan(out_nodes=out_nodes, counts=[], src=[], inverse=[], edge_attr=[], dst=dst, key=key,
                         norm=norm, num_out=num_out, per_edge=(src, edge_type, edge_attr))
    order = torch.argsort(edge_type, stable=True)
    counts = torch.bincount(edge_type, minlength=num_relations).tolist()
    srcs, inverses = [], []
    for s in src.index_select(0, order).split(counts):
        u, inv = torch.unique(s, return_inverse=True)
        srcs.append(u)
        inverses.append(inv)
    dst = dst.index_select(0, order)
    key = dst * num_relations + edge_type.index_select(0, order)
    deg = torch.bincount(key, minlength=num_out * num_relations)
    norm = (1.0 / deg.index_select(0, key).to(edge_attr.dtype)).unsqueeze(1)
    attrs = list(edge_attr.index_select(0, order).split(counts))
    constant = [a[:1] if len(a) and bool((a == a[:1]).all()) else None for a in attrs]
    return LayerPlan(out_nodes=out_nodes, counts=counts, src=srcs, inverse=inverses, edge_attr=attrs, dst=dst,
                     key=key, norm=norm, num_out=num_out, constant_attr=constant)


class RelationalConv(nn.Module):
    """Per-relation messages (edge-gated unless ``edge_features`` is off), mean per relation + max over all."""

    def __init__(self, channels: int, num_relations: int, edge_dim: int, edge_features: bool = True,
                 edge_gate: str = "residual", edge_dropout: float = 0.0) -> None:
        super().__init__()
        if edge_gate not in EDGE_GATES:
            raise ValueError(f"edge_gate must be one of {EDGE_GATES}, not {edge_gate!r}")
        self.num_relations, self.channels, self.edge_features = num_relations, channels, edge_features
        self.residual_gate = edge_gate == "residual"
        self.edge_dropout = edge_dropout  # training only: no edge feature may become a crutch (see FraudGNN)
        self.weight = nn.Parameter(torch.empty(num_relations, channels, channels))
        nn.init.xavier_uniform_(self.weight)
        if edge_features:
            # gate (first half) and additive edge term (second half) in one matmul per relation
            self.edge_weight = nn.Parameter(torch.empty(num_relations, edge_dim, 2 * channels))
            self.gate_bias = nn.Parameter(torch.zeros(num_relations, channels))
            if self.residual_gate:
                nn.init.zeros_(self.edge_weight)  # the conv starts as the plain RGCN; edges earn any change
            else:
                nn.init.xavier_uniform_(self.edge_weight)
        self.root = nn.Linear(channels, channels)
        self.max_lin = nn.Linear(channels, channels, bias=False)

    def forward(self, states: list[Tensor], source_state: list[int], h_out: Tensor, plan: LayerPlan,
                keep: Tensor | None = None) -> Tensor:
        """``states[source_state[r]]`` feeds relation r; ``h_out`` is the computed nodes' own state;
        ``keep`` (training only) drops edges: the mean renormalises over the kept ones, the max ignores the rest."""
        msgs = [self._per_edge(states, source_state, plan)] if plan.per_edge is not None else []
        for r in range(self.num_relations if plan.per_edge is None else 0):
            if plan.counts[r] == 0:
                continue
            h_src = states[source_state[r]].index_select(0, plan.src[r])
            row = plan.constant_attr[r] if plan.constant_attr is not None else None
            if self.edge_features and row is not None and not (self.training and self.edge_dropout):
                # one gate and shift for the whole relation: per source, not per edge (same message)
                g, add = (row @ self.edge_weight[r]).split(self.channels, dim=1)
                m = (h_src @ (self.weight[r] * self._gate(g + self.gate_bias[r])) + add).index_select(0, plan.inverse[r])
            else:
                m = (h_src @ self.weight[r]).index_select(0, plan.inverse[r])
                if self.edge_features:
                    g, add = (self._attr(plan.edge_attr[r]) @ self.edge_weight[r]).split(self.channels, dim=1)
                    m = m * self._gate(g + self.gate_bias[r]) + add
            msgs.append(m)
        out = self.root(h_out)
        if not msgs:
            return out
        m = torch.cat(msgs)
        norm = plan.norm
        if keep is not None:
            kept = keep.to(m.dtype)
            deg = torch.zeros(plan.num_out * self.num_relations, dtype=m.dtype, device=m.device)
            deg = deg.index_add(0, plan.key, kept)
            norm = (kept / deg.index_select(0, plan.key).clamp(min=1.0)).unsqueeze(1)
        out = out.index_add(0, plan.dst, m * norm)
        if keep is not None:
            m = torch.where(keep.unsqueeze(1), m, torch.full_like(m, float("-inf")))
        mx = torch.full((plan.num_out, self.channels), float("-inf"), dtype=m.dtype, device=m.device)
        mx = mx.index_reduce(0, plan.dst, m, "amax", include_self=True)
        mx = torch.where(torch.isinf(mx), torch.zeros_like(mx), mx)  # no (kept) message: nothing to take the max of
        return out + self.max_lin(mx)

    def _per_edge(self, states: list[Tensor], source_state: list[int], plan: LayerPlan) -> Tensor:
        """The per-relation loop's messages, each edge with its own relation's weights gathered."""
        assert plan.per_edge is not None, "called for per-edge plans only"
        src, rel, attr = plan.per_edge
        if not rel.numel():
            return torch.zeros(0, self.channels, dtype=states[0].dtype, device=states[0].device)
        offsets = torch.tensor([0, *[len(t) for t in states[:-1]]], device=src.device).cumsum(0)
        which = torch.as_tensor(source_state, device=src.device).index_select(0, rel)
        x = torch.cat(states).index_select(0, src + offsets.index_select(0, which))
        m = torch.bmm(x.unsqueeze(1), self.weight.index_select(0, rel)).squeeze(1)
        if self.edge_features:
            ge = torch.bmm(self._attr(attr).unsqueeze(1), self.edge_weight.index_select(0, rel)).squeeze(1)
            g, add = ge.split(self.channels, dim=1)
            m = m * self._gate(g + self.gate_bias.index_select(0, rel)) + add
        return m

    def _attr(self, attr: Tensor) -> Tensor:
        return nn.functional.dropout(attr, self.edge_dropout, self.training) if self.edge_dropout else attr

    def _gate(self, z: Tensor) -> Tensor:
        return 1.0 + torch.tanh(z) if self.residual_gate else torch.sigmoid(z)


class FraudGNN(nn.Module):
    """Input projection → relational layers → MLP head giving one logit per node.

    ``shortcut_relations``: relation ids that run only in the last layer from their sources' input embedding
    (see the module docstring). ``relation_dropout`` (training only): each (node, relation) loses all its
    last-layer edges with this probability, so no single kind of evidence can carry the model alone.
    ``edge_dropout`` (training only): dropout on the edge features the edge terms read, so no one of them
    becomes a crutch; off by default (measured in ``bench/RESULTS.md``: it helped on one world, not the next).
    """

    def __init__(self, in_dim: int, hidden: int, num_relations: int, edge_dim: int, layers: int = 2,
                 conv: str = "edge", dropout: float = 0.2, shortcut_relations: list[int] | None = None,
                 relation_dropout: float = 0.0, edge_gate: str = "residual", edge_dropout: float = 0.0) -> None:
        super().__init__()
        if conv not in CONVS:
            raise ValueError(f"conv must be one of {sorted(CONVS)}, not {conv!r}")
        shortcut = sorted(set(shortcut_relations or []))
        self.hparams: dict[str, Any] = dict(in_dim=in_dim, hidden=hidden, num_relations=num_relations, edge_dim=edge_dim,
                            layers=layers, conv=conv, dropout=dropout, shortcut_relations=shortcut,
                            relation_dropout=relation_dropout, edge_gate=edge_gate, edge_dropout=edge_dropout)
        self.is_shortcut = [r in set(shortcut) for r in range(num_relations)]
        self.inp = nn.Linear(in_dim, hidden)
        self.convs = nn.ModuleList(RelationalConv(hidden, num_relations, edge_dim, conv == "edge", edge_gate, edge_dropout)
                                   for _ in range(layers))
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) for _ in range(layers))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, 1))

    # ---- plans ---------------------------------------------------------------------------------------
    def plan(self, edge_index: Tensor, edge_type: Tensor, edge_attr: Tensor, num_nodes: int,
             targets: Tensor | None = None) -> list[LayerPlan]:
        """Per layer, first to last, the edges it runs: reuse it while the graph and targets stay the same.

        Layer L runs the deep and shortcut edges into the targets; layer l < L the deep edges into the nodes
        layer l + 1 reads (its outputs and its deep edges' sources). A node's output depends only on its
        incoming edges, so the targets' logits equal the full forward's.
        """
        R, L = self.hparams["num_relations"], len(self.convs)
        shortcut = torch.tensor(self.is_shortcut, dtype=torch.bool, device=edge_type.device)
        deep = ~shortcut[edge_type] if len(edge_type) else torch.zeros(0, dtype=torch.bool)
        # nodes each layer computes, last to first: the targets, then what the next layer reads
        needs: list[Tensor | None] = [None if targets is None else torch.unique(targets)]
        sels = []
        for layer in range(L - 1, -1, -1):
            sel = torch.ones_like(deep) if layer == L - 1 else deep.clone()
            need = needs[-1]
            if need is not None:
                into = torch.zeros(num_nodes, dtype=torch.bool, device=edge_index.device)
                into[need] = True
                sel &= into[edge_index[1]]
                needs.append(torch.unique(torch.cat([need, edge_index[0, sel & deep]])))
            else:
                needs.append(None)
            sels.append(sel)
        needs, sels = needs[::-1], sels[::-1]  # needs[l]: nodes layer l computes (l = 0: the input embedding)
        plans = []
        for layer, sel in enumerate(sels):
            ei, et, ea = edge_index[:, sel], edge_type[sel], edge_attr[sel]
            rows = ei[0]
            prev = needs[layer]
            if layer > 0 and prev is not None:  # deep sources read the previous layer's compact state
                rows = torch.where(deep[sel], _positions(prev, num_nodes)[ei[0]], ei[0])
            plans.append(_plan(ei, et, ea, R, num_nodes, needs[layer + 1], rows))
        return plans

    # ---- forward -------------------------------------------------------------------------------------
    def forward(self, x: Tensor, edge_index: Tensor, edge_type: Tensor, edge_attr: Tensor,
                targets: Tensor | None = None, plans: list[LayerPlan] | None = None,
                layer_edges: list[int] | None = None) -> Tensor:
        """One logit per node, or per ``targets`` node when given (see :meth:`plan`).

        ``layer_edges`` (``GraphTensors.layer_edges``, request graphs): edges already ordered so that every
        layer of the seed's forward reads a prefix; the plan is built on the longest prefix only.
        """
        if plans is None and targets is not None and layer_edges is not None:
            k = max(layer_edges)
            edge_index, edge_type, edge_attr = edge_index[:, :k], edge_type[:k], edge_attr[:k]
        plans = plans or self.plan(edge_index, edge_type, edge_attr, x.size(0), targets)
        h0 = torch.relu(self.inp(x))
        source_state = [1 if s else 0 for s in self.is_shortcut]
        p = self.hparams["relation_dropout"]
        h, rows = h0, None  # the previous layer's state; rows: the global ids of its rows (None: all)
        for i, (conv, norm, plan) in enumerate(zip(self.convs, self.norms, plans, strict=True)):
            last = i == len(self.convs) - 1
            if plan.out_nodes is None:
                h_out = h
            elif rows is None:
                h_out = h.index_select(0, plan.out_nodes)
            else:  # out_nodes ⊆ rows, both sorted
                h_out = h.index_select(0, torch.searchsorted(rows, plan.out_nodes))
            keep = None
            if last and self.training and p > 0 and plan.key.numel():
                coin = torch.rand(plan.num_out * self.hparams["num_relations"], device=x.device) >= p
                keep = coin.index_select(0, plan.key)
            h = h_out + self.dropout(torch.relu(norm(conv([h, h0], source_state, h_out, plan, keep))))
            rows = plan.out_nodes
        if targets is None:
            return self.head(h).view(-1)
        assert rows is not None, "with targets, the last layer computes only the targets' rows"
        return self.head(h.index_select(0, torch.searchsorted(rows, targets))).view(-1)
