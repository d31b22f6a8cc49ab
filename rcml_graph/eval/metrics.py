"""Tie-aware ranking metrics and seeded negative sampling for retrieval evaluation.

Every metric here ranks one positive score against a set of negative scores. Ties are
common in practice (duplicated products give identical embeddings, quantised scores, a
collapsed model), and an evaluation that silently breaks them in the positive's favour
overstates a model. The convention throughout is *random tie-breaking*: with ``g`` negatives
scoring strictly higher than the positive and ``t`` negatives scoring exactly the same, the
positive is equally likely to sit at any position ``g + 1, ..., g + t + 1``.

* :func:`tie_aware_rank` returns the expected position ``1 + g + t / 2``. This equals OGB's
  ``0.5 * (optimistic_rank + pessimistic_rank) + 1`` (optimistic ``g``, pessimistic ``g + t``).
* :func:`expected_hit_at_k` returns ``P(position <= k) = clip((k - g) / (t + 1), 0, 1)``: of
  the ``t + 1`` equally likely positions, ``clip(k - g, 0, t + 1)`` are at most ``k``.
  Thresholding the fractional rank instead (``1 + g + t/2 <= k``, what OGB does) scores a
  two-way tie for first place as a Hit@1 of 0, not 0.5.
* :func:`expected_reciprocal_rank` returns ``E[1 / position] = (H(g + t + 1) - H(g)) / (t + 1)``
  with ``H`` the harmonic numbers, i.e. the mean of ``1/r`` over ``r = g+1, ..., g+t+1``.
  OGB reports ``1 / E[position]`` instead (:func:`mrr` over :func:`tie_aware_rank`), which is
  smaller whenever ``t > 0`` (Jensen); both agree when there are no ties.

The suite reports the exact expectations, under the names ``hit@k`` and ``mrr``
("tie-expected MRR"); OGB-compatible numbers come from :func:`hit_at_k` and :func:`mrr`
applied to :func:`tie_aware_rank`, and from :mod:`rcml_graph.eval.ogb_eval`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "count_greater_and_tied",
    "edge_keys",
    "expected_hit_at_k",
    "expected_hit_from_counts",
    "expected_reciprocal_rank",
    "expected_reciprocal_rank_from_counts",
    "hit_at_k",
    "mrr",
    "ranking_metrics",
    "sample_negatives",
    "tie_aware_rank",
]

# Largest (rows x nodes) block the exact fallback of ``sample_negatives`` materialises at once.
_FALLBACK_BLOCK_ELEMENTS = 1 << 24


def _check_scores(pos_score: Tensor, neg_scores: Tensor, neg_mask: Tensor | None) -> None:
    if pos_score.dim() != 1:
        raise ValueError(f"pos_score must have shape (Q,); got shape {tuple(pos_score.shape)}")
    if neg_scores.dim() != 2 or neg_scores.size(0) != pos_score.size(0):
        raise ValueError(
            f"neg_scores must have shape (Q, K) with Q={pos_score.size(0)}; "
            f"got shape {tuple(neg_scores.shape)}"
        )
    if neg_mask is not None and neg_mask.shape != neg_scores.shape:
        raise ValueError(
            f"neg_mask must have the shape of neg_scores {tuple(neg_scores.shape)}; "
            f"got {tuple(neg_mask.shape)}"
        )


def count_greater_and_tied(
    pos_score: Tensor, neg_scores: Tensor, neg_mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Count, per query, the negatives scoring strictly above and exactly equal to the positive.

    Args:
        pos_score: Positive scores, shape ``(Q,)``.
        neg_scores: Negative scores, shape ``(Q, K)``.
        neg_mask: Optional boolean ``(Q, K)``; ``False`` entries are not negatives (padding,
            a candidate without an image) and are not counted.

    Returns:
        ``(greater, tied)``, two int64 tensors of shape ``(Q,)``.
    """
    _check_scores(pos_score, neg_scores, neg_mask)
    pos = pos_score.unsqueeze(1)
    greater = neg_scores > pos
    tied = neg_scores == pos
    if neg_mask is not None:
        greater = greater & neg_mask
        tied = tied & neg_mask
    return greater.sum(dim=1), tied.sum(dim=1)


def tie_aware_rank(pos_score: Tensor, neg_scores: Tensor, neg_mask: Tensor | None = None) -> Tensor:
    """Expected 1-based rank of each positive under random tie-breaking.

    ``rank = 1 + #(neg > pos) + 0.5 * #(neg == pos)``, the same number as OGB's average of
    the optimistic and pessimistic rank.

    Args:
        pos_score: Positive scores, shape ``(Q,)``.
        neg_scores: Negative scores, shape ``(Q, K)``.
        neg_mask: Optional boolean ``(Q, K)`` marking which entries are real negatives.

    Returns:
        Float64 ranks of shape ``(Q,)``, in ``[1, K + 1]``.
    """
    greater, tied = count_greater_and_tied(pos_score, neg_scores, neg_mask)
    return 1.0 + greater.double() + 0.5 * tied.double()


