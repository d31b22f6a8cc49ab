"""One contrastive training step's loss: a :class:`PairBatch` through the head and the loss."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rcml_graph.losses import RCMLLoss, view_keys, world_size
from rcml_graph.model.features import ProductFeatures
from rcml_graph.sampling import PairBatch, false_negative_mask
from rcml_graph.training.sources import FeatureSource


def explicit_negatives(batch: PairBatch, random_negatives: int, pairs: slice | None = None,
                       generator: torch.Generator | None = None) -> Tensor | None:
    """``(P, H + R)`` local product indices (-1 for none) of each pair's explicit negatives.

    The sampler's ``H`` hard negatives (same category, linked under another relation) followed
    by ``R`` products drawn uniformly from the batch's product table. A random draw that is the
    pair's anchor or is linked to it under the pair's relation (the batch's
    ``false_negative_index``, which includes the pair's own target) becomes -1. The head embeds
    every column under the pair's relation, so a pair is contrasted with candidates as retrieval
    scores them (the query's relation applied to every candidate). None when there are none.
    """
    select = pairs if pairs is not None else slice(None)
    hard = batch.hard_neg_local[select]  # (P, H)
    if random_negatives <= 0:
        return hard if hard.shape[1] > 0 else None
    num_pairs, num_products = batch.num_pairs, batch.products.numel()
    device = batch.src_local.device
    excluded = torch.zeros(num_pairs, num_products, dtype=torch.bool, device=device)  # (P_all, U)
    rows, local = batch.false_negative_index
    excluded[rows, local] = True
    excluded[torch.arange(num_pairs, device=device), batch.src_local] = True
    excluded = excluded[select]
    draws = torch.randint(num_products, (excluded.shape[0], random_negatives), device=device,
                          generator=generator)  # (P, R)
    draws = torch.where(excluded.gather(1, draws), torch.full_like(draws, -1), draws)
    return torch.cat([hard, draws], dim=1)


def pair_loss(
    model: nn.Module,
    loss_fn: RCMLLoss,
    batch: PairBatch,
    source: FeatureSource,
    description_table: Tensor | None,
    num_relations: int,
    device: torch.device | str = "cpu",
    graph_false_negatives: bool = True,
    pairs: slice | None = None,
    *,
    conditioned: bool = False,
    random_negatives: int = 0,
    w_global: float = 0.0,
    features: ProductFeatures | None = None,
) -> tuple[Tensor, dict[str, Tensor], int]:
    """The loss of ``batch`` (or of its pairs ``pairs``, this rank's shard under DDP).

    Each of the batch's distinct products is read/encoded once; pairs index into that table.
    False negatives: view keys (same source or target view) always, and with
    ``graph_false_negatives`` the sampler's graph mask ``(P, P)``: pair ``j``'s target is no
    negative for pair ``i`` when it is linked to ``i``'s anchor under ``i``'s description.

    Negatives under the anchor's relation: with ``conditioned`` (a relation-conditioned head),
    pair ``j``'s target view was embedded under ``j``'s relation, so it is a candidate of pair
    ``i`` only when both share the relation; the explicit negatives (the sampler's hard
    negatives plus ``random_negatives`` in-batch products, see :func:`explicit_negatives`) are
    embedded under each pair's own relation. A global-only head (CLIP, unconditioned) embeds a
    product identically under every relation, so it keeps every in-batch candidate and gets the
    same hard negatives (its random draws would repeat in-batch candidates and are skipped).

    ``w_global`` (conditioned heads): add ``w_global`` times the same loss on the head's
    relation-free views (``beta = 1`` through the same projections) with every in-batch
    candidate, the unconditioned model's objective. The relation-conditioned term sees only the
    candidates embedded under each pair's relation (a few dozen); this auxiliary term trains the
    shared projections with the whole batch as negatives.

    ``features``: the batch's product table when the caller has it already (under DDP each
    rank encodes a share of it, :func:`rcml_graph.training.distributed.sharded_product_features`);
    None reads it from ``source``.

    Returns:
        ``(loss, terms, number of pairs)``.
    """
    select = pairs if pairs is not None else slice(None)
    src, dst, desc = batch.src[select], batch.dst[select], batch.desc_id[select]
    if features is None:
        features = source.product_features(batch.products, device=device)
    # Random in-batch draws would only repeat a global-only head's in-batch candidates.
    negatives = explicit_negatives(batch, random_negatives if conditioned else 0, pairs)
    with_global = conditioned and w_global > 0
    out = model(features, batch.src_local[select].to(device), batch.dst_local[select].to(device),
                desc.to(device), description_table,
                None if negatives is None else negatives.to(device), with_global)
    fn_mask, global_mask = None, False
    if graph_false_negatives:
        world = world_size()
        if pairs is not None and world > 1:
            # Every rank holds the whole batch, and rank r trains the r-th of equal contiguous
            # slices (shard_pairs): the loss's gathered pairs are the batch's first world * P, so
            # give it their mask whole, entries between ranks included.
            kept = (pairs.stop - pairs.start) * world
            fn_mask, global_mask = false_negative_mask(batch)[:kept, :kept].to(device), True  # (W P, W P)
        else:
            fn_mask = false_negative_mask(batch)[select, select].to(device)  # (P, P)
    # View keys name what a head embeds: (product, relation) for a conditioned head's views, the
    # product alone for relation-free ones (a global-only head's, the w_global term's), which are
    # the same vector under every relation: keyed by relation, a product's own relation-free view
    # under another pair's relation (its self pair's, say) was a negative of itself.
    free_src_key, free_dst_key = src.to(device).long(), dst.to(device).long()  # relation-free views
    src_key, dst_key = free_src_key, free_dst_key
    if conditioned:
        src_key = view_keys(src, desc, num_relations).to(device)
        dst_key = view_keys(dst, desc, num_relations).to(device)
    loss, terms = loss_fn(
        out.src_image, out.src_text, out.dst_image, out.dst_text, out.logit_scale,
        src_key, dst_key,
        out.src_image_valid, out.dst_image_valid, fn_mask,
        relation_ids=desc.to(device) if conditioned else None, global_false_negatives=global_mask,
        neg_image=out.neg_image, neg_text=out.neg_text,
        neg_image_valid=out.neg_image_valid, neg_valid=out.neg_valid,
    )
    if with_global:
        assert out.global_src_image is not None and out.global_src_text is not None
        assert out.global_dst_image is not None and out.global_dst_text is not None
        global_loss, _ = loss_fn(
            out.global_src_image, out.global_src_text, out.global_dst_image, out.global_dst_text,
            out.logit_scale, free_src_key, free_dst_key, out.src_image_valid, out.dst_image_valid, fn_mask,
            global_false_negatives=global_mask,
        )
        loss = loss + w_global * global_loss
        terms["global"] = global_loss.detach()
    return loss, terms, src.numel()
