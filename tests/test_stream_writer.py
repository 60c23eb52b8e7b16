"""Exactly-once in effect: markers and deltas in one transaction, against the real Gremlin Server."""

import json
import random
from datetime import datetime, timedelta, timezone

import pytest

from identigraph.etl.stream_events import parse_message
from identigraph.etl.stream_writer import MARKER_LABEL, StreamWriter
from identigraph.graph import queries
from identigraph.graph.records import aggregate, as_utc, event_edges
from identigraph.synth import SynthParams, generate_world

pytestmark = pytest.mark.services
T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)


def _event(i, customer="c1", minutes=0, **ids):
    body = {"schema_version": 1, "event_id": f"ev{i}", "event_type": "login", "customer_id": customer,
            "occurred_at": (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z"), **ids}
    return parse_message(json.dumps(body))


def _edges(graph):
    return [e for e in queries.dump(graph)[1]]


def test_redelivery_and_repeats_count_once_and_order_does_not_matter(graph, pseudo):
    w = StreamWriter(graph, pseudo)
    late, early = _event(2, minutes=60, device_id="d1"), _event(1, minutes=0, device_id="d1")
    first = w.write([late, late])  # a repeat inside the batch
    assert (first.applied, first.duplicates) == (1, 1)
    second = w.write([early, late])  # an older event arrives late, plus a redelivery
    assert (second.applied, second.duplicates) == (1, 1)
    once = _edges(graph)
    again = w.write([early, late])
    assert (again.applied, again.duplicates) == (0, 2) and _edges(graph) == once
    (edge,) = once
    assert edge["event_count"] == 2 and edge["n_login"] == 2
    assert as_utc(edge["first_seen"]) == T0 and as_utc(edge["last_seen"]) == T0 + timedelta(minutes=60)
    assert queries.counts(graph)[f"v:{MARKER_LABEL}"] == 2


def test_lost_reply_after_commit_is_not_applied_twice(graph, pseudo, monkeypatch):
    w = StreamWriter(graph, pseudo)
    real_submit = graph.submit
    lost = []

    def submit(build, fetch="list", idempotent=True):
        out = real_submit(build, fetch, idempotent)
        if not idempotent and not lost:  # the write committed, but its reply never arrives
            lost.append(1)
            raise ConnectionResetError("reply lost")
        return out

    monkeypatch.setattr(graph, "submit", submit)
    result = w.write([_event(1, device_id="d1"), _event(2, minutes=5, device_id="d1")])
    assert lost and result.applied == 2 and result.attempts == 2
    (edge,) = _edges(graph)
    assert edge["event_count"] == 2  # not 4


def test_another_consumer_applying_in_between_trips_the_guard(graph, pseudo, settings, monkeypatch):
    from identigraph.graph.client import GraphClient

    w = StreamWriter(graph, pseudo)
    events = [_event(1, device_id="d1"), _event(2, minutes=1, device_id="d1")]
    other = GraphClient(settings)
    real_applied = w._applied
    calls = []

    def stale_check(evts):
        seen = real_applied(evts)
        if not calls:  # between our check and our write, a second consumer applies event 1
            calls.append(1)
            StreamWriter(other, pseudo).write([events[0]])
        return seen

    monkeypatch.setattr(w, "_applied", stale_check)
    result = w.write(events)
    other.close()
    assert result.attempts == 2
    (edge,) = _edges(graph)
    assert edge["event_count"] == 2


def test_shuffled_redelivered_stream_equals_the_aggregate_of_its_events(graph, pseudo):
    world = generate_world(SynthParams(customers=120, seed=9, stream_days=30))
    bodies = [json.dumps(r) for r in world.stream_records() if r["event_type"] in
              ("signup", "login", "add_payment_method", "profile_update", "booking")]
    events = [parse_message(b) for b in bodies]
    rnd = random.Random(4)
    delivered = events + rnd.sample(events, len(events) // 5)  # a fifth redelivered
    rnd.shuffle(delivered)
    w = StreamWriter(graph, pseudo)
    for i in range(0, len(delivered), 37):
        w.write(delivered[i:i + 37])
    expected = {r.id: r for r in aggregate(x for e in events for x in event_edges(e.model_dump(), pseudo))}
    got = {e["edge_id"]: e for e in _edges(graph)}
    assert set(got) == set(expected) and len(expected) > 50
    for eid, rec in expected.items():
        g = got[eid]
        assert (as_utc(g["first_seen"]), as_utc(g["last_seen"])) == (rec.first_seen, rec.last_seen)
        assert {k: g[k] for k in rec.counts} == rec.counts


def test_sweep_drops_only_old_markers(graph, pseudo):
    from identigraph.etl.stream_writer import sweep_markers

    w = StreamWriter(graph, pseudo)
    w.write([_event(1, device_id="d1")])
    cut = datetime.now(timezone.utc) + timedelta(seconds=1)
    w.write([_event(2, device_id="d2")])  # both are "now"; move one marker into the past to age it
    graph.submit(lambda g: g.V("event:ev1").property("applied_at", T0), "iterate")
    assert sweep_markers(graph, cut - timedelta(days=1), batch=1) == 1
    assert graph.submit(lambda g: g.V().has_label(MARKER_LABEL).id_()) == ["event:ev2"]
    assert len(_edges(graph)) == 2  # the effects stay; only the bookkeeping goes
