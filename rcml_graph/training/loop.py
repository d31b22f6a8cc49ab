"""The training loop: epochs of pair batches, AdamW + warmup/cosine, clipping, validation,
early stopping, checkpoints and resumption, optional DDP.

Under DDP each rank computes the loss of its shard of every global batch's pairs (the loss
gathers the embeddings of all ranks); the head and a trainable backbone run inside one
``DistributedDataParallel`` forward, so the gradients of both are all-reduced.

Resumption is exact at epoch boundaries: a checkpoint holds the head (and trainable backbone),
optimizer, scheduler, grad scaler, epoch, step, sampler position, early-stopping state, RNG
states and the run configuration (a JSON string, so ``torch.load(weights_only=True)`` reads it).
Batches are pure functions of ``(seed, epoch, batch)``, so with deterministic algorithms a run
resumed after a kill ends with the same weights and metrics as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from rcml_graph.io_utils import atomic_write_json
from rcml_graph.losses import RCMLLoss
from rcml_graph.model.head import RCMLHead
from rcml_graph.sampling import PairBatch
from rcml_graph.training.checkpoint import (
    BEST,
    LAST,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from rcml_graph.training.distributed import DistInfo, barrier, broadcast_flag, sharded_product_features
from rcml_graph.training.finetune import step_description_table
from rcml_graph.training.metrics_log import MetricsLogger
from rcml_graph.training.pairs import shard_pairs
from rcml_graph.training.schedule import build_optimizer, build_scheduler
from rcml_graph.training.sources import FeatureSource, autocast_dtype
from rcml_graph.training.step import pair_loss
from rcml_graph.training.validation import RetrievalValidator

log = logging.getLogger(__name__)


class PairSampler(Protocol):
    """:class:`rcml_graph.sampling.RelationPairSampler` or :class:`SelfPairSampler`."""

    def __len__(self) -> int: ...
    def __iter__(self) -> Any: ...
    def set_epoch(self, epoch: int) -> None: ...
    def state_dict(self) -> dict[str, int]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class FitOptions:
    """Loop settings (the entry point fills them from ``cfg.train``).

    Attributes:
        epochs: maximum number of epochs.
        lr, weight_decay: AdamW settings.
        backbone_lr: learning rate of a trainable backbone (``source`` an ``nn.Module``) in
            its own parameter groups, on the same warmup/cosine schedule; None trains it at
            ``lr`` (one set of groups for head and backbone).
        warmup_steps: linear warm-up steps before the cosine decay.
        min_lr_ratio: final learning rate as a fraction of ``lr``.
        grad_clip: max global gradient norm (None: no clipping).
        patience: stop after this many validations without improvement (None: never).
        monitor: the validation metric that picks ``best.pt`` and drives early stopping.
        max_steps: stop after this many optimizer steps in total (None: no limit). A stop
            inside an epoch validates and checkpoints the epoch as unfinished, with the
            sampler's position: resuming with a longer schedule trains its remaining batches.
        stop_after_epoch: return after this many completed epochs, as a kill would (testing
            resumption); the run is not finished and ``resume`` continues it.
        graph_false_negatives: mask the sampler's graph false negatives in the loss.
        random_negatives: in-batch products per pair embedded under the pair's relation as
            extra negatives (relation-conditioned heads; see :func:`pair_loss`).
        w_global: weight of the auxiliary relation-free loss of conditioned heads.
        validate_before: score the untrained model first (``init/...`` metrics).
        amp_dtype: autocast dtype on CUDA (``bfloat16``) or None for fp32.
        amp_cpu: autocast on the CPU too (``amp_dtype`` must be ``bfloat16``); see
            :func:`rcml_graph.training.sources.autocast_dtype`.
        show_progress: tqdm bar with loss and pairs/s.
        tensorboard: write TensorBoard events next to ``metrics.csv``.
        log_every: steps between train-loss rows.
    """

    epochs: int = 10
    lr: float = 1e-3
    backbone_lr: float | None = None
    weight_decay: float = 0.2
    warmup_steps: int = 100
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    patience: int | None = 3
    monitor: str = "val/hit@5"
    max_steps: int | None = None
    stop_after_epoch: int | None = None
    graph_false_negatives: bool = True
    random_negatives: int = 0
    w_global: float = 0.0
    validate_before: bool = True
    amp_dtype: str | None = None
    amp_cpu: bool = False
    show_progress: bool = True
    tensorboard: bool = True
    log_every: int = 10

    def __post_init__(self) -> None:
        """Refuse settings the loop would otherwise misread silently (a negative ``grad_clip``
        reverses gradients, ``patience=0`` stops at once, ``log_every=0`` divides by zero)."""
        checks = (
            ("epochs", self.epochs, self.epochs >= 1, "an integer >= 1"),
            ("lr", self.lr, self.lr > 0, "a number > 0"),
            ("backbone_lr", self.backbone_lr, self.backbone_lr is None or self.backbone_lr > 0, "null or > 0"),
            ("weight_decay", self.weight_decay, self.weight_decay >= 0, "a number >= 0"),
            ("warmup_steps", self.warmup_steps, self.warmup_steps >= 0, "an integer >= 0"),
            ("min_lr_ratio", self.min_lr_ratio, 0 <= self.min_lr_ratio <= 1, "a number in [0, 1]"),
            ("grad_clip", self.grad_clip, self.grad_clip is None or self.grad_clip > 0, "null (no clipping) or > 0"),
            ("patience", self.patience, self.patience is None or self.patience >= 1, "null (never stop early) or >= 1"),
            ("max_steps", self.max_steps, self.max_steps is None or self.max_steps >= 1, "null or >= 1"),
            ("stop_after_epoch", self.stop_after_epoch, self.stop_after_epoch is None or self.stop_after_epoch >= 1,
             "null or >= 1"),
            ("random_negatives", self.random_negatives, self.random_negatives >= 0, "an integer >= 0"),
            ("w_global", self.w_global, self.w_global >= 0, "a number >= 0 (0: off)"),
            ("log_every", self.log_every, self.log_every >= 1, "an integer >= 1"),
        )
        for name, value, ok, accepted in checks:
            if not ok:
                raise ValueError(f"train.{name}={value!r}; accepted: {accepted}")


#: What a resumed run must share with the checkpoint's run (top-level keys of the stored config,
#: and ``cfg.train`` keys); a longer schedule (``epochs``, ``max_steps``), logging and paths may change.
RESUME_IDENTITY = ("method", "variant", "pairs", "head", "backbone", "processed_dir", "finetune")
RESUME_TRAIN_IDENTITY = ("seed", "batch_size", "positives_per_anchor", "hard_negatives", "random_negatives",
                         "w_global", "w_inter", "w_intra", "lr", "backbone_lr", "weight_decay", "warmup_steps",
                         "min_lr_ratio", "backbone", "trainable_last_blocks", "graph_false_negatives",
                         "mask_false_negatives", "relation_negative_fraction", "false_negative_scope")


def resume_conflicts(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key: saved -> current`` for each identity setting (:data:`RESUME_IDENTITY`,
    :data:`RESUME_TRAIN_IDENTITY`) both configs hold and that differs. ``resume=latest`` may
    pick a sibling run's ``last.pt``; this keeps a run from continuing another run's training."""
    out = [f"{k}: {saved[k]!r} -> {current[k]!r}" for k in RESUME_IDENTITY
           if k in saved and k in current and saved[k] != current[k]]
    saved_train = (saved.get("cfg") or {}).get("train") or {}
    current_train = (current.get("cfg") or {}).get("train") or {}
    out += [f"train.{k}: {saved_train[k]!r} -> {current_train[k]!r}" for k in RESUME_TRAIN_IDENTITY
            if k in saved_train and k in current_train and saved_train[k] != current_train[k]]
    return out


