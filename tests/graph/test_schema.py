from datetime import datetime, timezone

import pytest

from identigraph.errors import SchemaError
from identigraph.graph import schema
from identigraph.graph.records import aggregate, customer_vertex, event_edges

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def test_ids_are_deterministic_and_labelled():
    assert schema.customer_id("c1") == "customer:c1"
    assert schema.identifier_id("device", "abc") == "device:abc"
    e1 = schema.edge_id("customer:c1", "has_device", "device:abc")
    assert e1 == schema.edge_id("customer:c1", "has_device", "device:abc")
    assert e1 != schema.edge_id("customer:c1", "has_device", "device:abd")
    assert e1.startswith("e:") and len(e1) == 34


def test_edge_ids_do_not_collide_on_separator_tricks():
    a = schema.edge_id("customer:a|b", "has_card", "card:c")
    b = schema.edge_id("customer:a", "has_card", "card:b|c")
    assert a != b


def test_ip_is_normalised_and_validated():
    assert schema.identifier_id("ip", "2001:0db8:0000:0000:0000:0000:0000:0001") == "ip:2001:db8::1"
    assert schema.identifier_id("ip", " 10.0.0.1 ") == "ip:10.0.0.1"
    with pytest.raises(SchemaError, match=r"^ip: "):
        schema.identifier_id("ip", "999.1.1.1")


def test_schema_errors_name_the_field():
    with pytest.raises(SchemaError, match=r"^customer_id: "):
        schema.customer_id("")
    with pytest.raises(SchemaError, match=r"^label: "):
        schema.identifier_id("captain", "x")
    with pytest.raises(SchemaError, match=r"^first_seen: "):
        schema.EdgeRecord("customer:c", "has_device", "device:d", T0.replace(year=2027), T0)
    with pytest.raises(SchemaError, match=r"^to_id: "):
        schema.EdgeRecord("customer:c", "has_device", "card:d", T0, T0)
    with pytest.raises(SchemaError, match=r"^counts: "):
        schema.EdgeRecord("customer:c", "has_device", "device:d", T0, T0, {"n_bogus": 1})


def test_captain_label_is_reserved_not_built():
    assert "captain" in schema.RESERVED_LABELS
    assert "captain" not in schema.VERTEX_LABELS


def test_event_edges_pseudonymise_pii_and_count_by_type(pseudo):
    event = {"event_id": "e1", "event_type": "login", "customer_id": "c9", "occurred_at": "2026-06-23T00:00:22Z",
             "device_id": "dev1", "ip": "31.72.52.82", "email": "Jane.Doe@Example.com", "phone": "+971501234567",
             "card_fingerprint": None}
    edges = {e.label: e for e in event_edges(event, pseudo)}
    assert set(edges) == {"has_device", "used_ip", "has_email", "has_phone"}
    assert edges["has_email"].to_id == f"email:{pseudo.email('jane.doe@example.com')}"
    assert "Jane" not in edges["has_email"].to_id and "971501234567" not in edges["has_phone"].to_id
    assert edges["has_device"].counts == {"event_count": 1, "n_login": 1}
    assert edges["used_ip"].first_seen == datetime(2026, 6, 23, 0, 0, 22, tzinfo=timezone.utc)


def test_blank_identifiers_are_absent_as_in_the_spark_job(pseudo):
    event = {"event_id": "e1", "event_type": "login", "customer_id": "c9", "occurred_at": "2026-06-23T00:00:22Z",
             "device_id": "  ", "ip": "", "email": " ", "card_fingerprint": "k"}
    assert [e.label for e in event_edges(event, pseudo)] == ["has_card"]


def test_event_edges_reject_bad_input_with_field(pseudo):
    base = {"event_id": "e1", "event_type": "login", "customer_id": "c9", "occurred_at": "2026-06-23T00:00:22Z"}
    with pytest.raises(SchemaError, match=r"^event_type: "):
        event_edges({**base, "event_type": "teleport"}, pseudo)
    with pytest.raises(SchemaError, match=r"^occurred_at: "):
        event_edges({**base, "occurred_at": "yesterday"}, pseudo)
    with pytest.raises(SchemaError, match=r"^ip: "):
        event_edges({**base, "ip": "1.2.3"}, pseudo)
    with pytest.raises(SchemaError, match=r"^email: ") as info:
        event_edges({**base, "email": "no-at-sign"}, pseudo)
    assert "no-at-sign" not in str(info.value)  # PII is not echoed in errors


def test_aggregate_takes_min_max_and_sums(pseudo):
    def mk(ts, t):
        return {"event_id": ts, "event_type": t, "customer_id": "c1", "occurred_at": ts, "device_id": "d"}

    recs = []
    for ts, t in [("2026-01-05T00:00:00Z", "login"), ("2026-01-01T00:00:00Z", "signup"), ("2026-01-09T00:00:00Z", "login")]:
        recs += event_edges(mk(ts, t), pseudo)
    (edge,) = aggregate(recs)
    assert edge.first_seen.day == 1 and edge.last_seen.day == 9
    assert edge.counts == {"event_count": 3, "n_login": 2, "n_signup": 1}


def test_customer_vertex_validates_lifetime_value():
    v = customer_vertex({"customer_id": "c1", "created_at": "2025-01-01T00:00:00Z", "country": "AE", "lifetime_value": "12.5"})
    assert v.props["lifetime_value"] == 12.5 and v.props["country"] == "AE"
    with pytest.raises(SchemaError, match=r"^lifetime_value: "):
        customer_vertex({"customer_id": "c1", "created_at": "2025-01-01T00:00:00Z", "lifetime_value": -1})
    with pytest.raises(SchemaError, match=r"^created_at: "):
        customer_vertex({"customer_id": "c1", "lifetime_value": 1})
    with pytest.raises(SchemaError, match=r"^country: "):
        customer_vertex({"customer_id": "c1", "created_at": "2025-01-01T00:00:00Z", "country": "UAE"})
    bare = customer_vertex({"customer_id": "c1", "created_at": "2025-01-01T00:00:00Z"})
    assert bare.props["lifetime_value"] == 0.0  # missing means 0, as in the Spark job
