"""Batched, idempotent upserts with ``mergeV``/``mergeE``.

One request carries many rows: ``inject(rows).unfold()`` feeds each row through one fixed traversal,
so the request's step count stays constant however many rows it carries and the row count alone bounds
its size. Edge merges keep ``first_seen`` = min and ``last_seen`` = max of what the graph has and what
the row says, so batches may arrive in any order and applying a batch twice changes nothing.

Counts have two modes. ``max`` (default) treats a row as the edge's cumulative state — what the
historical load produces — and is idempotent. ``add`` treats a row as a delta (the stream consumer,
which de-duplicates events before it writes) and is therefore not idempotent by itself.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Literal

from gremlin_python.process.graph_traversal import GraphTraversal, GraphTraversalSource, __
from gremlin_python.process.traversal import Bytecode, Cardinality, Direction, Merge, T

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


def _vertex_traversal(g: GraphTraversalSource, rows: list[dict[Any, Any]], keys: tuple[str, ...]) -> GraphTraversal:
    t = g.inject(rows).unfold().as_("r").merge_v(__.select("r").select("k"))
    for key in keys:
        # single cardinality: Neptune's default is set, which would pile up old values
        t = t.property(Cardinality.single, key, __.select("r").select("p").select(key))
    return t.count()


def _edge_rows(records: Sequence[EdgeRecord], counts: CountMode) -> list[dict[Any, Any]]:
    rows = []
    for r in records:
        props = r.props()
        row = {
            "s": {T.id: r.from_id, T.label: CUSTOMER},
            "d": {T.id: r.to_id, T.label: r.identifier_label},
            "e": {T.id: r.id, T.label: r.label, Direction.OUT: r.from_id, Direction.IN: r.to_id},
            "p": props,
        }
        if counts == "add":
            # Created with zero counts so the summing merge below adds the row's delta exactly once.
            row["c"] = {**{k: props[k] for k in EDGE_TIME_PROPS}, **{k: 0 for k in EDGE_COUNT_PROPS}}
        rows.append(row)
    return rows


def _merged(key: str, reducer: str) -> GraphTraversal:
    both = __.union(__.values(key), __.select("r").select("p").select(key))
    return getattr(both, reducer)()


def _edge_traversal(g: GraphTraversalSource, rows: list[dict[Any, Any]], counts: CountMode) -> GraphTraversal:
    t = (
        g.inject(rows).unfold().as_("r")
        .merge_v(__.select("r").select("s"))
        .merge_v(__.select("r").select("d"))
        .merge_e(__.select("r").select("e"))
        # max/min of a value with itself is the value: in max mode a new edge can start from the row
        .option(Merge.on_create, __.select("r").select("c" if counts == "add" else "p"))
        .property("first_seen", _merged("first_seen", "min_"))
        .property("last_seen", _merged("last_seen", "max_"))
    )
    reducer = "max_" if counts == "max" else "sum_"
    for key in EDGE_COUNT_PROPS:
        t = t.property(key, _merged(key, reducer))
    return t.count()


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


class Upserter:
    def __init__(self, client: GraphClient, limits: BatchLimits | None = None, counts: CountMode = "max") -> None:
        self.client = client
        self.limits = limits or client.settings.graph.batch
        self.counts = counts

    def _check_steps(self, probe: GraphTraversal) -> None:
        steps = count_steps(probe.bytecode)
        if steps > self.limits.max_steps:
            raise GraphError(f"one upsert request would have {steps} steps, over graph.batch.max_steps="
                             f"{self.limits.max_steps}")

    def _run(self, jobs: Iterator[tuple[Any, int]], stats: UpsertStats, kind: str) -> UpsertStats:
        """Run (build, n_rows) jobs with bounded concurrency and bounded in-flight work."""
        retries_before = self.client.retries
        start = time.perf_counter()
        in_flight: set[Future] = set()
        cap = self.limits.concurrency

        def account(fut: Future) -> None:
            n = fut.result()
            setattr(stats, kind, getattr(stats, kind) + n)
            stats.requests += 1
            stats.batch_sizes.append(n)

        with ThreadPoolExecutor(max_workers=cap, thread_name_prefix="upsert") as pool:
            for build, n in jobs:
                if len(in_flight) >= 2 * cap:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    for fut in done:
                        account(fut)
                in_flight.add(pool.submit(self._submit, build, n))
            for fut in in_flight:
                account(fut)
        stats.seconds += time.perf_counter() - start
        stats.retries += self.client.retries - retries_before
        return stats

    def _submit(self, build: Any, n: int) -> int:
        written = self.client.submit(build, fetch="next")
        if written != n:
            raise GraphError(f"upsert request wrote {written} of {n} rows")
        return n

    def vertices(self, records: Iterable[VertexRecord], stats: UpsertStats | None = None) -> UpsertStats:
        stats = stats or UpsertStats()

        def jobs() -> Iterator[tuple[Any, int]]:
            for batch in _batches(records, self.limits.max_records):
                groups: dict[tuple[str, ...], list[VertexRecord]] = {}
                for rec in batch:
                    keys = tuple(sorted(k for k, v in rec.props.items() if v is not None))
                    clean = VertexRecord(rec.id, rec.label, {k: rec.props[k] for k in keys})
                    groups.setdefault(keys, []).append(clean)
                for keys, group in groups.items():
                    rows = _vertex_rows(group)
                    yield (lambda g, rows=rows, keys=keys: _vertex_traversal(g, rows, keys)), len(rows)

        return self._run(jobs(), stats, "vertices")

    def edges(self, records: Iterable[EdgeRecord], stats: UpsertStats | None = None) -> UpsertStats:
        """Creates missing endpoint vertices bare; their properties come from ``vertices``."""
        stats = stats or UpsertStats()

        def jobs() -> Iterator[tuple[Any, int]]:
            first = True
            for batch in _batches(records, self.limits.max_records):
                rows = _edge_rows(batch, self.counts)
                build = (lambda g, rows=rows: _edge_traversal(g, rows, self.counts))
                if first:
                    self._check_steps(_edge_traversal(self.client.g(), rows[:1], self.counts))
                    first = False
                yield build, len(rows)

        return self._run(jobs(), stats, "edges")
