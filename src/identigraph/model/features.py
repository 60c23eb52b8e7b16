"""GraphFrame → tensors: node features, edge features, relations. One implementation for train and serve.

Why these choices:
- **No per-node ids or embeddings.** The model must score customers and identifiers it never saw, so
  every input is a property or a structural fact (degree, when an identifier was first and last used).
- **Identifiers are described by structure**: how many customers use them, since when, how recently —
  read from the statistics every writer keeps on the vertex (``schema.IDENTIFIER_PROPS``), so the API,
  which fetches one vertex for a hub, sees what training saw. Their block counts are not inputs: they
  include the scored customer's own label.
- **Hubs are their statistics.** Customers' messages into an identifier with more than ``hub_degree``
  customers are dropped (``_message_edges``), in training and in the API alike: the API never fetches a
  carrier NAT IP's thousands of customers, and the model never learnt to need them.
- **Private identifiers are shortcuts.** An identifier only one customer uses (most phones, emails, cards)
  tells about that customer alone: its link becomes an ``own_`` relation the network reads in its last
  layer only, and the customer's message into it is dropped. ~85 % of identifiers leave the message passing.
- **Co-links.** Two customers sharing an identifier with 2..``hub_degree`` customers get a ``co_`` relation
  with *pairwise* edge features — days between the two accounts' creation, days between their first use of
  the identifier, the identifier's size — because "opened within a day of each other, through the same
  proxy" is what a ring that shares no hard identifier leaves behind, and no per-node aggregate shows it.
- **Label-derived properties** (block history) are inputs, since "shares a card with blocked accounts" is
  the strongest signal there is — but a node's own label must never feed its own prediction. Their columns
  are listed in ``label_cols`` and :func:`mask_labels` blanks them (and sets an indicator) for the nodes
  being predicted.
- Times become "days before as-of" (log-scaled), so one model works on any as-of; counts are log-scaled;
  everything is standardised with statistics fitted on the training graph and saved with the model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from identigraph.graph.schema import IDENTIFIER_PROPS, IDENTIFIERS
from identigraph.model.frame import NUMERIC, GraphFrame

DAY_NS = 86_400 * 10**9
REV = "rev_"
OWN = "own_"     # identifier → customer link of a private identifier (one customer): a shortcut relation
CO = "co_"       # customer → customer through a shared small identifier: a shortcut relation
PAIR_FEATURES = ("created_apart_days", "first_use_apart_days", "identifier_customers", "created_missing")


def shortcut_relations(relations: list[str]) -> list[int]:
    """Relations the network reads only in its last layer, from the source's input embedding."""
    return [i for i, r in enumerate(relations) if r.split("|")[1].startswith((OWN, CO))]


def pair_features(age_src: np.ndarray, age_dst: np.ndarray, first_src: np.ndarray, first_dst: np.ndarray,
                  degree: np.ndarray) -> np.ndarray:
    """Raw co-link features from days-before-as-of of both accounts' creation and both links' first use."""
    missing = np.isnan(age_src) | np.isnan(age_dst)
    apart = np.nan_to_num(_slog(age_src - age_dst))
    use = np.nan_to_num(np.log1p(np.abs(first_src - first_dst)), nan=0.0)
    return np.column_stack([np.where(missing, 0.0, apart), use, np.log1p(degree), missing.astype(float)])


def _days_before(values: pd.Series, as_of: pd.Timestamp) -> np.ndarray:
    delta = (as_of - values).dt.total_seconds().to_numpy(dtype=float) / 86_400.0
    return delta


def _slog(values: np.ndarray) -> np.ndarray:
    """Signed log1p: keeps order and sign, tames heavy tails (counts, days)."""
    return np.sign(values) * np.log1p(np.abs(values))


