"""Exactly-once in effect against the real Gremlin Server: idempotent requests, bounded de-duplication state,
conflicting bodies, identifier statistics kept incrementally."""

import json
import random
import threading
from datetime import datetime, timedelta, timezone

import pytest
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import P, T

from identigraph.etl.stream_events import parse_message
from identigraph.etl.stream_writer import CONFLICT, DUPLICATE, FLOOR, NEW, STATE_LABEL, StreamWriter, state_id
from identigraph.graph import queries
from identigraph.graph.records import aggregate, as_utc, event_edges
from identigraph.graph.upsert import count_steps
from identigraph.synth import SynthParams, generate_world

pytestmark = pytest.mark.services
T0 = datetime(2026, 6, 1, tzinfo=timezone.utc)
IDENTITY = ("signup", "login", "add_payment_method", "profile_update", "booking")


def _iso(at):
    return at.isoformat().replace("+00:00", "Z")


def _event(i, customer="c1", minutes=0, kind="login", **fields):
    body = {"schema_version": 1, "event_id": f"ev{i}", "event_type": kind, "customer_id": customer,
            "occurred_at": _iso(T0 + timedelta(minutes=minutes)), **fields}
    return parse_message(json.dumps(body))


def _edges(graph):
    return queries.dump(graph)[1]


def _stats(graph):
    """Each identifier's stored statistics next to a recount from its edges (the definition)."""
    return graph.submit(lambda g: g.V().has_label(P.within("device", "ip", "email", "phone", "card"))
                        .project("id", "stored", "counted")
                        .by(T.id)
                        .by(__.value_map("n_customers", "first_seen", "last_seen", "n_blocked", "n_contested"))
                        .by(__.project("n_customers", "first_seen", "last_seen", "n_blocked", "n_contested")
                            .by(__.in_e().count()).by(__.in_e().values("first_seen").min_())
                            .by(__.in_e().values("last_seen").max_()).by(__.in_().has("blocked", True).count())
                            .by(__.in_().has("n_block_reviews", P.gt(0)).count())))


def _assert_stats_exact(graph):
    rows = _stats(graph)
    assert rows
    for row in rows:
        stored = {k: v[0] for k, v in row["stored"].items()}
        assert stored == row["counted"], row["id"]
    return {r["id"]: r["counted"] for r in rows}


def test_redelivery_and_repeats_count_once_and_order_does_not_matter(graph, pseudo):
    w = StreamWriter(graph, pseudo)
    late, early = _event(2, minutes=60, device_id="d1"), _event(1, minutes=0, device_id="d1")
    assert w.write([late, late]).outcomes == [NEW, DUPLICATE]  # a repeat inside the batch
    assert w.write([early, late]).outcomes == [NEW, DUPLICATE]  # an older event arrives late, plus a redelivery
    once = _edges(graph)
    assert w.write([early, late]).outcomes == [DUPLICATE, DUPLICATE] and _edges(graph) == once
    (edge,) = once
    assert edge["event_count"] == 2 and edge["n_login"] == 2
    assert as_utc(edge["first_seen"]) == T0 and as_utc(edge["last_seen"]) == T0 + timedelta(minutes=60)


def test_lost_reply_after_commit_then_resend_changes_nothing(graph, pseudo, monkeypatch):
    """The request is idempotent: after a reply that never came the same batch is simply sent again."""
    w = StreamWriter(graph, pseudo)
    real_submit = graph.submit
    lost = []

    def submit(build, fetch="list", idempotent=True, **kw):
        out = real_submit(build, fetch, idempotent, **kw)
        if not lost:  # the write committed, but its reply never arrives
            lost.append(1)
            raise ConnectionResetError("reply lost")
        return out

    monkeypatch.setattr(graph, "submit", submit)
    batch = [_event(1, device_id="d1"), _event(2, minutes=5, device_id="d1")]
    with pytest.raises(ConnectionResetError):
        w.write(batch)
    assert w.write(batch).outcomes == [DUPLICATE, DUPLICATE]
    (edge,) = _edges(graph)
    assert edge["event_count"] == 2  # not 4


