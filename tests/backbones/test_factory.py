import pytest
import torch

from rcml_graph.backbones import BACKBONE_NAMES, build_backbone, freeze_backbone
from rcml_graph.backbones.tiny import TinyBackbone


def test_unknown_name_lists_accepted():
    with pytest.raises(ValueError, match="unknown backbone 'clip_b16'; available: offline, clip_b32, tiny"):
        build_backbone("clip_b16")
    assert BACKBONE_NAMES == ("offline", "clip_b32", "tiny")


def test_weight_options_only_for_clip():
    with pytest.raises(ValueError, match="only to clip_b32"):
        build_backbone("tiny", pretrained="openai")


def test_clip_embed_dim_is_fixed():
    with pytest.raises(ValueError, match="fixed embed_dim of 512; got embed_dim=256"):
        build_backbone("clip_b32", embed_dim=256)


def test_build_tiny_passes_options():
    torch.manual_seed(0)
    backbone = build_backbone("tiny", embed_dim=8, context_length=12)
    assert isinstance(backbone, TinyBackbone)
    assert backbone.embed_dim == 8
    assert backbone.tokenize(["x"])["input_ids"].shape == (1, 12)


def _trainable_names(backbone):
    return {name for name, p in backbone.named_parameters() if p.requires_grad}


def _names_under(backbone, *prefixes):
    return {name for name, _ in backbone.named_parameters() if name.startswith(prefixes)}


def test_freeze_backbone_leaves_exactly_the_intended_parameters():
    torch.manual_seed(0)
    backbone = TinyBackbone(depth=3)
    projections = {"image_proj.weight", "text_proj.weight"}

    count = freeze_backbone(backbone, 0)
    assert _trainable_names(backbone) == projections
    assert count == 2 * 32 * 32

    freeze_backbone(backbone, 1)
    expected = projections | _names_under(
        backbone, "image_blocks.2.", "text_blocks.2.", "image_norm.", "text_norm."
    )
    assert _trainable_names(backbone) == expected

    freeze_backbone(backbone, 2)
    assert _trainable_names(backbone) == expected | _names_under(backbone, "image_blocks.1.", "text_blocks.1.")

    all_names = {name for name, _ in backbone.named_parameters()}
    assert freeze_backbone(backbone, 3) == sum(p.numel() for p in backbone.parameters())
    assert _trainable_names(backbone) == all_names

    freeze_backbone(backbone, 0)  # re-freezing works after unfreezing
    assert _trainable_names(backbone) == projections


def test_freeze_backbone_rejects_negative():
    with pytest.raises(ValueError, match="trainable_last_blocks must be >= 0; got -1"):
        freeze_backbone(TinyBackbone(), -1)
