"""Downstream link prediction with relation-conditioned embeddings (project issue 7).

Export a trained encoder's per-product embeddings (:func:`export_embeddings`), attach them to
the graph as node features (:func:`attach_embeddings`) or compute them for any products and
relation string (:func:`conditioned_embeddings`; ``as_query=True`` for the source side of a
query-operator head), and train/evaluate a PyG link predictor (symmetric, or asymmetric with
source-role features) on held-out edges (:func:`train_and_evaluate`, full-batch or mini-batch through
:class:`NeighborSampler`) with HeaRT-style hard negatives and uniform random ones, optionally with
a fixed pair score added to its logit (:class:`PairScore`: :func:`cosine_pair_score`, or RCML's own
``q(u, d_u) . z(v, d_u)`` under the source's training description, :func:`rcml_pair_score`).
"""

from rcml_graph.downstream.export import (
    EmbeddingExport,
    attach_embeddings,
    conditioned_embeddings,
    export_checkpoint,
    export_embeddings,
    graph_hash,
    has_query_side,
    kind_description_ids,
    load_embeddings,
    query_key,
)
from rcml_graph.downstream.features import (
    FEATURE_NORMS,
    FEATURE_SOURCES,
    cache_backbone_features,
    embedding_features,
    normalize_features,
    random_features,
    view_features,
)
from rcml_graph.downstream.heart import heart_negatives, random_pair_negatives, uniform_negatives
from rcml_graph.downstream.models import DECODERS, MODELS, RELATION_AGGRS, EdgeDecoder, LinkPredictor, SAGEEncoder
from rcml_graph.downstream.ledger import LEDGER_NAME, RunLedger, environment, features_fingerprint, run_key
from rcml_graph.downstream.neighbors import NeighborSampler
from rcml_graph.downstream.pair_scores import (
    PAIR_SCORES,
    PairScore,
    cosine_pair_score,
    rcml_pair_score,
    source_descriptions,
)
from rcml_graph.downstream.splits import (
    held_out_pair_keys,
    message_passing_graph,
    pair_keys,
    target_edge_mask,
    target_edges,
)
from rcml_graph.downstream.score_metrics import (
    embedding_score_metrics,
    evaluation_pair_scores,
    pair_score_metrics,
    source_negative_pairs,
)
from rcml_graph.downstream.trainer import (
    LINKPRED_MODES,
    LINKPRED_TASK,
    SELECTIONS,
    TRAIN_NEGATIVES,
    EvaluationSet,
    LinkPredOutcome,
    LinkPredSettings,
    build_evaluation_set,
    build_training_negatives,
    resolve_mode,
    train_and_evaluate,
)
from rcml_graph.downstream.rows import linkpred_rows, row_identity, settings_label

__all__ = [
    "DECODERS",
    "FEATURE_NORMS",
    "FEATURE_SOURCES",
    "LEDGER_NAME",
    "LINKPRED_MODES",
    "LINKPRED_TASK",
    "MODELS",
    "PAIR_SCORES",
    "RELATION_AGGRS",
    "SELECTIONS",
    "TRAIN_NEGATIVES",
    "EdgeDecoder",
    "EmbeddingExport",
    "EvaluationSet",
    "LinkPredOutcome",
    "LinkPredSettings",
    "LinkPredictor",
    "NeighborSampler",
    "PairScore",
    "RunLedger",
    "SAGEEncoder",
    "attach_embeddings",
    "build_evaluation_set",
    "build_training_negatives",
    "cache_backbone_features",
    "conditioned_embeddings",
    "cosine_pair_score",
    "embedding_features",
    "embedding_score_metrics",
    "environment",
    "evaluation_pair_scores",
    "export_checkpoint",
    "export_embeddings",
    "features_fingerprint",
    "graph_hash",
    "has_query_side",
    "heart_negatives",
    "held_out_pair_keys",
    "kind_description_ids",
    "linkpred_rows",
    "load_embeddings",
    "message_passing_graph",
    "normalize_features",
    "pair_keys",
    "pair_score_metrics",
    "source_negative_pairs",
    "query_key",
    "random_features",
    "random_pair_negatives",
    "rcml_pair_score",
    "resolve_mode",
    "row_identity",
    "run_key",
    "settings_label",
    "source_descriptions",
    "target_edge_mask",
    "target_edges",
    "train_and_evaluate",
    "uniform_negatives",
    "view_features",
]
