"""``torchrun`` helpers: process-group set-up from the environment, rank queries, and the
encoding of a global batch's products split over the ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from rcml_graph.losses import gather_no_grad, gather_with_grad
from rcml_graph.model.features import ProductFeatures
from rcml_graph.training.sources import FeatureSource


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: ``rank`` of ``world_size``, ``local_rank`` on its host."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None) -> DistInfo:
    """Join the process group that ``torchrun`` describes (``WORLD_SIZE``, ``RANK``,
    ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); a plain run gets ``DistInfo()``.

    ``backend`` None picks ``nccl`` when CUDA is available, else ``gloo``.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistInfo(rank, world_size, local_rank)


def current_dist_info() -> DistInfo:
    """The :class:`DistInfo` of an already initialised process group (or a plain run)."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return DistInfo(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))
    return DistInfo()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_flag(flag: bool, info: DistInfo) -> bool:
    """Rank 0's ``flag`` on every rank (e.g. the early-stopping decision)."""
    if not info.enabled:
        return flag
    device = torch.device("cuda", info.local_rank) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([int(flag)], device=device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())


def sharded_product_features(source: FeatureSource, index: Tensor, info: DistInfo,
                             device: torch.device | str | None = None) -> ProductFeatures:
    """The features of a global batch's products ``index`` ``(N,)``, each rank encoding a share.

    Rank ``r`` runs ``source`` on products ``[r * n, (r + 1) * n)`` (``n = ceil(N / W)``, the
    last share padded with repeats of ``index[0]``), and the shares are all-gathered with
    gradients (:func:`rcml_graph.losses.gather_with_grad`), so every rank gets the whole
    ``(N, ...)`` table while the backbone runs on ``N / W`` products per rank instead of ``N``.
    The gather's backward returns to each rank the gradients of its own share summed over
    the ranks' losses; DDP then averages the backbone's gradients as usual, which gives the
    same update as every rank encoding every product (tested: 2 gloo ranks = 1 process).
    Text tokens are padded to the longest share's length (the padding is masked).
    """
    if not info.enabled:
        return source.product_features(index, device=device)
    num = index.numel()
    if num == 0:
        raise ValueError("sharded_product_features needs at least one product; got an empty index")
    share = -(-num // info.world_size)
    mine = index[info.rank * share:(info.rank + 1) * share]
    if mine.numel() < share:
        mine = torch.cat([mine, index[:1].expand(share - mine.numel())])
    features = source.product_features(mine, device=device)
    length = torch.tensor([features.text_tokens.shape[1]], device=features.text_tokens.device)
    dist.all_reduce(length, op=dist.ReduceOp.MAX)
    pad = int(length) - features.text_tokens.shape[1]
    text_tokens, text_mask = features.text_tokens, features.text_mask
    if pad:
        text_tokens = F.pad(text_tokens, (0, 0, 0, pad))
        text_mask = F.pad(text_mask, (0, pad))

    def rows(tensor: Tensor) -> Tensor:
        return gather_with_grad(tensor)[:num]

    def flags(tensor: Tensor) -> Tensor:
        return gather_no_grad(tensor)[:num]

    return ProductFeatures(
        image_global=rows(features.image_global),
        image_tokens=rows(features.image_tokens),
        text_global=rows(features.text_global),
        text_tokens=rows(text_tokens),
        text_mask=flags(text_mask),
        has_image=flags(features.has_image),
        image_mask=None if features.image_mask is None else flags(features.image_mask),
        token_norm_eps=features.token_norm_eps,
    )
