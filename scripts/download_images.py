"""Fetch, verify and cache one image per product of a built graph.

    python scripts/download_images.py                    # demo: copies its local JPEGs
    python scripts/download_images.py domain=sports download.workers=32

Resumable (valid cached images are skipped); with no network it keeps what is cached and
counts the rest as missing. Writes ``<image_dir>/manifest.json`` with a status per product.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rcml_graph.cli import CONFIG_DIR, register_configs
from rcml_graph.data.graph_io import load_graph
from rcml_graph.data.images import download_images, write_manifest

MANIFEST_NAME = "manifest.json"
register_configs()


def run(cfg: DictConfig) -> dict[str, int]:
    data = load_graph(cfg.domain.processed_dir)
    product = data["product"]
    items = list(zip(product.product_id, product.image_urls))
    image_dir = Path(cfg.domain.image_dir)
    dl = cfg.download
    manifest = download_images(
        items,
        image_dir,
        max_bytes=dl.max_bytes,
        timeout_s=dl.timeout_s,
        workers=dl.workers,
        retries=dl.retries,
        max_pixels=dl.max_pixels,
        base_dir=Path(cfg.domain.raw_dir),
        show_progress=cfg.show_progress,
        unreachable_limit=dl.unreachable_limit,
    )
    write_manifest(manifest, image_dir / MANIFEST_NAME)
    counts = {**manifest.counts, "cached": manifest.num_cached}
    print(json.dumps({"domain": cfg.domain.name, "image_dir": str(image_dir), **counts}, indent=2))
    return counts


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
