"""Hubs are their statistics: the frame the API builds (a hub's vertex alone) scores like the full graph."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from identigraph.model.features import FeatureEncoder, mask_labels
from identigraph.model.nets import FraudGNN
from model_graphs import customer, link, live_edge_terms, make_frame, with_stats

LABEL_COLS = {"customer": ["n_blocks", "last_block_at", "blocked", "n_block_reviews"]}


def world(n_hub: int = 80):
    customers, links = [customer("seed", days_old=30)], [link("seed", "ip:nat", first_days=25),
                                                          link("seed", "device:d0", first_days=25)]
    for i in range(n_hub):
        customers.append(customer(f"c{i}", days_old=100 + i, blocked=i % 7 == 0))
        links.append(link(f"c{i}", "ip:nat", first_days=90 + i, last_days=i % 5))
        links.append(link(f"c{i}", f"device:d{i % 3}", first_days=50 + i))
    return customers, links


def test_stored_statistics_and_hub_cut_make_the_api_frame_score_like_the_full_graph():
    customers, links = world()
    full = with_stats(make_frame(customers, links))
    enc = FeatureEncoder(LABEL_COLS, hub_degree=50).fit(full)
    t_full = enc.transform(full)
    # the API's frame: the hub is its vertex (statistics), small identifiers come whole with their customers,
    # and those customers' own links (their structural features need them), but none of the hub's customers
    keep_ids = {"customer:seed"} | {r["src"] for r in links if r["dst"] == "device:d0"}
    small = [r for r in links if r["src"] in keep_ids]
    api = make_frame([c for c in customers if c["~id"] in keep_ids], small)
    api.vertices["ip"] = full.vertices["ip"].loc[["ip:nat"]]
    api.vertices["device"] = full.vertices["device"].loc[["device:d0"]]
    api.types = full.types
    t_api = enc.transform(api)
    hub_full = int(t_full.index_of(["ip:nat"])[0])
    hub_api = int(t_api.index_of(["ip:nat"])[0])
    np.testing.assert_allclose(t_api.x[hub_api].numpy(), t_full.x[hub_full].numpy(), rtol=1e-6, atol=1e-6)
    # no customer's message reaches the hub, in either frame; the hub's message to its customers stays
    into_hub = (t_full.edge_index[1] == hub_full).sum().item()
    from_hub = (t_full.edge_index[0] == hub_full).sum().item()
    assert into_hub == 0 and from_hub == 81
    torch.manual_seed(0)
    net = live_edge_terms(FraudGNN(t_full.x.shape[1], 16, len(enc.relations), t_full.edge_attr.shape[1])).eval()

    def seed_score(t):
        i = int(t.index_of(["customer:seed"])[0])
        x = mask_labels(t, [i])
        with torch.no_grad():
            return float(net(x, t.edge_index, t.edge_type, t.edge_attr)[i])

    # the seed's receptive field differs only in customers the hub cut disconnects: its score is the same
    assert seed_score(t_api) == pytest.approx(seed_score(t_full), abs=1e-5)


def test_without_hub_cut_the_hub_aggregates_its_customers():
    customers, links = world(n_hub=30)
    full = with_stats(make_frame(customers, links))
    enc = FeatureEncoder(LABEL_COLS, hub_degree=50).fit(full)
    t = enc.transform(full)
    hub = int(t.index_of(["ip:nat"])[0])
    assert (t.edge_index[1] == hub).sum().item() == 31  # 31 customers ≤ hub_degree: a plain identifier
    assert FeatureEncoder.from_dict(enc.to_dict()).hub_degree == 50