def hit_at_k(ranks: Tensor, k: int) -> float:
    """OGB-style Hit@k: fraction of ranks ``<= k`` (a fractional rank is thresholded as is).

    Args:
        ranks: Ranks of shape ``(Q,)``, e.g. from :func:`tie_aware_rank`.
        k: Cut-off, ``k >= 1``.
    """
    if k < 1:
        raise ValueError(f"k must be a positive integer; got {k}")
    if ranks.numel() == 0:
        return float("nan")
    return (ranks <= k).double().mean().item()


def mrr(ranks: Tensor) -> float:
    """OGB-style mean reciprocal rank: ``mean(1 / rank)``.

    Applied to :func:`tie_aware_rank` this is ``1 / E[rank]`` per query, not ``E[1 / rank]``;
    see :func:`expected_reciprocal_rank` for the latter.

    Args:
        ranks: Ranks of shape ``(Q,)``, all ``>= 1``.
    """
    if ranks.numel() == 0:
        return float("nan")
    return (1.0 / ranks.double()).mean().item()


def expected_hit_from_counts(greater: Tensor, tied: Tensor, k: int) -> Tensor:
    """Per-query ``P(rank <= k) = clip((k - g) / (t + 1), 0, 1)`` from counts ``g``, ``t``.

    Args:
        greater: Number of negatives strictly above the positive, shape ``(Q,)``.
        tied: Number of negatives tied with the positive, shape ``(Q,)``.
        k: Cut-off, ``k >= 1``.

    Returns:
        Float64 probabilities of shape ``(Q,)``.
    """
    if k < 1:
        raise ValueError(f"k must be a positive integer; got {k}")
    return ((k - greater.double()) / (tied.double() + 1.0)).clamp(0.0, 1.0)


def _harmonic(n: Tensor) -> Tensor:
    """Harmonic number ``H(n) = sum_{i=1..n} 1/i`` for float64 ``n >= 0`` (``H(0) = 0``)."""
    euler_gamma = 0.57721566490153286061
    return torch.digamma(n + 1.0) + euler_gamma


def expected_reciprocal_rank_from_counts(greater: Tensor, tied: Tensor) -> Tensor:
    """Per-query ``E[1 / rank] = (H(g + t + 1) - H(g)) / (t + 1)`` from counts ``g``, ``t``.

    Args:
        greater: Number of negatives strictly above the positive, shape ``(Q,)``.
        tied: Number of negatives tied with the positive, shape ``(Q,)``.

    Returns:
        Float64 expected reciprocal ranks of shape ``(Q,)``, in ``(0, 1]``.
    """
    g = greater.double()
    t = tied.double()
    err = (_harmonic(g + t + 1.0) - _harmonic(g)) / (t + 1.0)
    # Without ties the digamma difference is only accurate to ~1e-16; return 1/rank exactly.
    return torch.where(tied == 0, 1.0 / (g + 1.0), err)


def expected_hit_at_k(
    pos_score: Tensor, neg_scores: Tensor, k: int, neg_mask: Tensor | None = None
) -> Tensor:
    """Per-query probability that the positive is in the top ``k`` under random tie-breaking.

    Args:
        pos_score: Positive scores, shape ``(Q,)``.
        neg_scores: Negative scores, shape ``(Q, K)``.
        k: Cut-off, ``k >= 1``.
        neg_mask: Optional boolean ``(Q, K)`` marking which entries are real negatives.

    Returns:
        Float64 probabilities of shape ``(Q,)``; their mean is the reported Hit@k.
    """
    greater, tied = count_greater_and_tied(pos_score, neg_scores, neg_mask)
    return expected_hit_from_counts(greater, tied, k)


def expected_reciprocal_rank(
    pos_score: Tensor, neg_scores: Tensor, neg_mask: Tensor | None = None
) -> Tensor:
    """Per-query expected reciprocal rank under random tie-breaking (the reported MRR's terms).

    Args:
        pos_score: Positive scores, shape ``(Q,)``.
        neg_scores: Negative scores, shape ``(Q, K)``.
        neg_mask: Optional boolean ``(Q, K)`` marking which entries are real negatives.

    Returns:
        Float64 values of shape ``(Q,)``.
    """
    greater, tied = count_greater_and_tied(pos_score, neg_scores, neg_mask)
    return expected_reciprocal_rank_from_counts(greater, tied)


