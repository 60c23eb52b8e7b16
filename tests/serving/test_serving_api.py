"""The scoring and identity API through the real app, a real Gremlin Server and ElasticMQ, and a real model.

One small synthetic world (rings, account takeovers, households) is loaded through the graph layer's own
Python paths — identity edges by the batched upserts, customer history by the stream writer, which a
test elsewhere proves builds the same graph as the Spark load — exported to a snapshot, and a tiny model is
trained on it once per session. Policy cases do not depend on how good that model is: they pin the
threshold at 0 (everything is "fraud") or 1 (nothing is), so each case exercises one branch for sure.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from conftest import free_port
from identigraph.config_loader import packaged_default
from identigraph.etl.export import export_snapshot
from identigraph.etl.publish import sqs_client
from identigraph.etl.stream_events import parse_message
from identigraph.etl.stream_writer import StreamWriter
from identigraph.graph import pseudonym, queries
from identigraph.graph.records import aggregate, event_edges
from identigraph.graph.schema import IDENTITY_EVENT_TYPES
from identigraph.graph.upsert import Upserter
from identigraph.logs import JsonFormatter
from identigraph.serving.app import create_app
from identigraph.serving.auth import key_digest
from identigraph.serving.config import ServingConfig
from identigraph.synth import SynthParams, generate_world

pytestmark = pytest.mark.services

WORLD = SynthParams(customers=600, seed=11, ring_share=0.06, multi_account_share=0.03, ato_share=0.02)
KEYS = {"scorer": ["score"], "reader": ["identity:read"], "admin": ["score", "identity:read", "model:admin"],
        "reviewer": ["score", "identity:read"]}
SCORER, READER, ADMIN, REVIEWER = ({"X-API-Key": f"{name}-secret"} for name in KEYS)
IDENTIFIER_COLUMNS = ("device_id", "ip", "email", "phone", "card_fingerprint")


def _iso(ts) -> str:
    return pd.Timestamp(ts).strftime("%Y-%m-%dT%H:%M:%SZ")


def _history_events(world) -> list:
    """Customers, blocks, lifts and care contacts as the stream's own messages."""
    out = []

    def ev(event_id, kind, cid, at, **more):
        out.append({"schema_version": 1, "event_id": event_id, "event_type": kind, "customer_id": cid,
                    "occurred_at": _iso(at), **{k: v for k, v in more.items() if isinstance(v, (str, float))
                                                 and not pd.isna(v)}})

    for r in world.customers.to_dict("records"):
        ev(f"cc-{r['customer_id']}", "customer_created", r["customer_id"], r["created_at"], country=r["country"],
           lifetime_value=float(r["lifetime_value"]))
    for n, r in enumerate(world.blocks.to_dict("records")):
        ev(f"bl-{n}", "block", r["customer_id"], r["blocked_at"], reason=r["reason"], source=r["source"],
           rule_name=r["rule_name"])
        if not pd.isna(r["unblocked_at"]):
            ev(f"ub-{n}", "unblock", r["customer_id"], r["unblocked_at"])
    for n, r in enumerate(world.care_contacts.to_dict("records")):
        ev(f"cx-{n}", "care_contact", r["customer_id"], r["contacted_at"], topic=r["topic"])
    out += [r for r in world.stream_records() if r["event_type"] not in IDENTITY_EVENT_TYPES]
    return [parse_message(json.dumps(e)) for e in out]


def load_world(client, world, pseudo) -> dict[str, int]:
    queries.clear(client)
    writer = StreamWriter(client, pseudo)  # first: it creates customers with the history defaults
    history = _history_events(world)
    for i in range(0, len(history), 500):
        writer.write(history[i:i + 500])
    rows = world.identity_events.to_dict("records") + [
        r for r in world.stream_records() if r["event_type"] in IDENTITY_EVENT_TYPES]
    Upserter(client).edges(aggregate(x for r in rows for x in event_edges(r, pseudo)))
    return queries.counts(client)


@pytest.fixture(scope="session")
def serving_world():
    return generate_world(WORLD)


@pytest.fixture(scope="session")
def world_counts(settings, session_client, serving_world):
    return load_world(session_client, serving_world, pseudonym.from_settings(settings))


