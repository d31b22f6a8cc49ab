"""AdamW with linear warmup and cosine decay (the CLIP / open_clip schedule)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """The learning-rate multiplier at optimizer step ``step`` (0-based).

    Linear from ``1 / warmup_steps`` to 1 over the first ``warmup_steps`` steps, then a
    half cosine from 1 down to ``min_lr_ratio`` at ``total_steps``; constant afterwards.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.98),
    eps: float = 1e-6,
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; biases, norms, scalars and embeddings get no decay."""
    if lr <= 0:
        raise ValueError(f"lr={lr}; accepted: a positive learning rate")
    if weight_decay < 0:
        raise ValueError(f"weight_decay={weight_decay}; accepted: >= 0")
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.dim() < 2 or "norm" in name or "bias" in name or "embedding" in name
        (no_decay if exempt else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    params = decay + no_decay
    # The fused CUDA kernel: one launch for every tensor instead of a few per tensor.
    fused = bool(params) and all(p.is_cuda and p.is_floating_point() for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, eps=eps,
                             fused=fused or None)


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0
) -> LambdaLR:
    """A :class:`LambdaLR` following :func:`warmup_cosine_factor`; step it once per optimizer step."""
    if warmup_steps < 0 or total_steps < 1:
        raise ValueError(
            f"warmup_steps={warmup_steps}, total_steps={total_steps}; accepted: warmup >= 0, total >= 1"
        )
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio={min_lr_ratio}; accepted: a ratio in [0, 1]")
    return LambdaLR(
        optimizer, lambda step: warmup_cosine_factor(step, warmup_steps, total_steps, min_lr_ratio)
    )
