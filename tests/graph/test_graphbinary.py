"""The fast GraphBinary reader decodes real server responses exactly as gremlinpython's reader does."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import gremlin_python.driver.protocol as protocol
import pytest
from gremlin_python.driver.serializer import GraphBinarySerializersV1
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import T
from gremlin_python.statics import long

from identigraph.graph import queries
from identigraph.graph.graphbinary import FastGraphBinarySerializer, _Unsupported
from identigraph.graph.schema import EdgeRecord, VertexRecord, customer_id, identifier_id
from identigraph.graph.upsert import Upserter

pytestmark = pytest.mark.services
T0 = datetime(2026, 1, 1, 12, 30, 45, 123000, tzinfo=timezone.utc)


def _plain(value):
    """Traversers compared by object and bulk (their __eq__ looks at the object only)."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if hasattr(value, "bulk") and hasattr(value, "object"):
        return ("traverser", _plain(value.object), value.bulk)
    return value


def test_fast_reader_equals_gremlinpython_on_real_responses(graph, monkeypatch):
    cid, dev = customer_id("gb-1"), identifier_id("device", "gb-d")
    up = Upserter(graph)
    up.vertices([VertexRecord(cid, "customer", {"created_at": T0, "country": "AE", "lifetime_value": 12.5,
                                                "blocked": True, "n_blocks": 2, "last_block_reason": "fraud ü"})])
    up.edges([EdgeRecord(cid, "has_device", dev, T0, T0 + timedelta(days=3), {"event_count": 5, "n_login": 4})])
    raw: list[bytes] = []
    original = protocol.GremlinServerWSProtocol.data_received

    def spy(self, message, results):
        raw.append(message)
        return original(self, message, results)

    monkeypatch.setattr(protocol.GremlinServerWSProtocol, "data_received", spy)
    traversals = [
        lambda g: g.V(cid).element_map(),
        lambda g: g.V(cid).value_map().by(__.unfold()),
        lambda g: g.V(cid).out_e().element_map(),
        lambda g: g.V().group_count().by(T.label),
        lambda g: g.V(cid).out().values("n_customers", "first_seen"),
        lambda g: g.inject(1, 2, 2, 3).aggregate("x").cap("x"),        # a bulk set
        lambda g: g.inject([1.5, None, True, "x"], {"a": [1, {"b": None}]}),
        lambda g: g.V(cid).out().path(),                               # vertices and paths: the fallback
        lambda g: g.V(cid).out_e(),                                    # an edge: the fallback
        lambda g: g.inject(0).project("a", "b").by(__.constant(long(2**40))).by(__.constant(-7)),
    ]
    for build in traversals:
        graph.submit(build)
    assert len(raw) >= len(traversals)
    stock, fast = GraphBinarySerializersV1(), FastGraphBinarySerializer()
    fell_back = 0
    for message in raw:
        try:
            FastGraphBinarySerializer._fast(message)
        except _Unsupported:
            fell_back += 1
        ours, theirs = fast.deserialize_message(message), stock.deserialize_message(message)
        assert _plain(ours["result"]["data"]) == _plain(theirs["result"]["data"])
        assert ours["status"] == theirs["status"] and ours["requestId"] == theirs["requestId"]
    assert fell_back == 2  # the path and the edge; everything else took the fast reader
    assert queries.customer_identity(graph, "gb-1")[0]["first_seen"] == T0.replace(tzinfo=None)
