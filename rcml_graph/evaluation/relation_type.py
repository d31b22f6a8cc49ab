"""Relation-type prediction: given ``(source, target)``, rank the candidate descriptions.

Candidates of a test edge are the descriptions of its relation kind that occur in the graph.
An encoder scores description ``d`` by the ``avg``-mode similarity of ``encode(s, d)`` and
``encode(t, d)``; the baseline is a logistic regression on the concatenated frozen global
features of ``s`` and ``t``, trained on training edges. Both report tie-aware top-1/top-3.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from rcml_graph.eval.metrics import count_greater_and_tied, expected_hit_from_counts
from rcml_graph.evaluation.edges import RelationEdges, descriptions_by_kind
from rcml_graph.evaluation.encoders import (
    RelationEncoder,
    encode_pairs,
    encode_targets,
    pair_scores,
)

__all__ = ["candidate_descriptions", "rank_true_description", "relation_type_encoder", "relation_type_probe"]


def candidate_descriptions(edges: RelationEdges, query_index: Tensor) -> tuple[Tensor, Tensor]:
    """``(candidates, mask)``, both ``(Q, M)``: the descriptions of each query's kind."""
    table = descriptions_by_kind(edges)
    candidates = table[edges.kind_id[query_index]]
    return candidates.clamp_min(0), candidates >= 0


def rank_true_description(
    scores: Tensor, candidates: Tensor, mask: Tensor, true_desc: Tensor, ks: Sequence[int] = (1, 3)
) -> dict[str, float]:
    """Tie-aware top-k accuracy of the true description among the masked candidates.

    Args:
        scores: ``(Q, M)`` score of each candidate.
        candidates: ``(Q, M)`` description id of each candidate.
        mask: ``(Q, M)`` bool, real candidates.
        true_desc: ``(Q,)`` the edge's description (one of its candidates).
    """
    is_true = (candidates == true_desc[:, None]) & mask
    if not bool(is_true.any(dim=1).all()):
        raise ValueError("a query's true description is not among its candidates")
    pos = (scores * is_true).sum(dim=1) / is_true.sum(dim=1)
    greater, tied = count_greater_and_tied(pos, scores, mask & ~is_true)
    n = int(scores.size(0))
    out = {f"top{k}": expected_hit_from_counts(greater, tied, k).mean().item() for k in ks}
    out["num_candidates"] = mask.sum(dim=1).double().mean().item()
    out["n"] = n
    return out


def relation_type_encoder(
    encoder: RelationEncoder,
    edges: RelationEdges,
    query_index: Tensor,
    ks: Sequence[int] = (1, 3),
    batch_size: int = 1024,
) -> dict[str, float]:
    """Rank descriptions by the encoder's conditioned similarity of source and target."""
    candidates, mask = candidate_descriptions(edges, query_index)
    sources = edges.source[query_index][:, None].expand_as(candidates)
    targets = edges.target[query_index][:, None].expand_as(candidates)
    # Padding slots reuse a real candidate so that no extra pair is encoded.
    candidates = torch.where(mask, candidates, candidates[:, :1])
    source_views = encode_pairs(encoder, sources, candidates, edges.num_descriptions, batch_size,
                                as_query=True)
    target_views = encode_targets(encoder, targets, candidates, edges.num_descriptions, batch_size)
    scores = pair_scores(source_views, target_views)
    return rank_true_description(scores, candidates, mask, edges.desc_id[query_index], ks)


def relation_type_probe(
    features: Tensor,
    edges: RelationEdges,
    train_index: Tensor,
    test_index: Tensor,
    seed: int,
    ks: Sequence[int] = (1, 3),
    max_iter: int = 1000,
) -> dict[str, float]:
    """Baseline: logistic regression on ``[f_s, f_t]`` predicting the description id.

    Args:
        features: ``(N, D)`` frozen global product features.
        edges: All relation edges.
        train_index: Edge indices to fit on.
        test_index: Edge indices to evaluate.
        seed: Seed of the solver.
    """
    if features.dim() != 2 or features.size(0) != edges.num_nodes:
        raise ValueError(f"features must have shape ({edges.num_nodes}, D); got {tuple(features.shape)}")
    def pairs(index: Tensor) -> np.ndarray:
        return torch.cat([features[edges.source[index]], features[edges.target[index]]], dim=1).double().numpy()

    candidates, mask = candidate_descriptions(edges, test_index)
    train_labels = edges.desc_id[train_index].numpy()
    scores = torch.full(candidates.shape, -1.0, dtype=torch.float64)
    if np.unique(train_labels).size >= 2:
        probe = LogisticRegression(max_iter=max_iter, random_state=seed)
        probe.fit(pairs(train_index), train_labels)
        proba = torch.from_numpy(probe.predict_proba(pairs(test_index)))
        # Descriptions the probe never saw keep score -1 (below every probability).
        column = torch.full((edges.num_descriptions,), -1, dtype=torch.long)
        column[torch.from_numpy(probe.classes_).long()] = torch.arange(len(probe.classes_))
        cand_column = column[candidates]
        seen = cand_column >= 0
        scores[seen] = proba.gather(1, cand_column.clamp_min(0))[seen]
    return rank_true_description(scores, candidates, mask, edges.desc_id[test_index], ks)
