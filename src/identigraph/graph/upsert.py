"""Batched, idempotent upserts with ``mergeV``/``mergeE``.

One request carries many rows: ``inject(rows).unfold()`` feeds each row through one fixed traversal,
so the request's step count stays constant however many rows it carries and the row count alone bounds
its size. Edge merges keep ``first_seen`` = min and ``last_seen`` = max of what the graph has and what
the row says, so batches may arrive in any order and applying a batch twice changes nothing.

New edges take a cheaper path: each batch first asks which of its edge ids exist; rows for absent edges
are created with ``mergeE`` + ``onCreate`` alone, guarded by ``onMatch → fail()`` so an edge that appears
concurrently in between aborts that request (its transaction rolls back) and the batch is redone through
the merging path. Endpoint vertices are upserted first, in their own conflict-free request.

Counts have two modes. ``max`` (default) treats a row as the edge's cumulative state — what the
historical load produces — and is idempotent. ``add`` treats a row as a delta (the stream consumer,
which de-duplicates events before it writes) and is therefore not idempotent by itself.
"""

from __future__ import annotations

import itertools
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource, __
from gremlin_python.process.traversal import Bytecode, Cardinality, Direction, Merge, P, T

from identigraph.config import BatchLimits
from identigraph.errors import GraphError
from identigraph.graph.client import GraphClient
from identigraph.graph.schema import (
    CUSTOMER,
    EDGE_COUNT_PROPS,
    EDGE_TIME_PROPS,
    EdgeRecord,
    VertexRecord,
)

CountMode = Literal["max", "add"]


@dataclass
class UpsertStats:
    """Loads report throughput and batch sizes, which is how batch limits are tuned."""

    vertices: int = 0
    edges: int = 0
    requests: int = 0
    seconds: float = 0.0
    retries: int = 0
    batch_sizes: list[int] = field(default_factory=list, repr=False)

    @property
    def elements(self) -> int:
        return self.vertices + self.edges

    @property
    def elements_per_s(self) -> float:
        return self.elements / self.seconds if self.seconds > 0 else 0.0


def count_steps(bytecode: Bytecode) -> int:
    """Steps in a request, nested traversals included — what Neptune's per-request step limit counts."""
    total = 0
    for instruction in bytecode.step_instructions:
        total += 1
        for arg in instruction[1:]:
            if isinstance(arg, GraphTraversal):
                total += count_steps(arg.bytecode)
            elif isinstance(arg, Bytecode):
                total += count_steps(arg)
    return total


def _vertex_rows(records: Sequence[VertexRecord]) -> list[dict[Any, Any]]:
    return [{"k": {T.id: r.id, T.label: r.label}, "p": r.props} for r in records]


def _inject(g: GraphTraversalSource, rows: list[Any]) -> GraphTraversal:
    """``g.inject(rows)`` without gremlinpython's deep copy of the argument.

    The builder walks every nested dict/list of an argument looking for child traversals (~30 µs a row);
    rows hold only plain values, so the list is put into the instruction as it is.
    """
    t = g.inject(0)
    t.bytecode.step_instructions[-1] = ["inject", rows]
    return t


def _vertex_traversal(g: GraphTraversalSource, rows: list[dict[Any, Any]], keys: tuple[str, ...],
                      cleared: tuple[str, ...] = ()) -> GraphTraversal:
    t = _inject(g, rows).unfold().as_("r").merge_v(__.select("r").select("k"))
    if cleared:  # a property the record says is now empty (e.g. last_block_rule after a rule-less block)
        t = t.side_effect(__.properties(*cleared).drop())
    for key in keys:
        # single cardinality: Neptune's default is set, which would pile up old values
        t = t.property(Cardinality.single, key, __.select("r").select("p").select(key))
    return t.count()


def edge_rows(records: Sequence[EdgeRecord], counts: CountMode) -> list[dict[Any, Any]]:
    """The fixed merge traversal reads one flat row per edge; ``add`` rows also carry the zero counts to create with."""
    rows = []
    for r in records:
        props = r.props()
        row = {"e": {T.id: r.id, T.label: r.label, Direction.OUT: r.from_id, Direction.IN: r.to_id}, "p": props}
        if counts == "add":
            # Created with zero counts so the summing merge below adds the row's delta exactly once.
            row["c"] = {**{k: props[k] for k in EDGE_TIME_PROPS}, **{k: 0 for k in EDGE_COUNT_PROPS}}
        rows.append(row)
    return rows


def _merged(key: str, reducer: str) -> GraphTraversal:
    both = __.union(__.values(key), __.select("r").select("p").select(key))
    return getattr(both, reducer)()


