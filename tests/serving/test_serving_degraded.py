"""Outages and refusals without collateral: a graph or queue outage costs a bounded number of human cases
and never a 200 with missing scores, and a refused batch has done nothing at all. Real app, real Gremlin
Server and ElasticMQ (and a closed port where an outage is wanted)."""

from __future__ import annotations

import json

import pytest

from conftest import free_port
from test_serving_api import (  # noqa: F401 — fixtures shared with the API tests
    SCORER,
    _audit,
    _drain_review,
    _truth,
    make_client,
    serving_model,
    serving_world,
    world_counts,
    world_graph,
)

pytestmark = pytest.mark.services


def _closed(settings, service: str):
    """The settings with ``service`` (gremlin or elasticmq) on a port where nothing listens."""
    svc = settings.services.model_copy(update={service: getattr(settings.services, service).model_copy(
        update={"port": free_port()})})
    return settings.model_copy(update={"services": svc})


def _cases(client, settings) -> list[dict]:
    client.app.state.service.review.drain()
    return _drain_review(settings)


def _counter(client, name: str, **labels) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(f"{name}{{{want}}}"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_unknown_customers_are_answered_and_audited_not_queued_for_people(make_client, settings):
    """The probe: 50 unknown ids without identifiers put 50 cases in the human queue in 0.27 s."""
    _drain_review(settings)
    client = make_client()
    body = {"requests": [{"customer_id": f"ghost-{i:03d}"} for i in range(50)]}
    r = client.post("/v1/score:batch", json=body, headers=SCORER)
    assert r.status_code == 200
    assert {(x["decision"], x["degraded"]) for x in r.json()["results"]} == {("review", True)}
    assert _cases(client, settings) == []
    audit = _audit(client)[-50:]
    assert [a["customer_id"] for a in audit] == [f"ghost-{i:03d}" for i in range(50)]
    assert {a["review_case"] for a in audit} == {"degraded_not_queued"}
    assert _counter(client, "identigraph_serving_review_cases_total", outcome="degraded_not_queued") == 50


def test_a_graph_outage_of_1000_requests_queues_at_most_the_configured_cases(make_client, settings, serving_world):
    _drain_review(settings)
    down = make_client(app_settings=_closed(settings, "gremlin"), graph={"retry_attempts": 1},
                       review={"degraded": True, "max_degraded_per_window": 7})
    ids = serving_world.customers["customer_id"].tolist()[:1000]
    ids += [f"outage-{i}" for i in range(1000 - len(ids))]
    for i in range(0, 1000, 50):
        r = down.post("/v1/score:batch", json={"requests": [{"customer_id": c} for c in ids[i:i + 50]]},
                      headers=SCORER)
        assert r.status_code == 200 and all(x["degraded"] for x in r.json()["results"])
    cases = _cases(down, settings)
    assert 0 < len(cases) <= 7 and all(c["degraded"] for c in cases)
    assert _counter(down, "identigraph_serving_review_cases_total", outcome="over_budget") == 1000 - len(cases)
    # and a score consumer never gets a 200 with blank scores: CSV and JSON /invocations answer 503
    csv = down.post("/invocations", content="\n".join(ids[:3]), headers={**SCORER, "Content-Type": "text/csv"})
    assert csv.status_code == 503 and csv.headers["Retry-After"] == "1" and "graph" in csv.json()["detail"]
    js = down.post("/invocations", json={"instances": [{"customer_id": ids[0]}]}, headers=SCORER)
    assert js.status_code == 503


def test_invocations_for_customers_the_graph_does_not_know_are_refused_not_blank(make_client, serving_world):
    client = make_client()
    known = serving_world.customers["customer_id"].iloc[0]
    r = client.post("/invocations", content=f"{known}\nnobody-here\n", headers={**SCORER, "Content-Type": "text/csv"})
    assert r.status_code == 404 and "lines [2]" in r.json()["detail"]


def test_one_case_per_customer_per_window(make_client, settings, serving_world):
    _drain_review(settings)
    client = make_client(policy={"threshold": 0.0, "hard_rules": [], "lifetime_value_boundary": 0.0})
    cid = serving_world.customers["customer_id"].iloc[3]
    decisions = [client.post("/v1/score", json={"customer_id": cid}, headers=SCORER).json()["decision"]
                 for _ in range(5)]
    assert decisions == ["review"] * 5
    cases = [c for c in _cases(client, settings) if c["customer_id"] == cid]
    assert len(cases) == 1
    assert [a["review_case"] for a in _audit(client)[-5:]] == ["queued"] + ["duplicate"] * 4


def test_a_queue_outage_keeps_the_cases_and_says_they_were_not_sent(make_client, settings, serving_world, tmp_path):
    client = make_client(app_settings=_closed(settings, "elasticmq"),
                         policy={"threshold": 0.0, "hard_rules": [], "lifetime_value_boundary": 0.0},
                         review={"send_attempts": 2})
    ids = serving_world.customers["customer_id"].iloc[10:14].tolist()
    for cid in ids:
        assert client.post("/v1/score", json={"customer_id": cid}, headers=SCORER).json()["decision"] == "review"
    client.app.state.service.review.drain(timeout_s=60)
    assert _counter(client, "identigraph_serving_review_cases_total", outcome="queued") == 4
    assert _counter(client, "identigraph_serving_review_cases_total", outcome="sent") == 0
    assert _counter(client, "identigraph_serving_review_cases_total", outcome="unsent") == 4
    kept = [json.loads(line) for line in (tmp_path / "review-unsent.jsonl").read_text().splitlines()]
    assert sorted(k["case"]["customer_id"] for k in kept) == sorted(ids)
    assert all(k["unsent_because"].startswith("send failed") for k in kept)


def test_a_refused_batch_scores_audits_and_queues_nothing_and_names_the_item(make_client, settings, serving_world):
    _drain_review(settings)
    client = make_client(policy={"threshold": 0.0, "hard_rules": [], "lifetime_value_boundary": 0.0})
    ids = _truth(serving_world, "ring")[:5]
    before = len(_audit(client)) if client.app.state.service.audit.path.exists() else 0
    requests = [{"customer_id": c} for c in ids]
    requests[3] = {"customer_id": ids[3], "identifiers": {"ip": "::ffff:10.0.0.1%eth0"}}
    requests.append({"customer_id": "new-1", "identifiers": {"email": "p\u0430ypal@example.com"}})
    r = client.post("/v1/score:batch", json={"requests": requests}, headers=SCORER)
    assert r.status_code == 422
    assert [d["loc"] for d in r.json()["detail"]] == [["body", "requests", 3, "identifiers", "ip"],
                                                      ["body", "requests", 5, "identifiers", "email"]]
    assert "paypal" not in r.text and "10.0.0.1" not in r.text
    after = len(_audit(client)) if client.app.state.service.audit.path.exists() else 0
    assert after == before and _cases(client, settings) == []
    assert _counter(client, "identigraph_serving_decisions_total", decision="review", degraded="false") == 0
    # JSON invocations the same way
    js = client.post("/invocations", json={"instances": requests}, headers=SCORER)
    assert js.status_code == 422 and js.json()["detail"][0]["loc"] == ["body", "instances", 3, "identifiers", "ip"]
    assert (len(_audit(client)) if client.app.state.service.audit.path.exists() else 0) == before