@dataclass
class GraphTensors:
    """The encoded graph as tensors, with what training and serving need to hide labels and find nodes."""
    node_ids: np.ndarray                     # vertex id per node index
    node_type: torch.Tensor                  # [N]
    type_names: list[str]
    type_offsets: dict[str, tuple[int, int]]  # label -> [start, end) in node order
    x: torch.Tensor                          # [N, F]
    label_cols: torch.Tensor                 # columns of x derived from labels (masked on self)
    mask_col: int                            # indicator column set where labels were masked
    edge_index: torch.Tensor                 # [2, E] source → target
    edge_type: torch.Tensor                  # [E]
    edge_attr: torch.Tensor                  # [E, D]
    relations: list[str]
    # request graphs only: the seed's node, and edges ordered [into the seed | into the seed's identifiers |
    # the rest] with these the first two boundaries, so each layer of a seed-only forward takes a prefix
    seed_index: int | None = None
    seed_prefixes: tuple[int, int] | None = None
    _lookup: dict[str, int] | None = field(default=None, repr=False, compare=False)  # index_of's, built once

    def layer_edges(self, layers: int, node: int) -> list[int] | None:
        """Edges each layer of ``node``'s seed-only forward needs, first layer first (request graphs only)."""
        if self.seed_prefixes is None or node != self.seed_index:
            return None
        into_seed, into_identifiers = self.seed_prefixes
        return [int(self.edge_type.numel())] * max(layers - 2, 0) + [into_identifiers, into_seed][-layers:]

    def index_of(self, ids: list[str] | np.ndarray) -> np.ndarray:
        """Node indices of ``ids`` (NaN where absent), from a dict built once per tensors object."""
        lookup = self._lookup
        if lookup is None:
            lookup = self._lookup = {v: i for i, v in enumerate(self.node_ids.tolist())}
        found = [lookup.get(v, -1) for v in ids]
        out = np.array(found, dtype=np.int64)
        return out if (out >= 0).all() else np.where(out >= 0, out, np.nan)  # NaN marks the absent

    def nodes_of(self, label: str) -> np.ndarray:
        start, end = self.type_offsets.get(label, (0, 0))
        return np.arange(start, end)


def mask_labels(t: GraphTensors, nodes: torch.Tensor | np.ndarray, x: torch.Tensor | None = None) -> torch.Tensor:
    """Copy of ``x`` where ``nodes`` cannot see their own label-derived inputs."""
    x = (t.x if x is None else x).clone()
    nodes = torch.as_tensor(nodes, dtype=torch.long, device=x.device)
    if len(t.label_cols):
        x[nodes.unsqueeze(1), t.label_cols.to(x.device).unsqueeze(0)] = 0.0
    x[nodes, t.mask_col] = 1.0
    return x


@dataclass
class _Encoded:
    """A frame's encoding before standardisation."""
    node_ids: np.ndarray
    node_type: np.ndarray
    offsets: dict[str, tuple[int, int]]
    x: np.ndarray
    binary: np.ndarray            # columns left unstandardised (indicators, one-hots)
    label_col_names: list[str]    # non-empty where the column is label-derived
    edge_index: np.ndarray        # message-passing edges only (see FeatureEncoder._message_edges)
    edge_type: np.ndarray
    edge_attr: np.ndarray         # links' own attributes (zeros on co-links), unstandardised
    pair_attr: np.ndarray         # [co-links, len(PAIR_FEATURES)], unstandardised; co-links are the last edges


@dataclass
class _NodeFeatures:
    """The node block of an encoding: features, which columns stay unstandardised, which are label-derived."""
    x: np.ndarray
    binary: np.ndarray
    label_col_names: list[str]


@dataclass
class _Column:
    """How one raw column becomes feature columns; fitted state only (JSON-serialisable)."""
    name: str
    kind: str                     # date | num | bool | cat
    categories: list[str] = field(default_factory=list)
    has_missing: bool = False

    def width(self) -> int:
        base = len(self.categories) + 1 if self.kind == "cat" else 1
        return base + (1 if self.has_missing and self.kind != "cat" else 0)


