"""Training-step throughput: RCML vs the CLIP special case (same backbone and batch), with a
frozen backbone (synthetic in-memory token features) and fine-tuned end to end (the
``train.backbone=finetune`` source on synthetic images and texts), plus the pair sampler alone.

    python benchmarks/bench_train.py --device cuda --products 200000 --batch 1024 \
        --ft-backbones tiny,offline,clip_b32 --ft-products 4096 --ft-batch 128
    python benchmarks/bench_train.py --device cpu --products 5000 --batch 64 --steps 10 \
        --ft-backbones tiny,offline --ft-batch 8

Pairs/s counts training pairs; products/s counts distinct products per step (each product's
image and text go through the backbone, or are read from memory, once per step however many
pairs it is in). In fine-tune mode CLIP trains on self pairs of as many products per step as
RCML's batches touch on average, so ``rcml_over_clip_products`` compares equal backbone work.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import torch
from torch_geometric.data import HeteroData

from rcml_graph.backbones import build_backbone
from rcml_graph.io_utils import atomic_write_text
from rcml_graph.model.variants import get_variant
from rcml_graph.schema import TrainConfig
from rcml_graph.relations import SELF_RELATION_TEXT, edge_type, reverse_edge_type
from rcml_graph.training import (
    HeadOptions,
    TensorFeatures,
    autocast_dtype,
    build_loss,
    build_optimizer,
    build_sampler,
    head_kwargs,
    pair_loss,
    prepare_frozen_source,
    random_features,
)
from rcml_graph.training.finetune import (
    BackboneFeatures,
    ProductImages,
    step_description_table,
)
from rcml_graph.training.setup import build_head


def random_graph(num_products: int, degree: int, num_descriptions: int, seed: int = 0) -> HeteroData:
    g = torch.Generator().manual_seed(seed)
    num_edges = num_products * degree
    src = torch.randint(num_products, (num_edges,), generator=g)
    dst = torch.randint(num_products, (num_edges,), generator=g)
    desc = torch.randint(1, num_descriptions, (num_edges,), generator=g)
    data = HeteroData()
    data["product"].num_nodes = num_products
    data["product"].category_id = torch.randint(50, (num_products,), generator=g)
    split = torch.zeros(num_edges, dtype=torch.long)
    for etype, ei in ((edge_type("also_bought"), torch.stack([src, dst])),
                      (reverse_edge_type("also_bought"), torch.stack([dst, src]))):
        data[etype].edge_index, data[etype].desc_id, data[etype].split = ei, desc, split
    data.relation_text = [SELF_RELATION_TEXT] + [f"d{i}" for i in range(1, num_descriptions)]
    return data


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_autocast(device: torch.device, args: argparse.Namespace) -> torch.autocast:
    """bf16 autocast as ``rcml_graph.train`` does: on CUDA, and on the CPU with ``--amp-cpu``."""
    dtype = autocast_dtype(device, "bfloat16", args.amp_cpu)
    return torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def loss_options(head: torch.nn.Module, args: argparse.Namespace) -> dict[str, object]:
    """The keyword arguments ``rcml_graph.training.loop`` gives :func:`pair_loss` (training defaults
    unless overridden on the command line)."""
    return {"conditioned": not head.global_only, "random_negatives": args.random_negatives,
            "w_global": args.w_global}


def profile_steps(label: str, step, batches: list, device: torch.device) -> None:
    """torch.profiler over ``batches``: the top operators by device time (CPU time on CPU) and the
    number of operator calls per step, printed (stderr) for the benchmark log."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        for b in batches:
            step(b)
        sync(device)
    events = prof.key_averages()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    calls = sum(e.count for e in events)
    print(f"--- profile {label}: {len(batches)} steps, {calls / max(len(batches), 1):.0f} operator calls per step",
          file=sys.stderr)
    print(events.table(sort_by=sort, row_limit=25), file=sys.stderr)
    print(events.table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)


