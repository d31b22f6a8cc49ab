"""Build a backbone preset by name, and freeze all but its last blocks."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .base import Backbone

#: Accepted preset names; ``offline`` is the default.
BACKBONE_NAMES: tuple[str, ...] = ("offline", "clip_b32", "tiny")
DEFAULT_BACKBONE = "offline"

log = logging.getLogger(__name__)


def build_backbone(
    name: str = DEFAULT_BACKBONE,
    *,
    pretrained: str | None = None,
    checkpoint: str | None = None,
    embed_dim: int | None = None,
    device: str | torch.device = "cpu",
    quick_gelu: bool | None = None,
    **kwargs: Any,
) -> Backbone:
    """Build the backbone preset ``name`` on ``device``.

    Args:
        name: One of :data:`BACKBONE_NAMES`.
        pretrained: ``clip_b32`` only: open_clip tag (``openai``, ``laion2b_s34b_b79k``, ...).
        checkpoint: ``clip_b32`` only: local open_clip checkpoint file.
        embed_dim: Shared embedding dimension; ``None`` keeps the preset's default (``offline``
            384, ``tiny`` 32). ``clip_b32`` is fixed at 512.
        device: Where to put the parameters.
        quick_gelu: ``clip_b32`` only: QuickGELU activations (None: from the ``pretrained`` tag;
            required with ``checkpoint``, see :class:`~rcml_graph.backbones.clip.ClipB32Backbone`).
        **kwargs: Further keyword arguments of the preset's class
            (:class:`~rcml_graph.backbones.offline.OfflineBackbone`,
            :class:`~rcml_graph.backbones.clip.ClipB32Backbone`,
            :class:`~rcml_graph.backbones.tiny.TinyBackbone`).

    Raises:
        ValueError: unknown ``name``, or an option the preset does not take.
    """
    if name not in BACKBONE_NAMES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(BACKBONE_NAMES)}")
    if name != "clip_b32" and (pretrained is not None or checkpoint is not None or quick_gelu is not None):
        raise ValueError(
            f"pretrained={pretrained!r} / checkpoint={checkpoint!r} / quick_gelu={quick_gelu!r} apply only to "
            f"clip_b32; backbone {name!r} loads its own weights"
        )
    backbone: Backbone
    if name == "clip_b32":
        from .clip import CLIP_EMBED_DIM, ClipB32Backbone

        if embed_dim is not None and embed_dim != CLIP_EMBED_DIM:
            raise ValueError(
                f"clip_b32 has a fixed embed_dim of {CLIP_EMBED_DIM}; got embed_dim={embed_dim}"
            )
        backbone = ClipB32Backbone(pretrained=pretrained, checkpoint=checkpoint, quick_gelu=quick_gelu, **kwargs)
    elif name == "offline":
        from .offline import OfflineBackbone

        if embed_dim is not None:
            kwargs["embed_dim"] = embed_dim
        backbone = OfflineBackbone(**kwargs)
    else:
        from .tiny import TinyBackbone

        if embed_dim is not None:
            kwargs["embed_dim"] = embed_dim
        backbone = TinyBackbone(**kwargs)
    return backbone.to(device)


def spec_quick_gelu(spec: Mapping[str, Any]) -> bool | None:
    """The ``quick_gelu`` of a stored backbone spec (checkpoint config, fine-tune spec).

    Specs written before the option existed lack the key: a ``clip_b32`` built from a weights
    file was then built with plain GELU, so that is what rebuilds it (with a warning); other
    backbones take no value (None).
    """
    if "quick_gelu" in spec:
        return spec["quick_gelu"]
    if spec.get("name") == "clip_b32" and spec.get("checkpoint") is not None:
        log.warning("backbone spec without quick_gelu (written before the option existed): rebuilding clip_b32 "
                    "from %s with plain GELU, as it was built then", spec["checkpoint"])
        return False
    return None


def _parameters(items: list[nn.Module | nn.Parameter]) -> list[nn.Parameter]:
    params: list[nn.Parameter] = []
    for item in items:
        params.extend([item] if isinstance(item, nn.Parameter) else item.parameters())
    return params


def freeze_backbone(backbone: Backbone, trainable_last_blocks: int = 0) -> int:
    """Freeze each tower except its last ``trainable_last_blocks`` blocks (finetune mode).

    Per tower (see :class:`~rcml_graph.backbones.base.TowerLayout`): the stem and all but the
    last ``N`` blocks are frozen; the last ``N`` blocks and the neck after them stay trainable
    (with ``N = 0`` the neck is frozen too; with ``N`` at least the tower's block count the whole
    tower, stem included, is trainable). Parameters outside the towers (the projections into
    the shared space) are left as they are, i.e. trainable. Idempotent: calling it again with a
    different ``N`` re-decides every tower parameter.

    Returns:
        The number of parameter elements left trainable in the whole backbone.
    """
    if trainable_last_blocks < 0:
        raise ValueError(f"trainable_last_blocks must be >= 0; got {trainable_last_blocks}")
    for layout in backbone.tower_layouts().values():
        num_blocks = len(layout.blocks)
        keep = min(trainable_last_blocks, num_blocks)
        frozen = [*layout.stem, *layout.blocks[: num_blocks - keep]]
        trainable = list(layout.blocks[num_blocks - keep :])
        if keep > 0:
            trainable.extend(layout.neck)
        else:
            frozen.extend(layout.neck)
        if trainable_last_blocks >= num_blocks > 0:
            trainable.extend(layout.stem)
            frozen = []
        for param in _parameters(frozen):
            param.requires_grad_(False)
        for param in _parameters(trainable):
            param.requires_grad_(True)
    return sum(p.numel() for p in backbone.parameters() if p.requires_grad)
