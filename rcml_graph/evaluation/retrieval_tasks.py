"""Relation-guided retrieval on the test split: sampled candidates and full corpus.

A query is a test edge ``(source, description, target)``: the source embedded under the
description must rank the target above the negatives of a protocol
(:mod:`rcml_graph.evaluation.negatives`). Metrics come from
:func:`rcml_graph.eval.retrieval.relation_guided_retrieval` (five similarity modes,
tie-aware) and are computed on several query subsets at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from rcml_graph.eval.retrieval import full_corpus_metrics, relation_guided_retrieval
from rcml_graph.evaluation.edges import RelationEdges, is_member
from rcml_graph.evaluation.encoders import (
    RelationEncoder,
    ViewEmbeddings,
    conditions_targets,
    encode_global,
    encode_pairs,
    encode_targets,
)
from rcml_graph.evaluation.negatives import NegativeSet

__all__ = ["candidate_retrieval", "full_corpus_retrieval", "never_linked_in_train", "unseen_descriptions"]


def never_linked_in_train(edges: RelationEdges, query_index: Tensor) -> Tensor:
    """``(Q,)`` bool: the query's pair is linked under no relation in the training split."""
    train_pairs = edges.pair_keys(edges.split == 0)
    return ~is_member(edges.undirected_pair_key(query_index), train_pairs)


def unseen_descriptions(edges: RelationEdges) -> Tensor:
    """``(E,)`` bool: the edge's description never occurs on a training edge."""
    seen = torch.zeros(edges.num_descriptions, dtype=torch.bool)
    seen[edges.desc_id[edges.split == 0]] = True
    return ~seen[edges.desc_id]


def candidate_retrieval(
    encoder: RelationEncoder,
    edges: RelationEdges,
    query_index: Tensor,
    negatives: NegativeSet,
    subsets: Mapping[str, Tensor],
    ks: Sequence[int] = (1, 5, 10),
    batch_size: int = 1024,
) -> dict[str, dict[str, dict[str, float]]]:
    """Rank each query's target among its negatives, in five modes, per query subset.

    Args:
        encoder: The model.
        edges: All relation edges.
        query_index: ``(Q,)`` edge indices of the queries.
        negatives: ``(Q, K)`` negatives of a protocol.
        subsets: ``name -> (Q,)`` bool masks of queries to report separately
            (e.g. ``{"all": ..., "never_linked_in_train": ...}``).
        ks: Hit@k cut-offs.
        batch_size: Distinct pairs per encoder call.

    Returns:
        ``{subset: {mode: {"hit@1": ..., "mrr": ..., "n": ...}}}``; a subset with no queries
        is left out.
    """
    sources = edges.source[query_index]
    targets = edges.target[query_index]
    desc = edges.desc_id[query_index]
    if negatives.negatives.size(0) != query_index.numel():
        raise ValueError(
            f"negatives has {negatives.negatives.size(0)} rows for {query_index.numel()} queries"
        )
    candidates = torch.cat([targets[:, None], negatives.negatives], dim=1)  # (Q, 1 + K)
    query = encode_pairs(encoder, sources, desc, edges.num_descriptions, batch_size, as_query=True)
    cand = encode_targets(encoder, candidates, desc[:, None], edges.num_descriptions, batch_size)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, mask in subsets.items():
        if mask.shape != sources.shape:
            raise ValueError(f"subset {name!r} mask must have shape {tuple(sources.shape)}; got {tuple(mask.shape)}")
        if not bool(mask.any()):
            continue
        out[name] = relation_guided_retrieval(
            query.text[mask], query.image[mask], cand.text[mask], cand.image[mask],
            query.image_valid[mask], cand.image_valid[mask], ks=ks,
        )
    return out


def _views_for_corpus(views: ViewEmbeddings) -> dict[str, Tensor]:
    # avg mode: (t + i) . (t' + i') / 4 is the mean of the four directional cosines; a
    # product without an image stands in with its text embedding.
    image = torch.where(views.image_valid[..., None], views.image, views.text)
    return {"text2text": views.text, "avg": (views.text + image) / 2.0}


