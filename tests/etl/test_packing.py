"""Several events per SQS message: the producer's packing and the consumer's unpacking agree."""

import json

import pytest

from identigraph.errors import PoisonMessage
from identigraph.etl.packing import pack, unpack


def test_pack_keeps_order_limits_and_sends_non_json_alone():
    lines = [json.dumps({"event_id": f"e{i}", "pad": "x" * 50}) for i in range(7)]
    packed = list(pack([*lines[:3], "{broken", *lines[3:]], max_events=2))
    assert [p.events for p in packed] == [2, 1, 1, 2, 2]
    assert packed[2].body == "{broken"  # alone and as it came: the consumer reports it as poison
    assert packed[1].body == lines[2]  # one event is sent as a plain message, no envelope
    flat = [b for p in packed for b in (unpack(p.body) or [p.body])]
    assert [json.loads(b)["event_id"] for b in flat if b != "{broken"] == [f"e{i}" for i in range(7)]
    by_size = list(pack(lines, max_events=100, max_bytes=200))
    assert all(len(p.body.encode()) <= 200 for p in by_size) and sum(p.events for p in by_size) == 7


def test_unpack_single_events_and_bad_envelopes():
    single = json.dumps({"event_id": "e1", "event_type": "login", "events": [1]})  # an extra field, ignored
    assert unpack(single) is None and unpack("{not json") is None
    assert unpack(json.dumps({"events": [{"a": 1}, 2]})) == ['{"a":1}', "2"]  # 2 is the consumer's poison
    with pytest.raises(PoisonMessage, match="at least one event"):
        unpack('{"events": []}')
