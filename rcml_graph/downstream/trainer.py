"""Training and evaluation of a link predictor on one relation kind, full-batch or mini-batch.

Training: BCE on the target kind's leakage-free training edges against ``train_negatives``:
``uniform`` (as many random pairs as positives), ``heart`` (one HeaRT-style hard negative per
positive, from its source's pool built on the training graph only:
:func:`build_training_negatives`) or ``mixed`` (one of each per positive). Message passing runs
over every relation kind's training edges
(:func:`~rcml_graph.downstream.splits.message_passing_graph`). Full-batch where the graph fits
(``max_full_batch_nodes``); otherwise mini-batches of training edges whose endpoints' k-hop
neighbourhoods come from :class:`~rcml_graph.downstream.neighbors.NeighborSampler`. Node
features are z-scored per column first (:func:`~rcml_graph.downstream.features.normalize_features`).

Evaluation, three protocols (``metrics[protocol]``):

* ``heart``: OGB MRR of each positive against ``K`` HeaRT-style hard negatives
  (:func:`~rcml_graph.downstream.heart.heart_negatives`);
* ``uniform``: OGB MRR against ``K`` uniformly random negatives of the same source
  (:func:`~rcml_graph.downstream.heart.uniform_negatives`, the ``ogbl-citation2`` protocol);
* ``random``: OGB Hits@K against one shared set of random non-links.

The epoch with the best validation MRR of ``selection`` (``uniform`` by default) is kept;
training stops after ``patience`` validations without a better one, or at ``epochs`` (with a
warning, and ``budget_bound``, when the budget rather than patience ended training).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData
from torch_geometric.utils import negative_sampling

from rcml_graph.downstream.features import FEATURE_NORMS, normalize_features
from rcml_graph.downstream.heart import heart_negatives, random_pair_negatives, uniform_negatives
from rcml_graph.downstream.models import RELATION_AGGRS, LinkPredictor
from rcml_graph.downstream.neighbors import NeighborSampler
from rcml_graph.downstream.pair_scores import PAIR_SCORES, PairScore
from rcml_graph.downstream.score_metrics import evaluation_pair_scores, source_negative_pairs
from rcml_graph.downstream.splits import message_passing_graph, target_edges
from rcml_graph.eval.ogb_eval import link_hits, link_mrr
from rcml_graph.relations import PRODUCT, check_kind, edge_type

__all__ = ["LINKPRED_MODES", "LINKPRED_TASK", "SELECTIONS", "TRAIN_NEGATIVES", "EvaluationSet", "LinkPredOutcome",
           "LinkPredSettings", "build_evaluation_set", "build_training_negatives", "resolve_mode",
           "train_and_evaluate"]

logger = logging.getLogger(__name__)

LINKPRED_TASK = "linkpred"
#: Accepted ``mode`` values: ``auto`` is mini-batch above ``max_full_batch_nodes``.
LINKPRED_MODES: tuple[str, ...] = ("auto", "full", "minibatch")
#: Protocols whose validation MRR can select the epoch.
SELECTIONS: tuple[str, ...] = ("uniform", "heart")
#: Training negatives: random pairs, HeaRT-style hard ones from the training graph, or one of each.
TRAIN_NEGATIVES: tuple[str, ...] = ("uniform", "heart", "mixed")


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
    #: The most epochs; training stops earlier after ``patience`` validations without a better MRR.
    epochs: int = 1000
    eval_every: int = 5
    #: Validations (every ``eval_every`` epochs) without a better selection MRR before stopping;
    #: None trains every epoch.
    patience: int | None = 20
    num_negatives: int = 100
    hits_ks: tuple[int, ...] = (10, 50, 100)
    hits_negatives: int = 10_000
    #: Validation positives used for model selection (a seeded subsample); None for all.
    max_val_queries: int | None = 500
    max_full_batch_nodes: int = 200_000
    device: str = "cpu"
    #: ``standard`` (per-column z-scores) or ``none``.
    feature_norm: str = "standard"
    #: Validation protocol that picks the epoch: ``uniform`` or ``heart``.
    selection: str = "uniform"
    #: ``auto``, ``full`` or ``minibatch``.
    mode: str = "auto"
    #: Training positives per mini-batch (and 4x as many nodes per inference batch).
    batch_size: int = 1024
    #: Mini-batch fan-out per hop (``-1``: every neighbour); as many hops as GNN layers.
    num_neighbors: tuple[int, ...] = (10, 10)
    #: ``to_hetero`` combination of the relation types' messages: ``mean`` or ``sum``.
    relation_aggr: str = "mean"
    #: Training negatives: ``uniform``, ``heart`` (hard, from the training graph) or ``mixed``.
    train_negatives: str = "uniform"
    #: Fixed pair score added to the logit: ``none``, ``cosine`` or ``rcml`` (:mod:`pair_scores`).
    pair_score: str = "none"

    def __post_init__(self) -> None:
        check_kind(self.target_kind)
        for name in ("epochs", "eval_every", "num_negatives", "hits_negatives", "hidden_channels", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be a positive number of validations or None (train every epoch); "
                             f"got {self.patience}")
        for name, accepted in (("feature_norm", FEATURE_NORMS), ("selection", SELECTIONS),
                               ("mode", LINKPRED_MODES), ("relation_aggr", RELATION_AGGRS),
                               ("train_negatives", TRAIN_NEGATIVES), ("pair_score", PAIR_SCORES)):
            if getattr(self, name) not in accepted:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; accepted: {', '.join(accepted)}")
        if len(self.num_neighbors) != self.num_layers:
            raise ValueError(f"num_neighbors needs one fan-out per layer ({self.num_layers}); got {list(self.num_neighbors)}")


def resolve_mode(mode: str, num_nodes: int, max_full_batch_nodes: int) -> str:
    """``full`` or ``minibatch``: ``auto`` goes mini-batch above ``max_full_batch_nodes`` products."""
    if mode not in LINKPRED_MODES:
        raise ValueError(f"unknown mode {mode!r}; accepted: {', '.join(LINKPRED_MODES)}")
    if mode == "auto":
        return "minibatch" if num_nodes > max_full_batch_nodes else "full"
    return mode


@dataclass(frozen=True)
class EvaluationSet:
    """Positives and negatives of one split, fixed per seed so every feature source sees the same.

    Attributes:
        positives: ``(2, P)`` held-out edges of the target kind.
        hard_negatives: ``(P, K)`` HeaRT-style negative targets of each positive's source.
        random_negatives: ``(2, M)`` shared random non-links (for Hits@K).
        uniform_negatives: ``(P, K)`` uniformly random negative targets of each positive's source.
    """

    positives: Tensor
    hard_negatives: Tensor
    random_negatives: Tensor
    uniform_negatives: Tensor


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
    uniform = uniform_negatives(positives[0], int(data[PRODUCT].num_nodes), settings.num_negatives, true_links,
                                generator)
    return EvaluationSet(positives, hard, shared, uniform)


def build_training_negatives(data: HeteroData, settings: LinkPredSettings, generator: torch.Generator,
                             message_edge_index: Tensor | None = None) -> Tensor:
    """``(P, K)`` HeaRT-style negative targets for each training positive, from training data only.

    The same construction as the evaluation's hard negatives (:func:`heart_negatives`, ``K =
    settings.num_negatives``): the 2-hop neighbourhood in the message-passing graph and the
    category of the source first. Unlike the evaluation, only the source's *training* links of the
    target kind are excluded: excluding held-out links too would tell the model which of its hard
    candidates are the held-out answers (they would be the only ones never pushed down), so a
    validation/test pair may be drawn here, as with the uniform sampler. One pool per distinct
    source; training draws one column of a positive's row per epoch.

    Args:
        data: The built graph.
        settings: ``target_kind`` and ``num_negatives``.
        generator: Seeds the order inside each HeaRT tier.
        message_edge_index: ``(2, E)`` edges of :func:`message_passing_graph` (built when None).

    Returns:
        ``(P, K)`` targets; row ``i`` belongs to column ``i`` of
        ``target_edges(data, settings.target_kind, "train")``.
    """
    train_pos = target_edges(data, settings.target_kind, "train")
    if message_edge_index is None:
        graph = message_passing_graph(data, torch.zeros(int(data[PRODUCT].num_nodes), 1))
        message_edge_index = torch.cat([s.edge_index for s in graph.edge_stores], dim=1)
    sources, row_of_positive = train_pos[0].unique(return_inverse=True)
    pool = heart_negatives(sources, message_edge_index, train_pos, data[PRODUCT].category_id,
                           settings.num_negatives, generator)
    return pool[row_of_positive]


@torch.no_grad()
def _embed(model: LinkPredictor, graph: HeteroData, sampler: NeighborSampler | None, batch_size: int,
           seed: int) -> Tensor:
    """``(N, H)`` embeddings of every product: one pass, or sampled subgraphs of node batches."""
    model.eval()
    if sampler is None:
        return model.encode(graph)
    device = graph[PRODUCT].x.device
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for nodes in torch.arange(sampler.num_nodes).split(batch_size):
        sub = sampler.sample(nodes, generator).to(device)
        parts.append(model.encode(sub)[: nodes.numel()])
    return torch.cat(parts)


def _logits(model: LinkPredictor, h: Tensor, pairs: Tensor, pair_score: PairScore | None,
            product_pairs: Tensor | None = None, fixed: Tensor | None = None) -> Tensor:
    """Logits of ``pairs`` (rows of ``h``); the pair score reads ``product_pairs`` (the same pairs
    as product ids, when ``h`` is a sampled subgraph's) or ``pairs``, unless ``fixed`` holds it."""
    score = fixed
    if score is None and pair_score is not None:
        score = pair_score(pairs if product_pairs is None else product_pairs)
    return model.score(h, pairs, None if score is None else score.to(h.device))


@torch.no_grad()
def _protocol_scores(model: LinkPredictor, h: Tensor, evaluation: EvaluationSet,
                     with_shared: bool = True, fixed: dict[str, Tensor] | None = None) -> dict[str, Tensor]:
    """Model scores of the positives and of each protocol's negatives (on CPU); ``fixed``: the
    pair score of the same pairs (:func:`evaluation_pair_scores`, computed once per set)."""
    device = h.device
    fixed = fixed or {}
    positives = evaluation.positives.to(device)
    scores = {"pos": _logits(model, h, positives, None, fixed=fixed.get("pos"))}
    for name, targets in (("heart", evaluation.hard_negatives), ("uniform", evaluation.uniform_negatives)):
        targets = targets.to(device)
        score = fixed.get(name)
        logits = _logits(model, h, source_negative_pairs(positives[0], targets), None,
                         fixed=None if score is None else score.reshape(-1))
        scores[name] = logits.view_as(targets)
    if with_shared:
        scores["shared"] = _logits(model, h, evaluation.random_negatives.to(device), None, fixed=fixed.get("shared"))
    return {name: value.cpu() for name, value in scores.items()}


@contextlib.contextmanager
def _python_random_seeded(seed: int) -> Iterator[None]:
    """Seed Python's ``random`` for the block, then restore the caller's state.

    PyG's ``negative_sampling`` draws with ``random.sample`` (not torch's RNG), so without this
    the training negatives, and every metric, changed from run to run with the same seed.
    """
    state = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(state)


@dataclass
class LinkPredOutcome:
    """Test metrics at the best validation epoch."""

    metrics: dict[str, dict[str, float]]
    best_epoch: int
    best_val_mrr: float
    history: list[tuple[int, float, float]] = field(default_factory=list)
    #: The learned weight of the pair score at the best epoch (None without one).
    pair_weight: float | None = None
    #: Validation ``heart``/``uniform`` metrics at the best epoch (to choose between configurations).
    val_metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Epochs actually trained (fewer than ``settings.epochs`` when patience stopped training).
    epochs_trained: int = 0
    #: True when ``patience`` validations without improvement ended training.
    stopped_early: bool = False
    #: The epoch budget, not convergence, ended training: with ``patience``, it never fired;
    #: without, the best validation came at the last epoch.
    budget_bound: bool = False


def train_and_evaluate(
    data: HeteroData,
    x: Tensor,
    model_name: str,
    settings: LinkPredSettings,
    seed: int,
    evaluation: dict[str, EvaluationSet] | None = None,
    log: Callable[[str], None] | None = None,
    x_source: Tensor | None = None,
    pair_score: PairScore | None = None,
) -> LinkPredOutcome:
    """Train one link predictor on node features ``x`` ``(N, F)``; return its test metrics.

    Args:
        data: The built graph.
        x: Node features (of the target role, when ``x_source`` is given).
        model_name: ``sage`` or ``mlp``.
        settings: Training and evaluation options.
        seed: Seeds the model, the training negatives and (unless given) the evaluation sets.
        evaluation: ``{"val": ..., "test": ...}`` from :func:`build_evaluation_set`, to share them
            between runs.
        log: Called with a progress line at each validation.
        x_source: ``(N, F)`` source-role features (e.g. RCML's query-side views): an asymmetric
            model (:class:`LinkPredictor` ``asymmetric=True``) scores ``(u, v)`` from
            ``x_source[u]`` and ``x[v]``. Each role is z-scored with its own column
            statistics: RCML's query operator pulls every source of a relation towards one
            region (after z-scores shared with the targets its columns kept ~0.4 std of offset
            and 0.3-0.5 of the targets' spread), the anisotropy that stalls training (measured,
            demo ``also_viewed`` seed 0: HeaRT MRR 0.225 vs 0.141 with shared statistics, MLP).
            None: the symmetric model on ``x``.
        pair_score: The fixed score ``s(u, v)`` of ``settings.pair_score`` (needed unless it is
            ``none``): the model's logit is ``decoder + w * s(u, v)`` with a learned scalar ``w``,
            in training and evaluation alike.

    Returns:
        :class:`LinkPredOutcome` with ``metrics["heart"]`` and ``metrics["uniform"]`` (``mrr``,
        ``hits@1/3/10``, ``n``) and ``metrics["random"]`` (``hits@K``, ``n``).
    """
    num_nodes = int(data[PRODUCT].num_nodes)
    if (settings.pair_score == "none") != (pair_score is None):
        raise ValueError(f"pair_score={settings.pair_score!r} needs a PairScore, and only a pair score other than "
                         "'none' takes one")
    if pair_score is not None and pair_score.num_nodes != num_nodes:
        raise ValueError(f"the pair score covers {pair_score.num_nodes} products; the graph has {num_nodes}")
    mode = resolve_mode(settings.mode, num_nodes, settings.max_full_batch_nodes)
    device = torch.device(settings.device)
    if x_source is None:
        features = normalize_features(x, settings.feature_norm)
    else:
        if x_source.shape != x.shape:
            raise ValueError(f"x_source {tuple(x_source.shape)} and x {tuple(x.shape)} must have the same shape")
        features = torch.cat([normalize_features(x_source, settings.feature_norm),
                              normalize_features(x, settings.feature_norm)], dim=-1)  # (N, 2F): [source | target]
    graph = message_passing_graph(data, features)
    message_edges = torch.cat([s.edge_index for s in graph.edge_stores], dim=1)
    if evaluation is None:
        evaluation = {split: build_evaluation_set(data, split, settings, seed, message_edges)
                      for split in ("val", "test")}
    train_pos = target_edges(data, settings.target_kind, "train")
    if train_pos.size(1) == 0:
        raise ValueError(f"no training edges of kind {settings.target_kind!r}")
    hard_pool, negative_generator = None, torch.Generator().manual_seed(seed * 100_003 + 17)
    if settings.train_negatives != "uniform":
        hard_pool = build_training_negatives(data, settings, negative_generator, message_edges)
    sampler = None
    if mode == "minibatch":
        sampler = NeighborSampler(graph, settings.num_neighbors if model_name == "sage" else ())
    else:
        graph = graph.to(device)

    torch.manual_seed(seed)
    model = LinkPredictor(x.size(1), graph.metadata(), model_name, settings.hidden_channels,
                          settings.num_layers, settings.decoder, settings.dropout, settings.relation_aggr,
                          asymmetric=x_source is not None, pair_score=pair_score is not None).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    best_state, best_mrr, best_epoch, best_val = copy.deepcopy(model.state_dict()), float("-inf"), 0, {}
    history = []
    stale, stopped_early, epoch = 0, False, 0
    # The validation pairs are fixed: their pair score is computed once, not at every validation.
    val_scores = None if pair_score is None else evaluation_pair_scores(pair_score, evaluation["val"], with_shared=False)
    for epoch in range(1, settings.epochs + 1):
        model.train()
        if sampler is None:
            hard = None if hard_pool is None else _draw_hard(train_pos, hard_pool, negative_generator).to(device)
            with _python_random_seeded(seed * 100_003 + epoch):
                loss = _full_batch_step(model, optimizer, graph, train_pos.to(device), num_nodes, hard,
                                        uniform=settings.train_negatives != "heart", pair_score=pair_score)
        else:
            loss = _minibatch_epoch(model, optimizer, sampler, train_pos, settings.batch_size, generator, device,
                                    hard_pool, uniform=settings.train_negatives != "heart", pair_score=pair_score)
        if epoch % settings.eval_every == 0 or epoch == settings.epochs:
            h = _embed(model, graph, sampler, 4 * settings.batch_size, seed)
            scores = _protocol_scores(model, h, evaluation["val"], with_shared=False, fixed=val_scores)
            val_metrics = {name: link_mrr(scores["pos"], scores[name]) for name in ("heart", "uniform")}
            val_mrr = val_metrics[settings.selection]["mrr"]
            history.append((epoch, loss, val_mrr))
            if log is not None:
                log(f"epoch {epoch}: loss {loss:.4f} val {settings.selection} mrr {val_mrr:.4f}")
            if val_mrr > best_mrr:
                best_state, best_mrr, best_epoch, best_val = copy.deepcopy(model.state_dict()), val_mrr, epoch, val_metrics
                stale = 0
            else:
                stale += 1
                if settings.patience is not None and stale >= settings.patience:
                    stopped_early = True
                    break
    epochs_trained = epoch
    if log is not None:
        log(f"stopped at epoch {epoch} ({'patience' if stopped_early else 'budget'}), best epoch {best_epoch}")
    budget_bound = not stopped_early and (settings.patience is not None or best_epoch == epochs_trained)
    if budget_bound:
        logger.warning("link predictor %s, seed %d: %d epochs ended training at best epoch %d before it converged "
                       "(%s); raise linkpred.epochs", model_name, seed, epoch, best_epoch,
                       "patience never fired" if settings.patience is not None else "the best was the last")
    model.load_state_dict(best_state)
    h = _embed(model, graph, sampler, 4 * settings.batch_size, seed)
    test_scores = None if pair_score is None else evaluation_pair_scores(pair_score, evaluation["test"])
    scores = _protocol_scores(model, h, evaluation["test"], fixed=test_scores)
    metrics = {"heart": link_mrr(scores["pos"], scores["heart"]),
               "uniform": link_mrr(scores["pos"], scores["uniform"]),
               "random": link_hits(scores["pos"], scores["shared"], settings.hits_ks)}
    pair_weight = None if model.pair_weight is None else float(model.pair_weight.detach())
    return LinkPredOutcome(metrics, best_epoch, best_mrr, history, pair_weight, best_val, epochs_trained, stopped_early,
                           budget_bound)


def _pair_loss(pos_logit: Tensor, neg_logit: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit)) + \
        F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))


