"""`services` lifecycle through the same code the CLI and fixtures use, on its own ports and data dir."""

import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from identigraph.errors import JavaNotFoundError, PortInUseError
from identigraph.graph.client import GraphClient
from identigraph.graph.schema import VertexRecord
from identigraph.graph.upsert import Upserter
from identigraph.services import local

from conftest import make_settings

pytestmark = pytest.mark.services


def test_up_is_idempotent_down_then_up_keeps_graph_and_messages(tmp_path):
    s = make_settings(tmp_path / "data")
    try:
        first = {r.name: r for r in local.up(s)}
        assert all(r.started_now for r in first.values())
        second = {r.name: r for r in local.up(s)}
        assert not any(r.started_now for r in second.values())
        assert {n: r.pid for n, r in first.items()} == {n: r.pid for n, r in second.items()}
        assert all(r.running and r.detail == "answering" for r in local.status(s))

        with GraphClient(s) as client:
            Upserter(client).vertices([VertexRecord("customer:kept", "customer", {"country": "AE"})])
        sqs = boto3.client("sqs", endpoint_url=s.queue_endpoint, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x")
        url = sqs.get_queue_url(QueueName=s.queues.events)["QueueUrl"]
        sqs.send_message(QueueUrl=url, MessageBody='{"kept": true}')

        downs = local.down(s)
        assert [r.detail for r in downs] == ["stopped", "stopped"]
        assert not any(r.running for r in local.status(s))
        assert [r.detail for r in local.down(s)] == ["was not running", "was not running"]

        local.up(s)
        with GraphClient(s) as client:
            assert client.submit(lambda g: g.V("customer:kept").values("country"), "next") == "AE"
        url = sqs.get_queue_url(QueueName=s.queues.events)["QueueUrl"]
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=2).get("Messages", [])
        assert [m["Body"] for m in got] == ['{"kept": true}']
    finally:
        local.down(s)


def test_queues_from_config_with_redrive_policy(settings, services):
    sqs = boto3.client("sqs", endpoint_url=settings.queue_endpoint, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    q = settings.queues
    events = sqs.get_queue_url(QueueName=q.events)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=events, AttributeNames=["All"])["Attributes"]
    import json

    policy = json.loads(attrs["RedrivePolicy"])
    assert int(policy["maxReceiveCount"]) == q.max_receive_count
    assert policy["deadLetterTargetArn"].endswith(q.dead_letter)
    assert sqs.get_queue_url(QueueName=q.review)["QueueUrl"]


def test_port_in_use_gives_clear_error(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        s = make_settings(tmp_path / "data", services={"gremlin": {"port": port}})
        with pytest.raises(PortInUseError, match=f"port {port} .* already in use"):
            local.up(s, ["gremlin-server"])


def test_missing_java_gives_clear_error(tmp_path):
    s = make_settings(tmp_path / "data", services={"java": "/nonexistent/java"})
    with pytest.raises(JavaNotFoundError, match="Java not found"):
        local.up(s, ["elasticmq"])


def test_cli_reports_config_errors_cleanly(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("graph:\n  prot: 1\n")
    exe = Path(sys.executable).with_name("identigraph")
    proc = subprocess.run([str(exe), "--config", str(bad), "services", "status"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "graph.prot: unknown key" in proc.stderr and "Traceback" not in proc.stderr