def edge_merge(rows_as_r: GraphTraversal, counts: CountMode) -> GraphTraversal:
    """The order-independent merge of row maps labelled ``r``: min/max of first/last seen, and max (states)
    or sum (deltas) of counts. Shared by the batched upserts and the stream writer."""
    t = (
        rows_as_r
        .merge_e(__.select("r").select("e"))
        # max/min of a value with itself is the value: in max mode a new edge can start from the row
        .option(Merge.on_create, __.select("r").select("c" if counts == "add" else "p"))
        .property("first_seen", _merged("first_seen", "min_"))
        .property("last_seen", _merged("last_seen", "max_"))
    )
    reducer = "max_" if counts == "max" else "sum_"
    for key in EDGE_COUNT_PROPS:
        t = t.property(key, _merged(key, reducer))
    return t


def _edge_traversal(g: GraphTraversalSource, rows: list[dict[Any, Any]], counts: CountMode) -> GraphTraversal:
    return edge_merge(_inject(g, rows).unfold().as_("r"), counts).count()


CREATE_GUARD = "identigraph: edge appeared concurrently"


def _create_traversal(g: GraphTraversalSource, rows: list[dict[Any, Any]]) -> GraphTraversal:
    """Creates edges known to be absent; an edge that exists after all fails the whole request."""
    return (
        _inject(g, rows).unfold().as_("r")
        .merge_e(__.select("r").select("e"))
        .option(Merge.on_create, __.select("r").select("p"))
        .option(Merge.on_match, __.fail(CREATE_GUARD))
        .count()
    )


def _endpoint_traversal(g: GraphTraversalSource, rows: list[dict[Any, Any]]) -> GraphTraversal:
    return _inject(g, rows).unfold().merge_v().count()


def recount_identifier_stats(t: GraphTraversal) -> GraphTraversal:
    """Set ``schema.IDENTIFIER_PROPS`` on the identifier vertices ``t`` yields, recounted from their edges.

    The upserter's way of keeping the statistics exact whatever order states arrive in (a snapshot loaded
    over a graph the stream already moved on, a customer whose block changed): a write-side recount of the
    identifiers a batch touched, so reads never count. Every vertex must have at least one edge (identifiers
    exist only as edge endpoints).
    """
    return (t.property(Cardinality.single, "n_customers", __.in_e().count())
            .property(Cardinality.single, "first_seen", __.in_e().values("first_seen").min_())
            .property(Cardinality.single, "last_seen", __.in_e().values("last_seen").max_())
            .property(Cardinality.single, "n_blocked", __.in_().has("blocked", True).count())
            .property(Cardinality.single, "n_contested", __.in_().has("n_block_reviews", P.gt(0)).count())
            .count())


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


