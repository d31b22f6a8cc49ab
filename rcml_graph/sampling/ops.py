"""Vectorised index helpers shared by the samplers: segment expansion, row gathers, seeding."""

from __future__ import annotations

from typing import Final

import torch
from torch import Tensor

_MASK64: Final = (1 << 64) - 1
# a contiguous row of this many bytes moves as one element of this dtype
_ROW_DTYPES: Final = {8: torch.int64, 16: torch.complex128}


def expand_segments(start: Tensor, length: Tensor) -> tuple[Tensor, Tensor]:
    """Enumerate the positions of segments ``[start[i], start[i] + length[i])``.

    Returns ``(row, position)``, each (sum(length),): ``row`` is the segment index ``i`` (in
    increasing order, dtype of ``length``) and ``position`` runs through the segment (dtype
    of ``start + length``), so int32 inputs give int32 outputs.

    >>> expand_segments(torch.tensor([5, 0, 9]), torch.tensor([2, 0, 3]))
    (tensor([0, 0, 2, 2, 2]), tensor([ 5,  6,  9, 10, 11]))
    """
    first = torch.cumsum(length, 0, dtype=length.dtype) - length
    total = int(first[-1] + length[-1]) if length.numel() else 0
    # a segment's row starts where its first element lands; cumulating the marks numbers the
    # rows (empty segments mark the same place twice, so their number is skipped), which is
    # cheaper than repeat_interleave for short segments
    marks = torch.zeros(total + 1, dtype=length.dtype, device=length.device)
    marks.index_add_(0, first, torch.ones_like(length))
    row = torch.cumsum(marks[:total], 0, dtype=length.dtype) - 1
    position = torch.arange(total, dtype=torch.promote_types(start.dtype, length.dtype),
                            device=length.device)
    position += (start - first).index_select(0, row)
    return row, position


def gather_rows(table: Tensor, index: Tensor) -> Tensor:
    """``table.index_select(0, index)`` for a 2-D table, one element move per row.

    A contiguous row of 8 or 16 bytes (two or four int32) is viewed as one int64 or
    complex128 element, which a 1-D gather moves several times faster than a 2-D
    ``index_select`` moves its columns.
    """
    row_dtype = _ROW_DTYPES.get(table.shape[1] * table.element_size())
    if row_dtype is None or not table.is_contiguous():
        return table.index_select(0, index)
    rows = table.view(row_dtype).view(-1).index_select(0, index)
    return rows.view(table.dtype).view(-1, table.shape[1])


def mix_seed(*values: int) -> int:
    """A 63-bit seed from integers (splitmix64 steps), so nearby streams do not correlate."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        state = (state ^ (state >> 31)) * 0x94D049BB133111EB & _MASK64
        state ^= state >> 29
    return state & ((1 << 63) - 1)
