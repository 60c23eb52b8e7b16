"""Faults: the graph server going away mid-stream, and the consumer killed with SIGKILL mid-batch.

Runs on its own Gremlin Server + ElasticMQ (short visibility timeout), so stopping them disturbs nobody.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import make_settings
from identigraph.etl.consumer import Consumer
from identigraph.etl.publish import publish, sqs_client
from identigraph.etl.stream_events import IdentityEvent, parse_message
from identigraph.graph import pseudonym, queries
from identigraph.graph.client import GraphClient
from identigraph.graph.records import aggregate, event_edges
from identigraph.services import local
from identigraph.synth import SynthParams, generate_world

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    s = make_settings(tmp_path_factory.mktemp("faults"),
                      queues={"visibility_timeout_s": 3}, stream={"wait_s": 1, "health_port": 0})
    local.up(s)
    yield s
    local.down(s)


def _expected(settings, bodies):
    pseudo = pseudonym.from_settings(settings)
    events = [parse_message(b) for b in bodies]
    return {r.id: r.counts["event_count"] for r in aggregate(
        x for e in events if isinstance(e, IdentityEvent) for x in event_edges(e.model_dump(), pseudo))}


def _edge_counts(client):
    return {e["edge_id"]: e["event_count"] for e in queries.dump(client)[1]}


def _bodies(seed, customers=60):
    return [json.dumps(r) for r in generate_world(SynthParams(customers=customers, seed=seed, stream_days=30)).stream_records()]


def test_graph_server_down_mid_stream_loses_nothing_counts_once(own):
    bodies = _bodies(11)
    sqs = sqs_client(own)
    url = sqs.get_queue_url(QueueName=own.queues.events)["QueueUrl"]
    with GraphClient(own) as client:
        queries.clear(client)
        consumer = Consumer(own, client=client, sqs=sqs)
        publish(sqs, url, bodies[: len(bodies) // 2])
        worker = threading.Thread(target=consumer.run)
        worker.start()
        deadline = time.monotonic() + 60
        while consumer.stats.applied == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        local.down(own, ["gremlin-server"])  # SIGTERM: the graph file is written, the server goes away
        publish(sqs, url, bodies[len(bodies) // 2:] + bodies[:20])  # more arrives, some of it again
        time.sleep(3)
        local.up(own, ["gremlin-server"])
        deadline = time.monotonic() + 120
        while consumer.stats.applied + consumer.stats.duplicates < len(bodies) + 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        consumer.stop.set()
        worker.join(timeout=60)
        assert consumer.stats.graph_retries > 0  # it did meet the outage
        # A write that committed just as the server went down is found applied on the retry and counted as a
        # duplicate there, so only the sum is exact; the graph itself must be exactly right.
        assert consumer.stats.applied + consumer.stats.duplicates == len(bodies) + 20
        assert consumer.stats.applied >= len(bodies) - 50  # at most one batch's worth was uncertain
        assert _edge_counts(client) == _expected(own, bodies)
        assert client.submit(lambda g: g.V().has_label("_applied_event").count(), "next") == len(bodies)


def test_sigkill_mid_batch_then_restart_gives_the_same_graph(own):
    bodies = _bodies(12, customers=120)
    sqs = sqs_client(own)
    url = sqs.get_queue_url(QueueName=own.queues.events)["QueueUrl"]
    with GraphClient(own) as client:
        queries.clear(client)
    publish(sqs, url, bodies)
    exe = str(Path(sys.executable).with_name("identigraph"))
    env = {**os.environ, "IDENTIGRAPH__DATA_DIR": str(own.data_path),
           "IDENTIGRAPH__SERVICES__GREMLIN__PORT": str(own.services.gremlin.port),
           "IDENTIGRAPH__SERVICES__ELASTICMQ__PORT": str(own.services.elasticmq.port),
           "IDENTIGRAPH__STREAM__HEALTH_PORT": "0", "IDENTIGRAPH__STREAM__WAIT_S": "1"}
    proc = subprocess.Popen([exe, "consume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    with GraphClient(own) as client:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            n = client.submit(lambda g: g.V().has_label("_applied_event").count(), "next")
            if 0 < n < len(bodies):
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)  # mid-stream, most likely mid-batch
        proc.wait(timeout=10)
        assert 0 < n < len(bodies)
        time.sleep(4)  # received-but-undeleted messages become visible again
        consumer = Consumer(own, client=client)
        consumer.run(until_empty=True)
        assert _edge_counts(client) == _expected(own, bodies)
        assert client.submit(lambda g: g.V().has_label("_applied_event").count(), "next") == len(bodies)
