"""Faults the consumer must survive without losing an acknowledged event or counting one twice.

Runs on its own Gremlin Server + ElasticMQ (short visibility timeout, checkpoints every second), so killing
them disturbs nobody. Each test would fail on the consumer before issue 14 (named in its docstring).
"""

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from gremlin_python.process.traversal import T

from conftest import make_settings
from identigraph.etl.consumer import FAULT_ENV, Consumer
from identigraph.etl.publish import publish, sqs_client
from identigraph.etl.stream_events import IdentityEvent, parse_message
from identigraph.graph import pseudonym, queries
from identigraph.graph.client import GraphClient
from identigraph.graph.records import aggregate, event_edges
from identigraph.services import local
from identigraph.synth import SynthParams, generate_world

pytestmark = pytest.mark.services
VISIBILITY = 3


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    s = make_settings(tmp_path_factory.mktemp("faults"), queues={"visibility_timeout_s": VISIBILITY},
                      stream={"wait_s": 1, "health_port": 0, "batch_wait_ms": 50})
    local.up(s)
    yield s
    local.down(s)


@pytest.fixture
def fresh(own):
    """Empty graph, empty queues."""
    sqs = sqs_client(own)
    for name in (own.queues.events, own.queues.dead_letter):
        sqs.purge_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
    with GraphClient(own) as client:
        queries.clear(client)
    return own


def _urls(settings):
    sqs = sqs_client(settings)
    return (sqs, sqs.get_queue_url(QueueName=settings.queues.events)["QueueUrl"],
            sqs.get_queue_url(QueueName=settings.queues.dead_letter)["QueueUrl"])


def _expected(settings, bodies):
    pseudo = pseudonym.from_settings(settings)
    events = [parse_message(b) for b in bodies]
    return {r.id: r.counts["event_count"] for r in aggregate(
        x for e in events if isinstance(e, IdentityEvent) for x in event_edges(e.model_dump(), pseudo))}


def _edge_counts(settings):
    with GraphClient(settings) as client:
        return {e["edge_id"]: e["event_count"] for e in queries.dump(client)[1]}


def _bodies(seed, customers=60):
    world = generate_world(SynthParams(customers=customers, seed=seed, stream_days=30))
    return [json.dumps(r) for r in world.stream_records()]


def _in_queue(sqs, url):
    a = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    return int(a["ApproximateNumberOfMessages"]) + int(a["ApproximateNumberOfMessagesNotVisible"])


def _dead(sqs, dlq):
    out, empty = [], 0
    while empty < 2:
        msgs = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60,
                                   MessageAttributeNames=["All"]).get("Messages", [])
        empty = 0 if msgs else empty + 1
        out += msgs
    return out


