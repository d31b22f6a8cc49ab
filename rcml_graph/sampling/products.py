"""Deduplicating a batch's product references with a product-sized scratch table, no sort."""

from __future__ import annotations

import torch
from torch import Tensor

from rcml_graph.sampling.ops import huge_page_copy


class BatchProductTable:
    """Unique products of a batch in order of first reference, and membership lookups.

    The table holds, per product, ``offset + first reference`` of the latest batch that
    referenced it, stamped by an ``amin`` scatter (order-independent, so deterministic on
    GPU too). Each batch takes the value range ``[offset, offset + R)`` just below the
    previous batch's, so entries left by earlier batches lose the ``amin`` and fail the range
    test: the table is cleared only when the range runs out (every ~2^31 / R batches in
    int32), and a batch's result does not depend on the batches before it.

    Args:
        num_products: table size.
        max_references: the most references one batch may have; the table is int32 when it
            and ``index_dtype`` allow, else int64.
        index_dtype: dtype of the reference and local indices (int32 or int64).
        device: device of the table.
    """

    def __init__(self, num_products: int, max_references: int, index_dtype: torch.dtype,
                 device: torch.device) -> None:
        fits = index_dtype == torch.int32 and max_references < 1 << 30
        self.dtype = torch.int32 if fits else torch.long
        self.index_dtype = index_dtype
        self._top = torch.iinfo(self.dtype).max
        self._table = huge_page_copy(
            torch.full((num_products,), self._top, dtype=self.dtype, device=device))
        self._end = self._top  # exclusive end of the current batch's value range
        self._offset = self._top
        self._local_of_first: Tensor | None = None

    def index(self, references: Tensor) -> tuple[Tensor, Tensor]:
        """``(products, local)``: the unique products (U,) int64, in order of first
        reference, and the position of each reference in them (R,) ``index_dtype``."""
        num_refs = references.numel()
        if num_refs >= self._top:
            raise ValueError(f"{num_refs} references in one batch; accepted: < {self._top}")
        if self._offset < num_refs:  # the value range ran out: start afresh
            self._table.fill_(self._top)
            self._offset = self._top
        self._end = self._offset
        self._offset -= num_refs
        device = references.device
        position = torch.arange(num_refs, dtype=self.dtype, device=device)
        self._table.scatter_reduce_(0, references.long(), position + self._offset, reduce="amin")
        first = self._table.index_select(0, references) - self._offset
        is_first = first == position
        local_of_first = torch.cumsum(is_first, 0, dtype=self.index_dtype) - 1
        local = local_of_first.index_select(0, first)
        num_unique = int(local_of_first[-1]) + 1 if num_refs else 0
        # every writer of a slot writes the same product, so the race is harmless
        products = torch.empty(num_unique, dtype=torch.long, device=device)
        products.scatter_(0, local.long(), references.long())
        self._local_of_first = local_of_first
        return products, local

    def lookup(self, products: Tensor) -> tuple[Tensor, Tensor]:
        """``(present, local)`` for products (T,) after :meth:`index`: bool (T,) and their
        positions in its ``products`` (T,) ``index_dtype``, 0 where absent."""
        assert self._local_of_first is not None, "lookup() before index()"
        value = self._table.index_select(0, products)
        present = value < self._end
        local = self._local_of_first.index_select(0, (value - self._offset) * present)
        return present, local
