"""The per-step product table that the backbone hands to the RCML head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


@dataclass
class ProductFeatures:
    """Backbone outputs for the ``N`` unique products of one training step.

    Every product is encoded once per step; the pairs of the step refer to rows of this table
    by index, so a product that appears in many pairs is not re-encoded.

    Attributes:
        image_global: ``(N, D)`` pooled image embedding (the CLIP image embedding).
        image_tokens: ``(N, L_i, D_i)`` image patch/token features.
        text_global: ``(N, D)`` pooled text embedding (the CLIP text embedding).
        text_tokens: ``(N, L_t, D_t)`` text token features.
        text_mask: ``(N, L_t)`` bool, True for real tokens, False for padding.
        has_image: ``(N,)`` bool, False for a product without an image. Its image tokens are
            all treated as padding and its image outputs are flagged invalid.
        image_mask: optional ``(N, L_i)`` bool, True for real image tokens; None means every
            image token of a product with an image is valid.
    """

    image_global: Tensor
    image_tokens: Tensor
    text_global: Tensor
    text_tokens: Tensor
    text_mask: Tensor
    has_image: Tensor
    image_mask: Tensor | None = None

    @classmethod
    def from_towers(cls, image: Any, text: Any, has_image: Tensor) -> ProductFeatures:
        """Build from a backbone's image and text outputs of the same ``N`` products.

        ``image`` needs ``global_emb`` and ``tokens``; ``text`` needs ``global_emb``,
        ``tokens`` and ``mask`` (``rcml_graph.backbones`` ``ImageFeatures``/``TextFeatures``).
        """
        return cls(
            image_global=image.global_emb,
            image_tokens=image.tokens,
            text_global=text.global_emb,
            text_tokens=text.tokens,
            text_mask=text.mask,
            has_image=has_image,
        )

    @property
    def num_products(self) -> int:
        return self.text_global.shape[0]

    def image_token_mask(self) -> Tensor:
        """``(N, L_i)`` bool validity of image tokens, with ``has_image`` folded in."""
        n, length = self.image_tokens.shape[:2]
        has_image = self.has_image.to(torch.bool)[:, None]
        if self.image_mask is None:
            return has_image.expand(n, length)
        return self.image_mask.to(torch.bool) & has_image

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first field whose shape disagrees with the others."""
        n = self.num_products
        expected = {
            "image_global": (self.image_global, 2),
            "image_tokens": (self.image_tokens, 3),
            "text_global": (self.text_global, 2),
            "text_tokens": (self.text_tokens, 3),
            "text_mask": (self.text_mask, 2),
            "has_image": (self.has_image, 1),
        }
        if self.image_mask is not None:
            expected["image_mask"] = (self.image_mask, 2)
        for name, (tensor, ndim) in expected.items():
            if tensor.dim() != ndim or tensor.shape[0] != n:
                raise ValueError(
                    f"ProductFeatures.{name} has shape {tuple(tensor.shape)}; expected {ndim} "
                    f"dimensions with {n} products first"
                )
        if self.image_global.shape[1] != self.text_global.shape[1]:
            raise ValueError(
                f"image_global dim {self.image_global.shape[1]} != text_global dim "
                f"{self.text_global.shape[1]}; the global embeddings must share one space"
            )
        if self.text_mask.shape[1] != self.text_tokens.shape[1]:
            raise ValueError(
                f"text_mask length {self.text_mask.shape[1]} != text_tokens length "
                f"{self.text_tokens.shape[1]}"
            )
        if self.image_mask is not None and self.image_mask.shape[1] != self.image_tokens.shape[1]:
            raise ValueError(
                f"image_mask length {self.image_mask.shape[1]} != image_tokens length "
                f"{self.image_tokens.shape[1]}"
            )
