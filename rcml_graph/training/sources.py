"""Where a training step gets its products' backbone features from.

Frozen mode reads the token cache (:class:`rcml_graph.feature_cache.FeatureCache` is itself a
source); :class:`TensorFeatures` holds a whole table in memory (benchmarks, tests, small
domains). A source answers ``product_features(index, device=...) -> ProductFeatures``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from rcml_graph.model.features import ProductFeatures


class FeatureSource(Protocol):
    """Anything that returns the backbone features of a set of products."""

    num_products: int

    def product_features(
        self, index: Tensor, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> ProductFeatures: ...


class TensorFeatures:
    """An in-memory product feature table.

    Args:
        table: :class:`ProductFeatures` of all ``N`` products (rows are product ids).
    """

    def __init__(self, table: ProductFeatures) -> None:
        table.validate()
        self.table = table
        self.num_products = table.num_products

    @classmethod
    def from_source(cls, source: FeatureSource, device: str | torch.device | None = None) -> TensorFeatures:
        """Read every product of ``source`` once (e.g. preload a feature cache into memory)."""
        index = torch.arange(source.num_products)
        return cls(source.product_features(index, device=device))

    def with_normalized_tokens(self, eps: float = 1e-5, dtype: torch.dtype | None = None) -> TensorFeatures:
        """This table with its tokens layer-normalised once (see
        :meth:`ProductFeatures.normalize_tokens`): for a frozen backbone, the relation attention
        then reads them as they are instead of masking and normalising them every step."""
        return TensorFeatures(self.table.normalize_tokens(eps, dtype))

    def without_tokens(self) -> TensorFeatures:
        """This table without its tokens (:meth:`ProductFeatures.without_tokens`)."""
        return TensorFeatures(self.table.without_tokens())

    def product_features(
        self, index: Tensor, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> ProductFeatures:
        t = self.table
        index = index.to(t.text_global.device)

        def take(x: Tensor, as_dtype: torch.dtype | None = dtype) -> Tensor:
            # Advanced indexing, not index_select: on CPU, index_select of a (N, L, C) table
            # measured 12.8 s where x[index] took 0.2 s for 1,928 rows of (49, 1280) (torch 2.14).
            return x[index].to(device=device, dtype=as_dtype)

        # Pre-normalised tokens keep the dtype they were stored in (see normalize_tokens).
        token_dtype = None if t.token_norm_eps is not None else dtype
        return ProductFeatures(
            image_global=take(t.image_global),
            image_tokens=take(t.image_tokens, token_dtype),
            text_global=take(t.text_global),
            text_tokens=take(t.text_tokens, token_dtype),
            text_mask=t.text_mask[index].to(device=device),
            has_image=t.has_image[index].to(device=device),
            image_mask=None if t.image_mask is None else t.image_mask[index].to(device=device),
            token_norm_eps=t.token_norm_eps,
        )


def random_features(
    num_products: int,
    embed_dim: int = 16,
    image_tokens: int = 4,
    text_tokens: int = 6,
    token_dim: int = 8,
    generator: torch.Generator | None = None,
) -> ProductFeatures:
    """A random feature table (benchmarks and tests): every product has an image, text
    lengths vary between 1 and ``text_tokens``."""
    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator)

    lengths = torch.randint(1, text_tokens + 1, (num_products,), generator=generator)
    return ProductFeatures(
        image_global=randn(num_products, embed_dim),
        image_tokens=randn(num_products, image_tokens, token_dim),
        text_global=randn(num_products, embed_dim),
        text_tokens=randn(num_products, text_tokens, token_dim),
        text_mask=torch.arange(text_tokens)[None, :] < lengths[:, None],
        has_image=torch.ones(num_products, dtype=torch.bool),
    )


#: ``train.amp_dtype`` values.
AMP_DTYPES = ("bfloat16", "float16")


def autocast_dtype(device: torch.device, amp_dtype: str | None, amp_cpu: bool = False) -> torch.dtype | None:
    """The dtype training steps autocast to on ``device``, or None (float32).

    ``amp_dtype`` applies on CUDA; on the CPU only with ``amp_cpu`` and only ``bfloat16`` (CPU
    autocast has no float16 loss scaling here). Worth it on CPUs with native bf16 arithmetic
    (AVX512-BF16, AMX): the step's big matmuls run ~2x faster (docs/benchmarks.md, session 15).
    """
    if amp_dtype is None:
        if amp_cpu:
            raise ValueError("train.amp_cpu=true needs train.amp_dtype=bfloat16; got null")
        return None
    if amp_dtype not in AMP_DTYPES:
        raise ValueError(f"train.amp_dtype={amp_dtype!r}; accepted: {', '.join(AMP_DTYPES)} or null")
    if device.type == "cuda":
        return getattr(torch, amp_dtype)
    if device.type == "cpu" and amp_cpu:
        if amp_dtype != "bfloat16":
            raise ValueError(f"train.amp_cpu=true needs train.amp_dtype=bfloat16; got {amp_dtype!r}")
        return torch.bfloat16
    return None


def prepare_frozen_source(source: FeatureSource, head: torch.nn.Module, device: torch.device,
                          amp_dtype: str | None, amp_cpu: bool = False) -> FeatureSource:
    """The frozen-backbone source a training run reads: a preloaded table (:class:`TensorFeatures`)
    of a relation-conditioned head gets its tokens normalised once, stored in the autocast dtype
    when training under autocast (:func:`autocast_dtype`: what the attention's matmuls read
    anyway) and in float32 otherwise; that of a global-only head (CLIP, unconditioned), which
    reads no tokens, drops them (no per-step copy of every product's token rows, and the
    memory back). Other sources are returned as they are."""
    if not isinstance(source, TensorFeatures):
        return source
    if getattr(head, "global_only", True):
        return source.without_tokens()
    eps = head.token_norm_eps
    dtype = autocast_dtype(device, amp_dtype, amp_cpu) or torch.float32
    return source.with_normalized_tokens(eps, dtype)
