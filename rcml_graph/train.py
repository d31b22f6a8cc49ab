"""Train RCML (or a baseline/ablation) on a domain.

    python -m rcml_graph.train domain=demo
    python -m rcml_graph.train domain=demo experiment=clip
    python -m rcml_graph.train domain=sports model=clip_b32 train.batch_size=1024 train.resume=latest
    torchrun --nproc_per_node=8 -m rcml_graph.train domain=sports model=clip_b32

Frozen mode (``train.backbone=frozen``, the default) reads the token cache written by
``python -m rcml_graph.features``. Fine-tune mode (``train.backbone=finetune``) runs the backbone
on the products' images (``domain.image_dir``) and texts every step, training its last
``train.trainable_last_blocks`` blocks per tower with the head (no cache needed;
``train.preload_features`` decodes every image into memory once; ``train.backbone_lr`` gives the
backbone its own learning rate). Both modes run under ``torchrun``: each rank trains on its
share of every global batch's pairs and the gradients of the head and of a fine-tuned backbone
are all-reduced (torch ``DistributedDataParallel``). Outputs go to Hydra's run
folder (or ``train.run_dir``): ``metrics.csv``, ``tensorboard/``, ``checkpoints/{last,best}.pt``
and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from rcml_graph.cli import CONFIG_DIR, register_configs
from rcml_graph.data.graph_io import load_graph
from rcml_graph.feature_cache import FeatureCache, cache_dir_for, product_image_paths
from rcml_graph.model.variants import get_variant
from rcml_graph.training import (
    FitOptions,
    HeadOptions,
    RetrievalValidator,
    TensorFeatures,
    build_loss,
    build_sampler,
    find_latest_checkpoint,
    fit,
    head_kwargs,
    init_distributed,
    prepare_frozen_source,
    resolve_pairs,
)
from rcml_graph.training.finetune import (
    BackboneFeatures,
    build_finetune_source,
    finetune_spec,
)
from rcml_graph.training.setup import build_head, resolve_compile

log = logging.getLogger("train")
register_configs()

BACKBONE_MODES = ("frozen", "finetune")


def resolve_run_dir(cfg: DictConfig) -> Path:
    """``train.run_dir`` if set, else Hydra's output folder of this run."""
    if cfg.train.get("run_dir"):
        return Path(cfg.train.run_dir)
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS is deterministic only with a fixed workspace, set before its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def resolve_resume(resume: str | None, run_dir: Path) -> Path | None:
    """``null`` -> None; ``latest`` -> the newest ``last.pt`` (None if there is none yet)."""
    if resume is None or resume in ("", "null", "none"):
        return None
    if resume == "latest":
        found = find_latest_checkpoint(run_dir)
        if found is None:
            log.warning("train.resume=latest: no checkpoint under %s; starting fresh", run_dir.parent)
        return found
    path = Path(resume)
    if not path.is_file():
        raise FileNotFoundError(f"train.resume={resume!r}: no such checkpoint; accepted: latest, "
                                "null or the path of a last.pt/best.pt")
    return path


def open_cache(cfg: DictConfig) -> tuple[FeatureCache, Path]:
    """The frozen backbone's token cache of ``cfg.domain`` and ``cfg.model``."""
    cache_dir = Path(cfg.train.cache_dir) if cfg.train.get("cache_dir") else cache_dir_for(
        cfg.paths.data_root, cfg.domain.name, cfg.model.name)
    try:
        return FeatureCache.open(cache_dir), cache_dir
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"{error}\nbuild it first: python -m rcml_graph.features domain={cfg.domain.name} "
            f"model={cfg.model.name}") from None


def open_finetune_source(cfg: DictConfig, data: Any, device: torch.device
                         ) -> tuple[BackboneFeatures, dict[str, Any]]:
    """``train.backbone=finetune``: the backbone of ``cfg.model`` as a trainable feature source
    over the domain's products and images, and its spec (stored in checkpoints)."""
    product_ids = getattr(data["product"], "product_id", None) or data["product"].asin
    image_paths, images_sha = product_image_paths(product_ids, cfg.domain.image_dir)
    if images_sha is None:
        log.warning("no image manifest in %s: every product is text-only", cfg.domain.image_dir)
    options = {"trainable_last_blocks": int(cfg.train.trainable_last_blocks),
               "pretrained": cfg.model.get("pretrained"), "checkpoint": cfg.model.get("checkpoint"),
               "embed_dim": cfg.model.get("embed_dim"), "seed": int(cfg.model.init_seed),
               "quick_gelu": cfg.model.get("quick_gelu")}
    source = build_finetune_source(list(data["product"].text), list(data.relation_text), image_paths,
                                   cfg.model.name, preload_images=cfg.train.preload_features,
                                   device=device, **options)
    return source, finetune_spec(cfg.model.name, cfg.domain.processed_dir, cfg.domain.image_dir, **options)


