"""train.backbone=finetune on CUDA (bf16 autocast), ``python -m pytest -m gpu``."""

from __future__ import annotations

import math

import torch

from rcml_graph.train import train
from rcml_graph.training import load_checkpoint
from rcml_graph.training.encoder import ConditionedEncoder
from tests.test_gpu import CUDA, pytestmark  # noqa: F401  (gpu marker, skip without CUDA)
from tests.training.test_finetune import demo, make_cfg, make_source  # noqa: F401  (module fixture)


def test_cuda_finetune_trains_the_backbone_and_evaluation_uses_it(demo, tmp_path):  # noqa: F811
    metrics = train(make_cfg(demo, tmp_path, "train.epochs=2", "train.max_steps=null", "train.batch_size=50",
                             "train.lr=3e-3", "train.val_max_queries=100", f"train.device={CUDA}"))
    assert math.isfinite(metrics["train/epoch_loss"]) and math.isfinite(metrics["val/hit@5"])
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    tuned_key = "backbone.backbone.text_blocks.1.linear1.weight"
    frozen_key = "backbone.backbone.text_blocks.0.linear1.weight"
    fresh = make_source(demo).state_dict()
    assert not torch.equal(state["modules"][tuned_key], fresh[tuned_key[len("backbone."):]])
    assert torch.equal(state["modules"][frozen_key], fresh[frozen_key[len("backbone."):]])
    encoder = ConditionedEncoder.from_checkpoint(tmp_path / "checkpoints" / "last.pt", device=CUDA)
    views = encoder.encode(torch.arange(8), torch.arange(8) % 3)
    assert views.text.shape[0] == 8 and torch.isfinite(views.text).all()
