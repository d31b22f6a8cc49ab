"""Run a frozen backbone once over every product and relation description; write the cache.

The work is cut into shards of ``shard_size`` products and three stages (relation texts,
product images, product texts). After a shard's rows are written and synced, it is recorded in
``progress.json`` (atomically); a rerun with the same settings skips recorded shards and
rewrites any shard a killed run left half-written, so the result equals an uninterrupted run
bit for bit (batches never cross a shard boundary, so every row sees the same batch either
way). The manifest is written last.

On CUDA, images are decoded on the GPU (nvJPEG) in a side stream while the previous batch's
forward runs, the forward runs under bf16 autocast, and results travel to pinned host memory
asynchronously and are written by a background thread, so decode, compute and disk overlap.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch_geometric.data import HeteroData

from rcml_graph.backbones import Backbone
from rcml_graph.io_utils import atomic_write_json, sha256_json

from .loading import IMAGE_DECODERS
from .stages import BuildState, Writer, backbone_autocast, save_npy, tokenize_to_files
from .storage import (
    DTYPE_NAMES,
    FORMAT_VERSION,
    MANIFEST_JSON,
    PROGRESS_JSON,
    STATS_JSON,
    STORAGE_DTYPES,
    RowFile,
    array_specs,
    npy_path,
    parse_dtype,
    read_json,
)

log = logging.getLogger(__name__)

_TOKEN_FILES = ("_product_input_ids", "_product_token_mask", "_relation_input_ids", "_relation_token_mask")
_OFFSET_ARRAYS = ("product_text_offsets", "relation_offsets")


def cache_dir_for(data_root: str | Path, domain: str, model_name: str) -> Path:
    """``<data_root>/<domain>/features/<model_name>/``."""
    return Path(data_root) / domain / "features" / model_name


def feature_data_hash(graph_files: dict[str, str], image_manifest_sha256: str | None) -> str:
    """The data part of a cache key: the graph build's file hashes and the image manifest's."""
    return sha256_json({"graph": graph_files, "images": image_manifest_sha256})


def _model_hash(model_key: dict[str, Any], preprocessing: dict[str, Any]) -> str:
    return sha256_json({"model": model_key, "preprocessing": preprocessing})


def build_feature_cache(
    data: HeteroData,
    backbone: Backbone,
    cache_dir: str | Path,
    *,
    image_paths: Sequence[str | None],
    data_hash: str,
    model_key: dict[str, Any],
    batch_size: int = 64,
    shard_size: int = 4096,
    num_workers: int = 2,
    dtype: torch.dtype | str = torch.float16,
    device: str | torch.device = "cpu",
    show_progress: bool = True,
    image_decoder: str = "auto",
    compute_dtype: torch.dtype | str | None = None,
    max_shards: int | None = None,
    force: bool = False,
) -> Path:
    """Encode every product (image and text) and relation description once; cache the outputs.

    Args:
        data: The product graph; reads ``data["product"].text`` and ``data.relation_text``.
        backbone: The frozen backbone (put in eval mode here; built deterministically by the
            caller, e.g. under ``torch.manual_seed``, so a resumed build equals a fresh one).
        cache_dir: Output folder (:func:`cache_dir_for`).
        image_paths: Per product, its image file or None (no image: ``has_image`` False).
        data_hash: Hash of the graph and images (:func:`feature_data_hash`).
        model_key: What identifies the weights (name, pretrained, checkpoint, embed_dim, seed).
        batch_size: Images / texts per forward.
        shard_size: Products per resumable unit.
        num_workers: DataLoader workers reading (and, with the PIL decoder, decoding) images.
        dtype: Storage dtype: ``float16`` (default), ``bfloat16`` (kept as uint16 bits) or
            ``float32``.
        device: Where the backbone runs (moved there).
        show_progress: Show tqdm bars.
        image_decoder: ``"pil"`` (workers decode with PIL), ``"tensor"`` (batched
            ``torchvision.io.decode_jpeg`` on ``device``) or ``"auto"`` (tensor on CUDA, PIL
            on CPU).
        compute_dtype: Autocast dtype; None gives bfloat16 on CUDA, float32 on CPU.
        max_shards: Stop after this many shards per stage (a partial build; rerun to finish).
        force: Rebuild even if a finished cache with the same key exists.

    Returns:
        ``cache_dir``. The cache is complete (openable with ``FeatureCache.open``) iff its
        manifest was written, i.e. unless ``max_shards`` stopped the build early.

    Raises:
        ValueError: a bad option value, or ``image_paths`` of the wrong length.
    """
    cache_dir = Path(cache_dir)
    device = torch.device(device)
    storage_dtype = parse_dtype(dtype)
    if compute_dtype is None:
        compute_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    compute_dtype = parse_dtype(compute_dtype) if isinstance(compute_dtype, str) else compute_dtype
    if compute_dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"compute_dtype {compute_dtype} not supported; accepted: float32, bfloat16, float16")
    if image_decoder == "auto":
        image_decoder = "tensor" if device.type == "cuda" else "pil"
    if image_decoder not in IMAGE_DECODERS:
        raise ValueError(f"unknown image_decoder {image_decoder!r}; accepted: auto, {', '.join(IMAGE_DECODERS)}")
    for name, value in (("batch_size", batch_size), ("shard_size", shard_size)):
        if value <= 0:
            raise ValueError(f"{name} must be positive; got {value}")
    if num_workers < 0 or (max_shards is not None and max_shards < 0):
        raise ValueError(f"num_workers and max_shards must be >= 0; got {num_workers}, {max_shards}")
    texts = list(data["product"].text)
    relation_texts = list(data.relation_text)
    num_products = int(data["product"].num_nodes)
    if len(image_paths) != num_products or len(texts) != num_products:
        raise ValueError(
            f"image_paths has {len(image_paths)} entries and product text {len(texts)}; the graph "
            f"has {num_products} products (one entry each, None for no image)"
        )

    start_time = time.perf_counter()
    backbone.eval().to(device)
    preprocessing = {
        "image_size": backbone.image_size,
        "image_mean": list(backbone.image_mean),
        "image_std": list(backbone.image_std),
        "context_length": backbone.context_length,
    }
    model_hash = _model_hash(model_key, preprocessing)
    key = sha256_json({"model": model_hash, "data": data_hash})
    build = {
        "storage_dtype": DTYPE_NAMES[storage_dtype],
        "compute_dtype": str(compute_dtype).removeprefix("torch."),
        "image_decoder": image_decoder,
        "batch_size": batch_size,
        "shard_size": shard_size,
        "device_type": device.type,
    }
    manifest = read_json(cache_dir / MANIFEST_JSON)
    if (not force and manifest is not None and manifest.get("key") == key
            and manifest.get("build", {}).get("storage_dtype") == build["storage_dtype"]):
        log.info("features in %s are up to date (force=true rebuilds)", cache_dir)
        return cache_dir

    with torch.inference_mode(), backbone_autocast(device, compute_dtype):
        probe = backbone.encode_image(
            torch.zeros(1, 3, backbone.image_size, backbone.image_size, device=device)
        )
    num_image_tokens, image_token_dim = probe.tokens.shape[1:]
    embed_dim = probe.global_emb.shape[1]
    num_shards = math.ceil(num_products / shard_size)
    build_hash = sha256_json({"key": key, "build": build, "num_products": num_products,
                              "num_relations": len(relation_texts), "format": FORMAT_VERSION})
    state = BuildState(cache_dir, backbone, device, compute_dtype, storage_dtype, batch_size, show_progress)
    progress = None if force else read_json(cache_dir / PROGRESS_JSON)
    tokenize_seconds = 0.0
    resumed = progress is not None and progress.get("build_hash") == build_hash
    if resumed:
        try:
            state.offsets = {name: np.load(npy_path(cache_dir, name)) for name in _OFFSET_ARRAYS}
            specs = _specs(state, num_products, len(relation_texts), embed_dim, num_image_tokens,
                           image_token_dim, backbone.text_token_dim)
            state.files = {name: RowFile(npy_path(cache_dir, name), shape, np_dtype, create=False)
                           for name, (shape, np_dtype) in specs.items() if name not in _OFFSET_ARRAYS}
            missing_tokens = [n for n in _TOKEN_FILES if not npy_path(cache_dir, n).is_file()]
            if missing_tokens:
                raise ValueError(f"token files {missing_tokens} are missing")
            state.progress = progress  # type: ignore[assignment]
        except (OSError, ValueError) as exc:
            log.warning("cannot resume the feature build in %s (%s); starting over", cache_dir, exc)
            resumed = False
            for row_file in state.files.values():
                row_file.close()
            state.files = {}
    (cache_dir / MANIFEST_JSON).unlink(missing_ok=True)  # stale for this key: invalidate first
    if not resumed:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for stale in (PROGRESS_JSON, STATS_JSON):
            (cache_dir / stale).unlink(missing_ok=True)
        tick = time.perf_counter()
        state.offsets = {
            "product_text_offsets": tokenize_to_files(
                backbone, texts, npy_path(cache_dir, "_product_input_ids"),
                npy_path(cache_dir, "_product_token_mask"), 4096, "tokenize products", show_progress),
            "relation_offsets": tokenize_to_files(
                backbone, relation_texts, npy_path(cache_dir, "_relation_input_ids"),
                npy_path(cache_dir, "_relation_token_mask"), 4096, "tokenize relations", show_progress),
        }
        tokenize_seconds = time.perf_counter() - tick
        for name in _OFFSET_ARRAYS:
            save_npy(npy_path(cache_dir, name), state.offsets[name])
        specs = _specs(state, num_products, len(relation_texts), embed_dim, num_image_tokens,
                       image_token_dim, backbone.text_token_dim)
        state.files = {name: RowFile(npy_path(cache_dir, name), shape, np_dtype, create=True)
                       for name, (shape, np_dtype) in specs.items() if name not in _OFFSET_ARRAYS}
        state.progress = {"build_hash": build_hash, "num_shards": num_shards,
                          "relations": False, "image_shards": [], "text_shards": []}
        atomic_write_json(cache_dir / PROGRESS_JSON, state.progress)

    def todo(stage: str) -> list[tuple[int, int, int]]:
        done = set(state.progress[stage])
        pending = [(s, s * shard_size, min(num_products, (s + 1) * shard_size))
                   for s in range(num_shards) if s not in done]
        return pending if max_shards is None else pending[:max_shards]

    writer = Writer(device)
    stats: dict[str, Any] = {"resumed": resumed, "tokenize_seconds": round(tokenize_seconds, 3)}
    try:
        with torch.inference_mode():
            if not state.progress["relations"] and (max_shards is None or max_shards > 0):
                tick = time.perf_counter()
                count = state.text_shards(writer, "relation", "relation_global", "relation_tokens",
                                          "relation_offsets", [(None, 0, len(relation_texts))], "relations")
                writer.drain()
                stats["relations"] = {"texts": count, "seconds": time.perf_counter() - tick}
            tick = time.perf_counter()
            encoded, unreadable = state.image_shards(writer, image_paths, todo("image_shards"),
                                                     image_decoder, num_workers)
            writer.drain()
            stats["images"] = {"images": encoded, "unreadable": unreadable,
                               "seconds": time.perf_counter() - tick}
            tick = time.perf_counter()
            count = state.text_shards(writer, "product", "product_text_global", "product_text_tokens",
                                      "product_text_offsets", todo("text_shards"), "text_shards")
            writer.drain()
            stats["product_texts"] = {"texts": count, "seconds": time.perf_counter() - tick}
    finally:
        writer.close()
        for row_file in state.files.values():
            row_file.close()
    complete = (state.progress["relations"] and len(state.progress["image_shards"]) == num_shards
                and len(state.progress["text_shards"]) == num_shards)
    if complete:
        has_image = np.load(npy_path(cache_dir, "product_has_image"), mmap_mode="r")
        files = {
            name: {"shape": list(shape), "dtype": str(np_dtype),
                   "bytes": os.path.getsize(npy_path(cache_dir, name))}
            for name, (shape, np_dtype) in specs.items()
        }
        atomic_write_json(cache_dir / MANIFEST_JSON, {
            "format_version": FORMAT_VERSION,
            "complete": True,
            "key": key,
            "data_hash": data_hash,
            "model_hash": model_hash,
            "model_key": model_key,
            "preprocessing": preprocessing,
            "build": build,
            "num_products": num_products,
            "num_relations": len(relation_texts),
            "num_with_image": int(has_image.sum()),
            "embed_dim": int(embed_dim),
            "num_image_tokens": int(num_image_tokens),
            "image_token_dim": int(image_token_dim),
            "text_token_dim": int(backbone.text_token_dim),
            "num_product_tokens": int(state.offsets["product_text_offsets"][-1]),
            "num_relation_tokens": int(state.offsets["relation_offsets"][-1]),
            "files": files,
        })
        for name in _TOKEN_FILES:
            npy_path(cache_dir, name).unlink(missing_ok=True)
    stats["complete"] = complete
    stats["total_seconds"] = time.perf_counter() - start_time
    atomic_write_json(cache_dir / STATS_JSON, stats)
    return cache_dir


def _specs(state: BuildState, num_products: int, num_relations: int, embed_dim: int,
           num_image_tokens: int, image_token_dim: int, text_token_dim: int
           ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    return array_specs(
        num_products, num_relations,
        int(state.offsets["product_text_offsets"][-1]), int(state.offsets["relation_offsets"][-1]),
        int(embed_dim), int(num_image_tokens), int(image_token_dim), int(text_token_dim),
        STORAGE_DTYPES[state.storage_dtype],
    )
