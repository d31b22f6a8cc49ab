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
    max_networkx_edges: int = 250_000
    max_text_chars: int = 1000
    #: ``train`` (default): communities and descriptions from training edges only; ``all``:
    #: from every edge, validation and test included (before session 8; leaks held-out edges).
    community_edges: str = "train"
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
class HeadConfig:
    """The RCML head on top of the backbone (``rcml_graph.model.head.RCMLHead``)."""

    beta: float = 0.5
    learn_beta: bool = False
    d_model: int = 256
    num_heads: int = 4
    dropout: float = 0.0
    projection: str = "linear"
    projection_hidden_dim: Optional[int] = None
    out_dim: Optional[int] = None
    #: Start the relation branch at zero (training starts from the unconditioned model).
    zero_init_attention: bool = True
    #: Map source (query) views through a relation-conditioned operator (asymmetric scoring).
    query_operator: bool = True


@dataclass
class FeaturesConfig:
    """Options of ``python -m rcml_graph.features`` (config node ``features:``).

    Attributes:
        batch_size: Images/texts per forward.
        shard_size: Products per resumable shard.
        num_workers: DataLoader workers reading images.
        dtype: Storage dtype (``float16``, ``bfloat16``, ``float32``).
        device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``...
        image_decoder: ``auto``, ``pil`` or ``tensor``.
        seed: Seed set before building the backbone (random-init towers and projections).
        cache_dir: Output folder; None gives ``<data_root>/<domain>/features/<model>``.
        max_shards: Stop after this many shards per stage (for testing resumption).
    """

    batch_size: int = 64
    shard_size: int = 4096
    num_workers: int = 2
    dtype: str = "float16"
    device: str = "auto"
    image_decoder: str = "auto"
    seed: int = 0
    cache_dir: Optional[str] = None
    max_shards: Optional[int] = None


@dataclass
class ModelConfig:
    """A backbone preset (``rcml_graph.backbones``) plus the RCML variant and head."""

    name: str = "offline"
    pretrained: Optional[str] = None
    checkpoint: Optional[str] = None
    embed_dim: Optional[int] = None
    #: ``clip_b32`` only: build with QuickGELU. None: from the ``pretrained`` tag (``openai``
    #: sets it); required with ``checkpoint`` (a weights file does not record its activation:
    #: true for OpenAI-trained weights, false for LAION/DataComp ones).
    quick_gelu: Optional[bool] = None
    #: Backbone init seed used when the feature cache was built (``features.seed``).
    init_seed: int = 0
    #: ``rcml``, ``clip``, ``unconditioned``, ``no_inter_modal``, ``no_intra``, ``relation_ids``.
    variant: str = "rcml"
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass
class TrainConfig:
    """``rcml_graph.train`` settings (see ``rcml_graph.training.loop.FitOptions``)."""

    seed: int = 0
    #: Anchor slots per batch (each brings up to ``positives_per_anchor`` relation pairs and
    #: one self pair); products per batch for self-pair-only training.
    batch_size: int = 256
    positives_per_anchor: int = 4
    #: ``auto`` (the variant's), ``self`` (intra-sample pairs only) or ``relations``.
    pairs: str = "auto"
    epochs: int = 10
    lr: float = 1e-3
    #: Learning rate of the backbone in fine-tune mode (its own AdamW parameter groups, same
    #: warmup/cosine schedule); null trains it at ``lr``. Ignored in frozen mode.
    backbone_lr: Optional[float] = None
    weight_decay: float = 0.2
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: Optional[float] = 1.0
    patience: Optional[int] = 3
    monitor: str = "val/hit@5"
    max_steps: Optional[int] = None
    stop_after_epoch: Optional[int] = None
    w_inter: float = 1.0
    w_intra: float = 1.0
    mask_false_negatives: bool = True
    graph_false_negatives: bool = True
    #: Sampler hard negatives per pair (same category / linked under another relation),
    #: embedded under the pair's relation; every variant trained on relation pairs gets them.
    #: 8 since session 6 (was 4): RCML's relation-sensitive Hit@5 +0.033 on demo and +0.030 on
    #: magazines (vs 2), 3 seeds each, unconditioned unchanged (docs/results.md, session 6).
    hard_negatives: int = 8
    #: Share of the hard-negative columns drawn from the anchor's links under other
    #: descriptions (relation-specific) rather than its category.
    relation_negative_fraction: float = 0.5
    #: Which of the anchor's graph links are never negatives (with ``graph_false_negatives``):
    #: ``description`` (those under the pair's description) or ``any_link`` (all of them: the
    #: ``unconditioned_anylink`` baseline, which cannot tell relations apart).
    false_negative_scope: str = "description"
    #: Batches the sampler computes ahead on a worker thread while a step runs (0: none);
    #: the batches and the resume position are the same either way.
    prefetch_batches: int = 1
    #: ``auto`` (CUDA, relation-conditioned heads), ``true`` or ``false``: :func:`torch.compile`
    #: the loss's stacked terms.
    compile_loss: str = "auto"
    #: In-batch products per pair embedded under the pair's relation (conditioned heads only).
    random_negatives: int = 16
    #: Auxiliary loss on a conditioned head's relation-free views, every in-batch candidate
    #: a negative (0 turns it off; global-only variants ignore it).
    w_global: float = 1.0
    #: ``frozen`` (reads the token cache) or ``finetune`` (backbone end to end).
    backbone: str = "frozen"
    trainable_last_blocks: int = 1
    #: Autocast dtype of training steps on CUDA (``bfloat16``, ``float16``) or null (float32);
    #: another value is refused, on any device.
    amp_dtype: Optional[str] = "bfloat16"
    #: Autocast on the CPU too, in bfloat16 (off: float32). On CPUs with native bf16
    #: (AVX512-BF16, AMX) the frozen RCML step runs ~2x faster (docs/benchmarks.md, session 15).
    amp_cpu: bool = False
    #: ``latest``, a checkpoint path, or null.
    resume: Optional[str] = None
    #: Run folder; null means Hydra's output dir.
    run_dir: Optional[str] = None
    #: Feature cache folder; null means ``<data_root>/<domain>/features/<model>``.
    cache_dir: Optional[str] = None
    preload_features: bool = True
    device: str = "auto"
    deterministic: bool = False
    val_negatives: int = 20
    val_max_queries: Optional[int] = 5000
    val_seed: int = 0
    validate_before: bool = True
    show_progress: bool = True
    tensorboard: bool = True
    log_every: int = 10


