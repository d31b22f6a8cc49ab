"""The backbone interface shared by every preset: feature containers, preprocessing, tower layout.

A backbone turns a batch of images and a batch of tokenised texts into

* global embeddings in one shared space of dimension ``embed_dim`` (what the contrastive
  losses compare), and
* token-level features (image patches / spatial cells, text word pieces with a padding mask)
  that relation-conditioned cross-attention attends over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms


class ImageFeatures(NamedTuple):
    """Image-tower outputs for a batch.

    Attributes:
        global_emb: ``(B, D)`` embedding in the shared image-text space (not normalised).
        tokens: ``(B, Li, Di)`` patch or spatial-cell features; every token is valid.
    """

    global_emb: Tensor
    tokens: Tensor


class TextFeatures(NamedTuple):
    """Text-tower outputs for a batch.

    Attributes:
        global_emb: ``(B, D)`` embedding in the shared image-text space (not normalised).
        tokens: ``(B, Lt, Dt)`` per-token features, padded to the context length.
        mask: ``(B, Lt)`` bool, ``True`` where the token is real text (not padding).
    """

    global_emb: Tensor
    tokens: Tensor
    mask: Tensor


@dataclass
class TowerLayout:
    """How one tower splits into freezable groups, in forward order.

    ``freeze_backbone`` keeps the last ``N`` entries of ``blocks`` (and ``neck``, which sits
    after the last block) trainable and freezes ``stem`` and the earlier blocks. Parameters that
    belong to no tower layout (the projections into the shared space) are never frozen.

    Attributes:
        stem: Modules/parameters before the first block (patch or token embedding, stem conv).
        blocks: The tower's transformer or conv blocks, first to last.
        neck: Modules/parameters after the last block (final norm, head conv).
    """

    stem: list[nn.Module | nn.Parameter] = field(default_factory=list)
    blocks: list[nn.Module] = field(default_factory=list)
    neck: list[nn.Module | nn.Parameter] = field(default_factory=list)


def _convert_rgb(image: Image.Image) -> Image.Image:
    # A module-level function (not a lambda) so the transform pickles into DataLoader workers.
    return image.convert("RGB")


def pil_transform(
    image_size: int, mean: tuple[float, float, float], std: tuple[float, float, float]
) -> transforms.Compose:
    """The PIL-image path: RGB, bicubic resize of the short side, centre crop, normalise.

    Returns a transform mapping one PIL image to a float tensor of shape ``(3, S, S)``.
    """
    return transforms.Compose(
        [
            _convert_rgb,
            transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


def preprocess_batch(
    images: Tensor,
    image_size: int,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
) -> Tensor:
    """The batched tensor path, equivalent to :func:`pil_transform` but one call for the batch.

    Resizes the short side to ``image_size`` (bicubic, antialiased), centre-crops and normalises,
    all on the images' device, so GPU-decoded images can be fed without a round trip.

    Args:
        images: ``(B, 3, H, W)`` or ``(3, H, W)``; ``uint8`` in ``[0, 255]`` or floating in
            ``[0, 1]``. All images of a batch share ``H, W`` (decode into a padded batch first
            otherwise).
        image_size: Output side ``S``.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.

    Returns:
        ``(B, 3, S, S)`` float32 tensor (``(3, S, S)`` for an unbatched input).
    """
    unbatched = images.dim() == 3
    if unbatched:
        images = images.unsqueeze(0)
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(
            f"images must have shape (B, 3, H, W) or (3, H, W); got {tuple(images.shape)}"
        )
    if images.dtype == torch.uint8:
        x = images.float() / 255.0
    elif images.is_floating_point():
        x = images.float()
    else:
        raise ValueError(f"images must be uint8 or floating point; got dtype {images.dtype}")
    height, width = x.shape[-2:]
    # Same output size and crop offsets as torchvision's Resize(int) + CenterCrop on PIL images.
    if height <= width:
        new_h, new_w = image_size, int(image_size * width / height)
    else:
        new_h, new_w = int(image_size * height / width), image_size
    if (new_h, new_w) != (height, width):
        x = F.interpolate(
            x, size=(new_h, new_w), mode="bicubic", antialias=True, align_corners=False
        )
        x = x.clamp_(0.0, 1.0)  # bicubic overshoots; PIL clamps too
    top, left = round((new_h - image_size) / 2.0), round((new_w - image_size) / 2.0)
    x = x[:, :, top : top + image_size, left : left + image_size]
    mean_t = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x - mean_t) / std_t
    return x[0] if unbatched else x


class Backbone(nn.Module):
    """Base class of the backbone presets; subclasses build the towers.

    Subclasses set the attributes below in ``__init__`` and implement :meth:`tokenize`,
    :meth:`encode_image`, :meth:`encode_text` and :meth:`tower_layouts`.

    Attributes:
        embed_dim: Dimension ``D`` of the shared global embedding space.
        image_token_dim: Dimension ``Di`` of image tokens.
        text_token_dim: Dimension ``Dt`` of text tokens.
        image_size: Side ``S`` of the square input images.
        context_length: Fixed token length ``Lt`` that :meth:`tokenize` pads/truncates to.
        image_mean: Per-channel normalisation mean of the image tower.
        image_std: Per-channel normalisation std of the image tower.

    Shapes:
        - encode_image input: ``(B, 3, S, S)`` normalised float (from :attr:`preprocess`
          or :meth:`preprocess_batch`).
        - encode_image output: :class:`ImageFeatures` with ``(B, D)`` and ``(B, Li, Di)``.
        - encode_text input: ``{"input_ids": (B, Lt) long, "attention_mask": (B, Lt) bool}``.
        - encode_text output: :class:`TextFeatures` with ``(B, D)``, ``(B, Lt, Dt)``,
          ``(B, Lt)`` bool.
    """

    embed_dim: int
    image_token_dim: int
    text_token_dim: int
    image_size: int
    context_length: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]

    @property
    def preprocess(self) -> transforms.Compose:
        """Transform for one PIL image -> normalised ``(3, S, S)`` float tensor."""
        return pil_transform(self.image_size, self.image_mean, self.image_std)

    def preprocess_batch(self, images: Tensor) -> Tensor:
        """Batched tensor path: ``(B, 3, H, W)`` uint8/float -> ``(B, 3, S, S)`` normalised."""
        return preprocess_batch(images, self.image_size, self.image_mean, self.image_std)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        """Tokenise ``texts`` to ``input_ids`` ``(B, Lt)`` long and ``attention_mask`` bool."""
        raise NotImplementedError

    def encode_image(self, images: Tensor) -> ImageFeatures:
        """Encode a preprocessed image batch."""
        raise NotImplementedError

    def encode_text(self, tokens: dict[str, Tensor]) -> TextFeatures:
        """Encode the output of :meth:`tokenize`, or a :func:`trim_text_batch` cut of it (moved to the
        model's device); the token outputs have the batch's length ``L``."""
        raise NotImplementedError

    def tower_layouts(self) -> dict[str, TowerLayout]:
        """The freezable groups of the ``"image"`` and ``"text"`` towers."""
        raise NotImplementedError


def check_text_batch(tokens: dict[str, Tensor], context_length: int) -> tuple[Tensor, Tensor]:
    """Validate a tokenised batch and return ``(input_ids, attention_mask)``.

    The batch may be :meth:`Backbone.tokenize`'s ``(B, context_length)`` or any shorter cut of it,
    ``(B, L)`` with ``1 <= L <= context_length`` (see :func:`trim_text_batch`).
    """
    missing = {"input_ids", "attention_mask"} - set(tokens)
    if missing:
        raise ValueError(
            f"text batch is missing {sorted(missing)}; expected the dict from Backbone.tokenize "
            f"with keys 'input_ids' and 'attention_mask' (got {sorted(tokens)})"
        )
    input_ids, attention_mask = tokens["input_ids"], tokens["attention_mask"]
    if input_ids.dim() != 2 or not 1 <= input_ids.shape[1] <= context_length:
        raise ValueError(
            f"input_ids must have shape (B, L) with 1 <= L <= {context_length} (the tokenizer's "
            f"context length, or a cut of it by trim_text_batch); got {tuple(input_ids.shape)}"
        )
    if attention_mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids "
                         f"{tuple(input_ids.shape)}; accepted: the same shape")
    return input_ids, attention_mask.bool()


def trim_text_batch(tokens: dict[str, Tensor]) -> dict[str, Tensor]:
    """Cut a tokenised batch to its longest row: columns past every row's last attended token go.

    Every backbone here gives the same embeddings for the cut batch (the padding columns are
    masked out, or, for CLIP's causal tower, come after the end-of-text token that pools), at a
    fraction of the cost for short texts such as relation descriptions (a few tokens of CLIP's 77).
    The mask is read on the batch's device: trim CPU batches before moving them to a GPU.

    Shapes:
        - **input:** ``input_ids (B, Lt)``, ``attention_mask (B, Lt)``.
        - **output:** the same keys, ``(B, L)`` with ``L <= Lt`` (``L >= 1``).
    """
    mask = tokens["attention_mask"].bool()
    used = torch.nonzero(mask.any(dim=0)).flatten()  # attended columns, ascending
    length = int(used[-1]) + 1 if used.numel() else 1
    if length == mask.shape[1]:
        return tokens
    return {**tokens, "input_ids": tokens["input_ids"][:, :length],
            "attention_mask": tokens["attention_mask"][:, :length]}
