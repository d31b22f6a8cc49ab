"""Relation validation: does ``(source, relation, target)`` hold?

A logistic regression on ``[e_s * e_t, |e_s - e_t|]`` of the relation-conditioned (fused
image+text) embeddings, fitted on training edges and their corruptions, tested on test
edges and theirs. Each true triple gets one corruption: a random target never linked to the
source under the description, or (half of the time, where the kind has another
description that does not link the pair) the same target under another description.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from torch import Tensor

from rcml_graph.evaluation.edges import RelationEdges, descriptions_by_kind, is_member
from rcml_graph.evaluation.encoders import (
    RelationEncoder,
    encode_pairs,
    encode_targets,
    fused_embedding,
)
from rcml_graph.evaluation.negatives import random_negatives

__all__ = ["Triples", "corrupt_triples", "relation_validation"]

_DESCRIPTION_ROUNDS = 8


class Triples(NamedTuple):
    """Balanced true and corrupted triples, each field ``(2Q,)``; ``label`` 1 for true."""

    source: Tensor
    target: Tensor
    desc: Tensor
    label: Tensor


def corrupt_triples(edges: RelationEdges, index: Tensor, generator: torch.Generator) -> Triples:
    """The edges at ``index`` (label 1) followed by one corruption of each (label 0)."""
    source, target, desc = edges.source[index], edges.target[index], edges.desc_id[index]
    num = index.numel()
    random_target = random_negatives(edges, source, target, desc, 1, generator).negatives[:, 0]
    # Another description of the same kind that does not link the pair; rejection rounds.
    table = descriptions_by_kind(edges)
    row = table[edges.kind_id[index]]
    count = (row >= 0).sum(dim=1)
    links = edges.link_keys()
    other = torch.full((num,), -1, dtype=torch.long)
    for _ in range(_DESCRIPTION_ROUNDS):
        draw = row.gather(1, (torch.rand(num, generator=generator) * count).long()[:, None])[:, 0]
        ok = (draw != desc) & ~is_member((draw * edges.num_nodes + source) * edges.num_nodes + target, links)
        other = torch.where((other < 0) & ok, draw, other)
    use_other = (other >= 0) & (torch.rand(num, generator=generator) < 0.5)
    fake_target = torch.where(use_other, target, random_target)
    fake_desc = torch.where(use_other, other, desc)
    return Triples(
        torch.cat([source, source]),
        torch.cat([target, fake_target]),
        torch.cat([desc, fake_desc]),
        torch.cat([torch.ones(num), torch.zeros(num)]).long(),
    )


def _features(encoder: RelationEncoder, edges: RelationEdges, triples: Triples, batch_size: int) -> np.ndarray:
    e_s = fused_embedding(encode_pairs(encoder, triples.source, triples.desc, edges.num_descriptions, batch_size,
                                       as_query=True))
    e_t = fused_embedding(encode_targets(encoder, triples.target, triples.desc, edges.num_descriptions, batch_size))
    return torch.cat([e_s * e_t, (e_s - e_t).abs()], dim=1).double().numpy()


def relation_validation(
    encoder: RelationEncoder,
    edges: RelationEdges,
    train_index: Tensor,
    test_index: Tensor,
    seed: int,
    batch_size: int = 1024,
    max_iter: int = 1000,
) -> dict[str, float]:
    """ROC-AUC and accuracy of the validation classifier on balanced test triples.

    Returns:
        ``{"roc_auc": ..., "accuracy": ..., "n": number of test triples}``.
    """
    if train_index.numel() == 0 or test_index.numel() == 0:
        raise ValueError(
            f"relation validation needs train and test edges; got {train_index.numel()} and {test_index.numel()}"
        )
    generator = torch.Generator().manual_seed(seed)
    train = corrupt_triples(edges, train_index, generator)
    test = corrupt_triples(edges, test_index, generator)
    classifier = LogisticRegression(max_iter=max_iter, random_state=seed)
    classifier.fit(_features(encoder, edges, train, batch_size), train.label.numpy())
    test_features = _features(encoder, edges, test, batch_size)
    probability = classifier.predict_proba(test_features)[:, 1]
    labels = test.label.numpy()
    return {
        "roc_auc": float(roc_auc_score(labels, probability)),
        "accuracy": float(((probability >= 0.5) == labels).mean()),
        "n": int(labels.size),
    }
