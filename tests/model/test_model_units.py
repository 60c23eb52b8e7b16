"""Model building blocks on hand-made graphs: frames, encoders, the conv, masking, training, artifacts."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from identigraph.errors import SchemaError
from identigraph.etl import snapshot as snap
from identigraph.model.artifacts import LoadedModel, save_model
from identigraph.model.config import load_model_config
from identigraph.model.dataset import build_targets
from identigraph.model.features import FeatureEncoder, mask_labels
from identigraph.model.frame import read_snapshot
from identigraph.model.metrics import by_group, recall_at_precision, summary, threshold_for_precision
from identigraph.model.nets import FraudGNN, RelationalConv, _plan
from identigraph.model.stacking import fit_blend
from identigraph.model.train import predict, train
from model_graphs import customer, link, live_edge_terms, make_frame

LABEL_COLS = {"customer": ["n_blocks", "last_block_at", "last_block_reason", "last_block_source",
                           "last_block_rule", "blocked", "last_unblock_at", "n_block_reviews", "last_care_at"]}


def ring_and_households(n_rings: int = 6, n_homes: int = 30, blocked_per_ring: int = 2):
    """Rings: new accounts sharing an emulator and cards, some blocked; homes: old accounts sharing an IP."""
    customers, links = [], []
    for r in range(n_rings):
        for m in range(6):
            cid = f"r{r}m{m}"
            customers.append(customer(cid, days_old=20 + m, blocked=m < blocked_per_ring, ltv=5.0))
            links += [link(cid, f"device:emu{r}", first_days=20, count=3), link(cid, f"card:stolen{r}", first_days=19, count=2),
                      link(cid, f"ip:10.0.{r}.1", first_days=20, count=3)]
    for h in range(n_homes):
        for m in range(3):
            cid = f"h{h}m{m}"
            customers.append(customer(cid, days_old=500 + 10 * m, ltv=300.0))
            links += [link(cid, f"ip:192.168.{h}.1", first_days=480, count=80), link(cid, f"device:phone{h}_{m}", first_days=480, count=90)]
            if m == 0:
                links.append(link(cid, f"device:tablet{h}", first_days=300, count=20))
            else:
                links.append(link(cid, f"device:tablet{h}", first_days=250, count=15))
    return customers, links


@pytest.fixture(scope="module")
def toy():
    customers, links = ring_and_households()
    frame = make_frame(customers, links)
    enc = FeatureEncoder(LABEL_COLS).fit(frame)
    return frame, enc, enc.transform(frame)


def _tiny_snapshot(root):
    (root / "vertices" / "customer").mkdir(parents=True)
    (root / "vertices" / "device").mkdir(parents=True)
    (root / "edges" / "has_device").mkdir(parents=True)
    w = snap.CsvPartWriter(root / "vertices" / "customer" / "part-0.csv", snap.vertex_header("customer"))
    w.write(["customer:a", "customer", "2025-01-01T00:00:00.000Z", "AE", 12.5, 0, "", "", "", "", "false", "", 0, ""])
    w.write(["customer:b", "customer", "", "", "", 1, "2026-01-01T00:00:00.000Z", "fraud", "rule", "x", "true", "", 0, ""])
    w.close()
    w = snap.CsvPartWriter(root / "vertices" / "device" / "part-0.csv", snap.vertex_header("device"))
    w.write(["device:d", "device"])
    w.close()
    w = snap.CsvPartWriter(root / "edges" / "has_device" / "part-0.csv", snap.edge_header())
    w.write(["e:1", "customer:a", "device:d", "has_device", "2025-01-02T00:00:00.000Z", "2025-02-01T00:00:00.000Z",
             3, 1, 2, 0, 0, 0])
    w.close()
    (root / snap.SUMMARY).write_text(json.dumps({"as_of": "2026-06-30T00:00:00.000Z"}))
    return root


def test_snapshot_round_trip_reads_types_and_rejects_dangling_edges(tmp_path):
    root = _tiny_snapshot(tmp_path / "snap")
    frame = read_snapshot(root)
    cust = frame.vertices["customer"]
    assert cust.loc["customer:a", "lifetime_value"] == 12.5
    assert cust.loc["customer:b", "blocked"] == 1.0 and pd.isna(cust.loc["customer:b", "created_at"])
    e = frame.edges[("customer", "has_device", "device")]
    assert e.loc[0, "event_count"] == 3.0 and str(e.loc[0, "first_seen"].tz) == "UTC"
    assert frame.as_of.year == 2026
    w = snap.CsvPartWriter(root / "edges" / "has_device" / "part-1.csv", snap.edge_header())
    w.write(["e:2", "customer:zzz", "device:d", "has_device", "", "", 1, 1, 0, 0, 0, 0])
    w.close()
    with pytest.raises(SchemaError, match="unknown vertices"):
        read_snapshot(root)


def test_encoder_round_trip_unseen_categories_and_empty_values_are_finite(toy):
    frame, enc, t = toy
    again = FeatureEncoder.from_dict(json.loads(json.dumps(enc.to_dict()))).transform(frame)
    assert torch.equal(again.x, t.x) and torch.equal(again.edge_attr, t.edge_attr)
    assert len(enc.feature_names()) == t.x.shape[1]
    odd = make_frame([customer("new", country="ZZ", lifetime_value=None, created_at=None)],
                     [link("new", "device:x", first_days=None, last_days=None, count=None)])
    t2 = enc.transform(odd)
    assert torch.isfinite(t2.x).all() and torch.isfinite(t2.edge_attr).all()
    names = enc.feature_names()
    row = t2.x[t2.index_of(["customer:new"])[0]]
    other = names.index("customer.country=other")
    assert row[other] != t.x[:, other].min()  # "ZZ" was never seen: encoded as other, not dropped


def test_label_columns_are_masked_on_self_only(toy):
    _frame, enc, t = toy
    i = int(t.index_of(["customer:r0m0"])[0])
    j = int(t.index_of(["customer:r0m1"])[0])
    x = mask_labels(t, [i])
    assert (x[i, t.label_cols] == 0).all() and x[i, t.mask_col] == 1
    assert torch.equal(x[j], t.x[j])
    names = enc.feature_names()
    assert {names[c] for c in t.label_cols.tolist()} >= {"customer.blocked", "customer.n_blocks"}


def test_conv_shapes_permutation_invariance_and_edge_features_matter():
    torch.manual_seed(0)
    n, e, d, r, de = 12, 40, 8, 3, 4
    x = torch.randn(n, d)
    ei = torch.randint(0, n, (2, e))
    et = torch.randint(0, r, (e,))
    ea = torch.randn(e, de)
    conv = live_edge_terms(RelationalConv(d, r, de))

    def run(x, ei, et, ea):
        return conv([x], [0] * r, x, _plan(ei, et, ea, r, len(x), None))

    out = run(x, ei, et, ea)
    assert out.shape == (n, d)
    perm = torch.randperm(n)
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    out_p = run(x[perm], inv[ei], et, ea)  # same graph, nodes renumbered
    assert torch.allclose(out_p, out[perm], atol=1e-5)
    eperm = torch.randperm(e)
    assert torch.allclose(run(x, ei[:, eperm], et[eperm], ea[eperm]), out, atol=1e-5)  # edge order irrelevant
    assert not torch.allclose(run(x, ei, et, ea + 1.0), out, atol=1e-3)
    plain = RelationalConv(d, r, de, edge_features=False)
    plain_out = plain([x], [0] * r, x, _plan(ei, et, ea, r, n, None))
    assert torch.allclose(plain([x], [0] * r, x, _plan(ei, et, ea + 1.0, r, n, None)), plain_out)  # RGCN: blind to them


def test_residual_gate_starts_as_the_plain_rgcn_learns_from_edges_and_drops_them_in_training_only():
    torch.manual_seed(0)
    n, e, d, r, de = 12, 40, 8, 3, 4
    x, ei, et, ea = torch.randn(n, d), torch.randint(0, n, (2, e)), torch.randint(0, r, (e,)), torch.randn(e, de)
    y = torch.randn(n, d)
    for per_edge in (False, True):  # the per-relation loop and the small-graph path
        plan = _plan(ei, et, ea, r, n, None, per_edge=per_edge)
        edge, plain = RelationalConv(d, r, de), RelationalConv(d, r, de, edge_features=False)
        assert not plain.load_state_dict(edge.state_dict(), strict=False).missing_keys  # all but the edge terms
        assert torch.equal(edge([x], [0] * r, x, plan), plain([x], [0] * r, x, plan))  # same message at init
        ((edge([x], [0] * r, x, plan) - y) ** 2).sum().backward()
        assert edge.edge_weight.grad.abs().sum() > 0  # and the edge terms get a gradient from the first step
        dropped = live_edge_terms(RelationalConv(d, r, de, edge_dropout=0.5))
        a, b = dropped([x], [0] * r, x, plan), dropped([x], [0] * r, x, plan)
        assert not torch.allclose(a, b)  # training: the edge features are dropped, differently each step
        dropped.eval()
        kept = RelationalConv(d, r, de)
        kept.load_state_dict(dropped.state_dict())
        assert torch.equal(dropped([x], [0] * r, x, plan), kept.eval()([x], [0] * r, x, plan))  # scoring: never


def test_a_relation_whose_edges_share_one_attribute_row_gets_the_same_messages_from_one_gate():
    torch.manual_seed(0)
    n, e, d, r, de = 30, 300, 8, 3, 4
    x, ei, et = torch.randn(n, d), torch.randint(0, n, (2, e)), torch.randint(0, r, (e,))
    ea = torch.randn(e, de)
    ea[et == 1] = torch.tensor([0.5, -1.0, 0.0, 2.0])  # relation 1: constant rows; relation 2: all zero
    ea[et == 2] = 0.0
    plan = _plan(ei, et, ea, r, n, None, per_edge=False)
    assert plan.constant_attr is not None
    assert [c is not None for c in plan.constant_attr] == [False, True, True]
    for gate in ("residual", "sigmoid"):
        conv = live_edge_terms(RelationalConv(d, r, de, edge_gate=gate)).eval()
        general = _plan(ei, et, ea, r, n, None, per_edge=False)
        general.constant_attr = None  # the per-edge gate everywhere
        assert torch.allclose(conv([x], [0] * r, x, plan), conv([x], [0] * r, x, general), atol=1e-5)
        assert torch.allclose(conv([x], [0] * r, x, plan),
                              conv([x], [0] * r, x, _plan(ei, et, ea, r, n, None, per_edge=True)), atol=1e-5)
    dropped = live_edge_terms(RelationalConv(d, r, de, edge_dropout=0.5))  # training with edge dropout: per edge
    assert not torch.allclose(dropped([x], [0] * r, x, plan), dropped([x], [0] * r, x, plan))


def test_the_stacked_blend_leans_on_whichever_model_validation_prefers():
    rng = np.random.default_rng(0)
    y = (rng.random(2000) < 0.2).astype(float)
    sharp = 1 / (1 + np.exp(-(4 * y - 2 + rng.normal(0, 0.8, y.size))))  # separates the classes
    noise = rng.random(y.size)  # knows nothing
    assert fit_blend(y, sharp, noise).weight == 1.0  # all on the network
    assert fit_blend(y, noise, sharp).weight == 0.0  # all on the GBDT
    half = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.0, y.size))))  # two half-informed, independent models
    other = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, 1.0, y.size))))
    b = fit_blend(y, half, other)
    assert 0.0 < b.weight < 1.0
    blended = summary(y, b(half, other))["auprc"]
    assert blended > max(summary(y, half)["auprc"], summary(y, other)["auprc"])
    assert b.val_auprc == pytest.approx(blended)
    with pytest.raises(ValueError, match="one class"):
        fit_blend(np.zeros(10), half[:10], other[:10])


def test_models_saved_before_the_gate_choice_load_with_the_sigmoid_gate(tmp_path, toy):
    _frame, enc, t = toy
    model = FraudGNN(t.x.shape[1], 16, len(t.relations), t.edge_attr.shape[1], edge_gate="sigmoid")
    save_model(tmp_path / "m", model, enc, {"model": {"target_label": "customer"}}, {"threshold": 0.5}, "card")
    blob = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    del blob["hparams"]["edge_gate"]  # what a model trained before the choice holds
    torch.save(blob, tmp_path / "m" / "model.pt")
    loaded = LoadedModel.load(tmp_path / "m")
    assert not loaded.model.convs[0].residual_gate
    assert FraudGNN(t.x.shape[1], 16, len(t.relations), t.edge_attr.shape[1]).convs[0].residual_gate
    with pytest.raises(ValueError, match="edge_gate"):
        FraudGNN(t.x.shape[1], 16, len(t.relations), t.edge_attr.shape[1], edge_gate="softmax")


def test_training_overfits_a_tiny_graph_and_hidden_own_label_cannot_change_the_score(toy):
    frame, _enc, t = toy
    y = frame.vertices["customer"].index.str.startswith("customer:r").astype(float)
    cfg = load_model_config(overrides={"training.epochs": 120, "training.patience": 120, "training.mask_rate": 1.0,
                                       "network.dropout": 0.0, "split": "stratified"})
    targets = build_targets(frame, cfg, target="customer.blocked")
    targets.y = np.asarray(y)
    res = train(t, targets, cfg)
    nodes = t.index_of(targets.ids).astype(np.int64)
    scores = predict(res.model, t, nodes, cfg)
    assert summary(targets.y, scores)["auroc"] > 0.99
    # flip a node's own label-derived inputs: its (masked) score must not move
    i = int(t.index_of(["customer:r1m0"])[0])
    t_flip = type(t)(**{**t.__dict__, "x": t.x.clone()})
    t_flip.x[i, t.label_cols] += 5.0
    a = predict(res.model, t, np.array([i]), cfg)
    b = predict(res.model, t_flip, np.array([i]), cfg)
    assert a[0] == pytest.approx(b[0], abs=1e-6)
    # …while a neighbour's label does reach it
    j = int(t.index_of(["customer:r1m3"])[0])
    assert predict(res.model, t_flip, np.array([j]), cfg)[0] != pytest.approx(predict(res.model, t, np.array([j]), cfg)[0], abs=1e-6)


def test_save_load_round_trip_scores_identically(tmp_path, toy):
    frame, enc, t = toy
    model = FraudGNN(t.x.shape[1], 16, len(t.relations), t.edge_attr.shape[1])
    version = save_model(tmp_path / "m", model, enc, {"model": {"target_label": "customer"}},
                         {"threshold": 0.5}, "card {version}")
    loaded = LoadedModel.load(tmp_path / "m")
    assert loaded.version == version and version in (tmp_path / "m" / "model_card.md").read_text()
    ids = ["customer:r0m3", "customer:h0m1"]
    nodes = t.index_of(ids).astype(np.int64)
    direct = []
    model.eval()
    for i in nodes:
        with torch.no_grad():
            direct.append(float(torch.sigmoid(model(mask_labels(t, [i]), t.edge_index, t.edge_type, t.edge_attr))[i]))
    assert np.allclose(loaded.score(frame, ids[:1]), direct[:1], atol=1e-6)
    assert np.allclose(loaded.score(frame, ids[1:]), direct[1:], atol=1e-6)
    with pytest.raises(SchemaError):
        LoadedModel.load(tmp_path / "nothing")


def test_metrics_and_threshold_choice():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.75, 0.8, 0.9])
    assert recall_at_precision(y, s, 1.0) == pytest.approx(0.4)
    thr, ok = threshold_for_precision(y, s, 0.8)
    assert ok and ((s >= thr) & (y == 1)).sum() / (s >= thr).sum() >= 0.8
    thr, ok = threshold_for_precision(np.array([1, 0, 1, 0]), np.array([0.1, 0.9, 0.2, 0.8]), 0.99)
    assert not ok  # unreachable target is reported, not hidden


def test_per_scenario_figures_show_a_scenario_the_average_hides():
    """Rings on top, takeovers below one honest account: the queue at precision 1 holds every ring member
    and no takeover, though the takeovers still rank above most honest customers."""
    y = np.array([0, 0, 0, 0, 1, 1, 1, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.35, 0.4, 0.6, 0.7, 0.75, 0.8, 0.9])
    kinds = np.array(["none"] * 4 + ["ato"] * 3 + ["none", "ring", "ring"])
    rows = by_group(y, s, kinds, 1.0)
    assert set(rows) == {"ato", "ring"}
    assert rows["ring"] == {"positives": 2, "auroc": 1.0, "recall_in_queue": 1.0}
    assert rows["ato"]["positives"] == 3 and rows["ato"]["recall_in_queue"] == 0.0
    assert rows["ato"]["auroc"] == pytest.approx(12 / 15)  # each takeover beats 4 of the 5 honest customers
    assert by_group(np.zeros(3), np.ones(3), np.array(["none"] * 3), 0.85) == {}


def test_targets_from_property_validate_values(toy):
    frame, _, _ = toy
    cfg = load_model_config()
    with pytest.raises(SchemaError, match=r"LABEL\.PROPERTY"):
        build_targets(frame, cfg, target="blocked")
    with pytest.raises(SchemaError, match="no property"):
        build_targets(frame, cfg, target="customer.nope")
    with pytest.raises(SchemaError, match="0/1"):
        build_targets(frame, cfg, target="customer.lifetime_value")
    tg = build_targets(frame, cfg, target="customer.blocked")
    assert tg.kind == "time" and set(tg.split) == {"train", "val", "test"}


def test_estimate_counts_the_snapshot_and_recommends_an_instance(tmp_path):
    from identigraph.model.pipeline import estimate

    est = estimate(_tiny_snapshot(tmp_path / "snap"), load_model_config())
    assert est["nodes"] == 3 and est["directed_edges"] == 2
    assert est["peak_memory_gib"] > 0 and est["epoch_seconds_cpu"] > 0 and est["mode"] == "full"
    assert "CPU" in est["recommendation"]
