"""The API's encoder: one seed's receptive field → tensors, with numpy over the fitted encoder's state.

``FeatureEncoder.transform`` is built for whole graphs (pandas, one column at a time): on the few hundred
rows of one request its fixed cost is ~40 ms, most of a login's budget. This module computes exactly the
same numbers — the tests hold it to the batch encoder with ``assert_allclose`` — from what the API fetched:

- the seed's properties and all its links (plus the request's own, not yet written);
- each identifier's stored statistics (``schema.IDENTIFIER_PROPS``) — a hub is nothing more;
- for identifiers with at most ``hub_degree`` customers, those customers' properties, the links to that
  identifier, and a summary of all their links (how many per kind, first and last use): their structural
  features need it, their other identifiers are outside a 2-layer model's reach.

Nothing here knows about Gremlin: ``serving.neighbourhood`` fills a ``RequestGraph``, tests fill it from a
snapshot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from identigraph.graph.schema import CUSTOMER, EDGE_TO_IDENTIFIER
from identigraph.model.features import CO, OWN, PAIR_FEATURES, REV, FeatureEncoder, GraphTensors, _Column, pair_features


@dataclass
class LinkSummary:
    """A customer's links as its structural features see them: count per edge label, first and last use."""

    counts: dict[str, int] = field(default_factory=dict)
    first_seen: datetime | None = None
    last_seen: datetime | None = None


@dataclass
class RequestGraph:
    """What the API fetches for one customer: the seed's neighbourhood as of now, the only input the
    request encoder needs, so serving and the batch path can be held to the same scores."""

    as_of: datetime
    seed: str
    vertices: dict[str, tuple[str, dict[str, Any]]]              # id -> (label, properties)
    edges: list[tuple[str, str, str, dict[str, Any]]]            # (customer, edge label, identifier, properties)
    summaries: dict[str, LinkSummary] = field(default_factory=dict)  # customer -> all its links

    def identifiers_of(self, customer: str) -> list[str]:
        return [dst for src, _, dst, _ in self.edges if src == customer]


_EPOCH = datetime(1970, 1, 1)


def _seconds(value: Any) -> float:
    """UTC seconds of a datetime (gremlinpython returns naive UTC ones); NaN when missing."""
    if not isinstance(value, datetime):
        return math.nan
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return (value - _EPOCH).total_seconds()


def _slog(values: np.ndarray) -> np.ndarray:
    return np.sign(values) * np.log1p(np.abs(values))


def _number(value: Any) -> float:
    if value is None or (isinstance(value, str) and not value):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _fitted(stat: np.ndarray | None) -> np.ndarray:
    if stat is None:
        raise ValueError("RequestEncoder needs a fitted FeatureEncoder")
    return stat.astype(np.float64)