@dataclass
class EvalConfig:
    """Options of ``rcml_graph.evaluate`` (see ``rcml_graph.evaluation.SuiteSettings``)."""

    num_negatives: int = 20
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    #: Test edges per task (seeded subsample); None for all.
    max_queries: Optional[int] = 2000
    #: Training edges the relation-type probe and the validation classifier fit on.
    max_train_edges: Optional[int] = 5000
    #: Queries of full-corpus retrieval; 0 skips it, None ranks every test edge.
    full_corpus_queries: Optional[int] = 500
    batch_size: int = 256
    probe_test_ratio: float = 0.3
    #: Which tasks run; empty for all (retrieval, retrieval_sensitive, retrieval_unseen,
    #: relation_type, relation_validation, classification, retention).
    tasks: list[str] = field(default_factory=list)
    #: Evaluate the frozen backbone (``model``) with the relation text appended to the item text.
    zero_shot: bool = True
    #: Trained checkpoints to evaluate (besides a top-level ``checkpoint=``).
    checkpoints: list[str] = field(default_factory=list)
    device: str = "cpu"
    #: ``<results_dir>/<domain>/results.json`` collects the rows of every run.
    results_dir: str = "results"
    #: The run folder; None for Hydra's run dir.
    output_dir: Optional[str] = None
    plots: bool = True
    tsne_points: int = 500


@dataclass
class EmbedConfig:
    """Options of ``python -m rcml_graph.embed`` (see ``rcml_graph.downstream.export_embeddings``).

    Attributes:
        method: Label of the export folder; None takes the checkpoint's method (``rcml``, ``clip``,
            ``no_inter``), else its variant.
        descriptions: Extra description strings to condition on (``description/<i>`` keys).
        batch_size: Products per encoder call.
        device: Where the encoder runs.
        output_dir: Export folder; None gives ``<data_root>/<domain>/embeddings/<method>``.
    """

    method: Optional[str] = None
    descriptions: list[str] = field(default_factory=list)
    batch_size: int = 1024
    device: str = "cpu"
    output_dir: Optional[str] = None


