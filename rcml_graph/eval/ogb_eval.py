"""Thin wrappers over ``ogb.linkproppred.Evaluator`` for link-prediction scores.

Two protocols, as in OGB and HeaRT:

* :func:`link_mrr`: every positive edge is ranked against its own ``K`` (hard) negatives,
  ``y_pred_neg`` of shape ``(P, K)``, through the ``ogbl-citation2`` evaluator (metric ``mrr``).
  OGB ranks with ``1 + 0.5 * (#(neg > pos) + #(neg >= pos))``, which is
  :func:`rcml_graph.eval.metrics.tie_aware_rank`, and reports ``mean(1 / rank)`` and
  ``hits@{1,3,10}`` as thresholded fractional ranks (a two-way tie for first is not a hit@1).
* :func:`link_hits`: all positives share one set of random negatives, ``y_pred_neg`` of shape
  ``(M,)``, through the ``ogbl-collab`` evaluator with its cut-off ``K`` overridden per call
  (the idiom of the OGB and HeaRT example scripts). A positive counts as a hit only when it
  scores *strictly* above the ``K``-th best negative, so ties count against the model.

Scores are always handed to OGB as CPU torch tensors: OGB's numpy branch of the MRR
evaluator calls ``ndarray.sum(dim=1)`` and fails.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from ogb.linkproppred import Evaluator
from torch import Tensor

__all__ = ["link_hits", "link_mrr"]

_MRR_EVALUATOR_NAME = "ogbl-citation2"
_HITS_EVALUATOR_NAME = "ogbl-collab"


def _as_tensor(name: str, scores: Tensor | np.ndarray) -> Tensor:
    if isinstance(scores, np.ndarray):
        scores = torch.from_numpy(scores)
    if not isinstance(scores, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor or numpy.ndarray; got {type(scores).__name__}")
    return scores.detach().to(device="cpu", dtype=torch.float64)


def link_mrr(y_pred_pos: Tensor | np.ndarray, y_pred_neg: Tensor | np.ndarray) -> dict[str, float]:
    """OGB MRR and Hits@{1,3,10} of each positive against its own negatives.

    Args:
        y_pred_pos: Scores of the positive edges, shape ``(P,)``.
        y_pred_neg: Scores of each positive's negatives, shape ``(P, K)``.

    Returns:
        ``{"mrr": ..., "hits@1": ..., "hits@3": ..., "hits@10": ..., "n": P}``.
    """
    pos = _as_tensor("y_pred_pos", y_pred_pos)
    neg = _as_tensor("y_pred_neg", y_pred_neg)
    if pos.dim() != 1 or neg.dim() != 2 or neg.size(0) != pos.size(0):
        raise ValueError(
            f"y_pred_pos must have shape (P,) and y_pred_neg shape (P, K); got "
            f"{tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    if pos.numel() == 0:
        raise ValueError("y_pred_pos is empty; need at least one positive edge")
    out = Evaluator(name=_MRR_EVALUATOR_NAME).eval({"y_pred_pos": pos, "y_pred_neg": neg})
    return {
        "mrr": out["mrr_list"].mean().item(),
        "hits@1": out["hits@1_list"].mean().item(),
        "hits@3": out["hits@3_list"].mean().item(),
        "hits@10": out["hits@10_list"].mean().item(),
        "n": int(pos.numel()),
    }


def link_hits(
    y_pred_pos: Tensor | np.ndarray,
    y_pred_neg: Tensor | np.ndarray,
    ks: Sequence[int] = (10, 50, 100),
) -> dict[str, float]:
    """OGB Hits@K of every positive against one shared set of negatives.

    Args:
        y_pred_pos: Scores of the positive edges, shape ``(P,)``.
        y_pred_neg: Scores of the shared negative edges, shape ``(M,)``.
        ks: Cut-offs; OGB returns 1.0 for any ``K > M``.

    Returns:
        ``{"hits@10": ..., "hits@50": ..., "hits@100": ..., "n": P}``.
    """
    pos = _as_tensor("y_pred_pos", y_pred_pos)
    neg = _as_tensor("y_pred_neg", y_pred_neg)
    if pos.dim() != 1 or neg.dim() != 1:
        raise ValueError(
            f"y_pred_pos must have shape (P,) and y_pred_neg shape (M,) (one shared negative "
            f"set; use link_mrr for per-positive negatives); got {tuple(pos.shape)} and "
            f"{tuple(neg.shape)}"
        )
    if pos.numel() == 0:
        raise ValueError("y_pred_pos is empty; need at least one positive edge")
    bad = [k for k in ks if int(k) != k or k < 1]
    if bad:
        raise ValueError(f"ks must be positive integers; got {list(ks)}")
    evaluator = Evaluator(name=_HITS_EVALUATOR_NAME)
    out: dict[str, float] = {}
    for k in ks:
        evaluator.K = int(k)
        out[f"hits@{k}"] = float(evaluator.eval({"y_pred_pos": pos, "y_pred_neg": neg})[f"hits@{k}"])
    out["n"] = int(pos.numel())
    return out
