"""The served model as the API uses it: explanations that leave the shared module untouched under
concurrency, reloads only from the models root (logged, answered without exception names), and a model
that fails on valid input answered as the model's fault. Real app, graph and model."""

from __future__ import annotations

import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest

from identigraph.logs import JsonFormatter
from test_serving_api import (  # noqa: F401 — fixtures shared with the API tests
    ADMIN,
    REVIEWER,
    SCORER,
    _truth,
    make_client,
    serving_model,
    serving_world,
    world_counts,
    world_graph,
)

pytestmark = pytest.mark.services
_EXCEPTION_WORDS = ("Error", "Exception", "Errno", "Traceback")


def test_concurrent_explanations_equal_sequential_ones(make_client, serving_world):
    client = make_client(policy={"threshold": 0.0}, explain={"model_attribution": "always"})
    customers = _truth(serving_world, "ring")[:6] + serving_world.customers["customer_id"].iloc[:10].tolist()

    def explain(cid: str) -> dict:
        r = client.post("/v1/score", json={"customer_id": cid, "explain": True}, headers=REVIEWER)
        assert r.status_code == 200
        body = r.json()
        return {"score": body["score"], "features": body["explanation"]["features"],
                "connections": body["explanation"]["connections"]}

    sequential = [explain(c) for c in customers]
    assert all(s["features"] for s in sequential)
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            assert list(pool.map(explain, customers)) == sequential
    served = client.app.state.service.models.current.loaded.model
    assert all(p.grad is None for p in served.parameters())  # nothing accumulated in the shared module


def _copy_model(src, dst, **metrics_update) -> None:
    shutil.copytree(src, dst)
    metrics = json.loads((dst / "metrics.json").read_text())
    (dst / "metrics.json").write_text(json.dumps({**metrics, **metrics_update}))


def test_reloads_only_from_the_models_root_logged_and_without_exception_names(make_client, serving_model, tmp_path,
                                                                             caplog):
    caplog.set_level(logging.INFO, logger="identigraph.serving")
    client = make_client()  # models_root: this test's tmp_path
    serving = client.app.state.service.models.current.version
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    _copy_model(serving_model[0], outside, version="from-outside")
    (tmp_path / "link-out").symlink_to(outside, target_is_directory=True)
    (tmp_path / "not-a-model").mkdir()
    _copy_model(serving_model[0], tmp_path / "broken", version="broken")
    metrics = json.loads((tmp_path / "broken" / "metrics.json").read_text())
    del metrics["threshold"]
    (tmp_path / "broken" / "metrics.json").write_text(json.dumps(metrics))
    try:
        cases = {"/etc": 403, str(outside): 403, str(tmp_path / "link-out"): 403, "link-out": 403,
                 "../" + outside.name: 403, str(tmp_path / "missing"): 404, "not-a-model": 404, "broken": 409}
        for given, status in cases.items():
            r = client.post("/v1/admin/model:reload", json={"model_dir": given}, headers=ADMIN)
            assert r.status_code == status, (given, r.text)
            assert f"still serving {serving}" in r.json()["detail"]
            assert not any(w in r.text for w in _EXCEPTION_WORDS), r.text
        assert client.app.state.service.models.current.version == serving
        logged = [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.getMessage() == "model_reload"]
        assert [(e["path"], e["status"], e["by"]) for e in logged] == [(g, s, "admin") for g, s in cases.items()]
        assert any(e.get("error") == "KeyError" for e in logged)  # the reason is in the log, not the answer
    finally:
        shutil.rmtree(outside, ignore_errors=True)


def test_a_model_failing_on_valid_input_is_a_5xx_naming_the_model(make_client, serving_model, serving_world,
                                                                  tmp_path):
    client = make_client()
    bad = tmp_path / "incompatible"
    _copy_model(serving_model[0], bad, version="incompatible-model")
    encoder = json.loads((bad / "encoder.json").read_text())
    for col in encoder["node_cols"]["customer"]:
        if col["kind"] == "cat":  # loads fine, fails on the first request: the model's schema, not the caller's
            col["kind"] = "num"
    (bad / "encoder.json").write_text(json.dumps(encoder))
    assert client.post("/v1/admin/model:reload", json={"model_dir": "incompatible"}, headers=ADMIN).status_code == 200
    cid = serving_world.customers["customer_id"].iloc[0]
    r = client.post("/v1/score", json={"customer_id": cid}, headers=SCORER)
    assert r.status_code == 500 and "incompatible-model" in r.json()["detail"]
    assert not any(w in r.text for w in _EXCEPTION_WORDS)
