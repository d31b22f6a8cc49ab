import torch

from rcml_graph.backbones.tiny import BOS_ID, EOS_ID, PAD_ID, TinyBackbone, byte_tokenize


def test_byte_tokenize_known_ids_and_mask():
    batch = byte_tokenize(["ab", ""], context_length=6)
    # 'a' = 97, 'b' = 98, shifted by 3.
    expected = torch.tensor([[BOS_ID, 100, 101, EOS_ID, PAD_ID, PAD_ID], [BOS_ID, EOS_ID, 0, 0, 0, 0]])
    assert torch.equal(batch["input_ids"], expected)
    assert batch["attention_mask"].dtype == torch.bool
    assert batch["attention_mask"].sum(dim=1).tolist() == [4, 2]


def test_byte_tokenize_truncates_keeping_eos():
    batch = byte_tokenize(["x" * 100], context_length=8)
    assert batch["input_ids"].shape == (1, 8)
    assert batch["input_ids"][0, -1].item() == EOS_ID
    assert batch["attention_mask"].all()


def test_tiny_shapes_and_masks():
    torch.manual_seed(0)
    backbone = TinyBackbone(embed_dim=24, width=16, image_size=32, patch_size=8, context_length=20)
    tokens = backbone.tokenize(["hello world", "a"])
    text = backbone.encode_text(tokens)
    assert text.global_emb.shape == (2, 24)
    assert text.tokens.shape == (2, 20, 16)
    # "hello world" = 11 bytes + BOS + EOS; "a" = 1 byte + BOS + EOS.
    assert text.mask.sum(dim=1).tolist() == [13, 3]
    assert torch.all(text.tokens[1, 3:] == 0)  # padding positions are zeroed
    image = backbone.encode_image(torch.randn(3, 3, 32, 32))
    assert image.global_emb.shape == (3, 24)
    assert image.tokens.shape == (3, 16, 16)  # (32 / 8) ** 2 patches
    assert (backbone.image_token_dim, backbone.text_token_dim) == (16, 16)


def test_tiny_global_is_projected_masked_mean():
    torch.manual_seed(0)
    backbone = TinyBackbone()
    text = backbone.encode_text(backbone.tokenize(["abc"]))
    expected = backbone.text_proj(text.tokens[0, :5].mean(dim=0))  # BOS + 3 bytes + EOS
    torch.testing.assert_close(text.global_emb[0], expected)


def test_tiny_padding_does_not_leak_into_valid_tokens():
    torch.manual_seed(0)
    backbone = TinyBackbone().eval()
    tokens = backbone.tokenize(["abc"])
    changed = {k: v.clone() for k, v in tokens.items()}
    changed["input_ids"][0, 10] = 50  # garbage at a padded (masked) position
    a, b = backbone.encode_text(tokens), backbone.encode_text(changed)
    torch.testing.assert_close(a.global_emb, b.global_emb)


def test_tiny_is_deterministic_under_seed():
    images = torch.rand(2, 3, 32, 32)
    torch.manual_seed(7)
    first = TinyBackbone().encode_image(images).global_emb
    torch.manual_seed(7)
    second = TinyBackbone().encode_image(images).global_emb
    torch.manual_seed(8)
    third = TinyBackbone().encode_image(images).global_emb
    assert torch.equal(first, second)
    assert not torch.allclose(first, third)


def test_default_context_keeps_descriptions_of_one_template_apart():
    from rcml_graph.relations import describe

    torch.manual_seed(0)
    backbone = TinyBackbone()
    texts = [describe("also_bought", "fly fishing"), describe("also_bought", "infant feeding")]
    globals_ = backbone.encode_text(backbone.tokenize(texts)).global_emb
    assert not torch.allclose(globals_[0], globals_[1])
