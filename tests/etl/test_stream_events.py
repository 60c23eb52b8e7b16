"""Stream message parsing (poison detection) and the publisher against the real ElasticMQ."""

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest

from identigraph.etl.publish import publish
from identigraph.etl.stream_events import (
    Block,
    CareContact,
    CustomerCreated,
    IdentityEvent,
    PoisonMessage,
    Unblock,
    parse_message,
)

BASE = {"schema_version": 1, "event_id": "ev1", "customer_id": "c1", "occurred_at": "2026-06-23T00:00:22Z"}


def test_each_event_type_parses_and_extra_fields_are_ignored():
    e = parse_message(json.dumps({**BASE, "event_type": "login", "device_id": "d", "ip": "31.72.52.82", "x": 1}))
    assert isinstance(e, IdentityEvent) and e.ip == "31.72.52.82" and e.email is None
    assert e.occurred_at == datetime(2026, 6, 23, 0, 0, 22, tzinfo=timezone.utc)
    c = parse_message(json.dumps({**BASE, "event_type": "customer_created", "country": "AE"}))
    assert isinstance(c, CustomerCreated) and c.lifetime_value == 0.0
    assert isinstance(parse_message(json.dumps({**BASE, "event_type": "block", "reason": "fraud", "source": "rule",
                                                "rule_name": "r"})), Block)
    assert isinstance(parse_message(json.dumps({**BASE, "event_type": "unblock"})), Unblock)
    assert isinstance(parse_message(json.dumps({**BASE, "event_type": "care_contact", "topic": "block_review"})), CareContact)
    ipv6 = parse_message(json.dumps({**BASE, "event_type": "login", "ip": "2001:0db8::0001"}))
    assert ipv6.ip == "2001:db8::1"


@pytest.mark.parametrize("body, reason", [
    ("{not json", "body: not JSON"),
    ("[1, 2]", "body: a JSON object is required"),
    (json.dumps({**BASE, "event_type": "teleport"}), "event_type"),
    (json.dumps({k: v for k, v in {**BASE, "event_type": "login"}.items() if k != "event_id"}), "event_id: Field required"),
    (json.dumps({**BASE, "event_type": "login", "customer_id": 42}), "customer_id: Input should be a valid string"),
    (json.dumps({**BASE, "event_type": "login", "schema_version": 2}), "schema_version"),
    (json.dumps({**BASE, "event_type": "login", "occurred_at": "2026-06-23T00:00:22"}), "occurred_at"),
    (json.dumps({**BASE, "event_type": "login", "occurred_at": 1782000000}), "occurred_at"),
    (json.dumps({**BASE, "event_type": "login", "ip": "300.1.1.1"}), "ip:"),
    (json.dumps({**BASE, "event_type": "customer_created", "lifetime_value": "12"}), "lifetime_value"),
    (json.dumps({**BASE, "event_type": "block", "reason": "fraud"}), "source: Field required"),
    (json.dumps({**BASE, "event_type": "care_contact", "topic": "chat"}), "topic"),
])
def test_poison_messages_name_the_field(body, reason):
    with pytest.raises(PoisonMessage, match=reason.replace("(", r"\(")):
        parse_message(body)


def test_poison_reason_never_contains_raw_pii():
    with pytest.raises(PoisonMessage) as info:
        parse_message(json.dumps({**BASE, "event_type": "login", "email": "private-but-broken", "phone": "call+me"}))
    assert "private-but-broken" not in str(info.value) and "call+me" not in str(info.value)
    assert "email" in str(info.value) and "phone" in str(info.value)


class _FlakySqs:
    """Fails the first send of every third entry, as SQS may: the publisher must re-send exactly those."""

    def __init__(self):
        self.received, self.calls = [], 0

    def send_message_batch(self, QueueUrl, Entries):
        self.calls += 1
        ok, failed = [], []
        for n, e in enumerate(Entries):
            if self.calls % 2 == 1 and n % 3 == 0:
                failed.append({"Id": e["Id"], "Code": "InternalError", "SenderFault": False})
            else:
                ok.append({"Id": e["Id"]})
                self.received.append(e["MessageBody"])
        return {"Successful": ok, "Failed": failed}


def test_publish_resends_partial_failures_and_paces_by_rate():
    fake_now = [0.0]
    sleeps = []
    sqs = _FlakySqs()
    bodies = [f"m{i}" for i in range(25)]
    report = publish(sqs, "q", bodies, rate=10, clock=lambda: fake_now[0],
                     sleep=lambda s: (sleeps.append(s), fake_now.__setitem__(0, fake_now[0] + s)))
    assert sorted(sqs.received) == sorted(bodies) and report.sent == 25 and report.resent > 0
    assert fake_now[0] >= 2.5 - 1e-9  # 25 messages at 10/s cannot finish before 2.5 s


@pytest.mark.services
def test_cli_publish_into_elasticmq(settings, services, tmp_path):
    path = tmp_path / "stream.jsonl"
    bodies = [json.dumps({**BASE, "event_id": f"ev{i}", "event_type": "login"}) for i in range(23)] + ["{poison"]
    path.write_text("\n".join(bodies) + "\n")
    sqs = boto3.client("sqs", endpoint_url=settings.queue_endpoint, region_name="us-east-1",
                       aws_access_key_id="x", aws_secret_access_key="x")
    url = sqs.get_queue_url(QueueName=settings.queues.events)["QueueUrl"]
    sqs.purge_queue(QueueUrl=url)
    exe = str(Path(sys.executable).with_name("identigraph"))
    env = {"PATH": "/usr/bin:/bin", "IDENTIGRAPH__DATA_DIR": str(settings.data_path),
           "IDENTIGRAPH__SERVICES__ELASTICMQ__PORT": str(settings.services.elasticmq.port)}
    proc = subprocess.run([exe, "stream", "publish", "--events", str(path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "sent 24 events in 24 messages" in proc.stdout
    got = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not msgs:
            break
        got += [m["Body"] for m in msgs]
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                        for i, m in enumerate(msgs)])
    assert sorted(got) == sorted(bodies)