def experiment_name(default: str) -> str:
    """The ``experiment=`` choice of this run (the method label in results), else ``default``."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        choice = HydraConfig.get().runtime.choices.get("experiment")
        if choice and choice != "null":
            return str(choice)
    return default


def train(cfg: DictConfig) -> dict[str, float]:
    """Train the configured variant; return the final metrics (also in ``metrics.json``)."""
    t = cfg.train
    if t.backbone not in BACKBONE_MODES:
        raise ValueError(f"unknown train.backbone {t.backbone!r}; accepted: {', '.join(BACKBONE_MODES)}")
    backbone_lr = t.backbone_lr
    if backbone_lr is not None and t.backbone != "finetune":
        log.warning("train.backbone_lr=%s is ignored: train.backbone=%s has no trainable backbone",
                    backbone_lr, t.backbone)
        backbone_lr = None
    if backbone_lr is not None and not backbone_lr > 0:
        raise ValueError(f"train.backbone_lr={backbone_lr}; accepted: a positive learning rate, or "
                         "null to train the backbone at train.lr")
    dist_info = init_distributed()
    seed_everything(t.seed, t.deterministic)
    device = resolve_device(t.device)
    if device.type == "cuda" and dist_info.enabled:
        device = torch.device("cuda", dist_info.local_rank)
    run_dir = resolve_run_dir(cfg)

    data = load_graph(cfg.domain.processed_dir)
    num_products = int(data["product"].num_nodes)
    dims: FeatureCache | BackboneFeatures
    finetune: dict[str, Any] | None = None
    cache_dir: Path | None = None
    if t.backbone == "finetune":
        source, finetune = open_finetune_source(cfg, data, device)
        dims, backbone_seed = source, int(cfg.model.init_seed)
        with torch.no_grad():
            description_table = source.encode_descriptions(device=device)  # (R, D), re-encoded per step if trained
    else:
        cache, cache_dir = open_cache(cfg)
        if cache.num_products != num_products or cache.num_relations != len(data.relation_text):
            raise ValueError(
                f"feature cache {cache_dir} has {cache.num_products} products / {cache.num_relations} "
                f"descriptions but the graph has {num_products} / {len(data.relation_text)}: rebuild it "
                f"with python -m rcml_graph.features domain={cfg.domain.name} model={cfg.model.name}")
        source = TensorFeatures.from_source(cache, device=device) if t.preload_features else cache
        description_table = cache.relation_features(device=device).global_emb  # (R, D)
        built_key = cache.manifest.get("model_key", {})
        dims, backbone_seed = cache, built_key.get("seed", cfg.model.init_seed)

    variant = get_variant(cfg.model.variant)
    pairs = resolve_pairs(variant, t.pairs)
    head_options = HeadOptions(**OmegaConf.to_container(cfg.model.head, resolve=True))  # type: ignore[arg-type]
    kwargs = head_kwargs(variant, head_options, dims.embed_dim, dims.image_token_dim,
                         dims.text_token_dim, dims.num_relations)
    head = build_head(kwargs, device)
    if not head.global_only and variant.relation_mode == "description":
        head.cache_descriptions(description_table)
    if t.backbone != "finetune":
        source = prepare_frozen_source(source, head, device, t.amp_dtype, t.amp_cpu)
    loss_fn = build_loss(variant, t.w_inter, t.w_intra, t.mask_false_negatives,
                         compile_loss=resolve_compile(t.compile_loss, device, not head.global_only))
    sampler = build_sampler(data, pairs, batch_size=t.batch_size,
                            positives_per_anchor=t.positives_per_anchor, seed=t.seed,
                            hard_negatives=t.hard_negatives,
                            relation_negative_fraction=t.relation_negative_fraction,
                            false_negative_scope=t.false_negative_scope)
    if t.prefetch_batches < 0:
        raise ValueError(f"train.prefetch_batches={t.prefetch_batches!r}; accepted: an integer >= 0")
    sampler.prefetch = t.prefetch_batches
    validator = RetrievalValidator(data, num_negatives=t.val_negatives, seed=t.val_seed,
                                   max_queries=t.val_max_queries)

    config: dict[str, Any] = {
        "method": cfg.get("method") or experiment_name(variant.name),
        "variant": variant.name,
        "pairs": pairs,
        "head": kwargs,
        "cache_dir": None if cache_dir is None else str(cache_dir),
        "finetune": finetune,
        "processed_dir": str(cfg.domain.processed_dir),
        "backbone": {"name": cfg.model.name, "pretrained": cfg.model.get("pretrained"),
                     "checkpoint": cfg.model.get("checkpoint"), "embed_dim": cfg.model.get("embed_dim"),
                     "seed": backbone_seed,
                     # The activation the token cache was built with, when it recorded one.
                     "quick_gelu": (cfg.model.get("quick_gelu") if t.backbone == "finetune"
                                    else built_key.get("quick_gelu", cfg.model.get("quick_gelu")))},
        "cfg": OmegaConf.to_container(cfg, resolve=True),
    }
    options = FitOptions(
        epochs=t.epochs, lr=t.lr, backbone_lr=backbone_lr, weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps,
        min_lr_ratio=t.min_lr_ratio, grad_clip=t.grad_clip, patience=t.patience, monitor=t.monitor,
        max_steps=t.max_steps, stop_after_epoch=t.stop_after_epoch,
        graph_false_negatives=t.graph_false_negatives, random_negatives=t.random_negatives,
        w_global=t.w_global,
        validate_before=t.validate_before,
        amp_dtype=t.amp_dtype, amp_cpu=t.amp_cpu, show_progress=t.show_progress and cfg.show_progress,
        tensorboard=t.tensorboard, log_every=t.log_every,
    )
    log.info("training %s (%s pairs) on %s: %d products, %d batches/epoch, run dir %s",
             variant.name, pairs, cfg.domain.name, num_products, len(sampler), run_dir)
    metrics = fit(head, loss_fn, sampler, source, validator, run_dir,
                  num_relations=dims.num_relations, description_table=description_table,
                  options=options, config=config, resume=resolve_resume(t.resume, run_dir),
                  device=device, dist_info=dist_info)
    if dist_info.is_main:
        print(json.dumps({k: v for k, v in metrics.items() if not k.startswith("val/") or "/" not in k[4:]},
                         indent=2, sort_keys=True))
    return metrics


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    train(cfg)


if __name__ == "__main__":
    main()
