"""The RCML head: relation encoder, relation-guided cross-attention, projections, variants."""

from rcml_graph.model.attention import RelationCrossAttention
from rcml_graph.model.features import ProductFeatures
from rcml_graph.model.head import PairEmbeddings, RCMLHead, ViewEmbeddings
from rcml_graph.model.projection import PROJECTION_KINDS, ProjectionHead
from rcml_graph.model.relation_encoder import RELATION_MODES, RelationEncoder
from rcml_graph.model.variants import VARIANTS, Variant, get_variant

__all__ = [
    "PROJECTION_KINDS",
    "RELATION_MODES",
    "VARIANTS",
    "PairEmbeddings",
    "ProductFeatures",
    "ProjectionHead",
    "RCMLHead",
    "RelationCrossAttention",
    "RelationEncoder",
    "Variant",
    "ViewEmbeddings",
    "get_variant",
]
