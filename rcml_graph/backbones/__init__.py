"""Backbone presets built through open_clip: ``offline`` (default), ``clip_b32`` and ``tiny``.

Each preset is a :class:`Backbone` giving, for a batch, global image/text embeddings in a shared
space and token-level features (image patches or spatial cells; text tokens with a padding mask).
"""

from .base import (
    Backbone,
    ImageFeatures,
    TextFeatures,
    TowerLayout,
    pil_transform,
    preprocess_batch,
    trim_text_batch,
)
from .factory import BACKBONE_NAMES, DEFAULT_BACKBONE, build_backbone, freeze_backbone, spec_quick_gelu

__all__ = [
    "BACKBONE_NAMES",
    "DEFAULT_BACKBONE",
    "Backbone",
    "ImageFeatures",
    "TextFeatures",
    "TowerLayout",
    "build_backbone",
    "freeze_backbone",
    "pil_transform",
    "preprocess_batch",
    "spec_quick_gelu",
    "trim_text_batch",
]
