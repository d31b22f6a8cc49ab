"""The zero-shot baseline: a frozen backbone with the relation text appended to the item text.

The paper's baseline protocol: the query's text is ``item text + " " + relation text``, the
candidate is its plain item text (so :attr:`ZeroShotEncoder.condition_targets` is False);
image embeddings are the backbone's global image embeddings, relation-free, for products with
a verified image. It satisfies :class:`~rcml_graph.evaluation.encoders.RelationEncoder`, so
every task runs on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from rcml_graph.backbones import Backbone, trim_text_batch
from rcml_graph.data.images import load_manifest
from rcml_graph.evaluation.encoders import ViewEmbeddings

__all__ = ["ZeroShotEncoder", "image_paths_from_manifest"]


def image_paths_from_manifest(
    manifest_path: str | Path, product_ids: Sequence[str]
) -> list[Path | None] | None:
    """Per product, its verified image file (``ok`` in the manifest) or None.

    Returns None when the manifest does not exist (the evaluation then reports text modes only).
    """
    manifest_path = Path(manifest_path)
    if not manifest_path.is_file():
        return None
    records = load_manifest(manifest_path).records
    image_dir = manifest_path.parent
    paths: list[Path | None] = []
    for pid in product_ids:
        record = records.get(pid)
        ok = record is not None and record.status == "ok" and record.path is not None
        paths.append(image_dir / record.path if ok else None)  # type: ignore[union-attr, operator]
    return paths


class ZeroShotEncoder:
    """Frozen-backbone embeddings; relation text concatenated to the query's item text.

    Args:
        backbone: A built backbone (``rcml_graph.backbones.build_backbone``); used frozen.
        texts: Item text per product (``data["product"].text``).
        relation_text: The description table (``data.relation_text``).
        image_paths: Image file per product or None; None for no images at all.
        batch_size: Texts or images per backbone call.
    """

    #: Targets are embedded relation-free (their plain item text).
    condition_targets = False

    def __init__(
        self,
        backbone: Backbone,
        texts: Sequence[str],
        relation_text: Sequence[str],
        image_paths: Sequence[Path | None] | None = None,
        batch_size: int = 64,
    ) -> None:
        if image_paths is not None and len(image_paths) != len(texts):
            raise ValueError(f"image_paths has {len(image_paths)} entries for {len(texts)} products")
        self.backbone = backbone.eval()
        self.texts = list(texts)
        self.relation_text = list(relation_text)
        self.image_paths = list(image_paths) if image_paths is not None else [None] * len(texts)
        self.batch_size = batch_size
        self.device = next(backbone.parameters()).device
        num = len(self.texts)
        self.has_image = torch.tensor([p is not None for p in self.image_paths], dtype=torch.bool)
        self._image_cache = torch.zeros(num, backbone.embed_dim)
        self._image_done = torch.zeros(num, dtype=torch.bool)

    @property
    def has_images(self) -> bool:
        return bool(self.has_image.any())

    @torch.no_grad()
    def _encode_texts(self, texts: list[str]) -> Tensor:
        parts = []
        for start in range(0, len(texts), self.batch_size):
            tokens = trim_text_batch(self.backbone.tokenize(texts[start : start + self.batch_size]))
            tokens = {k: v.to(self.device) for k, v in tokens.items()}
            parts.append(self.backbone.encode_text(tokens).global_emb.float().cpu())
        if not parts:
            return torch.zeros(0, self.backbone.embed_dim)
        return F.normalize(torch.cat(parts), dim=-1)

    @torch.no_grad()
    def _images(self, products: Tensor) -> Tensor:
        todo = torch.unique(products[self.has_image[products] & ~self._image_done[products]])
        for start in range(0, todo.numel(), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            batch = []
            for p in chunk.tolist():
                with Image.open(self.image_paths[p]) as image:  # type: ignore[arg-type]
                    batch.append(self.backbone.preprocess(image))
            emb = self.backbone.encode_image(torch.stack(batch).to(self.device)).global_emb.float().cpu()
            self._image_cache[chunk] = F.normalize(emb, dim=-1)
            self._image_done[chunk] = True
        return self._image_cache[products]

    def add_description(self, text: str) -> int:
        """Append a new description; returns its relation id for :meth:`encode`."""
        self.relation_text.append(text)
        return len(self.relation_text) - 1

    def encode(self, products: Tensor, relation_ids: Tensor) -> ViewEmbeddings:
        """Text of ``item text + " " + relation text``; relation-free image."""
        texts = [
            f"{self.texts[p]} {self.relation_text[r]}"
            for p, r in zip(products.tolist(), relation_ids.tolist())
        ]
        return ViewEmbeddings(self._images(products), self._encode_texts(texts), self.has_image[products])

    def encode_global(self, products: Tensor) -> ViewEmbeddings:
        """Plain item text and image."""
        texts = [self.texts[p] for p in products.tolist()]
        return ViewEmbeddings(self._images(products), self._encode_texts(texts), self.has_image[products])
