"""The README's main command on the smallest demo configuration, stage by stage."""

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

SMALL_DEMO = ["domain.generator.num_products=200", "domain.generator.image_size=64", "show_progress=false"]


def _run(script: str, tmp_path, *overrides: str) -> dict:
    cmd = [sys.executable, str(REPO_ROOT / "scripts" / script), f"paths.data_root={tmp_path / 'data'}",
           f"paths.runs_root={tmp_path / 'runs'}", *SMALL_DEMO, *overrides]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout[proc.stdout.index("{") : proc.stdout.rindex("}") + 1])


def test_demo_build_and_images(tmp_path):
    built = _run("build_graph.py", tmp_path)
    assert built["domain"] == "demo" and built["products"] == 200
    assert built["relation_edges"]["also_bought"] > 200
    assert built["descriptions"] > 4
    report = json.loads((tmp_path / "data" / "demo" / "processed" / "build_report.json").read_text())
    assert report["cleaning"]["duplicate_records_merged"] > 0  # the demo's designed messiness
    images = _run("download_images.py", tmp_path)
    # The demo lists local images for ~90% of products; all of them must verify.
    assert images["ok"] >= 150 and images["broken"] == 0 and images["refused"] == 0
    assert images["ok"] + images["missing"] == 200
    again = _run("download_images.py", tmp_path)
    assert again["cached"] == images["ok"]
