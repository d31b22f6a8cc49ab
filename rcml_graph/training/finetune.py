"""Fine-tune mode (``train.backbone=finetune``): a backbone as a trainable feature source.

:class:`BackboneFeatures` answers ``product_features(index)`` like the frozen token cache does,
with the same fields, token layout and dims, but by running the (partly trainable) backbone on
the step's unique products: their images (decoded and resized once, as the cache builder's PIL
path does; normalised on the device each step) and their tokenised texts. ``fit`` trains it with
the head because it is an ``nn.Module`` (under DDP its gradients are all-reduced with the head's);
its state is part of every checkpoint.

Relation descriptions go through the same text tower: re-encoded each step (only those the
step uses) when the text tower has trainable parameters, encoded once and cached otherwise
(:func:`step_description_table`).

The backbone always runs in eval mode (normalisation statistics and dropout stay as
pretrained, so a fine-tuned product embedding depends on the weights only); gradients flow
through its trainable blocks all the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor, nn
from torchvision import transforms

from rcml_graph.backbones import Backbone, build_backbone, freeze_backbone, spec_quick_gelu, trim_text_batch
from rcml_graph.model.features import ProductFeatures
from rcml_graph.model.head import RCMLHead

log = logging.getLogger(__name__)

#: Products whose texts are tokenised per backbone call at construction.
_TOKENIZE_CHUNK = 4096
#: Descriptions per text-tower call when the whole table is encoded.
_DESCRIPTION_CHUNK = 256


def _convert_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def uint8_transform(image_size: int) -> transforms.Compose:
    """One PIL image -> ``(3, S, S)`` uint8: RGB, bicubic resize of the short side, centre crop.

    The cache builder's transform (:func:`rcml_graph.backbones.pil_transform`) up to its last
    two steps; :meth:`BackboneFeatures.normalize` applies those (``/ 255``, mean/std) on the
    device, with the same arithmetic, so both give the same input tensor.
    """
    return transforms.Compose([
        _convert_rgb,
        transforms.Resize(image_size, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(image_size),
        transforms.PILToTensor(),
    ])


class ProductImages:
    """Resized and centre-cropped product images, kept as uint8.

    Args:
        image_size: side ``S`` of the backbone's input.
        paths: per product, its image file or None (no image).
        preload: decode every image once now and keep ``(M, 3, S, S)`` uint8 in memory
            (``3 * S * S`` bytes per image); otherwise decode the step's images each step.
        num_threads: decoding threads.

    A file that cannot be decoded leaves its product without an image (counted in
    :attr:`num_unreadable`), as in the feature cache.
    """

    def __init__(self, image_size: int, paths: Sequence[str | Path | None], preload: bool = True,
                 num_threads: int = 4) -> None:
        if image_size <= 0 or num_threads <= 0:
            raise ValueError(f"image_size={image_size}, num_threads={num_threads}; accepted: positive")
        self.image_size = image_size
        self.paths = [None if p is None else str(p) for p in paths]
        self.num_products = len(self.paths)
        self.num_threads = num_threads
        self.num_unreadable = 0
        self._transform = uint8_transform(image_size)
        self._table: Tensor | None = None
        self._row: Tensor | None = None  # (N,) row of each product in the table, -1 for none
        if preload:
            index = torch.arange(self.num_products)
            images, ok = self._decode(index)
            row = torch.full((self.num_products,), -1, dtype=torch.long)
            row[ok] = torch.arange(int(ok.sum()))
            self._table, self._row = images, row

    @classmethod
    def from_tensor(cls, images: Tensor, has_image: Tensor) -> ProductImages:
        """In-memory images (benchmarks, tests): ``images (N, 3, S, S)`` uint8, ``has_image (N,)``."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"images must be (N, 3, S, S); got {tuple(images.shape)}")
        if images.dtype != torch.uint8 or has_image.shape != images.shape[:1]:
            raise ValueError(f"images must be uint8 with has_image (N,); got {images.dtype}, "
                             f"has_image {tuple(has_image.shape)}")
        store = cls(images.shape[-1], [None] * images.shape[0], preload=False)
        has_image = has_image.bool().cpu()
        store._table = images[has_image].contiguous()
        store._row = torch.full((images.shape[0],), -1, dtype=torch.long)
        store._row[has_image] = torch.arange(int(has_image.sum()))
        return store

    @property
    def has_image(self) -> Tensor:
        """``(N,)`` bool: which products have a (readable, once preloaded) image."""
        if self._row is not None:
            return self._row >= 0
        return torch.tensor([p is not None for p in self.paths], dtype=torch.bool)

    def _read(self, path: str | None) -> Tensor | None:
        if path is None:
            return None
        try:
            with Image.open(path) as image:
                return self._transform(image)
        except Exception:  # noqa: BLE001 - PIL raises many types on damaged files: "no image"
            return None

    def _decode(self, index: Tensor) -> tuple[Tensor, Tensor]:
        paths = [self.paths[i] for i in index.tolist()]
        if self.num_threads > 1 and len(paths) > 1:
            with ThreadPoolExecutor(self.num_threads) as pool:
                decoded = list(pool.map(self._read, paths))
        else:
            decoded = [self._read(p) for p in paths]
        ok = torch.tensor([image is not None for image in decoded], dtype=torch.bool)
        self.num_unreadable += sum(p is not None and image is None for p, image in zip(paths, decoded))
        valid = [image for image in decoded if image is not None]
        size = self.image_size
        images = torch.stack(valid) if valid else torch.zeros(0, 3, size, size, dtype=torch.uint8)
        return images, ok

    def load(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(images (k, 3, S, S) uint8, ok (B,) bool)``: the images of the products ``index``
        that have one, in index order."""
        index = index.detach().to("cpu", torch.long)
        if self._table is not None and self._row is not None:
            row = self._row[index]
            ok = row >= 0
            return self._table.index_select(0, row[ok]), ok
        return self._decode(index)


class BackboneFeatures(nn.Module):
    r"""A backbone as a trainable :class:`~rcml_graph.training.sources.FeatureSource`.

    Each call encodes the given (unique) products once: images of the products that have one
    through the image tower, every text through the text tower. Products without an image get
    ``has_image = False`` and all-zero image features; text tokens are zeroed on padding and
    cut to the batch's longest text, as the frozen cache returns them.

    Args:
        backbone (Backbone): the towers (e.g. :func:`rcml_graph.backbones.build_backbone`).
        product_texts (Sequence[str]): the text of each of the ``N`` products.
        images (ProductImages): the products' images.
        relation_texts (Sequence[str]): the ``R`` relation descriptions.
        trainable_last_blocks (int, optional): blocks per tower left trainable
            (:func:`rcml_graph.backbones.freeze_backbone`; the projections into the shared
            space always train). (default: 1)

    Shapes:
        - **input:** index ``(B,)`` long product ids (unique).
        - **output:** :class:`ProductFeatures` with ``image_global (B, D)``,
          ``image_tokens (B, L_i, D_i)``, ``text_global (B, D)``, ``text_tokens (B, L_t, D_t)``,
          ``text_mask (B, L_t)``, ``has_image (B,)``; :meth:`encode_descriptions` gives ``(R, D)``.
    """

    def __init__(self, backbone: Backbone, product_texts: Sequence[str], images: ProductImages,
                 relation_texts: Sequence[str], trainable_last_blocks: int = 1) -> None:
        super().__init__()
        if images.num_products != len(product_texts):
            raise ValueError(f"images cover {images.num_products} products but product_texts has "
                             f"{len(product_texts)}; accepted: one entry per product")
        if images.image_size != backbone.image_size:
            raise ValueError(f"images are {images.image_size} px but the backbone takes "
                             f"{backbone.image_size} px; accepted: ProductImages(backbone.image_size, ...)")
        if not relation_texts:
            raise ValueError("relation_texts is empty; accepted: the graph's relation_text table")
        self.backbone = backbone
        self.images = images
        self.trainable_last_blocks = trainable_last_blocks
        self.num_trainable = freeze_backbone(backbone, trainable_last_blocks)
        self.num_products = len(product_texts)
        self.num_relations = len(relation_texts)
        self.embed_dim = backbone.embed_dim
        self.image_token_dim = backbone.image_token_dim
        self.text_token_dim = backbone.text_token_dim
        # Plain attributes, not buffers: they are inputs, not state, and stay out of checkpoints.
        self.text_ids, self.text_mask = self._tokenize(product_texts)  # (N, Lt) int32, bool
        self.relation_ids, self.relation_mask = self._tokenize(relation_texts)  # (R, Lt)
        param = next(backbone.parameters())
        mean = torch.tensor(backbone.image_mean, device=param.device)
        std = torch.tensor(backbone.image_std, device=param.device)
        self.register_buffer("image_mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", std.view(1, 3, 1, 1), persistent=False)
        self._description_cache: Tensor | None = None
        with torch.enable_grad():
            probe = self._encode_text(self.relation_ids[:1], self.relation_mask[:1], self.device)
        #: True when a text-tower parameter trains: descriptions are re-encoded every step.
        self.trains_descriptions = bool(probe.global_emb.requires_grad)
        self.train()

    def _tokenize(self, texts: Sequence[str]) -> tuple[Tensor, Tensor]:
        ids, masks = [], []
        for start in range(0, len(texts), _TOKENIZE_CHUNK):
            tokens = self.backbone.tokenize(list(texts[start:start + _TOKENIZE_CHUNK]))
            ids.append(tokens["input_ids"].to(torch.int32))
            masks.append(tokens["attention_mask"].bool())
        return torch.cat(ids), torch.cat(masks)

    @property
    def device(self) -> torch.device:
        return self.image_mean.device

    def train(self, mode: bool = True) -> BackboneFeatures:
        """Keeps the backbone in eval mode whatever ``mode`` (see the module docstring)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def normalize(self, images: Tensor) -> Tensor:
        """``(k, 3, S, S)`` uint8 -> normalised float32, as ``ToTensor`` + ``Normalize`` do."""
        return (images.float().div(255) - self.image_mean) / self.image_std

    def _encode_text(self, ids: Tensor, mask: Tensor, device: torch.device) -> Any:
        # Cut on the CPU to the batch's longest text first: descriptions are a few of CLIP's 77
        # token slots, and a step encodes each used description with gradients.
        tokens = trim_text_batch({"input_ids": ids, "attention_mask": mask})
        tokens = {"input_ids": tokens["input_ids"].to(device, torch.long, non_blocking=True),
                  "attention_mask": tokens["attention_mask"].to(device, non_blocking=True)}
        return self.backbone.encode_text(tokens)

    def product_features(
        self, index: Tensor, device: str | torch.device | None = None, dtype: torch.dtype = torch.float32
    ) -> ProductFeatures:
        if index.dim() != 1:
            raise ValueError(f"index must be 1-D product ids; got shape {tuple(index.shape)}")
        index_cpu = index.detach().to("cpu", torch.long)
        if index_cpu.numel() and (int(index_cpu.min()) < 0 or int(index_cpu.max()) >= self.num_products):
            raise ValueError(f"product index out of range [0, {self.num_products}): "
                             f"min {int(index_cpu.min())}, max {int(index_cpu.max())}")
        compute = self.device
        out_device = torch.device(device) if device is not None else compute
        num = index_cpu.numel()

        text = self._encode_text(self.text_ids[index_cpu], self.text_mask[index_cpu], compute)
        mask = text.mask.bool()  # (B, Lt)
        length = max(int(mask.sum(dim=1).max()), 1) if num else 0
        text_tokens = (text.tokens * mask.unsqueeze(-1).to(text.tokens.dtype))[:, :length]  # (B, L, Dt)

        pixels, has_image = self.images.load(index_cpu)  # (k, 3, S, S) uint8, (B,)
        rows = torch.nonzero(has_image).squeeze(1).to(compute)  # (k,)
        if rows.numel():
            image = self.backbone.encode_image(self.normalize(pixels.to(compute, non_blocking=True)))
            image_global = image.global_emb.new_zeros(num, image.global_emb.shape[1]).index_copy(
                0, rows, image.global_emb)  # (B, D)
            image_tokens = image.tokens.new_zeros(num, *image.tokens.shape[1:]).index_copy(
                0, rows, image.tokens)  # (B, Li, Di)
        else:
            num_tokens = self._num_image_tokens()
            image_global = text.global_emb.new_zeros(num, self.embed_dim)
            image_tokens = text.global_emb.new_zeros(num, num_tokens, self.image_token_dim)

        def move(tensor: Tensor) -> Tensor:
            return tensor.to(device=out_device, dtype=dtype)

        return ProductFeatures(
            image_global=move(image_global),
            image_tokens=move(image_tokens),
            text_global=move(text.global_emb),
            text_tokens=move(text_tokens),
            text_mask=mask[:, :length].to(out_device),
            has_image=has_image.to(out_device),
        )

    def _num_image_tokens(self) -> int:
        if not hasattr(self, "_image_token_count"):
            with torch.no_grad():
                size = self.backbone.image_size
                probe = self.backbone.encode_image(torch.zeros(1, 3, size, size, device=self.device))
            self._image_token_count = int(probe.tokens.shape[1])
        return self._image_token_count

    def encode_descriptions(self, relation_index: Tensor | None = None,
                            device: str | torch.device | None = None) -> Tensor:
        """``(R, D)`` text-tower embeddings of the relation descriptions.

        With ``relation_index``, only those rows are encoded (once each, with gradients when
        the text tower trains) and the other rows are zero: a training step passes the
        descriptions its pairs use. Without it every row is encoded. A frozen text tower
        (:attr:`trains_descriptions` False) encodes the table once and returns it thereafter.
        """
        out_device = torch.device(device) if device is not None else self.device
        if not self.trains_descriptions:
            if self._description_cache is None:
                with torch.no_grad():
                    self._description_cache = self._encode_all()
            return self._description_cache.to(out_device)
        if relation_index is None:
            return self._encode_all().to(out_device)
        used = torch.unique(relation_index.detach().to("cpu", torch.long))  # (U,)
        if used.numel() and (int(used[0]) < 0 or int(used[-1]) >= self.num_relations):
            raise ValueError(f"relation index out of range [0, {self.num_relations}): "
                             f"min {int(used[0])}, max {int(used[-1])}")
        encoded = self._encode_text(self.relation_ids[used], self.relation_mask[used], self.device).global_emb
        table = encoded.new_zeros(self.num_relations, encoded.shape[1])
        return table.index_copy(0, used.to(encoded.device), encoded).to(out_device)  # (R, D)

    def _encode_all(self) -> Tensor:
        parts = [
            self._encode_text(self.relation_ids[start:start + _DESCRIPTION_CHUNK],
                              self.relation_mask[start:start + _DESCRIPTION_CHUNK], self.device).global_emb
            for start in range(0, self.num_relations, _DESCRIPTION_CHUNK)
        ]
        return torch.cat(parts).float()


def step_description_table(head: nn.Module, source: object, description_table: Tensor | None,
                           relation_index: Tensor | None = None,
                           device: str | torch.device | None = None) -> Tensor | None:
    """The description table a training step (or a validation) uses.

    ``description_table`` unchanged unless ``source`` is a :class:`BackboneFeatures` whose text
    tower trains and ``head`` reads descriptions; then the descriptions re-encoded now
    (those in ``relation_index`` only, when given).
    """
    if not isinstance(source, BackboneFeatures) or not source.trains_descriptions:
        return description_table
    if not isinstance(head, RCMLHead) or head.global_only or head.relation_encoder.mode != "description":
        return description_table
    return source.encode_descriptions(relation_index, device=device)


def build_finetune_source(
    product_texts: Sequence[str],
    relation_texts: Sequence[str],
    image_paths: Sequence[str | Path | None],
    backbone_name: str,
    *,
    trainable_last_blocks: int = 1,
    pretrained: str | None = None,
    checkpoint: str | None = None,
    embed_dim: int | None = None,
    seed: int = 0,
    preload_images: bool = True,
    device: str | torch.device = "cpu",
    quick_gelu: bool | None = None,
) -> BackboneFeatures:
    """Build the backbone ``backbone_name`` as the feature cache does (weights drawn right after
    ``torch.manual_seed(seed)``, without disturbing the caller's RNG), freeze all but its last
    ``trainable_last_blocks`` blocks per tower and wrap it with the products' texts and images.

    Args:
        product_texts: ``data["product"].text``.
        relation_texts: ``data.relation_text``.
        image_paths: per product, its image file or None
            (:func:`rcml_graph.feature_cache.product_image_paths`).
        backbone_name: a preset of :func:`rcml_graph.backbones.build_backbone`.
        trainable_last_blocks: blocks per tower left trainable.
        pretrained, checkpoint, embed_dim, quick_gelu: the preset's weight options.
        seed: the backbone's init seed (``model.init_seed``; the cache's ``features.seed``).
        preload_images: decode every image once into memory (see :class:`ProductImages`).
        device: where the backbone runs.
    """
    if len(image_paths) != len(product_texts):
        raise ValueError(f"image_paths has {len(image_paths)} entries for {len(product_texts)} "
                         "products; accepted: one entry (a path or None) per product")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = build_backbone(backbone_name, pretrained=pretrained, checkpoint=checkpoint,
                                  embed_dim=embed_dim, device=device, quick_gelu=quick_gelu)
    images = ProductImages(backbone.image_size, image_paths, preload=preload_images)
    if images.num_unreadable:
        log.warning("%d product images could not be decoded; those products are text-only",
                    images.num_unreadable)
    source = BackboneFeatures(backbone, product_texts, images, relation_texts, trainable_last_blocks)
    log.info("fine-tuning %s: last %d block(s) per tower, %d trainable parameters, %d/%d products "
             "with an image", backbone_name, trainable_last_blocks, source.num_trainable,
             int(images.has_image.sum()), images.num_products)
    return source


def load_finetune_source(spec: dict[str, Any], modules_state: dict[str, Tensor],
                         device: str | torch.device = "cpu", preload_images: bool = False) -> BackboneFeatures:
    """Rebuild the fine-tuned source of a checkpoint: ``spec`` is its config's ``finetune``
    entry (:func:`finetune_spec`), ``modules_state`` its ``modules`` (the ``backbone.*`` keys
    hold the fine-tuned weights)."""
    from rcml_graph.data.graph_io import load_graph
    from rcml_graph.feature_cache import product_image_paths

    data = load_graph(spec["processed_dir"])
    product_ids = getattr(data["product"], "product_id", None) or data["product"].asin
    image_paths, _ = product_image_paths(product_ids, spec["image_dir"])
    source = build_finetune_source(
        list(data["product"].text), list(data.relation_text), image_paths, spec["name"],
        trainable_last_blocks=int(spec["trainable_last_blocks"]), pretrained=spec.get("pretrained"),
        checkpoint=spec.get("checkpoint"), embed_dim=spec.get("embed_dim"), seed=int(spec.get("seed") or 0),
        preload_images=preload_images, device=device, quick_gelu=spec_quick_gelu(spec))
    prefix = "backbone."
    weights = {k[len(prefix):]: v for k, v in modules_state.items() if k.startswith(prefix)}
    if not weights:
        raise ValueError("the checkpoint has no backbone.* weights; accepted: a checkpoint of a "
                         "train.backbone=finetune run")
    source.load_state_dict(weights)
    return source


def finetune_spec(backbone_name: str, processed_dir: str | Path, image_dir: str | Path, *,
                  trainable_last_blocks: int, pretrained: str | None = None,
                  checkpoint: str | None = None, embed_dim: int | None = None, seed: int = 0,
                  quick_gelu: bool | None = None) -> dict[str, Any]:
    """What :func:`load_finetune_source` needs, JSON-serialisable (stored in the run config)."""
    return {"name": backbone_name, "processed_dir": str(processed_dir), "image_dir": str(image_dir),
            "trainable_last_blocks": trainable_last_blocks, "pretrained": pretrained,
            "checkpoint": checkpoint, "embed_dim": embed_dim, "seed": seed, "quick_gelu": quick_gelu}
