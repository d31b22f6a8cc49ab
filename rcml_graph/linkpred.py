"""Downstream link prediction: ``python -m rcml_graph.linkpred domain=<name> linkpred.features=<source>``.

``linkpred.features``: ``rcml``/``rcml_symmetric``/``clip``/``unconditioned`` (embeddings
exported from a checkpoint, ``linkpred.checkpoint=<checkpoint file or export folder>``),
``backbone`` (frozen backbone globals from the feature cache, else computed with the zero-shot
encoder) or ``random``. ``rcml`` is asymmetric: a pair's source reads the export's query-side
views and its target the target-side views (the export must have a query side);
``rcml_symmetric`` gives both endpoints the target-side views (the model before the query
operator existed).
``linkpred.pair_score``: ``none`` (default), ``cosine`` (cosine of the endpoints' global
features, for every source) or ``rcml`` (the RCML head's ``q(u, d_u) . z(v, d_u)`` under each
source's training description, for ``rcml``/``rcml_symmetric``; embedded from the checkpoint the
export names, cached under ``<data_root>/<domain>/pair_scores/``), added to the logit with a
learned weight.
Trains every ``linkpred.models`` (``sage``, ``mlp``) for every seed, appends long-form rows to
``<linkpred.results_dir>/<domain>/results.json`` and the run folder, and writes ``results.md``;
the validation metrics at each model's chosen epoch go to ``validation.json`` beside them, with
protocol ``training`` rows (``best_epoch``, ``epochs_trained``, ``stopped_early``, and
``budget_bound``: 1 when ``linkpred.epochs`` rather than ``linkpred.patience`` ended training).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch_geometric.data import HeteroData

from rcml_graph.cli import CONFIG_DIR, register_configs
from rcml_graph.data.graph_io import load_graph
from rcml_graph.downstream import (
    FEATURE_SOURCES,
    LEDGER_NAME,
    LINKPRED_TASK,
    LinkPredOutcome,
    LinkPredSettings,
    PairScore,
    RunLedger,
    build_evaluation_set,
    cache_backbone_features,
    cosine_pair_score,
    embedding_features,
    environment,
    export_checkpoint,
    features_fingerprint,
    graph_hash,
    linkpred_rows,
    load_embeddings,
    message_passing_graph,
    query_key,
    random_features,
    rcml_pair_score,
    row_identity,
    run_key,
    settings_label,
    train_and_evaluate,
    view_features,
)
from rcml_graph.eval.results import ResultRow, append_rows, load_results, markdown_table
from rcml_graph.io_utils import atomic_path, sha256_file
from rcml_graph.relations import PRODUCT, RELATION_KINDS
from rcml_graph.schema import LinkPredConfig

log = logging.getLogger("linkpred")
register_configs()


def settings_from_config(cfg: DictConfig) -> LinkPredSettings:
    lp = cfg.linkpred
    return LinkPredSettings(
        target_kind=lp.target_kind, hidden_channels=lp.hidden_channels, num_layers=lp.num_layers,
        decoder=lp.decoder, dropout=lp.dropout, lr=lp.lr, weight_decay=lp.weight_decay, epochs=lp.epochs,
        eval_every=lp.eval_every, patience=lp.patience, num_negatives=lp.num_negatives,
        hits_ks=tuple(int(k) for k in lp.hits_ks),
        hits_negatives=lp.hits_negatives, max_val_queries=lp.max_val_queries,
        max_full_batch_nodes=lp.max_full_batch_nodes, device=lp.device, feature_norm=lp.feature_norm,
        selection=lp.selection, mode=lp.mode, batch_size=lp.batch_size,
        num_neighbors=tuple(int(k) for k in lp.num_neighbors), relation_aggr=lp.relation_aggr,
        train_negatives=lp.train_negatives, pair_score=lp.pair_score,
    )


def _backbone_features(cfg: DictConfig, data: HeteroData) -> Tensor:
    """Frozen backbone globals: from the feature cache if built, else with the zero-shot encoder."""
    from rcml_graph.feature_cache import FeatureCache, cache_dir_for

    cache_dir = cfg.train.cache_dir or cache_dir_for(cfg.paths.data_root, cfg.domain.name, cfg.model.name)
    try:
        cache = FeatureCache.open(cache_dir)
    except FileNotFoundError:
        log.info("no feature cache in %s: encoding with the %s backbone", cache_dir, cfg.model.name)
    else:
        if cache.num_products == int(data[PRODUCT].num_nodes):
            return cache_backbone_features(cache)
        log.warning("feature cache %s has %d products, the graph %d: encoding again",
                    cache_dir, cache.num_products, int(data[PRODUCT].num_nodes))
    from rcml_graph.backbones import build_backbone
    from rcml_graph.evaluation import ZeroShotEncoder, encode_global, image_paths_from_manifest

    torch.manual_seed(cfg.model.init_seed)
    backbone = build_backbone(cfg.model.name, pretrained=cfg.model.pretrained, checkpoint=cfg.model.checkpoint,
                              quick_gelu=cfg.model.get("quick_gelu"),
                              embed_dim=cfg.model.embed_dim, device=cfg.linkpred.device)
    product_ids = getattr(data[PRODUCT], "product_id", None) or getattr(data[PRODUCT], "asin", None)
    manifest = Path(cfg.domain.image_dir) / "manifest.json"
    image_paths = image_paths_from_manifest(manifest, product_ids) if product_ids is not None else None
    encoder = ZeroShotEncoder(backbone, data[PRODUCT].text, data.relation_text, image_paths)
    return view_features(encode_global(encoder, torch.arange(int(data[PRODUCT].num_nodes))))


#: Export folder (and on-the-fly export label) of each exported feature source.
_EXPORT_METHOD = {"rcml": "rcml", "rcml_symmetric": "rcml", "clip": "clip", "unconditioned": "unconditioned"}

NodeFeatures = tuple[Tensor, Tensor | None]


def _export_path(cfg: DictConfig, data: HeteroData, source: str) -> Path:
    """The export folder of an exported source (exporting a checkpoint file on the fly)."""
    method = _EXPORT_METHOD[source]
    default_dir = Path(cfg.paths.data_root) / cfg.domain.name / "embeddings" / method
    path = Path(cfg.linkpred.checkpoint) if cfg.linkpred.checkpoint else default_dir
    if path.is_file() and path.suffix != ".safetensors":
        path = export_checkpoint(path, data, default_dir, method=method,
                                 graph_sha256=graph_hash(cfg.domain.processed_dir), device=cfg.linkpred.device)
    return path


def _exported_features(cfg: DictConfig, data: HeteroData, source: str) -> NodeFeatures:
    """``(target-role features, source-role features or None)`` of an exported source.

    ``rcml``: global + every kind's target-side view for targets, global + every kind's
    query-side view for sources; ``rcml_symmetric``: the target-side ones for both (None);
    ``clip``/``unconditioned``: the global view.
    """
    path = _export_path(cfg, data, source)
    export = load_embeddings(path, expected_graph_sha256=graph_hash(cfg.domain.processed_dir))
    if not source.startswith("rcml"):
        return embedding_features(export.tensors, ["global"]), None
    kind_keys = [f"kind/{kind}" for kind in RELATION_KINDS if f"kind/{kind}" in export.tensors]
    target = embedding_features(export.tensors, ["global", *kind_keys])
    if source == "rcml_symmetric":
        return target, None
    if not export.manifest.get("query_side"):
        raise ValueError(f"linkpred.features=rcml needs query-side views, and the export in {path} has none "
                         "(its head has no query operator, or it was exported before they were); accepted: "
                         "linkpred.features=rcml_symmetric, or an export of a query-operator checkpoint")
    return target, embedding_features(export.tensors, ["global", *[query_key(key) for key in kind_keys]])


def node_features(cfg: DictConfig, data: HeteroData, seed: int, cached: dict[str, NodeFeatures]) -> NodeFeatures:
    """``(x, x_source)`` of ``cfg.linkpred.features``: ``(N, F)`` features and, for the asymmetric
    ``rcml``, the ``(N, F)`` source-role ones (else None). Random ones are drawn per seed."""
    source = cfg.linkpred.features
    if source not in FEATURE_SOURCES:
        raise ValueError(f"unknown linkpred.features {source!r}; accepted: {', '.join(FEATURE_SOURCES)}")
    if source == "random":
        return random_features(int(data[PRODUCT].num_nodes), cfg.linkpred.random_dim, seed), None
    if source not in cached:
        cached[source] = ((_backbone_features(cfg, data), None) if source == "backbone"
                          else _exported_features(cfg, data, source))
    return cached[source]


def _global_features(cfg: DictConfig, data: HeteroData, seed: int, cached: dict[str, NodeFeatures]) -> Tensor:
    """``(N, F)`` the source's relation-free features: the export's ``global`` view for the
    RCML sources (whose node features add the kind views), the node features otherwise."""
    source = cfg.linkpred.features
    if source.startswith("rcml"):
        path = _export_path(cfg, data, source)
        return load_embeddings(path, expected_graph_sha256=graph_hash(cfg.domain.processed_dir)).tensors["global"]
    return node_features(cfg, data, seed, cached)[0]


def _checkpoint_of(cfg: DictConfig, data: HeteroData, source: str) -> Path:
    """The checkpoint behind ``linkpred.checkpoint``: the file itself, or the one an export's
    manifest names (its sha256 checked)."""
    if cfg.linkpred.checkpoint and Path(cfg.linkpred.checkpoint).is_file() \
            and Path(cfg.linkpred.checkpoint).suffix != ".safetensors":
        return Path(cfg.linkpred.checkpoint)
    path = _export_path(cfg, data, source)
    record = load_embeddings(path).manifest.get("checkpoint")
    if not record:
        raise ValueError(f"linkpred.pair_score=rcml needs the checkpoint behind the export in {path}, and its "
                         "manifest names none; accepted: linkpred.checkpoint=<checkpoint file>")
    checkpoint = Path(record["path"])
    if not checkpoint.is_file() or sha256_file(checkpoint) != record["sha256"]:
        raise ValueError(f"the export in {path} was made from {checkpoint}, which is missing or has changed; "
                         "pass linkpred.checkpoint=<checkpoint file>")
    return checkpoint


def _rcml_pair_score(cfg: DictConfig, data: HeteroData) -> PairScore:
    """:func:`rcml_pair_score` of the run's RCML checkpoint, cached on disk by checkpoint, graph and kind."""
    from safetensors.torch import load_file, save_file

    if cfg.linkpred.features not in ("rcml", "rcml_symmetric"):
        raise ValueError(f"linkpred.pair_score=rcml reads an RCML checkpoint; linkpred.features is "
                         f"{cfg.linkpred.features!r}; accepted: rcml, rcml_symmetric (or pair_score=cosine)")
    checkpoint = _checkpoint_of(cfg, data, cfg.linkpred.features)
    graph_sha = graph_hash(cfg.domain.processed_dir)
    kind = cfg.linkpred.target_kind
    cache = (Path(cfg.paths.data_root) / cfg.domain.name / "pair_scores"
             / f"rcml-{sha256_file(checkpoint)[:16]}-{graph_sha[:16]}-{kind}.safetensors")
    if cache.is_file():
        tensors = load_file(str(cache))
        return PairScore(tensors["source"], tensors["targets"], tensors["slot"], float(tensors["mean"]),
                         float(tensors["std"]), "rcml")
    from rcml_graph.training.encoder import ConditionedEncoder

    start = time.perf_counter()
    encoder = ConditionedEncoder.from_checkpoint(checkpoint, device=cfg.linkpred.device)
    score = rcml_pair_score(encoder, data, kind)
    log.info("rcml pair score: %d descriptions x %d products in %.1f s -> %s", score.targets.size(0),
             score.num_nodes, time.perf_counter() - start, cache)
    with atomic_path(cache) as tmp:
        save_file({"source": score.source.contiguous(), "targets": score.targets.contiguous(), "slot": score.slot,
                   "mean": torch.tensor(score.mean), "std": torch.tensor(score.std)}, str(tmp))
    return score