def _draw_hard(positives: Tensor, pool: Tensor, generator: torch.Generator) -> Tensor:
    """``(2, P)`` pairs: each positive's source with one random column of its pool row ``(P, K)``."""
    column = torch.randint(0, pool.size(1), (pool.size(0),), generator=generator)
    return torch.stack([positives[0], pool[torch.arange(pool.size(0)), column]])


def _full_batch_step(model: LinkPredictor, optimizer: torch.optim.Optimizer, graph: HeteroData, train_pos: Tensor,
                     num_nodes: int, hard_negatives: Tensor | None = None, uniform: bool = True,
                     pair_score: PairScore | None = None) -> float:
    """One step; negatives: as many random non-links as positives (``uniform``) and/or ``hard_negatives``."""
    optimizer.zero_grad()
    h = model.encode(graph)
    negatives = [] if hard_negatives is None else [hard_negatives]
    if uniform:
        train_both = torch.cat([train_pos, train_pos.flip(0)], dim=1)
        negatives.insert(0, negative_sampling(train_both, num_nodes=num_nodes, num_neg_samples=train_pos.size(1)))
    loss = _pair_loss(_logits(model, h, train_pos, pair_score),
                      _logits(model, h, torch.cat(negatives, dim=1), pair_score))
    loss.backward()
    optimizer.step()
    return loss.item()