@pytest.fixture(scope="session")
def serving_model(settings, session_client, serving_world, world_counts, tmp_path_factory):
    """(model dir, as-of): a tiny model trained on the world's snapshot, once per session."""
    from identigraph.model.config import load_model_config
    from identigraph.model.pipeline import run_train

    root = tmp_path_factory.mktemp("serving-model")
    export_snapshot(session_client, root / "snapshot")
    summary = json.loads((root / "snapshot" / "_summary.json").read_text())
    summary["as_of"] = _iso(WORLD.end)  # the world's clock, not the export's
    (root / "snapshot" / "_summary.json").write_text(json.dumps(summary))
    cfg = load_model_config(packaged_default("model.yaml"), {
        "training.epochs": 30, "training.patience": 10, "split": "stratified", "network.hidden": 32})
    run_train(root / "snapshot", root / "model", cfg, target="customer.blocked", device="cpu", log=lambda _: None)
    return root / "model", WORLD.end


@pytest.fixture(scope="module")
def world_graph(settings, session_client, serving_world, world_counts, serving_model):
    """The world in the graph for this module (other modules empty the shared server)."""
    if queries.counts(session_client) != world_counts:
        load_world(session_client, serving_world, pseudonym.from_settings(settings))
    return session_client


def serving_config(tmp_path: Path, extra_keys: list[dict] | None = None, **over) -> ServingConfig:
    """The tests' config: the KEYS above (generous limits), a slow key, and ``extra_keys`` ({id, scopes, ...})."""
    keys = [{"id": name, "sha256": key_digest(f"{name}-secret"), "scopes": scopes,
             "rate_limit": {"per_second": 1000, "burst": 1000}, "max_concurrent": 64} for name, scopes in KEYS.items()]
    keys.append({"id": "slow", "sha256": key_digest("slow-secret"), "scopes": ["score"],
                 "rate_limit": {"per_second": 0.2, "burst": 2}})
    keys += [{"sha256": key_digest(f"{k['id']}-secret"), **k} for k in extra_keys or []]
    base = {"api_keys": keys, "as_of": WORLD.end, "audit_file": str(tmp_path / "audit.jsonl"),
            "models_root": str(tmp_path), "review": {"unsent_file": str(tmp_path / "review-unsent.jsonl")},
            # the shared test machine is busy; tests that need a deadline set one
            "graph": {"timeout_s": 3.0}, "reads": {"timeout_s": 5.0},
            "policy": {"lifetime_value_boundary": 200.0,
                       "hard_rules": [{"name": "device_shared_with_blocked", "identifier": "device",
                                       "min_blocked": 2}]},
            "neighbourhood": {"hops": 1, "fanout_cap": 30, "max_customers": 150}}
    for key, value in over.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and key in base else value
    return ServingConfig.model_validate(base)


class LiveServer:
    """The app under the real uvicorn (with the project's protocol and timeouts) in a thread of the test."""

    def __init__(self, app, serving: ServingConfig) -> None:
        import uvicorn

        from identigraph.serving.server import uvicorn_options

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, **uvicorn_options(serving)))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        import httpx

        self.thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("the live server did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@pytest.fixture
def live_server(settings, serving_model, world_graph, tmp_path):
    """``live(**config overrides)``: the app served by uvicorn on a free port, stopped after the test."""
    started = []

    def live(model=True, app_settings=None, extra_keys=None, **over) -> LiveServer:
        cfg = serving_config(tmp_path, extra_keys, **over)
        server = LiveServer(create_app(app_settings or settings, cfg, serving_model[0] if model else None), cfg)
        started.append(server.__enter__())
        return server

    yield live
    for server in started:
        server.__exit__(None, None, None)


@pytest.fixture
def make_client(settings, serving_model, world_graph, tmp_path):
    """A TestClient on a fresh app; ``model=False`` serves without one, ``settings=`` points elsewhere."""
    opened = []

    def make(model=True, app_settings=None, extra_keys=None, **over) -> TestClient:
        app = create_app(app_settings or settings, serving_config(tmp_path, extra_keys, **over),
                         serving_model[0] if model else None)
        client = TestClient(app)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def _truth(world, kind: str) -> list[str]:
    t = world.truth
    if kind == "household":
        return t[(t["fraud_type"] == "none") & t["group_id"].notna()]["customer_id"].tolist()
    return t[t["fraud_type"] == kind]["customer_id"].tolist()


def _ltv(world, cid: str) -> float:
    return float(world.customers.set_index("customer_id").loc[cid, "lifetime_value"])


def _drain_review(settings) -> list[dict]:
    sqs = sqs_client(settings)
    url = sqs.get_queue_url(QueueName=settings.queues.review)["QueueUrl"]
    out = []
    while True:
        msgs = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not msgs:
            return out
        out += [json.loads(m["Body"]) for m in msgs]
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                        for i, m in enumerate(msgs)])


