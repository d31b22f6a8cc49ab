"""Two gloo processes at the same global batch train the same weights as one process, with the
frozen token features and with a fine-tuned (tiny) backbone."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch_geometric.data import HeteroData

from rcml_graph.backbones import build_backbone
from rcml_graph.model.variants import get_variant
from rcml_graph.relations import SELF_RELATION_TEXT, edge_type, reverse_edge_type
from rcml_graph.training import (
    FitOptions,
    HeadOptions,
    TensorFeatures,
    build_loss,
    build_sampler,
    fit,
    head_kwargs,
    random_features,
)
from rcml_graph.training.checkpoint import load_checkpoint
from rcml_graph.training.distributed import DistInfo
from rcml_graph.training.finetune import BackboneFeatures, ProductImages
from rcml_graph.training.setup import build_head

NUM_PRODUCTS = 12


def ring_graph() -> HeteroData:
    """12 products; also_bought links i -> i+1 (mod 12) under description 1 or 2 by parity."""
    data = HeteroData()
    data["product"].num_nodes = NUM_PRODUCTS
    data["product"].category_id = torch.arange(NUM_PRODUCTS) % 3
    src = torch.arange(NUM_PRODUCTS)
    dst = (src + 1) % NUM_PRODUCTS
    desc = 1 + src % 2
    split = torch.zeros(NUM_PRODUCTS, dtype=torch.long)
    store = data[edge_type("also_bought")]
    store.edge_index, store.desc_id, store.split = torch.stack([src, dst]), desc, split
    rev = data[reverse_edge_type("also_bought")]
    rev.edge_index, rev.desc_id, rev.split = torch.stack([dst, src]), desc, split
    data.relation_text = [SELF_RELATION_TEXT, "bought by even", "bought by odd"]
    return data


def tiny_source() -> BackboneFeatures:
    """The tiny backbone (last block per tower trainable) over the ring's 12 products; random
    32 px images, products 3 and 8 without one."""
    torch.manual_seed(0)
    backbone = build_backbone("tiny")
    pixels = torch.randint(0, 256, (NUM_PRODUCTS, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(3))
    has_image = torch.ones(NUM_PRODUCTS, dtype=torch.bool)
    has_image[[3, 8]] = False
    texts = [f"product {i}: a {'red' if i % 2 else 'blue'} item of kind {i % 3}" for i in range(NUM_PRODUCTS)]
    return BackboneFeatures(backbone, texts, ProductImages.from_tensor(pixels, has_image),
                            ring_graph().relation_text, trainable_last_blocks=1)


def run_finetune(rank: int, world_size: int, out: str) -> None:
    """Two steps of fine-tuning the tiny backbone with the head, the backbone at its own lr."""
    source = tiny_source()
    with torch.no_grad():
        descriptions = source.encode_descriptions()
    variant = get_variant("rcml")
    torch.manual_seed(0)
    head = build_head(head_kwargs(variant, HeadOptions(d_model=8, num_heads=2), source.embed_dim,
                                  source.image_token_dim, source.text_token_dim, 3))
    sampler = build_sampler(ring_graph(), "relations", batch_size=6, positives_per_anchor=1, seed=0)
    encoded = []  # products this rank's backbone encodes per call
    read = source.product_features

    def counting(index, *args, **kwargs):
        encoded.append(index.numel())
        return read(index, *args, **kwargs)

    source.product_features = counting
    options = FitOptions(epochs=1, max_steps=2, lr=1e-2, backbone_lr=5e-3, warmup_steps=1,
                         graph_false_negatives=False, validate_before=False, show_progress=False,
                         tensorboard=False, patience=None)
    metrics = fit(head, build_loss(variant), sampler, source, None, Path(out) / f"finetune_w{world_size}",
                  num_relations=3, description_table=descriptions, options=options,
                  dist_info=DistInfo(rank, world_size, rank))
    if rank == 0:
        torch.save({"head": head.state_dict(), "backbone": source.state_dict(), "step": metrics["step"],
                    "loss": metrics["train/epoch_loss"], "encoded": encoded},
                   Path(out) / f"finetune{world_size}.pt")


def run(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    if world_size > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world_size)
    run_frozen(rank, world_size, out)
    run_finetune(rank, world_size, out)
    if world_size > 1:
        dist.destroy_process_group()


def run_frozen(rank: int, world_size: int, out: str) -> None:
    torch.manual_seed(0)
    table = random_features(NUM_PRODUCTS, embed_dim=8, token_dim=8, generator=torch.Generator().manual_seed(1))
    descriptions = torch.randn(3, 8, generator=torch.Generator().manual_seed(2))
    variant = get_variant("rcml")
    head = build_head(head_kwargs(variant, HeadOptions(d_model=8, num_heads=2), 8, 8, 8, 3))
    # positives_per_anchor=1: every global batch has an even number of pairs (one relation
    # pair and one self pair per anchor), so the two ranks split it without a remainder.
    sampler = build_sampler(ring_graph(), "relations", batch_size=6, positives_per_anchor=1, seed=0)
    # Graph false negatives on: each rank hands the loss the whole batch's mask (entries between
    # the ranks' halves: relation pairs on rank 0, self pairs on rank 1); the wiring itself is
    # tested in tests/training/test_step_masks.py.
    options = FitOptions(epochs=2, lr=1e-2, warmup_steps=1, graph_false_negatives=True,
                         validate_before=False, show_progress=False, tensorboard=False, patience=None)
    metrics = fit(head, build_loss(variant), sampler, TensorFeatures(table), None, Path(out) / f"w{world_size}",
                  num_relations=3, description_table=descriptions, options=options,
                  dist_info=DistInfo(rank, world_size, rank))
    if rank == 0:
        torch.save({"params": head.state_dict(), "step": metrics["step"],
                    "loss": metrics["train/epoch_loss"]}, Path(out) / f"result{world_size}.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One process, then two gloo processes, each training the frozen and the fine-tune run."""
    out = tmp_path_factory.mktemp("ddp")
    run(0, 1, 0, str(out))
    mp.spawn(run, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return out


def test_two_gloo_ranks_match_one_process(runs):
    tmp_path = runs
    one = torch.load(tmp_path / "result1.pt", weights_only=True)
    two = torch.load(tmp_path / "result2.pt", weights_only=True)
    assert one["step"] == two["step"] == 8.0  # 24 directed pairs / 6 slots per batch, 2 epochs
    assert abs(one["loss"] - two["loss"]) < 1e-5
    torch.manual_seed(0)
    initial = build_head(head_kwargs(get_variant("rcml"), HeadOptions(d_model=8, num_heads=2), 8, 8, 8, 3))
    moved = False
    for name, value in one["params"].items():
        # atol 1e-3: Adam divides by sqrt(v), which amplifies float noise in parameters whose
        # true gradient is ~0 (an attention key bias does not change the softmax).
        assert torch.allclose(value, two["params"][name], atol=1e-3), name
        moved |= name in initial.state_dict() and not torch.allclose(value, initial.state_dict()[name])
    assert moved  # training changed the weights, so the match is not trivial


def test_two_gloo_ranks_fine_tune_the_backbone_like_one_process(runs):
    one = torch.load(runs / "finetune1.pt", weights_only=True)
    two = torch.load(runs / "finetune2.pt", weights_only=True)
    assert one["step"] == two["step"] == 2.0
    assert abs(one["loss"] - two["loss"]) < 1e-5
    initial = tiny_source().state_dict()
    tuned = ["backbone.text_blocks.1.linear1.weight", "backbone.image_blocks.1.linear1.weight",
             "backbone.text_proj.weight", "backbone.image_proj.weight"]
    for name in tuned:  # the image tower trains too: most products have an image
        assert not torch.allclose(one["backbone"][name], initial[name]), name
    assert torch.equal(two["backbone"]["backbone.text_blocks.0.linear1.weight"],
                       initial["backbone.text_blocks.0.linear1.weight"])
    for part in ("head", "backbone"):
        assert one[part].keys() == two[part].keys()
        for name, value in one[part].items():
            # 2 steps: the runs differ by ~3e-6 (float summation order)
            assert torch.allclose(value, two[part][name], atol=1e-4), f"{part}.{name}"
    # Each rank runs the backbone on its half of a step's products (rounded up), not on all.
    assert len(one["encoded"]) == len(two["encoded"]) == 2 and min(one["encoded"]) > 1
    assert two["encoded"] == [-(-n // 2) for n in one["encoded"]]
    # Rank 0's checkpoint holds the tuned backbone.
    saved = load_checkpoint(runs / "finetune_w2" / "checkpoints" / "last.pt")["modules"]
    for name, value in two["backbone"].items():
        assert torch.equal(saved[f"backbone.{name}"], value), name
