"""The main job end to end: graph -> images -> token features -> training -> evaluation.

    python scripts/run_pipeline.py                                  # the offline demo
    python scripts/run_pipeline.py domain=magazines pipeline.methods=rcml,unconditioned
    python scripts/run_pipeline.py train.epochs=20 pipeline.methods=rcml,clip,unconditioned

Every other argument is a Hydra override passed to each stage unchanged. Each stage runs as
its own process (the same commands a user runs one by one) and is resumable or cheap to
rerun: an unchanged graph, image cache or feature cache is reused. The trained checkpoints of
``pipeline.methods`` (experiment names) are evaluated together; the run folder is printed.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
METHODS_KEY = "pipeline.methods="
DEFAULT_METHODS = ("rcml", "clip", "unconditioned")
#: CPU-sized settings for the demo world (about an hour on 2 cores, most of it RCML's two
#: epochs: every relation pair is contrasted with 10 negatives embedded under its relation):
#: fewer epochs, negatives and validation/evaluation queries than the configs' defaults, and a
#: warm-up that fits a run of about a hundred steps. Any of them can be overridden.
DEMO_DEFAULTS = (
    "train.epochs=2", "train.warmup_steps=10", "train.hard_negatives=2", "train.random_negatives=8",
    "train.val_max_queries=500", "eval.max_queries=500", "eval.full_corpus_queries=100",
)


def _stage(args: list[str]) -> None:
    print(f"\n=== {' '.join(args)}", flush=True)
    completed = subprocess.run([sys.executable, *args], cwd=REPO)
    if completed.returncode != 0:
        raise SystemExit(f"stage failed ({completed.returncode}): {' '.join(args)}")


def _override(overrides: list[str], key: str, default: str) -> str:
    for item in overrides:
        if item.startswith(key + "="):
            return item.split("=", 1)[1]
    return default


def main(argv: list[str]) -> None:
    methods = list(DEFAULT_METHODS)
    overrides = []
    for arg in argv:
        if arg.startswith(METHODS_KEY):
            methods = [m for m in arg[len(METHODS_KEY):].split(",") if m]
        else:
            overrides.append(arg)
    if not methods:
        raise SystemExit(f"{METHODS_KEY} is empty; accepted: a comma list of experiments, e.g. rcml,clip")
    domain = _override(overrides, "domain", "demo")
    if domain == "demo":
        given = {item.split("=", 1)[0] for item in overrides}
        overrides = [d for d in DEMO_DEFAULTS if d.split("=", 1)[0] not in given] + overrides
    runs_root = Path(_override(overrides, "paths.runs_root", str(REPO / "runs")))
    run_dir = runs_root / domain / "pipeline" / dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")

    _stage([str(REPO / "scripts" / "build_graph.py"), *overrides])
    _stage([str(REPO / "scripts" / "download_images.py"), *overrides])
    _stage(["-m", "rcml_graph.features", *overrides])
    checkpoints = []
    for method in methods:
        method_dir = run_dir / method
        _stage(["-m", "rcml_graph.train", f"experiment={method}", f"train.run_dir={method_dir}", *overrides])
        checkpoints.append(str(method_dir / "checkpoints" / "best.pt"))
    _stage(["-m", "rcml_graph.evaluate", f"eval.checkpoints=[{','.join(checkpoints)}]",
            f"eval.output_dir={run_dir / 'evaluate'}", *overrides])
    print(json.dumps({"run_dir": str(run_dir), "checkpoints": checkpoints,
                      "results": str(run_dir / "evaluate" / "results.md")}, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
