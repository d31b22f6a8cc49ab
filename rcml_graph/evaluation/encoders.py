"""What every evaluation task needs from a model: the :class:`RelationEncoder` protocol.

A trained RCML model (``rcml_graph.training.encoder.ConditionedEncoder``), the zero-shot
backbone baseline (:class:`rcml_graph.evaluation.baselines.ZeroShotEncoder`) and the fake
encoders of the tests all satisfy it, so every task is written once against the protocol.

Encoders are called through :func:`encode_pairs`, which encodes each distinct
``(product, relation)`` pair once, in batches, and scatters the result back to any shape.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "RelationEncoder",
    "ViewEmbeddings",
    "conditions_targets",
    "encode_global",
    "encode_pairs",
    "encodes_queries",
    "encode_targets",
    "fused_embedding",
    "pair_scores",
]


class ViewEmbeddings(NamedTuple):
    """Per-product image and text embeddings, L2-normalised.

    Attributes:
        image: ``(..., D)`` image-view embedding (meaningless where ``image_valid`` is False).
        text: ``(..., D)`` text-view embedding.
        image_valid: ``(...)`` bool, ``False`` where the product has no image.
    """

    image: Tensor
    text: Tensor
    image_valid: Tensor


@runtime_checkable
class RelationEncoder(Protocol):
    """A model that embeds products conditioned on relation descriptions.

    ``relation_ids`` index ``data.relation_text``; id 0 is the self relation. An encoder may
    set ``condition_targets = False`` (the zero-shot baseline does) to say that the *target*
    side of a query is embedded relation-free, with :meth:`encode_global`.
    """

    def encode(self, products: Tensor, relation_ids: Tensor) -> ViewEmbeddings:
        """Embed ``products`` ``(B,)`` under ``relation_ids`` ``(B,)`` -> ``(B, D)`` views."""
        ...

    def encode_global(self, products: Tensor) -> ViewEmbeddings:
        """Relation-free embeddings of ``products`` ``(B,)`` -> ``(B, D)`` views."""
        ...


def encodes_queries(encoder: RelationEncoder) -> bool:
    """Whether the encoder embeds the source side of a query differently (``encode_query``)."""
    return callable(getattr(encoder, "encode_query", None))


def conditions_targets(encoder: RelationEncoder) -> bool:
    """Whether targets are embedded under the query's relation (default) or relation-free."""
    return bool(getattr(encoder, "condition_targets", True))


def _normalised(views: ViewEmbeddings) -> ViewEmbeddings:
    """L2-normalised float32 views on the CPU: the encoder may run on a GPU, the suite's ranking,
    probes and classifiers (scikit-learn) work on host tensors."""
    return ViewEmbeddings(
        F.normalize(views.image.float(), dim=-1).cpu(),
        F.normalize(views.text.float(), dim=-1).cpu(),
        views.image_valid.bool().cpu(),
    )


@torch.no_grad()
def encode_pairs(
    encoder: RelationEncoder,
    products: Tensor,
    relation_ids: Tensor,
    num_relations: int,
    batch_size: int = 1024,
    as_query: bool = False,
) -> ViewEmbeddings:
    """Encode ``(product, relation)`` pairs of any shape, each distinct pair once.

    Args:
        encoder: The model.
        products: Product ids, any shape ``S``.
        relation_ids: Description ids, shape ``S`` (broadcast against ``products``).
        num_relations: Size of the description table (to build pair keys).
        batch_size: Distinct pairs per encoder call.
        as_query: Embed them as the source side of a query: with the encoder's
            ``encode_query`` when it has one (an asymmetric head), else ``encode``.

    Returns:
        :class:`ViewEmbeddings` of shapes ``(*S, D)`` and ``S``, L2-normalised.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    products, relation_ids = torch.broadcast_tensors(products.long(), relation_ids.long())
    shape = products.shape
    keys = products.reshape(-1) * num_relations + relation_ids.reshape(-1)
    unique_keys, inverse = torch.unique(keys, return_inverse=True)
    encode = encoder.encode_query if as_query and encodes_queries(encoder) else encoder.encode  # type: ignore[attr-defined]
    parts = []
    for start in range(0, unique_keys.numel(), batch_size):
        chunk = unique_keys[start : start + batch_size]
        parts.append(_normalised(encode(chunk // num_relations, chunk % num_relations)))
    return _gather(parts, inverse, shape)


@torch.no_grad()
def encode_global(encoder: RelationEncoder, products: Tensor, batch_size: int = 1024) -> ViewEmbeddings:
    """Relation-free embeddings of ``products`` (any shape), each distinct product once."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive; got {batch_size}")
    shape = products.shape
    unique_products, inverse = torch.unique(products.long().reshape(-1), return_inverse=True)
    parts = [
        _normalised(encoder.encode_global(unique_products[start : start + batch_size]))
        for start in range(0, unique_products.numel(), batch_size)
    ]
    return _gather(parts, inverse, shape)


def _gather(parts: list[ViewEmbeddings], inverse: Tensor, shape: torch.Size) -> ViewEmbeddings:
    if not parts:
        empty = torch.zeros(*shape, 0)
        return ViewEmbeddings(empty, empty, torch.zeros(shape, dtype=torch.bool))
    image = torch.cat([p.image for p in parts])[inverse]
    text = torch.cat([p.text for p in parts])[inverse]
    valid = torch.cat([p.image_valid for p in parts])[inverse]
    dim = text.size(-1)
    return ViewEmbeddings(image.reshape(*shape, dim), text.reshape(*shape, dim), valid.reshape(shape))


def encode_targets(
    encoder: RelationEncoder,
    products: Tensor,
    relation_ids: Tensor,
    num_relations: int,
    batch_size: int = 1024,
) -> ViewEmbeddings:
    """Target-side embeddings: conditioned on the relation unless the encoder opts out."""
    if conditions_targets(encoder):
        return encode_pairs(encoder, products, relation_ids, num_relations, batch_size)
    return encode_global(encoder, products, batch_size)


def pair_scores(a: ViewEmbeddings, b: ViewEmbeddings) -> Tensor:
    """The ``avg``-mode similarity of matching rows of ``a`` and ``b`` (broadcast shapes).

    The mean of the four directional cosines (text-text, image-image, text-image,
    image-text) equals ``(t_a + i_a) . (t_b + i_b) / 4``; where either side lacks an image
    the text-text cosine is used instead.
    """
    both = a.image_valid & b.image_valid
    text_text = (a.text * b.text).sum(dim=-1)
    four = ((a.text + a.image) * (b.text + b.image)).sum(dim=-1) / 4.0
    return torch.where(both, four, text_text)


def fused_embedding(views: ViewEmbeddings) -> Tensor:
    """One vector per product: normalised ``text + image`` where the image exists, else text."""
    fused = torch.where(views.image_valid[..., None], views.text + views.image, views.text)
    return F.normalize(fused, dim=-1)
