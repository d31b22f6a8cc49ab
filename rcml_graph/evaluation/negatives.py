"""Negative candidates of the two retrieval protocols.

* ``random`` (the paper's): uniform products never linked to the source under the query's
  description in any split, via :func:`rcml_graph.eval.metrics.sample_negatives`.
* ``sensitive``: *hard* negatives first, products linked to the source under a different
  description (any kind, any split), then products of the source's own community (or leaf
  category) not linked to it under the query's description; filled with random negatives
  when a query has too few. With random negatives the relation barely matters; here a model
  that ignores the relation ranks the source's other neighbours as high as the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from rcml_graph.eval.metrics import sample_negatives
from rcml_graph.evaluation.edges import RelationEdges, is_member
from rcml_graph.sampling.ops import expand_segments

__all__ = ["NegativeSet", "random_negatives", "sensitive_negatives"]


@dataclass(frozen=True)
class NegativeSet:
    """Negatives per query and which of them are hard.

    Attributes:
        negatives: ``(Q, K)`` distinct product ids per row.
        hard: ``(Q, K)`` bool, a hard negative (linked under another description, or same
            community); all ``False`` for the random protocol.
        linked_other: ``(Q, K)`` bool, the subset of ``hard`` linked to the source under
            another description.
    """

    negatives: Tensor
    hard: Tensor
    linked_other: Tensor


def _query_groups(edges: RelationEdges, sources: Tensor, desc_ids: Tensor) -> Tensor:
    return desc_ids.long() * edges.num_nodes + sources.long()


def random_negatives(
    edges: RelationEdges,
    sources: Tensor,
    positives: Tensor,
    desc_ids: Tensor,
    num_negatives: int,
    generator: torch.Generator,
) -> NegativeSet:
    """Uniform negatives, never linked to the source under the query's description.

    Args:
        edges: All relation edges of the graph (every split is forbidden).
        sources: ``(Q,)`` source products.
        positives: ``(Q,)`` target products.
        desc_ids: ``(Q,)`` query descriptions.
        num_negatives: ``K``.
        generator: Seeded generator.
    """
    negatives = sample_negatives(
        edges.num_nodes,
        sources,
        positives,
        forbidden_keys=edges.link_keys(),
        num_negatives=num_negatives,
        generator=generator,
        groups=_query_groups(edges, sources, desc_ids),
    )
    none = torch.zeros_like(negatives, dtype=torch.bool)
    return NegativeSet(negatives, none, none.clone())


def _first_occurrence(values: Tensor) -> Tensor:
    """Boolean mask of the first occurrence of each value within each row of ``values``."""
    sorted_vals, perm = torch.sort(values, dim=1, stable=True)
    first_sorted = torch.ones_like(sorted_vals, dtype=torch.bool)
    first_sorted[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    return torch.empty_like(first_sorted).scatter_(1, perm, first_sorted)


def _csr(keys: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """``(order, ptr)``: ``order`` sorts ``keys``; ``ptr[k]:ptr[k+1]`` are the entries with key ``k``."""
    order = torch.argsort(keys, stable=True)
    ptr = torch.zeros(size + 1, dtype=torch.long)
    ptr[1:] = torch.cumsum(torch.bincount(keys, minlength=size), 0)
    return order, ptr


def sensitive_negatives(
    edges: RelationEdges,
    sources: Tensor,
    positives: Tensor,
    desc_ids: Tensor,
    groups: Tensor,
    num_negatives: int,
    generator: torch.Generator,
    group_draws: int | None = None,
) -> NegativeSet:
    """Hard negatives: linked under another description, then same group; random fill.

    Every negative is distinct per row, never the source or the positive and never linked to
    the source under the query's description (any split). Among the hard candidates a query
    takes those linked under another description first, in random order, then same-group
    products, in random order.

    Args:
        edges: All relation edges of the graph.
        sources: ``(Q,)`` source products.
        positives: ``(Q,)`` target products.
        desc_ids: ``(Q,)`` query descriptions.
        groups: ``(N,)`` community (or category) per product, ``-1`` for none.
        num_negatives: ``K``.
        generator: Seeded generator.
        group_draws: Same-group products drawn per query (with replacement, duplicates
            dropped) when the group is larger; a smaller group is taken whole. Default ``2 * K``.
    """
    num_nodes, k = edges.num_nodes, num_negatives
    if groups.shape != (num_nodes,):
        raise ValueError(f"groups must have shape ({num_nodes},); got {tuple(groups.shape)}")
    sources, positives, desc_ids = sources.long(), positives.long(), desc_ids.long()
    num_queries = sources.numel()
    forbidden = edges.link_keys()
    query_group = _query_groups(edges, sources, desc_ids)

    # Tier 0: neighbours of the source under any description, in both directions.
    nbr_src = torch.cat([edges.source, edges.target])
    nbr_dst = torch.cat([edges.target, edges.source])
    nbr_desc = torch.cat([edges.desc_id, edges.desc_id])
    order, ptr = _csr(nbr_src, num_nodes)
    rows0, pos0 = expand_segments(ptr[sources], ptr[sources + 1] - ptr[sources])
    cand0 = nbr_dst[order[pos0]]
    keep0 = nbr_desc[order[pos0]] != desc_ids[rows0]

    # Tier 1: random members of the source's group.
    draws = 2 * k if group_draws is None else group_draws
    groups = groups.long()
    has_group = groups >= 0
    num_groups = int(groups.max()) + 1 if bool(has_group.any()) else 0
    member_order, member_ptr = _csr(groups[has_group], max(num_groups, 1))
    members = has_group.nonzero().flatten()[member_order]
    source_group = groups[sources]
    valid_query = source_group >= 0
    group_index = source_group.clamp_min(0)
    sizes = torch.where(valid_query, member_ptr[group_index + 1] - member_ptr[group_index], 0)
    # A group no larger than ``draws`` is taken whole; a larger one is sampled with replacement.
    whole = sizes <= draws
    rows_whole, pos_whole = expand_segments(member_ptr[group_index], torch.where(whole, sizes, 0))
    rows_drawn = torch.repeat_interleave(torch.arange(num_queries), torch.where(whole, 0, draws))
    pick = (torch.rand(rows_drawn.numel(), generator=generator) * sizes[rows_drawn]).long()
    rows1 = torch.cat([rows_whole, rows_drawn])
    cand1 = members[torch.cat([pos_whole, member_ptr[group_index[rows_drawn]] + pick])]

    rows = torch.cat([rows0[keep0], rows1])
    cand = torch.cat([cand0[keep0], cand1])
    tier = torch.cat([torch.zeros(int(keep0.sum()), dtype=torch.long), torch.ones_like(rows1)])
    valid = (
        (cand != sources[rows])
        & (cand != positives[rows])
        & ~is_member(query_group[rows] * num_nodes + cand, forbidden)
    )
    rows, cand, tier = rows[valid], cand[valid], tier[valid]
    priority = tier.double() + torch.rand(rows.numel(), generator=generator, dtype=torch.float64)
    # Deduplicate (query, candidate), keeping the best priority, then rank within each query.
    by_priority = torch.argsort(priority)
    rows, cand, tier, priority = rows[by_priority], cand[by_priority], tier[by_priority], priority[by_priority]
    pair = rows * num_nodes + cand
    by_pair = torch.argsort(pair, stable=True)
    first = torch.ones(pair.numel(), dtype=torch.bool)
    first[1:] = pair[by_pair][1:] != pair[by_pair][:-1]
    unique = by_pair[first].sort().values  # back to priority order
    rows, cand, tier = rows[unique], cand[unique], tier[unique]
    by_row = torch.argsort(rows, stable=True)
    rows, cand, tier = rows[by_row], cand[by_row], tier[by_row]
    counts = torch.bincount(rows, minlength=num_queries)
    rank = torch.arange(rows.numel()) - (torch.cumsum(counts, 0) - counts)[rows]
    take = rank < k
    hard = torch.full((num_queries, k), -1, dtype=torch.long)
    hard_tier = torch.full((num_queries, k), -1, dtype=torch.long)
    hard[rows[take], rank[take]] = cand[take]
    hard_tier[rows[take], rank[take]] = tier[take]
    num_hard = counts.clamp_max(k)

    # Random fill: K valid random negatives always exist (sample_negatives checks), and
    # hard ∪ random holds at least K distinct products.
    fill = random_negatives(edges, sources, positives, desc_ids, k, generator).negatives
    pool = torch.cat([hard, fill], dim=1)
    usable = (pool >= 0) & _first_occurrence(pool)
    slot = usable.long().cumsum(dim=1) - 1
    usable &= slot < k
    negatives = torch.full((num_queries, k), -1, dtype=torch.long)
    row_index = torch.arange(num_queries)[:, None].expand_as(pool)
    negatives[row_index[usable], slot[usable]] = pool[usable]
    assert bool((negatives >= 0).all()), "random fill left a slot empty"
    slots = torch.arange(k)[None, :]
    is_hard = slots < num_hard[:, None]
    return NegativeSet(negatives, is_hard, is_hard & (hard_tier == 0))
