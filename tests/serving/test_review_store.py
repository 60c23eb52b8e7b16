"""The console's store on its own: idempotent intake, one claim at a time, verdicts only with the claim,
audit without identifiers, sessions by digest; the drawing's shape; verdicts read for labels."""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from identigraph.errors import SchemaError
from identigraph.labeling.verdicts import read_verdicts
from identigraph.serving.console import evidence
from identigraph.serving.console.intake import parse_case
from identigraph.serving.console.store import ConsoleStore, NotYours, redact


def _case(rid: str, customer: str, ts: str = "2026-06-01T00:00:00+00:00", **extra) -> dict:
    return {"request_id": rid, "customer_id": customer, "decision": "review", "score": 0.9, "ts": ts,
            "lifetime_value": 500.0, "reasons": ["x"], **extra}


@pytest.fixture
def store(tmp_path):
    s = ConsoleStore(tmp_path / "c.sqlite")
    yield s
    s.close()


def test_a_redelivered_case_is_not_a_second_case(store, tmp_path):
    assert store.add_case(_case("r1", "c1")) is True
    assert store.add_case(_case("r1", "c1")) is False
    assert [c["case_id"] for c in store.open_cases()] == ["r1"]
    assert sqlite3.connect(tmp_path / "c.sqlite").execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_queue_is_oldest_first_and_filters(store):
    store.add_case(_case("new", "c1", "2026-06-02T00:00:00+00:00"))
    store.add_case(_case("old", "c2", "2026-06-01T00:00:00+00:00", lifetime_value=50.0, score=0.4))
    assert [c["case_id"] for c in store.open_cases()] == ["old", "new"]
    assert [c["case_id"] for c in store.open_cases(min_ltv=100)] == ["new"]
    assert [c["case_id"] for c in store.open_cases(min_score=0.5)] == ["new"]
    assert [c["case_id"] for c in store.open_cases(customer="c2")] == ["old"]


def test_one_reviewer_holds_a_case_until_the_claim_lapses(store):
    store.add_case(_case("r1", "c1"))
    assert store.claim("r1", "ann", ttl_s=0.3)[0] is True
    ok, holder, _ = store.claim("r1", "bob", ttl_s=0.3)
    assert (ok, holder) == (False, "ann")
    with pytest.raises(NotYours):
        store.decide("r1", "bob", "legitimate", "")
    time.sleep(0.35)
    assert store.claim("r1", "bob", ttl_s=60)[0] is True  # ann walked away
    with pytest.raises(NotYours):
        store.decide("r1", "ann", "legitimate", "")
    vid = store.decide("r1", "bob", "confirm_fraud", "ring")
    with pytest.raises(NotYours):
        store.decide("r1", "bob", "legitimate", "")  # one verdict per case
    assert store.open_cases() == [] and store.case("r1")["verdict"]["verdict_id"] == vid
    assert store.claim("r1", "ann", 60)[0] is False  # a decided case is nobody's to claim


def test_audit_holds_no_identifier_a_note_names(store):
    store.add_case(_case("r1", "c1"))
    store.claim("r1", "ann", 60)
    note = "same as a@b.com, ip 86.255.61.50 / ::ffff:86.255.61.50, phone +44 7700 900123, card 4f9a0c3e5b7d1a2f99"
    store.decide("r1", "ann", "escalate", note)
    assert store.verdicts()[0]["note"] == note  # the verdict keeps what the reviewer wrote
    audit = str(store.audit_lines("r1"))
    for raw in ("a@b.com", "86.255.61.50", "7700", "4f9a0c3e5b7d1a2f99"):
        assert raw not in audit
    assert redact("ip 10.0.0.1") == "ip [ip]"


def test_sessions_are_stored_by_digest(store, tmp_path):
    token, csrf = store.new_session("ann", ["review"], ttl_s=60)
    assert store.session(token) == {"key_id": "ann", "scopes": ["review"], "csrf": csrf}
    assert token not in (tmp_path / "c.sqlite").read_bytes().decode("latin-1")
    assert store.session("nope") is None
    gone, _ = store.new_session("bob", ["review"], ttl_s=0.01)
    time.sleep(0.02)
    assert store.session(gone) is None


def test_messages_that_are_not_cases():
    for body, why in (("{", "not JSON"), ("[1]", "not a JSON object"), ('{"request_id": "r"}', "no customer_id"),
                      ('{"request_id": "r", "customer_id": "c", "score": "high"}', "score is not a number")):
        with pytest.raises(ValueError, match=why):
            parse_case(body)


def test_verdicts_for_labels_are_the_latest_answer_at_as_of(store, tmp_path):
    for rid, customer, verdict in (("r1", "c1", "legitimate"), ("r2", "c1", "confirm_fraud"),
                                   ("r3", "c2", "escalate"), ("r4", "c3", "legitimate")):
        store.add_case(_case(rid, customer))
        store.claim(rid, "ann", 60)
        store.decide(rid, "ann", verdict, "")
    now = datetime.now(timezone.utc)
    got = {r[0]: r[1] for r in read_verdicts(tmp_path / "c.sqlite", now + timedelta(seconds=1))}
    assert got == {"c1": "confirm_fraud", "c3": "legitimate"}  # escalate is no answer
    assert read_verdicts(tmp_path / "c.sqlite", now - timedelta(days=1)) == []  # given after the cut
    with pytest.raises(SchemaError, match="not a file"):
        read_verdicts(tmp_path / "missing.sqlite", now)


def test_drawing_counts_a_hub_instead_of_drawing_it():
    hood = {"customer_id": "c0", "props": {"blocked": False}, "identifiers": [
        {"label": "ip", "shown_as": "ip~abc", "customers_total": 4868, "others_total": 4867, "blocked": 12,
         "others": [{"customer_id": f"o{i}", "blocked": i == 0, "contested": False} for i in range(8)]},
        {"label": "card", "shown_as": "card~def", "customers_total": 1, "others_total": 0, "blocked": 0, "others": []},
    ]}
    svg = evidence.svg(hood)
    assert svg.count('class="customer') == 8 and svg.count('class="customer blocked"') == 1
    assert "+4,859" in svg and "4,859 more customers share this ip, 11 of them blocked" in svg
    assert svg.count('class="identifier"') == 2 and "<script" not in svg
    hostile = evidence.svg({**hood, "customer_id": "<script>x</script>"})
    assert "<script>x" not in hostile
