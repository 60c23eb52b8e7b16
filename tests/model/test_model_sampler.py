"""TorchNeighborSampler against PyG's exact k-hop neighbourhood and NodeLoader's contract."""

from __future__ import annotations

import pytest
import torch
from torch_geometric.data import Data
from torch_geometric.loader import NodeLoader
from torch_geometric.sampler import NodeSamplerInput
from torch_geometric.utils import k_hop_subgraph

from identigraph.model.sampler import TorchNeighborSampler


def random_graph(num_nodes: int, num_edges: int, seed: int, features: bool = False) -> Data:
    g = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(0, num_nodes, (2, num_edges), generator=g)
    edge_index = torch.unique(edge_index, dim=1)  # simple graph: an edge set, so "no duplicates" is checkable
    data = Data(edge_index=edge_index, num_nodes=num_nodes)
    if features:
        data.x = torch.randn(num_nodes, 4, generator=g, dtype=torch.float64)
        data.edge_attr = torch.randn(edge_index.size(1), 3, generator=g)
        data.edge_type = torch.randint(0, 5, (edge_index.size(1),), generator=g)
    return data


def sample(sampler: TorchNeighborSampler, seeds: list[int]):
    node = torch.tensor(seeds)
    return sampler.sample_from_nodes(NodeSamplerInput(input_id=torch.arange(node.numel()), node=node))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_full_fanout_equals_exact_k_hop_incoming_neighbourhood(seed: int) -> None:
    data = random_graph(60, 200, seed)
    seeds = torch.randperm(60, generator=torch.Generator().manual_seed(seed))[:5].tolist()
    for fanouts in ([1000, 1000], [-1, -1, -1]):
        out = sample(TorchNeighborSampler(data, fanouts, seed=seed), seeds)
        subset, _, _, edge_mask = k_hop_subgraph(seeds, len(fanouts), data.edge_index, num_nodes=60,
                                                 flow="source_to_target", directed=True)
        assert out.node[:5].tolist() == seeds
        assert out.node.unique().numel() == out.node.numel()
        assert sorted(out.node.tolist()) == subset.tolist()
        assert sorted(out.edge.tolist()) == edge_mask.nonzero().flatten().tolist()
        assert sum(out.num_sampled_nodes) == out.node.numel()
        assert sum(out.num_sampled_edges) == out.edge.numel()
        assert len(out.num_sampled_edges) == len(fanouts)


def test_fanout_respected_edges_real_and_oriented_neighbour_to_seed() -> None:
    data = random_graph(300, 3000, 7)
    fanouts = [3, 2]
    out = sample(TorchNeighborSampler(data, fanouts, seed=0), list(range(10)))
    src, dst = out.node[out.row], out.node[out.col]
    assert torch.equal(data.edge_index[0, out.edge], src)  # row is the neighbour (message source)
    assert torch.equal(data.edge_index[1, out.edge], dst)  # col is the node it was sampled for
    in_deg = torch.bincount(data.edge_index[1], minlength=300)
    start = 0
    hop_nodes = torch.split(out.node, out.num_sampled_nodes)
    for hop, (fanout, n_edges) in enumerate(zip(fanouts, out.num_sampled_edges, strict=True)):
        hop_dst = dst[start:start + n_edges]
        assert set(hop_dst.tolist()) <= set(hop_nodes[hop].tolist())  # only the previous hop's new nodes expand
        per_node = torch.bincount(hop_dst, minlength=300)
        frontier = hop_nodes[hop]
        assert torch.equal(per_node[frontier], in_deg[frontier].clamp(max=fanout))
        start += n_edges


def test_without_replacement() -> None:
    data = random_graph(50, 1500, 3)  # dense: every node has many more in-edges than the fanout
    for s in range(5):
        out = sample(TorchNeighborSampler(data, [12, 12], seed=s), [0, 1, 2])
        assert out.edge.unique().numel() == out.edge.numel()


