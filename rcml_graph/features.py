"""Cache a frozen backbone's token features for a domain's products and relation texts.

    python -m rcml_graph.features domain=demo model=offline
    python -m rcml_graph.features domain=sports model=clip_b32 features.batch_size=512

Reads the built graph (``scripts/build_graph.py``) and the image manifest
(``scripts/download_images.py``; without one every product is text-only), then writes
``<data_root>/<domain>/features/<model>/``. Killed and rerun, it resumes; rerun after it
finished, it does nothing unless the graph, the images or the model changed (``force=true``
rebuilds). Build options live under ``features.`` (see :class:`FeaturesOptions`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from rcml_graph.schema import FeaturesConfig
from rcml_graph.cli import CONFIG_DIR, register_configs
from rcml_graph.data.graph_io import load_graph, read_manifest
from rcml_graph.feature_cache import (
    MANIFEST_JSON,
    STATS_JSON,
    build_feature_cache,
    cache_dir_for,
    feature_data_hash,
    product_image_paths,
)

log = logging.getLogger("features")
register_configs()


FeaturesOptions = FeaturesConfig


def features_options(cfg: DictConfig) -> FeaturesOptions:
    """The ``features:`` node of ``cfg`` over the defaults; an unknown key is a ValueError."""
    given = OmegaConf.select(cfg, "features", default=None)
    given = {} if given is None else OmegaConf.to_container(given, resolve=True)
    known = {f.name for f in dataclasses.fields(FeaturesOptions)}
    unknown = sorted(set(given) - known)  # type: ignore[arg-type]
    if unknown:
        raise ValueError(f"unknown features option(s) {unknown}; accepted: {', '.join(sorted(known))}")
    return FeaturesOptions(**given)  # type: ignore[arg-type]


def model_key(cfg: DictConfig, seed: int) -> dict[str, Any]:
    """What identifies the backbone's weights: preset, weights source, embed dim, init seed (and
    ``quick_gelu`` when set: left out otherwise, so caches of a pretrained tag or random init
    built before the option keep their key; a cache built from a weights file needs the option
    now, which gives it a new key: it is rebuilt with the activation stated)."""
    model = cfg.model
    key = {
        "name": model.name,
        "pretrained": model.get("pretrained"),
        "checkpoint": model.get("checkpoint"),
        "embed_dim": model.get("embed_dim"),
        "seed": seed,
    }
    if model.get("quick_gelu") is not None:
        key["quick_gelu"] = bool(model.quick_gelu)
    return key


def run(cfg: DictConfig) -> dict[str, Any]:
    """Build (or reuse) the feature cache of ``cfg.domain`` with ``cfg.model``; return a summary."""
    from rcml_graph.backbones import build_backbone

    options = features_options(cfg)
    processed_dir = Path(cfg.domain.processed_dir)
    graph_manifest = read_manifest(processed_dir)
    if graph_manifest is None:
        raise FileNotFoundError(
            f"no finished graph build in {processed_dir}: run "
            f"`python scripts/build_graph.py domain={cfg.domain.name}` first"
        )
    data = load_graph(processed_dir)
    product_ids = getattr(data["product"], "product_id", None) or data["product"].asin
    image_paths, images_sha = product_image_paths(product_ids, cfg.domain.image_dir)
    if images_sha is None:
        log.warning("no image manifest in %s: every product is text-only", cfg.domain.image_dir)
    data_hash = feature_data_hash(graph_manifest["files"], images_sha)
    device = options.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    key = model_key(cfg, options.seed)
    torch.manual_seed(options.seed)
    backbone = build_backbone(
        cfg.model.name,
        pretrained=key["pretrained"],
        checkpoint=key["checkpoint"],
        embed_dim=key["embed_dim"],
        device=device,
        quick_gelu=key.get("quick_gelu"),
    )
    cache_dir = Path(options.cache_dir) if options.cache_dir else cache_dir_for(
        cfg.paths.data_root, cfg.domain.name, cfg.model.name
    )
    build_feature_cache(
        data,
        backbone,
        cache_dir,
        image_paths=image_paths,
        data_hash=data_hash,
        model_key=key,
        batch_size=options.batch_size,
        shard_size=options.shard_size,
        num_workers=options.num_workers,
        dtype=options.dtype,
        device=device,
        show_progress=cfg.show_progress,
        image_decoder=options.image_decoder,
        max_shards=options.max_shards,
        force=cfg.force,
    )
    manifest_path = cache_dir / MANIFEST_JSON
    manifest = json.loads(manifest_path.read_bytes()) if manifest_path.is_file() else None
    stats_path = cache_dir / STATS_JSON
    summary = {
        "domain": cfg.domain.name,
        "model": cfg.model.name,
        "cache_dir": str(cache_dir),
        "complete": manifest is not None,
        "products": len(image_paths),
        "products_with_image": manifest["num_with_image"] if manifest else None,
        "relations": len(data.relation_text),
        "data_hash": data_hash,
        "build_stats": json.loads(stats_path.read_bytes()) if stats_path.is_file() else None,
    }
    print(json.dumps(summary, indent=2))
    return summary


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