def _audit(client: TestClient) -> list[dict]:
    path = client.app.state.service.audit.path
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---- decisions per policy case -------------------------------------------------------------------------------
def test_policy_cases_low_value_blocks_high_value_reviews_below_threshold_allows(make_client, serving_world,
                                                                                  settings):
    customers = serving_world.customers.sort_values("lifetime_value")
    low = customers[customers["lifetime_value"] < 50]["customer_id"].iloc[0]
    high = customers["customer_id"].iloc[-1]
    _drain_review(settings)

    everything_fraud = make_client(policy={"threshold": 0.0, "hard_rules": []})
    r = everything_fraud.post("/v1/score", json={"customer_id": low}, headers=REVIEWER).json()
    assert (r["decision"], r["degraded"], r["known_customer"]) == ("block", False, True)
    assert 0.0 <= r["score"] <= 1.0 and r["model_version"]
    assert any("blocked automatically" in x for x in r["reasons"])
    assert r["explanation"]["features"] and r["explanation"]["connections"] is not None  # flagged: attributed
    assert all(-1.0 <= f["impact_norm"] <= 1.0 for f in r["explanation"]["features"])

    r = everything_fraud.post("/v1/score", json={"customer_id": high}, headers=SCORER).json()
    assert r["decision"] == "review" and _ltv(serving_world, high) >= 200
    assert r["explanation"] is None and r["neighbourhood"] is None  # a scoring-only key: decision and reasons
    assert any("manual review" in x for x in r["reasons"])
    everything_fraud.app.state.service.review.drain()
    cases = [c for c in _drain_review(settings) if c["request_id"] == r["request_id"]]
    assert len(cases) == 1 and cases[0]["explanation"]["evidence"] and cases[0]["api_key_id"] == "scorer"
    assert cases[0]["model_attribution"] and cases[0]["explanation"]["features"]  # the reviewer gets them

    nothing_fraud = make_client(policy={"threshold": 1.0, "hard_rules": []})
    r = nothing_fraud.post("/v1/score", json={"customer_id": low}, headers=REVIEWER).json()
    assert r["decision"] == "allow" and r["explanation"].get("features") is None  # no attribution for allows

    audit = _audit(everything_fraud)  # both apps append to the same file here
    assert [a["decision"] for a in audit[-3:]] == ["block", "review", "allow"]
    assert {"api_key_id", "request_id", "customer_id", "score", "model_version", "decision"} <= set(audit[-1])


def test_hard_rule_reviews_what_the_model_allows(make_client, serving_world):
    client = make_client(policy={"threshold": 1.0})
    fired = []
    for cid in _truth(serving_world, "ring"):
        r = client.post("/v1/score", json={"customer_id": cid}, headers=REVIEWER).json()
        if r["rules"]:
            fired.append(r)
        else:
            assert r["decision"] == "allow", r
    assert fired, "a ring shares devices with blocked members"
    for r in fired:
        assert r["decision"] == "review" and r["rules"] == ["device_shared_with_blocked"]
        assert any(e["identifier_label"] == "device" and e["blocked"] >= 2 for e in r["explanation"]["evidence"])