def bench_variant(name: str, args: argparse.Namespace, data: HeteroData, source: TensorFeatures,
                  table: torch.Tensor, device: torch.device) -> dict[str, float]:
    variant = get_variant(name)
    pairs = "self" if variant.self_pairs_only else "relations"
    head = build_head(head_kwargs(variant, HeadOptions(d_model=args.d_model), args.dim, args.token_dim,
                                  args.token_dim, table.shape[0]), device)
    optimizer = build_optimizer(head, 1e-4, 0.1)
    loss_fn = build_loss(variant, compile_loss=args.compile_loss)
    if not args.raw_tokens:
        # As rcml_graph.train does: a conditioned head reads tokens normalised once (bf16 on CUDA).
        source = prepare_frozen_source(source, head, device, "bfloat16", args.amp_cpu)  # type: ignore[assignment]
    # CLIP gets the same number of products per batch as RCML touches (anchors + targets).
    batch = args.batch if pairs == "relations" else args.batch * 2
    sampler = build_sampler(data, pairs, batch_size=batch, positives_per_anchor=4, seed=0, device=device,
                            hard_negatives=args.hard_negatives)
    batches = [sampler.batch_at(0, i) for i in range(min(len(sampler), args.steps + args.warmup))]
    options = loss_options(head, args)
    amp = step_autocast(device, args)

    def one_step(b) -> int:
        with amp:
            loss, _, n = pair_loss(head, loss_fn, b, source, table, table.shape[0], device, **options)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return n

    num_pairs = num_products = 0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for i, b in enumerate(batches):
        if i == args.warmup:
            sync(device)
            start = time.perf_counter()
            num_pairs = num_products = 0
        num_pairs += one_step(b)
        num_products += b.products.numel()
    sync(device)
    elapsed = time.perf_counter() - start
    steps = len(batches) - args.warmup
    result = {"pairs_per_s": num_pairs / elapsed, "products_per_s": num_products / elapsed,
              "steps_per_s": steps / elapsed, "pairs_per_step": num_pairs / steps}
    if args.loop_steps:
        # Steps drawing batches live from a CPU sampler, as rcml_graph.train does, with and
        # without a prefetching worker: how much of the sampler's time the step hides.
        live = build_sampler(data, pairs, batch_size=batch, positives_per_anchor=4, seed=0, device="cpu",
                             hard_negatives=args.hard_negatives)
        for prefetch in (0, 1):
            live.prefetch = prefetch
            live.set_epoch(1)
            iterator = iter(live)
            next(iterator)
            sync(device)
            tic, live_pairs, live_steps = time.perf_counter(), 0, 0
            for b in iterator:
                live_pairs, live_steps = live_pairs + one_step(b), live_steps + 1
                if live_steps == args.loop_steps:
                    break
            sync(device)
            iterator.close()
            result[f"live_pairs_per_s_prefetch{prefetch}"] = live_pairs / (time.perf_counter() - tic)
    if args.profile:
        profile_steps(f"frozen {name}", one_step, batches[:args.profile], device)
    result["peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return result


def finetune_source(name: str, num_products: int, num_descriptions: int, trainable_last_blocks: int,
                    device: torch.device, seed: int = 0) -> BackboneFeatures:
    """The fine-tune source of backbone ``name`` over synthetic products: random images (90% of
    products have one) and 40-word texts, built identically for every variant."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    backbone = build_backbone(name, device=device)
    size = backbone.image_size
    images = torch.randint(0, 256, (num_products, 3, size, size), dtype=torch.uint8, generator=g)
    has_image = torch.rand(num_products, generator=g) < 0.9
    vocabulary = [f"word{i}" for i in range(500)]
    words = torch.randint(len(vocabulary), (num_products, 40), generator=g).tolist()
    texts = [" ".join(vocabulary[w] for w in row) for row in words]
    descriptions = [f"bought together by people who like topic {i}" for i in range(num_descriptions)]
    return BackboneFeatures(backbone, texts, ProductImages.from_tensor(images, has_image), descriptions,
                            trainable_last_blocks)


def bench_finetune(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, object]:
    """RCML and CLIP fine-tuning ``name`` end to end, same products per step."""
    data = random_graph(args.ft_products, args.degree, args.ft_descriptions, seed=1)
    results: dict[str, object] = {}
    products_per_step = None
    for variant_name in ("rcml", "clip"):
        variant = get_variant(variant_name)
        source = finetune_source(name, args.ft_products, args.ft_descriptions, args.trainable_last_blocks,
                                 device)
        head = build_head(head_kwargs(variant, HeadOptions(d_model=args.d_model), source.embed_dim,
                                      source.image_token_dim, source.text_token_dim, source.num_relations),
                          device)
        optimizer = build_optimizer(torch.nn.ModuleDict({"head": head, "backbone": source}), 1e-5, 0.1)
        loss_fn = build_loss(variant, compile_loss=args.compile_loss)
        if variant.self_pairs_only:
            assert products_per_step is not None
            sampler = build_sampler(data, "self", batch_size=round(products_per_step), positives_per_anchor=4,
                                    seed=0, device=device)
        else:
            sampler = build_sampler(data, "relations", batch_size=args.ft_batch, positives_per_anchor=4, seed=0,
                                    device=device, hard_negatives=args.hard_negatives)
        total = args.ft_steps + args.ft_warmup
        batches = [sampler.batch_at(epoch, i) for epoch in range(total // max(len(sampler), 1) + 1)
                   for i in range(len(sampler))][:total]
        amp = step_autocast(device, args)
        options = loss_options(head, args)

        def one_step(b):
            with amp:
                table = step_description_table(head, source, None, b.desc_id, device)
                loss, _, n = pair_loss(head, loss_fn, b, source, table, source.num_relations, device, **options)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return n

        num_pairs = num_products = 0
        start = time.perf_counter()
        for i, b in enumerate(batches):
            if i == args.ft_warmup:
                sync(device)
                start = time.perf_counter()
                num_pairs = num_products = 0
            num_pairs += one_step(b)
            num_products += b.products.numel()
        sync(device)
        if args.profile:
            profile_steps(f"finetune {name} {variant_name}", one_step, batches[:args.profile], device)
        elapsed = time.perf_counter() - start
        steps = len(batches) - args.ft_warmup
        if products_per_step is None:
            products_per_step = num_products / steps
        results[variant_name] = {"pairs_per_s": num_pairs / elapsed, "products_per_s": num_products / elapsed,
                                 "steps_per_s": steps / elapsed, "pairs_per_step": num_pairs / steps,
                                 "products_per_step": num_products / steps,
                                 "trainable_backbone_params": source.num_trainable}
    rcml, clip = results["rcml"], results["clip"]
    results["rcml_over_clip_products"] = rcml["products_per_s"] / clip["products_per_s"]  # type: ignore[index]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--products", type=int, default=5000)
    parser.add_argument("--degree", type=int, default=8)
    parser.add_argument("--descriptions", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64, help="anchor slots per RCML batch")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--token-dim", type=int, default=768)
    parser.add_argument("--image-tokens", type=int, default=50)
    parser.add_argument("--text-tokens", type=int, default=32)
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ft-backbones", default="tiny,offline",
                        help="comma-separated backbones to fine-tune (empty: skip fine-tune mode)")
    parser.add_argument("--ft-products", type=int, default=400)
    parser.add_argument("--ft-descriptions", type=int, default=50)
    parser.add_argument("--ft-batch", type=int, default=8, help="anchor slots per RCML fine-tune batch")
    parser.add_argument("--ft-steps", type=int, default=4)
    parser.add_argument("--ft-warmup", type=int, default=1)
    parser.add_argument("--trainable-last-blocks", type=int, default=1)
    parser.add_argument("--skip-frozen", action="store_true", help="fine-tune mode only")
    defaults = TrainConfig()
    parser.add_argument("--hard-negatives", type=int, default=defaults.hard_negatives,
                        help="sampler hard negatives per relation pair (training default)")
    parser.add_argument("--random-negatives", type=int, default=defaults.random_negatives,
                        help="in-batch negatives per relation pair, conditioned heads (training default)")
    parser.add_argument("--w-global", type=float, default=defaults.w_global,
                        help="weight of the relation-free auxiliary loss, conditioned heads (training default)")
    parser.add_argument("--compile-loss", action="store_true",
                        help="torch.compile the loss's stacked terms (train.compile_loss)")
    parser.add_argument("--amp-cpu", action="store_true",
                        help="bf16 autocast on the CPU too (train.amp_cpu); CUDA always autocasts")
    parser.add_argument("--raw-tokens", action="store_true",
                        help="frozen mode: mask and layer-normalise the fp32 tokens every step (before session 6) "
                             "instead of once up front")
    parser.add_argument("--profile", type=int, default=0, help="profile this many steps per variant (stderr)")
    parser.add_argument("--loop-steps", type=int, default=0,
                        help="also time this many steps drawing batches live, without and with prefetch")
    parser.add_argument("--sdpa-backends", default=None,
                        help="comma-separated SDPBackend names for the relation attention, or 'torch' for "
                             "PyTorch's own choice (default: RelationCrossAttention.sdpa_backends)")
    parser.add_argument("--frozen-variants", default="rcml,clip",
                        help="comma-separated variants timed in frozen mode (e.g. clip,unconditioned)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.sdpa_backends:
        from rcml_graph.model.attention import RelationCrossAttention

        RelationCrossAttention.sdpa_backends = (None if args.sdpa_backends == "torch"
                                                else tuple(args.sdpa_backends.split(",")))
    device = torch.device(args.device)
    data = random_graph(args.products, args.degree, args.descriptions)
    source = TensorFeatures(random_features(args.products, args.dim, args.image_tokens, args.text_tokens,
                                            args.token_dim, torch.Generator().manual_seed(0)))
    if device.type == "cuda":
        source = TensorFeatures(source.product_features(torch.arange(args.products), device=device))
    table = torch.randn(args.descriptions, args.dim, device=device)

    sampler = build_sampler(data, "relations", batch_size=args.batch, positives_per_anchor=4, seed=0,
                            device=device, hard_negatives=args.hard_negatives)
    n = min(len(sampler), 50)
    sync(device)
    start = time.perf_counter()
    sampled = sum(sampler.batch_at(0, i).num_pairs for i in range(n))
    sync(device)
    sampler_pairs_s = sampled / (time.perf_counter() - start)

    results = {
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
                    "threads": torch.get_num_threads()},
        "command": " ".join(["python", *sys.argv]),
        "settings": vars(args),
        "sampler_alone": {"pairs_per_s": sampled and sampler_pairs_s},
    }
    if not args.skip_frozen:
        results["frozen"] = {name: bench_variant(name, args, data, source, table, device)
                             for name in args.frozen_variants.split(",") if name}
    del source, table, sampler  # the frozen feature table can fill most of a GPU
    if device.type == "cuda":
        torch.cuda.empty_cache()
    results["finetune"] = {name: bench_finetune(name, args, device)
                           for name in args.ft_backbones.split(",") if name}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + "\n")


if __name__ == "__main__":
    main()
