"""Schedule, sharding, self-pair batches, validation queries and RNG checkpoints by hand."""

from __future__ import annotations

import math
import random

import pytest
import torch

from rcml_graph.training import (
    SelfPairSampler,
    build_optimizer,
    build_scheduler,
    retrieval_queries,
    save_checkpoint,
    load_checkpoint,
    shard_pairs,
    warmup_cosine_factor,
)
from rcml_graph.training.checkpoint import capture_rng_state, restore_rng_state
from tests.training.test_ddp import ring_graph


def test_warmup_then_cosine_known_values():
    assert warmup_cosine_factor(0, 4, 12) == 0.25
    assert warmup_cosine_factor(3, 4, 12) == 1.0
    assert warmup_cosine_factor(4, 4, 12) == 1.0  # cosine starts at its top
    assert math.isclose(warmup_cosine_factor(8, 4, 12), 0.5)  # half-way down the cosine
    assert warmup_cosine_factor(12, 4, 12) == 0.0
    assert math.isclose(warmup_cosine_factor(12, 4, 12, min_lr_ratio=0.1), 0.1)


def test_scheduler_drives_optimizer_lr():
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(model, lr=1.0, weight_decay=0.1)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]  # weight, bias
    scheduler = build_scheduler(optimizer, warmup_steps=2, total_steps=6)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:3] == [0.5, 1.0, 1.0] and math.isclose(lrs[4], 0.5)
    with pytest.raises(ValueError, match="lr=0"):
        build_optimizer(model, lr=0, weight_decay=0.0)


def test_shard_pairs_cuts_to_a_multiple_of_the_world():
    assert shard_pairs(10, 0, 3) == (slice(0, 3), 9)
    assert shard_pairs(10, 2, 3) == (slice(6, 9), 9)
    with pytest.raises(ValueError, match="rank=3"):
        shard_pairs(10, 3, 3)


def test_self_pair_sampler_covers_every_product_once_per_epoch():
    sampler = SelfPairSampler(10, batch_size=4, seed=3)
    assert len(sampler) == 3
    batches = list(sampler)
    seen = torch.cat([b.src for b in batches])
    assert sorted(seen.tolist()) == list(range(10))
    assert all(torch.equal(b.src, b.dst) and bool(b.is_self.all()) and int(b.desc_id.sum()) == 0
               for b in batches)
    assert torch.equal(batches[1].src, sampler.batch_at(0, 1).src)  # pure in (seed, epoch, batch)
    assert not torch.equal(sampler.batch_at(1, 0).src, batches[0].src)


def test_validation_queries_and_forbidden_negatives():
    data = ring_graph()
    data["product", "also_bought", "product"].split = torch.tensor([1, 1] + [0] * 10)
    data["product", "rev_also_bought", "product"].split = torch.tensor([1, 1] + [0] * 10)
    src, desc, candidates = retrieval_queries(data, split=1, num_negatives=5, seed=0)
    assert src.tolist() == [0, 1] and desc.tolist() == [1, 2]
    assert candidates[:, 0].tolist() == [1, 2]  # the true targets come first
    # product 11 links to 0 under description 2, and 1 to 0 under 1: neither may be a
    # negative of query 0 under description 1 besides its positive; the source never is.
    negatives = candidates[:, 1:]
    assert not bool((negatives == src[:, None]).any())
    assert 1 not in negatives[0].tolist() and 2 not in negatives[1].tolist()
    assert all(len(set(row.tolist())) == 5 for row in negatives)
    again = retrieval_queries(data, split=1, num_negatives=5, seed=0)[2]
    assert torch.equal(again, candidates)


def test_rng_state_roundtrips_through_a_weights_only_checkpoint(tmp_path):
    state = capture_rng_state()
    save_checkpoint(tmp_path / "c.pt", {"rng": state})
    expected = (torch.rand(3), random.random())
    restore_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        load_checkpoint(tmp_path / "nowhere.pt")


