"""Node features for link prediction: exported embeddings, frozen backbone globals, random."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rcml_graph.evaluation.encoders import ViewEmbeddings

__all__ = ["FEATURE_NORMS", "FEATURE_SOURCES", "cache_backbone_features", "embedding_features", "normalize_features",
           "random_features", "view_features"]

#: Accepted ``linkpred.features`` values. ``rcml``: the source endpoint reads the export's
#: query-side views, the target endpoint its target-side views (asymmetric); ``rcml_symmetric``:
#: both read the target-side views; ``clip``/``unconditioned``: the global view of such a checkpoint.
FEATURE_SOURCES: tuple[str, ...] = ("rcml", "rcml_symmetric", "clip", "unconditioned", "backbone", "random")
#: Accepted ``linkpred.feature_norm`` values.
FEATURE_NORMS: tuple[str, ...] = ("standard", "none")


def normalize_features(x: Tensor, kind: str = "standard") -> Tensor:
    """Per-column z-scores of ``(N, F)`` features over the products (``standard``), or ``x`` (``none``).

    Contrastive embeddings are strongly anisotropic: every product shares one large mean
    direction and the per-column spread is ~0.03. Fed raw to a GNN trained at lr 1e-2, the first
    Adam step moves every product's pre-activations the same way, every ReLU dies and the
    model outputs a constant logit (loss ``2 ln 2``). Centring and scaling each column removes
    the shared direction and puts every feature source on the same scale. The statistics use
    every product's features and no edge, so no held-out link leaks. Constant columns (e.g. an
    image view that no product has) become zeros.
    """
    if kind not in FEATURE_NORMS:
        raise ValueError(f"unknown feature_norm {kind!r}; accepted: {', '.join(FEATURE_NORMS)}")
    x = x.float()
    if kind == "none":
        return x
    std, mean = torch.std_mean(x, dim=0, unbiased=False)
    return (x - mean) / torch.where(std > 1e-6, std, torch.ones_like(std))


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
