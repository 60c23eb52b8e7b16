"""The stream consumer against the real ElasticMQ and Gremlin Server."""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest

from conftest import free_port
from identigraph.etl.consumer import Consumer
from identigraph.etl.publish import publish
from identigraph.etl.stream_events import parse_message
from identigraph.graph import queries
from identigraph.graph.pseudonym import from_settings
from identigraph.graph.records import aggregate, as_utc, event_edges
from identigraph.synth import SynthParams, generate_world

pytestmark = pytest.mark.services


def _sqs(settings):
    return boto3.client("sqs", endpoint_url=settings.queue_endpoint, region_name="us-east-1",
                        aws_access_key_id="x", aws_secret_access_key="x")


def _drain(sqs, url):
    out = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   MessageAttributeNames=["All"]).get("Messages", [])
        if not msgs:
            return out
        out += msgs
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                        for i, m in enumerate(msgs)])


def test_consume_until_empty_poison_to_dlq_duplicates_once(settings, graph):
    sqs = _sqs(settings)
    url = sqs.get_queue_url(QueueName=settings.queues.events)["QueueUrl"]
    dlq = sqs.get_queue_url(QueueName=settings.queues.dead_letter)["QueueUrl"]
    for q in (url, dlq):
        sqs.purge_queue(QueueUrl=q)
    world = generate_world(SynthParams(customers=80, seed=4, stream_days=30))
    bodies = [json.dumps(r) for r in world.stream_records()]
    poison = ["{not json", json.dumps({"schema_version": 1, "event_id": "p1", "event_type": "teleport",
                                       "customer_id": "c1", "occurred_at": "2026-06-01T00:00:00Z"})]
    publish(sqs, url, bodies + poison + bodies[:15])  # 15 sent twice, as SQS may deliver them

    settings_fast = settings.model_copy(update={"stream": settings.stream.model_copy(update={"wait_s": 1})})
    consumer = Consumer(settings_fast, client=graph)
    stats = consumer.run(until_empty=True)

    assert stats.received == len(bodies) + 2 + 15 and stats.dead_lettered == 2
    assert stats.applied == len(bodies) and stats.duplicates == 15
    dead = _drain(sqs, dlq)
    reasons = sorted(m["MessageAttributes"]["reason"]["StringValue"] for m in dead)
    assert len(dead) == 2 and reasons[0].startswith("body: not JSON") and "event_type" in reasons[1]
    assert _drain(sqs, url) == []  # everything acknowledged

    pseudo = from_settings(settings)
    events = [parse_message(b) for b in bodies]
    expected = {r.id: r for r in aggregate(x for e in events if e.event_type in
                                            ("signup", "login", "add_payment_method", "profile_update", "booking")
                                            for x in event_edges(e.model_dump(), pseudo))}
    edges = {e["edge_id"]: e for e in queries.dump(graph)[1]}
    assert set(edges) == set(expected)
    for eid, rec in expected.items():
        assert edges[eid]["event_count"] == rec.counts["event_count"]
        assert as_utc(edges[eid]["last_seen"]) == rec.last_seen


def test_sigterm_drains_and_health_endpoints_answer(settings, services, tmp_path):
    port = free_port()
    exe = str(Path(sys.executable).with_name("identigraph"))
    env = {**os.environ, "IDENTIGRAPH__DATA_DIR": str(settings.data_path),
           "IDENTIGRAPH__SERVICES__GREMLIN__PORT": str(settings.services.gremlin.port),
           "IDENTIGRAPH__SERVICES__ELASTICMQ__PORT": str(settings.services.elasticmq.port),
           "IDENTIGRAPH__STREAM__HEALTH_PORT": str(port), "IDENTIGRAPH__STREAM__WAIT_S": "2"}
    proc = subprocess.Popen([exe, "consume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status
                break
            except Exception:
                time.sleep(0.3)
        assert ready == 200
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read().decode()
        assert "identigraph_stream_received_total" in metrics and "identigraph_stream_batch_seconds" in metrics
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert '"received"' in out
