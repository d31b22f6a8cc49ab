"""Build the head, loss and pair sampler of a variant (the same code path for every variant)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch_geometric.data import HeteroData

from rcml_graph.losses import RCMLLoss
from rcml_graph.model.head import RCMLHead
from rcml_graph.model.variants import Variant
from rcml_graph.relations import PRODUCT
from rcml_graph.sampling import RelationPairSampler
from rcml_graph.schema import HeadConfig
from rcml_graph.training.pairs import SelfPairSampler

#: ``pairs`` settings: the variant's choice, self pairs only, or self + relation pairs.
PAIR_MODES = ("auto", "self", "relations")


#: Head hyper-parameters: the typed ``model.head`` config node is the one definition.
HeadOptions = HeadConfig


def head_kwargs(variant: Variant, options: HeadOptions, embed_dim: int, image_token_dim: int,
                text_token_dim: int, num_relations: int) -> dict[str, Any]:
    """The :class:`RCMLHead` keyword arguments of ``variant`` (JSON-serialisable)."""
    beta = variant.resolve_beta(options.beta)
    kwargs = asdict(options)
    kwargs.update(
        embed_dim=embed_dim, image_token_dim=image_token_dim, text_token_dim=text_token_dim,
        beta=beta, learn_beta=options.learn_beta and variant.conditioned,
        relation_mode=variant.relation_mode,
        num_relations=num_relations if variant.relation_mode == "ids" else None,
        # the relation operator belongs to conditioned variants; the control has a free one
        query_operator=(options.query_operator and variant.conditioned) or variant.relation_free_query,
    )
    return kwargs


#: ``train.compile_loss`` settings (see :func:`resolve_compile`).
COMPILE_MODES = ("auto", "true", "false")


def build_loss(variant: Variant, w_inter: float = 1.0, w_intra: float = 1.0,
               mask_false_negatives: bool = True, compile_loss: bool = False) -> RCMLLoss:
    """The variant's :class:`RCMLLoss` (dropped terms get weight 0); ``compile_loss`` runs its
    stacked terms through :func:`torch.compile` (:meth:`RCMLLoss.compile_terms`)."""
    w_inter, w_intra = variant.resolve_weights(w_inter, w_intra)
    loss = RCMLLoss(w_inter, w_intra, mask_false_negatives)
    return loss.compile_terms() if compile_loss else loss


def resolve_compile(setting: object, device: torch.device, conditioned: bool = True) -> bool:
    """Whether ``train.compile_loss`` (``auto``/``true``/``false``, or a bool) compiles.

    ``auto``: on CUDA for relation-conditioned heads only. Measured on an H100
    (docs/benchmarks.md): RCML 70.6k -> 86.4k pairs/s compiled, the CLIP special case 236k ->
    217k (its loss is already a few kernels).
    """
    value = str(setting).lower()
    if value not in COMPILE_MODES:
        raise ValueError(f"train.compile_loss={setting!r}; accepted: {', '.join(COMPILE_MODES)}")
    if value == "auto":
        return device.type == "cuda" and conditioned
    return value == "true"


def resolve_pairs(variant: Variant, pairs: str) -> str:
    """``self`` or ``relations`` for the ``pairs`` setting (``auto`` asks the variant)."""
    if pairs not in PAIR_MODES:
        raise ValueError(f"unknown pairs mode {pairs!r}; accepted: {', '.join(PAIR_MODES)}")
    if pairs == "auto":
        return "self" if variant.self_pairs_only else "relations"
    return pairs


def build_sampler(data: HeteroData, pairs: str, *, batch_size: int, positives_per_anchor: int,
                  seed: int, device: torch.device | str = "cpu",
                  hard_negatives: int = 0, relation_negative_fraction: float = 0.5,
                  false_negative_scope: str = "description") -> RelationPairSampler | SelfPairSampler:
    """Self pairs over every product (``pairs='self'``), or the relation sampler over the
    training edges with one self pair per anchor slot (``'relations'``; the last two
    arguments are :class:`RelationPairSampler`'s, unused by self pairs)."""
    if pairs == "self":
        return SelfPairSampler(int(data[PRODUCT].num_nodes), batch_size=batch_size, seed=seed,
                               device=device)
    if pairs != "relations":
        raise ValueError(f"pairs={pairs!r}; accepted: self, relations")
    return RelationPairSampler(data, batch_size=batch_size, positives_per_anchor=positives_per_anchor,
                               num_hard_negatives=hard_negatives, include_self_pairs=True, seed=seed, device=device,
                               relation_negative_fraction=relation_negative_fraction,
                               false_negative_scope=false_negative_scope)


def build_head(kwargs: dict[str, Any], device: torch.device | str = "cpu") -> RCMLHead:
    return RCMLHead(**kwargs).to(device)
