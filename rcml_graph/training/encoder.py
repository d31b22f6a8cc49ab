"""A trained RCML head over its feature cache, for evaluation and downstream use.

    encoder = ConditionedEncoder.from_checkpoint("runs/demo/train/.../checkpoints/best.pt")
    views = encoder.encode(products, relation_ids)          # ViewEmbeddings (targets)
    queries = encoder.encode_query(products, relation_ids)  # the source side of a query
    new_id = encoder.add_description("bought by people who like camping")
    views = encoder.encode(products, torch.full_like(products, new_id))
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rcml_graph.model.head import RCMLHead, ViewEmbeddings
from rcml_graph.training.checkpoint import load_checkpoint
from rcml_graph.training.sources import FeatureSource, TensorFeatures
from rcml_graph.training.validation import embed_views


class ConditionedEncoder:
    """Relation-conditioned image/text embeddings of products from a trained checkpoint.

    Args:
        head: the trained head (put in eval mode).
        source: the products' backbone features (the feature cache the head was trained on).
        description_table: ``(R, D)`` description embeddings, or None (``ids``/global modes).
        config: the run configuration stored in the checkpoint (``head``, ``backbone``,
            ``cache_dir``, ``variant``...).
        device: where to compute.
    """

    def __init__(self, head: RCMLHead, source: FeatureSource, description_table: Tensor | None,
                 config: dict[str, Any], device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.head = head.to(self.device).eval()
        self.source = source
        self.config = config
        self._description_table = None if description_table is None else description_table.to(self.device)
        self._backbone: Any = None

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        cache_dir: str | Path | None = None, preload: bool = False) -> ConditionedEncoder:
        """Load ``path`` (``weights_only=True``) and open the feature cache it was trained on
        (or ``cache_dir``).

        A ``train.backbone=finetune`` checkpoint embeds products with its own fine-tuned
        backbone (rebuilt from the run's graph and image folder, weights from the checkpoint;
        ``preload`` decodes every image once), never with a frozen cache: ``cache_dir`` is then
        refused.
        """
        from rcml_graph.feature_cache import FeatureCache

        state = load_checkpoint(path, map_location="cpu")
        config = json.loads(state["config"])
        head_state = {k[len("head."):]: v for k, v in state["modules"].items() if k.startswith("head.")}
        # The weights say whether the head has a query operator: a global-only head trained
        # before relation-free query maps existed recorded the flag without building one.
        head_config = dict(config["head"], query_operator=any(k.startswith("text_query.") for k in head_state))
        head = RCMLHead(**head_config)
        head.load_state_dict(head_state)
        table = state.get("description_table")
        if config.get("finetune"):
            from rcml_graph.training.finetune import load_finetune_source

            if cache_dir is not None:
                raise ValueError(f"cache_dir={str(cache_dir)!r} given for the fine-tuned checkpoint {path}, "
                                 "whose products must be embedded by its own backbone; accepted: "
                                 "cache_dir=None")
            tuned = load_finetune_source(config["finetune"], state["modules"], device, preload_images=preload)
            if table is None:
                with torch.no_grad():
                    table = tuned.encode_descriptions()
            return cls(head, tuned.eval(), table, config, device)
        cache = FeatureCache.open(cache_dir or config["cache_dir"])
        source: FeatureSource = TensorFeatures.from_source(cache, device=device) if preload else cache
        if table is None:
            table = cache.relation_features().global_emb
        return cls(head, source, table, config, device)

    @property
    def description_table(self) -> Tensor | None:
        """``(R, D)`` description embeddings (relation id ``r`` is row ``r``), incl. added ones."""
        return self._description_table

    @property
    def num_relations(self) -> int:
        return 0 if self._description_table is None else self._description_table.shape[0]

    @torch.no_grad()
    def encode(self, products: Tensor, relation_ids: Tensor, batch_size: int = 4096) -> ViewEmbeddings:
        """Embeddings of the views ``(products[v], relation_ids[v])``, ``(V, out_dim)`` each."""
        if products.shape != relation_ids.shape or products.dim() != 1:
            raise ValueError(f"products {tuple(products.shape)} and relation_ids "
                             f"{tuple(relation_ids.shape)} must be 1-D of equal length")
        return embed_views(self.head, self.source, products.long(), relation_ids.long(),
                           self._description_table, self.device, batch_size)

    @torch.no_grad()
    def encode_query(self, products: Tensor, relation_ids: Tensor, batch_size: int = 4096) -> ViewEmbeddings:
        """The views ``(products[v], relation_ids[v])`` as the source side of a query: through
        the head's query operator when it has one (else the same as :meth:`encode`)."""
        if products.shape != relation_ids.shape or products.dim() != 1:
            raise ValueError(f"products {tuple(products.shape)} and relation_ids "
                             f"{tuple(relation_ids.shape)} must be 1-D of equal length")
        return embed_views(self.head, self.source, products.long(), relation_ids.long(),
                           self._description_table, self.device, batch_size, as_query=True)

    @torch.no_grad()
    def encode_global(self, products: Tensor, batch_size: int = 4096) -> ViewEmbeddings:
        """The relation-free (``beta = 1``) embeddings: projected global backbone outputs."""
        images, texts, valid = [], [], []
        for start in range(0, products.numel(), batch_size):
            features = self.source.product_features(products[start:start + batch_size], device=self.device)
            image = F.normalize(self.head.image_projection(features.image_global), dim=-1)
            text = F.normalize(self.head.text_projection(features.text_global), dim=-1)
            has_image = features.has_image.bool()
            images.append(torch.where(has_image[:, None], image, text))
            texts.append(text)
            valid.append(has_image)
        return ViewEmbeddings(torch.cat(images), torch.cat(texts), torch.cat(valid))

    def _text_tower(self) -> Any:
        tuned = getattr(self.source, "backbone", None)
        if tuned is not None:  # a fine-tuned checkpoint: its own text tower
            return tuned
        if self._backbone is None:
            from rcml_graph.backbones import build_backbone, spec_quick_gelu

            spec = self.config["backbone"]
            # The cache was built right after torch.manual_seed(seed): rebuild the same weights
            # without disturbing the caller's RNG.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(spec.get("seed") or 0))
                self._backbone = build_backbone(spec["name"], pretrained=spec.get("pretrained"),
                                                checkpoint=spec.get("checkpoint"),
                                                embed_dim=spec.get("embed_dim"), device=self.device,
                                                quick_gelu=spec_quick_gelu(spec))
            self._backbone.eval()
        return self._backbone

    @torch.no_grad()
    def encode_description(self, text: str) -> Tensor:
        """``(D,)`` text-tower embedding of an arbitrary description (backbone built lazily)."""
        from rcml_graph.backbones import trim_text_batch

        backbone = self._text_tower()
        tokens = {k: v.to(self.device) for k, v in trim_text_batch(backbone.tokenize([text])).items()}
        return backbone.encode_text(tokens).global_emb[0].float()

    @property
    def accepts_new_descriptions(self) -> bool:
        """Whether :meth:`add_description` works: a head that reads descriptions (or none)."""
        return self.head.global_only or self.head.relation_encoder.mode == "description"

    def add_description(self, text: str) -> int:
        """Append a new description to the table; returns its relation id for :meth:`encode`."""
        if not self.accepts_new_descriptions:
            raise ValueError(f"relation mode {self.head.relation_encoder.mode!r} cannot take a new "
                             "description; accepted: a head trained with relation_mode='description'")
        row = self.encode_description(text)[None, :]
        table = self._description_table
        self._description_table = row if table is None else torch.cat([table, row.to(table.dtype)])
        return self._description_table.shape[0] - 1
