"""Run every evaluation task for one encoder and one seed, as long-form result rows."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from rcml_graph.eval.results import ExtraValue, ResultRow
from rcml_graph.evaluation.classification import (
    category_probe,
    own_image_text_retrieval,
)
from rcml_graph.evaluation.edges import RelationEdges, product_groups, select_queries
from rcml_graph.evaluation.encoders import (
    RelationEncoder,
    encode_global,
    encode_targets,
    fused_embedding,
)
from rcml_graph.evaluation.negatives import random_negatives, sensitive_negatives
from rcml_graph.evaluation.relation_type import (
    relation_type_encoder,
    relation_type_probe,
)
from rcml_graph.evaluation.retrieval_tasks import (
    candidate_retrieval,
    full_corpus_retrieval,
    never_linked_in_train,
    unseen_descriptions,
)
from rcml_graph.evaluation.validation import relation_validation
from rcml_graph.relations import PRODUCT, RELATION_KINDS, paraphrase

__all__ = ["PROBE_METHOD", "TASKS", "SuiteSettings", "metric_rows", "run_tasks"]

#: Task names, in the order they run.
TASKS: tuple[str, ...] = (
    "retrieval",
    "retrieval_sensitive",
    "retrieval_unseen",
    "relation_type",
    "relation_validation",
    "classification",
    "retention",
)
#: Method label of the relation-type baseline classifier on frozen backbone features.
PROBE_METHOD = "backbone_probe"


@dataclass(frozen=True)
class SuiteSettings:
    """Sizes of the evaluation; see ``configs/eval/default.yaml``.

    Attributes:
        num_negatives: Negatives per retrieval query (the paper: 20).
        max_queries: Test edges per task (seeded subsample); None for all.
        max_train_edges: Training edges the probes and the validation classifier fit on.
        full_corpus_queries: Queries of full-corpus retrieval; 0 skips it.
        batch_size: Distinct pairs per encoder call.
        probe_test_ratio: Held-out share of products of the category probe.
        tasks: Which of :data:`TASKS` to run.
    """

    num_negatives: int = 20
    max_queries: int | None = 2000
    max_train_edges: int | None = 5000
    full_corpus_queries: int | None = 500
    batch_size: int = 1024
    probe_test_ratio: float = 0.3
    tasks: tuple[str, ...] = TASKS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown evaluation task(s) {unknown}; accepted: {', '.join(TASKS)}")
        if self.num_negatives < 1:
            raise ValueError(f"num_negatives must be positive; got {self.num_negatives}")


def metric_rows(
    task: str,
    method: str,
    seed: int,
    mode: str | None,
    metrics: Mapping[str, float],
    extra: Mapping[str, ExtraValue] | None = None,
    n: int | None = None,
) -> list[ResultRow]:
    """One :class:`ResultRow` per metric of ``metrics`` (its ``"n"`` entry gives ``n``); NaNs dropped."""
    count = int(metrics["n"]) if n is None else n
    return [
        ResultRow(task, method, seed, mode, name, float(value), count, dict(extra or {}))
        for name, value in metrics.items()
        if name != "n" and not math.isnan(float(value))
    ]


def _nested_rows(
    task: str, method: str, seed: int, results: Mapping[str, Mapping[str, Mapping[str, float]]], protocol: str
) -> list[ResultRow]:
    rows: list[ResultRow] = []
    for subset, per_mode in results.items():
        for mode, metrics in per_mode.items():
            if metrics["n"] > 0:
                rows += metric_rows(task, method, seed, mode, metrics, {"protocol": protocol, "subset": subset})
    return rows


def _subsets(edges: RelationEdges, query_index: Tensor, per_kind: bool) -> dict[str, Tensor]:
    subsets = {
        "all": torch.ones(query_index.numel(), dtype=torch.bool),
        "never_linked_in_train": never_linked_in_train(edges, query_index),
    }
    if per_kind:
        kinds = edges.kind_id[query_index]
        for kind_id, kind in enumerate(RELATION_KINDS):
            if bool((kinds == kind_id).any()):
                subsets[f"kind={kind}"] = kinds == kind_id
    return subsets


def run_tasks(
    data: HeteroData,
    edges: RelationEdges,
    encoder: RelationEncoder,
    method: str,
    seed: int,
    settings: SuiteSettings = SuiteSettings(),
    probe_features: Tensor | None = None,
    log: Callable[[str], None] | None = None,
) -> list[ResultRow]:
    """Every task of ``settings.tasks`` for ``encoder`` under ``seed``.

    Args:
        data: The graph (for communities, categories).
        edges: Its relation edges (:func:`~rcml_graph.evaluation.edges.collect_edges`).
        encoder: The model under test.
        method: Its label in the rows.
        seed: Seed of query subsampling, negatives, corruptions and probes; the same seed
            gives the same numbers.
        settings: Sizes.
        probe_features: ``(N, D)`` frozen backbone features; when given, the relation-type
            baseline classifier runs on them (method :data:`PROBE_METHOD`).
        log: Called with a short message before each task.

    Returns:
        Long-form rows (tasks, metrics and ``n`` as in :mod:`rcml_graph.eval.results`).
    """
    def generator(offset: int) -> torch.Generator:
        # One stream per task, so the numbers of a task do not depend on which others ran.
        return torch.Generator().manual_seed(seed * 1009 + offset)

    def say(message: str) -> None:
        if log is not None:
            log(f"[{method} seed={seed}] {message}")

    rows: list[ResultRow] = []
    k = settings.num_negatives
    groups = product_groups(data)
    test_index = select_queries(edges, "test", settings.max_queries, generator(1))
    sources, targets, desc = edges.source[test_index], edges.target[test_index], edges.desc_id[test_index]
    if "retrieval" in settings.tasks and test_index.numel():
        say("relation-guided retrieval, random negatives")
        negatives = random_negatives(edges, sources, targets, desc, k, generator(2))
        results = candidate_retrieval(
            encoder, edges, test_index, negatives, _subsets(edges, test_index, per_kind=True),
            batch_size=settings.batch_size,
        )
        rows += _nested_rows("retrieval", method, seed, results, "random")
        if settings.full_corpus_queries != 0:
            say("full-corpus retrieval")
            corpus_index = select_queries(edges, "test", settings.full_corpus_queries, generator(3))
            results = full_corpus_retrieval(
                encoder, edges, corpus_index, _subsets(edges, corpus_index, per_kind=False),
                batch_size=settings.batch_size,
            )
            rows += _nested_rows("retrieval", method, seed, results, "full_corpus")
    if "retrieval_sensitive" in settings.tasks and test_index.numel():
        say("relation-sensitive retrieval, hard negatives")
        negatives = sensitive_negatives(edges, sources, targets, desc, groups, k, generator(4))
        results = candidate_retrieval(
            encoder, edges, test_index, negatives, _subsets(edges, test_index, per_kind=True),
            batch_size=settings.batch_size,
        )
        rows += _nested_rows("retrieval_sensitive", method, seed, results, "sensitive")
        shares = {
            "hard_share": negatives.hard.double().mean().item(),
            "linked_other_share": negatives.linked_other.double().mean().item(),
            "n": test_index.numel(),
        }
        rows += metric_rows("retrieval_sensitive", method, seed, None, shares,
                            {"protocol": "sensitive", "subset": "all"})
    if "retrieval_unseen" in settings.tasks:
        unseen_index = select_queries(edges, "test", settings.max_queries, generator(5), unseen_descriptions(edges))
        if unseen_index.numel():
            say(f"unseen descriptions ({unseen_index.numel()} queries)")
            u_src, u_dst, u_desc = (edges.source[unseen_index], edges.target[unseen_index],
                                    edges.desc_id[unseen_index])
            subsets = {"unseen_description": torch.ones(unseen_index.numel(), dtype=torch.bool)}
            for protocol, negatives in (
                ("random", random_negatives(edges, u_src, u_dst, u_desc, k, generator(6))),
                ("sensitive", sensitive_negatives(edges, u_src, u_dst, u_desc, groups, k, generator(7))),
            ):
                results = candidate_retrieval(encoder, edges, unseen_index, negatives, subsets,
                                              batch_size=settings.batch_size)
                rows += _nested_rows("retrieval_unseen", method, seed, results, protocol)
        else:
            say("unseen descriptions: every test description also occurs in training; skipped")
    train_index = select_queries(edges, "train", settings.max_train_edges, generator(8))
    if "relation_type" in settings.tasks and test_index.numel():
        say("relation-type prediction")
        metrics = relation_type_encoder(encoder, edges, test_index, batch_size=settings.batch_size)
        extra = {"subset": "all"}
        rows += metric_rows("relation_type", method, seed, None, metrics, extra)
        if probe_features is not None and train_index.numel():
            metrics = relation_type_probe(probe_features, edges, train_index, test_index, seed)
            rows += metric_rows("relation_type", PROBE_METHOD, seed, None, metrics, extra)
    if "relation_validation" in settings.tasks and test_index.numel() and train_index.numel():
        say("relation validation")
        metrics = relation_validation(encoder, edges, train_index, test_index, seed,
                                      batch_size=settings.batch_size)
        rows += metric_rows("relation_validation", method, seed, None, metrics, {"subset": "all"})
    need_global = {"classification", "retention"} & set(settings.tasks)
    if need_global:
        views = encode_global(encoder, torch.arange(edges.num_nodes), settings.batch_size)
        labels = getattr(data[PRODUCT], "category_id", None)
        if "classification" in settings.tasks and labels is not None:
            say("leaf-category linear probe")
            metrics = category_probe(fused_embedding(views), labels.long(), seed, settings.probe_test_ratio)
            rows += metric_rows("classification", method, seed, None, metrics, {"subset": "all"})
        if "retention" in settings.tasks:
            say("own image<->text retrieval")
            # A product's own image and text are linked by the self relation (description 0):
            # a relation-conditioned model is scored on its views under it, as it was trained.
            nodes = torch.arange(edges.num_nodes)
            own_views = encode_targets(encoder, nodes, torch.zeros_like(nodes),
                                       len(data.relation_text), settings.batch_size)
            for mode, metrics in own_image_text_retrieval(own_views).items():
                rows += metric_rows("retention", method, seed, mode, metrics, {"subset": "own_pair"})
    # Last: it appends descriptions to the encoder's table.
    if "retrieval_unseen" in settings.tasks and test_index.numel():
        rows += _paraphrased_retrieval(encoder, data, edges, test_index, groups, k, generator, settings,
                                       method, seed, say)
    return rows


def _paraphrased_retrieval(encoder: RelationEncoder, data: HeteroData, edges: RelationEdges,
                           test_index: Tensor, groups: Tensor, k: int,
                           generator: Callable[[int], torch.Generator], settings: SuiteSettings,
                           method: str, seed: int, say: Callable[[str], None]) -> list[ResultRow]:
    """The test queries again, each description replaced by an unseen paraphrase.

    Same queries and negatives as ``retrieval`` / ``retrieval_sensitive`` (same generators), so
    the ``paraphrased`` subset compares directly with their ``all`` subset: what the model keeps
    when the relation is worded in a way it never saw. Needs an encoder that can embed new
    descriptions (``add_description``, and ``accepts_new_descriptions`` not False); others are
    skipped.
    """
    add = getattr(encoder, "add_description", None)
    if not getattr(encoder, "accepts_new_descriptions", True):  # e.g. a relation-ids head
        add = None
    texts = list(getattr(data, "relation_text", []) or [])
    if add is None or not texts:
        say("paraphrased descriptions: the encoder cannot embed new descriptions; skipped")
        return []
    desc = edges.desc_id[test_index]
    mapping: dict[int, int] = {}
    for d in torch.unique(desc).tolist():
        text = paraphrase(texts[d])
        if text is not None:
            mapping[d] = add(text)
    keep = torch.tensor([int(d) in mapping for d in desc.tolist()], dtype=torch.bool)
    if not bool(keep.any()):
        say("paraphrased descriptions: no test description has a template paraphrase; skipped")
        return []
    say(f"paraphrased descriptions ({len(mapping)} descriptions, {int(keep.sum())} queries)")
    new_desc = edges.desc_id.clone()
    lookup = torch.arange(max(mapping.values()) + 1)
    for old, new in mapping.items():
        lookup[old] = new
    new_desc[test_index] = lookup[desc]
    paraphrased = RelationEdges(edges.source, edges.target, new_desc, edges.kind_id, edges.split,
                                edges.num_nodes, int(lookup.max()) + 1)
    sources, targets = edges.source[test_index], edges.target[test_index]
    rows: list[ResultRow] = []
    for task, protocol, negatives in (
        ("retrieval_unseen", "random", random_negatives(edges, sources, targets, desc, k, generator(2))),
        ("retrieval_unseen", "sensitive",
         sensitive_negatives(edges, sources, targets, desc, groups, k, generator(4))),
    ):
        results = candidate_retrieval(encoder, paraphrased, test_index, negatives, {"paraphrased": keep},
                                      batch_size=settings.batch_size)
        rows += _nested_rows(task, method, seed, results, protocol)
    return rows
