import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch_geometric.data import HeteroData

from rcml_graph.backbones import build_backbone
from rcml_graph.feature_cache import (
    MANIFEST_JSON,
    PROGRESS_JSON,
    FeatureCache,
    build_feature_cache,
    cache_dir_for,
    product_image_paths,
)
from rcml_graph.relations import SELF_RELATION_TEXT

NUM_PRODUCTS = 10
# Byte-level tiny tokenizer (context fixed at 32 here): n bytes give n + 2 tokens, at most 32.
TEXTS = ["ab", "tent", "", "x" * 40, "camp stove", "é", "sleeping bag", "b" * 29, "c" * 30, "mug"]
EXPECTED_LENGTHS = [4, 6, 2, 32, 12, 4, 14, 31, 32, 5]
RELATION_TEXTS = [SELF_RELATION_TEXT, "also bought", "viewed together by hikers"]
NO_IMAGE = {1, 4, 7}  # no path
BROKEN_IMAGE = 9  # a path to bytes that are not an image
ARRAY_NAMES = [
    "product_image_global", "product_image_tokens", "product_has_image", "product_text_global",
    "product_text_tokens", "product_text_offsets", "relation_global", "relation_tokens",
    "relation_offsets",
]


def make_graph() -> HeteroData:
    data = HeteroData()
    data["product"].num_nodes = NUM_PRODUCTS
    data["product"].text = list(TEXTS)
    data["product"].product_id = [f"P{i}" for i in range(NUM_PRODUCTS)]
    data["product"].category_id = torch.full((NUM_PRODUCTS,), -1)
    data.relation_text = list(RELATION_TEXTS)
    data.relation_kind_of_desc = torch.tensor([-1, 0, 1])
    return data


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory) -> list[str | None]:
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths: list[str | None] = []
    for i in range(NUM_PRODUCTS):
        if i in NO_IMAGE:
            paths.append(None)
            continue
        path = folder / f"P{i}.jpg"
        if i == BROKEN_IMAGE:
            path.write_bytes(b"not a jpeg at all")
        else:  # two sizes, so the tensor decoder resizes two groups
            size = (48, 40) if i % 2 else (40, 40)
            Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone("tiny", context_length=32).eval()


def build(cache_dir: Path, backbone, image_paths, **kwargs) -> Path:
    options = dict(image_paths=image_paths, data_hash="d" * 64, model_key={"name": "tiny", "seed": 0},
                   batch_size=2, shard_size=3, num_workers=0, show_progress=False)
    options.update(kwargs)
    return build_feature_cache(make_graph(), backbone, cache_dir, **options)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, backbone, image_paths) -> FeatureCache:
    return FeatureCache.open(build(tmp_path_factory.mktemp("cache"), backbone, image_paths))


def arrays(cache_dir: Path) -> dict[str, np.ndarray]:
    return {name: np.load(cache_dir / f"{name}.npy") for name in ARRAY_NAMES}


def test_shapes_dtypes_and_products_without_images(cache):
    assert (cache.num_products, cache.num_relations) == (NUM_PRODUCTS, 3)
    assert (cache.embed_dim, cache.image_token_dim, cache.text_token_dim) == (32, 32, 32)
    assert cache.num_image_tokens == 16  # (32 / 8) ** 2 patches
    assert cache.manifest["build"]["storage_dtype"] == "float16"
    assert np.load(cache.cache_dir / "product_image_tokens.npy", mmap_mode="r").dtype == np.float16
    feats = cache.product_features(torch.arange(NUM_PRODUCTS))
    assert feats.image_tokens.shape == (NUM_PRODUCTS, 16, 32)
    assert feats.image_tokens.dtype == torch.float32
    assert feats.text_tokens.shape == (NUM_PRODUCTS, 32, 32)
    expected_has_image = [i not in NO_IMAGE and i != BROKEN_IMAGE for i in range(NUM_PRODUCTS)]
    assert feats.has_image.tolist() == expected_has_image
    assert cache.manifest["num_with_image"] == 6
    missing = ~feats.has_image
    assert torch.count_nonzero(feats.image_tokens[missing]) == 0
    assert torch.count_nonzero(feats.image_global[missing]) == 0
    assert torch.all(feats.image_global[feats.has_image].abs().sum(dim=1) > 0)
    stats = json.loads((cache.cache_dir / "build_stats.json").read_bytes())
    assert stats["images"]["images"] == 6 and stats["images"]["unreadable"] == 1


def test_text_offsets_follow_the_tokenizer_masks(cache, backbone):
    offsets = np.load(cache.cache_dir / "product_text_offsets.npy")
    assert np.diff(offsets).tolist() == EXPECTED_LENGTHS
    masks = backbone.tokenize(TEXTS)["attention_mask"]
    assert masks.sum(dim=1).tolist() == EXPECTED_LENGTHS
    # A batch is padded to its own longest text, not the context length.
    feats = cache.product_features(torch.tensor([5, 0, 2]))
    assert feats.text_tokens.shape == (3, 4, 32)
    assert feats.text_mask.tolist() == [[True] * 4, [True] * 4, [True, True, False, False]]
    assert torch.count_nonzero(feats.text_tokens[2, 2:]) == 0
    assert cache.relation_features().mask.sum(dim=1).tolist() == [32, 13, 27]  # 48 bytes cut to 32