@dataclass
class _EarlyStopping:
    best: float = -math.inf
    best_epoch: float = -1  # fractional for a validation inside an epoch (a max_steps stop)
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def _trainable_modules(head: nn.Module, source: FeatureSource) -> nn.ModuleDict:
    modules = nn.ModuleDict({"head": head})
    if isinstance(source, nn.Module):
        modules["backbone"] = source
    return modules


def _build_optimizer(modules: nn.ModuleDict, options: FitOptions) -> tuple[torch.optim.AdamW, int | None]:
    """AdamW over head and backbone, and the index of the backbone's first parameter group
    (None: no group of its own). With ``options.backbone_lr`` the backbone's parameters form
    their own groups at that rate; the scheduler scales every group alike."""
    if options.backbone_lr is None or "backbone" not in modules:
        return build_optimizer(modules, options.lr, options.weight_decay), None
    backbone = modules["backbone"]
    optimizer = build_optimizer(modules["head"], options.lr, options.weight_decay)
    if not any(p.requires_grad for p in backbone.parameters()):
        return optimizer, None
    first = len(optimizer.param_groups)
    for group in build_optimizer(backbone, options.backbone_lr, options.weight_decay).param_groups:
        optimizer.add_param_group(group)
    return optimizer, first


class _StepLoss(nn.Module):
    """A training step's forward as one module: the backbone (when it trains) encodes the
    products and descriptions, the head embeds the pairs, the loss scores them.

    ``DistributedDataParallel`` all-reduces the gradients of the parameters of the module it
    wraps that are used inside its ``forward``; wrapping the head alone would leave a
    trainable backbone, which runs before the head, out of the reduction.

    Args:
        head (RCMLHead): the head.
        loss_fn (RCMLLoss): the contrastive loss.
        source (FeatureSource): product features; registered as a submodule when it is an
            ``nn.Module`` (a trainable backbone).
        num_relations (int): size of the description table.
        options (FitOptions): the loop settings (negatives, false-negative masking,
            ``w_global``).

    Shapes:
        - **input:** a :class:`PairBatch` of ``P`` pairs, the ``(R, D)`` description table
          (or None), the slice of pairs this rank trains on (None: all) and the device.
        - **output:** ``(loss, terms, number of pairs)`` of :func:`pair_loss`.
    """

    def __init__(self, head: RCMLHead, loss_fn: RCMLLoss, source: FeatureSource, num_relations: int,
                 options: FitOptions, shard: DistInfo | None = None) -> None:
        super().__init__()
        self.head = head
        self.loss_fn = loss_fn
        self.source = source  # a submodule when it is a trainable backbone
        self.num_relations = num_relations
        self.options = options
        #: under DDP with a trainable backbone: each rank encodes its share of the products
        self.shard = shard

    def forward(self, batch: PairBatch, description_table: Tensor | None, pairs: slice | None,
                device: torch.device) -> tuple[Tensor, dict[str, Tensor], int]:
        step_table = step_description_table(self.head, self.source, description_table, batch.desc_id, device)
        features = None
        if self.shard is not None:
            features = sharded_product_features(self.source, batch.products, self.shard, device)
        return pair_loss(self.head, self.loss_fn, batch, self.source, step_table, self.num_relations,
                         device, self.options.graph_false_negatives, pairs,
                         conditioned=not self.head.global_only,
                         random_negatives=self.options.random_negatives, w_global=self.options.w_global,
                         features=features)


