"""``tiny``: small random-init towers and a byte-level tokenizer, for fast tests.

Nothing here reads a file or a weight: a ViT-style image tower over ``patch_size`` patches and a
pre-norm transformer text tower over UTF-8 bytes. Deterministic under ``torch.manual_seed``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Backbone, ImageFeatures, TextFeatures, TowerLayout, check_text_batch

#: Byte-level vocabulary: 0 = padding, 1 = begin, 2 = end, byte ``b`` -> ``b + 3``.
PAD_ID, BOS_ID, EOS_ID, BYTE_OFFSET = 0, 1, 2, 3
VOCAB_SIZE = 256 + BYTE_OFFSET


def byte_tokenize(texts: list[str], context_length: int) -> dict[str, Tensor]:
    """UTF-8 byte tokenizer: ``[BOS] bytes... [EOS] [PAD]...``, truncated to ``context_length``.

    Returns ``input_ids`` ``(B, context_length)`` long and ``attention_mask`` bool
    (``True`` on BOS, the bytes and EOS).
    """
    if context_length < 3:
        raise ValueError(f"context_length must be >= 3 (BOS, one byte, EOS); got {context_length}")
    input_ids = torch.full((len(texts), context_length), PAD_ID, dtype=torch.long)
    for row, text in enumerate(texts):
        body = [b + BYTE_OFFSET for b in text.encode("utf-8")[: context_length - 2]]
        ids = [BOS_ID, *body, EOS_ID]
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": input_ids != PAD_ID}


def _encoder_layer(width: int, heads: int) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True, norm_first=True
    )


class TinyBackbone(Backbone):
    """Random-init ViT image tower and byte-level transformer text tower.

    Global embeddings are masked means of the final token features, projected by a linear map
    into the shared space.

    Args:
        embed_dim: Shared global embedding dimension ``D``. (default: ``32``)
        width: Token width of both towers (``Di = Dt = width``). (default: ``32``)
        depth: Transformer blocks per tower. (default: ``2``)
        heads: Attention heads. (default: ``2``)
        image_size: Input side ``S``. (default: ``32``)
        patch_size: Patch side; ``Li = (S / patch_size) ** 2``. (default: ``8``)
        context_length: Text length ``Lt`` in bytes; long enough that relation descriptions
            sharing a template prefix stay distinct. (default: ``96``)

    Shapes:
        - encode_image: ``(B, 3, S, S)`` -> ``(B, D)``, ``(B, (S/P)^2, width)``
        - encode_text: ``(B, Lt)`` ids + mask -> ``(B, D)``, ``(B, Lt, width)``, ``(B, Lt)``
    """

    def __init__(
        self,
        embed_dim: int = 32,
        width: int = 32,
        depth: int = 2,
        heads: int = 2,
        image_size: int = 32,
        patch_size: int = 8,
        context_length: int = 96,
    ) -> None:
        super().__init__()
        if image_size % patch_size != 0:
            raise ValueError(
                f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})"
            )
        if width % heads != 0:
            raise ValueError(f"width ({width}) must be divisible by heads ({heads})")
        self.embed_dim = embed_dim
        self.image_token_dim = width
        self.text_token_dim = width
        self.image_size = image_size
        self.context_length = context_length
        self.image_mean = (0.5, 0.5, 0.5)
        self.image_std = (0.5, 0.5, 0.5)

        num_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size)
        self.image_pos = nn.Parameter(torch.randn(num_patches, width) * 0.02)
        self.image_blocks = nn.ModuleList(_encoder_layer(width, heads) for _ in range(depth))
        self.image_norm = nn.LayerNorm(width)
        self.image_proj = nn.Linear(width, embed_dim, bias=False)

        self.token_embed = nn.Embedding(VOCAB_SIZE, width, padding_idx=PAD_ID)
        self.text_pos = nn.Parameter(torch.randn(context_length, width) * 0.02)
        self.text_blocks = nn.ModuleList(_encoder_layer(width, heads) for _ in range(depth))
        self.text_norm = nn.LayerNorm(width)
        self.text_proj = nn.Linear(width, embed_dim, bias=False)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        return byte_tokenize(texts, self.context_length)

    def encode_image(self, images: Tensor) -> ImageFeatures:
        x = self.patch_embed(images).flatten(2).transpose(1, 2)  # (B, Li, width)
        x = x + self.image_pos
        for block in self.image_blocks:
            x = block(x)
        tokens = self.image_norm(x)
        return ImageFeatures(self.image_proj(tokens.mean(dim=1)), tokens)

    def encode_text(self, tokens: dict[str, Tensor]) -> TextFeatures:
        input_ids, mask = check_text_batch(tokens, self.context_length)
        x = self.token_embed(input_ids) + self.text_pos[: input_ids.shape[1]]  # (B, Lt, width)
        for block in self.text_blocks:
            x = block(x, src_key_padding_mask=~mask)
        hidden = self.text_norm(x) * mask.unsqueeze(-1)  # zero the padding positions
        pooled = hidden.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp(min=1)
        return TextFeatures(self.text_proj(pooled), hidden, mask)

    def tower_layouts(self) -> dict[str, TowerLayout]:
        return {
            "image": TowerLayout(
                stem=[self.patch_embed, self.image_pos],
                blocks=list(self.image_blocks),
                neck=[self.image_norm],
            ),
            "text": TowerLayout(
                stem=[self.token_embed, self.text_pos],
                blocks=list(self.text_blocks),
                neck=[self.text_norm],
            ),
        }