def pair_score_of(cfg: DictConfig, data: HeteroData, seed: int, cached: dict[str, NodeFeatures]) -> PairScore | None:
    """The fixed pair score of ``linkpred.pair_score`` (None for ``none``)."""
    name = cfg.linkpred.pair_score
    if name == "none":
        return None
    if name == "cosine":
        return cosine_pair_score(_global_features(cfg, data, seed, cached))
    if name == "rcml":
        return _rcml_pair_score(cfg, data)
    raise ValueError(f"unknown linkpred.pair_score {name!r}; accepted: none, cosine, rcml")


def _run_dir(cfg: DictConfig) -> Path:
    if cfg.linkpred.output_dir:
        return Path(cfg.linkpred.output_dir)
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().runtime.output_dir)
    return Path(cfg.paths.runs_root) / cfg.domain.name / "linkpred" / time.strftime("%Y-%m-%d_%H-%M-%S")


def _fingerprint(x: Tensor, x_source: Tensor | None, pair_score: PairScore | None) -> str:
    """What a run read: its node features, source-role features and pair score."""
    score = () if pair_score is None else (pair_score.source, pair_score.targets, pair_score.slot,
                                          torch.tensor([pair_score.mean, pair_score.std], dtype=torch.float64))
    return features_fingerprint((x, x_source, *score))