def ranking_metrics(
    pos_score: Tensor,
    neg_scores: Tensor,
    ks: Sequence[int] = (1, 5, 10),
    neg_mask: Tensor | None = None,
) -> dict[str, float]:
    """The suite's reported numbers: tie-expected ``hit@k`` for each ``k``, ``mrr`` and ``n``.

    Args:
        pos_score: Positive scores, shape ``(Q,)``.
        neg_scores: Negative scores, shape ``(Q, K)``.
        ks: Cut-offs for Hit@k.
        neg_mask: Optional boolean ``(Q, K)`` marking which entries are real negatives.

    Returns:
        ``{"hit@1": ..., "hit@5": ..., "mrr": ..., "n": Q}``; metrics are NaN when ``Q == 0``.
    """
    greater, tied = count_greater_and_tied(pos_score, neg_scores, neg_mask)
    n = int(pos_score.size(0))
    out: dict[str, float] = {}
    for k in ks:
        out[f"hit@{k}"] = (
            expected_hit_from_counts(greater, tied, k).mean().item() if n else float("nan")
        )
    out["mrr"] = expected_reciprocal_rank_from_counts(greater, tied).mean().item() if n else float("nan")
    out["n"] = n
    return out


def edge_keys(groups: Tensor, targets: Tensor, num_nodes: int) -> Tensor:
    """Sorted, unique int64 keys ``group * num_nodes + target`` of forbidden (group, target) pairs.

    A *group* identifies what a query is conditioned on: the source product for a single
    relation, or ``relation_id * num_nodes + source`` when several relations share one call.

    Args:
        groups: Group id per forbidden pair, shape ``(E,)``, non-negative.
        targets: Forbidden target node per pair, shape ``(E,)``, in ``[0, num_nodes)``.
        num_nodes: Number of candidate nodes.

    Returns:
        Sorted unique keys, shape ``(E',)``, for :func:`sample_negatives`.
    """
    if groups.shape != targets.shape or groups.dim() != 1:
        raise ValueError(
            f"groups and targets must be 1-D of equal length; got {tuple(groups.shape)} "
            f"and {tuple(targets.shape)}"
        )
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= num_nodes):
        raise ValueError(f"targets must lie in [0, {num_nodes}); got range "
                         f"[{int(targets.min())}, {int(targets.max())}]")
    if groups.numel() and int(groups.min()) < 0:
        raise ValueError(f"groups must be non-negative; got minimum {int(groups.min())}")
    return torch.unique(groups.long() * num_nodes + targets.long())


def _is_member(keys: Tensor, sorted_keys: Tensor) -> Tensor:
    """Elementwise membership of ``keys`` (any shape) in the sorted 1-D ``sorted_keys``."""
    if sorted_keys.numel() == 0:
        return torch.zeros_like(keys, dtype=torch.bool)
    pos = torch.searchsorted(sorted_keys, keys).clamp_max(sorted_keys.numel() - 1)
    return sorted_keys[pos] == keys


def _first_occurrence(values: Tensor) -> Tensor:
    """Boolean mask of the first occurrence of each value within each row of ``values``."""
    sorted_vals, perm = torch.sort(values, dim=1, stable=True)
    first_sorted = torch.ones_like(sorted_vals, dtype=torch.bool)
    first_sorted[:, 1:] = sorted_vals[:, 1:] != sorted_vals[:, :-1]
    return torch.empty_like(first_sorted).scatter_(1, perm, first_sorted)