def test_graph_down_and_model_missing_review_degraded_never_block(make_client, settings, serving_world):
    closed = settings.model_copy(update={"services": settings.services.model_copy(update={
        "gremlin": settings.services.gremlin.model_copy(update={"port": free_port()})})})
    low = serving_world.customers.sort_values("lifetime_value")["customer_id"].iloc[0]
    down = make_client(app_settings=closed, policy={"threshold": 0.0}, graph={"timeout_s": 2.0})
    t0 = time.perf_counter()
    r = down.post("/v1/score", json={"customer_id": low}, headers=SCORER)
    assert time.perf_counter() - t0 < 5
    body = r.json()
    assert r.status_code == 200 and (body["decision"], body["degraded"], body["score"]) == ("review", True, None)
    assert any("graph" in x for x in body["reasons"])
    assert down.get("/readyz").status_code == 503 and down.get("/healthz").status_code == 200

    # a slow graph does not grow a queue: beyond max_in_flight the answer is an immediate 503
    shedding = make_client(app_settings=closed, max_in_flight=1, graph={"timeout_s": 1.0})
    with ThreadPoolExecutor(3) as pool:
        codes = sorted(pool.map(lambda _: shedding.post("/v1/score", json={"customer_id": low},
                                                         headers=SCORER).status_code, range(3)))
    assert codes[0] == 200 and codes[-1] == 503
    assert down.get(f"/v1/customers/{low}/identity", headers=READER).status_code == 503

    no_model = make_client(model=False, policy={"threshold": 0.0})
    body = no_model.post("/v1/score", json={"customer_id": low}, headers=SCORER).json()
    assert (body["decision"], body["degraded"], body["model_version"]) == ("review", True, None)
    assert no_model.get("/readyz").status_code == 503 and no_model.get("/ping").status_code == 503


def _identifiers_of(world, cid: str) -> dict[str, str]:
    ev = world.identity_events[world.identity_events["customer_id"] == cid]
    return {c: ev[c].dropna().iloc[0] for c in IDENTIFIER_COLUMNS if ev[c].notna().any()}


def test_new_account_is_scored_from_its_identifiers_before_it_is_written(make_client, serving_world, world_graph):
    ring = _truth(serving_world, "ring")[0]
    given = _identifiers_of(serving_world, ring)
    assert {"email", "device_id"} <= set(given)
    client = make_client(policy={"threshold": 1.0})
    r = client.post("/v1/score", json={"customer_id": "signup-0001", "action": "signup", "identifiers": given},
                    headers=REVIEWER).json()
    assert r["known_customer"] is False and r["degraded"] is False and r["score"] is not None
    evidence = {e["identifier_label"]: e for e in r["explanation"]["evidence"]}
    labels = {"device_id": "device", "card_fingerprint": "card"}
    assert set(evidence) == {labels.get(c, c) for c in given}
    # the email is found in the graph: hashed exactly as the ETL hashed it, then linked to the ring member
    assert evidence["email"]["customers_total"] >= 2 and evidence["email"]["new_in_request"]
    assert evidence["device"]["customers_total"] >= 2 and r["neighbourhood"]["customers"] > 1
    assert queries.customer_identity(world_graph, "signup-0001") == []  # scored, not written

    fresh = client.post("/v1/score", headers=REVIEWER, json={
        "customer_id": "signup-0002", "action": "signup",
        "identifiers": {"email": "Someone.New@Example.org", "phone": "+971 50 000 0001", "ip": "203.0.113.9"}}).json()
    assert fresh["known_customer"] is False and fresh["neighbourhood"]["customers"] == 1
    assert all(e["customers_total"] == 1 for e in fresh["explanation"]["evidence"])

    unknown = client.post("/v1/score", json={"customer_id": "nobody-at-all"}, headers=SCORER).json()
    assert (unknown["decision"], unknown["degraded"]) == ("review", True)

    bad = client.post("/v1/score", headers=SCORER, json={
        "customer_id": "signup-0003", "identifiers": {"email": "not-an-email", "ip": "999.1.1.1"}})
    assert bad.status_code == 422 and "not-an-email" not in bad.text


