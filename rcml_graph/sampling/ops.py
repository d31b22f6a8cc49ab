"""Vectorised index helpers shared by the samplers: segment expansion, row gathers, seeding,
and huge-page placement of the random-access tables."""

from __future__ import annotations

import mmap
from typing import Final

import torch
from torch import Tensor

_MASK64: Final = (1 << 64) - 1
#: Size of a transparent huge page on x86-64 and most arm64 kernels.
HUGE_PAGE_BYTES: Final = 2 << 20
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


def huge_page_copy(table: Tensor, min_bytes: int = HUGE_PAGE_BYTES) -> Tensor:
    """A copy of a CPU ``table`` in memory advised for transparent huge pages (Linux).

    The samplers gather single rows at random from tables of hundreds of MB; with 4 KiB pages
    nearly every such read also misses the TLB and walks the page table. 2 MiB pages avoid
    most of those walks (measured +1-7% sampler throughput on the 2-core benchmark machine,
    within its run-to-run noise; docs/benchmarks.md, session 7). Where the kernel runs THP in ``madvise`` mode (a common
    default) torch's allocator does not ask for them (only with ``THP_MEM_ALLOC_ENABLE=1`` in
    the environment), so the table is copied into an anonymous mapping advised with
    ``MADV_HUGEPAGE`` before its pages are first touched, aligned to a huge page. The
    standard library's ``mmap`` does this; no package offers it for a torch tensor.

    Returns ``table`` itself where this does not apply or is refused: a non-CPU or
    non-contiguous tensor, one smaller than ``min_bytes``, a platform without
    ``MADV_HUGEPAGE``. The copy holds the same values (it is an ordinary tensor whose storage
    keeps the mapping alive), so results never depend on whether huge pages were granted.
    """
    advice = getattr(mmap, "MADV_HUGEPAGE", None)
    if (advice is None or table.device.type != "cpu" or not table.is_contiguous()
            or table.nbytes < max(min_bytes, 1)):
        return table
    try:
        buffer = mmap.mmap(-1, table.nbytes + HUGE_PAGE_BYTES,
                           flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        address = torch.frombuffer(buffer, dtype=torch.uint8, count=1).data_ptr()
        offset = -address % HUGE_PAGE_BYTES
        buffer.madvise(advice, offset, table.nbytes + HUGE_PAGE_BYTES - offset)
    except (OSError, ValueError):
        return table
    out = torch.frombuffer(buffer, dtype=table.dtype, count=table.numel(), offset=offset)
    return out.view(table.shape).copy_(table)