class RequestEncoder:
    """The fitted ``FeatureEncoder``'s state laid out for one request at a time."""

    def __init__(self, encoder: FeatureEncoder) -> None:
        if encoder.mean is None:
            raise ValueError("RequestEncoder needs a fitted FeatureEncoder")
        self.enc = encoder
        self.rel_index = {r: i for i, r in enumerate(encoder.relations)}
        self.num_relations = len(encoder.relations)
        # x layout: one block per label (type_names order), then structure, type one-hot, mask indicator
        self.block_start: dict[str, int] = {}
        col = 0
        for label in encoder.type_names:
            self.block_start[label] = col
            col += sum(c.width() for c in encoder.node_cols.get(label, []))
        self.struct_start = col
        self.type_start = col + 1 + self.num_relations + 2
        self.width = self.type_start + len(encoder.type_names) + 1
        self.mask_col = self.width - 1
        self.label_cols = self._label_cols()
        # structure: which relation an identifier's n_customers is, which relation a customer's link count is
        self.stats_relation = encoder._stats_relation()
        self.into_customer = {}  # edge label -> relation index of identifier → customer messages
        self.from_customer = {}  # edge label -> relation index of customer → identifier messages
        self.own_of = {}         # edge label -> relation index of a private identifier's link (shortcut)
        self.co_of = {}          # edge label -> relation index of co-links through that kind of identifier
        for r, i in self.rel_index.items():
            src, elabel, dst = r.split("|")
            if elabel.startswith(REV) and dst == CUSTOMER:
                self.into_customer[elabel[len(REV):]] = i
            elif elabel.startswith(OWN):
                self.own_of[elabel[len(OWN):]] = i
            elif elabel.startswith(CO):
                self.co_of[elabel[len(CO):]] = i
            elif src == CUSTOMER:
                self.from_customer[elabel] = i
        self.mean = _fitted(encoder.mean)
        self.std = _fitted(encoder.std)
        self.edge_mean = _fitted(encoder.edge_mean)
        self.edge_std = _fitted(encoder.edge_std)
        self.edge_width = sum(c.width() for c in encoder.edge_cols) + 2
        self.shortcuts = encoder.shortcuts
        if self.shortcuts:
            self.pair_mean = _fitted(encoder.pair_mean)
            self.pair_std = _fitted(encoder.pair_std)
        self.props = {label: [c.name for c in cols] for label, cols in encoder.node_cols.items()}
        self.edge_props = [c.name for c in encoder.edge_cols]

    def _label_cols(self) -> list[int]:
        out: list[int] = []
        for label in self.enc.type_names:
            start, label_set = self.block_start[label], set(self.enc.label_columns.get(label, []))
            for c in self.enc.node_cols.get(label, []):
                if c.name in label_set:
                    out += range(start, start + c.width())
                start += c.width()
        return out

    # ---- columns -------------------------------------------------------------------------------------
    @staticmethod
    def _columns(cols: list[_Column], rows: list[dict[str, Any]], as_of_s: float, out: np.ndarray,
                 start: int) -> None:
        """Write ``rows``' encoded columns into ``out[:, start:]`` exactly as ``_encode_columns`` does."""
        j = start
        for c in cols:
            raw = [r.get(c.name) for r in rows]
            if c.kind == "cat":
                raw = [None if v == "" else v for v in raw]  # the batch path reads "" as missing text
                for k, cat in enumerate(c.categories):
                    out[:, j + k] = [v == cat for v in raw]
                out[:, j + len(c.categories)] = [v is not None and v not in c.categories for v in raw]
                j += len(c.categories) + 1
                continue
            if c.kind == "date":
                vals = _slog((as_of_s - np.array([_seconds(v) for v in raw])) / 86_400.0)
            elif c.kind == "num":
                vals = _slog(np.array([_number(v) for v in raw]))
            else:
                vals = np.array([_number(v) for v in raw])
            miss = np.isnan(vals)
            out[:, j] = np.where(miss, 0.0, vals)
            j += 1
            if c.has_missing:
                out[:, j] = miss
                j += 1

    # ---- the whole request ---------------------------------------------------------------------------
    def transform(self, graph: RequestGraph) -> GraphTensors:
        enc = self.enc
        as_of_s = _seconds(graph.as_of)
        by_label: dict[str, list[str]] = {label: [] for label in enc.type_names}
        for vid, (label, _) in graph.vertices.items():
            if label in by_label:
                by_label[label].append(vid)
        node_ids = [vid for label in enc.type_names for vid in by_label[label]]
        index = {vid: i for i, vid in enumerate(node_ids)}
        n = len(node_ids)
        x = np.zeros((n, self.width))
        offsets, start = {}, 0
        node_type = np.zeros(n, dtype=np.int64)
        for ti, label in enumerate(enc.type_names):
            ids = by_label[label]
            offsets[label] = (start, start + len(ids))
            node_type[start:start + len(ids)] = ti
            x[start:start + len(ids), self.type_start + ti] = 1.0
            if ids and enc.node_cols.get(label):  # x[a:b] is a view: the columns land in x itself
                self._columns(enc.node_cols[label], [graph.vertices[v][1] for v in ids], as_of_s,
                              x[start:start + len(ids)], self.block_start[label])
            start += len(ids)
        degree = self._structure(graph, index, as_of_s, x)
        edge_index, edge_type, edge_attr, prefixes = self._edges(graph, index, as_of_s, degree)
        x = (x - self.mean) / self.std
        return GraphTensors(
            node_ids=np.array(node_ids, dtype=object), node_type=torch.from_numpy(node_type),
            type_names=list(enc.type_names), type_offsets=offsets, x=torch.as_tensor(x, dtype=torch.float32),
            label_cols=torch.as_tensor(self.label_cols, dtype=torch.long), mask_col=self.mask_col,
            edge_index=torch.from_numpy(edge_index), edge_type=torch.from_numpy(edge_type),
            edge_attr=torch.as_tensor(edge_attr, dtype=torch.float32), relations=list(enc.relations),
            seed_index=index[graph.seed], seed_prefixes=prefixes)

    def _structure(self, graph: RequestGraph, index: dict[str, int], as_of_s: float, x: np.ndarray) -> np.ndarray:
        """Degree per relation, first and last use: from statistics (identifiers) and summaries (customers)."""
        n = len(index)
        deg = np.zeros((n, self.num_relations))
        first = np.full(n, math.nan)
        last = np.full(n, math.nan)
        for vid, i in index.items():
            label, props = graph.vertices[vid]
            if label == CUSTOMER:
                summary = graph.summaries.get(vid)
                if summary is None:
                    continue
                for elabel, k in summary.counts.items():
                    rel = self.into_customer.get(elabel)
                    if rel is not None:
                        deg[i, rel] = k
                first[i], last[i] = _seconds(summary.first_seen), _seconds(summary.last_seen)
            elif label in self.stats_relation and props.get("n_customers") is not None:
                deg[i, self.stats_relation[label]] = float(props["n_customers"])
                first[i], last[i] = _seconds(props.get("first_seen")), _seconds(props.get("last_seen"))
        total = deg.sum(1)
        first_use = (as_of_s - first) / 86_400.0
        last_use = (as_of_s - last) / 86_400.0
        used = np.isfinite(first_use) & np.isfinite(last_use)
        s = self.struct_start
        x[:, s] = np.log1p(total)
        x[:, s + 1:s + 1 + self.num_relations] = np.log1p(deg)
        x[:, s + 1 + self.num_relations] = np.where(used, _slog(np.where(used, first_use, 0)), 0.0)
        x[:, s + 2 + self.num_relations] = np.where(used, _slog(np.where(used, last_use, 0)), 0.0)
        return total

    def _edges(self, graph: RequestGraph, index: dict[str, int], as_of_s: float, degree: np.ndarray,
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        edges = [e for e in graph.edges if e[0] in index and e[2] in index and e[1] in self.from_customer]
        m = len(edges)
        attr = np.zeros((m, self.edge_width))
        first = created = np.zeros(0)
        if m:
            rows = [e[3] for e in edges]
            self._columns(self.enc.edge_cols, rows, as_of_s, attr, 0)
            first = np.array([_seconds(r.get("first_seen")) for r in rows])
            last = np.array([_seconds(r.get("last_seen")) for r in rows])
            created = np.array([_seconds(graph.vertices[e[0]][1].get("created_at")) for e in edges])
            attr[:, -2] = np.nan_to_num(_slog((last - first) / 86_400.0))
            attr[:, -1] = np.nan_to_num(_slog((first - created) / 86_400.0))
            attr = (attr - self.edge_mean) / self.edge_std
        src = np.array([index[e[0]] for e in edges], dtype=np.int64)
        dst = np.array([index[e[2]] for e in edges], dtype=np.int64)
        fwd = np.array([self.from_customer[e[1]] for e in edges], dtype=np.int64)
        rev = np.array([self.into_customer[e[1]] for e in edges], dtype=np.int64)
        # the batch encoder's order: forward relations sorted, each followed by its reverse
        keep_fwd = np.ones(m, dtype=bool)
        identifier = np.array([EDGE_TO_IDENTIFIER.get(e[1]) is not None for e in edges], dtype=bool)
        if self.enc.hub_degree is not None and m:
            keep_fwd = ~(identifier & (degree[dst] > self.enc.hub_degree))
        seed = index[graph.seed]
        pair_index, pair_type = np.zeros((2, 0), np.int64), np.zeros(0, np.int64)
        pair_attr = np.zeros((0, len(PAIR_FEATURES)))
        if self.shortcuts and m:
            private = identifier & (degree[dst] <= 1)
            keep_fwd &= ~private
            own = np.array([self.own_of.get(e[1], -1) for e in edges], dtype=np.int64)
            rev = np.where(private, own, rev)
            pair_index, pair_type, pair_attr = self._co_links(edges, identifier, src, dst, degree, first, created,
                                                              as_of_s, seed)
        if self.shortcuts:  # links' own attributes, then the pairwise block (zeros on links, as in the batch)
            attr = np.hstack([attr, np.zeros((m, len(PAIR_FEATURES)))])
            pair_attr = np.hstack([np.zeros((len(pair_type), self.edge_width)), pair_attr])
        else:
            pair_attr = np.zeros((0, self.edge_width))
        # the seed-only forward's order: messages into the seed (its identifiers' and its co-links), then
        # customer → identifier ones (every identifier here is the seed's), then identifier → other
        # customer ones, which no seed layer reads
        to_seed = src == seed
        parts = [(dst[to_seed], src[to_seed], rev[to_seed], attr[to_seed]),
                 (pair_index[0], pair_index[1], pair_type, pair_attr),
                 (src[keep_fwd], dst[keep_fwd], fwd[keep_fwd], attr[keep_fwd]),
                 (dst[~to_seed], src[~to_seed], rev[~to_seed], attr[~to_seed])]
        edge_index = np.concatenate([np.stack([a, b]) for a, b, _, _ in parts], axis=1)
        edge_type = np.concatenate([t for _, _, t, _ in parts])
        edge_attr = np.concatenate([e for _, _, _, e in parts])
        into_seed = int(to_seed.sum()) + len(pair_type)
        return edge_index, edge_type, edge_attr, (into_seed, into_seed + int(keep_fwd.sum()))

    def _co_links(self, edges: list, identifier: np.ndarray, src: np.ndarray, dst: np.ndarray, degree: np.ndarray,
                  first: np.ndarray, created: np.ndarray, as_of_s: float, seed: int) -> tuple[np.ndarray, ...]:
        """The batch encoder's co-links into the seed from the customers the request holds of each of its small
        identifiers: co-links are read in the last layer only, so no seed layer needs the others'."""
        cap = self.enc.hub_degree or 50
        small = np.flatnonzero(identifier & (degree[dst] >= 2) & (degree[dst] <= cap))
        a_all: list[int] = []
        b_all: list[int] = []
        groups: dict[int, list[int]] = {}
        for k in small.tolist():
            groups.setdefault(int(dst[k]), []).append(k)
        for members in groups.values():
            for i in members:
                if src[i] != seed:
                    continue
                for j in members:
                    if i != j:
                        a_all.append(i)
                        b_all.append(j)
        if not a_all:
            return np.zeros((2, 0), np.int64), np.zeros(0, np.int64), np.zeros((0, len(PAIR_FEATURES)))
        a, b = np.array(a_all), np.array(b_all)
        age = (as_of_s - created) / 86_400.0
        use = (as_of_s - first) / 86_400.0
        raw = pair_features(age[b], age[a], use[b], use[a], degree[dst[a]])
        kind = np.array([self.co_of[edges[k][1]] for k in a.tolist()], dtype=np.int64)
        return np.stack([src[b], src[a]]), kind, (raw - self.pair_mean) / self.pair_std


class FrameRequests:
    """Request graphs cut from a whole ``GraphFrame``: what the API would fetch, without a graph server.

    For notebooks and checks that run the serving path on a snapshot (the tests hold the API's live
    fetch to the same scores). Identifiers need their statistics in the frame, as every snapshot has them.
    """

    def __init__(self, frame: Any, hub_degree: int | None) -> None:
        import pandas as pd

        self.frame, self.hub_degree = frame, hub_degree
        self.rows: list[tuple[str, str, str, dict[str, Any]]] = []
        for (_, elabel, _), ef in sorted(frame.edges.items()):
            props = ef.drop(columns=["src", "dst"]).to_dict("records")
            self.rows += [(s, elabel, d, {k: _cell(v) for k, v in p.items()})
                          for s, d, p in zip(ef["src"], ef["dst"], props, strict=True)]
        table = pd.DataFrame({"src": [r[0] for r in self.rows], "dst": [r[2] for r in self.rows]})
        self.of_customer = table.groupby("src").indices if len(table) else {}
        self.of_identifier = table.groupby("dst").indices if len(table) else {}
        self.label_of = {vid: label for label, vf in frame.vertices.items() for vid in vf.index}

    def props(self, vid: str) -> dict[str, Any]:
        vf = self.frame.vertices[self.label_of[vid]]
        return {k: v for k, v in ((k, _cell(v)) for k, v in vf.loc[vid].items()) if v is not None}

    def is_hub(self, vid: str) -> bool:
        n = self.props(vid).get("n_customers", len(self.of_identifier.get(vid, ())))
        return self.hub_degree is not None and n > self.hub_degree

    def graph(self, seed: str) -> RequestGraph:
        vertices = {seed: (CUSTOMER, self.props(seed))}
        edges = [self.rows[i] for i in self.of_customer.get(seed, ())]
        for _, _, ident, _ in list(edges):
            vertices[ident] = (self.label_of[ident], self.props(ident))
            if self.is_hub(ident):
                continue
            for i in self.of_identifier.get(ident, ()):
                if self.rows[i][0] != seed:
                    edges.append(self.rows[i])
                    vertices[self.rows[i][0]] = (CUSTOMER, self.props(self.rows[i][0]))
        summaries = {}
        for cust in (v for v, (label, _) in vertices.items() if label == CUSTOMER):
            mine = [self.rows[i] for i in self.of_customer.get(cust, ())]
            counts: dict[str, int] = {}
            for r in mine:
                counts[r[1]] = counts.get(r[1], 0) + 1
            summaries[cust] = LinkSummary(
                counts, min((r[3]["first_seen"] for r in mine if r[3].get("first_seen")), default=None),
                max((r[3]["last_seen"] for r in mine if r[3].get("last_seen")), default=None))
        return RequestGraph(as_of=self.frame.as_of, seed=seed, vertices=vertices, edges=edges, summaries=summaries)


def _cell(value: Any) -> Any:
    """A frame cell as gremlinpython returns it: naive UTC datetimes, None for missing."""
    import pandas as pd

    if value is None or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC").tz_localize(None).to_pydatetime()
    return value