def test_api_scores_equal_batch_scores_on_the_same_graph(make_client, serving_world, serving_model, world_graph):
    """One traversal + request encoder + seed-only forward == the whole snapshot through the batch encoder.

    The graph the API reads is the snapshot the model was trained on; every customer is scored both ways
    with only its own labels hidden. Hubs (a carrier NAT IP) included: both see them as their statistics.
    """
    from identigraph.model.artifacts import LoadedModel
    from identigraph.model.frame import read_snapshot

    model_dir = serving_model[0]
    loaded = LoadedModel.load(model_dir)
    full = loaded.tensors(read_snapshot(model_dir.parent / "snapshot"))
    client = make_client(explain={"model_attribution": "never"})
    customers = serving_world.customers["customer_id"].sample(n=60, random_state=3).tolist()
    customers += _truth(serving_world, "ring")[:5] + _truth(serving_world, "household")[:5]
    hubs = 0
    for cid in customers:
        if f"customer:{cid}" not in set(full.node_ids):
            continue
        body = client.post("/v1/score", json={"customer_id": cid}, headers=REVIEWER).json()
        batch, _ = loaded.score_seed(full, f"customer:{cid}")
        assert body["score"] == pytest.approx(batch, abs=2e-5), cid
        hubs += body["neighbourhood"]["capped_identifiers"] > 0
    assert hubs > 0  # the sample reached hub identifiers, so the hub path was compared too


def test_identity_and_connections(make_client, serving_world, world_graph):
    client = make_client()
    ring = _truth(serving_world, "ring")[0]
    r = client.get(f"/v1/customers/{ring}/identity", headers=READER)
    assert r.status_code == 200
    body = r.json()
    expected = queries.customer_identity(world_graph, ring)
    assert [i["identifier_id"] for i in body["identifiers"]] == [e["identifier_id"] for e in expected]
    assert all(i["first_seen"] <= i["last_seen"] and i["event_count"] >= 1 for i in body["identifiers"])
    assert body["status"]["created_at"]

    one = client.get(f"/v1/customers/{ring}/connections", params={"depth": 1}, headers=READER).json()
    two = client.get(f"/v1/customers/{ring}/connections", params={"depth": 2}, headers=READER).json()
    assert "customers" in two, two
    own = {i["identifier_id"] for i in one["identifiers"]}
    assert one["customers"] and all(c["depth"] == 1 and set(c["via"]) <= own for c in one["customers"])
    assert {c["customer_id"] for c in one["customers"]} <= {c["customer_id"] for c in two["customers"]}
    assert any(c["status"]["blocked"] for c in one["customers"])
    assert client.get("/v1/customers/nobody/identity", headers=READER).status_code == 404
    assert client.get(f"/v1/customers/{ring}/connections", params={"depth": 3}, headers=READER).status_code == 422


def test_auth_scopes_rate_limit_and_request_ids(make_client, serving_world):
    client = make_client(policy={"threshold": 1.0})
    cid = serving_world.customers["customer_id"].iloc[0]
    body = {"customer_id": cid}
    assert client.post("/v1/score", json=body).status_code == 401
    assert client.post("/v1/score", json=body, headers={"X-API-Key": "guess"}).status_code == 401
    assert client.post("/v1/score", json=body, headers=READER).status_code == 403
    assert client.get(f"/v1/customers/{cid}/identity", headers=SCORER).status_code == 403
    assert client.post("/v1/admin/model:reload", json={"model_dir": "/x"}, headers=SCORER).status_code == 403
    assert client.post("/v1/score", json=body, headers={"Authorization": "Bearer scorer-secret"}).status_code == 200

    slow = {"X-API-Key": "slow-secret"}
    codes = [client.post("/v1/score", json=body, headers=slow) for _ in range(3)]
    assert [c.status_code for c in codes] == [200, 200, 429] and int(codes[2].headers["Retry-After"]) >= 1
    assert client.post("/v1/score", json=body, headers=SCORER).status_code == 200  # limits are per key

    r = client.post("/v1/score", json=body, headers={**SCORER, "X-Request-ID": "caller-req-42"})
    assert r.headers["X-Request-ID"] == "caller-req-42" and r.json()["request_id"] == "caller-req-42"
    for bad in ("bad id!", "x" * 129):  # refused, not silently replaced: the caller would lose its correlation
        refused = client.post("/v1/score", json=body, headers={**SCORER, "X-Request-ID": bad})
        assert refused.status_code == 400 and len(refused.headers["X-Request-ID"]) == 32
    assert client.post("/v1/score", json=body).headers["X-Request-ID"]  # errors carry one too


