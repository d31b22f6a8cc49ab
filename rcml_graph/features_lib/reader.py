"""Read a finished token-feature cache through memory maps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rcml_graph.io_utils import sha256_json
from rcml_graph.model.features import ProductFeatures

from .storage import (
    FORMAT_VERSION,
    MANIFEST_JSON,
    NAMED_DTYPES,
    PROGRESS_JSON,
    npy_path,
    read_header,
    read_json,
    to_torch,
)

RERUN_HINT = "rerun `python -m rcml_graph.features domain=<name> model=<preset>`"


@dataclass
class TextTokens:
    """Cached text-tower outputs of a set of texts (relation descriptions).

    Attributes:
        global_emb: ``(R, D)`` global text embeddings.
        tokens: ``(R, Lt, Dt)`` token features, zero-padded to the longest text of the set.
        mask: ``(R, Lt)`` bool, True on real tokens.
    """

    global_emb: Tensor
    tokens: Tensor
    mask: Tensor


def gather_tokens(
    tokens: np.ndarray, offsets: np.ndarray, index: np.ndarray, storage_dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """Pad the variable-length token rows of ``index`` into a batch.

    Args:
        tokens: ``(T, Dt)`` flat token rows.
        offsets: ``(N + 1,)`` int64; item ``i`` owns rows ``offsets[i]:offsets[i + 1]``.
        index: ``(B,)`` item indices.
        storage_dtype: The torch dtype the rows are stored as.

    Returns:
        ``(B, Lt, Dt)`` tokens (zeros on padding) and the ``(B, Lt)`` bool mask, with ``Lt`` the
        longest selected item.
    """
    starts = offsets[index]
    lengths = offsets[index + 1] - starts
    max_len = int(lengths.max()) if len(index) else 0
    positions = np.arange(max_len)
    mask = positions[None, :] < lengths[:, None]  # (B, Lt)
    rows = (starts[:, None] + positions[None, :])[mask]
    values = to_torch(np.ascontiguousarray(tokens[rows]), storage_dtype)  # (valid, Dt)
    mask_t = torch.from_numpy(mask)
    out = torch.zeros((len(index), max_len, tokens.shape[1]), dtype=values.dtype)
    out[mask_t] = values
    return out, mask_t


class FeatureCache:
    """A finished token-feature cache, memory-mapped (see :mod:`rcml_graph.features_lib.storage`).

    Open it with :meth:`open`; nothing is read into memory until a batch is requested.

    Attributes:
        manifest: The cache's manifest (keys, shapes, dtypes, build settings).
        num_products: Number of products ``N``.
        num_relations: Number of relation descriptions ``R`` (``len(data.relation_text)``).
        embed_dim: Global embedding dimension ``D``.
        image_token_dim: Image token width ``Di``.
        text_token_dim: Text token width ``Dt``.
        num_image_tokens: Image tokens per product ``Li``.
    """

    def __init__(self, cache_dir: Path, manifest: dict[str, Any]) -> None:
        self.cache_dir = cache_dir
        self.manifest = manifest
        self.storage_dtype = NAMED_DTYPES[manifest["build"]["storage_dtype"]]
        self.num_products = int(manifest["num_products"])
        self.num_relations = int(manifest["num_relations"])
        self.embed_dim = int(manifest["embed_dim"])
        self.image_token_dim = int(manifest["image_token_dim"])
        self.text_token_dim = int(manifest["text_token_dim"])
        self.num_image_tokens = int(manifest["num_image_tokens"])
        self._arrays = {
            name: np.load(npy_path(cache_dir, name), mmap_mode="r") for name in manifest["files"]
        }

    @classmethod
    def open(
        cls,
        cache_dir: str | Path,
        *,
        data_hash: str | None = None,
        model_key: dict[str, Any] | None = None,
    ) -> FeatureCache:
        """Open a finished cache after checking it.

        Args:
            cache_dir: The cache folder (:func:`cache_dir_for`).
            data_hash: If given, the hash of the graph and images the caller uses now; a cache
                built for other data is refused.
            model_key: If given, the model settings the caller uses now (e.g. ``{"name":
                "offline", "pretrained": None, ...}``); every given key must match the key the
                cache was built with.

        Raises:
            FileNotFoundError: no cache, or an unfinished one (no manifest).
            ValueError: a file is missing or changed since the build, or the cache was built
                for other data or another model.
        """
        cache_dir = Path(cache_dir)
        manifest = read_json(cache_dir / MANIFEST_JSON)
        if manifest is None or not manifest.get("complete"):
            progress = read_json(cache_dir / PROGRESS_JSON)
            if progress is not None:
                raise FileNotFoundError(
                    f"the feature cache in {cache_dir} is incomplete (no {MANIFEST_JSON}; "
                    f"{_progress_summary(progress)}): {RERUN_HINT} to finish it"
                )
            raise FileNotFoundError(f"no feature cache in {cache_dir}: {RERUN_HINT}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"feature cache {cache_dir} has format {manifest.get('format_version')!r}; this "
                f"code reads format {FORMAT_VERSION}: {RERUN_HINT}"
            )
        for name, info in manifest["files"].items():
            path = npy_path(cache_dir, name)
            header = read_header(path)
            if (
                header is None
                or list(header[0]) != info["shape"]
                or path.stat().st_size != info["bytes"]
            ):
                raise ValueError(
                    f"cache file {path} is missing or changed since the build (expected shape "
                    f"{info['shape']}, {info['bytes']} bytes): {RERUN_HINT} force=true"
                )
        if data_hash is not None and manifest["data_hash"] != data_hash:
            raise ValueError(
                f"features in {cache_dir} were built for graph {manifest['data_hash'][:12]}, the "
                f"graph is now {data_hash[:12]}: rerun rcml_graph.features"
            )
        if model_key is not None:
            built = manifest["model_key"]
            mismatched = {k: (built.get(k), v) for k, v in model_key.items() if built.get(k) != v}
            if mismatched:
                old = sha256_json({k: built.get(k) for k in model_key})[:12]
                new = sha256_json(model_key)[:12]
                details = ", ".join(f"{k}: built {a!r}, now {b!r}" for k, (a, b) in mismatched.items())
                raise ValueError(
                    f"features in {cache_dir} were built for model {old}, the model is now {new} "
                    f"({details}): rerun rcml_graph.features"
                )
        return cls(cache_dir, manifest)

    def _check_index(self, index: Tensor, size: int, what: str) -> np.ndarray:
        index_np = index.detach().to("cpu", torch.long).numpy()
        if index_np.ndim != 1:
            raise ValueError(f"{what} index must be 1-D; got shape {tuple(index.shape)}")
        if len(index_np) and (index_np.min() < 0 or index_np.max() >= size):
            raise ValueError(
                f"{what} index out of range [0, {size}): min {index_np.min()}, max {index_np.max()}"
            )
        return index_np

    def _rows(self, name: str, index: np.ndarray) -> Tensor:
        return to_torch(np.ascontiguousarray(self._arrays[name][index]), self.storage_dtype)

    @property
    def has_image(self) -> Tensor:
        """``(N,)`` bool: which products have an image."""
        return torch.from_numpy(np.array(self._arrays["product_has_image"]))

    def product_features(
        self,
        index: Tensor,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> ProductFeatures:
        """Cached features of the products ``index`` (``(B,)`` long), on ``device`` in ``dtype``.

        Text tokens are padded to the longest text of the batch. Products without an image
        have ``has_image`` False and all-zero image features.
        """
        idx = self._check_index(index, self.num_products, "product")
        text_tokens, text_mask = gather_tokens(
            self._arrays["product_text_tokens"],
            self._arrays["product_text_offsets"],
            idx,
            self.storage_dtype,
        )

        def move(tensor: Tensor) -> Tensor:
            return tensor.to(device=device).to(dtype)

        has_image = torch.from_numpy(np.array(self._arrays["product_has_image"][idx]))
        return ProductFeatures(
            image_global=move(self._rows("product_image_global", idx)),
            image_tokens=move(self._rows("product_image_tokens", idx)),
            text_global=move(self._rows("product_text_global", idx)),
            text_tokens=move(text_tokens),
            text_mask=text_mask.to(device=device),
            has_image=has_image.to(device=device),
        )

    def relation_features(
        self,
        index: Tensor | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> TextTokens:
        """Cached text features of the relation descriptions ``index`` (all when None)."""
        if index is None:
            idx = np.arange(self.num_relations)
        else:
            idx = self._check_index(index, self.num_relations, "relation")
        tokens, mask = gather_tokens(
            self._arrays["relation_tokens"], self._arrays["relation_offsets"], idx, self.storage_dtype
        )
        return TextTokens(
            global_emb=self._rows("relation_global", idx).to(device=device).to(dtype),
            tokens=tokens.to(device=device).to(dtype),
            mask=mask.to(device=device),
        )


def _progress_summary(progress: dict[str, Any]) -> str:
    shards = progress.get("num_shards", "?")
    return (
        f"image shards done {len(progress.get('image_shards', []))}/{shards}, "
        f"text shards done {len(progress.get('text_shards', []))}/{shards}, "
        f"relations {'done' if progress.get('relations') else 'not done'}"
    )