def test_two_writers_applying_the_same_events_at_once_count_them_once(graph, pseudo, settings):
    from identigraph.graph.client import GraphClient

    events = [_event(i, customer=f"c{i % 7}", minutes=i, ip="100.64.0.1", device_id=f"d{i % 3}") for i in range(60)]
    results = []
    others = [GraphClient(settings) for _ in range(2)]

    def run(client):
        results.append(StreamWriter(client, pseudo).write(list(events)))

    threads = [threading.Thread(target=run, args=(c,)) for c in others]
    [t.start() for t in threads]
    [t.join() for t in threads]
    [c.close() for c in others]
    assert sorted(r.applied for r in results) == [0, 60] or sum(r.applied for r in results) == 60
    assert all(o in (NEW, DUPLICATE) for r in results for o in r.outcomes)
    hub = graph.submit(lambda g: g.V("ip:100.64.0.1").in_e().values("event_count").sum_(), "next")
    assert hub == 60
    assert _assert_stats_exact(graph)["ip:100.64.0.1"]["n_customers"] == 7


def test_same_event_id_with_another_body_is_a_conflict_and_not_applied(graph, pseudo):
    w = StreamWriter(graph, pseudo)
    assert w.write([_event(1, device_id="d1")]).outcomes == [NEW]
    other = _event(1, device_id="d2")  # same id, different identifiers
    assert w.write([other]).outcomes == [CONFLICT]
    # inside one batch too: the first copy is applied, the other is reported
    assert w.write([_event(5, device_id="d3"), _event(5, device_id="d4")]).outcomes == [NEW, CONFLICT]
    assert {e["identifier_id"] for e in _edges(graph)} == {"device:d1", "device:d3"}


def test_dedup_state_is_bounded_per_customer_and_below_it_nothing_counts_twice(graph, pseudo):
    w = StreamWriter(graph, pseudo, window=4)
    events = [_event(i, minutes=i, ip="10.0.0.1") for i in range(10)]
    for e in events:
        assert w.write([e]).outcomes == [NEW]
    state = graph.submit(lambda g: g.V(state_id("customer:c1")).properties("applied").value())
    assert len(state) == 4  # bounded by the window, not by the number of events
    assert graph.submit(lambda g: g.V().has_label(STATE_LABEL).count(), "next") == 1  # one per customer
    # the last four are remembered: redelivered, they are duplicates; older ones cannot be decided
    assert w.write(events[6:]).outcomes == [DUPLICATE] * 4
    assert w.write(events[:2]).outcomes == [FLOOR, FLOOR]
    (edge,) = _edges(graph)
    assert edge["event_count"] == 10
    # a genuinely new event above the floor is still applied, even if it occurred before the newest ones
    assert w.write([_event(99, minutes=7.5, ip="10.0.0.1")]).outcomes == [NEW]


def test_request_has_a_fixed_number_of_steps(graph, pseudo):
    w = StreamWriter(graph, pseudo)
    small = w._request(graph.g(), w.prepare([_event(1, device_id="d")]))
    big = w._request(graph.g(), w.prepare([_event(i, device_id=f"d{i}", ip="1.1.1.1") for i in range(400)]))
    assert count_steps(small.bytecode) == count_steps(big.bytecode) < graph.settings.graph.batch.max_steps


def test_gremlin_server_only_source_tuning_is_not_sent_to_neptune(graph, pseudo):
    class NeptuneClient:  # what the writer asks of its client to decide; nothing is sent
        is_neptune = True
        settings = graph.settings

    prep = StreamWriter(graph, pseudo).prepare([_event(1, device_id="d")])

    def source_steps(writer):
        return {instruction[0] for instruction in writer._request(graph.g(), prep).bytecode.source_instructions}

    assert {"withSack", "withoutStrategies"} <= source_steps(StreamWriter(graph, pseudo))
    assert not {"withSack", "withoutStrategies"} & source_steps(StreamWriter(NeptuneClient(), pseudo))


