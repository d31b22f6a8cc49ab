"""What cutting text batches to their longest row (``trim_text_batch``) saves in the text tower.

For each backbone and each built domain graph: the token length of its relation descriptions and
product texts against the backbone's context length, and the text tower's forward + backward time
(every text-tower parameter trainable, as in ``train.backbone=finetune`` with all blocks) on the
full-context batch and on the cut batch, interleaved, median of ``--repeats``. In fine-tune mode a
training step encodes every description its pairs use with gradients, so the description rows
are RCML's own extra text-tower work over the CLIP special case; product texts are both's.

    python benchmarks/bench_text_trim.py --backbones offline,clip_b32 --domains demo,magazines \
        --out benchmarks/results/text_trim_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from rcml_graph.backbones import build_backbone, trim_text_batch
from rcml_graph.data.graph_io import load_graph
from rcml_graph.io_utils import atomic_write_json


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def forward_backward(backbone, tokens: dict[str, torch.Tensor], device: torch.device) -> float:
    """Seconds for one text-tower forward and backward of ``tokens``."""
    batch = {k: v.to(device) for k, v in tokens.items()}
    sync(device)
    start = time.perf_counter()
    out = backbone.encode_text(batch)
    (out.global_emb.float().square().sum() + out.tokens.float().square().mean()).backward()
    sync(device)
    backbone.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def measure(backbone, texts: list[str], repeats: int, device: torch.device) -> dict[str, float]:
    full = backbone.tokenize(texts)
    cut = trim_text_batch(full)
    lengths = full["attention_mask"].sum(dim=1).float()
    forward_backward(backbone, full, device)  # warm-up, both shapes
    forward_backward(backbone, cut, device)
    times_full, times_cut = [], []
    for _ in range(repeats):  # interleaved, so load drift hits both alike
        times_full.append(forward_backward(backbone, full, device))
        times_cut.append(forward_backward(backbone, cut, device))
    full_s, cut_s = statistics.median(times_full), statistics.median(times_cut)
    return {
        "texts": len(texts),
        "context_length": int(full["input_ids"].shape[1]),
        "cut_length": int(cut["input_ids"].shape[1]),
        "mean_tokens": float(lengths.mean()),
        "max_tokens": float(lengths.max()),
        "full_s": full_s,
        "cut_s": cut_s,
        "speedup": full_s / cut_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", default="offline,clip_b32")
    parser.add_argument("--domains", default="demo,magazines")
    parser.add_argument("--data-root", default=str(Path(__file__).resolve().parents[1] / "datasets"))
    parser.add_argument("--product-batch", type=int, default=128, help="product texts per timed batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results: dict[str, object] = {
        "machine": {"platform": platform.platform(), "python": sys.version.split()[0], "torch": torch.__version__,
                    "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
                    "threads": torch.get_num_threads()},
        "command": " ".join(["python", *sys.argv]),
        "settings": vars(args),
    }
    graphs = {}
    for domain in [d for d in args.domains.split(",") if d]:
        processed = Path(args.data_root) / domain / "processed"
        if not (processed / "graph.json").is_file():
            raise FileNotFoundError(f"no built graph for domain {domain!r} in {processed}; build it with "
                                    f"`python scripts/build_graph.py domain={domain}` or leave it out of --domains")
        graphs[domain] = load_graph(processed)
    for name in [b for b in args.backbones.split(",") if b]:
        torch.manual_seed(0)
        backbone = build_backbone(name, device=device).train()
        for param in backbone.parameters():
            param.requires_grad_(True)
        for domain, data in graphs.items():
            g = torch.Generator().manual_seed(0)
            texts = list(data["product"].text)
            pick = torch.randperm(len(texts), generator=g)[: args.product_batch].tolist()
            row = {
                "descriptions": measure(backbone, list(data.relation_text), args.repeats, device),
                "product_texts": measure(backbone, [texts[i] for i in pick], args.repeats, device),
            }
            results[f"{name}/{domain}"] = row
            print(name, domain, json.dumps(row), flush=True)
    if args.out:
        atomic_write_json(Path(args.out), results)


if __name__ == "__main__":
    main()