def fit(
    head: RCMLHead,
    loss_fn: RCMLLoss,
    sampler: PairSampler,
    source: FeatureSource,
    validator: RetrievalValidator | None,
    run_dir: str | Path,
    *,
    num_relations: int,
    description_table: Tensor | None = None,
    options: FitOptions | None = None,
    config: dict[str, Any] | None = None,
    resume: str | Path | None = None,
    device: torch.device | str = "cpu",
    dist_info: DistInfo | None = None,
) -> dict[str, float]:
    """Train ``head`` (and ``source`` if it is a trainable module) and return final metrics.

    Writes ``metrics.csv``, TensorBoard events, ``checkpoints/last.pt`` (every epoch),
    ``checkpoints/best.pt`` (best ``options.monitor``) and ``metrics.json`` into ``run_dir``.

    Args:
        head: the RCML head, already on ``device``.
        loss_fn: the contrastive loss.
        sampler: yields :class:`PairBatch` es (global batches; sharded by rank under DDP).
        source: product features (a cache, an in-memory table or a trainable backbone).
        validator: retrieval validation run after each epoch (None: no validation).
        run_dir: the run folder.
        num_relations: size of the description table (for view keys).
        description_table: ``(R, D)`` description embeddings on ``device`` (None in ``ids``
            and global-only modes).
        options: loop settings.
        config: the run configuration, stored in checkpoints (JSON-serialisable).
        resume: a checkpoint to continue from (None: a fresh run).
        device: where to train.
        dist_info: this process's DDP rank (None: single process). Every rank gets the same
            global batches and trains on its shard of their pairs; gradients of the head and
            of a trainable ``source`` are all-reduced, and only rank 0 writes files.

    Raises:
        ValueError: ``options.backbone_lr`` is not positive, or is set for a source that
            does not train; ``resume`` has other optimizer groups than this run (a different
            ``backbone_lr`` setting).
        RuntimeError: the loss became NaN/inf; the message names epoch and step, and the
            last good checkpoint is left as it was.
    """
    options = options or FitOptions()
    if options.backbone_lr is not None:
        if not options.backbone_lr > 0:
            raise ValueError(f"backbone_lr={options.backbone_lr}; accepted: a positive learning rate, "
                             "or None to train the backbone at lr")
        if not isinstance(source, nn.Module):
            raise ValueError(f"backbone_lr={options.backbone_lr} but the feature source "
                             f"({type(source).__name__}) has no trainable backbone; accepted: None")
    dist_info = dist_info or DistInfo()
    device = torch.device(device)
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    config_json = json.dumps(config or {}, sort_keys=True, default=str)

    modules = _trainable_modules(head, source)
    # A trainable backbone under DDP encodes a share of each step's products per rank.
    shard = dist_info if dist_info.enabled and "backbone" in modules else None
    step_loss: nn.Module = _StepLoss(head, loss_fn, source, num_relations, options, shard)
    if dist_info.enabled:
        # A trainable backbone may leave parameters out of a step's graph (the image tower
        # when no product of the batch has an image), which DDP must be told to expect.
        step_loss = nn.parallel.DistributedDataParallel(
            step_loss, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters="backbone" in modules)
    optimizer, backbone_group = _build_optimizer(modules, options)
    steps_per_epoch = len(sampler)
    total_steps = options.epochs * steps_per_epoch
    if options.max_steps is not None:
        total_steps = min(total_steps, options.max_steps)
    scheduler = build_scheduler(optimizer, min(options.warmup_steps, max(total_steps - 1, 0)),
                                max(total_steps, 1), options.min_lr_ratio)
    amp_dtype = autocast_dtype(device, options.amp_dtype, options.amp_cpu)
    use_amp = amp_dtype is not None
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and amp_dtype == torch.float16)

    start_epoch, step = 0, 0
    # A run stopped by max_steps part-way through an epoch saves that epoch as unfinished with
    # the sampler's position; a resumed run trains the epoch's remaining batches first.
    resume_position: dict[str, Any] | None = None
    stopping = _EarlyStopping()
    metrics_out: dict[str, float] = {}
    if resume is not None:
        state = load_checkpoint(resume, map_location=device)
        saved_groups = len(state["optimizer"]["param_groups"])
        if saved_groups != len(optimizer.param_groups):
            raise ValueError(
                f"{resume} holds {saved_groups} optimizer parameter groups but this run builds "
                f"{len(optimizer.param_groups)} (backbone_lr={options.backbone_lr}); accepted: "
                "resume with the backbone_lr setting (set or None) the checkpoint was trained with")
        conflicts = resume_conflicts(json.loads(state.get("config") or "{}"), config or {})
        if conflicts:
            raise ValueError(
                f"{resume} was trained with other settings than this run's: {'; '.join(conflicts)}; "
                "accepted: resume a checkpoint of the same run (train.resume=<path to its last.pt>), "
                "or train from scratch (train.resume=null)")
        modules.load_state_dict(state["modules"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        saved_position = state.get("sampler") or {}
        saved_epoch, saved_batch = int(saved_position.get("epoch", -1)), int(saved_position.get("batch", 0))
        if 0 < saved_batch < steps_per_epoch and saved_epoch in (start_epoch, start_epoch - 1):
            if saved_epoch == start_epoch - 1:
                # written before e13c02e: a max_steps stop counted its unfinished epoch as done
                log.warning("%s stopped inside epoch %d (batch %d of %d) but counts it as finished "
                            "(a checkpoint from before resumable max_steps stops): training that "
                            "epoch's remaining batches first; its early-stopping state already "
                            "holds the partial epoch's validation", resume, saved_epoch, saved_batch,
                            steps_per_epoch)
                start_epoch = saved_epoch
            resume_position = saved_position
        stopping = _EarlyStopping(**state["early_stopping"])
        metrics_out = dict(state.get("metrics", {}))
        restore_rng_state(state["rng"])
        log.info("resumed from %s at epoch %d, step %d", resume, start_epoch, step)

    logger = MetricsLogger(run_dir, tensorboard=options.tensorboard, enabled=dist_info.is_main)

    def current_descriptions() -> Tensor | None:
        # A fine-tuned text tower changes the descriptions' embeddings: re-encode them.
        with torch.no_grad():
            return step_description_table(head, source, description_table, device=device)

    def validate() -> dict[str, float]:
        if validator is None:
            return {}
        metrics = validator.evaluate(head, source, current_descriptions(), device)
        if options.monitor not in metrics:
            raise ValueError(f"train.monitor={options.monitor!r} is not a validation metric; accepted: "
                             f"{sorted(metrics)}")
        return metrics

    def checkpoint_state(epoch: int) -> dict[str, Any]:
        table = current_descriptions()
        return {
            "modules": modules.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "epoch": epoch,
            "step": step,
            "sampler": sampler.state_dict(),
            "early_stopping": asdict(stopping),
            "metrics": metrics_out,
            "rng": capture_rng_state(),
            "config": config_json,
            "description_table": table.detach().cpu() if table is not None else None,
        }

    if resume is None and options.validate_before and validator is not None:
        initial = validate()
        metrics_out.update({k.replace("val/", "init/val/", 1): v for k, v in initial.items()})
        logger.log({k.replace("val/", "init/val/", 1): v for k, v in initial.items()}, 0, 0)

    finished = stopping.bad_epochs >= (options.patience or math.inf) or (
        options.max_steps is not None and step >= options.max_steps)
    epoch = start_epoch
    # epochs trained so far, fractional for an unfinished one (reported as "epoch")
    position = epoch + (int(resume_position["batch"]) / steps_per_epoch if resume_position else 0.0)
    # the validation at a max_steps stop inside an epoch, when it beats every epoch-end one
    partial_best: tuple[float, float] = (-math.inf, -1.0)
    try:
        while not finished and epoch < options.epochs:
            skipped = 0
            if resume_position is not None:
                sampler.load_state_dict(resume_position)
                skipped, resume_position = int(resume_position["batch"]), None
            else:
                sampler.set_epoch(epoch)
            modules.train()
            loss_sum, loss_count, pairs_seen = 0.0, 0, 0
            epoch_start = time.perf_counter()
            bar: Iterable[PairBatch] = sampler
            progress = None
            if options.show_progress and dist_info.is_main:
                progress = tqdm(sampler, total=steps_per_epoch, initial=skipped, desc=f"epoch {epoch}",
                                leave=False)
                bar = progress
            for batch in bar:
                batch = batch.to(device) if batch.src.device != device else batch
                shard = None
                if dist_info.enabled:
                    shard, kept = shard_pairs(batch.num_pairs, dist_info.rank, dist_info.world_size)
                else:
                    kept = batch.num_pairs
                autocast = torch.autocast(device.type, dtype=amp_dtype) if use_amp else nullcontext()
                with autocast:
                    loss, terms, _ = step_loss(batch, description_table, shard, device)
                if not torch.isfinite(loss):
                    last = ckpt_dir / LAST
                    kept_msg = f"the last good checkpoint {last} is kept" if last.is_file() else \
                        "no checkpoint was written yet"
                    raise RuntimeError(
                        f"non-finite loss {loss.item()} at epoch {epoch}, step {step} (batch "
                        f"{loss_count} of the epoch); {kept_msg}. Lower train.lr, check the "
                        "feature cache for NaN/inf, or resume with train.resume=latest")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if options.grad_clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(
                        [p for p in modules.parameters() if p.requires_grad], options.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                step += 1
                loss_value = loss.item()
                loss_sum += loss_value
                loss_count += 1
                pairs_seen += kept
                if progress is not None:
                    elapsed = max(time.perf_counter() - epoch_start, 1e-9)
                    progress.set_postfix(loss=f"{loss_value:.4f}", pairs_s=f"{pairs_seen / elapsed:.0f}")
                if step % options.log_every == 0:
                    rates = {"train/lr": scheduler.get_last_lr()[0]}
                    if backbone_group is not None:
                        rates["train/backbone_lr"] = scheduler.get_last_lr()[backbone_group]
                    logger.log({"train/loss": loss_value, **rates,
                                **{f"train/{k}": float(v) for k, v in terms.items()}}, step, epoch)
                if options.max_steps is not None and step >= options.max_steps:
                    finished = True
                    break
            if progress is not None:
                progress.close()
            elapsed = time.perf_counter() - epoch_start
            epoch_metrics = {
                "train/epoch_loss": loss_sum / max(loss_count, 1),
                "train/pairs_per_s": pairs_seen / max(elapsed, 1e-9),
            }
            batches_done = skipped + loss_count
            # max_steps can end the run inside an epoch: the model is validated (the run's final
            # metrics; best.pt if it beats every epoch-end validation) but the epoch stays
            # unfinished in the checkpoint, so that a resume with a longer schedule trains its
            # remaining batches, and the validation stays out of the early-stopping state.
            partial = batches_done < steps_per_epoch
            if not partial:
                epoch += 1
            position = epoch + batches_done / steps_per_epoch if partial else float(epoch)
            val = validate()
            epoch_metrics.update(val)
            improved = False
            if options.monitor in val:
                value = val[options.monitor]
                improved = value > stopping.best
                if partial:  # the run's last validation: partial_best was unset until now
                    # reported and kept as best.pt, but outside the early-stopping state, so
                    # that a resumed run stops and picks best.pt as an uninterrupted one would
                    if improved:
                        partial_best = (value, position)
                elif improved:
                    stopping.best, stopping.best_epoch, stopping.bad_epochs = value, position, 0
                else:
                    stopping.bad_epochs += 1
            stopping.history.append({"epoch": position, **epoch_metrics, **({"partial": 1.0} if partial else {})})
            metrics_out.update(epoch_metrics)
            logger.log(epoch_metrics, step, epoch)
            if options.patience is not None and stopping.bad_epochs >= options.patience:
                finished = True
            finished = broadcast_flag(finished, dist_info)
            if dist_info.is_main:
                state = checkpoint_state(epoch)
                save_checkpoint(ckpt_dir / LAST, state)
                if improved or validator is None:
                    save_checkpoint(ckpt_dir / BEST, state)
            barrier(dist_info)
            if options.stop_after_epoch is not None and epoch >= options.stop_after_epoch and not finished:
                return {**metrics_out, "epoch": float(epoch), "step": float(step), "interrupted": 1.0}
    finally:
        logger.close()

    final = {
        **metrics_out,
        "epoch": float(position),
        "step": float(step),
        "best_epoch": float(max(partial_best, (stopping.best, stopping.best_epoch))[1]),
        f"best/{options.monitor}": float(max(partial_best[0], stopping.best)),
    }
    if dist_info.is_main:
        atomic_write_json(run_dir / "metrics.json", final)
    return final
