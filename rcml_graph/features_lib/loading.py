"""Image loading for the feature cache: PIL in DataLoader workers, or batched tensor decoding.

Two decoders, chosen by ``image_decoder``:

- ``"pil"`` (CPU default): DataLoader workers open each JPEG with PIL and apply the backbone's
  PIL transform; the main process receives a stacked ``(B, 3, S, S)`` batch.
- ``"tensor"`` (CUDA default): workers only read file bytes; the main process decodes the batch
  with ``torchvision.io.decode_jpeg(list, device=...)`` (nvJPEG on a GPU) and resizes it with
  ``backbone.preprocess_batch``, one call per distinct image size in the batch. The same code
  runs on CPU (used by the tests).

A file that cannot be read or decoded leaves its product without an image (counted); nothing
is ever substituted for it.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.io import ImageReadMode, decode_jpeg
from torchvision.transforms.functional import pil_to_tensor

from rcml_graph.data.images import load_manifest
from rcml_graph.io_utils import sha256_file

IMAGE_DECODERS: tuple[str, ...] = ("pil", "tensor")


class PilImages(Dataset):
    """Item ``i``: ``paths[i]`` opened with PIL and transformed, or None if unreadable."""

    def __init__(self, paths: Sequence[str], transform: Callable[[Image.Image], Tensor]) -> None:
        self.paths = list(paths)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor | None:
        try:
            with Image.open(self.paths[i]) as image:
                return self.transform(image)
        except Exception:  # PIL raises many types on damaged files; all mean "no image"
            return None


class ImageBytes(Dataset):
    """Item ``i``: the raw bytes of ``paths[i]`` as a 1-D uint8 tensor, or None if unreadable."""

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = list(paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor | None:
        try:
            with open(self.paths[i], "rb") as handle:
                payload = handle.read()
        except OSError:
            return None
        return torch.frombuffer(bytearray(payload), dtype=torch.uint8) if payload else None


def collate_pil(items: list[Tensor | None]) -> tuple[Tensor, Tensor]:
    """``(images (k, 3, S, S), ok (B,) bool)``: the decoded items stacked, and which they are."""
    ok = torch.tensor([item is not None for item in items], dtype=torch.bool)
    valid = [item for item in items if item is not None]
    images = torch.stack(valid) if valid else torch.empty(0)
    return images, ok


def collate_bytes(items: list[Tensor | None]) -> tuple[Tensor, Tensor]:
    """``(payload, lengths)``: the items' bytes concatenated and each length (-1 for None).

    One tensor per batch crosses the worker boundary instead of one per image.
    """
    lengths = torch.tensor([-1 if item is None else len(item) for item in items], dtype=torch.long)
    present = [item for item in items if item is not None]
    payload = torch.cat(present) if present else torch.empty(0, dtype=torch.uint8)
    return payload, lengths


def split_bytes(payload: Tensor, lengths: Tensor) -> list[Tensor | None]:
    """Inverse of :func:`collate_bytes`: per item a 1-D view of its bytes, or None."""
    sizes = lengths.clamp(min=0)
    pieces = iter(torch.split(payload, sizes[lengths >= 0].tolist()))
    return [next(pieces) if length >= 0 else None for length in lengths.tolist()]


def _decode_one(payload: Tensor, device: torch.device) -> Tensor | None:
    """One image: torchvision first, PIL as the fallback (CMYK, progressive oddities)."""
    try:
        return _decode_jpegs([payload], device)[0]
    except RuntimeError:
        pass
    try:
        with Image.open(io.BytesIO(payload.numpy().tobytes())) as image:
            return pil_to_tensor(image.convert("RGB")).to(device)
    except Exception:  # damaged bytes: the product has no image
        return None


def _decode_jpegs(payloads: list[Tensor], device: torch.device) -> list[Tensor]:
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec; they still work.
        warnings.simplefilter("ignore", DeprecationWarning)
        return decode_jpeg(payloads, mode=ImageReadMode.RGB, device=device)


def decode_batch(
    payloads: list[Tensor | None],
    preprocess_batch: Callable[[Tensor], Tensor],
    image_size: int,
    device: torch.device,
) -> tuple[Tensor, Tensor]:
    """Decode and preprocess a batch of JPEG byte tensors on ``device``.

    Args:
        payloads: Raw file bytes per item (None for an unreadable file).
        preprocess_batch: ``(k, 3, H, W) uint8 -> (k, 3, S, S)`` float (``Backbone.preprocess_batch``).
        image_size: ``S``.
        device: Where to decode and preprocess.

    Returns:
        ``(images (k, 3, S, S) float32, ok (B,) bool)``, images in item order of the ``ok`` ones.
    """
    present = [i for i, payload in enumerate(payloads) if payload is not None]
    decoded: list[Tensor | None] = [None] * len(payloads)
    if present:
        try:
            batch = _decode_jpegs([payloads[i] for i in present], device)
            for i, image in zip(present, batch):
                decoded[i] = image
        except RuntimeError:  # one bad file fails the whole batched call: decode one by one
            for i in present:
                decoded[i] = _decode_one(payloads[i], device)  # type: ignore[arg-type]
    ok = torch.tensor([image is not None for image in decoded], dtype=torch.bool)
    valid = [image for image in decoded if image is not None]
    images = torch.empty((len(valid), 3, image_size, image_size), dtype=torch.float32, device=device)
    # Resize in batches: one preprocess call per distinct (H, W) (product photos share few sizes).
    groups: dict[tuple[int, int], list[int]] = {}
    for position, image in enumerate(valid):
        groups.setdefault((image.shape[-2], image.shape[-1]), []).append(position)
    if len(groups) == 1:
        return preprocess_batch(torch.stack(valid)), ok
    for positions in groups.values():
        stacked = torch.stack([valid[p] for p in positions])  # (g, 3, H, W) uint8
        index = torch.tensor(positions, device=device)
        images.index_copy_(0, index, preprocess_batch(stacked))
    return images, ok


def product_image_paths(
    product_ids: Sequence[str], image_dir: str | Path
) -> tuple[list[str | None], str | None]:
    """Per product, its verified image file (``status == "ok"`` in the image manifest) or None.

    Args:
        product_ids: ``data["product"].product_id``.
        image_dir: The folder with ``manifest.json`` (``scripts/download_images.py``).

    Returns:
        ``(paths, manifest_sha256)``; with no manifest every path is None and the hash is None.
    """
    image_dir = Path(image_dir)
    manifest_path = image_dir / "manifest.json"
    if not manifest_path.is_file():
        return [None] * len(product_ids), None
    records = load_manifest(manifest_path).records
    paths: list[str | None] = []
    for product_id in product_ids:
        record = records.get(product_id)
        ok = record is not None and record.status == "ok" and record.path is not None
        paths.append(str(image_dir / record.path) if ok else None)  # type: ignore[union-attr]
    return paths, sha256_file(manifest_path)
