"""Build a domain's relation-described product graph.

    python scripts/build_graph.py                      # the offline demo world
    python scripts/build_graph.py domain=magazines
    python scripts/build_graph.py domain=sports graph.split=inductive force=true
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rcml_graph.cli import CONFIG_DIR, register_configs
from rcml_graph.data.graph import GraphSettings
from rcml_graph.data.pipeline import build_domain, resolve_meta_path

log = logging.getLogger("build_graph")
register_configs()


def ensure_demo_raw(cfg: DictConfig) -> None:
    """Generate the demo world's raw files when they are absent."""
    raw_dir = Path(cfg.domain.raw_dir)
    if cfg.domain.generator is None or any((raw_dir / f).is_file() for f in cfg.domain.meta_files):
        return
    from rcml_graph.data.demo import generate_demo

    gen = cfg.domain.generator
    log.info("generating the demo world (%d products) in %s", gen.num_products, raw_dir)
    generate_demo(
        raw_dir,
        num_products=gen.num_products,
        seed=gen.seed,
        images=gen.images,
        image_size=gen.image_size,
        show_progress=cfg.show_progress,
    )


def run(cfg: DictConfig) -> dict:
    if cfg.domain.meta_path is None:
        ensure_demo_raw(cfg)
    meta_path = resolve_meta_path(
        cfg.domain.name,
        meta_path=cfg.domain.meta_path,
        raw_dir=cfg.domain.raw_dir,
        meta_files=list(cfg.domain.meta_files),
        search_dirs=list(cfg.domain.search_dirs),
    )
    graph = cfg.graph
    # GraphConfig is GraphSettings plus the reader's drop_no_text: copy the shared fields.
    settings = GraphSettings(**{f.name: graph[f.name] for f in dataclasses.fields(GraphSettings)})
    outcome = build_domain(
        meta_path,
        cfg.domain.processed_dir,
        settings,
        release=cfg.domain.release,
        drop_no_text=graph.drop_no_text,
        force=cfg.force,
        show_progress=cfg.show_progress,
    )
    cleaning, graph_report = outcome.report["cleaning"], outcome.report["graph"]
    summary = {
        "domain": cfg.domain.name,
        "processed_dir": str(outcome.processed_dir),
        "reused_existing_build": outcome.skipped,
        "products": graph_report["products"],
        "relation_edges": graph_report["relation_edges_undirected"],
        "descriptions": graph_report["descriptions"]["total"],
        "communities": graph_report["communities"]["co_purchase"]["count"],
        "duplicate_records_merged": cleaning["duplicate_records_merged"],
        "malformed_lines": cleaning["malformed_lines"],
    }
    print(json.dumps(summary, indent=2))
    return summary


@hydra.main(config_path=CONFIG_DIR, config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