class Upserter:
    """One load's limits and count mode; its lanes give each identifier one writer, so transactions do not conflict."""

    def __init__(self, client: GraphClient, limits: BatchLimits | None = None, counts: CountMode = "max") -> None:
        self.client = client
        self.limits = limits or client.settings.graph.batch
        self.counts = counts
        self.create_fallbacks = 0  # batches whose create-only request met a concurrently created edge
        self._lock = threading.Lock()

    def _check_steps(self, probe: GraphTraversal) -> None:
        steps = count_steps(probe.bytecode)
        if steps > self.limits.max_steps:
            raise GraphError(f"one upsert request would have {steps} steps, over graph.batch.max_steps="
                             f"{self.limits.max_steps}")

    def _run(self, jobs: Iterator[tuple[Any, int, int]], stats: UpsertStats, kind: str,
             direct: bool = False) -> UpsertStats:
        """Run (build, n_rows, lane) jobs: one writer thread per lane, jobs of a lane in order.

        Lanes let callers keep elements that conflict (a hub identifier's edges) on one writer, so
        concurrent transactions never fight over them. In-flight work is bounded (2 × lanes in all).
        ``direct`` jobs are callables that make their own requests instead of traversal builders.
        """
        retries_before, requests_before = self.client.retries, self.client.requests
        start = time.perf_counter()
        in_flight: set[Future] = set()
        cap = self.limits.concurrency

        def account(fut: Future) -> None:
            n = fut.result()
            setattr(stats, kind, getattr(stats, kind) + n)
            stats.batch_sizes.append(n)

        lanes = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"upsert-{i}") for i in range(cap)]
        try:
            for build, n, lane in jobs:
                if len(in_flight) >= 2 * cap:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        account(fut)
                pool = lanes[lane % cap]
                in_flight.add(pool.submit(build) if direct else pool.submit(self._submit, build, n))
            for fut in in_flight:
                account(fut)
        finally:
            for pool in lanes:
                pool.shutdown(wait=True, cancel_futures=True)
        stats.seconds += time.perf_counter() - start
        stats.retries += self.client.retries - retries_before
        stats.requests += self.client.requests - requests_before
        return stats

    def _submit(self, build: Any, n: int) -> int:
        # A delta (add mode) whose reply was lost may have committed: re-sending it could count twice, so
        # only a rolled-back conflict is retried. Max-mode rows are states, safe to re-send.
        written = self.client.submit(build, fetch="next", idempotent=self.counts == "max")
        if written != n:
            raise GraphError(f"upsert request wrote {written} of {n} rows")
        return n

    def vertices(self, records: Iterable[VertexRecord], stats: UpsertStats | None = None) -> UpsertStats:
        stats = stats or UpsertStats()
        lanes = itertools.count()

        def jobs() -> Iterator[tuple[Any, int, int]]:
            for batch in _batches(records, self.limits.max_records):
                # one request per shape: which properties a row sets, and which it clears (None)
                groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[VertexRecord]] = {}
                for rec in batch:
                    keys = tuple(sorted(k for k, v in rec.props.items() if v is not None))
                    cleared = tuple(sorted(k for k, v in rec.props.items() if v is None))
                    clean = VertexRecord(rec.id, rec.label, {k: rec.props[k] for k in keys})
                    groups.setdefault((keys, cleared), []).append(clean)
                for (keys, cleared), group in groups.items():
                    lane = next(lanes)  # vertices never conflict with each other: spread them evenly
                    yield (lambda group=group, keys=keys, cleared=cleared: self._vertex_batch(group, keys, cleared),
                           len(group), lane)

        return self._run(jobs(), stats, "vertices", direct=True)

    def _vertex_batch(self, group: list[VertexRecord], keys: tuple[str, ...], cleared: tuple[str, ...]) -> int:
        """Write one group; a customer's block status feeds its identifiers' statistics, so recount those."""
        rows = _vertex_rows(group)
        n = self._submit(lambda g: _vertex_traversal(g, rows, keys, cleared), len(rows))
        customers = [r.id for r in group if r.label == CUSTOMER]
        if customers:  # on a first load the customers have no edges yet: an empty, cheap request
            self.client.submit(lambda g: recount_identifier_stats(g.V(*customers).out().dedup()), "next")
        return n

    def edges(self, records: Iterable[EdgeRecord], stats: UpsertStats | None = None) -> UpsertStats:
        """Creates missing endpoint vertices bare; their properties come from ``vertices``.

        Each identifier's edges go to one lane (by hash of its id): a carrier NAT IP with thousands of
        customers is then written by one writer at a time instead of conflicting with every other one.
        """
        stats = stats or UpsertStats()
        self._check_steps(_edge_traversal(self.client.g(), [], self.counts))
        cap, size = self.limits.concurrency, self.limits.max_records
        # Within a lane batches run in order, so an endpoint written by an earlier batch of the same lane
        # exists when a later one needs it; other lanes keep their own record.
        endpoints_done: list[set[str]] = [set() for _ in range(cap)]

        def job(batch: list[EdgeRecord], lane: int) -> tuple[Any, int, int]:
            done = endpoints_done[lane]
            endpoints: dict[str, str] = {}
            for r in batch:
                for vid, label in ((r.from_id, CUSTOMER), (r.to_id, r.identifier_label)):
                    if vid not in done:
                        endpoints[vid] = label
            done.update(endpoints)
            return (lambda: self._edge_batch(batch, endpoints)), len(batch), lane

        def jobs() -> Iterator[tuple[Any, int, int]]:
            pending: list[list[EdgeRecord]] = [[] for _ in range(cap)]
            for rec in records:
                lane = zlib.crc32(rec.to_id.encode()) % cap if cap > 1 else 0
                pending[lane].append(rec)
                if len(pending[lane]) >= size:
                    yield job(pending[lane], lane)
                    pending[lane] = []
            for lane, batch in enumerate(pending):
                if batch:
                    yield job(batch, lane)

        return self._run(jobs(), stats, "edges", direct=True)

    def _edge_batch(self, batch: list[EdgeRecord], endpoints: dict[str, str]) -> int:
        """Endpoints, then new edges (create-only) and existing ones (merge). Returns rows written."""
        if endpoints:
            vrows = [{T.id: vid, T.label: label} for vid, label in endpoints.items()]
            self._submit(lambda g: _endpoint_traversal(g, vrows), len(vrows))
        rows = edge_rows(batch, self.counts)
        if self.counts == "max":
            ids = [r.id for r in batch]
            existing = set(self.client.submit(lambda g: g.E(*ids).id_()))
            fresh = [row for row, r in zip(rows, batch, strict=True) if r.id not in existing]
            rows = [row for row, r in zip(rows, batch, strict=True) if r.id in existing]
            if fresh:
                try:
                    self._submit(lambda g: _create_traversal(g, fresh), len(fresh))
                except GraphError as exc:
                    if CREATE_GUARD not in str(exc):
                        raise
                    with self._lock:
                        self.create_fallbacks += 1
                    rows = rows + fresh  # the request rolled back: merge them all instead
        if rows:
            self._submit(lambda g: _edge_traversal(g, rows, self.counts), len(rows))
        identifiers = sorted({r.to_id for r in batch})  # one lane owns them: no other writer recounts at once
        self.client.submit(lambda g: recount_identifier_stats(g.V(*identifiers)), "next")
        return len(batch)
