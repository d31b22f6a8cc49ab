"""The encode loops of the feature cache: text shards, image shards, and the writer thread.

Every result leaves the device through :class:`Writer`: on CUDA the device-to-host copies go to
pinned memory without blocking and a background thread waits on an event before writing them,
so decoding, compute and disk writes overlap. A shard is recorded as done (after an
``fdatasync`` of every file) by a job queued behind its writes, so the progress file never
names a shard whose rows are not on disk.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from rcml_graph.backbones import Backbone, trim_text_batch
from rcml_graph.io_utils import atomic_path, atomic_write_json

from .loading import ImageBytes, PilImages, collate_bytes, collate_pil, decode_batch, split_bytes
from .storage import PROGRESS_JSON, RowFile, npy_path, to_numpy

#: Outstanding batches between the compute loop and the writer thread (bounds pinned memory).
_MAX_PENDING_WRITES = 4


def backbone_autocast(device: torch.device, compute_dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    if compute_dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=compute_dtype)


class Writer:
    """Moves results off the device and writes them in one background thread, in order.

    ``submit`` converts nothing: callers pass tensors already in the storage dtype. On CUDA the
    device-to-host copies go to pinned memory without blocking; the thread waits on an event
    before touching them. :meth:`checkpoint` jobs (``fdatasync`` + progress record) run in a
    second thread once every earlier write is done, so a slow disk delays the record, never the
    next shard's compute.
    """

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-writer")
        self.syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="feature-sync")
        self.pending: deque[Future[None]] = deque()
        self.checkpoints: list[Future[None]] = []

    def checkpoint(self, job: Callable[[], None]) -> None:
        """Run ``job`` in the sync thread after all writes submitted so far have finished."""

        def hand_over() -> None:
            self.checkpoints.append(self.syncer.submit(job))

        self.pending.append(self.pool.submit(hand_over))

    def _to_host(self, tensor: Tensor) -> Tensor:
        if not self.cuda:
            return tensor.contiguous()
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        return host

    def submit(self, job: Callable[[dict[str, Tensor]], None], tensors: dict[str, Tensor]) -> None:
        host = {name: self._to_host(t) for name, t in tensors.items()}
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record()

        def run() -> None:
            if event is not None:
                event.synchronize()
            job(host)

        self.pending.append(self.pool.submit(run))
        while len(self.pending) > _MAX_PENDING_WRITES:
            self.pending.popleft().result()

    def drain(self) -> None:
        """Wait for every write and checkpoint submitted so far (re-raising their errors)."""
        while self.pending:
            self.pending.popleft().result()
        while self.checkpoints:
            self.checkpoints.pop(0).result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self.pool.shutdown(wait=True)
            self.syncer.shutdown(wait=True)


def tokenize_to_files(
    backbone: Backbone, texts: Sequence[str], ids_path: Path, mask_path: Path, chunk: int, desc: str,
    show_progress: bool,
) -> np.ndarray:
    """Tokenise ``texts`` into two ``.npy`` files; return the ``(len + 1,)`` token offsets."""
    n, length = len(texts), backbone.context_length
    counts = np.zeros(n, dtype=np.int64)
    with atomic_path(ids_path) as ids_tmp, atomic_path(mask_path) as mask_tmp:
        ids = np.lib.format.open_memmap(ids_tmp, mode="w+", dtype=np.int32, shape=(n, length))
        mask = np.lib.format.open_memmap(mask_tmp, mode="w+", dtype=np.bool_, shape=(n, length))
        for start in tqdm(range(0, n, chunk), desc=desc, unit="chunk", disable=not show_progress):
            batch = backbone.tokenize(list(texts[start : start + chunk]))
            ids[start : start + chunk] = batch["input_ids"].numpy()
            mask[start : start + chunk] = batch["attention_mask"].numpy()
            counts[start : start + chunk] = batch["attention_mask"].sum(dim=1).numpy()
        ids.flush()
        mask.flush()
        del ids, mask
    return np.concatenate(([0], np.cumsum(counts))).astype(np.int64)


def save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


class BuildState:
    """State of one ``build_feature_cache`` call (files, progress, timings)."""

    def __init__(self, cache_dir: Path, backbone: Backbone, device: torch.device,
                 compute_dtype: torch.dtype, storage_dtype: torch.dtype, batch_size: int,
                 show_progress: bool) -> None:
        self.cache_dir = cache_dir
        self.backbone = backbone
        self.device = device
        self.compute_dtype = compute_dtype
        self.storage_dtype = storage_dtype
        self.batch_size = batch_size
        self.show_progress = show_progress
        self.files: dict[str, RowFile] = {}
        self.progress: dict[str, Any] = {}
        self.offsets: dict[str, np.ndarray] = {}
        self.stats: dict[str, Any] = {}

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return backbone_autocast(self.device, self.compute_dtype)

    def mark_done(self, stage: str, shard: int | None) -> Callable[[], None]:
        """A checkpoint job: sync every file, then record the shard as done."""

        def job() -> None:
            for row_file in self.files.values():
                row_file.sync()
            if shard is None:
                self.progress[stage] = True
            else:
                self.progress[stage] = sorted({*self.progress[stage], shard})
            atomic_write_json(self.cache_dir / PROGRESS_JSON, self.progress)

        return job

    # ---- text stages ---------------------------------------------------------------------
    def text_shards(
        self, writer: Writer, prefix: str, global_name: str, tokens_name: str, offsets_name: str,
        shards: list[tuple[int | None, int, int]], stage: str,
    ) -> int:
        """Encode the token rows ``[start, end)`` of each shard; returns the number of texts."""
        ids_all = np.load(npy_path(self.cache_dir, f"_{prefix}_input_ids"), mmap_mode="r")
        mask_all = np.load(npy_path(self.cache_dir, f"_{prefix}_token_mask"), mmap_mode="r")
        offsets = self.offsets[offsets_name]
        global_file, tokens_file = self.files[global_name], self.files[tokens_name]
        total = sum(end - start for _, start, end in shards)
        done = 0
        with tqdm(total=total, desc=f"{stage} texts", unit="text", disable=not self.show_progress) as bar:
            for shard, start, end in shards:
                for first in range(start, end, self.batch_size):
                    last = min(first + self.batch_size, end)
                    # Cut to the batch's longest text: same embeddings, less work for short texts.
                    cut = trim_text_batch({"input_ids": torch.from_numpy(ids_all[first:last].astype(np.int64)),
                                           "attention_mask": torch.from_numpy(np.array(mask_all[first:last]))})
                    input_ids, mask = cut["input_ids"], cut["attention_mask"]
                    flat = torch.nonzero(mask.flatten()).squeeze(1)  # (valid,)
                    batch = {
                        "input_ids": input_ids.to(self.device, non_blocking=True),
                        "attention_mask": mask.to(self.device, non_blocking=True),
                    }
                    with self.autocast():
                        out = self.backbone.encode_text(batch)
                    valid = out.tokens.flatten(0, 1).index_select(0, flat.to(self.device))

                    def write(host: dict[str, Tensor], first: int = first, mask: Tensor = mask) -> None:
                        if not torch.equal(host["mask"], mask):
                            raise RuntimeError(
                                "the backbone's text mask differs from its tokenizer's attention "
                                f"mask (rows {first}:{first + len(mask)}); cached offsets would be wrong"
                            )
                        global_file.write(first, to_numpy(host["global"]))
                        tokens_file.write(int(offsets[first]), to_numpy(host["tokens"]))

                    writer.submit(write, {
                        "global": out.global_emb.to(self.storage_dtype),
                        "tokens": valid.to(self.storage_dtype),
                        "mask": out.mask.bool(),
                    })
                    bar.update(last - first)
                    done += last - first
                writer.checkpoint(self.mark_done(stage, shard))
        return done

    # ---- image stage ---------------------------------------------------------------------
    def image_shards(
        self, writer: Writer, image_paths: Sequence[str | None], shards: list[tuple[int, int, int]],
        decoder: str, num_workers: int,
    ) -> tuple[int, int]:
        """Encode the images of each shard; returns (images encoded, unreadable images)."""
        backbone, device = self.backbone, self.device
        has_path = np.array([p is not None for p in image_paths], dtype=bool)
        shard_rows = [np.flatnonzero(has_path[start:end]) + start for _, start, end in shards]
        flat_rows = np.concatenate(shard_rows) if shard_rows else np.zeros(0, dtype=np.int64)
        paths = [image_paths[row] for row in flat_rows.tolist()]
        batches: list[list[int]] = []
        shard_batches: list[list[np.ndarray]] = []
        position = 0
        for rows in shard_rows:
            own = []
            for first in range(0, len(rows), self.batch_size):
                chunk = rows[first : first + self.batch_size]
                batches.append(list(range(position + first, position + first + len(chunk))))
                own.append(chunk)
            position += len(rows)
            shard_batches.append(own)
        if decoder == "pil":
            dataset: Any = PilImages(paths, backbone.preprocess)
            collate: Callable[..., Any] = collate_pil
        else:
            dataset, collate = ImageBytes(paths), collate_bytes
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=num_workers,
            collate_fn=collate,
            pin_memory=device.type == "cuda" and decoder == "pil",
            prefetch_factor=4 if num_workers > 0 else None,
        )
        decode_stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        image_global, image_tokens = self.files["product_image_global"], self.files["product_image_tokens"]
        has_image_file = self.files["product_has_image"]
        encoded = unreadable = 0
        items: Iterator[Any] = iter(loader) if batches else iter(())
        with tqdm(total=len(paths), desc="images", unit="img", disable=not self.show_progress) as bar:
            for (shard, start, end), own in zip(shards, shard_batches):
                has_image = np.zeros(end - start, dtype=bool)
                for rows in own:
                    item = next(items)
                    with torch.cuda.stream(decode_stream) if decode_stream else contextlib.nullcontext():
                        if decoder == "pil":
                            images, ok = item[0].to(device, non_blocking=True), item[1]
                        else:
                            images, ok = decode_batch(split_bytes(*item), backbone.preprocess_batch,
                                                      backbone.image_size, device)
                    if decode_stream is not None:
                        torch.cuda.current_stream(device).wait_stream(decode_stream)
                        images.record_stream(torch.cuda.current_stream(device))
                    ok_rows = rows[ok.numpy()]
                    has_image[ok_rows - start] = True
                    unreadable += len(rows) - len(ok_rows)
                    bar.update(len(rows))
                    if len(ok_rows) == 0:
                        continue
                    with self.autocast():
                        out = backbone.encode_image(images)

                    def write(host: dict[str, Tensor], ok_rows: np.ndarray = ok_rows) -> None:
                        image_global.write_rows(ok_rows, to_numpy(host["global"]))
                        image_tokens.write_rows(ok_rows, to_numpy(host["tokens"]))

                    writer.submit(write, {"global": out.global_emb.to(self.storage_dtype),
                                          "tokens": out.tokens.to(self.storage_dtype)})
                    encoded += len(ok_rows)

                def finish_shard(_: dict[str, Tensor], start: int = start,
                                 has_image: np.ndarray = has_image) -> None:
                    # A product without an image gets zeros (rows a killed run may have left).
                    missing = np.flatnonzero(~has_image) + start
                    image_global.write_zeros(missing)
                    image_tokens.write_zeros(missing)
                    has_image_file.write(start, has_image)

                writer.submit(finish_shard, {})
                writer.checkpoint(self.mark_done("image_shards", shard))
        return encoded, unreadable
