"""Relation-guided retrieval modes on hand-built embeddings; chunked full-corpus retrieval."""

from __future__ import annotations

import pytest
import torch

from rcml_graph.eval.metrics import ranking_metrics
from rcml_graph.eval.retrieval import (
    RETRIEVAL_MODES,
    full_corpus_metrics,
    full_corpus_topk,
    relation_guided_retrieval,
)


def _two_queries() -> tuple[torch.Tensor, ...]:
    """Two queries, three candidates each (candidate 0 is the positive), D = 2."""
    query_text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    query_image = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    candidate_text = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]],
                                   [[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
    candidate_image = torch.tensor([[[0.0, 1.0], [0.0, 1.0], [1.0, 0.0]],
                                    [[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]])
    return query_text, query_image, candidate_text, candidate_image


def test_five_modes_hand_computed_with_missing_query_image() -> None:
    query_text, query_image, candidate_text, candidate_image = _two_queries()
    query_image_valid = torch.tensor([True, False])  # query 1 has no image
    out = relation_guided_retrieval(query_text, query_image, candidate_text, candidate_image,
                                    query_image_valid=query_image_valid)
    assert tuple(out) == RETRIEVAL_MODES
    # text2text: q0 scores [1, 0, 1] (tie with one negative), q1 scores [1, 0, 0].
    assert out["text2text"]["n"] == 2
    assert out["text2text"]["hit@1"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["text2text"]["mrr"] == pytest.approx((0.75 + 1.0) / 2)
    # Image modes keep only q0.
    # image2image [1, 1, 0]: g=0, t=1.  text2image [0, 0, 1] and image2text [0, 1, 0]: g=1, t=1.
    expected = {"image2image": (0.5, 0.75), "text2image": (0.0, 5 / 12), "image2text": (0.0, 5 / 12),
                # avg of the four score rows: [0.5, 0.5, 0.5], a three-way tie.
                "avg": (1 / 3, 11 / 18)}
    for mode, (hit1, reciprocal) in expected.items():
        assert out[mode]["n"] == 1, mode
        assert out[mode]["hit@1"] == pytest.approx(hit1), mode
        assert out[mode]["mrr"] == pytest.approx(reciprocal), mode
        assert out[mode]["hit@5"] == pytest.approx(1.0), mode  # only 3 candidates


def test_missing_negative_image_is_left_out_of_image_modes() -> None:
    query_text, query_image, candidate_text, candidate_image = _two_queries()
    candidate_image_valid = torch.ones(2, 3, dtype=torch.bool)
    candidate_image_valid[0, 2] = False  # q0's second negative has no image
    candidate_image_valid[1, 0] = False  # q1's positive has no image: q1 leaves image modes
    out = relation_guided_retrieval(query_text, query_image, candidate_text, candidate_image,
                                    candidate_image_valid=candidate_image_valid)
    # text2image q0: scores [0, 0, (masked)] -> g=0, t=1.
    assert out["text2image"]["hit@1"] == pytest.approx(0.5)
    assert out["text2image"]["n"] == 1
    # image2text has no image on the candidate side, but uses the same query set as all image modes.
    assert out["image2text"]["n"] == 1
    assert out["text2text"]["n"] == 2


def test_scores_are_cosine_when_normalised() -> None:
    query_text, query_image, candidate_text, candidate_image = _two_queries()
    scaled = relation_guided_retrieval(query_text * 5, query_image, candidate_text * 3, candidate_image)
    plain = relation_guided_retrieval(query_text, query_image, candidate_text, candidate_image)
    assert scaled == plain


def test_retrieval_rejects_mismatched_shapes() -> None:
    query_text, query_image, candidate_text, candidate_image = _two_queries()
    with pytest.raises(ValueError, match=r"\(Q=2, C>=1, D=2\)"):
        relation_guided_retrieval(query_text, query_image, candidate_text[:, :, :1], candidate_image)


@pytest.mark.parametrize("query_chunk, corpus_chunk", [(7, 100), (1024, 65536), (1, 3)])
def test_full_corpus_topk_matches_brute_force(query_chunk: int, corpus_chunk: int) -> None:
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(37, 8, generator=generator, dtype=torch.float64)
    corpus = torch.randn(1003, 8, generator=generator, dtype=torch.float64)
    scores, indices = full_corpus_topk(queries, corpus, k=25, query_chunk_size=query_chunk,
                                       corpus_chunk_size=corpus_chunk)
    brute_scores, brute_indices = (queries @ corpus.T).topk(25, dim=1)
    assert torch.allclose(scores, brute_scores)
    assert torch.equal(indices, brute_indices)


def test_full_corpus_topk_exclude() -> None:
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(10, 4, generator=generator, dtype=torch.float64)
    corpus = torch.randn(57, 4, generator=generator, dtype=torch.float64)
    exclude = torch.stack([torch.arange(10), torch.full((10,), -1)], dim=1)
    exclude[3, 1] = 56
    full = queries @ corpus.T
    full[torch.arange(10), torch.arange(10)] = float("-inf")
    full[3, 56] = float("-inf")
    scores, indices = full_corpus_topk(queries, corpus, k=5, corpus_chunk_size=9, exclude=exclude)
    assert torch.equal(indices, full.topk(5, dim=1).indices)
    # Fewer than k rows left: the tail is -inf / -1.
    tail_scores, tail_indices = full_corpus_topk(queries[:1], corpus[:3], k=3, exclude=torch.tensor([1]))
    assert tail_indices[0, 2].item() == -1 and torch.isneginf(tail_scores[0, 2])
    assert set(tail_indices[0, :2].tolist()) == {0, 2}


def test_full_corpus_metrics_hand_computed_with_tie_and_exclusion() -> None:
    corpus = torch.tensor([[3.0], [1.0], [2.0], [2.0], [0.0]])
    queries = torch.tensor([[1.0], [1.0]])
    targets = torch.tensor([2, 2])  # score 2: one above (item 0), one tied (item 3)
    out = full_corpus_metrics(queries[:1], corpus, targets[:1], ks=(1, 2, 3), corpus_chunk_size=2)
    assert out == pytest.approx({"recall@1": 0.0, "recall@2": 0.5, "recall@3": 1.0, "mrr": 5 / 12, "n": 1})
    # Query 1 excludes item 0 (e.g. its own source product): g=0, t=1.
    out = full_corpus_metrics(queries, corpus, targets, ks=(1,), exclude=torch.tensor([-1, 0]))
    assert out["recall@1"] == pytest.approx((0.0 + 0.5) / 2)
    assert out["mrr"] == pytest.approx((5 / 12 + 3 / 4) / 2)
    with pytest.raises(ValueError, match="query 0 excludes its own target 2"):
        full_corpus_metrics(queries, corpus, targets, exclude=torch.tensor([2, 0]))


def test_full_corpus_metrics_matches_dense_ranking_with_ties() -> None:
    generator = torch.Generator().manual_seed(2)
    # Small integer embeddings make exact ties frequent.
    queries = torch.randint(-2, 3, (40, 3), generator=generator).double()
    corpus = torch.randint(-2, 3, (301, 3), generator=generator).double()
    targets = torch.randint(301, (40,), generator=generator)
    out = full_corpus_metrics(queries, corpus, targets, ks=(10, 50), query_chunk_size=16, corpus_chunk_size=64)
    full = queries @ corpus.T
    pos = full[torch.arange(40), targets]
    others = torch.ones_like(full, dtype=torch.bool)
    others[torch.arange(40), targets] = False
    dense = ranking_metrics(pos, full, ks=(10, 50), neg_mask=others)
    assert out == pytest.approx({"recall@10": dense["hit@10"], "recall@50": dense["hit@50"],
                                 "mrr": dense["mrr"], "n": 40})


def test_full_corpus_recall_agrees_with_topk_without_ties() -> None:
    generator = torch.Generator().manual_seed(4)
    queries = torch.randn(50, 16, generator=generator)
    corpus = torch.randn(2000, 16, generator=generator)
    targets = torch.randint(2000, (50,), generator=generator)
    out = full_corpus_metrics(queries, corpus, targets, ks=(10, 50), corpus_chunk_size=300)
    _, top = full_corpus_topk(queries, corpus, k=50, corpus_chunk_size=300)
    for k in (10, 50):
        in_top = (top[:, :k] == targets[:, None]).any(dim=1).double().mean().item()
        assert out[f"recall@{k}"] == pytest.approx(in_top)


@pytest.mark.slow
def test_full_corpus_topk_one_million_products() -> None:
    generator = torch.Generator().manual_seed(0)
    corpus = torch.randn(1_000_000, 64, generator=generator)
    queries = corpus[:1000] + 0.01 * torch.randn(1000, 64, generator=generator)
    scores, indices = full_corpus_topk(queries, corpus, k=50)
    assert indices.shape == (1000, 50)
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    # Each perturbed query's own product should be its nearest neighbour by inner product
    # most of the time (not always: a longer random vector can win).
    assert (indices[:, 0] == torch.arange(1000)).double().mean() > 0.5
