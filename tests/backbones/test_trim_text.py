"""Text batches cut to their longest row give the same embeddings as the full context."""

import pytest
import torch

from rcml_graph.backbones import build_backbone, trim_text_batch
from rcml_graph.backbones import clip as clip_module
from rcml_graph.backbones.base import check_text_batch

TEXTS = ["bought together by people who like fishing", "hi", "a longer product title, blue, size 9"]


def test_trim_cuts_to_the_last_attended_column():
    ids = torch.tensor([[5, 6, 7, 0, 0, 0], [5, 0, 0, 0, 0, 0]])
    cut = trim_text_batch({"input_ids": ids, "attention_mask": ids != 0, "extra": "kept"})
    assert torch.equal(cut["input_ids"], ids[:, :3])
    assert torch.equal(cut["attention_mask"], (ids != 0)[:, :3])
    assert cut["extra"] == "kept"
    full = {"input_ids": ids[:, :3], "attention_mask": ids[:, :3] != 0}
    assert trim_text_batch(full) is full  # nothing to cut: the same batch
    # A gap inside a row (as no tokenizer here makes) still keeps every attended column.
    gap = torch.tensor([[True, False, True, False]])
    assert trim_text_batch({"input_ids": gap.long(), "attention_mask": gap})["attention_mask"].shape == (1, 3)
    empty = torch.zeros(2, 4, dtype=torch.bool)
    assert trim_text_batch({"input_ids": empty.long(), "attention_mask": empty})["input_ids"].shape == (2, 1)


def test_check_text_batch_accepts_cuts_and_names_the_limits():
    ids = torch.ones(2, 4, dtype=torch.long)
    assert check_text_batch({"input_ids": ids, "attention_mask": ids.bool()}, 6)[0].shape == (2, 4)
    with pytest.raises(ValueError, match=r"1 <= L <= 3.*\(2, 4\)"):
        check_text_batch({"input_ids": ids, "attention_mask": ids.bool()}, 3)
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 3\)"):
        check_text_batch({"input_ids": ids, "attention_mask": ids[:, :3].bool()}, 6)


@pytest.fixture
def no_hub(monkeypatch):
    def refuse(cfg, cache_dir):
        raise AssertionError("tests must never reach the network")

    monkeypatch.setattr(clip_module, "_download_weights", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name", ["tiny", "offline", "clip_b32"])
def test_trimmed_batch_gives_the_full_context_embeddings(name, no_hub):
    torch.manual_seed(0)
    backbone = build_backbone(name).eval()
    tokens = backbone.tokenize(TEXTS)
    cut = trim_text_batch(tokens)
    length = cut["input_ids"].shape[1]
    assert length == int(tokens["attention_mask"].sum(dim=1).max()) < backbone.context_length
    with torch.no_grad():
        full, short = backbone.encode_text(tokens), backbone.encode_text(cut)
    torch.testing.assert_close(short.global_emb, full.global_emb, rtol=1e-5, atol=1e-5)
    assert torch.equal(short.mask, full.mask[:, :length])
    assert not full.mask[:, length:].any()
    valid = short.mask.unsqueeze(-1)
    torch.testing.assert_close(short.tokens * valid, full.tokens[:, :length] * valid, rtol=1e-5, atol=1e-5)