def test_identifier_statistics_follow_edges_blocks_unblocks_and_reviews(graph, pseudo):
    w = StreamWriter(graph, pseudo)
    hub = dict(ip="100.64.0.9")
    # device ids are canonicalised lower-case: "dA" is device:da
    w.write([_event(1, "a", 0, device_id="dA", **hub), _event(2, "b", 1, **hub)])
    stats = _assert_stats_exact(graph)
    assert stats["ip:100.64.0.9"]["n_customers"] == 2 and stats["ip:100.64.0.9"]["n_blocked"] == 0
    w.write([_event(3, "a", 5, kind="block", reason="fraud", source="rule", rule_name="r1")])
    stats = _assert_stats_exact(graph)
    assert stats["ip:100.64.0.9"]["n_blocked"] == 1 and stats["device:da"]["n_blocked"] == 1
    # a blocked customer's new edge counts as blocked at once; a second block flips nothing
    w.write([_event(4, "a", 6, card_fingerprint="k1"), _event(5, "a", 7, kind="block", reason="abuse", source="manual")])
    stats = _assert_stats_exact(graph)
    assert stats["card:k1"]["n_blocked"] == 1 and stats["ip:100.64.0.9"]["n_blocked"] == 1
    w.write([_event(6, "a", 8, kind="care_contact", topic="block_review"), _event(7, "a", 9, kind="unblock")])
    stats = _assert_stats_exact(graph)
    assert stats["ip:100.64.0.9"] == {**stats["ip:100.64.0.9"], "n_blocked": 0, "n_contested": 1}
    # a block that occurred before the lifting does not re-block; a later one does
    w.write([_event(8, "a", 3, kind="block", reason="fraud", source="rule")])
    assert _assert_stats_exact(graph)["ip:100.64.0.9"]["n_blocked"] == 0
    w.write([_event(9, "a", 20, kind="block", reason="fraud", source="rule"), _event(10, "b", 21, **hub)])
    stats = _assert_stats_exact(graph)
    assert stats["ip:100.64.0.9"]["n_blocked"] == 1 and stats["ip:100.64.0.9"]["n_customers"] == 2
    customer = {v["id"]: v for v in queries.dump(graph)[0]}["customer:a"]
    assert customer["n_blocks"] == 4 and customer["blocked"] is True and customer["last_block_reason"] == "fraud"
    assert "last_block_rule" not in customer  # the latest block came from a rule without a name


def test_shuffled_redelivered_stream_equals_the_aggregate_of_its_events(graph, pseudo):
    world = generate_world(SynthParams(customers=120, seed=9, stream_days=30))
    records = list(world.stream_records())
    events = [parse_message(json.dumps(r)) for r in records]
    rnd = random.Random(4)
    delivered = events + rnd.sample(events, len(events) // 5)  # a fifth redelivered
    rnd.shuffle(delivered)
    w = StreamWriter(graph, pseudo)
    outcomes = []
    for i in range(0, len(delivered), 37):
        outcomes += w.write(delivered[i:i + 37]).outcomes
    assert outcomes.count(NEW) == len(events) and outcomes.count(DUPLICATE) == len(events) // 5
    identity = [e for e in events if e.event_type in IDENTITY]
    expected = {r.id: r for r in aggregate(x for e in identity for x in event_edges(e.model_dump(), pseudo))}
    got = {e["edge_id"]: e for e in _edges(graph)}
    assert set(got) == set(expected) and len(expected) > 50
    for eid, rec in expected.items():
        g = got[eid]
        assert (as_utc(g["first_seen"]), as_utc(g["last_seen"])) == (rec.first_seen, rec.last_seen)
        assert {k: g[k] for k in rec.counts} == rec.counts
    _assert_stats_exact(graph)
