"""CUDA paths against their CPU references (``python -m pytest -m gpu``; skipped without a GPU).

Every path here also runs on CPU in the default suite; these tests check that the CUDA run of
the same code gives the same answers (sampler invariants, head outputs and gradients, a training
run that learns, resumption, evaluation metrics) and that bf16 autocast stays close to float32.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from rcml_graph.model.attention import RelationCrossAttention
from rcml_graph.model.variants import get_variant
from rcml_graph.sampling import (
    NO_NEGATIVE,
    SAME_CATEGORY,
    RelationPairSampler,
    false_negative_mask,
)
from rcml_graph.training import (
    HeadOptions,
    TensorFeatures,
    build_loss,
    head_kwargs,
    pair_loss,
    random_features,
)
from rcml_graph.training.setup import build_head
from tests.test_sampler import positive_triples, random_graph

# RCML_GPU_TEST_DEVICE=cpu runs these comparisons CPU against CPU (a dry run of the tests
# themselves on a machine without a GPU).
CUDA = torch.device(os.environ.get("RCML_GPU_TEST_DEVICE", "cuda"))

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(CUDA.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("seed", [0, 3])
def test_cuda_sampler_epoch_and_negative_invariants(seed):
    data, triples = random_graph(seed)
    category = data["product"].category_id.tolist()
    sampler = RelationPairSampler(data, batch_size=5, positives_per_anchor=3, num_hard_negatives=3,
                                  seed=seed, device=CUDA)
    batches = list(sampler)
    assert all(b.src.device.type == CUDA.type for b in batches)
    positives = positive_triples(batches)
    assert len(positives) == len(triples) and set(positives) == triples  # each training pair once
    for b in batches:
        cpu = b.to("cpu")
        for i in range(cpu.num_pairs):
            s, r = int(cpu.src[i]), int(cpu.desc_id[i])
            for t, kind in zip(cpu.hard_neg[i].tolist(), cpu.hard_neg_kind[i].tolist()):
                if kind == NO_NEGATIVE:
                    assert t == -1
                    continue
                assert t != s and (s, t, r) not in triples
                if kind == SAME_CATEGORY:
                    assert category[t] == category[s] >= 0
        # the mask computed on the GPU equals the one computed on the CPU copy of the batch
        assert torch.equal(false_negative_mask(b, with_hard_negatives=True).cpu(),
                           false_negative_mask(cpu, with_hard_negatives=True))


def test_cuda_sampler_is_seeded_and_resumable():
    data, _ = random_graph(1)
    a = RelationPairSampler(data, batch_size=4, num_hard_negatives=2, seed=7, device=CUDA)
    b = RelationPairSampler(data, batch_size=4, num_hard_negatives=2, seed=7, device=CUDA)
    for i in range(len(a)):
        x, y = a.batch_at(1, i), b.batch_at(1, i)
        assert all(torch.equal(getattr(x, f), getattr(y, f)) for f in ("src", "dst", "desc_id", "hard_neg"))


def test_cuda_attention_paths_match_cpu():
    torch.manual_seed(0)
    attn = RelationCrossAttention(relation_dim=16, token_dim=12, out_dim=8, d_model=32, num_heads=4)
    relation, tokens = torch.randn(9, 16), torch.randn(4, 7, 12)
    mask = torch.rand(4, 7) < 0.7
    mask[3] = False
    index = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0])
    reference, empty = attn(relation, tokens, mask, index)
    gpu = attn.to(CUDA)
    for path in ("projected", "absorbed"):
        gpu.attention_path = path
        out, empty_gpu = gpu(relation.to(CUDA), tokens.to(CUDA), mask.to(CUDA), index.to(CUDA))
        torch.testing.assert_close(out.cpu(), reference, rtol=1e-4, atol=1e-5)
        assert torch.equal(empty_gpu.cpu(), empty)


def _head_and_batch(variant_name: str):
    torch.manual_seed(0)
    data, _ = random_graph(2, num_products=40, num_edges=200)
    variant = get_variant(variant_name)
    features = random_features(40, 16, 5, 6, 8, torch.Generator().manual_seed(0))
    kwargs = head_kwargs(variant, HeadOptions(d_model=32), 16, 8, 8, 9)
    head = build_head(kwargs)
    batch = next(iter(RelationPairSampler(data, batch_size=8, num_hard_negatives=2, seed=0)))
    return variant, head, TensorFeatures(features), batch


@pytest.mark.parametrize("variant_name", ["rcml", "clip", "unconditioned", "relation_ids"])
def test_cuda_loss_and_gradients_match_cpu_and_bf16_stays_close(variant_name):
    variant, head, source, batch = _head_and_batch(variant_name)
    table = torch.randn(9, 16, generator=torch.Generator().manual_seed(1))
    loss_fn = build_loss(variant)
    # no random in-batch negatives: they come from different generators on the two devices
    options = dict(conditioned=variant.conditioned, random_negatives=0)
    values = {}
    for device in ("cpu", CUDA):
        model = head.to(device)
        model.zero_grad(set_to_none=True)
        loss, _, n = pair_loss(model, loss_fn, batch.to(device), source, table.to(device), 9, device, **options)
        loss.backward()
        assert n > 0
        values[device] = (loss.detach().cpu(), {k: p.grad.detach().cpu() for k, p in model.named_parameters()
                                               if p.grad is not None})
    assert values["cpu"][1], "no parameter received a gradient"
    torch.testing.assert_close(values[CUDA][0], values["cpu"][0], rtol=1e-4, atol=1e-5)
    assert values[CUDA][1].keys() == values["cpu"][1].keys()
    for name, grad in values["cpu"][1].items():
        torch.testing.assert_close(values[CUDA][1][name], grad, rtol=1e-3, atol=1e-5)
    # bf16 autocast, as training on CUDA runs, stays close to float32
    model = head.to(CUDA)
    with torch.autocast(CUDA.type, dtype=torch.bfloat16):
        loss_bf16, _, _ = pair_loss(model, loss_fn, batch.to(CUDA), source, table.to(CUDA), 9, CUDA, **options)
    reference = float(values["cpu"][0])
    assert math.isfinite(float(loss_bf16))
    assert abs(float(loss_bf16) - reference) < 0.05 * abs(reference) + 0.05
