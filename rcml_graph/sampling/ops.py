"""Vectorised index helpers shared by the samplers: segment expansion and stream seeding."""

from __future__ import annotations

from typing import Final

import torch
from torch import Tensor

_MASK64: Final = (1 << 64) - 1


def expand_segments(start: Tensor, length: Tensor) -> tuple[Tensor, Tensor]:
    """Enumerate the positions of segments ``[start[i], start[i] + length[i])``.

    Returns ``(row, position)``, each (sum(length),): ``row`` is the segment index ``i`` (in
    increasing order) and ``position`` runs through the segment.

    >>> expand_segments(torch.tensor([5, 0, 9]), torch.tensor([2, 0, 3]))
    (tensor([0, 0, 2, 2, 2]), tensor([ 5,  6,  9, 10, 11]))
    """
    total = int(length.sum())
    row = torch.repeat_interleave(torch.arange(length.numel(), device=length.device), length,
                                  output_size=total)
    first = torch.cumsum(length, 0) - length  # output position of each segment's first element
    position = torch.arange(total, device=length.device) + (start - first).index_select(0, row)
    return row, position


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps), so nearby streams do not correlate."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & _MASK64
        state ^= state >> 29
    return state & ((1 << 63) - 1)
