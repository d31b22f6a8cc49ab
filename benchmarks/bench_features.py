"""End-to-end throughput of the feature cache build against the backbone's bare forward.

Generates ``--num-images`` synthetic JPEG product photos (~500 px, a few aspect ratios) in a
temporary folder, then measures in the same run

- the bare image forward: ``encode_image`` on already preprocessed ``(B, 3, S, S)`` tensors on
  the device (same batch size and compute dtype as the build);
- the end-to-end image stage of :func:`build_feature_cache`: read + decode + resize + forward +
  device-to-host + write into the cache files, from ``build_stats.json`` (the product-text and
  relation stages are timed separately and reported too).

    python benchmarks/bench_features.py --model offline --device cpu --num-images 512
    python benchmarks/bench_features.py --model clip_b32 --device cuda --num-images 20480 \\
        --batch-size 512 --num-workers 8

Writes ``benchmarks/results/features_<model>_<device>.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch_geometric.data import HeteroData

from rcml_graph.backbones import build_backbone
from rcml_graph.feature_cache import STATS_JSON, build_feature_cache
from rcml_graph.io_utils import atomic_write_text
from rcml_graph.relations import SELF_RELATION_TEXT

RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: (width, height) of the synthetic photos: mostly square, as Amazon product shots are.
PHOTO_SIZES = [(500, 500)] * 6 + [(500, 375), (375, 500), (500, 400), (450, 500)]


def product_photo(rng: np.random.Generator, size: tuple[int, int]) -> bytes:
    """A JPEG of a few coloured shapes on a white background with mild noise (~30-60 KB)."""
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for _ in range(4):
        x0, y0 = rng.integers(0, size[0] // 2), rng.integers(0, size[1] // 2)
        x1, y1 = x0 + rng.integers(60, size[0] // 2), y0 + rng.integers(60, size[1] // 2)
        draw.ellipse((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, (size[1], size[0], 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_photos(folder: Path, num_images: int, num_unique: int = 64, seed: int = 0) -> list[str]:
    """``num_images`` JPEG files cycling through ``num_unique`` distinct photos."""
    rng = np.random.default_rng(seed)
    unique = [product_photo(rng, PHOTO_SIZES[i % len(PHOTO_SIZES)]) for i in range(num_unique)]
    paths = []
    for i in range(num_images):
        path = folder / f"p{i:07d}.jpg"
        path.write_bytes(unique[i % num_unique])
        paths.append(str(path))
    return paths


def product_graph(num_products: int) -> HeteroData:
    data = HeteroData()
    data["product"].num_nodes = num_products
    data["product"].text = [f"product {i}: a camping item" for i in range(num_products)]
    data.relation_text = [SELF_RELATION_TEXT, "also bought by the same customers"]
    return data


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(backbone, device: torch.device, batch_size: int, compute_dtype: torch.dtype,
                 min_seconds: float, warmup: int = 3) -> dict[str, float]:
    """Images/s of ``encode_image`` on a preprocessed batch already on the device."""
    images = torch.randn(batch_size, 3, backbone.image_size, backbone.image_size, device=device)
    autocast = (torch.autocast(device_type=device.type, dtype=compute_dtype)
                if compute_dtype != torch.float32 else torch.autocast(device.type, enabled=False))
    with torch.inference_mode(), autocast:
        for _ in range(warmup):
            backbone.encode_image(images)
        synchronize(device)
        calls, start = 0, time.perf_counter()
        while calls < 3 or time.perf_counter() - start < min_seconds:
            for _ in range(10 if device.type == "cuda" else 1):  # keep the GPU queue full
                backbone.encode_image(images)
                calls += 1
            synchronize(device)
        seconds = time.perf_counter() - start
    return {"images_per_s": calls * batch_size / seconds, "batches": calls, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="offline", choices=["offline", "clip_b32", "tiny"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-images", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=None, help="default 64 (CPU), 512 (CUDA)")
    parser.add_argument("--num-workers", type=int, default=None, help="default 2 (CPU), 8 (CUDA)")
    parser.add_argument("--shard-size", type=int, default=4096)
    parser.add_argument("--image-decoder", default="auto", choices=["auto", "pil", "tensor"])
    parser.add_argument("--min-seconds", type=float, default=5.0, help="bare-forward timing length")
    parser.add_argument("--workdir", default=None, help="where the photos and caches go (temp dir)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    batch_size = args.batch_size or (512 if cuda else 64)
    num_workers = args.num_workers if args.num_workers is not None else (8 if cuda else 2)
    compute_dtype = torch.bfloat16 if cuda else torch.float32
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_features_"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        tick = time.perf_counter()
        (workdir / "images").mkdir(exist_ok=True)
        paths = write_photos(workdir / "images", args.num_images)
        jpeg_bytes = sum(os.path.getsize(p) for p in paths)
        print(f"wrote {len(paths)} photos ({jpeg_bytes / len(paths) / 1e3:.1f} KB each) "
              f"in {time.perf_counter() - tick:.1f}s", file=sys.stderr)

        torch.manual_seed(0)
        backbone = build_backbone(args.model, device=device).eval()
        bare = bare_forward(backbone, device, batch_size, compute_dtype, args.min_seconds)
        print(f"bare forward: {bare['images_per_s']:.1f} images/s", file=sys.stderr)

        def build(name: str, count: int) -> dict:
            cache_dir = workdir / name
            build_feature_cache(
                product_graph(count), backbone, cache_dir, image_paths=paths[:count],
                data_hash=name, model_key={"name": args.model, "seed": 0}, batch_size=batch_size,
                shard_size=args.shard_size, num_workers=num_workers, device=device,
                show_progress=False, image_decoder=args.image_decoder, force=True)
            return json.loads((cache_dir / STATS_JSON).read_bytes())

        build("warmup", min(len(paths), 2 * batch_size))  # loader, cuDNN and nvJPEG start-up
        stats = build("timed", len(paths))
        # Timed again after the build: on a shared machine the load drifts, report both and use
        # the mean, so the ratio compares like with like.
        bare_after = bare_forward(backbone, device, batch_size, compute_dtype, args.min_seconds)
        bare_rate = (bare["images_per_s"] + bare_after["images_per_s"]) / 2
        images = stats["images"]
        end_to_end = images["images"] / images["seconds"]
        texts = stats["product_texts"]
        result = {
            "benchmark": "feature cache build: images/s end to end vs bare forward",
            "model": args.model,
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if cuda else platform.processor() or "cpu",
            "num_images": len(paths),
            "mean_jpeg_kb": round(jpeg_bytes / len(paths) / 1e3, 1),
            "batch_size": batch_size,
            "num_workers": num_workers,
            "image_decoder": args.image_decoder,
            "compute_dtype": str(compute_dtype).removeprefix("torch."),
            "bare_forward_images_per_s": round(bare_rate, 1),
            "bare_forward_before_after": [round(bare["images_per_s"], 1),
                                          round(bare_after["images_per_s"], 1)],
            "end_to_end_images_per_s": round(end_to_end, 1),
            "ratio_end_to_end_over_bare": round(end_to_end / bare_rate, 3),
            "image_stage_seconds": round(images["seconds"], 3),
            "product_text_stage_texts_per_s": round(texts["texts"] / texts["seconds"], 1),
            "whole_build_seconds": round(stats["total_seconds"], 3),
            "whole_build_products_per_s": round(len(paths) / stats["total_seconds"], 1),
            "machine": {
                "platform": platform.platform(),
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
            },
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
        }
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    out = Path(args.out) if args.out else RESULTS_DIR / f"features_{args.model}_{device.type}.json"
    atomic_write_text(out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
