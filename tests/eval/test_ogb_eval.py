"""The OGB Evaluator wrapper against hand-computed MRR / Hits@K, ties included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rcml_graph.eval.metrics import hit_at_k, mrr, tie_aware_rank
from rcml_graph.eval.ogb_eval import link_hits, link_mrr

POS = torch.tensor([0.5, 0.5, 0.9, 0.1])
NEG = torch.tensor(
    [
        [0.7, 0.5, 0.5, 0.2],  # rank 1 + 1 + 2/2 = 3
        [0.5, 0.1, 0.0, 0.0],  # rank 1 + 0 + 1/2 = 1.5
        [0.1, 0.2, 0.3, 0.4],  # rank 1
        [0.2, 0.3, 0.4, 0.5],  # rank 5
    ]
)


def test_link_mrr_hand_computed_with_ties() -> None:
    out = link_mrr(POS, NEG)
    assert out["mrr"] == pytest.approx((1 / 3 + 1 / 1.5 + 1 + 1 / 5) / 4)  # 0.55
    assert out["mrr"] == pytest.approx(0.55)
    assert out["hits@1"] == pytest.approx(0.25)  # rank 1.5 is not <= 1
    assert out["hits@3"] == pytest.approx(0.75)
    assert out["hits@10"] == pytest.approx(1.0)
    assert out["n"] == 4


def test_link_mrr_agrees_with_metrics_module() -> None:
    generator = torch.Generator().manual_seed(0)
    pos = torch.randint(0, 5, (100,), generator=generator).float()
    neg = torch.randint(0, 5, (100, 30), generator=generator).float()
    out = link_mrr(pos, neg)
    ranks = tie_aware_rank(pos, neg)
    assert out["mrr"] == pytest.approx(mrr(ranks))
    assert out["hits@3"] == pytest.approx(hit_at_k(ranks, 3))


def test_link_mrr_accepts_numpy_by_converting_to_torch() -> None:
    # OGB's own numpy path fails (ndarray.sum(dim=1)); the wrapper must not reach it.
    out = link_mrr(POS.numpy(), NEG.numpy())
    assert out["mrr"] == pytest.approx(0.55)


def test_link_hits_shared_negatives_hand_computed() -> None:
    pos = torch.tensor([5.0, 3.0, 2.0, 1.0])
    neg = torch.tensor([4.0, 3.0, 2.0, 0.0, -1.0])
    out = link_hits(pos, neg, ks=(1, 2, 3, 10))
    assert out["hits@1"] == pytest.approx(0.25)  # above 4: only 5
    assert out["hits@2"] == pytest.approx(0.25)  # above 3: only 5 (the tied 3 does not count)
    assert out["hits@3"] == pytest.approx(0.5)  # above 2: 5 and 3
    assert out["hits@10"] == pytest.approx(1.0)  # OGB's convention when K > #negatives
    assert out["n"] == 4
    assert link_hits(pos.numpy(), np.asarray(neg), ks=(3,))["hits@3"] == pytest.approx(0.5)


def test_wrappers_reject_bad_shapes() -> None:
    with pytest.raises(ValueError, match=r"shape \(P, K\)"):
        link_mrr(POS, NEG[0])
    with pytest.raises(ValueError, match="use link_mrr"):
        link_hits(POS, NEG)
    with pytest.raises(ValueError, match="ks must be positive integers"):
        link_hits(POS, NEG[0], ks=(0,))
