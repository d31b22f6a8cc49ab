"""The README's main command (scripts/run_pipeline.py) on the smallest demo configuration."""

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT

SMALL_DEMO = [
    "domain.generator.num_products=200", "domain.generator.image_size=64", "model=tiny",
    "train.epochs=1", "train.batch_size=64", "eval.seeds=[0]", "eval.max_queries=40",
    "eval.full_corpus_queries=20", "eval.tsne_points=100", "features.num_workers=0",
    "show_progress=false", "pipeline.methods=rcml,clip",
]


def test_readme_main_command_on_a_small_demo(tmp_path):
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / "run_pipeline.py"),
           f"paths.data_root={tmp_path / 'data'}", f"paths.runs_root={tmp_path / 'runs'}", *SMALL_DEMO]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.rindex("{\n  \"run_dir\"") :])

    processed = tmp_path / "data" / "demo" / "processed"
    report = json.loads((processed / "build_report.json").read_bytes())
    assert report["graph"]["products"] == 200
    assert report["cleaning"]["duplicate_records_merged"] > 0  # the demo's designed messiness
    images = json.loads((tmp_path / "data" / "demo" / "images" / "manifest.json").read_bytes())
    counts = images["counts"]
    assert counts["ok"] >= 150 and counts["broken"] == 0 and counts["refused"] == 0
    assert counts["ok"] + counts["missing"] == 200

    for checkpoint in summary["checkpoints"]:
        assert Path(checkpoint).is_file()
    results = json.loads((Path(summary["run_dir"]) / "evaluate" / "results.json").read_bytes())
    methods = {row["method"] for row in results["rows"]}
    assert {"zero_shot", "rcml", "clip"} <= methods
    hit5 = [row for row in results["rows"] if row["task"] == "retrieval" and row["metric"] == "hit@5"
            and row["method"] == "rcml" and row["mode"] == "avg"]
    assert hit5 and all(0.0 <= row["value"] <= 1.0 and row["n"] > 0 for row in hit5)
