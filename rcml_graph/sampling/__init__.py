"""Relation-aware sampling of contrastive pairs from a product graph."""

from rcml_graph.sampling.batch import (
    NO_NEGATIVE,
    RELATION_SPECIFIC,
    SAME_CATEGORY,
    PairBatch,
    false_negative_mask,
    false_negative_product_mask,
)
from rcml_graph.sampling.ops import expand_segments
from rcml_graph.sampling.sampler import TRAIN_SPLIT, RelationPairSampler

__all__ = [
    "NO_NEGATIVE",
    "RELATION_SPECIFIC",
    "SAME_CATEGORY",
    "TRAIN_SPLIT",
    "PairBatch",
    "RelationPairSampler",
    "expand_segments",
    "false_negative_mask",
    "false_negative_product_mask",
]
