"""Relation-guided multi-head cross-attention: a relation queries a product's tokens."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class RelationCrossAttention(nn.Module):
    r"""One relation query attends over one product's tokens of one modality.

    The relation embedding and the tokens are layer-normalised first (pre-LN), projected to
    ``d_model``, split into ``num_heads`` heads and combined with
    :func:`torch.nn.functional.scaled_dot_product_attention` under a boolean key-padding mask.
    The attended value is projected to ``out_dim``.

    Keys and values do not depend on the relation, so they are computed once per row of
    ``tokens`` (a product) and shared by every view that ``token_index`` points at that row;
    only the query is per view.

    A row whose tokens are all masked (a product without an image) has nothing to attend to;
    SDPA would return NaN for it. Such rows attend to all (ignored) keys instead, their output
    is replaced by zeros and they are flagged in the returned ``empty`` mask, so neither the
    forward values nor the gradients can be NaN.

    Args:
        relation_dim (int): size of the relation embedding (the backbone's text embedding).
        token_dim (int): size of the key/value tokens.
        out_dim (int): size of the output (the global embedding size, for blending).
        d_model (int, optional): attention width, divisible by ``num_heads``. (default: 256)
        num_heads (int, optional): number of heads. (default: 4)
        dropout (float, optional): attention dropout probability while training. (default: 0.0)

    Shapes:
        - **input:** relation ``(V, relation_dim)``, tokens ``(N, L, token_dim)``,
          token_mask ``(N, L)`` bool with True for tokens that may be attended,
          token_index ``(V,)`` long row of ``tokens`` for each view (None: ``V == N`` and
          view ``v`` uses row ``v``), normalized: ``tokens`` are already affine-free
          layer-normalised with ``token_norm.eps`` and zero at padded positions
          (:meth:`rcml_graph.model.features.ProductFeatures.normalize_tokens`).
        - **output:** attended ``(V, out_dim)`` (zeros on empty rows), empty ``(V,)`` bool.
    """

    def __init__(
        self,
        relation_dim: int,
        token_dim: int,
        out_dim: int,
        d_model: int = 256,
        num_heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_heads < 1 or d_model % num_heads != 0:
            raise ValueError(
                f"d_model={d_model} must be a positive multiple of num_heads={num_heads}"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout={dropout} must lie in [0, 1)")
        self.num_heads = num_heads
        self.d_model = d_model
        self.dropout = dropout
        self.query_norm = nn.LayerNorm(relation_dim)
        self.token_norm = nn.LayerNorm(token_dim)
        self.query_proj = nn.Linear(relation_dim, d_model)
        self.key_proj = nn.Linear(token_dim, d_model)
        self.value_proj = nn.Linear(token_dim, d_model)
        self.out_proj = nn.Linear(d_model, out_dim)

    #: ``auto`` picks the cheaper of the two exact formulations per call (see :meth:`_absorb`);
    #: ``projected`` / ``absorbed`` force one (tests compare them).
    attention_path: str = "auto"
    #: ``scaled_dot_product_attention`` backends to allow (names of
    #: :class:`torch.nn.attention.SDPBackend`); None lets PyTorch choose. cuDNN is left out by
    #: default: training batches change shape every step and cuDNN builds an execution plan per
    #: shape. Measured on an H100 (RCML frozen step at batch 1024 with training defaults):
    #: 2.97 steps/s with PyTorch's choice (cuDNN), 8.60 with these
    #: (benchmarks/results/train_h100_frozen_torch_sdpa.json, train_h100_frozen.json).
    sdpa_backends: tuple[str, ...] | None = ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "MATH")

    def _sdpa_context(self) -> contextlib.AbstractContextManager:
        if self.sdpa_backends is None:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([getattr(SDPBackend, name) for name in self.sdpa_backends])

    def _token_projection(self) -> tuple[Tensor, Tensor]:
        """The token layer norm's affine folded into the key and value projections.

        ``W (n * g + b) + c = (W * g) n + (W b + c)`` for the affine-free normalised tokens
        ``n``: keys and values come from one ``(2 d_model, token_dim)`` matmul over ``n``, and
        the ``(N, L, token_dim)`` affine output (and its backward) is never built. Exact; the
        parameters (and checkpoints) are those of ``token_norm``, ``key_proj``, ``value_proj``.
        Returns ``(weight (2 d_model, token_dim), bias (2 d_model,))``, keys first.
        """
        weight = torch.cat([self.key_proj.weight, self.value_proj.weight])  # (2 d_model, T)
        bias = torch.cat([self.key_proj.bias, self.value_proj.bias])  # (2 d_model,)
        return weight * self.token_norm.weight, weight @ self.token_norm.bias + bias

    def _absorb(self, num_rows: int, max_views: int, length: int) -> bool:
        """Whether to fold the key/value projections into the queries for this call.

        Projecting keys and values costs ``N * L * token_dim * 2 * d_model`` multiply-adds; the
        absorbed form, on the ``(N, K)`` padded queries, about
        ``N * K * H * token_dim * (2 * L + 2 * head_dim)`` and ``N * K * H * token_dim`` floats:
        cheaper while rows have fewer than ``L * d_model / (H * (L + head_dim))`` padded views
        (about 28 for 49 image tokens, width 256, 4 heads). Embedding a corpus under one relation
        (``K = 1``) is about 28 times cheaper; a training step, whose busiest product has a dozen
        views or more, usually stays projected. The memory of the token-space queries is capped
        at 2^27 floats.
        """
        if self.attention_path != "auto":
            return self.attention_path == "absorbed"
        head_dim = self.d_model // self.num_heads
        projected = length * 2 * self.d_model
        absorbed = max_views * self.num_heads * (2 * length + 2 * head_dim)
        small = num_rows * max_views * self.num_heads * self.key_proj.in_features <= 1 << 27
        return absorbed < projected and small

    def _weights(self, scores: Tensor, attend: Tensor) -> Tensor:
        """Attention weights of ``scores`` over their last dim, ``attend`` (broadcastable) False
        where masked; the softmax in float32 under CPU autocast too, as CUDA autocast runs it (a
        no-op otherwise); attention dropout while training."""
        weights = torch.softmax(scores.float().masked_fill(~attend, float("-inf")), dim=-1)
        if self.training and self.dropout > 0:
            weights = F.dropout(weights, self.dropout)
        return weights

    def _attend_absorbed(self, query: Tensor, normed: Tensor, attend: Tensor, weight: Tensor,
                         bias: Tensor) -> Tensor:
        """Attention with the key/value projections folded into the queries (exact).

        ``q . (W_k n + b_k) = (W_k^T q) . n + const`` (the constant cancels in the softmax) and
        ``sum_j a_j (W_v n_j + b_v) = W_v (sum_j a_j n_j) + b_v``: the queries move to the token
        space and attend to the normalised tokens themselves, so no ``(N, L, d_model)`` keys or
        values are built. Written by hand: no library offers this form.

        Shapes: query ``(N, H, K, d)``, normed ``(N, L, token_dim)`` (affine-free), attend
        ``(N, L)`` bool, weight/bias from :meth:`_token_projection`; returns ``(N, H, K, d)``.
        """
        num_heads, head_dim = self.num_heads, self.d_model // self.num_heads
        token_dim = normed.shape[-1]
        w_key, w_value = weight.view(2, num_heads, head_dim, token_dim).unbind(0)  # (H, d, T) each
        b_key, b_value = bias.view(2, num_heads, head_dim).unbind(0)  # (H, d) each
        num_rows, _, max_views, _ = query.shape
        token_query = torch.einsum("nhkd,hdt->nhkt", query, w_key)  # (N, H, K, T)
        token_query = token_query.reshape(num_rows, num_heads * max_views, token_dim)  # (N, HK, T)
        # Plain batched matmuls against the (N, L, T) tokens, shared by the heads: SDPA would need
        # the tokens expanded per head, which its kernels copy.
        scores = torch.bmm(token_query, normed.transpose(1, 2))  # (N, HK, L)
        # q . b_k is constant over the tokens and cancels in the softmax; adding it keeps the key
        # bias in the graph (a zero gradient, as in the projected form: DDP needs every parameter).
        key_bias = torch.einsum("nhkd,hd->nhk", query, b_key)
        scores = (scores + key_bias.reshape(num_rows, num_heads * max_views, 1)) * head_dim**-0.5
        weights = self._weights(scores, attend[:, None, :])
        mixed = torch.bmm(weights, normed).view(num_rows, num_heads, max_views, token_dim)  # (N, H, K, T)
        out = torch.einsum("nhkt,hdt->nhkd", mixed, w_value)  # (N, H, K, d)
        return out + b_value.view(1, num_heads, 1, head_dim)

    def forward(
        self, relation: Tensor, tokens: Tensor, token_mask: Tensor, token_index: Tensor | None = None,
        normalized: bool = False,
    ) -> tuple[Tensor, Tensor]:
        num_rows, length, _ = tokens.shape
        num_views = relation.shape[0]
        if token_index is None and num_views != num_rows:
            raise ValueError(
                f"without token_index, relation rows ({num_views}) must equal token rows ({num_rows})"
            )
        head_dim = self.d_model // self.num_heads
        token_mask = token_mask.to(torch.bool)
        weight, bias = self._token_projection()
        if normalized:
            # Already affine-free normalised with padding zeroed (ProductFeatures.normalize_tokens),
            # possibly stored in the autocast dtype; outside autocast, compute in the weights' dtype.
            normed = tokens if torch.is_autocast_enabled(tokens.device.type) else tokens.to(weight.dtype)
        else:
            # Padded positions may hold anything (even NaN): zero them so they reach no gradient.
            # (Skipped when nothing is padded: the copy costs as much as the layer norm.)
            if not bool(token_mask.all()):
                tokens = tokens.masked_fill(~token_mask[..., None], 0.0)
            # Affine-free: the layer norm's scale and shift are folded into the projections.
            norm = self.token_norm
            normed = F.layer_norm(tokens, norm.normalized_shape, None, None, norm.eps)  # (N, L, token_dim)
        if token_index is None:
            token_index = torch.arange(num_rows, device=tokens.device)
        # Group the views by product row instead of gathering keys/values per view (a (V, H, L, d)
        # copy): row n's views become the queries n, 0..k_n-1 of one padded batch, so SDPA runs
        # with (N, H, K, d) queries against each row's own keys once.
        counts = torch.bincount(token_index, minlength=num_rows)  # (N,)
        order = torch.argsort(token_index, stable=True)  # (V,)
        starts = torch.cumsum(counts, 0) - counts  # (N,)
        slot = torch.empty_like(token_index)
        slot[order] = torch.arange(num_views, device=tokens.device) - starts[token_index[order]]
        max_views = int(counts.max()) if num_views else 0
        empty_row = ~token_mask.any(dim=1)  # (N,)
        # Empty rows attend everywhere (finite, then discarded) instead of nowhere (NaN).
        attend = token_mask | empty_row[:, None]  # (N, L)
        query = self.query_proj(self.query_norm(relation))  # (V, d_model)
        padded = query.new_zeros(num_rows, max_views, self.d_model)
        padded = padded.index_put((token_index, slot), query)  # (N, K, d_model)
        padded = padded.view(num_rows, max_views, self.num_heads, head_dim).transpose(1, 2)  # (N, H, K, d)
        if self._absorb(num_rows, max_views, length):
            attended = self._attend_absorbed(padded, normed, attend, weight, bias)
        else:
            key_value = F.linear(normed, weight, bias).view(num_rows, length, 2, self.num_heads, head_dim)
            key, value = key_value.permute(2, 0, 3, 1, 4).unbind(0)  # (N, H, L, d) each
            if self._explicit(tokens.device):
                attended = self._attend_explicit(padded, key, value, attend)
            else:
                attended = self._attend_sdpa(padded, key, value, attend)
        attended = attended.transpose(1, 2)[token_index, slot].reshape(num_views, self.d_model)  # (V, d_model)
        empty = empty_row[token_index]  # (V,)
        out = self.out_proj(attended)  # (V, out_dim)
        out = torch.where(empty[:, None], torch.zeros_like(out), out)
        return out, empty

    def _attend_sdpa(self, query: Tensor, key: Tensor, value: Tensor, attend: Tensor) -> Tensor:
        """:func:`~torch.nn.functional.scaled_dot_product_attention` of ``(N, H, K, d)`` queries
        over ``(N, H, L, d)`` keys/values, ``attend (N, L)``; returns ``(N, H, K, d)``."""
        with self._sdpa_context():
            return F.scaled_dot_product_attention(
                query,
                key,
                value,
                attn_mask=attend[:, None, None, :],  # (N, 1, 1, L) broadcast over heads and queries
                dropout_p=self.dropout if self.training else 0.0,
            )  # (N, H, K, d)

    #: Under CPU autocast, attend with explicit matmuls instead of SDPA: PyTorch's CPU flash
    #: kernel is ~3x slower in bf16 than two bf16 batched matmuls and a float32 softmax, most
    #: of it in the backward (a demo-sized call, 2,750 products x 4 heads x 16 queries x 49
    #: keys, 1 thread: 1,945 vs 703 ms forward + backward on a loaded 2-core box;
    #: benchmarks/bench_attention_cpu.py, benchmarks/results/attention_cpu_s15.json).
    cpu_autocast_explicit: bool = True

    def _explicit(self, device: torch.device) -> bool:
        return self.cpu_autocast_explicit and device.type == "cpu" and torch.is_autocast_enabled("cpu")

    def _attend_explicit(self, query: Tensor, key: Tensor, value: Tensor, attend: Tensor) -> Tensor:
        """The same attention as :meth:`_attend_sdpa`, written out: scores and mixing as batched
        matmuls in the autocast dtype, the masked softmax in float32. Shapes as there."""
        head_dim = query.shape[-1]
        scores = torch.matmul(query, key.transpose(-1, -2)).float() * head_dim**-0.5  # (N, H, K, L)
        weights = self._weights(scores, attend[:, None, None, :])
        return torch.matmul(weights.to(value.dtype), value)  # (N, H, K, d)
