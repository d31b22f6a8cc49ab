"""Throughput of the relation-aware pair sampler on a synthetic product graph.

Times :meth:`RelationPairSampler.batch_at` (positives, self pairs, hard negatives, unique
products and the false-negative coordinates) against a bare uniform CSR draw on the same
graph, plus the latency of one training-sized batch including the dense (P, P) mask. On CPU
it also iterates the sampler the way training does, with 1 and ``--workers`` prefetch threads
(batches computed concurrently, handed out in order).

    python benchmarks/bench_sampler.py --products 1000000 --edges 20000000 --device cpu
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch_geometric.data import HeteroData

from rcml_graph.relations import PRODUCT, RELATION_KINDS, SELF_RELATION_TEXT, edge_type
from rcml_graph.sampling import RelationPairSampler, false_negative_mask
from rcml_graph.sampling.sampler import FALSE_NEGATIVE_SCOPES


def synthetic_graph(num_products: int, num_edges: int, num_categories: int,
                    descs_per_kind: int, seed: int) -> HeteroData:
    """Uniform random relation edges (80/10/10 train/val/test) split evenly over the kinds."""
    g = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data[PRODUCT].num_nodes = num_products
    data[PRODUCT].category_id = torch.randint(0, num_categories, (num_products,), generator=g)
    per_kind = num_edges // len(RELATION_KINDS)
    for k, kind in enumerate(RELATION_KINDS):
        store = data[edge_type(kind)]
        store.edge_index = torch.randint(0, num_products, (2, per_kind), generator=g)
        store.desc_id = 1 + k * descs_per_kind + torch.randint(0, descs_per_kind, (per_kind,),
                                                               generator=g)
        split = torch.rand(per_kind, generator=g)
        store.split = ((split > 0.8).to(torch.uint8) + (split > 0.9).to(torch.uint8))
    data.relation_text = [SELF_RELATION_TEXT] + [
        f"{kind} context {i}" for kind in RELATION_KINDS for i in range(descs_per_kind)]
    data.relation_kind_of_desc = torch.tensor(
        [-1] + [k for k in range(len(RELATION_KINDS)) for _ in range(descs_per_kind)])
    return data


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, device: torch.device, warmup: int, min_seconds: float,
               min_calls: int) -> tuple[float, int, int, float]:
    """Mean seconds per call, calls, items produced and the fastest call's items per second.

    The fastest call is reported too because on a shared machine the mean mostly measures
    the other tenants.
    """
    for i in range(warmup):
        fn(i)
    synchronize(device)
    start, calls, items, best = time.perf_counter(), 0, 0, 0.0
    while calls < min_calls or time.perf_counter() - start < min_seconds:
        tic = time.perf_counter()
        produced = fn(warmup + calls)
        synchronize(device)
        best = max(best, produced / (time.perf_counter() - tic))
        items += produced
        calls += 1
    return (time.perf_counter() - start) / calls, calls, items, best


def bare_uniform_draw(sampler: RelationPairSampler, num_pairs: int,
                      generator: torch.Generator) -> torch.Tensor:
    """The reference: uniform anchors with at least one pair, one uniform neighbour each."""
    device = sampler.device
    slot = torch.randint(0, sampler.num_slots, (num_pairs,), generator=generator, device=device)
    anchor = sampler.slot_anchor.index_select(0, slot)
    start = sampler.rowptr.index_select(0, anchor)
    degree = sampler.rowptr.index_select(0, anchor + 1) - start
    offset = torch.randint(0, 1 << 62, (num_pairs,), generator=generator, device=device) % degree
    return sampler.pool.index_select(0, start + offset + sampler.relation_offset)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_json_atomically(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(payload, f, indent=2)
        tmp = f.name
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--edges", type=int, default=20_000_000, help="forward edges, all splits")
    parser.add_argument("--categories", type=int, default=2_000)
    parser.add_argument("--descs-per-kind", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16_384, help="anchor slots per batch")
    parser.add_argument("--positives-per-anchor", type=int, default=4)
    parser.add_argument("--hard-negatives", type=int, default=1)
    parser.add_argument("--train-batch-size", type=int, default=256,
                        help="slots of the training-sized batch timed with the dense mask")
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="torch CPU threads (on a shared machine 1 avoids OpenMP stalls)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="prefetch worker threads for the iterated figure (CPU; 1 is "
                             "always measured too)")
    parser.add_argument("--false-negative-scope", choices=FALSE_NEGATIVE_SCOPES, default="description",
                        help="any_link enumerates each pair's whole anchor neighbourhood for the "
                             "false-negative coordinates (the unconditioned_anylink baseline)")
    parser.add_argument("--relation-negative-fraction", type=float, default=None,
                        help="share of relation-specific hard negatives (default: 0.5, and 0 with "
                             "--false-negative-scope any_link, which masks them all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    out = args.out or Path(__file__).parent / "results" / f"sampler_{args.device}.json"

    fraction = args.relation_negative_fraction
    if fraction is None:
        fraction = 0.0 if args.false_negative_scope == "any_link" else 0.5
    t0 = time.perf_counter()
    data = synthetic_graph(args.products, args.edges, args.categories, args.descs_per_kind,
                           args.seed)
    t1 = time.perf_counter()
    sampler = RelationPairSampler(
        data, batch_size=args.batch_size, positives_per_anchor=args.positives_per_anchor,
        num_hard_negatives=args.hard_negatives, seed=args.seed, device=device,
        false_negative_scope=args.false_negative_scope, relation_negative_fraction=fraction)
    synchronize(device)
    t2 = time.perf_counter()
    del data  # the sampler holds its own CSR
    sampler._epoch_order(0)
    synchronize(device)
    epoch_setup_s = time.perf_counter() - t2
    num_batches = len(sampler)

    counted = {"positive": 0, "all": 0}

    def sample(i: int) -> int:
        batch = sampler.batch_at(0, i % num_batches)
        counted["positive"] += int((~batch.is_self).sum())
        counted["all"] += batch.num_pairs
        return batch.num_pairs

    sec_per_batch, calls, pairs, best_pairs_per_s = time_calls(
        sample, device, warmup=3, min_seconds=args.min_seconds, min_calls=10)
    pairs_per_s = pairs / (sec_per_batch * calls)
    positive_pairs_per_s = pairs_per_s * counted["positive"] / counted["all"]

    # the library path a training loop uses: iterate the sampler with prefetch worker
    # threads (each with its own product table, torch ops releasing the GIL)
    iterated = {}
    for workers in sorted({1, args.workers}) if device.type == "cpu" else ():
        sampler.set_epoch(1)
        sampler.prefetch, sampler.prefetch_workers = workers, workers
        iterator = iter(sampler)
        for _ in range(2 * workers):  # workers' first calls build their product tables
            next(iterator)
        start, produced, taken = time.perf_counter(), 0, 0
        while time.perf_counter() - start < args.min_seconds and taken < num_batches - 4 * workers:
            produced += next(iterator).num_pairs
            taken += 1
        elapsed = time.perf_counter() - start
        iterator.close()
        iterated[f"workers_{workers}"] = {"batches": taken, "pairs_per_s": round(produced / elapsed)}
    sampler.prefetch, sampler.prefetch_workers = 0, 1

    generator = torch.Generator(device=device).manual_seed(args.seed)
    bare_size = pairs // calls
    bare_sec, _, _, bare_best = time_calls(
        lambda i: (bare_uniform_draw(sampler, bare_size, generator), bare_size)[1], device,
        warmup=3, min_seconds=args.min_seconds / 2, min_calls=10)

    small = copy.copy(sampler)  # shares the CSR; only the batch size differs
    small.batch_size = args.train_batch_size
    small_pairs = [0]
    masked = {"entries": 0, "pairs": 0}

    def sample_with_mask(i: int) -> int:
        batch = small.batch_at(0, i % len(small))
        mask = false_negative_mask(batch, with_hard_negatives=True)
        small_pairs[0] = batch.num_pairs
        masked["entries"] += batch.false_negative_index.shape[1]
        masked["pairs"] += batch.num_pairs
        return int(mask.shape[0])

    small_sec, _, _, _ = time_calls(sample_with_mask, device, warmup=3,
                                           min_seconds=args.min_seconds / 2, min_calls=20)

    result = {
        "command": " ".join([sys.executable, *sys.argv]) if argv is None else
                   " ".join(["bench_sampler.py", *argv]),
        "machine": {
            "cpu": cpu_model(), "cpu_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
            "torch": torch.__version__, "python": platform.python_version(),
            "device": (torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"),
        },
        "graph": {"products": args.products, "forward_edges": args.edges,
                  "training_pairs": sampler.num_pairs, "descriptions": sampler.num_descriptions,
                  "categories": args.categories, "slots": sampler.num_slots,
                  "generate_s": round(t1 - t0, 3), "sampler_build_s": round(t2 - t1, 3)},
        "throughput_batch": {
            "batch_size_slots": args.batch_size, "positives_per_anchor": args.positives_per_anchor,
            "hard_negatives": args.hard_negatives, "pairs_per_batch": pairs // calls,
            "false_negative_scope": args.false_negative_scope, "relation_negative_fraction": fraction,
            "ms_per_batch": round(sec_per_batch * 1e3, 3), "timed_batches": calls,
            "pairs_per_s": round(pairs_per_s), "positive_pairs_per_s": round(positive_pairs_per_s),
            "best_batch_pairs_per_s": round(best_pairs_per_s),
            "epoch_setup_s": round(epoch_setup_s, 3),
            "epoch_setup_share": round(epoch_setup_s / (epoch_setup_s + sec_per_batch
                                                        * num_batches), 4),
            # a whole epoch's pairs over its batches plus its setup (slot permutation)
            "pairs_per_s_with_epoch_setup": round(
                pairs_per_s * sec_per_batch * num_batches
                / (epoch_setup_s + sec_per_batch * num_batches)),
        },
        "iterated_with_prefetch_workers": iterated,
        "bare_uniform_csr_draw": {"pairs_per_call": bare_size,
                                  "pairs_per_s": round(bare_size / bare_sec),
                                  "best_call_pairs_per_s": round(bare_best)},
        "training_batch_with_dense_mask": {
            "batch_size_slots": args.train_batch_size, "pairs_per_batch": small_pairs[0],
            "ms_per_batch": round(small_sec * 1e3, 3),
            # (pair, product) false-negative coordinates per pair, the pair's own target included
            "false_negative_entries_per_pair": round(masked["entries"] / max(masked["pairs"], 1), 3),
        },
    }
    write_json_atomically(out, result)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
