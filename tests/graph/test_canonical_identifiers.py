"""Every spelling of an identifier lands on one vertex, whichever writer wrote it: the Spark load, the stream
and the scoring API all canonicalise through ``graph.canonical``; spellings it refuses are refused by all
three (quarantined, dead-lettered, 422). Real Spark, Gremlin Server and app."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from gremlin_python.process.graph_traversal import __

from identigraph.errors import SchemaError
from identigraph.etl import contract
from identigraph.etl.stream_events import PoisonMessage, parse_message
from identigraph.etl.stream_writer import StreamWriter
from identigraph.etl.transforms import identity_edges
from identigraph.graph import canonical, pseudonym
from identigraph.graph.records import identifier_vertex_id

COLUMN = {"ip": "ip", "device": "device_id", "email": "email", "phone": "phone", "card": "card_fingerprint"}
SAME = {  # each list: spellings of one identifier
    "ip": ["86.255.61.50", "::ffff:86.255.61.50", " 86.255.61.50 ", "::FFFF:86.255.61.50", "８６.２５５.６１.５０",
           "0:0:0:0:0:ffff:56ff:3d32"],
    "device": ["ab12cd34ef56", "AB12CD34EF56", "Ab12Cd34Ef56", "ａｂ１２ｃｄ３４ｅｆ５６"],
    "email": ["jane.doe@example.com", "Jane.Doe@Example.COM", "ｊａｎｅ.doe@example.com", "jane.doe@ｅｘａｍｐｌｅ.com"],
    "phone": ["+971501234567", "+971 50 123 4567", "00971501234567", "＋９７１５０１２３４５６７", "+٩٧١٥٠١٢٣٤٥٦٧"],
    "card": ["card_7f3a", "ｃａｒｄ_7f3a"],
}
REFUSED = {
    "ip": ["fe80::1%eth0", "86.255.61.50\u200b", "086.255.061.050"],
    "device": ["ab12\u200bcd34", "ab12\u2060cd34", "ab12\u202ecd34"],
    "email": ["jane.doe@exam\u200bple.com", "j\u0430ne.doe@example.com", "jane\u00addoe@example.com",
              "jane.doe@examp\u0435le.com"],
    "card": ["card\u200d7f3a"],
}


def _event(n: int, label: str, value: str) -> dict:
    return {"schema_version": 1, "event_id": f"canon-{n}", "event_type": "signup", "customer_id": f"canon-c{n}",
            "occurred_at": "2026-06-01T00:00:00Z", COLUMN[label]: value}


def _cases() -> list[tuple[int, str, str, bool]]:
    out, n = [], 0
    for table, ok in ((SAME, True), (REFUSED, False)):
        for label, values in table.items():
            for value in values:
                out.append((n, label, value, ok))
                n += 1
    return out


@pytest.mark.parametrize("label", sorted(SAME))
def test_every_spelling_canonicalises_to_one_text(label):
    assert len({canonical.canonical_identifier(label, v) for v in SAME[label]}) == 1
    for value in REFUSED.get(label, []):
        with pytest.raises(SchemaError, match=f"^{COLUMN[label]}: "):
            canonical.canonical_identifier(label, value)


def test_ascii_spellings_are_unchanged_by_canonicalisation():
    """Graphs loaded before keep their vertices: ASCII emails, phones, IPs and cards canonicalise as before."""
    p = pseudonym.Pseudonymiser(b"k" * 32)
    assert p.email(" Jane.Doe@Example.COM ") == p.digest("email", "jane.doe@example.com")
    assert p.phone("+971 50-123-4567") == p.digest("phone", "+971501234567")
    assert canonical.normalise_ip("2001:0db8::0001") == "2001:db8::1" and canonical.canonical_card("Card_X") == "Card_X"


@pytest.mark.services
def test_the_etl_the_stream_and_the_api_map_every_spelling_to_one_vertex(spark, graph, settings, tmp_path):
    from identigraph.serving.app import create_app
    from test_serving_api import REVIEWER, serving_config

    pseudo = pseudonym.from_settings(settings)
    cases = _cases()

    # 1. the Spark load
    cols = contract.TABLES["identity_events"]
    rows = [tuple(_event(n, label, value).get(c) for c in cols) for n, label, value, _ in cases]
    good, bad = contract.validate_events(spark.createDataFrame(rows, ", ".join(f"{c} string" for c in cols)),
                                         pseudonym.resolve_key(settings))
    spark_ids = {r["from_id"].removeprefix("customer:canon-c"): r["to_id"] for r in identity_edges(good).collect()}
    quarantined = {r["row"]["event_id"].removeprefix("canon-"): r["reason"] for r in bad.collect()}

    # 2. the stream, into the graph
    events, poison = [], {}
    for n, label, value, _ in cases:
        try:
            events.append(parse_message(json.dumps(_event(n, label, value))))
        except PoisonMessage as exc:
            poison[str(n)] = str(exc)
    StreamWriter(graph, pseudo).write(events)
    stream_ids = {row["c"].removeprefix("customer:canon-c"): row["i"] for row in graph.submit(
        lambda g: g.E().project("c", "i").by(__.out_v().id_()).by(__.in_v().id_()))}

    # 3. the API: scored as a signup, found on the vertex the stream wrote
    app = create_app(settings, serving_config(tmp_path, review_queue=False), None)
    api_ids, refused = {}, {}
    with TestClient(app) as client:
        for n, label, value, _ in cases:
            r = client.post("/v1/score", headers=REVIEWER, json={
                "customer_id": f"api-{n}", "action": "signup", "identifiers": {COLUMN[label]: value}})
            if r.status_code == 422:
                refused[str(n)] = r.json()["detail"][0]["loc"][-1]
                continue
            assert r.status_code == 200, r.text
            (item,) = r.json()["explanation"]["evidence"]
            api_ids[str(n)] = item["identifier_id"]
            assert item["customers_total"] == len(SAME[label]) + 1  # every stream spelling is on this vertex

    for label, values in SAME.items():
        ns = [str(n) for n, lab, _, ok in cases if lab == label and ok]
        expected = identifier_vertex_id(label, values[0], pseudo)
        assert {spark_ids[n] for n in ns} == {expected}, label
        assert {stream_ids[n] for n in ns} == {expected}, label
        assert {api_ids[n] for n in ns} == {expected}, label
    for n, label, value, ok in cases:
        if ok:
            continue
        key = str(n)
        assert key not in spark_ids and quarantined[key].startswith(COLUMN[label]), (label, value)
        assert key not in stream_ids and poison[key].startswith(COLUMN[label]), (label, value)
        assert refused[key] == COLUMN[label], (label, value)
        with pytest.raises(SchemaError):
            canonical.canonical_identifier(label, value)
    everything = json.dumps([quarantined, poison])
    assert "jane" not in everything  # refused emails are not echoed in the reasons

