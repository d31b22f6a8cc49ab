"""Leakage-free graphs for link prediction: the message-passing graph and the target edges.

Message passing sees only training edges (``split == 0``) and, of those, none whose unordered
product pair is a validation or test pair of any relation kind: a test ``also_bought`` pair
that is also a training ``also_viewed`` pair would otherwise hand the answer to the GNN.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from rcml_graph.evaluation.edges import SPLIT_IDS, is_member
from rcml_graph.relations import PRODUCT, RELATION_KINDS, check_kind, edge_type, reverse_edge_type

__all__ = ["held_out_pair_keys", "message_passing_graph", "pair_keys", "target_edge_mask", "target_edges"]

TRAIN = SPLIT_IDS["train"]


def present_kinds(data: HeteroData) -> list[str]:
    """Relation kinds with a forward edge type in ``data`` (canonical order)."""
    return [kind for kind in RELATION_KINDS if edge_type(kind) in data.edge_types]


def pair_keys(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Undirected pair key ``min(u, v) * N + max(u, v)`` of each column of ``(2, E)``."""
    src, dst = edge_index[0].long(), edge_index[1].long()
    return torch.minimum(src, dst) * num_nodes + torch.maximum(src, dst)


def held_out_pair_keys(data: HeteroData) -> Tensor:
    """Sorted unique pair keys of every validation and test edge of every kind."""
    num_nodes = int(data[PRODUCT].num_nodes)
    parts = [torch.zeros(0, dtype=torch.long)]
    for kind in present_kinds(data):
        store = data[edge_type(kind)]
        held_out = store.split.long() != TRAIN
        parts.append(pair_keys(store.edge_index[:, held_out], num_nodes))
    return torch.unique(torch.cat(parts))


def target_edge_mask(data: HeteroData, kind: str, split: str) -> Tensor:
    """``(E,)`` which forward edges of ``kind`` are in ``split`` (training edges exclude held-out
    pairs); selects the columns (and per-edge attributes such as ``desc_id``) of :func:`target_edges`."""
    check_kind(kind)
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLIT_IDS)}")
    if edge_type(kind) not in data.edge_types:
        raise ValueError(f"graph has no {kind!r} edges; kinds present: {present_kinds(data)}")
    store = data[edge_type(kind)]
    mask = store.split.long() == SPLIT_IDS[split]
    if split == "train":
        mask &= ~is_member(pair_keys(store.edge_index.long(), int(data[PRODUCT].num_nodes)), held_out_pair_keys(data))
    return mask


def target_edges(data: HeteroData, kind: str, split: str) -> Tensor:
    """``(2, E)`` forward edges of ``kind`` in ``split`` (training edges exclude held-out pairs)."""
    mask = target_edge_mask(data, kind, split)
    return data[edge_type(kind)].edge_index.long()[:, mask]


def message_passing_graph(data: HeteroData, x: Tensor, kinds: Sequence[str] | None = None) -> HeteroData:
    """A product-only graph with node features ``x`` and leakage-free training edges.

    Args:
        data: The built graph (graph contract of ``rcml_graph.data``).
        x: ``(N, F)`` node features.
        kinds: Relation kinds to include (forward and reverse types); all present by default.

    Returns:
        ``HeteroData`` with ``["product"].x`` and ``edge_index`` for each included edge type.
    """
    num_nodes = int(data[PRODUCT].num_nodes)
    if x.size(0) != num_nodes:
        raise ValueError(f"x has {x.size(0)} rows; the graph has {num_nodes} products")
    kinds = present_kinds(data) if kinds is None else list(kinds)
    held_out = held_out_pair_keys(data)
    graph = HeteroData()
    graph[PRODUCT].x = x
    graph[PRODUCT].num_nodes = num_nodes
    for kind in kinds:
        edges = target_edges(data, kind, "train")
        graph[edge_type(kind)].edge_index = edges
        graph[reverse_edge_type(kind)].edge_index = edges.flip(0)
    for store in graph.edge_stores:
        # An internal invariant, not user input: no held-out pair may reach message passing.
        assert not is_member(pair_keys(store.edge_index, num_nodes), held_out).any(), "held-out pair leaked"
    return graph