def _until(cond, timeout=180, step=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return False


def _run_in_thread(consumer):
    t = threading.Thread(target=consumer.run, daemon=True)
    t.start()
    return t


def _finish(consumer, thread, sqs, url, total):
    assert _until(lambda: _in_queue(sqs, url) == 0, timeout=300), "messages left in the queue"
    consumer.stop.set()
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert _in_queue(sqs, url) == 0  # nothing visible, nothing in flight


def _kill_service(settings, name):
    state = local._process(settings, name).state()
    os.killpg(state.pid, signal.SIGKILL)
    _until(lambda: local._process(settings, name).state() is None, timeout=30)


def test_graph_server_sigkill_loses_no_acknowledged_event(fresh):
    """Before: messages were deleted once the commit was in memory; a SIGKILL lost all since the last clean stop."""
    bodies = _bodies(11)
    sqs, url, _ = _urls(fresh)
    publish(sqs, url, bodies[: len(bodies) // 2])
    with GraphClient(fresh) as client:
        consumer = Consumer(fresh, client=client, sqs=sqs)
        thread = _run_in_thread(consumer)
        assert _until(lambda: consumer.stats.deleted > 20)
        _kill_service(fresh, local.GREMLIN)
        publish(sqs, url, bodies[len(bodies) // 2:] + bodies[:20])  # more arrives, some of it again
        local.up(fresh, [local.GREMLIN])
        _finish(consumer, thread, sqs, url, len(bodies))
    assert consumer.stats.graph_retries > 0
    assert _edge_counts(fresh) == _expected(fresh, bodies)


def test_graph_server_sigterm_mid_stream(fresh):
    bodies = _bodies(12)
    sqs, url, _ = _urls(fresh)
    with GraphClient(fresh) as client:
        consumer = Consumer(fresh, client=client, sqs=sqs)
        publish(sqs, url, bodies[: len(bodies) // 2])
        thread = _run_in_thread(consumer)
        assert _until(lambda: consumer.stats.applied > 0)
        local.down(fresh, [local.GREMLIN])  # SIGTERM: a final checkpoint, then the server goes away
        publish(sqs, url, bodies[len(bodies) // 2:] + bodies[:20])
        local.up(fresh, [local.GREMLIN])
        _finish(consumer, thread, sqs, url, len(bodies))
    assert _edge_counts(fresh) == _expected(fresh, bodies)


def test_queue_restarts_sigkill_and_sigterm_are_ridden_out(fresh):
    """Before: an SQS error in receive/delete/visibility killed the consumer."""
    bodies = _bodies(13)
    sqs, url, _ = _urls(fresh)
    publish(sqs, url, bodies[: len(bodies) // 3])
    with GraphClient(fresh) as client:
        consumer = Consumer(fresh, client=client, sqs=sqs)
        thread = _run_in_thread(consumer)
        assert _until(lambda: consumer.stats.applied > 0)
        _kill_service(fresh, local.ELASTICMQ)
        local.up(fresh, [local.ELASTICMQ])
        publish(sqs, url, bodies[len(bodies) // 3: 2 * len(bodies) // 3])
        local.down(fresh, [local.ELASTICMQ])
        time.sleep(2)
        local.up(fresh, [local.ELASTICMQ])
        publish(sqs, url, bodies[2 * len(bodies) // 3:])
        _finish(consumer, thread, sqs, url, len(bodies))
    assert thread is not None and consumer.stats.sqs_errors > 0
    assert _edge_counts(fresh) == _expected(fresh, bodies)


def test_write_longer_than_the_visibility_timeout_is_not_redelivered(fresh, monkeypatch):
    """Before: the batch in hand was never extended, so SQS handed it to another consumer mid-write."""
    bodies = _bodies(14, customers=15)
    sqs, url, _ = _urls(fresh)
    publish(sqs, url, bodies)
    with GraphClient(fresh) as client:
        consumer = Consumer(fresh, client=client, sqs=sqs)
        real = consumer.writer.write

        def slow(events):
            time.sleep(VISIBILITY * 2.5)
            return real(events)

        monkeypatch.setattr(consumer.writer, "write", slow)
        other = sqs.receive_message  # a second consumer polling meanwhile must get nothing
        stolen = []
        thread = _run_in_thread(consumer)
        assert _until(lambda: consumer.stats.received == len(bodies))
        for _ in range(4):
            stolen += other(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        _finish(consumer, thread, sqs, url, len(bodies))
    assert stolen == []
    assert consumer.stats.received == len(bodies) and consumer.stats.duplicates == 0


def test_valid_events_received_many_times_are_applied_not_dead_lettered(fresh):
    """Before: every receive (outages, kills, releases) counted towards the broker's redrive to the DLQ."""
    bodies = _bodies(15, customers=10)[:10]
    sqs, url, dlq = _urls(fresh)
    publish(sqs, url, bodies)
    for _ in range(7):  # received and handed back, as kills and releases do
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
        sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0} for i, m in enumerate(got)])
    with GraphClient(fresh) as client:
        stats = Consumer(fresh, client=client, sqs=sqs).run(until_empty=True)
    assert stats.applied == len(bodies) and stats.dead_lettered == 0
    assert _dead(sqs, dlq) == [] and _in_queue(sqs, url) == 0


def test_an_event_the_graph_refuses_is_found_and_dead_lettered_with_the_servers_message(fresh):
    """Before: any graph error counted as "graph down" and blocked the queue forever."""
    bodies = _bodies(16, customers=30)[:40]
    bad = json.dumps({"schema_version": 1, "event_id": "blk-1", "event_type": "block", "customer_id": "broken",
                      "occurred_at": "2026-06-02T00:00:00Z", "reason": "fraud", "source": "manual"})
    with GraphClient(fresh) as client:  # a customer whose stored state no traversal can add to
        client.submit(lambda g: g.add_v("customer").property(T.id, "customer:broken").property("n_blocks", "oops"),
                      "iterate")
    sqs, url, dlq = _urls(fresh)
    publish(sqs, url, [*bodies[:20], bad, *bodies[20:]])
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    consumer_log = logging.getLogger("identigraph.consumer")
    consumer_log.addHandler(handler)
    level = consumer_log.level
    consumer_log.setLevel(logging.INFO)  # setLevel, not .level =: only it clears the logger's isEnabledFor cache
    try:
        with GraphClient(fresh) as client:
            stats = Consumer(fresh, client=client, sqs=sqs).run(until_empty=True)
    finally:
        consumer_log.removeHandler(handler)
        consumer_log.setLevel(level)
    dead = _dead(sqs, dlq)
    assert [m["Body"] for m in dead] == [bad]
    attrs = dead[0]["MessageAttributes"]
    assert attrs["kind"]["StringValue"] == "refused" and "graph refused" in attrs["reason"]["StringValue"]
    server_message = attrs["reason"]["StringValue"]
    assert "500" in server_message  # the server's own message
    # it can echo the values it refused (device ids, IPs): the DLQ keeps it beside the body, the log does not
    logged = [r for r in records if r.getMessage() == "dead_lettered"]
    assert [r.kind for r in logged] == ["refused"]
    assert logged[0].message_id == attrs["source_message_id"]["StringValue"]
    shown = logged[0].reason
    assert "500" not in shown and "refused this event" not in shown and "DLQ" in shown
    assert stats.splits > 0 and stats.applied == 40
    assert _edge_counts(fresh) == _expected(fresh, bodies)


def test_same_event_id_with_another_body_is_counted_and_kept(fresh):
    """Before: the second body was dropped as a duplicate, silently."""
    bodies = [b for b in _bodies(17, customers=10) if json.loads(b)["event_type"] == "login"][:5]
    changed = json.loads(bodies[0])
    changed["device_id"] = "another-device"
    sqs, url, dlq = _urls(fresh)
    publish(sqs, url, bodies)
    with GraphClient(fresh) as client:
        Consumer(fresh, client=client, sqs=sqs).run(until_empty=True)
        publish(sqs, url, [json.dumps(changed), bodies[1]])
        stats = Consumer(fresh, client=client, sqs=sqs).run(until_empty=True)
    assert stats.duplicates == 1 and stats.dead_by_kind == {"conflict": 1}
    (dead,) = _dead(sqs, dlq)
    assert json.loads(dead["Body"]) == changed and "different body" in dead["MessageAttributes"]["reason"]["StringValue"]
    assert _edge_counts(fresh) == _expected(fresh, bodies)


def _consume_process(settings, fault, **stream):
    exe = str(Path(sys.executable).with_name("identigraph"))
    env = {**os.environ, **{f"IDENTIGRAPH__STREAM__{k.upper()}": str(v) for k, v in stream.items()},
           "IDENTIGRAPH__DATA_DIR": str(settings.data_path),
           "IDENTIGRAPH__SERVICES__GREMLIN__PORT": str(settings.services.gremlin.port),
           "IDENTIGRAPH__SERVICES__ELASTICMQ__PORT": str(settings.services.elasticmq.port),
           "IDENTIGRAPH__QUEUES__VISIBILITY_TIMEOUT_S": str(VISIBILITY),
           "IDENTIGRAPH__STREAM__HEALTH_PORT": "0", "IDENTIGRAPH__STREAM__WAIT_S": "1", FAULT_ENV: fault}
    return subprocess.run([exe, "consume"], capture_output=True, env=env, timeout=300)


def test_killed_between_dlq_send_and_delete_dead_letters_once(fresh):
    """Before: the DLQ send came before the delete, so a crash in between dead-lettered the message twice."""
    poison = ["{broken 1", "{broken 2", json.dumps({"schema_version": 1, "event_type": "login"})]
    sqs, url, dlq = _urls(fresh)
    publish(sqs, url, poison + _bodies(18, customers=10)[:20])
    proc = _consume_process(fresh, "after_dlq_send:1")
    assert proc.returncode == -signal.SIGKILL
    time.sleep(2 * VISIBILITY + 1)
    with GraphClient(fresh) as client:
        Consumer(fresh, client=client, sqs=sqs).run(until_empty=True)
    dead = _dead(sqs, dlq)
    assert sorted(m["Body"] for m in dead) == sorted(poison)
    sources = [m["MessageAttributes"]["source_message_id"]["StringValue"] for m in dead]
    assert len(set(sources)) == len(sources) == 3
    assert all(m["MessageAttributes"]["reason"]["StringValue"] for m in dead)


def test_killed_after_commit_before_delete_then_restarted_counts_once(fresh):
    bodies = _bodies(19, customers=40)
    sqs, url, _ = _urls(fresh)
    publish(sqs, url, bodies)
    # small batches: 19 messages received within one batch wait would otherwise be a single commit, never a 2nd
    proc = _consume_process(fresh, "after_commit:2", batch_max=5)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(2 * VISIBILITY + 1)  # held messages (extended to twice the timeout) become visible again
    with GraphClient(fresh) as client:
        stats = Consumer(fresh, client=client, sqs=sqs).run(until_empty=True)
    assert stats.duplicates > 0  # the killed process's commits were found applied
    assert _edge_counts(fresh) == _expected(fresh, bodies) and _in_queue(sqs, url) == 0


def test_packed_messages_poison_alone_duplicates_once_and_a_kill_loses_nothing(fresh):
    """Events packed 25 to a message (``etl.packing``): a bad element is dead-lettered alone, with its position
    as its source id, the rest are applied once, and a consumer killed after a commit loses nothing."""
    bodies = _bodies(21, customers=40)
    poison = [json.dumps({"schema_version": 1, "event_type": "login"}), json.dumps([1, 2])]
    sqs, url, dlq = _urls(fresh)
    stream = bodies[:30] + poison[:1] + bodies[30:] + poison[1:] + bodies[:20]  # 20 sent twice
    rep = publish(sqs, url, stream, events_per_message=25)
    assert rep.events == len(stream) and rep.sent == -(-len(stream) // 25)
    proc = _consume_process(fresh, "after_commit:2", batch_max=40)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(2 * VISIBILITY + 1)
    with GraphClient(fresh) as client:
        stats = Consumer(fresh, client=client, sqs=sqs).run(until_empty=True)
    assert stats.messages < stats.received  # several events per message
    assert _edge_counts(fresh) == _expected(fresh, bodies) and _in_queue(sqs, url) == 0
    dead = _dead(sqs, dlq)
    assert sorted(json.loads(m["Body"]) for m in dead if m["Body"].startswith("{")) == [json.loads(poison[0])]
    assert len(dead) == 2 and all(":" in m["MessageAttributes"]["source_message_id"]["StringValue"] for m in dead)
