"""Pure-torch neighbour sampling for PyG's NodeLoader.

PyG's own NeighborSampler needs pyg-lib or torch-sparse, neither of which installs here; this is the
one sanctioned stand-in. It fills the same SamplerOutput contract (local row = sampled neighbour,
local col = the node it was sampled for, so the batch's edge_index points neighbour -> seed side and
message passing flows into the seeds) and is vectorised over nodes: Python loops run only over hops
and over fanout slots, never over nodes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.sampler import BaseSampler, EdgeSamplerInput, NodeSamplerInput, SamplerOutput


def _first_index(inv: Tensor, num_unique: int) -> Tensor:
    """Position of each unique value's first occurrence: torch.unique sorts, but PyG numbers by first sight."""
    return torch.full((num_unique,), inv.numel(), dtype=torch.long).scatter_reduce_(
        0, inv, torch.arange(inv.numel()), "amin")


class TorchNeighborSampler(BaseSampler):
    """Uniform, without-replacement, layer-wise neighbour sampling over incoming edges.

    `num_neighbors[h]` caps the incoming edges kept per frontier node at hop h (-1 keeps all). Passing
    `seed` makes the stream of batches reproducible; each DataLoader worker gets a copy of the same
    generator state, so with workers > 0 determinism holds per worker, not globally.
    """

    def __init__(self, data: Data, num_neighbors: Sequence[int], seed: int | None = None,
                 disjoint: bool = False, time_attr: str | None = None) -> None:
        # Refuse loudly rather than silently sample a different distribution than the caller asked for.
        if disjoint:
            raise NotImplementedError("TorchNeighborSampler: disjoint sampling is not implemented")
        if time_attr is not None:
            raise NotImplementedError("TorchNeighborSampler: temporal sampling is not implemented")
        self.num_neighbors = [int(k) for k in num_neighbors]
        num_nodes = int(data.num_nodes)
        src, dst = data.edge_index.cpu()
        # CSC once: each node's incoming edges are contiguous, so a hop is pure index arithmetic.
        dst_sorted, perm = torch.sort(dst, stable=True)
        self.perm = perm  # CSC slot -> original edge id, so edge attributes can be sliced by filter_data
        self.csc_src = src[perm]
        deg = torch.bincount(dst_sorted, minlength=num_nodes)
        self.rowptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        torch.cumsum(deg, 0, out=self.rowptr[1:])
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def _pick(self, frontier: Tensor, fanout: int) -> tuple[Tensor, Tensor]:
        """CSC slots of the sampled incoming edges, grouped by frontier node in frontier order, and the
        frontier position each slot belongs to.

        Floyd's algorithm, vectorised across nodes, costs O(fanout^2) per capped node regardless of its
        degree, so a hub with a million in-edges costs no more than one with fanout + 1.
        """
        start = self.rowptr[frontier]
        deg = self.rowptr[frontier + 1] - start
        count = deg if fanout < 0 else deg.clamp(max=fanout)
        node = torch.repeat_interleave(torch.arange(frontier.numel()), count)
        within = torch.arange(node.numel()) - torch.repeat_interleave(count.cumsum(0) - count, count)
        offset = within.clone()
        capped = deg > count
        if bool(capped.any()):
            d = deg[capped]
            chosen = torch.empty(d.numel(), fanout, dtype=torch.long)
            for step in range(fanout):  # Floyd: j runs d-k .. d-1, each draw is uniform on [0, j]
                j = d - fanout + step
                u = torch.rand(d.numel(), generator=self.generator, dtype=torch.float64)
                t = (u * (j + 1)).long().clamp_(max=j)
                seen = (chosen[:, :step] == t[:, None]).any(1)
                chosen[:, step] = torch.where(seen, j, t)
            rank = torch.cumsum(capped, 0) - 1
            mask = capped[node]
            offset[mask] = chosen[rank[node[mask]], within[mask]]
        return start[node] + offset, node

    def sample_from_nodes(self, index: NodeSamplerInput, **kwargs) -> SamplerOutput:
        if index.time is not None:
            raise NotImplementedError("TorchNeighborSampler: temporal sampling (input_time) is not implemented")
        seeds = index.node.long()
        nodes = [seeds]
        # Sorted global ids plus their local ids answer "seen yet?" with searchsorted in O(batch), not O(N).
        uniq, inv = torch.unique(seeds, return_inverse=True)
        first = _first_index(inv, uniq.numel())
        seen_ids, seen_local = uniq, first
        frontier, frontier_local = seeds[first], first  # a repeated seed is expanded once
        rows, cols, edges = [], [], []
        num_nodes, num_edges = [seeds.numel()], []
        n_total = seeds.numel()
        for fanout in self.num_neighbors:
            slot, which = self._pick(frontier, fanout)
            nbr = self.csc_src[slot]
            pos = torch.searchsorted(seen_ids, nbr).clamp_(max=max(seen_ids.numel() - 1, 0))
            found = seen_ids[pos] == nbr  # an empty seen set means an empty frontier, so nbr is empty too
            local = torch.where(found, seen_local[pos], -1)
            new_uniq, new_inv = torch.unique(nbr[~found], return_inverse=True)
            # Number new nodes in first-seen order, as pyg-lib does, so hop blocks look like PyG's own.
            order = torch.argsort(_first_index(new_inv, new_uniq.numel()))
            new_local = torch.empty_like(order)
            new_local[order] = torch.arange(n_total, n_total + order.numel())
            local[~found] = new_local[new_inv]
            rows.append(local)
            cols.append(frontier_local[which])
            edges.append(self.perm[slot])
            num_edges.append(slot.numel())
            frontier, frontier_local = new_uniq[order], new_local[order]
            nodes.append(frontier)
            num_nodes.append(frontier.numel())
            n_total += frontier.numel()
            seen_ids, sort = torch.sort(torch.cat([seen_ids, new_uniq]))
            seen_local = torch.cat([seen_local, new_local])[sort]
        empty = torch.empty(0, dtype=torch.long)
        return SamplerOutput(
            node=torch.cat(nodes), row=torch.cat(rows) if rows else empty,
            col=torch.cat(cols) if cols else empty, edge=torch.cat(edges) if edges else empty,
            batch=None, num_sampled_nodes=num_nodes, num_sampled_edges=num_edges,
            metadata=(index.input_id, index.time))

    def sample_from_edges(self, index: EdgeSamplerInput, neg_sampling=None) -> SamplerOutput:
        raise NotImplementedError("TorchNeighborSampler: link sampling is not implemented")