def test_node_loader_slices_edge_attributes_and_matches_full_graph_aggregation() -> None:
    data = random_graph(200, 1200, 11, features=True)
    input_nodes = torch.arange(0, 200, 3)
    loader = NodeLoader(data, node_sampler=TorchNeighborSampler(data, [-1, -1], seed=0),
                        input_nodes=input_nodes, batch_size=16)

    def two_layer_sum(x, edge_index):
        src, dst = edge_index
        for _ in range(2):  # h_v <- h_v + sum over incoming u of h_u
            x = x + torch.zeros_like(x).index_add_(0, dst, x[src])
        return x

    full = two_layer_sum(data.x, data.edge_index)
    seen = []
    for batch in loader:
        n = batch.batch_size
        seen.append(batch.n_id[:n])
        assert torch.equal(batch.x, data.x[batch.n_id])
        assert torch.equal(batch.edge_attr, data.edge_attr[batch.e_id])
        assert torch.equal(batch.edge_type, data.edge_type[batch.e_id])
        assert torch.equal(batch.n_id[batch.edge_index], data.edge_index[:, batch.e_id])
        assert torch.equal(batch.input_id, torch.arange(len(seen) * 16 - 16, len(seen) * 16)[:n])
        assert torch.allclose(two_layer_sum(batch.x, batch.edge_index)[:n], full[batch.n_id[:n]])
    assert torch.equal(torch.cat(seen), input_nodes)


def test_seeded_generator_is_deterministic() -> None:
    data = random_graph(300, 4000, 5)
    a, b = (TorchNeighborSampler(data, [5, 3], seed=42) for _ in range(2))
    for _ in range(3):
        oa, ob = sample(a, [1, 2, 3]), sample(b, [1, 2, 3])
        assert torch.equal(oa.node, ob.node) and torch.equal(oa.edge, ob.edge)
        assert torch.equal(oa.row, ob.row) and torch.equal(oa.col, ob.col)
    assert not torch.equal(sample(TorchNeighborSampler(data, [5, 3], seed=43), [1, 2, 3]).edge, oa.edge)


def test_sampling_is_roughly_uniform_on_a_star() -> None:
    leaves, fanout, draws = 20, 5, 4000
    data = Data(edge_index=torch.stack([torch.arange(1, leaves + 1), torch.zeros(leaves, dtype=torch.long)]),
                num_nodes=leaves + 1)
    sampler = TorchNeighborSampler(data, [fanout], seed=0)
    # One batch of many copies of the hub samples it once, so draw repeatedly instead.
    counts = torch.zeros(leaves)
    for _ in range(draws):
        counts += torch.bincount(sample(sampler, [0]).edge, minlength=leaves).float()
    expected = draws * fanout / leaves
    chi2 = ((counts - expected) ** 2 / expected).sum().item()
    assert chi2 < 60  # 19 degrees of freedom: mean 19, p(chi2 > 60) is about 1e-6


def test_isolated_and_repeated_seeds() -> None:
    data = Data(edge_index=torch.tensor([[1, 2], [0, 0]]), num_nodes=4)
    out = sample(TorchNeighborSampler(data, [2, 2]), [3])
    assert out.node.tolist() == [3] and out.edge.numel() == 0 and out.num_sampled_nodes == [1, 0, 0]
    out = sample(TorchNeighborSampler(data, [2, 2]), [0, 3, 0])
    assert out.node[:3].tolist() == [0, 3, 0] and sorted(out.edge.tolist()) == [0, 1]
    assert out.col.tolist() == [0, 0]  # the repeated seed is expanded once, via its first position


def test_unsupported_options_raise() -> None:
    data = random_graph(10, 20, 0)
    with pytest.raises(NotImplementedError, match="disjoint"):
        TorchNeighborSampler(data, [2], disjoint=True)
    with pytest.raises(NotImplementedError, match="temporal"):
        TorchNeighborSampler(data, [2], time_attr="time")
    sampler = TorchNeighborSampler(data, [2])
    with pytest.raises(NotImplementedError, match="temporal"):
        sampler.sample_from_nodes(NodeSamplerInput(None, torch.tensor([0]), time=torch.tensor([1])))


def test_runs_on_a_200k_edge_graph() -> None:
    data = random_graph(20_000, 200_000, 9)
    loader = NodeLoader(data, node_sampler=TorchNeighborSampler(data, [15, 10], seed=0),
                        input_nodes=torch.arange(2048), batch_size=512)
    assert sum(batch.batch_size for batch in loader) == 2048
