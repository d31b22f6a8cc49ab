"""RCML training: the loop, checkpoints, schedule, validation, DDP helpers and the encoder.

A library: nothing here reads Hydra configs (``rcml_graph.train`` does that).
"""

from rcml_graph.training.checkpoint import find_latest_checkpoint, load_checkpoint, save_checkpoint
from rcml_graph.training.distributed import DistInfo, init_distributed
from rcml_graph.training.loop import FitOptions, fit
from rcml_graph.training.pairs import SelfPairSampler, self_pair_batch, shard_pairs
from rcml_graph.training.schedule import build_optimizer, build_scheduler, warmup_cosine_factor
from rcml_graph.training.setup import HeadOptions, build_loss, build_sampler, head_kwargs, resolve_pairs
from rcml_graph.training.sources import (
    FeatureSource,
    TensorFeatures,
    autocast_dtype,
    prepare_frozen_source,
    random_features,
)
from rcml_graph.training.step import pair_loss
from rcml_graph.training.validation import RetrievalValidator, retrieval_queries

__all__ = [
    "DistInfo",
    "FeatureSource",
    "FitOptions",
    "HeadOptions",
    "RetrievalValidator",
    "SelfPairSampler",
    "TensorFeatures",
    "autocast_dtype",
    "build_loss",
    "build_optimizer",
    "build_sampler",
    "build_scheduler",
    "find_latest_checkpoint",
    "fit",
    "head_kwargs",
    "init_distributed",
    "load_checkpoint",
    "pair_loss",
    "prepare_frozen_source",
    "random_features",
    "resolve_pairs",
    "retrieval_queries",
    "save_checkpoint",
    "self_pair_batch",
    "shard_pairs",
    "warmup_cosine_factor",
]
