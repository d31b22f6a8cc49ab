"""train.backbone=finetune: the backbone as a trainable feature source (tiny backbone, demo graph)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rcml_graph.backbones import build_backbone
from rcml_graph.cli import CONFIG_DIR, register_configs
from rcml_graph.data.demo import generate_demo
from rcml_graph.data.graph import GraphSettings
from rcml_graph.data.images import ImageManifest, ImageRecord, write_manifest
from rcml_graph.data.pipeline import build_domain
from rcml_graph.feature_cache import FeatureCache, build_feature_cache
from rcml_graph.losses import RCMLLoss
from rcml_graph.model.head import RCMLHead
from rcml_graph.sampling import RelationPairSampler
from rcml_graph.train import train
from rcml_graph.training import build_optimizer, load_checkpoint, pair_loss
from rcml_graph.training.encoder import ConditionedEncoder
from rcml_graph.training.finetune import (
    BackboneFeatures,
    ProductImages,
    build_finetune_source,
    step_description_table,
)

NUM_PRODUCTS = 150
FIELDS = ("image_global", "image_tokens", "text_global", "text_tokens", "text_mask", "has_image")
# tiny has 2 blocks per tower; with trainable_last_blocks=1 exactly these train (the last
# block, the norm after it, and the projections into the shared space).
TRAINABLE_PREFIXES = ("image_blocks.1.", "text_blocks.1.", "image_norm.", "text_norm.",
                      "image_proj.", "text_proj.")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/training/conftest.py


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    """A 150-product demo domain with an image manifest and the tiny backbone's float32 cache."""
    root = tmp_path_factory.mktemp("data")
    raw = root / "demo" / "raw"
    generate_demo(raw, num_products=NUM_PRODUCTS, seed=0, images=True, image_size=64)
    data = build_domain(raw / "meta_Demo.json.gz", root / "demo" / "processed", GraphSettings(),
                        show_progress=False).data
    image_dir = raw / "images"
    records = {pid: ImageRecord("ok", path=f"{pid}.jpg") if (image_dir / f"{pid}.jpg").is_file()
               else ImageRecord("missing") for pid in data["product"].product_id}
    write_manifest(ImageManifest(records), image_dir / "manifest.json")
    paths = [str(image_dir / r.path) if r.path else None for r in records.values()]
    torch.manual_seed(0)
    build_feature_cache(data, build_backbone("tiny"), root / "demo" / "features" / "tiny", image_paths=paths,
                        data_hash="test", model_key={"name": "tiny", "seed": 0}, batch_size=64,
                        num_workers=0, dtype="float32", show_progress=False)
    return {"root": root, "data": data, "paths": paths, "image_dir": image_dir,
            "cache": FeatureCache.open(root / "demo" / "features" / "tiny")}


def make_source(demo: dict, trainable_last_blocks: int = 1) -> BackboneFeatures:
    data = demo["data"]
    return build_finetune_source(list(data["product"].text), list(data.relation_text), demo["paths"], "tiny",
                                 trainable_last_blocks=trainable_last_blocks, seed=0)


def make_cfg(demo: dict, run_dir: Path, *overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[
            f"paths.data_root={demo['root']}", f"domain.image_dir={demo['image_dir']}", "model=tiny",
            "train=debug", f"train.run_dir={run_dir}", "show_progress=false", "train.backbone=finetune",
            "train.trainable_last_blocks=1", "train.validate_before=false", "train.patience=null",
            *overrides])


def test_untrained_source_reproduces_the_frozen_cache(demo):
    """Same seed, same preprocessing: the fine-tune source's features are the cache's."""
    source = make_source(demo)
    has_image = demo["cache"].has_image
    index = torch.stack([*torch.nonzero(has_image)[:3, 0], *torch.nonzero(~has_image)[:2, 0]])[[0, 3, 1, 4, 2]]
    cached, tuned = demo["cache"].product_features(index), source.product_features(index)
    for name in FIELDS:
        expected, got = getattr(cached, name), getattr(tuned, name)
        assert got.shape == expected.shape, name
        torch.testing.assert_close(got.detach().float(), expected.float(), atol=1e-5, rtol=1e-5, msg=name)
    no_image = torch.nonzero(~tuned.has_image).flatten()
    assert no_image.numel() > 0 and tuned.image_global[no_image].abs().sum() == 0
    torch.testing.assert_close(source.encode_descriptions().detach(),
                               demo["cache"].relation_features().global_emb, atol=1e-5, rtol=1e-5)


