"""Flat views of a graph's relation edges, and the link lookups every task needs.

The graph contract (``rcml_graph.data.graph``) stores one forward and one reverse edge
type per relation kind, each edge with a description id and a split. The tasks work on the
forward edges of all kinds concatenated (:class:`RelationEdges`); links are looked up in
both directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from rcml_graph.eval.metrics import edge_keys
from rcml_graph.relations import PRODUCT, RELATION_KINDS, edge_type

__all__ = [
    "SPLIT_IDS",
    "RelationEdges",
    "collect_edges",
    "descriptions_by_kind",
    "is_member",
    "product_groups",
    "select_queries",
]

#: Split codes of the graph contract.
SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class RelationEdges:
    """The forward relation edges of every kind, concatenated.

    Attributes:
        source: ``(E,)`` source product.
        target: ``(E,)`` target product.
        desc_id: ``(E,)`` index into ``relation_text``.
        kind_id: ``(E,)`` index into :data:`~rcml_graph.relations.RELATION_KINDS`.
        split: ``(E,)`` 0 train, 1 val, 2 test.
        num_nodes: Number of products ``N``.
        num_descriptions: Size ``R`` of the description table.
    """

    source: Tensor
    target: Tensor
    desc_id: Tensor
    kind_id: Tensor
    split: Tensor
    num_nodes: int
    num_descriptions: int

    @property
    def num_edges(self) -> int:
        return int(self.source.numel())

    def link_keys(self, mask: Tensor | None = None) -> Tensor:
        """Sorted keys of ``(desc * N + u, v)`` links in both directions (optionally a subset)."""
        src, dst, desc = self.source, self.target, self.desc_id
        if mask is not None:
            src, dst, desc = src[mask], dst[mask], desc[mask]
        groups = torch.cat([desc * self.num_nodes + src, desc * self.num_nodes + dst])
        return edge_keys(groups, torch.cat([dst, src]), self.num_nodes)

    def pair_keys(self, mask: Tensor | None = None) -> Tensor:
        """Sorted unique undirected keys ``min(u, v) * N + max(u, v)`` of linked pairs."""
        src, dst = self.source, self.target
        if mask is not None:
            src, dst = src[mask], dst[mask]
        return torch.unique(torch.minimum(src, dst) * self.num_nodes + torch.maximum(src, dst))

    def undirected_pair_key(self, index: Tensor) -> Tensor:
        """The undirected pair key of the edges at ``index``."""
        src, dst = self.source[index], self.target[index]
        return torch.minimum(src, dst) * self.num_nodes + torch.maximum(src, dst)


def collect_edges(data: HeteroData) -> RelationEdges:
    """Concatenate the forward relation edges of ``data`` (kinds in canonical order).

    Raises:
        ValueError: if the graph has no product nodes, no relation edges, or no
            ``relation_text`` table.
    """
    if PRODUCT not in data.node_types:
        raise ValueError(f"graph has no {PRODUCT!r} nodes; node types: {data.node_types}")
    relation_text = getattr(data, "relation_text", None)
    if relation_text is None:
        raise ValueError("graph has no relation_text table; rebuild it with scripts/build_graph.py")
    parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
    kinds: list[Tensor] = []
    for kind_id, kind in enumerate(RELATION_KINDS):
        etype = edge_type(kind)
        if etype not in data.edge_types:
            continue
        store = data[etype]
        edge_index = store.edge_index.long()
        parts.append((edge_index[0], edge_index[1], store.desc_id.long(), store.split.long()))
        kinds.append(torch.full((edge_index.size(1),), kind_id, dtype=torch.long))
    if not parts:
        raise ValueError(
            f"graph has no relation edges of any kind ({', '.join(RELATION_KINDS)}); nothing to evaluate"
        )
    source, target, desc_id, split = (torch.cat(column) for column in zip(*parts))
    return RelationEdges(
        source=source,
        target=target,
        desc_id=desc_id,
        kind_id=torch.cat(kinds),
        split=split,
        num_nodes=int(data[PRODUCT].num_nodes),
        num_descriptions=len(relation_text),
    )


def is_member(keys: Tensor, sorted_keys: Tensor) -> Tensor:
    """Elementwise membership of ``keys`` (any shape) in the sorted 1-D ``sorted_keys``."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, keys).clamp_max(sorted_keys.numel() - 1)
    return sorted_keys[pos] == keys


def select_queries(
    edges: RelationEdges,
    split: str,
    max_queries: int | None,
    generator: torch.Generator,
    mask: Tensor | None = None,
) -> Tensor:
    """Indices of the edges of ``split`` (and ``mask``), a seeded subsample if over ``max_queries``.

    Returns the indices in ascending order.
    """
    if split not in SPLIT_IDS:
        raise ValueError(f"unknown split {split!r}; accepted: {', '.join(SPLIT_IDS)}")
    if max_queries is not None and max_queries < 1:
        raise ValueError(f"max_queries must be positive or None; got {max_queries}")
    selected = edges.split == SPLIT_IDS[split]
    if mask is not None:
        selected &= mask
    index = selected.nonzero().flatten()
    if max_queries is not None and index.numel() > max_queries:
        pick = torch.randperm(index.numel(), generator=generator)[:max_queries]
        index = index[pick].sort().values
    return index


def descriptions_by_kind(edges: RelationEdges) -> Tensor:
    """Padded table ``(num_kinds, M)`` of the description ids used by each kind (``-1`` pads)."""
    num_kinds = len(RELATION_KINDS)
    pairs = torch.unique(edges.kind_id * edges.num_descriptions + edges.desc_id)
    kind, desc = pairs // edges.num_descriptions, pairs % edges.num_descriptions
    counts = torch.bincount(kind, minlength=num_kinds)
    width = max(int(counts.max()), 1)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(pairs.numel()) - starts[kind]
    table = torch.full((num_kinds, width), -1, dtype=torch.long)
    table[kind, slot] = desc
    return table


def product_groups(data: HeteroData) -> Tensor:
    """Each product's community (``product.community``), else its leaf category; ``-1`` if none."""
    store = data[PRODUCT]
    for name in ("community", "category_id"):
        value = getattr(store, name, None)
        if isinstance(value, Tensor) and value.numel() == int(store.num_nodes):
            return value.long()
    return torch.full((int(store.num_nodes),), -1, dtype=torch.long)
