"""Glue between Hydra and the library, for entry points only (``scripts/``, ``rcml_graph.train``).

Registers the typed schemas and the ``rcml.repo_root`` resolver; the library modules never
import this file.
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

from rcml_graph.schema import RootConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(REPO_ROOT / "configs")


def register_configs() -> None:
    ConfigStore.instance().store(name="rcml_schema", node=RootConfig)
    if not OmegaConf.has_resolver("rcml.repo_root"):
        OmegaConf.register_new_resolver("rcml.repo_root", lambda: str(REPO_ROOT))
