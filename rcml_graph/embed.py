"""Export a checkpoint's per-product embeddings: ``python -m rcml_graph.embed domain=<name> checkpoint=<path>``.

Writes ``embeddings.safetensors`` (keys ``global``, ``kind/<kind>``, ``description/<i>`` and, for a
head with a query operator, their query sides ``query/kind/<kind>``, ``query/description/<i>``) and
``manifest.json`` (``sides`` says which key is which) into ``embed.output_dir`` (default ``<data_root>/<domain>/embeddings/<method>``);
``rcml_graph.downstream.attach_embeddings`` puts them on the graph as node features.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from rcml_graph.cli import CONFIG_DIR, register_configs
from rcml_graph.data.graph_io import load_graph
from rcml_graph.downstream.export import export_checkpoint, graph_hash, load_embeddings

register_configs()


def run(cfg: DictConfig) -> Path:
    """Export the embeddings of ``cfg.checkpoint`` for ``cfg.domain``; returns the export folder."""
    if not cfg.get("checkpoint"):
        raise ValueError("no checkpoint given; run `python -m rcml_graph.embed domain=<name> checkpoint=<path>`")
    processed_dir = cfg.domain.processed_dir
    data = load_graph(processed_dir)
    out_dir = export_checkpoint(
        str(cfg.checkpoint), data, cfg.embed.output_dir,
        data_root=cfg.paths.data_root, domain=cfg.domain.name, method=cfg.embed.method,
        descriptions=list(cfg.embed.descriptions), graph_sha256=graph_hash(processed_dir),
        device=cfg.embed.device, batch_size=cfg.embed.batch_size,
    )
    manifest = load_embeddings(out_dir).manifest
    print(json.dumps({"output_dir": str(out_dir), "method": manifest["method"], "shapes": manifest["shapes"],
                      "query_side": manifest["query_side"],
                      "skipped_descriptions": manifest["skipped_descriptions"]}, indent=2))
    return out_dir


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
