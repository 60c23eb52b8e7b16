"""Read queries and admin against the real server."""

from datetime import datetime, timedelta, timezone

import pytest

from identigraph.config import load_settings
from identigraph.errors import GraphError
from identigraph.graph import queries
from identigraph.graph.client import GraphClient
from identigraph.graph.schema import EdgeRecord, VertexRecord, customer_id, identifier_id
from identigraph.graph.upsert import Upserter

pytestmark = pytest.mark.services
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def _hub_world(graph, hub_customers=30):
    up = Upserter(graph)
    edges = [EdgeRecord(customer_id("seed"), "has_device", identifier_id("device", "shared"), T0, T0),
             EdgeRecord(customer_id("seed"), "used_ip", identifier_id("ip", "100.64.0.1"), T0, T0)]
    edges += [EdgeRecord(customer_id("buddy"), "has_device", identifier_id("device", "shared"), T0, T0 + timedelta(days=1))]
    edges += [EdgeRecord(customer_id("buddy"), "has_card", identifier_id("card", "k"), T0, T0)]
    edges += [EdgeRecord(customer_id("far"), "has_card", identifier_id("card", "k"), T0, T0)]
    edges += [EdgeRecord(customer_id(f"nat{i}"), "used_ip", identifier_id("ip", "100.64.0.1"), T0,
                         T0 + timedelta(minutes=i)) for i in range(hub_customers)]
    up.edges(edges)
    up.vertices([VertexRecord(customer_id("buddy"), "customer", {"country": "AE"})])


def test_identity_and_shared_customers(graph):
    _hub_world(graph)
    identity = queries.customer_identity(graph, "seed")
    assert [(e["identifier_label"], e["identifier_id"]) for e in identity] == [
        ("device", "device:shared"), ("ip", "ip:100.64.0.1")]
    shared = {r["identifier_id"]: r for r in queries.shared_customers(graph, "seed", per_identifier_cap=5)}
    assert shared["device:shared"]["customers_total"] == 2
    assert shared["device:shared"]["others"] == ["customer:buddy"]
    assert shared["ip:100.64.0.1"]["customers_total"] == 31
    assert len(shared["ip:100.64.0.1"]["others"]) == 5 and "customer:seed" not in shared["ip:100.64.0.1"]["others"]


def test_neighbourhood_caps_hub_identifiers_and_reports_true_degree(graph):
    _hub_world(graph)
    hood = queries.neighbourhood(graph, ["seed"], hops=2, fanout_cap=5, max_customers=100)
    assert hood.identifier_degree["ip:100.64.0.1"] == 31
    assert "ip:100.64.0.1" in hood.truncated_identifiers
    customers = set(hood.customers)
    assert {"customer:seed", "customer:buddy", "customer:far"} <= customers  # 2 hops via device then card
    # the cap takes whichever links the graph returns first (no order on a hub), so only the count is fixed
    assert len([c for c in customers if c.startswith("customer:nat")]) == 5
    assert hood.vertices["customer:buddy"]["country"] == "AE"
    one_hop = queries.neighbourhood(graph, ["seed"], hops=1, fanout_cap=5)
    assert "customer:far" not in one_hop.customers


def test_neighbourhood_node_cap(graph):
    _hub_world(graph)
    hood = queries.neighbourhood(graph, ["seed"], hops=1, fanout_cap=50, max_customers=4)
    assert len(hood.customers) == 4 and hood.truncated_by_node_cap


def test_clear_empties_and_refuses_neptune(graph, settings):
    _hub_world(graph)
    assert queries.clear(graph, batch=7) > 30
    assert queries.counts(graph) == {}
    neptune = load_settings(environ={}, overrides={"graph": {"kind": "neptune", "host": "db.example"}})
    with pytest.raises(GraphError, match="allow_clear_neptune"):
        queries.clear(GraphClient(neptune))
