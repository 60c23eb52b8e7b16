"""Behaviour tests, kept in CI like regression tests: a model trained on a small synthetic world must flag
a fresh fraud ring, leave a legitimate household alone, and give finite scores on awkward graphs."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from identigraph.model.artifacts import LoadedModel
from identigraph.model.config import load_model_config
from identigraph.model.frame import GraphFrame, read_snapshot
from identigraph.model.pipeline import run_predict, run_train
from identigraph.synth import SynthParams, generate_world, write_world

KEY = b"behaviour-test-key-0123456789abcd"


@pytest.fixture(scope="module")
def trained(spark, settings, tmp_path_factory):
    from identigraph.etl.job import run_etl
    from identigraph.labeling.job import run_labeling

    root = tmp_path_factory.mktemp("behaviour")
    write_world(generate_world(SynthParams(customers=4000, seed=5)), root / "world")
    run_etl(spark, settings, root / "world", root / "snapshot", KEY)
    run_labeling(spark, root / "snapshot", root / "labels")
    cfg = load_model_config(overrides={"training.epochs": 80})
    run_train(root / "snapshot", root / "model", cfg, labels=root / "labels", log=lambda _: None)
    return root, LoadedModel.load(root / "model"), read_snapshot(root / "snapshot")


def _with(frame: GraphFrame, customers: list[dict], links: list[dict]) -> GraphFrame:
    """The frame plus new customers and links (new identifiers are created as needed)."""
    vertices = {k: v.copy() for k, v in frame.vertices.items()}
    edges = {k: v.copy() for k, v in frame.edges.items()}
    cust = pd.DataFrame(customers).set_index("~id").reindex(columns=vertices["customer"].columns)
    for col in cust:
        cust[col] = cust[col].astype(vertices["customer"][col].dtype)
    vertices["customer"] = pd.concat([vertices["customer"], cust])
    edge_of = {"device": "has_device", "card": "has_card", "ip": "used_ip", "email": "has_email", "phone": "has_phone"}
    table = pd.DataFrame(links)
    for label, part in table.groupby(table["dst"].str.split(":").str[0]):
        new_ids = pd.Index(part["dst"].unique()).difference(vertices[label].index)
        vertices[label] = pd.concat([vertices[label], pd.DataFrame(index=new_ids)])
        rel = ("customer", edge_of[label], label)
        rows = part.reindex(columns=edges[rel].columns)
        for col in rows:
            rows[col] = rows[col].astype(edges[rel][col].dtype)
        edges[rel] = pd.concat([edges[rel], rows], ignore_index=True)
    return GraphFrame(as_of=frame.as_of, vertices=vertices, edges=edges, types=frame.types, degree=frame.degree)


def _customer(cid: str, frame: GraphFrame, days_old: float, ltv: float) -> dict:
    return {"~id": f"customer:{cid}", "created_at": pd.Timestamp(frame.as_of) - timedelta(days=days_old),
            "country": "AE", "lifetime_value": ltv, "n_blocks": 0.0, "blocked": 0.0, "n_block_reviews": 0.0}


def _link(cid: str, dst: str, frame: GraphFrame, first_days: float, last_days: float, n: int) -> dict:
    at = pd.Timestamp(frame.as_of)
    return {"src": f"customer:{cid}", "dst": dst, "first_seen": at - timedelta(days=first_days),
            "last_seen": at - timedelta(days=last_days), "event_count": float(n), "n_login": float(n),
            "n_signup": 1.0, "n_add_payment_method": 0.0, "n_profile_update": 0.0, "n_booking": 0.0}


@pytest.fixture(scope="module")
def fresh_world(spark, settings, trained):
    """A second world from another seed: rings the model has never seen, each partly caught as rings are."""
    from identigraph.etl.job import run_etl

    root = trained[0] / "fresh"
    write_world(generate_world(SynthParams(customers=2000, seed=99)), root / "world")
    run_etl(spark, settings, root / "world", root / "snapshot", KEY)
    return read_snapshot(root / "snapshot"), pd.read_csv(root / "world" / "truth.csv", dtype={"customer_id": str})


def test_a_fresh_fraud_ring_scores_above_the_threshold(trained, fresh_world):
    """The unblocked members of every ring in an unseen world: flagged although nobody blocked *them*."""
    _, model, _ = trained
    frame, truth = fresh_world
    blocked = frame.vertices["customer"]["blocked"] == 1.0
    rings = truth[truth["fraud_type"] == "ring"]
    members = ["customer:" + c for c in rings["customer_id"] if "customer:" + c in blocked.index]
    unblocked = [m for m in members if not blocked[m]]
    assert len(unblocked) >= 5
    scores = model.score(frame, unblocked)
    assert np.isfinite(scores).all()
    assert np.median(scores) >= model.threshold, (scores, model.threshold)  # most members are flagged


def test_a_legitimate_household_sharing_a_home_ip_and_a_tablet_stays_below_the_threshold(trained):
    _, model, frame = trained
    home = [f"home_{i}" for i in range(3)]
    customers = [_customer(c, frame, days_old=600 + 40 * i, ltv=350.0) for i, c in enumerate(home)]
    links = []
    for i, c in enumerate(home):
        links += [_link(c, "ip:192.0.2.44", frame, 580, 1, 120), _link(c, "device:family_tablet", frame, 400, 3, 25),
                  _link(c, f"device:own_phone_{i}", frame, 590, 1, 200), _link(c, f"card:own_card_{i}", frame, 585, 2, 60),
                  _link(c, f"email:own_{i}", frame, 600, 2, 30), _link(c, f"phone:own_{i}", frame, 600, 2, 30)]
    scores = model.score(_with(frame, customers, links), [f"customer:{c}" for c in home])
    assert (scores < model.threshold).all(), (scores, model.threshold)


def test_isolated_customers_hubs_with_10000_customers_and_empty_values_give_finite_scores(trained):
    _, model, frame = trained
    hub_members = [f"hub_{i}" for i in range(10_001)]
    customers = [_customer(c, frame, days_old=100 + i % 300, ltv=50.0) for i, c in enumerate(hub_members)]
    customers.append({"~id": "customer:lonely"})  # no properties at all, no links
    customers.append({"~id": "customer:blank", "country": None, "created_at": pd.NaT})
    links = [_link(c, "ip:198.51.100.1", frame, 90, 1, 5) for c in hub_members]
    links.append({"src": "customer:blank", "dst": "device:blank_device"})  # an edge without properties
    g = _with(frame, customers, links)
    g.degree = {**g.degree, "ip:198.51.100.1": 40_000}  # the API passes true degrees of capped hubs
    scores = model.score(g, ["customer:lonely", "customer:blank", "customer:hub_0", "customer:hub_9999"])
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()


def test_predict_writes_one_score_per_customer(trained, tmp_path):
    root, _, frame = trained
    n = run_predict(root / "snapshot", root / "model", tmp_path / "preds.csv", load_model_config())
    preds = pd.read_csv(tmp_path / "preds.csv", dtype={"customer_id": str})
    assert list(preds.columns) == ["id", "customer_id", "score"] and n == len(frame.vertices["customer"])
    assert (preds["id"] == "customer:" + preds["customer_id"]).all() and preds["score"].between(0, 1).all()
