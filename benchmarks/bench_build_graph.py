"""Benchmark: Amazon metadata -> relation-described graph, records/s and peak memory.

    python benchmarks/bench_build_graph.py --sizes 10000 100000 1000000

For each size it writes a synthetic Amazon-2018-format file (gzip; titles, descriptions,
categories, brands, ~10 also_buy and ~10 also_view targets per product with interest structure,
20% of targets outside the file, 3% duplicate records, some HTML titles), then runs the
whole build (read, clean, communities, descriptions, splits, statistics, atomic write) in a
fresh subprocess pinned to one core (``taskset -c <core>``, one BLAS thread) so that its peak
RSS and time are the build's own. Results go to benchmarks/results/build_graph.json
(atomically), with the seconds of each build stage and the machine's load average before and
after each size: the machine may be shared, and a loaded one runs every stage slower.

    --data-dir DIR   keep the generated inputs there and reuse them (generation is not timed)
    --core N         the core the build is pinned to (default 0)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rcml_graph.io_utils import atomic_write_json  # noqa: E402

CATEGORIES = [f"Category {c}" for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"] + [f"Leaf {i}" for i in range(74)]
WORDS = ("light durable compact steel carbon blue red green waterproof portable classic pro "
         "deluxe mini travel outdoor kids adult premium set pack kit").split()


def write_synthetic(path: Path, num_products: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    num_interests = max(num_products // 500, 4)
    interest = rng.integers(0, num_interests, num_products)
    category = rng.integers(0, len(CATEGORIES), num_products)
    order = np.argsort(interest, kind="stable")
    start = np.searchsorted(interest[order], np.arange(num_interests))
    size = np.bincount(interest, minlength=num_interests)
    degree = 10
    # also_buy: mostly inside the product's interest; also_view: mostly same category.
    pick = rng.random((num_products, degree))
    same = order[start[interest][:, None] + (pick * size[interest][:, None]).astype(np.int64)]
    random_t = rng.integers(0, num_products, (num_products, degree))
    buy = np.where(rng.random((num_products, degree)) < 0.8, same, random_t)
    view = rng.integers(0, num_products, (num_products, degree))
    dangling = rng.random((num_products, degree)) < 0.2
    asin = [f"B{i:09d}" for i in range(num_products)]
    words = np.array(WORDS)
    title_words = rng.integers(0, len(WORDS), (num_products, 4))
    duplicate = rng.random(num_products) < 0.03
    with gzip.open(path, "wb", compresslevel=1) as handle:
        for i in range(num_products):
            targets_buy = [asin[t] if not d else f"X{t:09d}" for t, d in zip(buy[i], dangling[i])]
            title = " ".join(words[title_words[i]]) + f" {CATEGORIES[category[i]].lower()}"
            record = {
                "asin": asin[i],
                "title": title if i % 10 else '<span class="a-size-medium a-color-secondary"',
                "description": [f"A {title} for everyday use. Model {i}."],
                "category": ["Synthetic", CATEGORIES[category[i] % 26], CATEGORIES[category[i]]],
                "brand": f"Brand {i % 997}",
                "image": [f"https://example.com/{asin[i]}.jpg"],
                "also_buy": targets_buy,
                "also_view": [asin[t] for t in view[i]],
            }
            line = orjson.dumps(record) + b"\n"
            handle.write(line)
            if duplicate[i]:
                handle.write(line)


def run_build(meta: Path, out: Path) -> dict:
    """Run in a subprocess: build and report time and peak RSS."""
    from rcml_graph.data.graph import GraphSettings
    from rcml_graph.data.pipeline import build_domain

    start = time.perf_counter()
    outcome = build_domain(meta, out, GraphSettings(), force=True, show_progress=False)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    timing = dict(outcome.report["timing_seconds"])
    # build_domain's "total" stops before the artifacts are written (the report is one).
    timing["hash_input_and_write"] = round(seconds - timing["total"], 3)
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu.ru_utime + cpu.ru_stime,
        "peak_rss_mb": peak_kib / 1024,
        "lines": outcome.report["cleaning"]["lines"],
        "products": outcome.report["graph"]["products"],
        "edges": outcome.report["graph"]["relation_edges_undirected"],
        "community_method": outcome.report["graph"]["communities"]["co_purchase"]["method"],
        "communities": outcome.report["graph"]["communities"]["co_purchase"]["count"],
        "timing_seconds": timing,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "build_graph.json")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="keep generated inputs here and reuse them")
    parser.add_argument("--core", type=int, default=0, help="the core the build is pinned to")
    parser.add_argument("--child", nargs=2, metavar=("META", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_build(Path(args.child[0]), Path(args.child[1]))))
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data_dir or Path(tmp)
        data_dir.mkdir(parents=True, exist_ok=True)
        for size in args.sizes:
            meta = data_dir / f"meta_{size}.json.gz"
            if args.data_dir is None or not meta.is_file():
                write_synthetic(meta, size)
            # One core, as the target says.
            env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
            load_before = os.getloadavg()
            proc = subprocess.run(
                ["taskset", "-c", str(args.core), sys.executable, __file__, "--child", str(meta),
                 str(Path(tmp) / f"out_{size}")],
                capture_output=True, text=True, env=env, check=True,
            )
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["size"] = size
            row["records_per_s"] = row["lines"] / row["seconds"]
            row["load_average_1_5_15min"] = {
                "before": [round(x, 2) for x in load_before],
                "after": [round(x, 2) for x in os.getloadavg()],
            }
            rows.append(row)
            print(json.dumps(row))
    result = {
        "benchmark": "build_graph",
        "command": " ".join([sys.executable, *sys.argv]),
        "niceness": os.nice(0),
        "parent_cpu_affinity": sorted(os.sched_getaffinity(0)),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "pinned_to_one_core": True,
        "target": "1M products end to end in <= 180 s on one core, peak RSS <= 6 GB",
        "rows": rows,
    }
    atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