def test_batch_invocations_csv_round_trip_and_metrics(make_client, serving_world):
    client = make_client(max_batch=5)
    ids = serving_world.customers["customer_id"].iloc[:4].tolist()
    single = {c: client.post("/v1/score", json={"customer_id": c}, headers=SCORER).json()["score"] for c in ids}

    batch = client.post("/v1/score:batch", json={"requests": [{"customer_id": c} for c in ids]}, headers=SCORER)
    assert [r["customer_id"] for r in batch.json()["results"]] == ids
    too_many = client.post("/v1/score:batch", json={"requests": [{"customer_id": "c"}] * 6}, headers=SCORER)
    assert too_many.status_code == 422
    lines = client.post("/invocations", content="\n".join(ids * 2), headers={**SCORER, "Content-Type": "text/csv"})
    assert lines.status_code == 413

    csv = client.post("/invocations", content="\n".join(ids) + "\n", headers={**SCORER, "Content-Type": "text/csv"})
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    lines = csv.text.splitlines()
    assert len(lines) == len(ids)
    assert [float(x) for x in lines] == pytest.approx([single[c] for c in ids], abs=1e-5)
    js = client.post("/invocations", json={"instances": [{"customer_id": c} for c in ids]}, headers=SCORER).json()
    assert [p["score"] for p in js["predictions"]] == pytest.approx([single[c] for c in ids], abs=1e-5)
    assert client.post("/invocations", content="x", headers={**SCORER, "Content-Type": "text/plain"}).status_code == 415
    assert client.post("/invocations", content="a b c\n", headers={**SCORER, "Content-Type": "text/csv"}).status_code == 422
    assert client.post("/invocations", content="\n".join(ids), headers={"Content-Type": "text/csv"}).status_code == 401
    assert client.get("/ping").status_code == 200

    sagemaker = make_client(invocations_open=True)
    assert sagemaker.post("/invocations", content=ids[0], headers={"Content-Type": "text/csv"}).status_code == 200

    text = client.get("/metrics").text
    for stage in ("graph", "features", "model", "policy"):
        assert f'identigraph_serving_stage_seconds_count{{stage="{stage}"}}' in text
    assert 'identigraph_serving_decisions_total{decision="allow",degraded="false"}' in text or \
        'decision="review"' in text
    assert 'route="/v1/score"' in text and "identigraph_serving_model_info" in text


def test_reload_swaps_models_without_dropping_requests(make_client, serving_model, serving_world, tmp_path):
    client = make_client(policy={"threshold": 1.0})
    first = client.post("/v1/score", json={"customer_id": "c0000001"}, headers=SCORER).json()["model_version"]
    second_dir = tmp_path / "model-v2"
    shutil.copytree(serving_model[0], second_dir)
    metrics = json.loads((second_dir / "metrics.json").read_text())
    (second_dir / "metrics.json").write_text(json.dumps({**metrics, "version": "second-model"}))

    ids = serving_world.customers["customer_id"].iloc[:40].tolist()
    seen, stop = [], threading.Event()

    def hammer() -> None:
        i = 0
        while not stop.is_set():
            r = client.post("/v1/score", json={"customer_id": ids[i % len(ids)]}, headers=SCORER)
            seen.append((r.status_code, r.json().get("model_version")))
            i += 1

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(hammer) for _ in range(3)]
        time.sleep(0.5)
        r = client.post("/v1/admin/model:reload", json={"model_dir": str(second_dir)}, headers=ADMIN)
        assert r.status_code == 200 and r.json() == {"previous_version": first, "version": "second-model"}
        time.sleep(0.5)
        stop.set()
        for f in futures:
            f.result()
    assert seen and all(code == 200 for code, _ in seen)
    versions = [v for _, v in seen]
    assert set(versions) == {first, "second-model"} and versions[-1] == "second-model"
    bad = client.post("/v1/admin/model:reload", json={"model_dir": str(tmp_path / "missing")}, headers=ADMIN)
    assert bad.status_code == 404 and "still serving second-model" in bad.json()["detail"]
    relative = client.post("/v1/admin/model:reload", json={"model_dir": "model-v2"}, headers=ADMIN)  # under the root
    assert relative.status_code == 200 and relative.json()["version"] == "second-model"
    assert client.post("/v1/score", json={"customer_id": ids[0]}, headers=SCORER).json()["model_version"] == \
        "second-model"


