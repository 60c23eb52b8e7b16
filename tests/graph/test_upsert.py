"""Batched upserts against the real Gremlin Server (TinkerTransactionGraph)."""

import random
from datetime import datetime, timedelta, timezone

import pytest

from identigraph.config import BatchLimits
from identigraph.graph import queries
from identigraph.graph.records import as_utc
from identigraph.graph.schema import EdgeRecord, VertexRecord, customer_id, identifier_id
from identigraph.graph.upsert import Upserter, _edge_traversal, count_steps, edge_rows

pytestmark = pytest.mark.services
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _world(n_edges=300, seed=1):
    rnd = random.Random(seed)
    edges, vertices = [], {}
    for i in range(n_edges):
        cid = customer_id(f"c{rnd.randrange(60)}")
        kind, label = rnd.choice([("device", "has_device"), ("ip", "used_ip"), ("card", "has_card")])
        raw = f"10.1.{rnd.randrange(4)}.{rnd.randrange(20)}" if kind == "ip" else f"{kind}{rnd.randrange(50)}"
        t = T0 + timedelta(hours=rnd.randrange(2000))
        edges.append(EdgeRecord(cid, label, identifier_id(kind, raw), t, t + timedelta(hours=rnd.randrange(50)),
                                {"event_count": rnd.randrange(1, 9), "n_login": 1}))
        vertices[cid] = VertexRecord(cid, "customer", {"country": rnd.choice(["AE", "SA"]), "lifetime_value": 10.0 * i})
    unique = list({e.id: e for e in edges}.values())
    return list(vertices.values()), unique


def test_apply_twice_leaves_graph_as_after_once(graph):
    vertices, edges = _world()
    up = Upserter(graph, BatchLimits(max_records=37, concurrency=2))
    up.vertices(vertices)
    up.edges(edges)
    once = queries.dump(graph)
    stats = up.edges(edges)
    up.vertices(vertices)
    assert queries.dump(graph) == once
    assert stats.edges == len(edges)
    assert max(stats.batch_sizes) <= 37  # the record bound holds
    assert len(once[1]) == len(edges)


def test_out_of_order_batches_keep_min_first_seen_and_max_last_seen(graph):
    cid, dev = customer_id("c1"), identifier_id("device", "d1")
    parts = [  # the same edge seen in three partial batches, delivered late-first
        EdgeRecord(cid, "has_device", dev, T0 + timedelta(days=5), T0 + timedelta(days=9), {"event_count": 4}),
        EdgeRecord(cid, "has_device", dev, T0 + timedelta(days=1), T0 + timedelta(days=2), {"event_count": 2}),
        EdgeRecord(cid, "has_device", dev, T0 + timedelta(days=3), T0 + timedelta(days=4), {"event_count": 7}),
    ]
    up = Upserter(graph, BatchLimits(max_records=1))
    for p in parts:
        up.edges([p])
    (edge,) = queries.customer_identity(graph, "c1")
    assert as_utc(edge["first_seen"]) == T0 + timedelta(days=1)
    assert as_utc(edge["last_seen"]) == T0 + timedelta(days=9)
    assert edge["event_count"] == 7  # max mode: rows are cumulative states


def test_add_mode_sums_deltas(graph):
    cid, card = customer_id("c2"), identifier_id("card", "k1")
    up = Upserter(graph, counts="add")
    up.edges([EdgeRecord(cid, "has_card", card, T0, T0, {"event_count": 1, "n_booking": 1})])
    up.edges([EdgeRecord(cid, "has_card", card, T0 - timedelta(days=1), T0, {"event_count": 2, "n_booking": 1,
                                                                            "n_add_payment_method": 1})])
    (edge,) = queries.customer_identity(graph, "c2")
    assert (edge["event_count"], edge["n_booking"], edge["n_add_payment_method"]) == (3, 2, 1)
    assert as_utc(edge["first_seen"]) == T0 - timedelta(days=1)


def test_vertex_properties_are_single_valued_and_updated(graph):
    up = Upserter(graph)
    cid = customer_id("c3")
    up.vertices([VertexRecord(cid, "customer", {"country": "AE", "lifetime_value": 1.0})])
    up.vertices([VertexRecord(cid, "customer", {"country": "SA"})])
    vertices, _ = queries.dump(graph)
    (v,) = [v for v in vertices if v["id"] == cid]
    assert v["country"] == "SA" and v["lifetime_value"] == 1.0  # absent keys are left alone
    n_props = graph.submit(lambda g: g.V(cid).properties().count(), "next")
    assert n_props == 2
    up.vertices([VertexRecord(cid, "customer", {"country": "SA", "lifetime_value": None})])
    vertices, _ = queries.dump(graph)
    (v,) = [v for v in vertices if v["id"] == cid]
    assert "lifetime_value" not in v  # an explicit None clears the property (a snapshot's empty cell)


