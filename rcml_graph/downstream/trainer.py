"""Full-batch training and evaluation of a link predictor on one relation kind.

Training: BCE on the target kind's leakage-free training edges against as many random
negatives (``torch_geometric.utils.negative_sampling``), message passing over every relation
kind's training edges (:func:`~rcml_graph.downstream.splits.message_passing_graph`). The
epoch with the best validation MRR is kept. Test: OGB MRR of each positive against ``K``
HeaRT-style negatives (:func:`~rcml_graph.downstream.heart.heart_negatives`) and OGB Hits@K
against one shared set of random non-links.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.utils import negative_sampling

from rcml_graph.downstream.heart import heart_negatives, random_pair_negatives
from rcml_graph.downstream.models import LinkPredictor
from rcml_graph.downstream.splits import message_passing_graph, target_edges
from rcml_graph.eval.ogb_eval import link_hits, link_mrr
from rcml_graph.eval.results import ResultRow
from rcml_graph.relations import PRODUCT, check_kind, edge_type

__all__ = ["LINKPRED_TASK", "EvaluationSet", "LinkPredOutcome", "LinkPredSettings", "build_evaluation_set", "linkpred_rows",
           "train_and_evaluate"]

LINKPRED_TASK = "linkpred"


@dataclass(frozen=True)
class LinkPredSettings:
    """Options of :func:`train_and_evaluate` (``linkpred:`` config node)."""

    target_kind: str = "also_bought"
    hidden_channels: int = 64
    num_layers: int = 2
    decoder: str = "mlp"
    dropout: float = 0.0
    lr: float = 0.01
    weight_decay: float = 0.0
    epochs: int = 100
    eval_every: int = 5
    num_negatives: int = 100
    hits_ks: tuple[int, ...] = (10, 50, 100)
    hits_negatives: int = 10_000
    #: Validation positives used for model selection (a seeded subsample); None for all.
    max_val_queries: int | None = 500
    max_full_batch_nodes: int = 200_000
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_kind(self.target_kind)
        for name in ("epochs", "eval_every", "num_negatives", "hits_negatives", "hidden_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")


@dataclass(frozen=True)
class EvaluationSet:
    """Positives and negatives of one split, fixed per seed so every feature source sees the same.

    Attributes:
        positives: ``(2, P)`` held-out edges of the target kind.
        hard_negatives: ``(P, K)`` HeaRT-style negative targets of each positive's source.
        random_negatives: ``(2, M)`` shared random non-links (for Hits@K).
    """

    positives: Tensor
    hard_negatives: Tensor
    random_negatives: Tensor


def build_evaluation_set(data: HeteroData, split: str, settings: LinkPredSettings, seed: int,
                         message_edge_index: Tensor | None = None) -> EvaluationSet:
    """Positives of ``split`` with their HeaRT and random negatives (seeded)."""
    positives = target_edges(data, settings.target_kind, split)
    if positives.size(1) == 0:
        raise ValueError(f"no {split} edges of kind {settings.target_kind!r}; pick another linkpred.target_kind")
    if message_edge_index is None:
        x = torch.zeros(int(data[PRODUCT].num_nodes), 1)
        graph = message_passing_graph(data, x)
        message_edge_index = torch.cat([s.edge_index for s in graph.edge_stores], dim=1)
    true_links = data[edge_type(settings.target_kind)].edge_index
    generator = torch.Generator().manual_seed(seed * 1000 + (1 if split == "val" else 2))
    if split == "val" and settings.max_val_queries is not None and positives.size(1) > settings.max_val_queries:
        keep = torch.randperm(positives.size(1), generator=generator)[: settings.max_val_queries]
        positives = positives[:, keep.sort().values]
    hard = heart_negatives(positives[0], message_edge_index, true_links, data[PRODUCT].category_id,
                           settings.num_negatives, generator)
    shared = random_pair_negatives(int(data[PRODUCT].num_nodes), settings.hits_negatives, true_links, generator)
    return EvaluationSet(positives, hard, shared)


@torch.no_grad()
def _score(model: LinkPredictor, graph: HeteroData, evaluation: EvaluationSet) -> tuple[Tensor, Tensor, Tensor]:
    model.eval()
    h = model.encode(graph)
    pos = model.decoder(h, evaluation.positives)
    sources = evaluation.positives[0][:, None].expand_as(evaluation.hard_negatives)
    hard_pairs = torch.stack([sources.reshape(-1), evaluation.hard_negatives.reshape(-1)])
    hard = model.decoder(h, hard_pairs).view_as(evaluation.hard_negatives)
    shared = model.decoder(h, evaluation.random_negatives)
    return pos.cpu(), hard.cpu(), shared.cpu()


@dataclass
class LinkPredOutcome:
    """Test metrics at the best validation epoch."""

    metrics: dict[str, dict[str, float]]
    best_epoch: int
    best_val_mrr: float
    history: list[tuple[int, float, float]] = field(default_factory=list)


def train_and_evaluate(
    data: HeteroData,
    x: Tensor,
    model_name: str,
    settings: LinkPredSettings,
    seed: int,
    evaluation: dict[str, EvaluationSet] | None = None,
    log: Callable[[str], None] | None = None,
) -> LinkPredOutcome:
    """Train one link predictor on node features ``x`` ``(N, F)``; return its test metrics.

    Args:
        data: The built graph.
        x: Node features.
        model_name: ``sage`` or ``mlp``.
        settings: Training and evaluation options.
        seed: Seeds the model, the training negatives and (unless given) the evaluation sets.
        evaluation: ``{"val": ..., "test": ...}`` from :func:`build_evaluation_set`, to share them
            between runs.
        log: Called with a progress line at each validation.

    Returns:
        :class:`LinkPredOutcome` with ``metrics["heart"]`` (``mrr``, ``hits@1/3/10``) and
        ``metrics["random"]`` (``hits@K``).
    """
    num_nodes = int(data[PRODUCT].num_nodes)
    if num_nodes > settings.max_full_batch_nodes:
        raise ValueError(
            f"the graph has {num_nodes} products, above linkpred.max_full_batch_nodes="
            f"{settings.max_full_batch_nodes}; mini-batch link prediction is not implemented "
            "(raise the limit if the graph fits in memory)")
    device = torch.device(settings.device)
    graph = message_passing_graph(data, x.float()).to(device)
    message_edges = torch.cat([s.edge_index for s in graph.edge_stores], dim=1).cpu()
    if evaluation is None:
        evaluation = {split: build_evaluation_set(data, split, settings, seed, message_edges)
                      for split in ("val", "test")}
    train_pos = target_edges(data, settings.target_kind, "train").to(device)
    if train_pos.size(1) == 0:
        raise ValueError(f"no training edges of kind {settings.target_kind!r}")
    train_both = torch.cat([train_pos, train_pos.flip(0)], dim=1)

    torch.manual_seed(seed)
    model = LinkPredictor(x.size(1), graph.metadata(), model_name, settings.hidden_channels,
                          settings.num_layers, settings.decoder, settings.dropout).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    best_state, best_mrr, best_epoch = copy.deepcopy(model.state_dict()), float("-inf"), 0
    history = []
    for epoch in range(1, settings.epochs + 1):
        model.train()
        optimizer.zero_grad()
        h = model.encode(graph)
        negatives = negative_sampling(train_both, num_nodes=num_nodes, num_neg_samples=train_pos.size(1))
        pos_logit = model.decoder(h, train_pos)
        neg_logit = model.decoder(h, negatives)
        loss = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit)) + \
            F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))
        loss.backward()
        optimizer.step()
        if epoch % settings.eval_every == 0 or epoch == settings.epochs:
            pos, hard, _ = _score(model, graph, _to(evaluation["val"], device))
            val_mrr = link_mrr(pos, hard)["mrr"]
            history.append((epoch, loss.item(), val_mrr))
            if log is not None:
                log(f"epoch {epoch}: loss {loss.item():.4f} val mrr {val_mrr:.4f}")
            if val_mrr > best_mrr:
                best_state, best_mrr, best_epoch = copy.deepcopy(model.state_dict()), val_mrr, epoch
    model.load_state_dict(best_state)
    pos, hard, shared = _score(model, graph, _to(evaluation["test"], device))
    heart = link_mrr(pos, hard)
    random = link_hits(pos, shared, settings.hits_ks)
    return LinkPredOutcome({"heart": heart, "random": random}, best_epoch, best_mrr, history)


def _to(evaluation: EvaluationSet, device: torch.device) -> EvaluationSet:
    return EvaluationSet(*(t.to(device) for t in (evaluation.positives, evaluation.hard_negatives,
                                                   evaluation.random_negatives)))


def linkpred_rows(outcome: LinkPredOutcome, method: str, model_name: str, seed: int,
                  target_kind: str) -> list[ResultRow]:
    """Long-form result rows: ``mrr``/``hits@1/3/10`` (protocol ``heart``), ``hits@K`` (``random``)."""
    rows = []
    for protocol, metrics in outcome.metrics.items():
        n = int(metrics["n"])
        for metric, value in metrics.items():
            if metric == "n":
                continue
            rows.append(ResultRow(task=LINKPRED_TASK, method=method, seed=seed, mode=None, metric=metric,
                                  value=float(value), n=n,
                                  extra={"model": model_name, "protocol": protocol, "relation": target_kind}))
    return rows


def seeds_list(seeds: Sequence[int]) -> list[int]:
    if not seeds:
        raise ValueError("linkpred.seeds is empty; give at least one seed, e.g. [0, 1, 2]")
    return [int(s) for s in seeds]
