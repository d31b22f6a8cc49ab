"""On-disk layout of the token-feature cache: preallocated ``.npy`` files, progress, manifest.

A cache folder (``datasets/<domain>/features/<model>/``) holds

- ``product_image_global.npy`` ``(N, D)``, ``product_image_tokens.npy`` ``(N, Li, Di)``,
  ``product_has_image.npy`` ``(N,)`` bool: rows of products without an image are zeros and
  ``has_image`` is False (no fake image is ever encoded);
- ``product_text_global.npy`` ``(N, D)``, ``product_text_tokens.npy`` ``(T, Dt)`` (only the valid
  tokens of every product, concatenated) and ``product_text_offsets.npy`` ``(N + 1,)`` int64:
  product ``i``'s tokens are rows ``offsets[i]:offsets[i + 1]``;
- ``relation_global.npy``, ``relation_tokens.npy``, ``relation_offsets.npy``: the same for the
  relation-description table (``data.relation_text``);
- ``progress.json``: the shards already written (updated atomically after each shard);
- ``manifest.json``: written last, only when every shard is done. No manifest, no cache.

Floating arrays are stored as float16 (default), float32, or bfloat16 kept as ``uint16`` bit
patterns (numpy has no bfloat16); :func:`to_torch` turns any of them back into a tensor.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT_VERSION = 1
MANIFEST_JSON = "manifest.json"
PROGRESS_JSON = "progress.json"
STATS_JSON = "build_stats.json"

#: Storage dtypes accepted by the writer, with their numpy carrier dtype.
STORAGE_DTYPES: dict[torch.dtype, np.dtype] = {
    torch.float16: np.dtype(np.float16),
    torch.bfloat16: np.dtype(np.uint16),
    torch.float32: np.dtype(np.float32),
}
DTYPE_NAMES: dict[torch.dtype, str] = {
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float32: "float32",
}
NAMED_DTYPES: dict[str, torch.dtype] = {name: dtype for dtype, name in DTYPE_NAMES.items()}


def parse_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """A storage dtype from a torch dtype or its name (``"float16"``, ``"bfloat16"``, ...)."""
    if isinstance(dtype, str):
        if dtype not in NAMED_DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; accepted: {', '.join(NAMED_DTYPES)}")
        return NAMED_DTYPES[dtype]
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage dtype {dtype} is not supported; accepted: {', '.join(NAMED_DTYPES)}")
    return dtype


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A CPU tensor of a storage dtype as a numpy array (bfloat16 as its uint16 bit pattern)."""
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(np.uint16)
    return tensor.numpy()


def to_torch(array: np.ndarray, storage_dtype: torch.dtype) -> torch.Tensor:
    """Inverse of :func:`to_numpy` (``array`` must be an in-memory copy, not a read-only map)."""
    if storage_dtype == torch.bfloat16:
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def array_specs(
    num_products: int,
    num_relations: int,
    num_product_tokens: int,
    num_relation_tokens: int,
    embed_dim: int,
    num_image_tokens: int,
    image_token_dim: int,
    text_token_dim: int,
    storage: np.dtype,
) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``name -> (shape, numpy dtype)`` of every array file of a cache."""
    offsets = np.dtype(np.int64)
    return {
        "product_image_global": ((num_products, embed_dim), storage),
        "product_image_tokens": ((num_products, num_image_tokens, image_token_dim), storage),
        "product_has_image": ((num_products,), np.dtype(np.bool_)),
        "product_text_global": ((num_products, embed_dim), storage),
        "product_text_tokens": ((num_product_tokens, text_token_dim), storage),
        "product_text_offsets": ((num_products + 1,), offsets),
        "relation_global": ((num_relations, embed_dim), storage),
        "relation_tokens": ((num_relation_tokens, text_token_dim), storage),
        "relation_offsets": ((num_relations + 1,), offsets),
    }


def npy_path(cache_dir: Path, name: str) -> Path:
    return cache_dir / f"{name}.npy"


def read_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int] | None:
    """``(shape, dtype, data offset)`` of a C-ordered ``.npy`` file, or None if unreadable."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(handle)
            offset = handle.tell()
    except (OSError, ValueError):
        return None
    if fortran:
        return None
    return tuple(shape), np.dtype(dtype), offset


class RowFile:
    """Positional writes of rows into a preallocated ``.npy`` file.

    ``os.pwrite`` copies straight into the page cache: no page faults in the writing thread
    (as a fresh memory map would take for every 4 KiB), and the GIL is released meanwhile.

    Args:
        path: The ``.npy`` file; created (sparse, zero-filled) when ``create`` is True.
        shape: Full array shape; rows are indexed along the first dimension.
        dtype: numpy dtype of the file.
        create: Create (or truncate) the file instead of opening an existing one.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype, create: bool) -> None:
        if create:
            array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
            del array  # the header and the (sparse) file size are what we need
        header = read_header(path)
        if header is None or header[0] != tuple(shape) or header[1] != dtype:
            raise ValueError(f"{path} is not an array of shape {shape} and dtype {dtype}")
        self.path = path
        self.shape = tuple(shape)
        self.dtype = dtype
        self.data_offset = header[2]
        self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        self.fd = os.open(path, os.O_RDWR)

    def write(self, start_row: int, rows: np.ndarray) -> None:
        """Write ``rows`` (shape ``(n, *shape[1:])``) at rows ``start_row:start_row + n``."""
        if rows.dtype != self.dtype or rows.shape[1:] != self.shape[1:]:
            raise ValueError(
                f"rows of shape {rows.shape}/{rows.dtype} do not fit {self.path.name} "
                f"{self.shape}/{self.dtype}"
            )
        if start_row < 0 or start_row + rows.shape[0] > self.shape[0]:
            raise ValueError(f"rows {start_row}:{start_row + rows.shape[0]} outside {self.shape[0]}")
        view = memoryview(np.ascontiguousarray(rows)).cast("B")
        position = self.data_offset + start_row * self.row_bytes
        while view:
            written = os.pwrite(self.fd, view, position)
            view, position = view[written:], position + written

    def write_rows(self, rows_index: np.ndarray, rows: np.ndarray) -> None:
        """Write ``rows[k]`` at row ``rows_index[k]``; ``rows_index`` strictly increasing.

        Consecutive indices are merged into one write each.
        """
        if len(rows_index) == 0:
            return
        breaks = np.flatnonzero(np.diff(rows_index) != 1) + 1
        starts = np.concatenate(([0], breaks))
        ends = np.concatenate((breaks, [len(rows_index)]))
        for start, end in zip(starts.tolist(), ends.tolist()):
            self.write(int(rows_index[start]), rows[start:end])

    def write_zeros(self, rows_index: np.ndarray, chunk_rows: int = 64) -> None:
        """Zero the rows ``rows_index`` (strictly increasing), ``chunk_rows`` rows per write."""
        zeros = np.zeros((min(chunk_rows, max(len(rows_index), 1)), *self.shape[1:]), self.dtype)
        for first in range(0, len(rows_index), chunk_rows):
            chunk = rows_index[first : first + chunk_rows]
            self.write_rows(chunk, zeros[: len(chunk)])

    def sync(self) -> None:
        os.fdatasync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_bytes())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return value if isinstance(value, dict) else None
