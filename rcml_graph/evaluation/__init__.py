"""The evaluation suite (project issue 6): tasks, baselines, plots and the report.

Every task is written against :class:`RelationEncoder`; ``rcml_graph.evaluate`` is the Hydra
entry point that runs them for the zero-shot baseline and trained checkpoints.
"""

from rcml_graph.evaluation.baselines import ZeroShotEncoder, image_paths_from_manifest
from rcml_graph.evaluation.classification import (
    category_probe,
    own_image_text_retrieval,
)
from rcml_graph.evaluation.edges import (
    RelationEdges,
    collect_edges,
    product_groups,
    select_queries,
)
from rcml_graph.evaluation.encoders import (
    RelationEncoder,
    ViewEmbeddings,
    encode_global,
    encode_pairs,
    fused_embedding,
    pair_scores,
)
from rcml_graph.evaluation.negatives import (
    NegativeSet,
    random_negatives,
    sensitive_negatives,
)
from rcml_graph.evaluation.plots import plot_hit_per_relation, plot_relation_tsne
from rcml_graph.evaluation.relation_type import (
    relation_type_encoder,
    relation_type_probe,
)
from rcml_graph.evaluation.report import results_markdown
from rcml_graph.evaluation.retrieval_tasks import (
    candidate_retrieval,
    full_corpus_retrieval,
    never_linked_in_train,
    unseen_descriptions,
)
from rcml_graph.evaluation.suite import PROBE_METHOD, TASKS, SuiteSettings, run_tasks
from rcml_graph.evaluation.validation import corrupt_triples, relation_validation

__all__ = [
    "PROBE_METHOD",
    "TASKS",
    "NegativeSet",
    "RelationEdges",
    "RelationEncoder",
    "SuiteSettings",
    "ViewEmbeddings",
    "ZeroShotEncoder",
    "candidate_retrieval",
    "category_probe",
    "collect_edges",
    "corrupt_triples",
    "encode_global",
    "encode_pairs",
    "full_corpus_retrieval",
    "fused_embedding",
    "image_paths_from_manifest",
    "never_linked_in_train",
    "own_image_text_retrieval",
    "pair_scores",
    "plot_hit_per_relation",
    "plot_relation_tsne",
    "product_groups",
    "random_negatives",
    "relation_type_encoder",
    "relation_type_probe",
    "relation_validation",
    "results_markdown",
    "run_tasks",
    "select_queries",
    "sensitive_negatives",
    "unseen_descriptions",
]