def sample_negatives(
    num_nodes: int,
    sources: Tensor,
    positives: Tensor,
    forbidden_keys: Tensor | None = None,
    num_negatives: int = 20,
    generator: torch.Generator | None = None,
    groups: Tensor | None = None,
    max_rounds: int = 8,
) -> Tensor:
    """Draw distinct uniform negatives per query, never a forbidden node, the positive or the source.

    Vectorised rejection sampling: each round draws ``2 * num_negatives + 8`` candidates for
    every unfinished query, drops the invalid and repeated ones and keeps the first valid
    ones in draw order. Queries still short after ``max_rounds`` rounds (a nearly exhausted
    candidate set) are finished exactly by ranking random keys over all allowed nodes, in
    row blocks of bounded size, so the function always terminates. The result depends only
    on the inputs and the generator's state: the same seed gives the same negatives.

    Args:
        num_nodes: Number of candidate nodes; negatives are drawn from ``[0, num_nodes)``.
        sources: Source node per query, shape ``(Q,)``.
        positives: Positive target per query, shape ``(Q,)``.
        forbidden_keys: Sorted unique keys from :func:`edge_keys` of every (group, target)
            pair that must not be a negative, e.g. all targets linked to the source under the
            query's relation. ``None`` forbids nothing beyond source and positive.
        num_negatives: Negatives per query ``K``.
        generator: Random generator (seed it for reproducible negatives).
        groups: Group id per query, shape ``(Q,)``, matching the groups used to build
            ``forbidden_keys``; defaults to ``sources``.
        max_rounds: Rejection rounds before the exact fallback.

    Returns:
        int64 tensor of shape ``(Q, K)`` with distinct negatives per row.

    Raises:
        ValueError: if a query has fewer than ``K`` allowed nodes (the message names it).
    """
    if num_nodes < 1:
        raise ValueError(f"num_nodes must be positive; got {num_nodes}")
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be positive; got {num_negatives}")
    if sources.dim() != 1 or sources.shape != positives.shape:
        raise ValueError(
            f"sources and positives must be 1-D of equal length; got {tuple(sources.shape)} "
            f"and {tuple(positives.shape)}"
        )
    sources = sources.long()
    positives = positives.long()
    for name, nodes in (("sources", sources), ("positives", positives)):
        if nodes.numel() and (int(nodes.min()) < 0 or int(nodes.max()) >= num_nodes):
            raise ValueError(
                f"{name} must lie in [0, {num_nodes}); got range [{int(nodes.min())}, {int(nodes.max())}]"
            )
    groups = sources if groups is None else groups.long()
    if groups.shape != sources.shape:
        raise ValueError(f"groups must have shape {tuple(sources.shape)}; got {tuple(groups.shape)}")
    device = sources.device
    if forbidden_keys is None:
        forbidden_keys = torch.empty(0, dtype=torch.long, device=device)
    forbidden_keys = forbidden_keys.long()
    num_queries = sources.numel()
    k = num_negatives

    # Feasibility: allowed = N - |forbidden(group) U {source, positive}|.
    base = groups * num_nodes
    num_forbidden = torch.searchsorted(forbidden_keys, base + num_nodes) - torch.searchsorted(
        forbidden_keys, base
    )
    source_extra = ~_is_member(base + sources, forbidden_keys)
    positive_extra = (positives != sources) & ~_is_member(base + positives, forbidden_keys)
    allowed = num_nodes - num_forbidden - source_extra.long() - positive_extra.long()
    short = (allowed < k).nonzero().flatten()
    if short.numel():
        q = int(short[0])
        raise ValueError(
            f"query {q} (source {int(sources[q])}, positive {int(positives[q])}) has only "
            f"{int(allowed[q])} allowed negative(s) but num_negatives={k} were requested "
            f"({short.numel()} such queries); lower num_negatives or drop these queries"
        )

    def is_valid(rows: Tensor, candidates: Tensor) -> Tensor:
        return (
            (candidates != sources[rows, None])
            & (candidates != positives[rows, None])
            & ~_is_member(base[rows, None] + candidates, forbidden_keys)
        )

    chosen = torch.full((num_queries, k), -1, dtype=torch.long, device=device)
    filled = torch.zeros(num_queries, dtype=torch.long, device=device)
    draws_per_round = 2 * k + 8
    slots = torch.arange(k, device=device)
    for _ in range(max_rounds):
        pending = (filled < k).nonzero().flatten()
        if pending.numel() == 0:
            break
        draws = torch.randint(
            num_nodes, (pending.numel(), draws_per_round), generator=generator, device=device
        )
        pool = torch.cat([chosen[pending], draws], dim=1)  # (P, K + M)
        valid = torch.cat([slots[None, :] < filled[pending, None], is_valid(pending, draws)], dim=1)
        # Invalid entries become -1 so they cannot shadow a later valid duplicate.
        pool = torch.where(valid, pool, torch.full_like(pool, -1))
        keep = valid & _first_occurrence(pool)
        order = keep.long().cumsum(dim=1) - 1
        keep &= order < k
        new_chosen = torch.full((pending.numel(), k), -1, dtype=torch.long, device=device)
        row_index = torch.arange(pending.numel(), device=device)[:, None].expand_as(pool)
        new_chosen[row_index[keep], order[keep]] = pool[keep]
        chosen[pending] = new_chosen
        filled[pending] = keep.sum(dim=1)

    pending = (filled < k).nonzero().flatten()
    if pending.numel():
        # Exact fallback: random priorities over all nodes, disallowed ones pushed to -1.
        block = max(1, _FALLBACK_BLOCK_ELEMENTS // num_nodes)
        nodes = torch.arange(num_nodes, device=device)
        for start in range(0, pending.numel(), block):
            rows = pending[start : start + block]
            priority = torch.rand(
                (rows.numel(), num_nodes), generator=generator, device=device
            )
            priority = torch.where(
                is_valid(rows, nodes[None, :].expand(rows.numel(), -1)),
                priority,
                torch.full_like(priority, -1.0),
            )
            chosen[rows] = priority.topk(k, dim=1).indices
    return chosen