def test_product_images_from_tensor_and_bad_input():
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    store = ProductImages.from_tensor(images, torch.tensor([True, False, True]))
    pixels, ok = store.load(torch.tensor([2, 1, 0]))
    assert ok.tolist() == [True, False, True]
    assert torch.equal(pixels, images[[2, 0]])
    with pytest.raises(ValueError, match="uint8"):
        ProductImages.from_tensor(images.float(), torch.ones(3, dtype=torch.bool))


def _one_batch(demo: dict):
    sampler = RelationPairSampler(demo["data"], batch_size=16, positives_per_anchor=2, num_hard_negatives=0,
                                  include_self_pairs=True, seed=0)
    return sampler.batch_at(0, 0)


def _head(source: BackboneFeatures) -> RCMLHead:
    torch.manual_seed(0)
    return RCMLHead(source.embed_dim, source.image_token_dim, source.text_token_dim, d_model=32, num_heads=2)


def test_only_last_blocks_projections_and_head_get_gradients(demo):
    source = make_source(demo, trainable_last_blocks=1)
    head = _head(source)
    batch = _one_batch(demo)
    table = source.encode_descriptions(batch.desc_id)
    loss, _, _ = pair_loss(head, RCMLLoss(), batch, source, table, source.num_relations)
    loss.backward()
    for name, param in source.backbone.named_parameters():
        trainable = name.startswith(TRAINABLE_PREFIXES)
        assert param.requires_grad == trainable, name
        assert (param.grad is not None and param.grad.abs().sum() > 0) == trainable, name
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)
    assert source.trains_descriptions  # text_proj trains: descriptions are re-encoded each step
    # Only the step's descriptions are encoded; the other rows stay zero.
    used = torch.unique(batch.desc_id)
    assert table[used].abs().sum(dim=1).gt(0).all()
    unused = torch.ones(source.num_relations, dtype=torch.bool)
    unused[used] = False
    assert unused.any() and table[unused].abs().sum() == 0


def test_frozen_text_tower_encodes_descriptions_once():
    torch.manual_seed(0)
    backbone = build_backbone("tiny")
    images = ProductImages.from_tensor(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.tensor([True, False]))
    texts, relations = ["a red ball", "a blue cup"], ["rel one", "rel two", "rel three"]
    # With no block trainable, text_proj (outside the tower layout) still trains.
    assert BackboneFeatures(backbone, texts, images, relations, trainable_last_blocks=0).trains_descriptions
    backbone.text_proj.weight.requires_grad_(False)
    source = BackboneFeatures(backbone, texts, images, relations, trainable_last_blocks=0)
    assert not source.trains_descriptions
    table = source.encode_descriptions(torch.tensor([1]))
    assert table.shape == (3, 32) and not table.requires_grad
    assert table.abs().sum(dim=1).gt(0).all()  # the whole cached table, not only row 1
    assert source.encode_descriptions() is table
    head = _head(source)
    given = torch.randn(3, 32)
    assert step_description_table(head, source, given, torch.tensor([0])) is given
    features = source.product_features(torch.tensor([1, 0]))
    assert features.has_image.tolist() == [False, True]
    assert features.image_global[0].abs().sum() == 0 and features.image_global[1].abs().sum() > 0


def test_a_few_steps_lower_the_loss_and_change_only_trainable_weights(demo):
    source = make_source(demo, trainable_last_blocks=1)
    head = _head(source)
    initial = {k: v.clone() for k, v in source.backbone.state_dict().items()}
    modules = torch.nn.ModuleDict({"head": head, "backbone": source})
    optimizer = build_optimizer(modules, lr=2e-3, weight_decay=0.0)
    batch = _one_batch(demo)
    losses = []
    for _ in range(6):
        table = source.encode_descriptions(batch.desc_id)
        loss, _, _ = pair_loss(head, RCMLLoss(), batch, source, table, source.num_relations)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.05, losses
    for name, value in source.backbone.state_dict().items():
        assert torch.equal(value, initial[name]) != name.startswith(TRAINABLE_PREFIXES), name


