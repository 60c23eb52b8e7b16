"""Shortcut relations: private identifiers as own_ links, co_ links with pairwise features — built the same
by the batch encoder and the API's request encoder, and read by the seed-only forward exactly as by the full one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from identigraph.model.artifacts import LoadedModel
from identigraph.model.features import CO, OWN, FeatureEncoder, mask_labels, shortcut_relations
from identigraph.model.nets import FraudGNN
from identigraph.model.request_path import RequestEncoder
from model_graphs import live_edge_terms
from test_request_path import LABEL_COLS, SEEDS, request_graph, toy_world


@pytest.fixture(scope="module")
def fitted():
    frame = toy_world()
    enc = FeatureEncoder(LABEL_COLS, hub_degree=50, shortcuts=True).fit(frame)
    t = enc.transform(frame)
    torch.manual_seed(5)
    net = live_edge_terms(FraudGNN(t.x.shape[1], 16, len(enc.relations), t.edge_attr.shape[1],
                                   shortcut_relations=shortcut_relations(enc.relations))).eval()
    return frame, enc, t, net


def _edges(t, into):
    ids = t.node_ids
    return sorted((ids[int(a)], ids[int(b)], t.relations[int(r)], tuple(np.round(attr, 5)))
                  for (a, b), r, attr in zip(t.edge_index.T.tolist(), t.edge_type.tolist(), t.edge_attr.numpy(),
                                             strict=True)
                  if ids[int(b)] in into)


def test_private_identifiers_become_own_links_and_small_shared_ones_co_links(fitted):
    _frame, enc, t, _ = fitted
    rel = [t.relations[int(r)] for r in t.edge_type]
    ids = t.node_ids
    src, dst = ids[t.edge_index[0].numpy()], ids[t.edge_index[1].numpy()]
    # n5's own device is used by nobody else: one own_ link into n5, no message from n5 into it
    assert ([r for s, d, r in zip(src, dst, rel, strict=True) if s == "device:own5"]
            == [f"device|{OWN}has_device|customer"])
    assert not [d for d, s in zip(dst, src, strict=True) if d == "device:own5"]
    # r0 and r1 share the emulator (8 customers): co-links both ways, pairwise creation gap ≈ 1 day
    co = [(s, d, i) for i, (s, d, r) in enumerate(zip(src, dst, rel, strict=True))
          if r == f"customer|{CO}has_device|customer"]
    pairs = {(s, d) for s, d, _ in co}
    assert ("customer:r0", "customer:r1") in pairs and ("customer:r1", "customer:r0") in pairs
    assert not any(s == d for s, d, _ in co)
    # the carrier-NAT hub (71 customers > 50) makes no co-links; the 8-customer emulator makes 8 * 7
    assert not [r for s, d, r in zip(src, dst, rel, strict=True) if r == f"customer|{CO}used_ip|customer" and
                {s, d} <= {f"customer:n{i}" for i in range(70)}]
    emulator = [1 for s, d, r in zip(src, dst, rel, strict=True) if r == f"customer|{CO}has_device|customer"
                and s.startswith("customer:r") and d.startswith("customer:r")]
    assert len(emulator) == 6 * 5
    width = t.edge_attr.shape[1]
    assert width == enc.edge_width and FeatureEncoder.from_dict(enc.to_dict()).edge_width == width


@pytest.mark.parametrize("seed", SEEDS)
def test_request_encoder_builds_the_same_shortcuts_as_the_batch_encoder(fitted, seed):
    frame, enc, full, _ = fitted
    graph = request_graph(frame, seed, enc.hub_degree)
    fast = RequestEncoder(FeatureEncoder.from_dict(enc.to_dict())).transform(graph)
    rows = full.index_of(list(fast.node_ids)).astype(np.int64)
    np.testing.assert_allclose(fast.x.numpy(), full.x[rows].numpy(), rtol=1e-5, atol=1e-5)
    needed = {seed} | set(graph.identifiers_of(seed))
    assert _edges(fast, needed) == _edges(full, needed)


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_only_forward_with_shortcuts_equals_the_full_forward(fitted, seed):
    frame, enc, full, net = fitted
    i = int(full.index_of([seed])[0])
    x = mask_labels(full, [i])
    with torch.no_grad():
        everything = net(x, full.edge_index, full.edge_type, full.edge_attr)[i]
        only = net(x, full.edge_index, full.edge_type, full.edge_attr, targets=torch.tensor([i]))[0]
        fast = RequestEncoder(enc).transform(request_graph(frame, seed, enc.hub_degree))
        j = int(fast.index_of([seed])[0])
        api = net(mask_labels(fast, [j]), fast.edge_index, fast.edge_type, fast.edge_attr, targets=torch.tensor([j]))[0]
        prefixes = net(mask_labels(fast, [j]), fast.edge_index, fast.edge_type, fast.edge_attr,
                       targets=torch.tensor([j]), layer_edges=fast.layer_edges(2, j))[0]
    assert float(only) == pytest.approx(float(everything), abs=1e-5)
    assert float(api) == pytest.approx(float(everything), abs=1e-5)
    assert float(prefixes) == pytest.approx(float(everything), abs=1e-5)
    # the last layer's prefix is exactly the edges into the seed: its identifiers', own_ and co_ links
    into_seed, _ = fast.seed_prefixes
    assert (fast.edge_index[1, :into_seed] == j).all() and not (fast.edge_index[1, into_seed:] == j).any()


def test_per_edge_messages_equal_the_per_relation_ones_with_shortcut_sources(fitted):
    """Shortcut relations read the input embedding, deep ones the layer's state: both conv paths agree."""
    from identigraph.model.nets import _plan

    _, _enc, t, net = fitted
    conv = net.convs[1]
    h0 = torch.relu(net.inp(t.x))
    h = h0 + torch.randn_like(h0)
    source_state = [1 if s else 0 for s in net.is_shortcut]
    assert 0 < sum(source_state) < len(source_state)
    with torch.no_grad():
        small, planned = (conv([h, h0], source_state, h, _plan(t.edge_index, t.edge_type, t.edge_attr,
                                                               conv.num_relations, len(h), None, per_edge=flag))
                          for flag in (True, False))
    np.testing.assert_allclose(small.numpy(), planned.numpy(), rtol=1e-5, atol=1e-5)


def test_explanations_still_name_private_identifiers(fitted):
    _frame, enc, full, net = fitted
    model = LoadedModel(model=net, encoder=enc, threshold=0.5, version="t", metrics={}, path=None)
    seed = "customer:n5"
    out = model.explain_tensors(full, int(full.index_of([seed])[0]), top_k=20)
    assert {c["identifier_id"] for c in out["connections"]} >= {"device:own5", "ip:100.64.0.1"}


def test_relation_dropout_trains_only(fitted):
    _frame, enc, t, _ = fitted
    torch.manual_seed(1)
    net = FraudGNN(t.x.shape[1], 16, len(enc.relations), t.edge_attr.shape[1],
                   shortcut_relations=shortcut_relations(enc.relations), relation_dropout=0.5)
    net.eval()
    a = net(t.x, t.edge_index, t.edge_type, t.edge_attr)
    assert torch.equal(a, net(t.x, t.edge_index, t.edge_type, t.edge_attr))  # evaluation: deterministic
    net.train()
    torch.manual_seed(2)
    net.dropout.p = 0.0  # only the relation dropout differs from evaluation
    b = net(t.x, t.edge_index, t.edge_type, t.edge_attr)
    assert torch.isfinite(b).all() and not torch.allclose(a, b)  # some (node, relation) lost their edges
