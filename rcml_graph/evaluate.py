"""Evaluation entry point: ``python -m rcml_graph.evaluate domain=<name> checkpoint=<path>``.

Runs every task of :mod:`rcml_graph.evaluation` on the domain's test split for the
zero-shot backbone baseline (``model``) and each trained checkpoint, for every seed of
``eval.seeds``; writes ``results.json`` (long form), ``results.md`` and two PNG plots into
the run folder and merges the rows into ``<eval.results_dir>/<domain>/results.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from tqdm.auto import tqdm

from rcml_graph.backbones import build_backbone
from rcml_graph.cli import CONFIG_DIR, register_configs
from rcml_graph.data.graph_io import load_graph
from rcml_graph.eval.results import ResultRow, append_rows
from rcml_graph.evaluation import (
    TASKS,
    RelationEncoder,
    SuiteSettings,
    ZeroShotEncoder,
    collect_edges,
    encode_global,
    encode_pairs,
    fused_embedding,
    image_paths_from_manifest,
    plot_hit_per_relation,
    plot_relation_tsne,
    results_markdown,
    run_tasks,
)
from rcml_graph.evaluation.edges import RelationEdges, product_groups
from rcml_graph.relations import PRODUCT

ZERO_SHOT_METHOD = "zero_shot"
register_configs()


def _checkpoint_paths(cfg: DictConfig) -> list[str]:
    paths = list(cfg.eval.checkpoints)
    top = cfg.get("checkpoint") if "checkpoint" in cfg else None
    if isinstance(top, (list, tuple, ListConfig)):
        paths += [str(p) for p in top]
    elif top:
        paths += [p for p in str(top).split(",") if p]
    return paths


def _method_label(encoder: Any, path: str) -> str:
    """The checkpoint's method: an attribute or config entry of the encoder, else the file stem."""
    for name in ("method", "method_name", "experiment_name"):
        value = getattr(encoder, name, None)
        if isinstance(value, str) and value:
            return value
    config = getattr(encoder, "config", None)
    if config is not None:
        for key in ("method", "experiment", "name"):
            value = config.get(key) if hasattr(config, "get") else None
            if isinstance(value, str) and value:
                return value
    return Path(path).stem


def _load_checkpoint(path: str, device: str) -> tuple[str, RelationEncoder]:
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    # Imported here: the training package is optional for a zero-shot-only evaluation.
    from rcml_graph.training.encoder import ConditionedEncoder

    encoder = ConditionedEncoder.from_checkpoint(path, device=device)
    return _method_label(encoder, path), encoder