def _minibatch_epoch(model: LinkPredictor, optimizer: torch.optim.Optimizer, sampler: NeighborSampler,
                     train_pos: Tensor, batch_size: int, generator: torch.Generator, device: torch.device,
                     hard_pool: Tensor | None = None, uniform: bool = True,
                     pair_score: PairScore | None = None) -> float:
    """One pass over the training positives; returns the mean batch loss.

    Each batch pairs its positives with as many uniformly random pairs as negatives (``uniform``)
    and/or one draw from each positive's ``hard_pool`` row, samples the k-hop neighbourhood of
    every endpoint and scores the pairs on that subgraph.
    """
    losses = []
    for batch in torch.randperm(train_pos.size(1), generator=generator).split(batch_size):
        parts = [train_pos[:, batch]]
        if uniform:
            parts.append(torch.randint(0, sampler.num_nodes, (2, batch.numel()), generator=generator))
        if hard_pool is not None:
            parts.append(_draw_hard(train_pos[:, batch], hard_pool[batch], generator))
        pairs = torch.cat(parts, dim=1)
        seeds, local = pairs.reshape(-1).unique(return_inverse=True)
        sub = sampler.sample(seeds, generator).to(device)
        optimizer.zero_grad()
        # Seeds lead the subgraph: ``local`` indexes its rows, ``pairs`` holds the product ids.
        logits = _logits(model, model.encode(sub), local.view(2, -1).to(device), pair_score, pairs)
        loss = _pair_loss(logits[: batch.numel()], logits[batch.numel():])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)
