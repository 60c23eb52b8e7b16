"""Reading the dead-letter queue per source message (``identigraph dlq``) against a real ElasticMQ.

A crash between a DLQ send and its delete, redelivered after FIFO's 5-minute deduplication window, puts the
same source message in the DLQ twice: here simulated by a second copy with another deduplication id but the
same ``source_message_id`` attribute.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_settings
from identigraph.errors import IdentigraphError
from identigraph.etl import dead_letters
from identigraph.etl.publish import sqs_client
from identigraph.services import local

pytestmark = pytest.mark.services
HOLD = 20
IP = "203.0.113.77"


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """ElasticMQ alone: nothing here needs the graph."""
    s = make_settings(tmp_path_factory.mktemp("dlq"), queues={"visibility_timeout_s": 5})
    local.up(s, [local.ELASTICMQ])
    yield s
    local.down(s, [local.ELASTICMQ])


@pytest.fixture
def queues(own):
    sqs = sqs_client(own)
    events, dlq = dead_letters.queue_urls(own, sqs)
    for url in (events, dlq):
        sqs.purge_queue(QueueUrl=url)
    return sqs, events, dlq


def _dead_letter(sqs, dlq, body, source, dedup, group=None, kind="poison"):
    """A DLQ message as the consumer sends it (its own group per send, unless ``group`` says otherwise)."""
    attrs = {"reason": {"DataType": "String", "StringValue": "body: not JSON (JSONDecodeError)"},
             "kind": {"DataType": "String", "StringValue": kind},
             "source_message_id": {"DataType": "String", "StringValue": source}}
    sqs.send_message(QueueUrl=dlq, MessageBody=body, MessageAttributes=attrs, MessageGroupId=group or dedup,
                     MessageDeduplicationId=dedup)


def _bodies(sqs, url):
    out, empty = [], 0
    while empty < 2:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   VisibilityTimeout=60).get("Messages", [])
        empty = 0 if msgs else empty + 1
        out += [m["Body"] for m in msgs]
    return out


def _doubled(sqs, dlq):
    """Source A twice (the second beyond the deduplication window), source B once."""
    a = json.dumps({"event_id": "ev-a", "event_type": "login", "ip": IP, "customer_id": "c1"})
    _dead_letter(sqs, dlq, a, "src-a", "src-a")
    _dead_letter(sqs, dlq, a, "src-a", "src-a-later")
    _dead_letter(sqs, dlq, '{"event_id": "ev-b", broken', "src-b", "src-b")
    return a


def test_list_compact_redrive_by_source_message_id(queues):
    sqs, events, dlq = queues
    a = _doubled(sqs, dlq)

    listing = dead_letters.read(sqs, dlq, HOLD)
    rows = {r["source_message_id"]: r for r in dead_letters.entries(listing)}
    assert {s: r["copies"] for s, r in rows.items()} == {"src-a": 2, "src-b": 1}
    assert rows["src-a"]["event_id"] == "ev-a" and rows["src-b"]["event_id"] is None  # src-b's body is not JSON
    assert rows["src-a"]["kind"] == "poison" and rows["src-a"]["reason"].startswith("body: not JSON")
    assert dead_letters.summary(listing) == {"messages": 3, "distinct": 2, "duplicates": 1, "unread": 0,
                                             "complete": True}
    dead_letters.release(sqs, dlq, listing.letters)

    report = dead_letters.compact(sqs, dlq, HOLD)
    assert report["deleted"] == 1 and report["distinct"] == 2
    again = dead_letters.compact(sqs, dlq, HOLD)  # a re-run finds nothing more to delete
    assert again["messages"] == 2 and again["deleted"] == 0
    left = dead_letters.read(sqs, dlq, HOLD)
    assert sorted(x.source_id for x in left.letters) == ["src-a", "src-b"]
    dead_letters.release(sqs, dlq, left.letters)

    _dead_letter(sqs, dlq, a, "src-a", "src-a-much-later")  # doubled again before the redrive
    report = dead_letters.redrive(sqs, dlq, events, HOLD)
    assert report["sent"] == 2 and report["deleted"] == 3 and report["left"] == 0
    assert sorted(_bodies(sqs, events)) == sorted([a, '{"event_id": "ev-b", broken'])
    assert _bodies(sqs, dlq) == []


def test_compact_keeps_one_copy_of_each_source_however_many(queues):
    sqs, _, dlq = queues
    for i in range(4):
        _dead_letter(sqs, dlq, "{x", "src-x", f"src-x-{i}")
    for i in range(15):  # more than one receive's worth
        _dead_letter(sqs, dlq, f"{{y{i}", f"src-y{i}", f"src-y{i}")
    report = dead_letters.compact(sqs, dlq, HOLD)
    assert (report["messages"], report["distinct"], report["deleted"]) == (19, 16, 3)
    assert sorted(_bodies(sqs, dlq)) == sorted(["{x"] + [f"{{y{i}" for i in range(15)])


def test_redrive_reaches_copies_hidden_behind_their_fifo_group(queues):
    """Copies an older consumer sent share their source's FIFO group; one that a receive does not return with
    the group's head stays hidden while the head is held. The read counts it as unread; redrive deletes the
    head and then finds it, without sending its source twice."""
    sqs, events, dlq = queues
    for i in range(3):
        _dead_letter(sqs, dlq, f"{{s{i}", f"src-s{i}", f"src-s{i}")
    for i in range(12):  # one receive returns 10 at most: at least 2 stay behind the held ones
        _dead_letter(sqs, dlq, "{z", "src-z", f"src-z-{i}", group="src-z")
    listing = dead_letters.read(sqs, dlq, HOLD)
    dead_letters.release(sqs, dlq, listing.letters)
    assert listing.unread >= 2 and len(listing.letters) + listing.unread == 15
    report = dead_letters.redrive(sqs, dlq, events, HOLD)
    assert report["sent"] == 4 and report["deleted"] == 15 and report["left"] == 0
    assert sorted(_bodies(sqs, events)) == sorted(["{z"] + [f"{{s{i}" for i in range(3)])
    assert _bodies(sqs, dlq) == []


def test_redrive_by_kind_sends_back_only_that_kind_and_leaves_the_rest(queues):
    sqs, events, dlq = queues
    refused = json.dumps({"event_id": "ev-r", "event_type": "login", "ip": IP, "customer_id": "c2"})
    _dead_letter(sqs, dlq, refused, "src-r", "src-r", kind="refused")
    _dead_letter(sqs, dlq, refused, "src-r", "src-r-later", kind="refused")
    _dead_letter(sqs, dlq, "{p", "src-p", "src-p")  # poison: a redrive would only dead-letter it again
    with pytest.raises(IdentigraphError, match="unknown dead-letter kind"):
        dead_letters.redrive(sqs, dlq, events, HOLD, {"refsued"})
    report = dead_letters.redrive(sqs, dlq, events, HOLD, {"refused"})
    assert (report["sent"], report["deleted"], report["left"]) == (1, 2, 1)
    assert _bodies(sqs, events) == [refused]
    left = dead_letters.read(sqs, dlq, HOLD)
    assert [(x.source_id, x.kind) for x in left.letters] == [("src-p", "poison")]  # released, not deleted


def test_cli_dlq_list_prints_no_body(own, queues):
    sqs, _, dlq = queues
    _doubled(sqs, dlq)
    exe = str(Path(sys.executable).with_name("identigraph"))
    env = {**os.environ, "IDENTIGRAPH__DATA_DIR": str(own.data_path),
           "IDENTIGRAPH__SERVICES__ELASTICMQ__PORT": str(own.services.elasticmq.port)}
    proc = subprocess.run([exe, "dlq", "list", "--hold-s", str(HOLD)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[-1] == {"summary": {"messages": 3, "distinct": 2, "duplicates": 1, "unread": 0, "complete": True}}
    assert sorted((r["source_message_id"], r["copies"]) for r in lines[:-1]) == [("src-a", 2), ("src-b", 1)]
    assert IP not in proc.stdout + proc.stderr and "customer_id" not in proc.stdout and "broken" not in proc.stdout
    # list deletes nothing and leaves every message visible again
    assert len(_bodies(sqs, dlq)) == 3
