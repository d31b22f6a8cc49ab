"""Peak memory and speed of one demo RCML training epoch under different heap allocators (CPU).

A CPU training run holds far more resident memory than its live tensors, because glibc's malloc
keeps freed heap memory (docs/benchmarks.md, session 15). This runs the same one-epoch demo
training (session-6 protocol, ``train.amp_cpu=true``, 1 thread) once per allocator setting and
repetition, each in its own process, interleaved, and records the process's peak resident set
(``os.wait4``'s ``ru_maxrss``), its user and system CPU time, and the run's own pairs/s
(``metrics.json``). Needs a built demo (``python scripts/build_graph.py domain=demo`` and its
feature cache); the jemalloc setting needs ``libjemalloc.so.2`` (Debian: ``apt install
libjemalloc2``) and is skipped, with the reason recorded, where it is missing::

    python benchmarks/bench_allocators.py --out benchmarks/results/allocators_cpu_s16.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
SETTINGS = {
    "glibc": {},
    "glibc_mmap_1mib": {"MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "1048576"},
    "jemalloc": {"LD_PRELOAD": JEMALLOC},
}
PROTOCOL = ["experiment=rcml", "train.seed=0", "train.epochs=1", "train.batch_size=256",
            "train.hard_negatives=8", "train.random_negatives=8", "train.warmup_steps=10",
            "train.val_max_queries=500", "train.patience=null", "train.compile_loss=false",
            "train.validate_before=false", "train.amp_cpu=true", "show_progress=false"]


def run_once(setting: str, extra_env: dict[str, str], run_dir: Path, overrides: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra_env}
    cmd = [sys.executable, "-m", "rcml_graph.train", *PROTOCOL, f"train.run_dir={run_dir}", *overrides]
    start = time.perf_counter()
    with open(run_dir.with_suffix(".log"), "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    row = {"setting": setting, "env": extra_env, "exit_status": os.waitstatus_to_exitcode(status),
           "wall_s": round(wall, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3),
           "user_s": round(usage.ru_utime, 1), "system_s": round(usage.ru_stime, 1)}
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        row["pairs_per_s"] = json.loads(metrics.read_text()).get("train/pairs_per_s")
    else:
        row["error"] = f"no metrics.json; log: {run_dir.with_suffix('.log')}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="JSON file for the rows")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {sorted(SETTINGS)}")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--note", default="", help="the machine's state (other load) for the record")
    parser.add_argument("overrides", nargs="*", help="further Hydra overrides for the training run")
    args = parser.parse_args()
    names = args.settings.split(",")
    unknown = sorted(set(names) - set(SETTINGS))
    if unknown:
        parser.error(f"--settings {unknown}: accepted {sorted(SETTINGS)}")
    rows, skipped = [], {}
    with tempfile.TemporaryDirectory(prefix="bench_alloc_") as tmp:
        for rep in range(args.repeats):
            for name in names:
                extra = SETTINGS[name]
                if "LD_PRELOAD" in extra and not Path(extra["LD_PRELOAD"]).exists():
                    skipped[name] = f"{extra['LD_PRELOAD']} not found (apt install libjemalloc2)"
                    continue
                row = {"rep": rep, **run_once(name, extra, Path(tmp) / f"{name}_{rep}", args.overrides)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    result = {"command": " ".join(["python", *sys.argv]), "machine": platform.processor() or platform.machine(),
              "cpu_count": os.cpu_count(), "note": args.note, "protocol": PROTOCOL + args.overrides,
              "skipped": skipped, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    tmp_out = Path(args.out).with_suffix(".tmp")
    tmp_out.write_text(json.dumps(result, indent=1) + "\n")
    tmp_out.replace(args.out)


if __name__ == "__main__":
    main()
