"""Relation-guided retrieval over sampled candidates, and chunked full-corpus retrieval.

Relation-guided retrieval (the paper's protocol): a query is a source product conditioned on a
relation description; its candidates are the true target followed by sampled negatives
(:func:`rcml_graph.eval.metrics.sample_negatives`). Embeddings are computed by the model
elsewhere; this module only scores and ranks them, in five similarity modes:

* ``text2text``, ``image2image``, ``text2image``, ``image2text``: cosine similarity between the
  query's embedding in one modality and each candidate's embedding in the other;
* ``avg``: the mean of those four *score* matrices, ranked once. It averages scores, not
  metrics, so its Hit@k is not the mean of the four modes' Hit@k.

Full-corpus retrieval ranks a target among every product with chunked matrix products whose
memory does not grow with the corpus size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rcml_graph.eval.metrics import (
    expected_hit_from_counts,
    expected_reciprocal_rank_from_counts,
    ranking_metrics,
)

__all__ = [
    "RETRIEVAL_MODES",
    "full_corpus_metrics",
    "full_corpus_topk",
    "relation_guided_retrieval",
]

#: Similarity modes in reporting order; ``avg`` averages the four directional score matrices.
RETRIEVAL_MODES: tuple[str, ...] = ("text2text", "image2image", "text2image", "image2text", "avg")


def relation_guided_retrieval(
    query_text: Tensor,
    query_image: Tensor,
    candidate_text: Tensor,
    candidate_image: Tensor,
    query_image_valid: Tensor | None = None,
    candidate_image_valid: Tensor | None = None,
    ks: Sequence[int] = (1, 5, 10),
    normalize: bool = True,
) -> dict[str, dict[str, float]]:
    """Score each query against its candidates in the five modes and report tie-aware metrics.

    Candidate 0 of every row is the positive, the rest are negatives. Products without an
    image are handled by validity masks: a query whose own image or whose positive's image is
    missing is dropped from every mode that uses images (``image2image``, ``text2image``,
    ``image2text``, ``avg``); a negative without an image is left out of the ranking in those
    modes. ``n`` in each mode's result is the number of queries it was computed on.

    Args:
        query_text: Relation-conditioned text embedding of each source, shape ``(Q, D)``.
        query_image: Relation-conditioned image embedding of each source, shape ``(Q, D)``.
        candidate_text: Text embeddings of the candidates, shape ``(Q, C, D)``, ``C = 1 + K``.
        candidate_image: Image embeddings of the candidates, shape ``(Q, C, D)``.
        query_image_valid: Optional boolean ``(Q,)``, ``False`` where the source has no image.
        candidate_image_valid: Optional boolean ``(Q, C)``, ``False`` where a candidate has no
            image.
        ks: Cut-offs for Hit@k.
        normalize: L2-normalise embeddings so that scores are cosine similarities (scores of
            different modes must be on one scale for ``avg``).

    Returns:
        ``{mode: {"hit@1": ..., "hit@5": ..., "hit@10": ..., "mrr": ..., "n": ...}}`` for
        every mode in :data:`RETRIEVAL_MODES` (tie-expected metrics, see
        :mod:`rcml_graph.eval.metrics`).
    """
    if query_text.dim() != 2 or query_text.shape != query_image.shape:
        raise ValueError(
            f"query_text and query_image must both have shape (Q, D); got "
            f"{tuple(query_text.shape)} and {tuple(query_image.shape)}"
        )
    num_queries, dim = query_text.shape
    if (
        candidate_text.dim() != 3
        or candidate_text.shape != candidate_image.shape
        or candidate_text.size(0) != num_queries
        or candidate_text.size(2) != dim
        or candidate_text.size(1) < 1
    ):
        raise ValueError(
            f"candidate_text and candidate_image must both have shape (Q={num_queries}, C>=1, "
            f"D={dim}); got {tuple(candidate_text.shape)} and {tuple(candidate_image.shape)}"
        )
    num_candidates = candidate_text.size(1)
    if query_image_valid is None:
        query_image_valid = torch.ones(num_queries, dtype=torch.bool, device=query_text.device)
    if candidate_image_valid is None:
        candidate_image_valid = torch.ones(
            num_queries, num_candidates, dtype=torch.bool, device=query_text.device
        )
    if query_image_valid.shape != (num_queries,):
        raise ValueError(
            f"query_image_valid must have shape ({num_queries},); got {tuple(query_image_valid.shape)}"
        )
    if candidate_image_valid.shape != (num_queries, num_candidates):
        raise ValueError(
            f"candidate_image_valid must have shape ({num_queries}, {num_candidates}); "
            f"got {tuple(candidate_image_valid.shape)}"
        )
    query_image_valid = query_image_valid.bool()
    candidate_image_valid = candidate_image_valid.bool()

    if normalize:
        query_text, query_image = F.normalize(query_text, dim=-1), F.normalize(query_image, dim=-1)
        candidate_text = F.normalize(candidate_text, dim=-1)
        candidate_image = F.normalize(candidate_image, dim=-1)

    def scores(query: Tensor, candidates: Tensor) -> Tensor:
        return torch.einsum("qd,qcd->qc", query, candidates)  # (Q, C)

    mode_scores = {
        "text2text": scores(query_text, candidate_text),
        "image2image": scores(query_image, candidate_image),
        "text2image": scores(query_text, candidate_image),
        "image2text": scores(query_image, candidate_text),
    }
    mode_scores["avg"] = torch.stack(list(mode_scores.values())).mean(dim=0)

    all_rows = torch.ones(num_queries, dtype=torch.bool, device=query_text.device)
    all_negatives = torch.ones(num_queries, num_candidates - 1, dtype=torch.bool, device=query_text.device)
    # Which side of each mode needs an image: (query side, candidate side).
    uses_image = {
        "text2text": (False, False),
        "image2image": (True, True),
        "text2image": (False, True),
        "image2text": (True, False),
        "avg": (True, True),
    }
    results: dict[str, dict[str, float]] = {}
    for mode in RETRIEVAL_MODES:
        query_side, candidate_side = uses_image[mode]
        # Every image mode drops the same queries, so their n and query sets are comparable.
        any_image = query_side or candidate_side
        rows = (query_image_valid & candidate_image_valid[:, 0]) if any_image else all_rows
        neg_mask = candidate_image_valid[:, 1:] if candidate_side else all_negatives
        mode_score = mode_scores[mode][rows]
        results[mode] = ranking_metrics(
            mode_score[:, 0], mode_score[:, 1:], ks=ks, neg_mask=neg_mask[rows]
        )
    return results


def _check_exclude(exclude: Tensor | None, num_queries: int) -> Tensor | None:
    if exclude is None:
        return None
    if exclude.dim() == 1:
        exclude = exclude[:, None]
    if exclude.dim() != 2 or exclude.size(0) != num_queries:
        raise ValueError(
            f"exclude must have shape ({num_queries},) or ({num_queries}, E) with -1 padding; "
            f"got {tuple(exclude.shape)}"
        )
    return exclude.long()


def _mask_excluded(scores: Tensor, exclude: Tensor | None, corpus_start: int) -> Tensor:
    """Set ``scores[i, j] = -inf`` where ``corpus_start + j`` is in ``exclude[i]`` (in place)."""
    if exclude is None:
        return scores
    local = exclude - corpus_start  # (q, E)
    hit = (exclude >= 0) & (local >= 0) & (local < scores.size(1))
    rows = torch.arange(scores.size(0), device=scores.device)[:, None].expand_as(local)
    scores[rows[hit], local[hit]] = float("-inf")
    return scores


def full_corpus_topk(
    queries: Tensor,
    corpus: Tensor,
    k: int,
    query_chunk_size: int = 1024,
    corpus_chunk_size: int = 16384,
    exclude: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-``k`` inner-product neighbours of each query among all corpus rows, in bounded memory.

    Queries and corpus are processed in chunks; each ``(query_chunk, corpus_chunk)`` score
    block is reduced with :func:`torch.topk` and merged into a running top-``k``, so peak
    memory is ``O(query_chunk_size * (corpus_chunk_size + k))`` whatever the corpus size.
    Scores are raw inner products; normalise the inputs for cosine similarity.

    Args:
        queries: Query embeddings, shape ``(Q, D)``.
        corpus: Corpus embeddings, shape ``(N, D)``.
        k: Number of neighbours, ``1 <= k <= N``.
        query_chunk_size: Queries per block.
        corpus_chunk_size: Corpus rows per block.
        exclude: Optional corpus indices never returned for a query, shape ``(Q,)`` or
            ``(Q, E)`` padded with ``-1`` (e.g. the query product itself).

    Returns:
        ``(scores, indices)``, each of shape ``(Q, k)``, sorted by descending score. Where
        exclusions leave fewer than ``k`` rows, the tail has score ``-inf`` and index ``-1``.
    """
    if queries.dim() != 2 or corpus.dim() != 2 or queries.size(1) != corpus.size(1):
        raise ValueError(
            f"queries (Q, D) and corpus (N, D) must share D; got {tuple(queries.shape)} and "
            f"{tuple(corpus.shape)}"
        )
    num_corpus = corpus.size(0)
    if not 1 <= k <= num_corpus:
        raise ValueError(f"k must lie in [1, N={num_corpus}]; got {k}")
    if query_chunk_size < 1 or corpus_chunk_size < 1:
        raise ValueError(
            f"chunk sizes must be positive; got query_chunk_size={query_chunk_size}, "
            f"corpus_chunk_size={corpus_chunk_size}"
        )
    exclude = _check_exclude(exclude, queries.size(0))
    dtype = torch.promote_types(queries.dtype, corpus.dtype)
    top_scores_parts, top_index_parts = [], []
    for q_start in range(0, queries.size(0), query_chunk_size):
        query_chunk = queries[q_start : q_start + query_chunk_size].to(dtype)
        exclude_chunk = None if exclude is None else exclude[q_start : q_start + query_chunk_size]
        best_scores = torch.full((query_chunk.size(0), 0), float("-inf"), dtype=dtype, device=queries.device)
        best_index = torch.empty((query_chunk.size(0), 0), dtype=torch.long, device=queries.device)
        for c_start in range(0, num_corpus, corpus_chunk_size):
            block = query_chunk @ corpus[c_start : c_start + corpus_chunk_size].to(dtype).T  # (q, c)
            block = _mask_excluded(block, exclude_chunk, c_start)
            block_scores, block_index = block.topk(min(k, block.size(1)), dim=1)
            merged_scores = torch.cat([best_scores, block_scores], dim=1)
            merged_index = torch.cat([best_index, block_index + c_start], dim=1)
            best_scores, pick = merged_scores.topk(min(k, merged_scores.size(1)), dim=1)
            best_index = merged_index.gather(1, pick)
        best_index = torch.where(torch.isneginf(best_scores), torch.full_like(best_index, -1), best_index)
        top_scores_parts.append(best_scores)
        top_index_parts.append(best_index)
    return torch.cat(top_scores_parts), torch.cat(top_index_parts)