def full_corpus_retrieval(
    encoder: RelationEncoder,
    edges: RelationEdges,
    query_index: Tensor,
    subsets: Mapping[str, Tensor],
    ks: Sequence[int] = (10, 50),
    batch_size: int = 1024,
    corpus_chunk_size: int = 16384,
    tie_atol: float = 1e-6,
) -> dict[str, dict[str, dict[str, float]]]:
    """Rank each target among all products (chunked matmul), modes ``text2text`` and ``avg``.

    ``tie_atol`` counts scores within it of the target's as ties: the target's own score comes
    from a row-wise product and a duplicate's from the block matmul, which differ in the last bits.

    The corpus is embedded under each query's description (once per distinct description),
    or relation-free for an encoder with ``condition_targets = False``. The source and its
    other targets under the query's description (any split) are not ranked.

    Returns:
        ``{subset: {mode: {"recall@10": ..., "recall@50": ..., "mrr": ..., "n": ...}}}``.
    """
    num_nodes = edges.num_nodes
    sources = edges.source[query_index]
    targets = edges.target[query_index]
    desc = edges.desc_id[query_index]
    num_queries = sources.numel()
    ks = tuple(k for k in ks if k <= num_nodes)
    query_views = encode_pairs(encoder, sources, desc, edges.num_descriptions, batch_size, as_query=True)
    query_vectors = _views_for_corpus(query_views)

    # Other targets linked under the query's description, padded with -1, plus the source.
    keys = edges.link_keys()
    group_of_key = keys // num_nodes
    group = desc * num_nodes + sources
    start = torch.searchsorted(group_of_key, group)
    count = torch.searchsorted(group_of_key, group, right=True) - start
    width = int(count.max()) if num_queries else 0
    slot = torch.arange(max(width, 1))[None, :]
    key_index = (start[:, None] + slot).clamp_max(max(keys.numel() - 1, 0))
    linked = torch.where(slot < count[:, None], keys[key_index] % num_nodes, -1)
    linked = torch.where(linked == targets[:, None], -1, linked)
    exclude = torch.cat([sources[:, None], linked], dim=1)

    all_products = torch.arange(num_nodes)
    # Without any image, avg would only repeat text2text.
    modes = ("text2text", "avg") if bool(query_views.image_valid.any()) else ("text2text",)
    if conditions_targets(encoder):
        description_groups = [int(d) for d in torch.unique(desc)]
        global_corpus = None
    else:
        description_groups = [-1]
        global_corpus = _views_for_corpus(encode_global(encoder, all_products, batch_size))
    # Sums of per-query metrics per subset and mode, accumulated over description groups.
    metric_names = [f"recall@{k}" for k in ks] + ["mrr"]
    sums = {name: {mode: dict.fromkeys(metric_names, 0.0) for mode in modes} for name in subsets}
    for d in description_groups:
        in_group = torch.ones(num_queries, dtype=torch.bool) if d == -1 else desc == d
        corpus = global_corpus
        if corpus is None:
            corpus = _views_for_corpus(
                encode_pairs(encoder, all_products, torch.full_like(all_products, d),
                             edges.num_descriptions, batch_size)
            )
        for name, mask in subsets.items():
            rows = (in_group & mask).nonzero().flatten()
            if rows.numel() == 0:
                continue
            for mode in modes:
                metrics = full_corpus_metrics(
                    query_vectors[mode][rows], corpus[mode], targets[rows], ks=ks,
                    exclude=exclude[rows], corpus_chunk_size=corpus_chunk_size, tie_atol=tie_atol,
                )
                for metric in metric_names:
                    sums[name][mode][metric] += metrics[metric] * rows.numel()
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, mask in subsets.items():
        n = int(mask.sum())
        if n == 0:
            continue
        out[name] = {
            mode: {**{m: sums[name][mode][m] / n for m in metric_names}, "n": n} for mode in modes
        }
    return out
