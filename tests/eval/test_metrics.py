"""Ranking metrics against hand-computed rankings with ties, and negative sampling invariants."""

from __future__ import annotations


import pytest
import torch

from rcml_graph.eval.metrics import (
    count_greater_and_tied,
    edge_keys,
    expected_hit_at_k,
    expected_reciprocal_rank,
    hit_at_k,
    mrr,
    ranking_metrics,
    sample_negatives,
    tie_aware_rank,
)

# Four queries, four negatives each. Per query: g = #(neg > pos), t = #(neg == pos).
POS = torch.tensor([0.5, 0.5, 0.9, 0.1])
NEG = torch.tensor(
    [
        [0.7, 0.5, 0.5, 0.2],  # g=1, t=2: positions 2, 3, 4 equally likely
        [0.5, 0.1, 0.0, 0.0],  # g=0, t=1: positions 1, 2
        [0.1, 0.2, 0.3, 0.4],  # g=0, t=0: position 1
        [0.2, 0.3, 0.4, 0.5],  # g=4, t=0: position 5
    ]
)


def test_counts_and_tie_aware_rank() -> None:
    greater, tied = count_greater_and_tied(POS, NEG)
    assert greater.tolist() == [1, 0, 0, 4]
    assert tied.tolist() == [2, 1, 0, 0]
    assert tie_aware_rank(POS, NEG).tolist() == [3.0, 1.5, 1.0, 5.0]


def test_tie_aware_rank_equals_ogb_optimistic_pessimistic_average() -> None:
    optimistic = (NEG > POS[:, None]).sum(1)
    pessimistic = (NEG >= POS[:, None]).sum(1)
    expected = 0.5 * (optimistic + pessimistic).double() + 1
    assert torch.equal(tie_aware_rank(POS, NEG), expected)


def test_expected_hit_at_k_hand_computed() -> None:
    # q0: (k - 1) / 3 clipped; q1: k / 2 clipped; q2: 1; q3: 1 iff k >= 5.
    expected = {
        1: [0.0, 0.5, 1.0, 0.0],
        2: [1 / 3, 1.0, 1.0, 0.0],
        3: [2 / 3, 1.0, 1.0, 0.0],
        4: [1.0, 1.0, 1.0, 0.0],
        5: [1.0, 1.0, 1.0, 1.0],
    }
    for k, values in expected.items():
        assert torch.allclose(expected_hit_at_k(POS, NEG, k), torch.tensor(values, dtype=torch.float64))


def test_expected_reciprocal_rank_hand_computed() -> None:
    # q0: mean(1/2, 1/3, 1/4) = 13/36; q1: mean(1, 1/2) = 3/4; q2: 1; q3: 1/5.
    expected = torch.tensor([13 / 36, 3 / 4, 1.0, 1 / 5], dtype=torch.float64)
    assert torch.allclose(expected_reciprocal_rank(POS, NEG), expected, atol=1e-12)


def test_ogb_style_metrics_threshold_the_fractional_rank() -> None:
    ranks = tie_aware_rank(POS, NEG)  # [3, 1.5, 1, 5]
    assert hit_at_k(ranks, 1) == pytest.approx(0.25)  # the 2-way tie for first is not a hit
    assert hit_at_k(ranks, 3) == pytest.approx(0.75)
    assert mrr(ranks) == pytest.approx((1 / 3 + 2 / 3 + 1 + 1 / 5) / 4)
    # The reported tie-expected MRR is larger whenever ties exist (Jensen).
    assert ranking_metrics(POS, NEG)["mrr"] > mrr(ranks)


def test_ranking_metrics_summary() -> None:
    out = ranking_metrics(POS, NEG, ks=(1, 2, 5))
    assert out["hit@1"] == pytest.approx((0 + 0.5 + 1 + 0) / 4)
    assert out["hit@2"] == pytest.approx((1 / 3 + 1 + 1 + 0) / 4)
    assert out["hit@5"] == pytest.approx(1.0)
    assert out["mrr"] == pytest.approx((13 / 36 + 3 / 4 + 1 + 1 / 5) / 4)
    assert out["n"] == 4


def test_neg_mask_removes_negatives() -> None:
    mask = torch.ones_like(NEG, dtype=torch.bool)
    mask[0, 0] = False  # drop q0's 0.7: now g=0, t=2
    assert tie_aware_rank(POS, NEG, mask)[0].item() == 2.0
    assert expected_hit_at_k(POS, NEG, 1, mask)[0].item() == pytest.approx(1 / 3)
    assert expected_reciprocal_rank(POS, NEG, mask)[0].item() == pytest.approx(11 / 18)


