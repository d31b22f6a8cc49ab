"""Fixed scores on the link-prediction evaluation sets: the pair scores of the evaluation pairs
(computed once per set for :func:`~rcml_graph.downstream.trainer.train_and_evaluate`) and the
metrics of a score with nothing trained (an embedding dot product, a pair score alone)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rcml_graph.downstream.pair_scores import PairScore
from rcml_graph.eval.ogb_eval import link_hits, link_mrr

if TYPE_CHECKING:
    from rcml_graph.downstream.trainer import EvaluationSet

__all__ = ["embedding_score_metrics", "evaluation_pair_scores", "pair_score_metrics", "source_negative_pairs"]


def source_negative_pairs(sources: Tensor, negatives: Tensor) -> Tensor:
    """``(2, P * K)`` pairs of each positive's source ``(P,)`` with its negatives ``(P, K)``."""
    return torch.stack([sources[:, None].expand_as(negatives).reshape(-1), negatives.reshape(-1)])


@torch.no_grad()
def embedding_score_metrics(source: Tensor, target: Tensor, evaluation: EvaluationSet,
                            hits_ks: Sequence[int] = (10, 50, 100)) -> dict[str, dict[str, float]]:
    """The metrics of :func:`train_and_evaluate` for a model with nothing trained: ``(u, v)``
    scored ``source[u] . target[v]`` (e.g. an RCML head's own score ``q(u, r) . z(v, r)`` from an
    export's ``query/kind/<r>`` and ``kind/<r>``, or a cosine of one view with itself).

    Shapes: ``source`` and ``target`` ``(N, D)``.
    """
    if source.shape != target.shape:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} must have the same shape")
    source, target = source.float(), target.float()
    sources = evaluation.positives[0]
    pos = (source[sources] * target[evaluation.positives[1]]).sum(-1)
    metrics = {name: link_mrr(pos, (source[sources][:, None, :] * target[negatives]).sum(-1))
               for name, negatives in (("heart", evaluation.hard_negatives), ("uniform", evaluation.uniform_negatives))}
    shared = (source[evaluation.random_negatives[0]] * target[evaluation.random_negatives[1]]).sum(-1)
    metrics["random"] = link_hits(pos, shared, hits_ks)
    return metrics


@torch.no_grad()
def evaluation_pair_scores(pair_score: PairScore, evaluation: EvaluationSet,
                           with_shared: bool = True) -> dict[str, Tensor]:
    """``pair_score`` of an evaluation set's pairs: ``pos`` ``(P,)``, ``heart`` ``(P, K)`` and
    ``uniform`` ``(P, K)`` (each positive's source against its negatives), ``shared`` ``(S,)``
    (the random non-links; left out unless ``with_shared``)."""
    positives = evaluation.positives
    scores = {"pos": pair_score(positives)}
    for name, negatives in (("heart", evaluation.hard_negatives), ("uniform", evaluation.uniform_negatives)):
        scores[name] = pair_score(source_negative_pairs(positives[0], negatives)).view_as(negatives)
    if with_shared:
        scores["shared"] = pair_score(evaluation.random_negatives)
    return scores


@torch.no_grad()
def pair_score_metrics(pair_score: PairScore, evaluation: EvaluationSet,
                       hits_ks: Sequence[int] = (10, 50, 100)) -> dict[str, dict[str, float]]:
    """The metrics of :func:`train_and_evaluate` for a fixed pair score alone, nothing trained
    (e.g. ``rcml``'s ``q(u, d_u) . z(v, d_u)``, which no per-product export can express)."""
    scores = evaluation_pair_scores(pair_score, evaluation)
    metrics = {name: link_mrr(scores["pos"], scores[name]) for name in ("heart", "uniform")}
    metrics["random"] = link_hits(scores["pos"], scores["shared"], hits_ks)
    return metrics