def full_corpus_metrics(
    queries: Tensor,
    corpus: Tensor,
    targets: Tensor,
    ks: Sequence[int] = (10, 50),
    exclude: Tensor | None = None,
    query_chunk_size: int = 1024,
    corpus_chunk_size: int = 16384,
    tie_atol: float = 0.0,
) -> dict[str, float]:
    """Recall@k and MRR of each query's target ranked among the whole corpus.

    The rank is exact, not read off a top-k list: in every score block the corpus rows
    scoring strictly above the target (``greater``) and equal to it (``tied``, within
    ``tie_atol``) are counted, then the tie-expected metrics of
    :mod:`rcml_graph.eval.metrics` are applied. With one target per query Recall@k equals
    Hit@k. The target's own score is computed by a row-wise dot product; ``tie_atol > 0``
    absorbs the last-bit differences that can make an exact duplicate of the target look
    marginally above or below it.

    Args:
        queries: Query embeddings, shape ``(Q, D)``.
        corpus: Corpus embeddings, shape ``(N, D)``.
        targets: Target corpus index per query, shape ``(Q,)``.
        ks: Cut-offs for Recall@k.
        exclude: Optional corpus indices not ranked against the target, shape ``(Q,)`` or
            ``(Q, E)`` with ``-1`` padding (e.g. the source product itself).
        query_chunk_size: Queries per block.
        corpus_chunk_size: Corpus rows per block.
        tie_atol: Absolute tolerance under which a score counts as tied with the target.

    Returns:
        ``{"recall@10": ..., "recall@50": ..., "mrr": ..., "n": Q}``.
    """
    if queries.dim() != 2 or corpus.dim() != 2 or queries.size(1) != corpus.size(1):
        raise ValueError(
            f"queries (Q, D) and corpus (N, D) must share D; got {tuple(queries.shape)} and "
            f"{tuple(corpus.shape)}"
        )
    num_queries, num_corpus = queries.size(0), corpus.size(0)
    if targets.shape != (num_queries,):
        raise ValueError(f"targets must have shape ({num_queries},); got {tuple(targets.shape)}")
    targets = targets.long()
    if num_queries and (int(targets.min()) < 0 or int(targets.max()) >= num_corpus):
        raise ValueError(
            f"targets must lie in [0, {num_corpus}); got range [{int(targets.min())}, {int(targets.max())}]"
        )
    if tie_atol < 0:
        raise ValueError(f"tie_atol must be non-negative; got {tie_atol}")
    exclude = _check_exclude(exclude, num_queries)
    if exclude is not None and bool((exclude == targets[:, None]).any()):
        bad = int((exclude == targets[:, None]).any(dim=1).nonzero()[0])
        raise ValueError(f"query {bad} excludes its own target {int(targets[bad])}")

    dtype = torch.promote_types(queries.dtype, corpus.dtype)
    # The target is never compared with itself: exclude it alongside the user's exclusions.
    self_exclude = targets[:, None] if exclude is None else torch.cat([exclude, targets[:, None]], dim=1)
    greater = torch.zeros(num_queries, dtype=torch.long, device=queries.device)
    tied = torch.zeros(num_queries, dtype=torch.long, device=queries.device)
    for q_start in range(0, num_queries, query_chunk_size):
        q_end = min(q_start + query_chunk_size, num_queries)
        query_chunk = queries[q_start:q_end].to(dtype)
        target_score = (query_chunk * corpus[targets[q_start:q_end]].to(dtype)).sum(dim=1, keepdim=True)
        for c_start in range(0, num_corpus, corpus_chunk_size):
            block = query_chunk @ corpus[c_start : c_start + corpus_chunk_size].to(dtype).T  # (q, c)
            block = _mask_excluded(block, self_exclude[q_start:q_end], c_start)
            # Two comparisons against a (q, 1) column, no (q, c) float temporaries; int32 sums
            # are about twice as fast as the default int64 ones and cannot overflow per block.
            block_greater = (block > target_score + tie_atol).sum(dim=1, dtype=torch.int32)
            block_at_least = (block >= target_score - tie_atol).sum(dim=1, dtype=torch.int32)
            greater[q_start:q_end] += block_greater
            tied[q_start:q_end] += block_at_least - block_greater

    out: dict[str, float] = {}
    for k in ks:
        hits = expected_hit_from_counts(greater, tied, k)
        out[f"recall@{k}"] = hits.mean().item() if num_queries else float("nan")
    reciprocal = expected_reciprocal_rank_from_counts(greater, tied)
    out["mrr"] = reciprocal.mean().item() if num_queries else float("nan")
    out["n"] = num_queries
    return out
