"""Self-pair batches (CLIP and the no-inter-sample-relation ablation) and DDP sharding.

:class:`SelfPairSampler` has the interface of :class:`rcml_graph.sampling.RelationPairSampler`
(``len``, ``set_epoch``, iteration, ``batch_at``, ``state_dict``) but yields only intra-sample
pairs ``(p, p, description 0)`` over every product, so the CLIP special case runs through the
same training step as RCML.
"""

from __future__ import annotations


import torch
from torch import Tensor

from rcml_graph.sampling import PairBatch
from rcml_graph.sampling.cursor import EpochCursor
from rcml_graph.sampling.ops import mix_seed


class SelfPairSampler(EpochCursor):
    """Seeded batches of self pairs: an epoch is a permutation of all products.

    Args:
        num_products: ``N``; product ids are ``0..N-1``.
        batch_size: products (= pairs) per batch.
        seed: base seed; batch ``b`` of epoch ``e`` is a pure function of ``(seed, e, b)``.
        device: where the batches live.
    """

    def __init__(self, num_products: int, *, batch_size: int, seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        if num_products < 1 or batch_size < 1:
            raise ValueError(
                f"num_products={num_products}, batch_size={batch_size}; accepted: both >= 1"
            )
        self.num_products = num_products
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device)
        self.epoch = 0
        self._batch = 0

    def __len__(self) -> int:
        return -(-self.num_products // self.batch_size)

    def batch_at(self, epoch: int, index: int) -> PairBatch:
        if not 0 <= index < len(self):
            raise ValueError(f"batch index {index} out of range; accepted: 0..{len(self) - 1}")
        generator = torch.Generator(device="cpu")
        generator.manual_seed(mix_seed(self.seed, epoch, -2))
        order = torch.randperm(self.num_products, generator=generator)
        products = order[index * self.batch_size:(index + 1) * self.batch_size].to(self.device)
        return self_pair_batch(products)


def self_pair_batch(products: Tensor) -> PairBatch:
    """The :class:`PairBatch` of self pairs of the distinct ``products`` ``(P,)``."""
    num = products.numel()
    local = torch.arange(num, device=products.device)
    return PairBatch(
        src=products, dst=products, desc_id=torch.zeros_like(products),
        is_self=torch.ones(num, dtype=torch.bool, device=products.device),
        hard_neg=products.new_zeros(num, 0), hard_neg_kind=products.new_zeros(num, 0, dtype=torch.int8),
        products=products, src_local=local, dst_local=local,
        hard_neg_local=products.new_zeros(num, 0), false_negative_index=torch.stack([local, local]),
    )


def shard_pairs(num_pairs: int, rank: int, world_size: int) -> tuple[slice, int]:
    """The contiguous slice of a global batch's pairs that ``rank`` trains on.

    Every rank needs the same number of pairs (the loss all-gathers them), so a global batch
    of ``P`` pairs is cut to ``world_size * (P // world_size)`` pairs; returns the rank's slice
    and the number of pairs kept in the global batch.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}; accepted: 0 <= rank < world_size")
    per_rank = num_pairs // world_size
    return slice(rank * per_rank, (rank + 1) * per_rank), per_rank * world_size