def _recorded_rows(path: Path, method: str, model_name: str, seed: int, identity: dict[str, str]) -> list[ResultRow]:
    """The rows of one finished run in the results file at ``path``."""
    if not path.exists():
        return []
    return [row for row in load_results(path).rows
            if row.task == LINKPRED_TASK and row.method == method and row.seed == seed
            and row.extra.get("model") == model_name
            and {key: value for key, value in row.extra.items() if key not in ("model", "protocol")} == identity]


def run(cfg: DictConfig) -> dict[str, float]:
    """Train and evaluate every model for every seed; returns ``{"<model>/<protocol>/<metric>": mean}``.

    Each run's rows are written when it finishes, then recorded in the folder's ledger
    (:class:`RunLedger`) with a fingerprint of the features it read. With ``linkpred.resume``
    a run that the ledger holds from the same features is skipped (its recorded rows count in
    the summary), so a killed grid resumes where it stopped; one recorded from other features
    (another checkpoint under the same ``linkpred.features``) is an error, not a skip.
    """
    settings = settings_from_config(cfg)
    seeds = [int(s) for s in cfg.linkpred.seeds]
    if not seeds:
        raise ValueError("linkpred.seeds is empty; give at least one seed, e.g. [0,1,2]")
    domain, method = cfg.domain.name, cfg.linkpred.features
    # Non-default hyperparameters join the rows' identity: a run at other settings adds rows
    # to a shared results file instead of replacing these.
    label = settings_label(settings, **({"random_dim": (cfg.linkpred.random_dim, LinkPredConfig.random_dim)}
                                        if method == "random" else {}))
    identity = row_identity(settings.target_kind, settings.train_negatives, settings.pair_score, label)
    data = load_graph(cfg.domain.processed_dir)
    out_dir = _run_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_root = Path(cfg.linkpred.results_dir) / domain
    ledger = RunLedger(results_root / LEDGER_NAME)
    cached: dict[str, NodeFeatures] = {}
    structure = message_passing_graph(data, torch.zeros(int(data[PRODUCT].num_nodes), 1))
    message_edges = torch.cat([s.edge_index for s in structure.edge_stores], dim=1)
    rows: list[ResultRow] = []
    pair_scores: dict[int, PairScore | None] = {}
    skipped = 0
    for seed in seeds:
        x, x_source = node_features(cfg, data, seed, cached)
        # Random features change with the seed, so does their cosine; every other score is fixed.
        key = seed if method == "random" else 0
        if key not in pair_scores:
            pair_scores[key] = pair_score_of(cfg, data, seed, cached)
        fingerprint = _fingerprint(x, x_source, pair_scores[key])
        evaluation = None
        for model_name in cfg.linkpred.models:
            name = run_key(method, model_name, seed, identity)
            recorded = ledger.fingerprint(name)
            if cfg.linkpred.resume and recorded == fingerprint:
                finished = _recorded_rows(results_root / "results.json", method, model_name, seed, identity)
                if finished:
                    log.info("%s/%s seed %d: finished before from the same features (%s); skipped (resume)",
                             method, model_name, seed, fingerprint)
                    rows += finished
                    skipped += 1
                    continue
            elif cfg.linkpred.resume and recorded is not None:
                raise ValueError(
                    f"{results_root} holds {method}/{model_name} seed {seed} made from other features (fingerprint "
                    f"{recorded}, now {fingerprint}: another checkpoint?); accepted: the same features, another "
                    "linkpred.results_dir, or linkpred.resume=false to replace those rows")
            elif recorded is not None and recorded != fingerprint:
                log.warning("%s/%s seed %d: replacing rows made from other features (%s, now %s)", method,
                            model_name, seed, recorded, fingerprint)
            if evaluation is None:
                evaluation = {split: build_evaluation_set(data, split, settings, seed, message_edges)
                              for split in ("val", "test")}
            outcome = train_and_evaluate(data, x, model_name, settings, seed, evaluation, log=log.info,
                                         x_source=x_source, pair_score=pair_scores[key])
            log.info("%s/%s seed %d: test mrr heart %.4f uniform %.4f (best epoch %d of %d)", method, model_name,
                     seed, outcome.metrics["heart"]["mrr"], outcome.metrics["uniform"]["mrr"], outcome.best_epoch,
                     outcome.epochs_trained)
            if outcome.pair_weight is not None:
                log.info("pair score weight %.3f", outcome.pair_weight)
            run_rows = linkpred_rows(outcome, method, model_name, seed, settings.target_kind,
                                     settings.train_negatives, settings.pair_score, label)
            # Protocol "training": when the epoch was chosen and how long training ran (convergence audit).
            training = {"best_epoch": float(outcome.best_epoch), "epochs_trained": float(outcome.epochs_trained),
                        "stopped_early": float(outcome.stopped_early), "budget_bound": float(outcome.budget_bound),
                        "n": 1}
            validation = LinkPredOutcome({**outcome.val_metrics, "training": training}, outcome.best_epoch,
                                         outcome.best_val_mrr)
            val_rows = linkpred_rows(validation, method, model_name, seed, settings.target_kind,
                                     settings.train_negatives, settings.pair_score, label)
            # Written as each run finishes (a kill loses at most the run in progress), the
            # ledger last: a run is recorded only once its rows are on disk.
            append_rows(out_dir / "results.json", domain, run_rows)
            append_rows(results_root / "results.json", domain, run_rows)
            # Validation metrics at the chosen epoch, apart from the test rows: for choosing a configuration.
            append_rows(out_dir / "validation.json", domain, val_rows)
            append_rows(results_root / "validation.json", domain, val_rows)
            ledger.record(name, fingerprint, environment(settings.device))
            rows += run_rows
    if skipped:
        log.info("resume: %d of %d runs were finished before and skipped", skipped,
                 len(seeds) * len(cfg.linkpred.models))
    table = markdown_table(rows, task=LINKPRED_TASK, index=("method", "model"), columns=("protocol", "metric"))
    (out_dir / "results.md").write_text(f"# Link prediction on {domain} ({settings.target_kind})\n\n{table}",
                                        encoding="utf-8")
    summary: dict[str, list[float]] = {}
    for row in rows:
        summary.setdefault(f"{row.extra['model']}/{row.extra['protocol']}/{row.metric}", []).append(row.value)
    return {key: sum(values) / len(values) for key, values in summary.items()}


@hydra.main(version_base=None, config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    summary = run(cfg)
    print(OmegaConf.to_yaml(OmegaConf.create({k: round(v, 4) for k, v in summary.items()})))


if __name__ == "__main__":
    main()
