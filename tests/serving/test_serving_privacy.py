"""What scoring callers, records and logs may hold: decisions and reasons for the ``score`` scope, keyed
references in the audit log, the review queue and logs — never an identifier. Real app, graph, queue."""

from __future__ import annotations

import json
import logging

import pytest

from identigraph.logs import JsonFormatter
from test_serving_api import (  # noqa: F401 — fixtures shared with the API tests
    IDENTIFIER_COLUMNS,
    REVIEWER,
    SCORER,
    _drain_review,
    _identifiers_of,
    _truth,
    make_client,
    serving_model,
    serving_world,
    world_counts,
    world_graph,
)

pytestmark = pytest.mark.services


def _identifier_texts(world, customers: list[str]) -> set[str]:
    """Every spelling of the customers' identifiers that could appear: raw values and graph vertex ids."""
    ev = world.identity_events[world.identity_events["customer_id"].isin(customers)]
    out: set[str] = set()
    for column, label in (("device_id", "device"), ("ip", "ip"), ("card_fingerprint", "card")):
        for value in ev[column].dropna().unique():
            out |= {value, f"{label}:{value}"}
    return out


def test_score_scope_responses_hold_no_identifier_and_answer_no_registration_question(make_client, serving_world,
                                                                                      world_graph):
    client = make_client(policy={"threshold": 0.0})  # everything flagged: the richest responses
    customers = _truth(serving_world, "ring")[:4] + _truth(serving_world, "ato")[:2]
    texts = []
    for cid in customers:
        given = _identifiers_of(serving_world, cid)
        texts.append(client.post("/v1/score", json={"customer_id": cid, "identifiers": given, "explain": True},
                                 headers=SCORER).text)
        texts.append(client.post("/v1/score:batch", json={"requests": [{"customer_id": cid}]}, headers=SCORER).text)
    everything = "\n".join(texts)
    ids = {v for v in world_graph.submit(lambda g: g.V().has_label("device", "ip", "card", "email", "phone").id_())}
    found = sorted(t for t in _identifier_texts(serving_world, customers) | ids if t in everything)
    assert found == []
    assert '"explanation":null' in everything and '"neighbourhood":null' in everything
    # the same calls with a key that may read identities carry the evidence
    detailed = client.post("/v1/score", json={"customer_id": customers[0]}, headers=REVIEWER).json()
    assert detailed["explanation"]["evidence"] and any(e["identifier_id"] in ids for e in detailed["explanation"]["evidence"])

    # registration oracle: a registered email and a random one get the same shape of answer
    registered = serving_world.identity_events["email"].dropna().iloc[0]
    answers = [client.post("/v1/score", headers=SCORER, json={
        "customer_id": f"probe-{n}", "action": "signup", "identifiers": {"email": email}}).json()
        for n, email in enumerate((registered, "nobody.at.all.7781@example.org"))]
    for a in answers:
        assert a["explanation"] is None and a["neighbourhood"] is None
        assert not any("shares" in r or "account" in r.split(":")[0] for r in a["reasons"])


def test_records_and_logs_hold_references_not_identifiers(make_client, serving_world, settings, caplog):
    caplog.set_level(logging.INFO, logger="identigraph")
    caplog.handler.setFormatter(JsonFormatter())  # the logs as services write them: the fields too
    _drain_review(settings)
    client = make_client(policy={"threshold": 0.0})  # reviews and blocks: queue, attributions
    customers = _truth(serving_world, "ring")[:3] + _truth(serving_world, "household")[:2]
    for cid in customers:
        given = _identifiers_of(serving_world, cid)
        assert client.post("/v1/score", json={"customer_id": cid, "identifiers": given},
                           headers=REVIEWER).status_code == 200
    client.app.state.service.review.drain()
    cases = _drain_review(settings)
    records = "\n".join([json.dumps(cases), client.app.state.service.audit.path.read_text(), caplog.text])
    leaked = sorted(t for t in _identifier_texts(serving_world, customers) if t in records)
    assert leaked == []
    assert cases and all(e["identifier_ref"].split("~")[0] in ("device", "ip", "card", "email", "phone")
                         for c in cases for e in c["explanation"]["evidence"])
    audit = [json.loads(line) for line in client.app.state.service.audit.path.read_text().splitlines()]
    assert all("~" in ref for a in audit for ref in a["identifiers_given"])
    # the same identifier has the same reference everywhere: cases can be grouped without the raw value
    refs = {e["identifier_ref"] for c in cases for e in c["explanation"]["evidence"]}
    assert refs & {ref for a in audit for ref in a["identifiers_given"]}


@pytest.mark.parametrize("customer_id", ["971501234567", "00971501234567", "971-50-123-4567", "4111111111111111",
                                         "jane@example.com", "+971501234567"])
def test_customer_ids_that_look_like_phones_or_emails_are_refused(make_client, customer_id):
    client = make_client()
    before = client.app.state.service.audit.path.read_text() if client.app.state.service.audit.path.exists() else ""
    r = client.post("/v1/score", json={"customer_id": customer_id}, headers=SCORER)
    assert r.status_code == 422 and customer_id not in r.text
    csv = client.post("/invocations", content=customer_id + "\n", headers={**SCORER, "Content-Type": "text/csv"})
    assert csv.status_code == 422 and customer_id not in csv.text
    after = client.app.state.service.audit.path.read_text() if client.app.state.service.audit.path.exists() else ""
    assert customer_id not in after and len(after) == len(before)