def _run_dir(cfg: DictConfig) -> Path:
    if cfg.eval.output_dir:
        return Path(cfg.eval.output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
    return Path(cfg.paths.runs_root) / cfg.domain.name / "evaluate" / stamp


def _tsne_plot(data: Any, edges: RelationEdges, encoder: RelationEncoder, method: str,
               path: Path, num_points: int, seed: int) -> Path | None:
    """t-SNE of products under the two most frequent test descriptions (of different kinds if possible)."""
    test = edges.split == 2
    counts = torch.bincount(edges.desc_id[test], minlength=edges.num_descriptions)
    ranked = [int(d) for d in torch.argsort(counts, descending=True) if counts[d] > 0]
    if len(ranked) < 2:
        return None
    kind_of = {int(d): int(k) for d, k in zip(edges.desc_id.tolist(), edges.kind_id.tolist())}
    first = ranked[0]
    second = next((d for d in ranked[1:] if kind_of[d] != kind_of[first]), ranked[1])
    groups = product_groups(data)
    products = (groups >= 0).nonzero().flatten()
    if products.numel() < 3:
        return None
    generator = torch.Generator().manual_seed(seed)
    products = products[torch.randperm(products.numel(), generator=generator)[:num_points]]
    embeddings = [
        fused_embedding(encode_pairs(encoder, products, torch.full_like(products, d), edges.num_descriptions))
        for d in (first, second)
    ]
    titles = [f"{method}: {data.relation_text[d]}" for d in (first, second)]
    return plot_relation_tsne(embeddings, titles, groups[products], path, seed=seed)


def evaluate(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, float]:
    """Run the evaluation suite described by ``cfg``; return headline numbers.

    Returns:
        ``{"<method>/<task>/<protocol>/<metric>": mean over seeds}`` for the ``avg`` mode (or no
        mode) on all queries, plus ``"num_rows"``.
    """
    domain = cfg.domain.name
    out_dir = Path(run_dir) if run_dir is not None else _run_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_graph(cfg.domain.processed_dir)
    edges = collect_edges(data)
    settings = SuiteSettings(
        num_negatives=cfg.eval.num_negatives,
        max_queries=cfg.eval.max_queries,
        max_train_edges=cfg.eval.max_train_edges,
        full_corpus_queries=cfg.eval.full_corpus_queries,
        batch_size=cfg.eval.batch_size,
        probe_test_ratio=cfg.eval.probe_test_ratio,
        tasks=tuple(cfg.eval.tasks) or TASKS,
    )
    device = cfg.eval.device
    notes: list[str] = []
    encoders: list[tuple[str, RelationEncoder]] = []
    probe_features = None
    if cfg.eval.zero_shot:
        backbone = build_backbone(
            cfg.model.name, pretrained=cfg.model.pretrained, checkpoint=cfg.model.checkpoint,
            embed_dim=cfg.model.embed_dim, device=device, quick_gelu=cfg.model.get("quick_gelu"),
        )
        product_ids = getattr(data[PRODUCT], "product_id", None) or getattr(data[PRODUCT], "asin", None)
        manifest = Path(cfg.domain.image_dir) / "manifest.json"
        image_paths = image_paths_from_manifest(manifest, product_ids) if product_ids is not None else None
        if image_paths is None:
            notes.append(f"zero_shot: no image manifest at {manifest}; text modes only (image modes have n=0)")
        zero_shot = ZeroShotEncoder(backbone, data[PRODUCT].text, data.relation_text, image_paths,
                                    batch_size=cfg.eval.batch_size)
        encoders.append((ZERO_SHOT_METHOD, zero_shot))
        probe_features = fused_embedding(encode_global(zero_shot, torch.arange(edges.num_nodes)))
    for path in _checkpoint_paths(cfg):
        encoders.append(_load_checkpoint(path, device))
    if not encoders:
        raise ValueError("nothing to evaluate: eval.zero_shot is false and no checkpoint= was given")

    rows: list[ResultRow] = []
    seeds = list(cfg.eval.seeds)
    progress = tqdm(total=len(encoders) * len(seeds), desc="evaluate", disable=not cfg.show_progress)
    for method, encoder in encoders:
        for seed in seeds:
            rows += run_tasks(
                data, edges, encoder, method, int(seed), settings,
                probe_features=probe_features if method == ZERO_SHOT_METHOD else None,
                log=progress.set_postfix_str,
            )
            progress.update(1)
    progress.close()

    append_rows(out_dir / "results.json", domain, rows)
    append_rows(Path(cfg.eval.results_dir) / domain / "results.json", domain, rows)
    (out_dir / "results.md").write_text(results_markdown(domain, rows, notes), encoding="utf-8")
    if cfg.eval.plots:
        method, encoder = encoders[-1]
        _tsne_plot(data, edges, encoder, method, out_dir / "tsne_relations.png", cfg.eval.tsne_points, seeds[0])
        if any(str(r.extra.get("subset", "")).startswith("kind=") for r in rows):
            plot_hit_per_relation(rows, out_dir / "hit5_per_relation.png")

    headline: dict[str, list[float]] = {}
    for r in rows:
        if r.extra.get("subset") == "all" and r.mode in ("avg", None):
            key = "/".join(str(x) for x in (r.method, r.task, r.extra.get("protocol", "-"), r.metric))
            headline.setdefault(key, []).append(r.value)
    summary = {key: sum(v) / len(v) for key, v in headline.items()}
    summary["num_rows"] = float(len(rows))
    return summary


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    summary = evaluate(cfg)
    print(OmegaConf.to_yaml(OmegaConf.create({k: round(v, 4) for k, v in summary.items()})))


if __name__ == "__main__":
    main()
