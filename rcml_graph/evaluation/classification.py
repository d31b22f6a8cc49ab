"""Leaf-category linear probe and retention of a product's own image<->text retrieval."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from torch import Tensor

from rcml_graph.eval.retrieval import full_corpus_metrics
from rcml_graph.evaluation.encoders import ViewEmbeddings

__all__ = ["category_probe", "own_image_text_retrieval"]


def category_probe(
    features: Tensor,
    labels: Tensor,
    seed: int,
    test_ratio: float = 0.3,
    max_iter: int = 1000,
) -> dict[str, float]:
    """Linear probe (logistic regression) predicting ``labels`` from ``features``.

    Products with ``label < 0`` are left out; the rest are split at random (seeded) into
    ``1 - test_ratio`` training and ``test_ratio`` test products.

    Args:
        features: ``(N, D)`` frozen embeddings (L2-normalised here).
        labels: ``(N,)`` class per product, ``-1`` for none.
        seed: Seed of the split and the solver.
        test_ratio: Share of labelled products held out, in ``(0, 1)``.

    Returns:
        ``{"accuracy": ..., "macro_f1": ..., "n": test products, "num_classes": ...}``.
    """
    if not 0.0 < test_ratio < 1.0:
        raise ValueError(f"test_ratio must lie in (0, 1); got {test_ratio}")
    if features.dim() != 2 or labels.shape != (features.size(0),):
        raise ValueError(
            f"features (N, D) and labels (N,) must agree; got {tuple(features.shape)} and {tuple(labels.shape)}"
        )
    labelled = (labels >= 0).nonzero().flatten()
    generator = torch.Generator().manual_seed(seed)
    labelled = labelled[torch.randperm(labelled.numel(), generator=generator)]
    num_test = round(test_ratio * labelled.numel())
    test, train = labelled[:num_test], labelled[num_test:]
    train_labels = labels[train].numpy()
    if test.numel() == 0 or np.unique(train_labels).size < 2:
        raise ValueError(
            f"category probe needs test products and >= 2 training classes; got {test.numel()} test "
            f"products and {np.unique(train_labels).size} class(es)"
        )
    x = F.normalize(features.float(), dim=-1).double().numpy()
    probe = LogisticRegression(max_iter=max_iter, random_state=seed)
    probe.fit(x[train.numpy()], train_labels)
    predicted = probe.predict(x[test.numpy()])
    truth = labels[test].numpy()
    return {
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": float(f1_score(truth, predicted, average="macro")),
        "n": int(test.numel()),
        "num_classes": int(np.unique(labels[labelled].numpy()).size),
    }


def own_image_text_retrieval(
    views: ViewEmbeddings, ks: Sequence[int] = (1, 10), corpus_chunk_size: int = 16384
) -> dict[str, dict[str, float]]:
    """Each product's image retrieves its own text among all products' texts, and back.

    Only products with an image take part (as queries and as corpus).

    Returns:
        ``{"image2text": {"recall@1": ..., "mrr": ..., "n": ...}, "text2image": {...}}``;
        empty when no product has an image.
    """
    rows = views.image_valid.nonzero().flatten()
    if rows.numel() == 0:
        return {}
    image, text = views.image[rows], views.text[rows]
    targets = torch.arange(rows.numel())
    ks = tuple(k for k in ks if k <= rows.numel())
    return {
        "image2text": full_corpus_metrics(image, text, targets, ks=ks, corpus_chunk_size=corpus_chunk_size),
        "text2image": full_corpus_metrics(text, image, targets, ks=ks, corpus_chunk_size=corpus_chunk_size),
    }
