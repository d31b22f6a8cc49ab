"""One contrastive training step's loss: a :class:`PairBatch` through the head and the loss."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from rcml_graph.losses import RCMLLoss, view_keys
from rcml_graph.sampling import PairBatch, false_negative_mask
from rcml_graph.training.sources import FeatureSource


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
) -> tuple[Tensor, dict[str, Tensor], int]:
    """The loss of ``batch`` (or of its pairs ``pairs``, this rank's shard under DDP).

    Each of the batch's distinct products is read/encoded once; pairs index into that table.
    False negatives: view keys (same source or target view) always, and with
    ``graph_false_negatives`` the sampler's graph mask ``(P, P)``: pair ``j``'s target is no
    negative for pair ``i`` when it is linked to ``i``'s anchor under ``i``'s description.

    Returns:
        ``(loss, terms, number of pairs)``.
    """
    select = pairs if pairs is not None else slice(None)
    src, dst, desc = batch.src[select], batch.dst[select], batch.desc_id[select]
    features = source.product_features(batch.products, device=device)
    out = model(features, batch.src_local[select].to(device), batch.dst_local[select].to(device),
                desc.to(device), description_table)
    fn_mask = None
    if graph_false_negatives:
        fn_mask = false_negative_mask(batch)[select, select].to(device)  # (P, P)
    loss, terms = loss_fn(
        out.src_image, out.src_text, out.dst_image, out.dst_text, out.logit_scale,
        view_keys(src, desc, num_relations).to(device), view_keys(dst, desc, num_relations).to(device),
        out.src_image_valid, out.dst_image_valid, fn_mask,
    )
    return loss, terms, src.numel()
