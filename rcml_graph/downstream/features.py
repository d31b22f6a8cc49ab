"""Node features for link prediction: exported embeddings, frozen backbone globals, random."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rcml_graph.evaluation.encoders import ViewEmbeddings

__all__ = ["FEATURE_SOURCES", "cache_backbone_features", "embedding_features", "random_features", "view_features"]

#: Accepted ``linkpred.features`` values.
FEATURE_SOURCES: tuple[str, ...] = ("rcml", "clip", "backbone", "random")


def random_features(num_nodes: int, dim: int, seed: int) -> Tensor:
    """``(N, dim)`` seeded standard Gaussian features (the no-information baseline)."""
    if num_nodes < 1 or dim < 1:
        raise ValueError(f"num_nodes and dim must be positive; got {num_nodes} and {dim}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(num_nodes, dim, generator=generator)


def view_features(views: ViewEmbeddings) -> Tensor:
    """``(N, 2D)``: L2-normalised text view next to the image view (zeros without an image).

    The backbone's two towers are not aligned, so the views are concatenated, not summed.
    """
    text = F.normalize(views.text.float(), dim=-1)
    image = F.normalize(views.image.float(), dim=-1) * views.image_valid[:, None].float()
    return torch.cat([text, image], dim=-1)


def cache_backbone_features(cache: object, batch_size: int = 4096) -> Tensor:
    """:func:`view_features` of the frozen backbone's global outputs in a ``FeatureCache``."""
    num_products = int(cache.num_products)  # type: ignore[attr-defined]
    parts = []
    for start in range(0, num_products, batch_size):
        index = torch.arange(start, min(start + batch_size, num_products))
        feats = cache.product_features(index)  # type: ignore[attr-defined]
        parts.append(view_features(ViewEmbeddings(feats.image_global, feats.text_global, feats.has_image.bool())))
    return torch.cat(parts)


def embedding_features(tensors: Mapping[str, Tensor], keys: Sequence[str]) -> Tensor:
    """Concatenate exported embeddings ``keys`` (e.g. ``global``, ``kind/also_bought``) -> ``(N, sum D)``."""
    missing = [key for key in keys if key not in tensors]
    if missing or not keys:
        raise ValueError(f"embedding keys {missing or list(keys)} not available; accepted: {sorted(tensors)}")
    return torch.cat([tensors[key].float() for key in keys], dim=-1)
