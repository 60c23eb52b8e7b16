"""The API's request encoder and seed-only forward equal the batch encoder and the full forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from identigraph.model.artifacts import LoadedModel
from identigraph.model.features import FeatureEncoder, mask_labels
from identigraph.model.nets import FraudGNN
from identigraph.model.request_path import FrameRequests, RequestEncoder, RequestGraph
from model_graphs import customer, link, live_edge_terms, make_frame, with_stats

LABEL_COLS = {"customer": ["n_blocks", "last_block_at", "last_block_reason", "last_block_source",
                           "last_block_rule", "blocked", "last_unblock_at", "n_block_reviews", "last_care_at"]}


def request_graph(frame, seed: str, hub_degree: int) -> RequestGraph:
    return FrameRequests(frame, hub_degree).graph(seed)


def graph_ids(frame, seed):
    return request_graph(frame, seed, 50).identifiers_of(seed)


def toy_world():
    """A ring on an emulator and stolen cards, households on home IPs, a carrier NAT hub, odd values."""
    customers, links = [], []
    for m in range(6):
        cid = f"r{m}"
        customers.append(customer(cid, days_old=20 + m, blocked=m < 2, ltv=5.0, last_block_rule="velocity" if m else None))
        links += [link(cid, "device:emu", first_days=20, count=3), link(cid, f"card:stolen{m % 2}", first_days=19),
                  link(cid, "ip:10.0.0.1", first_days=20, count=3)]
    for h in range(12):
        for m in range(3):
            cid = f"h{h}m{m}"
            customers.append(customer(cid, days_old=500 + 10 * m, ltv=300.0, country="SA" if h % 2 else "AE"))
            links += [link(cid, f"ip:192.168.{h}.1", first_days=480, count=80), link(cid, f"device:tablet{h}", first_days=300)]
    for i in range(70):
        customers.append(customer(f"n{i}", days_old=200 + i, blocked=i % 9 == 0, n_block_reviews=i % 4 == 0))
        links += [link(f"n{i}", "ip:100.64.0.1", first_days=150 + i, last_days=i % 3),
                  link(f"n{i}", f"device:own{i}", first_days=None if i == 3 else 100)]
    customers.append(customer("odd", days_old=10, country=None, ltv=0.0))
    links += [link("odd", "ip:100.64.0.1", first_days=5, last_days=None), link("odd", "device:emu", first_days=4),
              link("h0m0", "device:emu", first_days=2), link("r0", "ip:100.64.0.1", first_days=3)]
    return with_stats(make_frame(customers, links))


@pytest.fixture(scope="module")
def fitted():
    frame = toy_world()
    enc = FeatureEncoder(LABEL_COLS, hub_degree=50).fit(frame)
    torch.manual_seed(3)
    net = live_edge_terms(FraudGNN(enc.transform(frame).x.shape[1], 16, len(enc.relations),
                                   enc.transform(frame).edge_attr.shape[1])).eval()
    return frame, enc, enc.transform(frame), net


SEEDS = ["customer:r0", "customer:h0m0", "customer:n3", "customer:odd", "customer:h5m2"]


@pytest.mark.parametrize("seed", SEEDS)
def test_request_encoder_equals_the_batch_encoder(fitted, seed):
    frame, enc, full, _ = fitted
    graph = request_graph(frame, seed, enc.hub_degree)
    fast = RequestEncoder(enc).transform(graph)
    rows = full.index_of(list(fast.node_ids)).astype(np.int64)
    np.testing.assert_allclose(fast.x.numpy(), full.x[rows].numpy(), rtol=1e-5, atol=1e-5)
    assert fast.mask_col == full.mask_col and fast.label_cols.tolist() == full.label_cols.tolist()
    # the same edges, attributes and relations (as sets: the order of a sum does not matter)
    def edge_set(t, ids):
        return sorted((ids[int(a)], ids[int(b)], int(r), tuple(np.round(attr, 5)))
                      for (a, b), r, attr in zip(t.edge_index.T.tolist(), t.edge_type.tolist(), t.edge_attr.numpy(),
                                                 strict=True))
    # every edge the seed's score reads (into the seed and into its identifiers) is there, identical
    needed = {seed} | set(graph.identifiers_of(seed))
    assert [e for e in edge_set(fast, fast.node_ids) if e[1] in needed] == \
        [e for e in edge_set(full, full.node_ids) if e[1] in needed]


@pytest.mark.parametrize("seed", SEEDS)
def test_seed_only_forward_equals_the_full_forward(fitted, seed):
    frame, enc, full, net = fitted
    i = int(full.index_of([seed])[0])
    x = mask_labels(full, [i])
    with torch.no_grad():
        everything = net(x, full.edge_index, full.edge_type, full.edge_attr)[i]
        only = net(x, full.edge_index, full.edge_type, full.edge_attr, targets=torch.tensor([i]))[0]
        fast = RequestEncoder(enc).transform(request_graph(frame, seed, enc.hub_degree))
        j = int(fast.index_of([seed])[0])
        api = net(mask_labels(fast, [j]), fast.edge_index, fast.edge_type, fast.edge_attr,
                  targets=torch.tensor([j]))[0]
        prefixes = net(mask_labels(fast, [j]), fast.edge_index, fast.edge_type, fast.edge_attr,
                       targets=torch.tensor([j]), layer_edges=fast.layer_edges(2, j))[0]
    assert float(only) == pytest.approx(float(everything), abs=1e-5)
    assert float(api) == pytest.approx(float(everything), abs=1e-5)
    assert float(prefixes) == pytest.approx(float(everything), abs=1e-5)
    # the prefixes are what a seed needs and no more: the last layer reads only the edges into the seed
    into_seed, into_identifiers = fast.seed_prefixes
    assert (fast.edge_index[1, :into_seed] == j).all() and not (fast.edge_index[1, into_seed:] == j).any()
    idents = {int(i) for i in fast.index_of(graph_ids(frame, seed))}
    assert all(int(d) in idents for d in fast.edge_index[1, into_seed:into_identifiers])
    assert all(int(d) not in idents | {j} for d in fast.edge_index[1, into_identifiers:])


def test_explanations_batch_their_occlusions_and_leave_the_model_untouched(fitted):
    frame, enc, full, net = fitted
    model = LoadedModel(model=net, encoder=enc, threshold=0.5, version="t", metrics={}, path=None)
    seed = "customer:r0"
    i = int(full.index_of([seed])[0])
    batched = model.explain_tensors(full, i, top_k=20)
    assert all(p.grad is None for p in net.parameters())  # autograd.grad, not backward()
    # one-at-a-time occlusion, as the slow path did it, gives the same impacts
    ei = full.edge_index
    x0 = mask_labels(full, [i])
    base = float(torch.sigmoid(net(x0, ei, full.edge_type, full.edge_attr))[i])
    assert batched["score"] == pytest.approx(base, abs=1e-6)
    for conn in batched["connections"]:
        nb = int(full.index_of([conn["identifier_id"]])[0])
        keep = ~(((ei[0] == i) & (ei[1] == nb)) | ((ei[0] == nb) & (ei[1] == i)))
        with torch.no_grad():
            alone = float(torch.sigmoid(net(x0, ei[:, keep], full.edge_type[keep], full.edge_attr[keep]))[i])
        assert conn["impact"] == pytest.approx(base - alone, abs=1e-5)
    assert {c["identifier_id"] for c in batched["connections"]} == set(request_graph(frame, seed, 50).identifiers_of(seed))
    assert batched["features"] and all(np.isfinite(f["impact"]) for f in batched["features"])


def test_the_per_edge_conv_path_equals_the_relation_plan_path(fitted):
    """Request graphs take the per-edge path, training graphs the relation plan: same numbers."""
    from identigraph.model.nets import _plan

    _, _enc, full, net = fitted
    conv = net.convs[0]
    h = torch.relu(net.inp(full.x))
    R = conv.num_relations
    with torch.no_grad():
        small, planned = (conv([h, h], [0] * R, h, _plan(full.edge_index, full.edge_type, full.edge_attr, R,
                                                          h.size(0), None, per_edge=flag)) for flag in (True, False))
    np.testing.assert_allclose(small.numpy(), planned.numpy(), rtol=1e-5, atol=1e-5)