def test_no_raw_email_or_phone_in_responses_audit_queue_or_logs(make_client, serving_world, settings, caplog):
    raw = set(serving_world.identity_events["email"].dropna()) | set(serving_world.identity_events["phone"].dropna())
    raw |= {"Fresh.Person@Example.com", "+971501234567"}
    caplog.set_level(logging.INFO, logger="identigraph")
    caplog.handler.setFormatter(JsonFormatter())  # the logs as services write them: the fields too
    client = make_client(policy={"threshold": 0.0})  # everything flagged: reviews, queue, attributions
    texts = []
    for kind in ("ring", "ato", "household"):
        cid = _truth(serving_world, kind)[0]
        given = _identifiers_of(serving_world, cid)
        texts.append(client.post("/v1/score", json={"customer_id": cid, "identifiers": given},
                                 headers=SCORER).text)
        texts.append(client.post("/v1/score", json={"customer_id": f"new-{kind}", "identifiers": given},
                                 headers=SCORER).text)
        texts.append(client.get(f"/v1/customers/{cid}/identity", headers=ADMIN).text)
        texts.append(client.get(f"/v1/customers/{cid}/connections?depth=2", headers=ADMIN).text)
    texts.append(client.post("/v1/score", headers=SCORER, json={
        "customer_id": "new-x", "identifiers": {"email": "Fresh.Person@Example.com", "phone": "+971501234567"}}).text)
    texts.append(client.post("/v1/score", headers=SCORER, json={
        "customer_id": "new-y", "identifiers": {"email": "Fresh.Person@Example.com", "phone": "12"}}).text)
    texts.append(client.post("/v1/score", headers=SCORER, json={
        "customer_id": "new-z", "identifiers": {"ip": "+971501234567"}}).text)
    texts.append(client.post("/v1/score", headers=SCORER, json={
        "customer_id": "Fresh.Person@Example.com"}).text)
    client.app.state.service.review.drain()
    texts.append(json.dumps(_drain_review(settings)))
    texts.append(client.app.state.service.audit.path.read_text())
    texts.append(caplog.text)
    everything = "\n".join(texts)
    assert '"decision":"review"' in everything.replace(" ", "") and "new-ring" in everything
    leaked = sorted(x for x in raw if x in everything or x.lower() in everything)
    assert leaked == []


def test_every_worker_follows_a_promotion_by_watching_the_model_directory(settings, serving_model, tmp_path):
    served = tmp_path / "production"
    shutil.copytree(serving_model[0], served)
    app = create_app(settings, serving_config(tmp_path, model_watch_s=0.1, review_queue=False), served)
    try:
        before = app.state.service.models.current.version
        metrics = json.loads((served / "metrics.json").read_text())
        (served / "metrics.json").write_text(json.dumps({**metrics, "version": "promoted"}))
        deadline = time.monotonic() + 10
        while app.state.service.models.current.version == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert app.state.service.models.current.version == "promoted"
    finally:
        app.state.service.close()


def test_identigraph_serve_runs_the_api_as_its_own_process(settings, serving_model, world_graph, tmp_path):
    import signal
    import subprocess
    import sys

    import httpx
    import yaml

    port = free_port()
    (tmp_path / "identigraph.yaml").write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    cfg = serving_config(tmp_path).model_dump(mode="json")
    (tmp_path / "serving.yaml").write_text(yaml.safe_dump(cfg))
    proc = subprocess.Popen([str(Path(sys.executable).parent / "identigraph"), "--config", str(tmp_path / "identigraph.yaml"),
                             "serve", "--model", str(serving_model[0]), "--serving-config",
                             str(tmp_path / "serving.yaml"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        from identigraph.serving.loadgen import wait_until_ready

        wait_until_ready(f"http://127.0.0.1:{port}", timeout_s=90)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/score", json={"customer_id": "c0000001"}, headers=SCORER)
        assert r.status_code == 200 and r.json()["model_version"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode in (0, -signal.SIGTERM), out[-2000:]  # uvicorn re-raises the signal it drained on
    assert out.count('"event": "model_loaded"') == 1  # JSON lines, not also through the CLI's rich handler
