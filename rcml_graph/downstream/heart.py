"""Negatives for link-prediction evaluation: HeaRT-style hard negatives and shared random ones.

HeaRT (Li et al., 2023, "Evaluating Graph Neural Networks for Link Prediction: Current
Pitfalls and New Benchmarking") ranks each positive ``(u, v)`` against ``K`` negatives
``(u, w)`` that a heuristic finds plausible. Here the candidates ``w`` of a source ``u`` are
ranked by tier, with random order inside a tier:

1. in the 2-hop neighbourhood of ``u`` in the message-passing graph *and* in ``u``'s category;
2. in only one of the two;
3. anything else (the random fill when the first two tiers hold fewer than ``K``).

``u`` itself and every true link of ``u`` (any split) are never drawn.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rcml_graph.evaluation.edges import is_member

__all__ = ["heart_negatives", "random_pair_negatives", "uniform_negatives"]

#: Dense ``(chunk, N)`` candidate tables are kept below this many entries.
_MAX_DENSE = 1 << 24


def _adjacency(edge_index: Tensor, num_nodes: int) -> Tensor:
    """Binary symmetric sparse ``(N, N)`` adjacency of ``edge_index``."""
    both = torch.cat([edge_index, edge_index.flip(0)], dim=1).long()
    values = torch.ones(both.size(1))
    adjacency = torch.sparse_coo_tensor(both, values, (num_nodes, num_nodes), check_invariants=True).coalesce()
    return torch.sparse_coo_tensor(adjacency.indices(), torch.ones(adjacency.values().numel()),
                                   (num_nodes, num_nodes), check_invariants=True).coalesce()


def heart_negatives(
    sources: Tensor,
    message_edge_index: Tensor,
    true_edge_index: Tensor,
    category: Tensor,
    num_negatives: int,
    generator: torch.Generator,
) -> Tensor:
    """``K`` hard negative targets per source, from its neighbourhood and category first.

    Args:
        sources: ``(P,)`` source product of each positive.
        message_edge_index: ``(2, E)`` edges of the message-passing graph (the neighbourhood).
        true_edge_index: ``(2, T)`` every true link of the target relation, all splits.
        category: ``(N,)`` category of each product; ``-1`` for none (never matches).
        num_negatives: ``K``.
        generator: Seeds the order inside each tier.

    Returns:
        ``(P, K)`` negative targets, distinct within a row.

    Raises:
        ValueError: a source has fewer than ``K`` admissible targets.
    """
    num_nodes = int(category.numel())
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be positive; got {num_negatives}")
    sources = sources.long()
    adjacency = _adjacency(message_edge_index, num_nodes)
    true_links = _adjacency(true_edge_index, num_nodes)
    category = category.long()
    chunk = max(1, _MAX_DENSE // max(num_nodes, 1))
    nodes = torch.arange(num_nodes)
    parts = []
    for start in range(0, sources.numel(), chunk):
        src = sources[start : start + chunk]
        one_hop = adjacency.index_select(0, src).to_dense()  # (C, N)
        two_hop = (adjacency @ one_hop.T).T  # (C, N); the adjacency is symmetric
        neighbourhood = (one_hop + two_hop) > 0
        src_category = category[src][:, None]
        same_category = (src_category == category[None, :]) & (src_category >= 0)
        excluded = (true_links.index_select(0, src).to_dense() > 0) | (src[:, None] == nodes[None, :])
        available = (~excluded).sum(dim=1)
        if bool((available < num_negatives).any()):
            worst = int(available.min())
            raise ValueError(f"num_negatives={num_negatives} but a source has only {worst} admissible "
                             f"targets in a {num_nodes}-product graph; lower linkpred.num_negatives")
        score = neighbourhood.float() + same_category.float()
        score = score + torch.rand(score.shape, generator=generator)
        score = score.masked_fill(excluded, float("-inf"))
        parts.append(score.topk(num_negatives, dim=1).indices)
    if not parts:
        return torch.zeros(0, num_negatives, dtype=torch.long)
    return torch.cat(parts)


def random_pair_negatives(
    num_nodes: int,
    num_pairs: int,
    true_edge_index: Tensor,
    generator: torch.Generator,
    max_rounds: int = 100,
) -> Tensor:
    """``(2, M)`` uniformly random product pairs that are neither self-loops nor true links."""
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be positive; got {num_pairs}")
    true_edge_index = true_edge_index.long()
    true_keys = torch.unique(torch.minimum(true_edge_index[0], true_edge_index[1]) * num_nodes
                             + torch.maximum(true_edge_index[0], true_edge_index[1]))
    kept: list[Tensor] = []
    total = 0
    for _ in range(max_rounds):
        pairs = torch.randint(0, num_nodes, (2, 2 * num_pairs), generator=generator)
        keys = torch.minimum(pairs[0], pairs[1]) * num_nodes + torch.maximum(pairs[0], pairs[1])
        ok = (pairs[0] != pairs[1]) & ~is_member(keys, true_keys)
        kept.append(pairs[:, ok])
        total += int(ok.sum())
        if total >= num_pairs:
            return torch.cat(kept, dim=1)[:, :num_pairs]
    raise ValueError(f"could not draw {num_pairs} non-links among {num_nodes} products; the graph is too dense")


def uniform_negatives(
    sources: Tensor,
    num_nodes: int,
    num_negatives: int,
    true_edge_index: Tensor,
    generator: torch.Generator,
    max_rounds: int = 100,
) -> Tensor:
    """``K`` uniformly random negative targets per source (OGB ``citation2``-style MRR).

    Args:
        sources: ``(P,)`` source product of each positive.
        num_nodes: Number of products ``N``.
        num_negatives: ``K``.
        true_edge_index: ``(2, T)`` every true link of the target relation (either direction).
        generator: Seeds the draws.
        max_rounds: Rejected draws (self-loops, true links) are redrawn at most this often.

    Returns:
        ``(P, K)`` targets, never the source and never a true link of it (repeats allowed).
    """
    if num_negatives < 1:
        raise ValueError(f"num_negatives must be positive; got {num_negatives}")
    sources = sources.long()
    true_edge_index = true_edge_index.long()
    true_keys = torch.unique(torch.cat([true_edge_index[0] * num_nodes + true_edge_index[1],
                                        true_edge_index[1] * num_nodes + true_edge_index[0]]))
    source_grid = sources[:, None].expand(-1, num_negatives)
    targets = torch.randint(0, num_nodes, source_grid.shape, generator=generator)
    for _ in range(max_rounds):
        bad = (targets == source_grid) | is_member(source_grid * num_nodes + targets, true_keys)
        if not bool(bad.any()):
            return targets
        targets[bad] = torch.randint(0, num_nodes, (int(bad.sum()),), generator=generator)
    raise ValueError(f"could not draw {num_negatives} non-links per source among {num_nodes} products; "
                     "the graph is too dense for uniform negatives")
