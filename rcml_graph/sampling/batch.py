"""The batch a :class:`~rcml_graph.sampling.RelationPairSampler` yields, and its dense mask."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Final

import torch
from torch import Tensor

from rcml_graph.sampling.ops import expand_segments

#: ``hard_neg_kind`` values.
NO_NEGATIVE: Final = -1
SAME_CATEGORY: Final = 0
RELATION_SPECIFIC: Final = 1


@dataclass
class PairBatch:
    """One batch of ``P`` pairs: the relation positives followed by the self pairs.

    Attributes:
        src: (P,) anchor product index.
        dst: (P,) target product index (``== src`` for self pairs).
        desc_id: (P,) index into ``data.relation_text`` (0 for self pairs).
        is_self: (P,) bool, True for intra-sample pairs.
        hard_neg: (P, H) hard-negative product index, -1 where none was found.
        hard_neg_kind: (P, H) int8, :data:`SAME_CATEGORY`, :data:`RELATION_SPECIFIC` or
            :data:`NO_NEGATIVE`.
        products: (U,) unique products of ``src``, ``dst`` and ``hard_neg`` in order of first
            reference (anchors first), so a model encodes each product once per step.
        src_local: (P,) position of ``src`` in ``products``.
        dst_local: (P,) position of ``dst`` in ``products``.
        hard_neg_local: (P, H) position of ``hard_neg`` in ``products``, -1 where none.
        false_negative_index: (2, F) ``(pair, local product)`` entries: product
            ``products[u]`` is linked to pair ``i``'s anchor under its description (under any
            description with the sampler's ``false_negative_scope="any_link"``; an entry may
            then repeat), so it must not be a negative for pair ``i``. Includes each pair's
            own target. See :func:`false_negative_mask`.
    """

    src: Tensor
    dst: Tensor
    desc_id: Tensor
    is_self: Tensor
    hard_neg: Tensor
    hard_neg_kind: Tensor
    products: Tensor
    src_local: Tensor
    dst_local: Tensor
    hard_neg_local: Tensor
    false_negative_index: Tensor

    @property
    def num_pairs(self) -> int:
        return self.src.numel()

    def to(self, device: torch.device | str) -> PairBatch:
        """A copy with every tensor on ``device``."""
        return PairBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


def false_negative_product_mask(batch: PairBatch) -> Tensor:
    """(P, U) bool: True where ``batch.products[u]`` must not be a negative for pair ``i``.

    For a loss whose candidates are the batch's unique products.
    """
    num_pairs, num_products = batch.num_pairs, batch.products.numel()
    rows, cols = batch.false_negative_index
    mask = torch.zeros(num_pairs * num_products, dtype=torch.bool, device=batch.src.device)
    mask[rows * num_products + cols] = True
    return mask.view(num_pairs, num_products)


def false_negative_mask(batch: PairBatch, with_hard_negatives: bool = False) -> Tensor:
    """The dense false-negative mask of ``batch`` over its pairs' targets.

    Args:
        batch: a batch from :class:`~rcml_graph.sampling.RelationPairSampler`.
        with_hard_negatives: also return columns for the flattened hard negatives.

    Returns:
        Bool tensor (P, P), or (P, P + P * H) with ``with_hard_negatives``: entry ``[i, j]``
        is True when column ``j``'s product is linked to ``batch.src[i]`` under
        ``batch.desc_id[i]`` in the training graph (the self relation links a product only
        to itself; any description under the sampler's ``false_negative_scope="any_link"``),
        so it must not be a negative for pair ``i``. Columns are ``batch.dst``
        then ``batch.hard_neg.flatten()``; a missing hard negative (-1) is never True. The
        diagonal is True: a loss keeps ``(i, i)`` as the positive and drops the other True
        entries from the negatives.
    """
    columns = batch.dst_local
    if with_hard_negatives:
        columns = torch.cat([columns, batch.hard_neg_local.flatten()])
    # join the (pair, product) coordinates with the columns grouped by product
    sorted_columns, order = torch.sort(columns, stable=True)
    rows, products = batch.false_negative_index
    low = torch.searchsorted(sorted_columns, products)
    high = torch.searchsorted(sorted_columns, products, right=True)
    which, position = expand_segments(low, high - low)
    num_pairs, num_columns = batch.num_pairs, columns.numel()
    mask = torch.zeros(num_pairs * num_columns, dtype=torch.bool, device=batch.src.device)
    mask[rows.index_select(0, which) * num_columns + order.index_select(0, position)] = True
    return mask.view(num_pairs, num_columns)
