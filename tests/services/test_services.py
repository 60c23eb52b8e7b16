"""`services` lifecycle through the same code the CLI and fixtures use, on its own ports and data dir."""

import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from conftest import make_settings
from identigraph.config_loader import packaged_default
from identigraph.errors import JavaNotFoundError, PortInUseError
from identigraph.graph.client import GraphClient
from identigraph.graph.schema import VertexRecord
from identigraph.graph.upsert import Upserter
from identigraph.services import local

pytestmark = pytest.mark.services


def test_up_is_idempotent_down_then_up_keeps_graph_and_messages(tmp_path):
    s = make_settings(tmp_path / "data")
    try:
        first = {r.name: r for r in local.up(s)}
        assert all(r.started_now for r in first.values())
        assert first[local.GREMLIN].detail.endswith("; heap 1g (configured)")
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


def test_queues_from_config_dlq_fifo_and_no_broker_redrive(settings, services):
    """The broker's redrive counts every receive (kills, outages, releases): the consumer dead-letters poison itself,
    into a FIFO queue that drops a second send of the same source message."""
    sqs = boto3.client("sqs", endpoint_url=settings.queue_endpoint, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    q = settings.queues
    events = sqs.get_queue_url(QueueName=q.events)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=events, AttributeNames=["All"])["Attributes"]
    assert "RedrivePolicy" not in attrs
    dlq = sqs.get_queue_url(QueueName=q.dead_letter)["QueueUrl"]
    assert sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["All"])["Attributes"]["FifoQueue"] == "true"
    assert sqs.get_queue_url(QueueName=q.review)["QueueUrl"]


def test_sigkills_keep_acknowledged_messages_and_the_last_good_graph(tmp_path):
    """ElasticMQ: a SIGKILL lost the last ~0.5 s of acknowledged sends (H2's write delay) and the store then failed
    to open. Gremlin Server: TinkerGraph wrote its file only on a clean stop, in place, so a SIGKILL lost everything
    since and a kill during the write destroyed the file. Now: checkpoints, and an unreadable newest one falls back
    to the one before, saying so."""
    import json
    import os
    import signal
    import time

    s = make_settings(tmp_path / "data", services={"gremlin": {"checkpoint_interval_s": 1}})

    def kill(name):
        os.killpg(local._process(s, name).state().pid, signal.SIGKILL)
        time.sleep(1)

    def wait_checkpoint(count):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            latest = local.latest_checkpoint(s)
            if latest and latest["vertices"] == count:
                return latest
            time.sleep(0.2)
        raise AssertionError(f"no checkpoint with {count} vertices: {local.latest_checkpoint(s)}")

    try:
        local.up(s)
        sqs = boto3.client("sqs", endpoint_url=s.queue_endpoint, region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x")
        url = sqs.get_queue_url(QueueName=s.queues.events)["QueueUrl"]
        for b in range(20):
            sqs.send_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "MessageBody": f"m{b}-{i}"} for i in range(10)])
        with GraphClient(s) as client:
            Upserter(client).vertices([VertexRecord(f"customer:a{i}", "customer", {"country": "AE"}) for i in range(50)])
        first = wait_checkpoint(50)
        kill(local.ELASTICMQ)
        kill(local.GREMLIN)
        reports = {r.name: r for r in local.up(s)}
        assert "restored from checkpoint" in reports[local.GREMLIN].detail
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
        assert int(attrs["ApproximateNumberOfMessages"]) == 200
        with GraphClient(s) as client:
            assert client.submit(lambda g: g.V().has_label("customer").count(), "next") == 50
            Upserter(client).vertices([VertexRecord(f"customer:b{i}", "customer") for i in range(10)])
        newest = wait_checkpoint(60)
        assert newest["seq"] > first["seq"]
        kill(local.GREMLIN)
        path = local.checkpoint_dir(s) / newest["file"]
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # as a kill mid-write would leave it
        report = {r.name: r for r in local.up(s, [local.GREMLIN])}[local.GREMLIN]
        assert "WARNING" in report.detail and newest["file"] in report.detail
        boot = local.boot_info(s)
        assert boot["restored"]["seq"] < newest["seq"] and boot["skipped"][0]["file"].endswith(newest["file"])
        with GraphClient(s) as client:
            assert client.submit(lambda g: g.V().has_label("customer").count(), "next") == 50
        assert json.loads((local.checkpoint_dir(s) / "boot.json").read_text())["skipped"]
    finally:
        local.down(s)


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


def test_auto_heap_is_sized_for_the_graph_between_floor_and_cap(tmp_path):
    """The default 2 GiB heap ran a 30,000-customer graph (~100 MB checkpoint) nearly full; 'auto' sizes -Xmx for
    the graph the server will restore, and a configured size (or the environment) overrides it."""
    from identigraph.config import load_settings

    s = make_settings(tmp_path / "data", services={"gremlin": {"heap": "auto"}})
    assert local.gremlin_heap(s) == ("2048m", "auto: 32 × 0 MB graph file (floor)")
    local.gremlin_graph_file(s).parent.mkdir(parents=True)
    local.gremlin_graph_file(s).write_bytes(b"x" * 80_000_000)  # a pre-checkpoint file, restored if nothing newer
    assert local.gremlin_heap(s) == ("2560m", "auto: 32 × 80 MB graph file")
    local.checkpoint_dir(s).mkdir(parents=True)
    (local.checkpoint_dir(s) / "LATEST.json").write_text('{"seq": 7, "bytes": 100000000}')
    assert local.gremlin_heap(s) == ("3072m", "auto: 32 × 100 MB graph file")
    (local.checkpoint_dir(s) / "LATEST.json").write_text('{"seq": 8, "bytes": 200000000}')
    assert local.gremlin_heap(s) == ("4096m", "auto: 32 × 200 MB graph file (cap)")
    bigger = make_settings(tmp_path / "data", services={"gremlin": {"heap": "auto", "heap_max": "8g"}})
    assert local.gremlin_heap(bigger)[0] == "6144m"
    env = load_settings(path=packaged_default("identigraph.yaml"), overrides={"data_dir": str(tmp_path / "data")},
                        environ={"IDENTIGRAPH__SERVICES__GREMLIN__HEAP": "5g"})
    assert local.gremlin_heap(env) == ("5g", "configured")
    with pytest.raises(Exception, match="heap"):
        make_settings(tmp_path / "data", services={"gremlin": {"heap": "4gb"}})