def test_train_resume_restores_the_backbone_and_evaluation_uses_it(demo, tmp_path):
    # Self pairs keep an epoch at 3 steps; relation pairs go through the same source above.
    common = ("train.epochs=2", "train.max_steps=null", "train.pairs=self", "train.batch_size=50",
              "train.lr=3e-3", "train.val_max_queries=100")
    full = train(make_cfg(demo, tmp_path / "full", *common))
    killed = train(make_cfg(demo, tmp_path / "split", *common, "train.stop_after_epoch=1"))
    assert killed["interrupted"] == 1.0
    resumed = train(make_cfg(demo, tmp_path / "split", *common, "train.resume=latest"))
    assert resumed["val/hit@5"] == full["val/hit@5"] and resumed["step"] == full["step"] == 6
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert a["modules"].keys() == b["modules"].keys()
    assert all(torch.equal(a["modules"][k], b["modules"][k]) for k in a["modules"])
    tuned_key = "backbone.backbone.text_blocks.1.linear1.weight"
    frozen_key = "backbone.backbone.text_blocks.0.linear1.weight"
    fresh = make_source(demo).state_dict()
    assert not torch.equal(a["modules"][tuned_key], fresh[tuned_key[len("backbone."):]])
    assert torch.equal(a["modules"][frozen_key], fresh[frozen_key[len("backbone."):]])
    config = json.loads(a["config"])
    assert config["cache_dir"] is None and config["finetune"]["trainable_last_blocks"] == 1

    # Evaluation embeds products with the fine-tuned backbone, not the frozen cache.
    path = tmp_path / "full" / "checkpoints" / "last.pt"
    encoder = ConditionedEncoder.from_checkpoint(path)
    assert isinstance(encoder.source, BackboneFeatures)
    assert torch.equal(encoder.source.backbone.text_blocks[1].linear1.weight, a["modules"][tuned_key])
    products = torch.arange(10)
    views = encoder.encode_global(products)
    with torch.no_grad():
        cached_text = encoder.head.text_projection(demo["cache"].product_features(products).text_global)
        tuned_text = encoder.head.text_projection(encoder.source.product_features(products).text_global)
    torch.testing.assert_close(views.text, torch.nn.functional.normalize(tuned_text, dim=-1))
    assert not torch.allclose(views.text, torch.nn.functional.normalize(cached_text, dim=-1), atol=1e-3)
    # The checkpoint's description table is the fine-tuned text tower's.
    with torch.no_grad():
        torch.testing.assert_close(encoder.description_table, encoder.source.encode_descriptions())
    with pytest.raises(ValueError, match="cache_dir"):
        ConditionedEncoder.from_checkpoint(path, cache_dir=demo["root"] / "demo" / "features" / "tiny")


def test_cpu_bf16_autocast_fine_tunes_relation_pairs(demo, tmp_path, monkeypatch):
    seen: list[bool] = []
    encode_views = RCMLHead.encode_views

    def spy(self, *args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return encode_views(self, *args, **kwargs)

    monkeypatch.setattr(RCMLHead, "encode_views", spy)
    metrics = train(make_cfg(demo, tmp_path, "train.epochs=1", "train.max_steps=2", "train.batch_size=16",
                             "train.val_max_queries=20", "train.amp_cpu=true"))
    assert True in seen  # the head ran inside the step's bf16 autocast region (the backbone runs in it too)
    assert metrics["step"] == 2 and math.isfinite(metrics["train/epoch_loss"])
    assert not math.isnan(metrics["val/hit@5"])


def test_backbone_lr_puts_the_backbone_in_its_own_groups_on_the_same_schedule(demo, tmp_path):
    common = ("train.epochs=1", "train.max_steps=1", "train.pairs=self", "train.batch_size=50",
              "train.lr=3e-3", "train.min_lr_ratio=0.5", "train.val_max_queries=20")
    train(make_cfg(demo, tmp_path / "split", *common, "train.backbone_lr=1e-4"))
    train(make_cfg(demo, tmp_path / "default", *common))
    trainable = sum(p.requires_grad for p in make_source(demo).parameters())

    def groups(run: str) -> list[dict]:
        return load_checkpoint(tmp_path / run / "checkpoints" / "last.pt")["optimizer"]["param_groups"]

    split = groups("split")
    base = {group["initial_lr"] for group in split}
    assert base == {3e-3, 1e-4}
    backbone_params = sum(len(g["params"]) for g in split if g["initial_lr"] == 1e-4)
    assert backbone_params == trainable > 0
    # one schedule: after the run's last step every group is at min_lr_ratio of its rate
    assert all(abs(g["lr"] - 0.5 * g["initial_lr"]) < 1e-12 for g in split)
    assert {group["initial_lr"] for group in groups("default")} == {3e-3}

    # A checkpoint resumes only with its own grouping.
    with pytest.raises(ValueError, match="optimizer parameter groups"):
        train(make_cfg(demo, tmp_path / "other", *common, "train.epochs=2", "train.max_steps=2",
                       f"train.resume={tmp_path / 'split' / 'checkpoints' / 'last.pt'}"))


@pytest.mark.parametrize("value", ["0", "-1e-4"])
def test_backbone_lr_must_be_positive(demo, tmp_path, value):
    with pytest.raises(ValueError, match=rf"train.backbone_lr={float(value)}; accepted: a positive"):
        train(make_cfg(demo, tmp_path, f"train.backbone_lr={value}"))
