"""The relation attention's core under CPU bf16 autocast: SDPA backends vs explicit matmuls.

``RelationCrossAttention`` groups a step's views by product and attends ``(N, H, K, d)`` queries
over each product's ``(N, H, L, d)`` keys and values. Under ``train.amp_cpu`` it uses explicit
matmuls with a float32 softmax (``_attend_explicit``) instead of
:func:`torch.nn.functional.scaled_dot_product_attention`; this measures why: forward and
backward time of each formulation at a demo step's shape (about 2,750 products, 4 heads of 64,
49 image tokens), float32 and bfloat16, interleaved, median of ``--repeats``.

    python benchmarks/bench_attention_cpu.py --threads 1 --out benchmarks/results/attention_cpu_s15.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from rcml_graph.io_utils import atomic_write_json
from rcml_graph.model.attention import RelationCrossAttention


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--products", type=int, default=2750)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--queries", type=int, default=16, help="padded views per product (K)")
    parser.add_argument("--tokens", type=int, default=49)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    attention = RelationCrossAttention(8, 8, 8, d_model=args.heads * args.head_dim, num_heads=args.heads)
    n, h, k, length, d = args.products, args.heads, args.queries, args.tokens, args.head_dim
    attend = torch.rand(n, length) < 0.9
    attend[:, 0] = True

    def sdpa(backend: SDPBackend):
        def run(q, key, value):
            with sdpa_kernel([backend]):
                return torch.nn.functional.scaled_dot_product_attention(q, key, value,
                                                                        attn_mask=attend[:, None, None, :])
        return run

    variants = {"sdpa_flash": sdpa(SDPBackend.FLASH_ATTENTION), "sdpa_math": sdpa(SDPBackend.MATH),
                "explicit": lambda q, key, value: attention._attend_explicit(q, key, value, attend)}
    results: dict[str, dict[str, float]] = {}
    for dtype in (torch.float32, torch.bfloat16):
        q = torch.randn(n, h, k, d, dtype=dtype, requires_grad=True)
        key = torch.randn(n, h, length, d, dtype=dtype, requires_grad=True)
        value = torch.randn(n, h, length, d, dtype=dtype, requires_grad=True)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, fn in variants.items():  # interleaved
                start = time.perf_counter()
                out = fn(q, key, value)
                middle = time.perf_counter()
                out.float().sum().backward()
                times[name].append((middle - start, time.perf_counter() - middle))
                q.grad = key.grad = value.grad = None
        for name, pairs in times.items():
            forward = statistics.median(a for a, _ in pairs)
            backward = statistics.median(b for _, b in pairs)
            results[f"{name}_{str(dtype).removeprefix('torch.')}"] = {
                "forward_ms": 1e3 * forward, "backward_ms": 1e3 * backward, "total_ms": 1e3 * (forward + backward)}
    for name, row in results.items():
        print(f"{name:24s} forward {row['forward_ms']:7.0f} ms  backward {row['backward_ms']:7.0f} ms")
    if args.out:
        atomic_write_json(args.out, {
            "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
            "machine": {"processor": platform.processor() or platform.machine(), "torch": torch.__version__,
                        "threads": args.threads, "cpu_capability": torch.backends.cpu.get_cpu_capability()},
            "shape": {"products": n, "heads": h, "queries": k, "tokens": length, "head_dim": d},
            "results": results,
        })


if __name__ == "__main__":
    main()