def test_edges_create_missing_endpoints(graph):
    Upserter(graph).edges([EdgeRecord(customer_id("new"), "used_ip", identifier_id("ip", "::1"), T0, T0)])
    counts = queries.counts(graph)
    assert counts == {"v:customer": 1, "v:ip": 1, "e:used_ip": 1}


def test_request_step_count_is_constant_in_rows(graph):
    _, edges = _world(50)
    g = graph.g()
    one = count_steps(_edge_traversal(g, edge_rows(edges[:1], "max"), "max").bytecode)
    many = count_steps(_edge_traversal(g, edge_rows(edges, "max"), "max").bytecode)
    assert one == many and one < 1500
    with pytest.raises(Exception, match="max_steps"):
        Upserter(graph, BatchLimits(max_steps=10)).edges(edges[:3])


def test_edge_created_concurrently_during_fast_path_is_merged_not_overwritten(graph, settings, monkeypatch):
    """The create-only request fails on an edge that appeared after the existence check; the batch is merged."""
    from identigraph.graph import upsert as upsert_mod
    from identigraph.graph.client import GraphClient

    cid, dev = customer_id("race"), identifier_id("device", "race")
    other = GraphClient(settings)
    real_create = upsert_mod._create_traversal
    fired = []

    def racing_create(g, rows):
        if not fired:  # another writer creates the edge between our existence check and our create
            fired.append(1)
            Upserter(other).edges([EdgeRecord(cid, "has_device", dev, T0 - timedelta(days=3), T0, {"event_count": 9})])
        return real_create(g, rows)

    monkeypatch.setattr(upsert_mod, "_create_traversal", racing_create)
    up = Upserter(graph)
    up.edges([EdgeRecord(cid, "has_device", dev, T0, T0 + timedelta(days=2), {"event_count": 4})])
    other.close()
    assert fired and up.create_fallbacks == 1
    (edge,) = queries.customer_identity(graph, "race")
    assert as_utc(edge["first_seen"]) == T0 - timedelta(days=3)
    assert as_utc(edge["last_seen"]) == T0 + timedelta(days=2)
    assert edge["event_count"] == 9


def _expected_stats(vertices, edges):
    """Identifier statistics recomputed in Python from the records the test wrote."""
    status = {v.id: v.props for v in vertices}
    out = {}
    for e in edges:
        s = out.setdefault(e.to_id, {"n_customers": 0, "first_seen": e.first_seen, "last_seen": e.last_seen,
                                     "n_blocked": 0, "n_contested": 0})
        s["n_customers"] += 1
        s["first_seen"], s["last_seen"] = min(s["first_seen"], e.first_seen), max(s["last_seen"], e.last_seen)
        s["n_blocked"] += bool(status.get(e.from_id, {}).get("blocked"))
        s["n_contested"] += (status.get(e.from_id, {}).get("n_block_reviews") or 0) > 0
    return out


def _graph_stats(graph):
    vertices, _ = queries.dump(graph)
    return {v["id"]: {k: (as_utc(v[k]) if k.endswith("_seen") else v[k])
                      for k in ("n_customers", "first_seen", "last_seen", "n_blocked", "n_contested")}
            for v in vertices if v["label"] != "customer"}


def test_identifier_statistics_follow_edges_and_block_changes(graph):
    vertices, edges = _world(seed=3)
    rnd = random.Random(3)
    vertices = [VertexRecord(v.id, v.label, {**v.props, "blocked": rnd.random() < 0.3,
                                             "n_block_reviews": rnd.choice([0, 0, 1])}) for v in vertices]
    up = Upserter(graph, BatchLimits(max_records=23, concurrency=2))
    up.vertices(vertices)
    up.edges(edges)
    assert _graph_stats(graph) == _expected_stats(vertices, edges)
    # blocks lifted and new ones placed after the edges exist: the customers' identifiers are recounted
    flipped = [VertexRecord(v.id, v.label, {**v.props, "blocked": not v.props["blocked"]}) for v in vertices[:15]]
    up.vertices(flipped)
    now = {v.id: v for v in vertices} | {v.id: v for v in flipped}
    assert _graph_stats(graph) == _expected_stats(list(now.values()), edges)
    assert any(s["n_blocked"] for s in _graph_stats(graph).values())
