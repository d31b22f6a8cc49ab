"""Fetch a domain's official Amazon metadata file where internet exists.

    python scripts/download_amazon.py domain=sports
    python scripts/download_amazon.py domain=baby domain.download_release=2023 \
        domain.download_category=Baby_Products
    python scripts/download_amazon.py domain=sports download.amazon_base_url=http://mirror/amazon

Only http(s), with size and time limits; an already complete file is kept.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rcml_graph.cli import CONFIG_DIR, register_configs
from rcml_graph.data.download import download_amazon_files

register_configs()


def run(cfg: DictConfig) -> list[dict]:
    domain = cfg.domain
    if not domain.download_release or not domain.download_category:
        raise ValueError(
            f"domain {domain.name!r} has no download source; set domain.download_release "
            "(2014, 2018 or 2023) and domain.download_category (e.g. Sports_and_Outdoors)"
        )
    dl = cfg.download
    results = download_amazon_files(
        str(domain.download_release),
        domain.download_category,
        Path(domain.raw_dir),
        base_url=dl.amazon_base_url,
        kinds=tuple(dl.amazon_kinds),
        max_bytes=dl.amazon_max_bytes,
        timeout_s=dl.timeout_s,
        retries=dl.retries,
    )
    rows = [{"url": r.url, "status": r.status, "path": str(r.path), "bytes": r.num_bytes,
             "error": r.error} for r in results]
    print(json.dumps(rows, indent=2))
    failed = [r for r in results if not r.ok]
    if failed:
        raise SystemExit(f"{len(failed)} download(s) failed: " + "; ".join(f"{r.url}: {r.error}" for r in failed))
    return rows


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