def test_cached_values_equal_a_direct_forward(cache, backbone, image_paths):
    with_image = [i for i, p in enumerate(image_paths) if p is not None and i != BROKEN_IMAGE]
    with torch.inference_mode():
        images = torch.stack([backbone.preprocess(Image.open(image_paths[i])) for i in with_image])
        direct_image = backbone.encode_image(images)
        direct_text = backbone.encode_text(backbone.tokenize(TEXTS))
        direct_rel = backbone.encode_text(backbone.tokenize(RELATION_TEXTS))
    feats = cache.product_features(torch.arange(NUM_PRODUCTS))
    tol = dict(atol=2e-3, rtol=2e-3)  # float16 storage
    torch.testing.assert_close(feats.image_global[with_image], direct_image.global_emb, **tol)
    torch.testing.assert_close(feats.image_tokens[with_image], direct_image.tokens, **tol)
    torch.testing.assert_close(feats.text_global, direct_text.global_emb, **tol)
    assert torch.equal(feats.text_mask, direct_text.mask)
    torch.testing.assert_close(feats.text_tokens, direct_text.tokens * direct_text.mask[..., None], **tol)
    rel = cache.relation_features(torch.tensor([2, 0]))
    torch.testing.assert_close(rel.global_emb, direct_rel.global_emb[[2, 0]], **tol)
    torch.testing.assert_close(rel.tokens[0], direct_rel.tokens[2, : rel.tokens.shape[1]], **tol)


def test_tensor_decoder_agrees_with_pil_decoder(cache, tmp_path, backbone, image_paths):
    # Also the DataLoader-worker path (num_workers=2 read the bytes).
    other = FeatureCache.open(build(tmp_path, backbone, image_paths, image_decoder="tensor",
                                    dtype="float32", num_workers=2))
    index = torch.arange(NUM_PRODUCTS)
    a, b = cache.product_features(index), other.product_features(index)
    assert torch.equal(a.has_image, b.has_image)
    torch.testing.assert_close(a.text_global, b.text_global, atol=2e-3, rtol=2e-3)
    # Different resize implementations (PIL vs. torch bicubic): close, not identical.
    torch.testing.assert_close(a.image_global, b.image_global, atol=0.15, rtol=0.05)


def test_resumed_build_equals_uninterrupted_bitwise(tmp_path, backbone, image_paths, monkeypatch):
    # shard_size 3: shards [0-2], [3-5], [6-8], [9]; batch_size 1: one image per forward.
    full = build(tmp_path / "full", backbone, image_paths, batch_size=1)
    partial = tmp_path / "partial"
    build(partial, backbone, image_paths, batch_size=1, max_shards=1)
    assert not (partial / MANIFEST_JSON).exists()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        FeatureCache.open(partial)
    progress = json.loads((partial / PROGRESS_JSON).read_bytes())
    assert progress["image_shards"] == [0] and progress["text_shards"] == [0]

    # Then a kill in the middle of shard 1: product 3 is written, product 5's forward fails.
    real_encode, calls = backbone.encode_image, []

    def crashing(images):
        calls.append(len(images))
        if len(calls) == 3:  # 1: the shape probe, 2: product 3, 3: product 5
            raise RuntimeError("simulated kill")
        return real_encode(images)

    monkeypatch.setattr(backbone, "encode_image", crashing)
    with pytest.raises(RuntimeError, match="simulated kill"):
        build(partial, backbone, image_paths, batch_size=1)
    monkeypatch.undo()
    assert json.loads((partial / PROGRESS_JSON).read_bytes())["image_shards"] == [0]
    half_written = np.load(partial / "product_image_global.npy")
    assert np.any(half_written[3] != 0) and not np.any(half_written[5] != 0)

    build(partial, backbone, image_paths, batch_size=1)
    stats = json.loads((partial / "build_stats.json").read_bytes())
    assert stats["resumed"] and stats["images"]["images"] == 4  # products 3, 5, 6, 8 (9 broken)
    FeatureCache.open(partial)
    expected, got = arrays(full), arrays(partial)
    for name in ARRAY_NAMES:
        assert got[name].dtype == expected[name].dtype
        assert np.array_equal(got[name], expected[name]), name
    assert not list(partial.glob("_*.npy"))  # tokenizer scratch files removed


def test_stale_cache_is_refused_naming_both_hashes(cache):
    with pytest.raises(ValueError, match=r"built for graph dddddddddddd, the graph is now "
                                         r"eeeeeeeeeeee: rerun rcml_graph\.features"):
        FeatureCache.open(cache.cache_dir, data_hash="e" * 64)
    with pytest.raises(ValueError, match=r"name: built 'tiny', now 'offline'"):
        FeatureCache.open(cache.cache_dir, model_key={"name": "offline"})
    assert FeatureCache.open(cache.cache_dir, data_hash="d" * 64, model_key={"name": "tiny"})