def test_validator_scores_text_only_domains_by_text2text():
    from rcml_graph.model.head import RCMLHead
    from rcml_graph.training import RetrievalValidator, TensorFeatures
    from rcml_graph.training.sources import random_features

    data = ring_graph()
    data["product", "also_bought", "product"].split = torch.tensor([1, 1, 1] + [0] * 9)
    data["product", "rev_also_bought", "product"].split = torch.tensor([1, 1, 1] + [0] * 9)
    table = random_features(12, embed_dim=16, generator=torch.Generator().manual_seed(0))
    head = RCMLHead(16, 8, 8)
    descriptions = torch.randn(3, 16)
    validator = RetrievalValidator(data, num_negatives=5, seed=0)
    with_images = validator.evaluate(head, TensorFeatures(table), descriptions)
    table.has_image = torch.zeros(12, dtype=torch.bool)  # a text-only domain
    text_only = validator.evaluate(head, TensorFeatures(table), descriptions)
    assert math.isnan(text_only["val/image2image/hit@5"])  # no image query at all
    assert not math.isnan(text_only["val/hit@5"])
    assert text_only["val/hit@5"] == text_only["val/text2text/hit@5"]
    assert not math.isnan(with_images["val/hit@5"])


def test_resolve_compile_settings() -> None:
    from rcml_graph.training.setup import resolve_compile

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_compile("auto", cuda) and not resolve_compile("auto", cpu)
    assert not resolve_compile("auto", cuda, conditioned=False)  # CLIP-like heads stay eager
    assert resolve_compile(True, cpu) and resolve_compile("true", cpu, conditioned=False)
    assert not resolve_compile(False, cuda)
    with pytest.raises(ValueError, match="train.compile_loss='sometimes'; accepted: auto, true, false"):
        resolve_compile("sometimes", cpu)


def test_autocast_dtype_settings() -> None:
    from rcml_graph.training import autocast_dtype

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert autocast_dtype(cuda, "bfloat16") is torch.bfloat16
    assert autocast_dtype(cuda, "float16") is torch.float16
    assert autocast_dtype(cpu, "bfloat16") is None  # CPU steps stay float32 unless asked
    assert autocast_dtype(cpu, "bfloat16", amp_cpu=True) is torch.bfloat16
    assert autocast_dtype(cpu, None) is None and autocast_dtype(cuda, None) is None
    with pytest.raises(ValueError, match="train.amp_cpu=true needs train.amp_dtype=bfloat16; got null"):
        autocast_dtype(cpu, None, amp_cpu=True)
    with pytest.raises(ValueError, match="train.amp_cpu=true needs train.amp_dtype=bfloat16; got 'float16'"):
        autocast_dtype(cpu, "float16", amp_cpu=True)
    with pytest.raises(ValueError, match="train.amp_dtype='fp8'; accepted: bfloat16, float16 or null"):
        autocast_dtype(cuda, "fp8")


def test_compiled_loss_terms_equal_eager_across_batch_sizes() -> None:
    """``train.compile_loss`` (torch.compile, dynamic shapes) on the CPU: same loss and gradients
    as the eager terms, for batches of different sizes (the number of pairs changes every step)."""
    from rcml_graph.losses import RCMLLoss

    g = torch.Generator().manual_seed(0)
    eager, compiled = RCMLLoss(w_intra=0.5), RCMLLoss(w_intra=0.5).compile_terms()
    for num_pairs in (6, 11):
        feats = [torch.nn.functional.normalize(torch.randn(num_pairs, 8, generator=g), dim=-1).requires_grad_()
                 for _ in range(4)]
        negs = [torch.nn.functional.normalize(torch.randn(num_pairs, 3, 8, generator=g), dim=-1) for _ in range(2)]
        kwargs = dict(src_image_valid=torch.rand(num_pairs, generator=g) < 0.8,
                      false_negatives=torch.rand(num_pairs, num_pairs, generator=g) < 0.2,
                      relation_ids=torch.randint(0, 2, (num_pairs,), generator=g),
                      neg_image=negs[0], neg_text=negs[1], neg_valid=torch.rand(num_pairs, 3, generator=g) < 0.7)
        want, _ = eager(*feats, torch.tensor(12.0), **kwargs)
        want_grads = torch.autograd.grad(want, feats)
        got, _ = compiled(*feats, torch.tensor(12.0), **kwargs)
        got_grads = torch.autograd.grad(got, feats)
        torch.testing.assert_close(got, want)
        for a, b in zip(got_grads, want_grads):
            torch.testing.assert_close(a, b)
