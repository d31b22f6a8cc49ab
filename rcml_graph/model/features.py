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
        token_norm_eps: None for raw backbone tokens. A float when ``image_tokens`` and
            ``text_tokens`` already hold affine-free layer-normalised tokens (this ``eps``,
            padded positions zero), as :meth:`normalize_tokens` makes them: the relation
            attention then skips its per-step masking and layer norm (its affine is folded into
            the key/value projections, so the normalised tokens do not depend on any parameter).
    """

    image_global: Tensor
    image_tokens: Tensor
    text_global: Tensor
    text_tokens: Tensor
    text_mask: Tensor
    has_image: Tensor
    image_mask: Tensor | None = None
    token_norm_eps: float | None = None

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

    def normalize_tokens(self, eps: float = 1e-5, dtype: torch.dtype | None = None,
                         chunk_rows: int = 4096) -> ProductFeatures:
        """A copy whose token tables are affine-free layer-normalised (``eps``), padded positions
        (masked text tokens, image tokens of products without an image) zero, stored as ``dtype``
        (None: unchanged).

        For a frozen backbone the normalised tokens are constant, so a preloaded table is
        normalised once instead of every step. Stored as ``bfloat16`` under bf16 autocast it is
        what the attention's matmuls read anyway (they cast the fp32 normalised tokens to bf16),
        at half the memory traffic. ``chunk_rows`` products at a time bound the temporary memory.
        """
        if self.token_norm_eps is not None:
            raise ValueError(f"tokens are already normalised (token_norm_eps={self.token_norm_eps})")

        def normalize(tokens: Tensor, mask: Tensor) -> Tensor:
            out = torch.empty(tokens.shape, dtype=dtype or tokens.dtype, device=tokens.device)
            for start in range(0, tokens.shape[0], chunk_rows):
                rows = slice(start, start + chunk_rows)
                chunk = tokens[rows].masked_fill(~mask[rows, :, None], 0.0)
                normed = torch.nn.functional.layer_norm(chunk, chunk.shape[-1:], None, None, eps)
                out[rows] = normed.masked_fill(~mask[rows, :, None], 0.0)
            return out

        return ProductFeatures(
            image_global=self.image_global,
            image_tokens=normalize(self.image_tokens, self.image_token_mask()),
            text_global=self.text_global,
            text_tokens=normalize(self.text_tokens, self.text_mask.to(torch.bool)),
            text_mask=self.text_mask,
            has_image=self.has_image,
            image_mask=self.image_mask,
            token_norm_eps=eps,
        )

    def without_tokens(self) -> ProductFeatures:
        """A copy with zero-length token tables (``(N, 0, D_i)``, ``(N, 0, D_t)``, new storage):
        what a global-only head (CLIP, unconditioned) reads, which never looks at tokens. A
        preloaded frozen table then holds only the global embeddings and a step copies no token
        rows."""
        n = self.num_products
        return ProductFeatures(
            image_global=self.image_global,
            image_tokens=self.image_tokens.new_empty((n, 0, self.image_tokens.shape[-1])),
            text_global=self.text_global,
            text_tokens=self.text_tokens.new_empty((n, 0, self.text_tokens.shape[-1])),
            text_mask=self.text_mask.new_empty((n, 0)),
            has_image=self.has_image,
        )

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