def test_rebuild_for_new_data_starts_over(tmp_path, backbone, image_paths):
    build(tmp_path, backbone, image_paths)
    before = (tmp_path / "product_text_global.npy").stat().st_mtime_ns
    build(tmp_path, backbone, image_paths)  # same key: nothing to do
    assert (tmp_path / "product_text_global.npy").stat().st_mtime_ns == before
    build(tmp_path, backbone, image_paths, data_hash="f" * 64)
    assert json.loads((tmp_path / "build_stats.json").read_bytes())["resumed"] is False
    assert FeatureCache.open(tmp_path).manifest["data_hash"] == "f" * 64


def test_open_refuses_missing_and_damaged_caches(tmp_path, backbone, image_paths):
    with pytest.raises(FileNotFoundError, match="no feature cache"):
        FeatureCache.open(tmp_path / "nothing")
    build(tmp_path, backbone, image_paths)
    with open(tmp_path / "product_text_tokens.npy", "r+b") as handle:
        handle.truncate(200)
    with pytest.raises(ValueError, match="product_text_tokens.npy is missing or changed"):
        FeatureCache.open(tmp_path)


def test_bad_arguments_are_named(tmp_path, backbone, image_paths, cache):
    with pytest.raises(ValueError, match="unknown dtype 'int8'; accepted: float16, bfloat16"):
        build(tmp_path, backbone, image_paths, dtype="int8")
    with pytest.raises(ValueError, match="image_paths has 2 entries"):
        build(tmp_path, backbone, image_paths[:2])
    with pytest.raises(ValueError, match="unknown image_decoder 'gpu'"):
        build(tmp_path, backbone, image_paths, image_decoder="gpu")
    with pytest.raises(ValueError, match=r"product index out of range \[0, 10\)"):
        cache.product_features(torch.tensor([3, 10]))


def test_bfloat16_storage_roundtrips(tmp_path, backbone, image_paths, cache):
    other = FeatureCache.open(build(tmp_path, backbone, image_paths, dtype="bfloat16"))
    assert np.load(tmp_path / "product_text_global.npy", mmap_mode="r").dtype == np.uint16
    a = cache.product_features(torch.arange(NUM_PRODUCTS))
    b = other.product_features(torch.arange(NUM_PRODUCTS), dtype=torch.bfloat16)
    assert b.text_global.dtype == torch.bfloat16
    torch.testing.assert_close(b.text_global.float(), a.text_global, atol=2e-2, rtol=1e-2)


def test_entry_point_builds_resumes_and_detects_new_images(tmp_path):
    from hydra import compose, initialize_config_dir

    from rcml_graph.cli import CONFIG_DIR
    from rcml_graph.data.graph import GraphSettings
    from rcml_graph.data.images import ImageManifest, ImageRecord, write_manifest
    from rcml_graph.data.pipeline import build_domain
    from rcml_graph.features import run
    from tests.data.amazon_samples import write_2018

    outcome = build_domain(write_2018(tmp_path / "meta.json.gz"), tmp_path / "demo" / "processed",
                           GraphSettings(), show_progress=False)
    product_ids = outcome.data["product"].product_id
    image_dir = tmp_path / "demo" / "images"
    image_dir.mkdir(parents=True)
    Image.new("RGB", (50, 40), (200, 10, 10)).save(image_dir / "first.jpg")
    records = {pid: ImageRecord(status="missing") for pid in product_ids}
    records[product_ids[0]] = ImageRecord(status="ok", path="first.jpg")
    write_manifest(ImageManifest(records=records), image_dir / "manifest.json")

    overrides = ["domain=demo", "model=tiny", f"paths.data_root={tmp_path}", "show_progress=false",
                 "features.num_workers=0", "features.shard_size=1", "features.device=cpu"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        partial = run(compose(config_name="config", overrides=[*overrides, "features.max_shards=1"]))
        summary = run(compose(config_name="config", overrides=overrides))
    assert not partial["complete"] and summary["complete"]
    assert summary["build_stats"]["resumed"]
    cache_dir = cache_dir_for(tmp_path, "demo", "tiny")
    assert summary["cache_dir"] == str(cache_dir)
    assert summary["products"] == len(product_ids) and summary["products_with_image"] == 1
    cache = FeatureCache.open(cache_dir, data_hash=summary["data_hash"])
    assert cache.has_image.tolist() == [True] + [False] * (len(product_ids) - 1)

    records[product_ids[0]] = ImageRecord(status="broken")  # the image set changed
    write_manifest(ImageManifest(records=records), image_dir / "manifest.json")
    paths, images_sha = product_image_paths(product_ids, image_dir)
    assert paths == [None] * len(product_ids)
    from rcml_graph.data.graph_io import read_manifest
    from rcml_graph.feature_cache import feature_data_hash

    new_hash = feature_data_hash(read_manifest(tmp_path / "demo" / "processed")["files"], images_sha)
    with pytest.raises(ValueError, match=f"built for graph {summary['data_hash'][:12]}, the graph "
                                         f"is now {new_hash[:12]}"):
        FeatureCache.open(cache_dir, data_hash=new_hash)
