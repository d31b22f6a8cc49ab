"""rcml_graph.train and rcml_graph.evaluate on CUDA (``python -m pytest -m gpu``), against the
CPU runs of the same configuration."""

from __future__ import annotations

import json
import math

import torch
from hydra import compose, initialize_config_dir

from rcml_graph.cli import CONFIG_DIR, register_configs
from rcml_graph.evaluate import evaluate
from rcml_graph.train import train
from rcml_graph.training import load_checkpoint
from rcml_graph.training.encoder import ConditionedEncoder
from tests.test_gpu import CUDA, pytestmark  # noqa: F401  (gpu marker, skip without CUDA)
from tests.training.test_train import demo, make_cfg  # noqa: F401  (module fixture)


def test_cuda_training_learns_and_writes_metrics(demo, tmp_path):  # noqa: F811
    metrics = train(make_cfg(demo, tmp_path, f"train.device={CUDA}", "train.epochs=6", "train.lr=1e-2",
                             "train.patience=null"))
    assert metrics["init/val/hit@5"] < 0.4  # 21 candidates: chance is 5/21
    assert metrics["best/val/hit@5"] >= metrics["init/val/hit@5"] + 0.1
    assert metrics["train/pairs_per_s"] > 0
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["best/val/hit@5"] == metrics["best/val/hit@5"]


def test_cuda_resume_after_kill_matches_uninterrupted_run(demo, tmp_path):  # noqa: F811
    common = ("train.epochs=2", "train.patience=null", "train.max_steps=null", "train.deterministic=true",
              f"train.device={CUDA}")
    full = train(make_cfg(demo, tmp_path / "full", *common))
    killed = train(make_cfg(demo, tmp_path / "split", *common, "train.stop_after_epoch=1"))
    assert killed["interrupted"] == 1.0
    resumed = train(make_cfg(demo, tmp_path / "split", *common, "train.resume=latest"))
    timing = {"train/pairs_per_s"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in full.items() if k not in timing}
    assert not math.isnan(full["val/hit@5"])
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["modules"]
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["modules"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_cuda_encoder_and_evaluation_match_cpu(demo, tmp_path):  # noqa: F811
    train(make_cfg(demo, tmp_path / "run", "train.epochs=1"))
    checkpoint = tmp_path / "run" / "checkpoints" / "best.pt"
    products, relations = torch.arange(40), torch.arange(40) % 5
    views = {}
    for device in ("cpu", CUDA):
        encoder = ConditionedEncoder.from_checkpoint(checkpoint, device=device)
        views[device] = (encoder.encode(products, relations), encoder.encode_query(products, relations))
    for cpu, gpu in zip(views["cpu"], views[CUDA]):
        torch.testing.assert_close(gpu.text.cpu(), cpu.text, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gpu.image.cpu(), cpu.image, rtol=1e-4, atol=1e-5)

    summaries = {}
    register_configs()
    for device in ("cpu", str(CUDA)):
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("config", overrides=[
                f"paths.data_root={demo}", "model=tiny", "eval.zero_shot=false", f"checkpoint={checkpoint}",
                "eval.seeds=[0]", "eval.max_queries=60", "eval.full_corpus_queries=30", "eval.plots=false",
                f"eval.device={device}", f"eval.output_dir={tmp_path / device}",
                f"eval.results_dir={tmp_path / 'results'}", "show_progress=false"])
        summaries[device] = evaluate(cfg)
    cpu, gpu = summaries["cpu"], summaries[str(CUDA)]
    assert cpu.keys() == gpu.keys() and any("retrieval" in k for k in cpu)
    for key, value in cpu.items():
        # float32 on both; a near-tie may rank differently, so allow one query's worth
        assert abs(gpu[key] - value) <= 0.034, (key, value, gpu[key])