def test_expectations_match_enumerated_tie_orders() -> None:
    generator = torch.Generator().manual_seed(3)
    pos = torch.randint(0, 4, (30,), generator=generator).float()
    neg = torch.randint(0, 4, (30, 12), generator=generator).float()
    err = expected_reciprocal_rank(pos, neg)
    hit3 = expected_hit_at_k(pos, neg, 3)
    for q in range(30):
        g = int((neg[q] > pos[q]).sum())
        t = int((neg[q] == pos[q]).sum())
        positions = range(g + 1, g + t + 2)
        assert err[q].item() == pytest.approx(sum(1 / r for r in positions) / (t + 1), abs=1e-12)
        assert hit3[q].item() == pytest.approx(sum(r <= 3 for r in positions) / (t + 1), abs=1e-12)


def test_shape_errors_name_the_shape() -> None:
    with pytest.raises(ValueError, match=r"\(Q, K\)"):
        tie_aware_rank(POS, NEG[:3])
    with pytest.raises(ValueError, match="k must be a positive integer; got 0"):
        expected_hit_at_k(POS, NEG, 0)


def _random_forbidden(num_nodes: int, num_sources: int, per_source: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    groups = torch.arange(num_sources).repeat_interleave(per_source)
    targets = torch.randint(num_nodes, (groups.numel(),), generator=generator)
    return groups, targets


def test_sample_negatives_never_returns_forbidden_positive_or_source() -> None:
    num_nodes, num_queries, k = 60, 300, 20
    groups, targets = _random_forbidden(num_nodes, num_nodes, 25, seed=0)
    keys = edge_keys(groups, targets, num_nodes)
    generator = torch.Generator().manual_seed(1)
    sources = torch.randint(num_nodes, (num_queries,), generator=generator)
    positives = torch.randint(num_nodes, (num_queries,), generator=generator)
    negatives = sample_negatives(
        num_nodes, sources, positives, keys, num_negatives=k, generator=torch.Generator().manual_seed(7)
    )
    assert negatives.shape == (num_queries, k)
    assert negatives.min() >= 0 and negatives.max() < num_nodes
    assert not (negatives == positives[:, None]).any()
    assert not (negatives == sources[:, None]).any()
    forbidden = set(zip(groups.tolist(), targets.tolist()))
    assert all((s, n) not in forbidden for s, row in zip(sources.tolist(), negatives.tolist()) for n in row)
    assert all(len(set(row)) == k for row in negatives.tolist())  # distinct per query


def test_sample_negatives_same_seed_same_negatives() -> None:
    sources = torch.arange(40) % 10
    positives = (torch.arange(40) + 3) % 50
    def draw(seed: int) -> torch.Tensor:
        return sample_negatives(50, sources, positives, num_negatives=20,
                                generator=torch.Generator().manual_seed(seed))
    assert torch.equal(draw(0), draw(0))
    assert not torch.equal(draw(0), draw(1))


def test_sample_negatives_groups_separate_relations() -> None:
    # Same source 0 under two relations (groups 0 and 1): only group 1 forbids nodes 2..8.
    num_nodes = 10
    keys = edge_keys(torch.ones(7, dtype=torch.long), torch.arange(2, 9), num_nodes)
    sources = torch.tensor([0, 0])
    positives = torch.tensor([1, 1])
    negatives = sample_negatives(num_nodes, sources, positives, keys, num_negatives=1,
                                 groups=torch.tensor([0, 1]), generator=torch.Generator().manual_seed(0))
    assert negatives[1].item() == 9  # the only node left for group 1
    assert negatives[0].item() not in (0, 1)


def test_sample_negatives_exact_fallback_when_nearly_exhausted() -> None:
    # Source 0, positive 1, forbidden 2..24 of 30 nodes: exactly 25..29 remain.
    num_nodes = 30
    keys = edge_keys(torch.zeros(23, dtype=torch.long), torch.arange(2, 25), num_nodes)
    for rounds in (0, 8):  # 0 forces the exact fallback for every query
        negatives = sample_negatives(num_nodes, torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long),
                                     keys, num_negatives=5, max_rounds=rounds,
                                     generator=torch.Generator().manual_seed(0))
        assert [sorted(row) for row in negatives.tolist()] == [[25, 26, 27, 28, 29]] * 3


def test_sample_negatives_raises_naming_the_impossible_query() -> None:
    keys = edge_keys(torch.tensor([4, 4, 4]), torch.tensor([0, 1, 2]), 6)
    # Query 1 (source 4, positive 5) has only node 3 left.
    with pytest.raises(ValueError, match=r"query 1 \(source 4, positive 5\) has only 1 allowed"):
        sample_negatives(6, torch.tensor([0, 4]), torch.tensor([1, 5]), keys, num_negatives=2)