class FeatureEncoder:
    """Fitted on the training graph, saved with the model, applied unchanged to any later graph."""

    def __init__(self, label_columns: dict[str, list[str]] | None = None, max_categories: int = 12,
                 hub_degree: int | None = 50, shortcuts: bool = False) -> None:
        self.label_columns = label_columns or {}
        self.max_categories = max_categories
        self.hub_degree = hub_degree
        self.shortcuts = shortcuts  # private-identifier and co-link relations (off: the pre-shortcut encoding)
        self.pair_mean: np.ndarray | None = None
        self.pair_std: np.ndarray | None = None
        self.node_cols: dict[str, list[_Column]] = {}
        self.edge_cols: list[_Column] = []
        self.edge_labels: list[str] = []
        self.type_names: list[str] = []
        self.relations: list[str] = []
        self.struct: dict[str, list[str]] = {}
        self.vertex_types: dict[str, dict[str, str]] = {}
        self.edge_types: dict[str, dict[str, str]] = {}
        self.mean: np.ndarray | None = None
        self.std: np.ndarray | None = None
        self.edge_mean: np.ndarray | None = None
        self.edge_std: np.ndarray | None = None

    # ---- fitting -------------------------------------------------------------------------------
    def _fit_column(self, name: str, typ: str, values: pd.Series) -> _Column | None:
        missing = bool(values.isna().any())
        if typ == "Date":
            return _Column(name, "date", has_missing=missing)
        if typ in NUMERIC:
            return _Column(name, "num", has_missing=missing)
        if typ == "Bool":
            return _Column(name, "bool", has_missing=missing)
        counts = values.dropna().astype(str).value_counts()
        if counts.empty or len(counts) > max(50, 0.5 * len(values)):
            return None  # id-like text: no generalisable signal, and a leak of identity
        cats = [c for c, n in counts.items() if n >= max(2, 0.005 * len(values))][: self.max_categories]
        return _Column(name, "cat", categories=[str(c) for c in cats])

    def fit(self, frame: GraphFrame) -> FeatureEncoder:
        self.type_names = sorted(frame.vertices)
        self.vertex_types = {label: dict(frame.types.get(label, {})) for label in self.type_names}
        rels = sorted(frame.edges)
        self.edge_labels = sorted({r[1] for r in rels})
        self.edge_types = {e: dict(frame.types.get(e, {})) for e in self.edge_labels}
        self.relations = [f"{s}|{e}|{d}" for s, e, d in rels] + [f"{d}|{REV}{e}|{s}" for s, e, d in rels]
        if self.shortcuts:
            into = [(s, e, d) for s, e, d in rels if d in IDENTIFIERS]
            self.relations += [f"{d}|{OWN}{e}|{s}" for s, e, d in into] + [f"{s}|{CO}{e}|{s}" for s, e, d in into]
        for label in self.type_names:
            cols = []
            for name, typ in self.vertex_types[label].items():
                if label in IDENTIFIERS and name in IDENTIFIER_PROPS:
                    continue  # identifier statistics feed the structural block, not a column of their own
                col = self._fit_column(name, typ, frame.vertices[label][name])
                if col is not None:
                    cols.append(col)
            self.node_cols[label] = cols
            self.struct[label] = [r for r in self.relations if r.split("|")[2] == label]
        edge_types: dict[str, str] = {}
        for e in self.edge_labels:
            edge_types.update(self.edge_types[e])
        all_edges = pd.concat([f for f in frame.edges.values()], ignore_index=True) if frame.edges else pd.DataFrame()
        self.edge_cols = [c for c in (self._fit_column(n, t, all_edges[n]) for n, t in edge_types.items()
                                      if t in ("Date", *NUMERIC, "Bool")) if c is not None]
        raw = self._raw(frame)
        x, ea = raw.x, raw.edge_attr
        self.mean, self.std = x.mean(0), x.std(0) + 1e-6
        passthrough = raw.binary
        self.mean[passthrough], self.std[passthrough] = 0.0, 1.0
        self.edge_mean = ea.mean(0) if len(ea) else np.zeros(ea.shape[1])
        self.edge_std = (ea.std(0) if len(ea) else np.zeros(ea.shape[1])) + 1e-6
        if self.shortcuts:
            pf = raw.pair_attr
            self.pair_mean = pf.mean(0) if len(pf) else np.zeros(len(PAIR_FEATURES))
            self.pair_std = (pf.std(0) if len(pf) else np.zeros(len(PAIR_FEATURES))) + 1e-6
            self.pair_mean[-1], self.pair_std[-1] = 0.0, 1.0  # the missing indicator stays 0/1
        return self

    @property
    def edge_width(self) -> int:
        """Columns of ``GraphTensors.edge_attr``: the link's own, then (with shortcuts) the pairwise block."""
        return sum(c.width() for c in self.edge_cols) + 2 + (len(PAIR_FEATURES) if self.shortcuts else 0)

    # ---- encoding ------------------------------------------------------------------------------
    def _encode_columns(self, cols: list[_Column], frame: pd.DataFrame, as_of: pd.Timestamp,
                        ) -> tuple[list[np.ndarray], list[bool], list[str]]:
        out, binary, names = [], [], []
        n = len(frame)
        for c in cols:
            v = frame[c.name] if c.name in frame else pd.Series([None] * n, index=frame.index, dtype=object)
            if c.kind == "cat":
                s = v.astype(object).where(v.notna(), None)
                for cat in c.categories:
                    out.append((s == cat).to_numpy(dtype=float))
                    binary.append(True)
                    names.append(f"{c.name}={cat}")
                out.append((s.notna() & ~s.isin(c.categories)).to_numpy(dtype=float))
                binary.append(True)
                names.append(f"{c.name}=other")
                continue
            if c.kind == "date":
                raw = _days_before(pd.to_datetime(v, utc=True), as_of)
                vals = _slog(raw)
            elif c.kind == "num":
                vals = _slog(pd.to_numeric(v, errors="coerce").to_numpy(dtype=float))
            else:
                vals = pd.to_numeric(v, errors="coerce").to_numpy(dtype=float)
            miss = np.isnan(vals)
            out.append(np.where(miss, 0.0, vals))
            binary.append(c.kind == "bool")
            names.append(c.name)
            if c.has_missing:
                out.append(miss.astype(float))
                binary.append(True)
                names.append(f"{c.name}:missing")
        return out, binary, names

    def _raw(self, frame: GraphFrame) -> _Encoded:
        as_of = pd.Timestamp(frame.as_of)
        as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of.tz_convert("UTC")
        node_ids, node_type, offsets = self._node_order(frame)
        lookup = pd.Series(np.arange(len(node_ids)), index=node_ids)
        edge_index, edge_type, edge_attr, ages = self._edges(frame, lookup, as_of)
        deg, total, first_use, last_use = self._structure(frame, lookup, as_of, edge_index, edge_type, ages)
        nodes = self._node_features(frame, offsets, len(node_ids), as_of, (deg, total, first_use, last_use))
        keep = self._message_edges(edge_index, edge_type, total)
        pair_index = np.zeros((2, 0), np.int64)
        pair_type = np.zeros(0, np.int64)
        pair_attr = np.zeros((0, len(PAIR_FEATURES)))
        if self.shortcuts:
            edge_type = self._private_links(edge_index, edge_type, total)
            created = self._created_days(frame, node_ids, as_of)
            pair_index, pair_type, pair_attr = self._co_links(edge_index, edge_type, ages, total, created)
        edge_index, edge_type, edge_attr = edge_index[:, keep], edge_type[keep], edge_attr[keep]
        return _Encoded(node_ids=node_ids, node_type=node_type, offsets=offsets, x=nodes.x,
                        binary=nodes.binary, label_col_names=nodes.label_col_names,
                        edge_index=np.concatenate([edge_index, pair_index], axis=1),
                        edge_type=np.concatenate([edge_type, pair_type]),
                        edge_attr=np.vstack([edge_attr, np.zeros((pair_index.shape[1], edge_attr.shape[1]))]),
                        pair_attr=pair_attr)

    def _node_features(self, frame: GraphFrame, offsets: dict[str, tuple[int, int]], n: int, as_of: pd.Timestamp,
                       structure: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> _NodeFeatures:
        """One block per vertex label, then the structural block, type one-hot, mask indicator."""
        blocks, binary = [], []
        label_col_names: list[str] = []  # local, not an attribute: the API encodes concurrent requests at once
        for label in self.type_names:
            a, b = offsets[label]
            vf = frame.vertices.get(label, pd.DataFrame())
            cols, bin_, names = self._encode_columns(self.node_cols.get(label, []), vf, as_of)
            block = np.zeros((n, len(cols)))
            if cols:
                block[a:b] = np.column_stack(cols)
            label_set = set(self.label_columns.get(label, []))
            label_col_names += [f"{label}.{nm}" if nm.split("=")[0].split(":")[0] in label_set else "" for nm in names]
            blocks.append(block)
            binary += bin_
        deg, total, first_use, last_use = structure
        used = np.isfinite(first_use) & np.isfinite(last_use)
        struct = np.column_stack([np.log1p(total), np.log1p(deg),
                                  np.where(used, _slog(np.where(used, first_use, 0)), 0.0),
                                  np.where(used, _slog(np.where(used, last_use, 0)), 0.0)])
        type_onehot = np.zeros((n, len(self.type_names)))
        for ti, label in enumerate(self.type_names):
            a, b = offsets[label]
            type_onehot[a:b, ti] = 1.0
        x = np.column_stack([*blocks, struct, type_onehot, np.zeros((n, 1))])
        binary += [False] * struct.shape[1] + [True] * (type_onehot.shape[1] + 1)
        label_col_names += [""] * (struct.shape[1] + type_onehot.shape[1] + 1)
        return _NodeFeatures(x, np.array(binary, dtype=bool), label_col_names)

    def _node_order(self, frame: GraphFrame) -> tuple[np.ndarray, np.ndarray, dict[str, tuple[int, int]]]:
        """Type blocks in ``type_names`` order, frame order inside a block."""
        ids, types, offsets, start = [], [], {}, 0
        for ti, label in enumerate(self.type_names):
            vf = frame.vertices.get(label)
            idx = vf.index.to_numpy() if vf is not None else np.array([], dtype=object)
            ids.append(idx)
            types.append(np.full(len(idx), ti))
            offsets[label] = (start, start + len(idx))
            start += len(idx)
        node_ids = np.concatenate(ids) if ids else np.array([], dtype=object)
        return node_ids, (np.concatenate(types) if types else np.zeros(0, np.int64)), offsets

    def _edges(self, frame: GraphFrame, lookup: pd.Series, as_of: pd.Timestamp,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Both directions of every known relation: index, type, raw attributes, and (first, last) ages."""
        rel_index = {r: i for i, r in enumerate(self.relations)}
        srcs, dsts, etypes, eattrs, ages = [], [], [], [], []
        for (s, e, d), ef in sorted(frame.edges.items()):
            fwd = f"{s}|{e}|{d}"
            if fwd not in rel_index or len(ef) == 0:
                continue  # a relation the model never saw carries no learned weights
            si = lookup.reindex(ef["src"].to_numpy()).to_numpy()
            di = lookup.reindex(ef["dst"].to_numpy()).to_numpy()
            ok = ~(np.isnan(si.astype(float)) | np.isnan(di.astype(float)))
            ef, si, di = ef[ok], si[ok].astype(np.int64), di[ok].astype(np.int64)
            cols, _, _ = self._encode_columns(self.edge_cols, ef, as_of)
            extra = self._edge_extra(frame, s, ef, as_of)
            age = np.column_stack([_days_before(pd.to_datetime(ef[c], utc=True), as_of) if c in ef
                                   else np.full(len(ef), np.nan) for c in ("first_seen", "last_seen")])
            attr = np.column_stack(cols + extra) if cols or extra else np.zeros((len(ef), 0))
            for a, b, rel in ((si, di, fwd), (di, si, f"{d}|{REV}{e}|{s}")):
                srcs.append(a)
                dsts.append(b)
                etypes.append(np.full(len(a), rel_index[rel]))
                eattrs.append(attr)
                ages.append(age)
        edge_dim = sum(c.width() for c in self.edge_cols) + 2
        if not srcs:
            return np.zeros((2, 0), np.int64), np.zeros(0, np.int64), np.zeros((0, edge_dim)), np.zeros((0, 2))
        return (np.vstack([np.concatenate(srcs), np.concatenate(dsts)]), np.concatenate(etypes),
                np.vstack(eattrs), np.vstack(ages))

    def _structure(self, frame: GraphFrame, lookup: pd.Series, as_of: pd.Timestamp, edge_index: np.ndarray,
                   edge_type: np.ndarray, ages: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per node: degree per incoming relation, days since its links began and since they were last used.

        Counted from the frame's edges, except where an identifier carries its stored statistics
        (``n_customers``, ``first_seen``, ``last_seen``): those are the whole graph's, so a hub the API
        fetched only the seed's link of looks exactly as it does in training.
        """
        n = len(lookup)
        deg = np.zeros((n, len(self.relations)))
        first_use = np.full(n, -np.inf)  # the oldest link's age: a max, so it starts below everything
        last_use = np.full(n, np.inf)
        if len(edge_type):
            np.add.at(deg, (edge_index[1], edge_type), 1.0)
            np.minimum.at(last_use, edge_index[1], np.nan_to_num(ages[:, 1], nan=np.inf))
            np.maximum.at(first_use, edge_index[1], np.nan_to_num(ages[:, 0], nan=-np.inf))
        first_use[first_use == -np.inf] = np.inf
        for label, rel in self._stats_relation().items():
            vf = frame.vertices.get(label)
            if vf is None or "n_customers" not in vf or len(vf) == 0:
                continue
            idx = lookup.reindex(vf.index).to_numpy().astype(np.int64)
            known = vf["n_customers"].notna().to_numpy()
            idx, stats = idx[known], vf[known]
            deg[idx, :] = 0.0
            deg[idx, rel] = stats["n_customers"].to_numpy(dtype=float)
            for out, col in ((first_use, "first_seen"), (last_use, "last_seen")):
                if col in stats:
                    days = _days_before(pd.to_datetime(stats[col], utc=True), as_of)
                    out[idx] = np.where(np.isnan(days), np.inf, days)
        total = deg.sum(1)
        if frame.degree:  # a hand-made frame may state a capped identifier's true degree instead
            true = lookup.reindex(list(frame.degree)).to_numpy()
            ok = ~np.isnan(true.astype(float))
            rows = true[ok].astype(np.int64)
            total[rows] = np.maximum(total[rows], np.array(list(frame.degree.values()), dtype=float)[ok])
        return deg, total, first_use, last_use

    def _stats_relation(self) -> dict[str, int]:
        """Identifier label → the one relation into it whose degree its ``n_customers`` statistic is."""
        out = {}
        for label in self.type_names:
            if label not in IDENTIFIERS:
                continue
            into = [i for i, r in enumerate(self.relations) if r.split("|")[2] == label and REV not in r]
            if len(into) == 1:
                out[label] = into[0]
        return out

    def _message_edges(self, edge_index: np.ndarray, edge_type: np.ndarray, degree: np.ndarray) -> np.ndarray:
        """Which edges carry messages: all but the customer→hub ones (identifiers above ``hub_degree``),
        and, with shortcuts, the customer→private-identifier ones (the identifier knows only that customer).

        A hub is represented by its own statistics, in training exactly as in the API, which never fetches
        a hub's thousands of customers: no "whichever 50 came first", no train/serve skew.
        """
        keep = np.ones(len(edge_type), dtype=bool)
        if not len(edge_type):
            return keep
        into_identifier = self._into_identifier()[edge_type]
        if self.hub_degree is not None:
            keep &= ~(into_identifier & (degree[edge_index[1]] > self.hub_degree))
        if self.shortcuts:
            keep &= ~(into_identifier & (degree[edge_index[1]] <= 1))
        return keep

    def _into_identifier(self) -> np.ndarray:
        return np.array([r.split("|")[2] in IDENTIFIERS and REV not in r and CO not in r for r in self.relations])

    def _private_links(self, edge_index: np.ndarray, edge_type: np.ndarray, degree: np.ndarray) -> np.ndarray:
        """Edge types with a private identifier's identifier→customer link moved to its ``own_`` relation."""
        rel = {r: i for i, r in enumerate(self.relations)}
        own_of = np.arange(len(self.relations))
        for i, r in enumerate(self.relations):
            s, e, d = r.split("|")
            if e.startswith(REV) and s in IDENTIFIERS:
                own_of[i] = rel[f"{s}|{OWN}{e[len(REV):]}|{d}"]
        private = (degree[edge_index[0]] <= 1) if len(edge_type) else np.zeros(0, bool)
        return np.where(private, own_of[edge_type], edge_type)

    @staticmethod
    def _created_days(frame: GraphFrame, node_ids: np.ndarray, as_of: pd.Timestamp) -> np.ndarray:
        """Days before as-of each node was created (NaN: no ``created_at``)."""
        out = np.full(len(node_ids), np.nan)
        lookup = pd.Series(np.arange(len(node_ids)), index=node_ids)
        for vf in frame.vertices.values():
            if "created_at" in vf and len(vf):
                idx = lookup.reindex(vf.index).to_numpy()
                ok = ~np.isnan(idx.astype(float))
                out[idx[ok].astype(np.int64)] = _days_before(pd.to_datetime(vf["created_at"], utc=True), as_of)[ok]
        return out

    def _co_links(self, edge_index: np.ndarray, edge_type: np.ndarray, ages: np.ndarray, degree: np.ndarray,
                  created: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every ordered pair of customers on an identifier with 2..cap customers, per identifier kind."""
        rel = {r: i for i, r in enumerate(self.relations)}
        co_of = np.full(len(self.relations), -1)
        for i, r in enumerate(self.relations):
            s, e, d = r.split("|")
            if d in IDENTIFIERS and not e.startswith((REV, OWN, CO)):
                co_of[i] = rel[f"{s}|{CO}{e}|{s}"]
        cap = self.hub_degree or 50
        fwd = (co_of[edge_type] >= 0) if len(edge_type) else np.zeros(0, bool)
        dst_degree = degree[edge_index[1]] if len(edge_type) else np.zeros(0)
        sel = np.flatnonzero(fwd & (dst_degree >= 2) & (dst_degree <= cap))
        empty = (np.zeros((2, 0), np.int64), np.zeros(0, np.int64), np.zeros((0, len(PAIR_FEATURES))))
        if not len(sel):
            return empty
        sel = sel[np.argsort(edge_index[1, sel], kind="stable")]
        ident = edge_index[1, sel]
        starts = np.flatnonzero(np.r_[True, ident[1:] != ident[:-1]])
        sizes = np.diff(np.r_[starts, len(sel)])
        size_of = np.repeat(sizes, sizes)
        start_of = np.repeat(starts, sizes)
        a = np.repeat(np.arange(len(sel)), size_of)            # receiver position
        b = np.repeat(start_of, size_of) + (np.arange(len(a)) - np.repeat(np.cumsum(size_of) - size_of, size_of))
        ok = a != b
        a, b = sel[a[ok]], sel[b[ok]]                          # edge positions: a receives from b
        dst, src = edge_index[0, a], edge_index[0, b]
        attr = pair_features(created[src], created[dst], ages[b, 0], ages[a, 0], degree[edge_index[1, a]])
        return np.vstack([src, dst]), co_of[edge_type[a]], attr

    def _edge_extra(self, frame: GraphFrame, src_label: str, ef: pd.DataFrame, as_of: pd.Timestamp,
                    ) -> list[np.ndarray]:
        """How long the link lasted, and how long after the account's creation it appeared.

        The second is the account-takeover signal: a new device on a years-old account.
        """
        first = pd.to_datetime(ef["first_seen"], utc=True) if "first_seen" in ef else None
        last = pd.to_datetime(ef["last_seen"], utc=True) if "last_seen" in ef else None
        n = len(ef)
        span = np.zeros(n)
        after_created = np.zeros(n)
        if first is not None and last is not None:
            span = np.nan_to_num(_slog((last - first).dt.total_seconds().to_numpy(float) / 86_400.0))
        src = frame.vertices.get(src_label)
        if first is not None and src is not None and "created_at" in src:
            created = src["created_at"].reindex(ef["src"].to_numpy())
            delta = (first.to_numpy() - created.to_numpy()) / np.timedelta64(1, "D")
            after_created = np.nan_to_num(_slog(np.asarray(delta, dtype=float)))
        return [span, after_created]

    def transform(self, frame: GraphFrame) -> GraphTensors:
        if self.mean is None:
            raise RuntimeError("FeatureEncoder.transform before fit")
        raw = self._raw(frame)
        x = (raw.x - self.mean) / self.std
        e = raw.edge_attr
        e = (e - self.edge_mean) / self.edge_std if len(e) else e
        if self.shortcuts:
            n_pair = len(raw.pair_attr)
            pair = np.zeros((len(e), len(PAIR_FEATURES)))
            if n_pair:
                e[-n_pair:] = 0.0  # a co-link has no link attributes of its own, only pairwise ones
                pair[-n_pair:] = (raw.pair_attr - self.pair_mean) / self.pair_std
            e = np.hstack([e, pair])
        label_cols = [i for i, nm in enumerate(raw.label_col_names) if nm]
        return GraphTensors(
            node_ids=raw.node_ids, node_type=torch.as_tensor(raw.node_type, dtype=torch.long),
            type_names=list(self.type_names), type_offsets=raw.offsets,
            x=torch.as_tensor(x, dtype=torch.float32), label_cols=torch.as_tensor(label_cols, dtype=torch.long),
            mask_col=x.shape[1] - 1, edge_index=torch.as_tensor(raw.edge_index, dtype=torch.long),
            edge_type=torch.as_tensor(raw.edge_type, dtype=torch.long),
            edge_attr=torch.as_tensor(e, dtype=torch.float32), relations=list(self.relations),
        )

    # ---- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def cols(cs: list[_Column]) -> list[dict[str, Any]]:
            return [vars(c) for c in cs]
        assert self.mean is not None and self.std is not None  # encoders are saved after fit
        assert self.edge_mean is not None and self.edge_std is not None
        return {
            "label_columns": self.label_columns, "max_categories": self.max_categories, "hub_degree": self.hub_degree,
            "shortcuts": self.shortcuts,
            "pair_mean": None if self.pair_mean is None else self.pair_mean.tolist(),
            "pair_std": None if self.pair_std is None else self.pair_std.tolist(),
            "node_cols": {k: cols(v) for k, v in self.node_cols.items()}, "edge_cols": cols(self.edge_cols),
            "edge_labels": self.edge_labels, "type_names": self.type_names, "relations": self.relations,
            "struct": self.struct, "vertex_types": self.vertex_types, "edge_types": self.edge_types,
            "mean": self.mean.tolist(), "std": self.std.tolist(),
            "edge_mean": self.edge_mean.tolist(), "edge_std": self.edge_std.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureEncoder:
        enc = cls(d["label_columns"], d["max_categories"], d.get("hub_degree"),  # older models: no hub cut,
                  d.get("shortcuts", False))                                     # no shortcut relations
        for key in ("pair_mean", "pair_std"):
            if d.get(key) is not None:
                setattr(enc, key, np.asarray(d[key], dtype=float))
        enc.node_cols = {k: [_Column(**c) for c in v] for k, v in d["node_cols"].items()}
        enc.edge_cols = [_Column(**c) for c in d["edge_cols"]]
        for key in ("edge_labels", "type_names", "relations", "struct", "vertex_types", "edge_types"):
            setattr(enc, key, d[key])
        for key in ("mean", "std", "edge_mean", "edge_std"):
            setattr(enc, key, np.asarray(d[key], dtype=float))
        return enc

    def feature_names(self) -> list[str]:
        names = []
        for label in self.type_names:
            for c in self.node_cols.get(label, []):
                if c.kind == "cat":
                    names += [f"{label}.{c.name}={cat}" for cat in c.categories] + [f"{label}.{c.name}=other"]
                else:
                    names.append(f"{label}.{c.name}")
                    if c.has_missing:
                        names.append(f"{label}.{c.name}:missing")
        names += ["degree"] + [f"degree[{r}]" for r in self.relations] + ["first_use_days", "last_use_days"]
        names += [f"is_{t}" for t in self.type_names] + ["label_masked"]
        return names
