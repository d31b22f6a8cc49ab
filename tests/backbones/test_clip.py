import pytest
import torch

from rcml_graph.backbones import build_backbone
from rcml_graph.backbones import clip as clip_module
from rcml_graph.backbones.clip import resolve_clip_weights


def _no_download(cfg, cache_dir):
    raise AssertionError("tests must never reach the network")


@pytest.fixture
def offline_hub(monkeypatch):
    monkeypatch.setattr(clip_module, "_download_weights", _no_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_missing_tag_weights_error_names_tag_and_alternatives(offline_hub, tmp_path):
    with pytest.raises(RuntimeError) as info:
        build_backbone("clip_b32", pretrained="openai", cache_dir=str(tmp_path))
    message = str(info.value)
    assert "pretrained='openai'" in message
    assert "no network" in message
    assert "model=offline" in message
    assert "model=clip_b32 model.pretrained=null model.checkpoint=/path/to/open_clip_pytorch_model.bin" in message
    assert "model.quick_gelu=true|false" in message


def test_failed_download_becomes_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refuse(cfg, cache_dir):
        raise OSError("Temporary failure in name resolution")

    with pytest.raises(RuntimeError, match="laion2b_s34b_b79k.*no network or weights available.*model=offline"):
        resolve_clip_weights("laion2b_s34b_b79k", None, cache_dir=str(tmp_path), download=refuse)


def test_cached_tag_weights_are_found_without_download(offline_hub, tmp_path):
    # Hugging Face cache layout for the 'openai' tag (hf_hub 'timm/vit_base_patch32_clip_224.openai/').
    repo = tmp_path / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    snapshot = repo / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    weights = snapshot / "open_clip_model.safetensors"
    weights.write_bytes(b"")
    assert resolve_clip_weights("openai", None, cache_dir=str(tmp_path)) == str(weights)


def test_unknown_tag_and_missing_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="unknown ViT-B-32 pretrained tag 'opnai'; accepted: openai, "):
        resolve_clip_weights("opnai", None)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        resolve_clip_weights(None, tmp_path / "missing.bin")
    with pytest.raises(ValueError, match="not both"):
        resolve_clip_weights("openai", tmp_path / "x.bin")
    assert resolve_clip_weights(None, None) is None


@pytest.mark.slow
def test_clip_b32_random_init_shapes_and_checkpoint_roundtrip(offline_hub, tmp_path):
    torch.manual_seed(0)
    backbone = build_backbone("clip_b32").eval()
    tokens = backbone.tokenize(["a photo of a dog", "hi"])
    with torch.no_grad():
        text = backbone.encode_text(tokens)
        image = backbone.encode_image(torch.randn(2, 3, 224, 224))
        reference = backbone.model.encode_text(tokens["input_ids"])
    assert text.global_emb.shape == (2, 512)
    assert text.tokens.shape == (2, 77, 512)
    # SOT + 5 words + EOT, and SOT + 'hi' + EOT.
    assert text.mask.sum(dim=1).tolist() == [7, 3]
    assert torch.equal(text.mask, tokens["attention_mask"])
    torch.testing.assert_close(text.global_emb, reference)
    assert image.global_emb.shape == (2, 512)
    assert image.tokens.shape == (2, 49, 768)

    checkpoint = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(backbone.model.state_dict(), checkpoint)
    reloaded = build_backbone("clip_b32", checkpoint=str(checkpoint), quick_gelu=False)
    torch.testing.assert_close(
        reloaded.model.visual.conv1.weight, backbone.model.visual.conv1.weight, rtol=0, atol=0
    )
    activations = {type(m).__name__ for m in reloaded.model.modules() if "GELU" in type(m).__name__}
    assert activations == {"GELU"}
    # The same file read as OpenAI-trained weights: every MLP in both towers uses QuickGELU.
    quick = build_backbone("clip_b32", checkpoint=str(checkpoint), quick_gelu=True)
    assert {type(m).__name__ for m in quick.model.modules() if "GELU" in type(m).__name__} == {"QuickGELU"}
    torch.testing.assert_close(quick.model.visual.conv1.weight, backbone.model.visual.conv1.weight, rtol=0, atol=0)


def test_checkpoint_file_needs_quick_gelu(tmp_path):
    weights = tmp_path / "open_clip_pytorch_model.bin"
    weights.write_bytes(b"")
    # Refused before the file is read: the activation is not recorded in a weights file.
    with pytest.raises(ValueError, match=r"needs quick_gelu.*accepted: model.quick_gelu=true .*model.quick_gelu=false"):
        build_backbone("clip_b32", checkpoint=str(weights))


def test_quick_gelu_is_refused_for_other_presets():
    with pytest.raises(ValueError, match="quick_gelu=True apply only to clip_b32; backbone 'tiny'"):
        build_backbone("tiny", quick_gelu=True)


def test_quick_gelu_enters_the_feature_cache_key_only_when_set():
    from hydra import compose, initialize_config_dir

    from rcml_graph.cli import CONFIG_DIR, register_configs
    from rcml_graph.features import model_key

    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        default = compose(config_name="config")
        local = compose(config_name="config", overrides=[
            "model=clip_b32", "model.pretrained=null", "model.checkpoint=/weights/openai.bin", "model.quick_gelu=true"])
    assert "quick_gelu" not in model_key(default, 0)  # caches built before the option keep their key
    assert model_key(local, 0) == {"name": "clip_b32", "pretrained": None, "checkpoint": "/weights/openai.bin",
                                   "embed_dim": None, "seed": 0, "quick_gelu": True}


def test_stored_specs_carry_quick_gelu_and_old_ones_rebuild_with_gelu(caplog):
    from rcml_graph.backbones import spec_quick_gelu
    from rcml_graph.training.finetune import finetune_spec

    spec = finetune_spec("clip_b32", "p", "i", trainable_last_blocks=1, checkpoint="/w/openai.bin", quick_gelu=True)
    assert spec["quick_gelu"] is True and spec_quick_gelu(spec) is True
    # A spec written before the option: a weights file was built with plain GELU then.
    legacy = {k: v for k, v in spec.items() if k != "quick_gelu"}
    with caplog.at_level("WARNING", logger="rcml_graph.backbones.factory"):
        assert spec_quick_gelu(legacy) is False
    assert "written before the option existed" in caplog.text
    assert spec_quick_gelu({"name": "offline", "checkpoint": None}) is None  # other presets take none
    assert spec_quick_gelu({"name": "clip_b32", "pretrained": "openai", "checkpoint": None}) is None  # from the tag
