"""Vectorised k-hop neighbour sampling over the link-prediction message-passing graph.

PyG's ``NeighborLoader`` needs ``pyg-lib`` or ``torch-sparse``; this sampler needs neither.
For every edge type of a product-only ``HeteroData`` (the output of
:func:`~rcml_graph.downstream.splits.message_passing_graph`, so only leakage-free training
edges) it keeps the *incoming* edges of each node in CSC order, and for each hop draws, for
every frontier node and edge type, ``min(in_degree, fan_out)`` distinct incoming edges
uniformly at random: one random key per candidate edge, a sort by key inside each node's
segment and a cut at rank ``fan_out``. No per-node Python loop; the work is linear in the
frontier's in-degree (plus a sort).

Like PyG, hop ``h + 1`` expands only the nodes first reached at hop ``h``, the sampled
subgraph keeps every sampled edge of every hop, and the seed nodes come first in the
subgraph's node order, so ``encode(subgraph)[:num_seeds]`` are the seeds' embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.typing import EdgeType

from rcml_graph.evaluation.edges import is_member
from rcml_graph.relations import PRODUCT
from rcml_graph.sampling.ops import expand_segments

__all__ = ["NeighborSampler"]


def _first_k_per_segment(row: Tensor, keys: Tensor, fan_out: int) -> Tensor:
    """Indices into ``row``/``keys`` of the ``fan_out`` smallest keys of each row (rows sorted)."""
    if row.numel() == 0:
        return row
    order = keys.argsort()
    order = order[row[order].argsort(stable=True)]  # by row, then by key
    sorted_row = row[order]
    is_start = torch.ones_like(sorted_row, dtype=torch.bool)
    is_start[1:] = sorted_row[1:] != sorted_row[:-1]
    start_index = torch.cummax(torch.where(is_start, torch.arange(row.numel()), 0), dim=0).values
    rank = torch.arange(row.numel()) - start_index
    return order[rank < fan_out]


class NeighborSampler:
    """Uniform fixed fan-out neighbour sampler for mini-batch message passing.

    Args:
        graph: Product-only graph with ``["product"].x`` ``(N, F)`` and one ``edge_index``
            per edge type (messages flow ``edge_index[0] -> edge_index[1]``).
        num_neighbors: Fan-out per hop, e.g. ``(10, 10)`` for a 2-layer GNN; ``-1`` keeps every
            neighbour; an empty sequence samples no neighbour (the seeds alone, for an MLP).

    Example::

        sampler = NeighborSampler(graph, [10, 10])
        sub = sampler.sample(torch.tensor([4, 17, 30]), torch.Generator().manual_seed(0))
        sub["product"].n_id[:3]  # tensor([ 4, 17, 30]); sub["product"].x == graph x[n_id]
    """

    def __init__(self, graph: HeteroData, num_neighbors: Sequence[int]) -> None:
        if any(int(k) == 0 or int(k) < -1 for k in num_neighbors):
            raise ValueError(f"num_neighbors must be positive or -1 (all) per hop; got {list(num_neighbors)}")
        if any(src != PRODUCT or dst != PRODUCT for src, _, dst in graph.edge_types):
            raise ValueError(f"the sampler expects a product-only graph; got edge types {graph.edge_types}")
        self.num_neighbors = [int(k) for k in num_neighbors]
        self.x: Tensor = graph[PRODUCT].x
        self.num_nodes = int(graph[PRODUCT].num_nodes)
        self.edge_types: list[EdgeType] = list(graph.edge_types)
        self._colptr: dict[EdgeType, Tensor] = {}
        self._sources: dict[EdgeType, Tensor] = {}
        for edge_type in self.edge_types:
            src, dst = graph[edge_type].edge_index.long()
            order = dst.argsort(stable=True)
            counts = torch.bincount(dst, minlength=self.num_nodes)
            self._colptr[edge_type] = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
            self._sources[edge_type] = src[order]

    def sample(self, seed_nodes: Tensor, generator: torch.Generator) -> HeteroData:
        """The sampled subgraph around distinct ``seed_nodes`` ``(S,)``.

        Returns:
            ``HeteroData`` with ``["product"].x`` ``(n, F)``, ``n_id`` ``(n,)`` (global ids, the
            ``S`` seeds first in the given order), ``batch_size = S`` and, per edge type, a local
            ``edge_index`` ``(2, e)`` of sampled edges (each node that was expanded has at most
            ``fan_out`` incoming edges of each type).
        """
        seed_nodes = seed_nodes.long()
        if seed_nodes.dim() != 1 or seed_nodes.unique().numel() != seed_nodes.numel():
            raise ValueError(f"seed_nodes must be a 1-D tensor of distinct node ids; got shape "
                             f"{tuple(seed_nodes.shape)} with {seed_nodes.numel() - seed_nodes.unique().numel()} repeats")
        if seed_nodes.numel() and (int(seed_nodes.min()) < 0 or int(seed_nodes.max()) >= self.num_nodes):
            raise ValueError(f"seed_nodes must lie in [0, {self.num_nodes}); got range "
                             f"[{int(seed_nodes.min())}, {int(seed_nodes.max())}]")
        node_ids = [seed_nodes]
        known = seed_nodes.sort().values
        frontier = seed_nodes
        edges: dict[EdgeType, list[Tensor]] = {edge_type: [] for edge_type in self.edge_types}
        for fan_out in self.num_neighbors:
            reached = []
            for edge_type in self.edge_types:
                colptr = self._colptr[edge_type]
                start = colptr[frontier]
                row, position = expand_segments(start, colptr[frontier + 1] - start)
                if fan_out > 0:
                    keys = torch.rand(row.numel(), generator=generator)
                    keep = _first_k_per_segment(row, keys, fan_out)
                    row, position = row[keep], position[keep]
                source = self._sources[edge_type][position]
                edges[edge_type].append(torch.stack([source, frontier[row]]))
                reached.append(source)
            candidates = torch.cat(reached).unique()
            frontier = candidates[~is_member(candidates, known)]
            node_ids.append(frontier)
            known = torch.cat([known, frontier]).sort().values
            if frontier.numel() == 0:
                break
        n_id = torch.cat(node_ids)
        sorted_ids, to_local = n_id.sort()

        def local(global_ids: Tensor) -> Tensor:
            return to_local[torch.searchsorted(sorted_ids, global_ids)]

        sub = HeteroData()
        sub[PRODUCT].x = self.x[n_id]
        sub[PRODUCT].n_id = n_id
        sub[PRODUCT].num_nodes = int(n_id.numel())
        sub[PRODUCT].batch_size = int(seed_nodes.numel())
        for edge_type, parts in edges.items():
            global_edges = torch.cat(parts, dim=1) if parts else torch.zeros(2, 0, dtype=torch.long)
            sub[edge_type].edge_index = local(global_edges.reshape(-1)).view(2, -1)
        return sub
