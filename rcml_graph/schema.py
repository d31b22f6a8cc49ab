"""Typed schemas of the Hydra config tree (``configs/``).

Plain dataclasses: the library never imports Hydra. ``rcml_graph.cli`` registers them in
Hydra's ConfigStore, so a misspelt key in a config file or an override fails at start-up
with the key's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING


@dataclass
class PathsConfig:
    repo_root: str = "."
    data_root: str = "datasets"
    runs_root: str = "runs"


@dataclass
class GeneratorConfig:
    """The offline demo world (``rcml_graph.data.demo``)."""

    num_products: int = 3000
    seed: int = 0
    images: bool = True
    image_size: int = 224


@dataclass
class DomainConfig:
    name: str = MISSING
    #: Folder with the raw metadata file(s); the first of ``meta_files`` found there is read.
    raw_dir: str = MISSING
    meta_files: list[str] = field(default_factory=list)
    #: Other folders searched for ``meta_files`` (e.g. ../shared/data for magazines).
    search_dirs: list[str] = field(default_factory=list)
    #: An explicit metadata file; overrides ``raw_dir``/``meta_files``.
    meta_path: Optional[str] = None
    release: str = "auto"
    processed_dir: str = MISSING
    #: Verified product images (one JPEG per product) and their manifest.
    image_dir: str = "${paths.data_root}/${domain.name}/images"
    #: Where ``scripts/download_amazon.py`` fetches this domain from (release, category).
    download_release: Optional[str] = None
    download_category: Optional[str] = None
    generator: Optional[GeneratorConfig] = None


@dataclass
class GraphConfig:
    """Options of ``rcml_graph.data.graph.build_graph`` (see ``GraphSettings``)."""

    val_ratio: float = 0.1
    test_ratio: float = 0.1
    split: str = "transductive"
    seed: int = 0
    community_resolution: float = 2.0
    min_community_size: int = 3
    max_networkx_edges: int = 2_000_000
    max_text_chars: int = 1000
    drop_no_text: bool = True


@dataclass
class DownloadConfig:
    """Limits of ``scripts/download_images.py`` and ``scripts/download_amazon.py``."""

    max_bytes: int = 10_000_000
    timeout_s: float = 10.0
    workers: int = 8
    retries: int = 2
    max_pixels: int = 50_000_000
    unreachable_limit: int = 32
    #: A mirror of the Amazon dump files (the official locations are the default).
    amazon_base_url: Optional[str] = None
    amazon_max_bytes: int = 20_000_000_000
    #: Which Amazon files: ``meta`` and/or ``reviews``.
    amazon_kinds: list[str] = field(default_factory=lambda: ["meta"])


@dataclass
class ModelConfig:
    """A backbone preset (``rcml_graph.backbones``)."""

    name: str = "offline"
    pretrained: Optional[str] = None
    checkpoint: Optional[str] = None
    embed_dim: Optional[int] = None


@dataclass
class TrainConfig:
    seed: int = 0
    batch_size: int = 256
    epochs: int = 10
    lr: float = 1e-3


@dataclass
class EvalConfig:
    num_negatives: int = 20
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])


@dataclass
class RootConfig:
    domain: DomainConfig = MISSING
    model: ModelConfig = MISSING
    train: TrainConfig = MISSING
    eval: EvalConfig = MISSING
    graph: GraphConfig = field(default_factory=GraphConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    force: bool = False
    show_progress: bool = True