@dataclass
class LinkPredConfig:
    """Options of ``python -m rcml_graph.linkpred`` (see ``rcml_graph.downstream.LinkPredSettings``).

    Attributes:
        features: ``rcml`` (asymmetric: sources read RCML's query-side views), ``rcml_symmetric``,
            ``clip``, ``unconditioned``, ``backbone`` or ``random``
            (``rcml_graph.downstream.FEATURE_SOURCES``).
        checkpoint: For the checkpoint-based sources: a checkpoint file (exported on the fly) or an export
            folder; None uses ``<data_root>/<domain>/embeddings/<features>``.
        models: ``sage`` (to_hetero GraphSAGE) and/or ``mlp`` (no message passing).
        target_kind: The relation kind whose held-out edges are predicted.
        num_negatives: HeaRT-style hard negatives per test positive (MRR).
        hits_negatives: Shared random negatives (Hits@K).
        max_val_queries: Validation positives used for model selection (seeded subsample).
        random_dim: Width of ``random`` features.
        max_full_batch_nodes: Above this many products ``mode=auto`` trains mini-batch.
        feature_norm: ``standard`` (per-column z-scores of the features) or ``none``.
        selection: Validation MRR that picks the epoch: ``uniform`` (random negatives) or ``heart``.
        mode: ``auto``, ``full`` or ``minibatch`` (neighbour-sampled subgraphs).
        batch_size: Training positives per mini-batch.
        num_neighbors: Mini-batch fan-out per hop (one per layer; -1 keeps all neighbours).
        relation_aggr: How the SAGE model combines relation types' messages: ``mean`` or ``sum``.
        train_negatives: Training negatives: ``uniform`` (random pairs), ``heart`` (HeaRT-style hard
            negatives drawn on the training graph only) or ``mixed`` (one of each per positive).
        pair_score: A fixed pair score added to the logit with a learned weight: ``none``,
            ``cosine`` (of the endpoints' global features; every source) or ``rcml`` (the RCML
            head's ``q(u, d_u) . z(v, d_u)`` under the source's training description; ``rcml`` and
            ``rcml_symmetric`` features).
        resume: Skip the (model, seed) runs that ``<results_dir>/<domain>/runs.json`` records as
            finished from the same features (a killed grid resumes); a run recorded from other
            features is an error. False reruns them and replaces their rows.
    """

    features: str = "random"
    checkpoint: Optional[str] = None
    models: list[str] = field(default_factory=lambda: ["sage", "mlp"])
    target_kind: str = "also_bought"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    hidden_channels: int = 64
    num_layers: int = 2
    decoder: str = "mlp"
    dropout: float = 0.0
    lr: float = 0.01
    weight_decay: float = 0.0
    epochs: int = 1000
    eval_every: int = 5
    patience: Optional[int] = 20
    num_negatives: int = 100
    hits_ks: list[int] = field(default_factory=lambda: [10, 50, 100])
    hits_negatives: int = 10_000
    max_val_queries: Optional[int] = 500
    random_dim: int = 128
    max_full_batch_nodes: int = 200_000
    feature_norm: str = "standard"
    selection: str = "uniform"
    mode: str = "auto"
    batch_size: int = 1024
    num_neighbors: list[int] = field(default_factory=lambda: [10, 10])
    relation_aggr: str = "mean"
    train_negatives: str = "uniform"
    pair_score: str = "none"
    device: str = "cpu"
    results_dir: str = "results"
    output_dir: Optional[str] = None
    resume: bool = False


@dataclass
class RootConfig:
    domain: DomainConfig = MISSING
    model: ModelConfig = MISSING
    train: TrainConfig = MISSING
    eval: EvalConfig = MISSING
    graph: GraphConfig = field(default_factory=GraphConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    download: DownloadConfig = field(default_factory=DownloadConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    linkpred: LinkPredConfig = field(default_factory=LinkPredConfig)
    #: The method's label in checkpoints and results tables (each experiment config sets its
    #: own name); None: the ``experiment=`` choice, else the model variant.
    method: Optional[str] = None
    #: A trained checkpoint (``python -m rcml_graph.evaluate checkpoint=runs/.../best.pt``).
    checkpoint: Optional[str] = None
    force: bool = False
    show_progress: bool = True
