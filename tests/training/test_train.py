"""rcml_graph.train on a small generated demo with the tiny backbone's token cache."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import rcml_graph.train as train_module
from rcml_graph.backbones import build_backbone
from rcml_graph.cli import CONFIG_DIR, register_configs
from rcml_graph.data.demo import generate_demo
from rcml_graph.data.graph import GraphSettings
from rcml_graph.data.pipeline import build_domain
from rcml_graph.feature_cache import build_feature_cache
from rcml_graph.train import train
from rcml_graph.training import TensorFeatures, load_checkpoint, save_checkpoint
from rcml_graph.training.encoder import ConditionedEncoder

NUM_PRODUCTS = 300


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/training/conftest.py


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """data_root with demo/processed and demo/features/tiny (float32 cache, tiny backbone)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("data")
    raw = root / "demo" / "raw"
    generate_demo(raw, num_products=NUM_PRODUCTS, seed=0, images=True, image_size=64)
    outcome = build_domain(raw / "meta_Demo.json.gz", root / "demo" / "processed", GraphSettings(),
                           show_progress=False)
    data = outcome.data
    paths = [str(raw / "images" / f"{asin}.jpg") if (raw / "images" / f"{asin}.jpg").is_file() else None
             for asin in data["product"].product_id]
    torch.manual_seed(0)
    backbone = build_backbone("tiny")
    build_feature_cache(data, backbone, root / "demo" / "features" / "tiny", image_paths=paths,
                        data_hash="test", model_key={"name": "tiny", "pretrained": None,
                                                     "checkpoint": None, "embed_dim": None, "seed": 0},
                        batch_size=64, num_workers=0, dtype="float32", show_progress=False)
    return root


def make_cfg(root: Path, run_dir: Path, *overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[
            f"paths.data_root={root}", "model=tiny", "train=debug", f"train.run_dir={run_dir}",
            "show_progress=false", *overrides])


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_checkpoint(a / "checkpoints" / "last.pt")["modules"], load_checkpoint(b / "checkpoints" / "last.pt")["modules"]
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_learning_raises_val_hit5_above_untrained(demo, tmp_path):
    metrics = train(make_cfg(demo, tmp_path, "train.epochs=6", "train.lr=1e-2", "train.patience=null"))
    assert metrics["init/val/hit@5"] < 0.4  # 21 candidates: chance is 5/21
    assert metrics["best/val/hit@5"] >= metrics["init/val/hit@5"] + 0.1
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written["best/val/hit@5"] == metrics["best/val/hit@5"]
    rows = (tmp_path / "metrics.csv").read_text().splitlines()
    assert rows[0] == "step,epoch,name,value" and any(",val/hit@5," in r for r in rows)
    assert (tmp_path / "checkpoints" / "best.pt").is_file()


def test_cpu_bf16_autocast_trains_under_autocast_and_learns(demo, tmp_path, monkeypatch):
    from rcml_graph.model.head import RCMLHead

    seen: list[tuple[bool, torch.dtype]] = []
    encode_views = RCMLHead.encode_views

    def spy(self, products, *args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), products.image_tokens.dtype))
        return encode_views(self, products, *args, **kwargs)

    monkeypatch.setattr(RCMLHead, "encode_views", spy)
    metrics = train(make_cfg(demo, tmp_path, "train.epochs=6", "train.lr=1e-2", "train.patience=null",
                             "train.amp_cpu=true"))
    # Training steps ran under bf16 autocast on tokens normalised once and stored in bf16;
    # validation reads the same table outside autocast.
    assert (True, torch.bfloat16) in seen and (False, torch.bfloat16) in seen
    assert {dtype for _, dtype in seen} == {torch.bfloat16}
    assert metrics["best/val/hit@5"] >= metrics["init/val/hit@5"] + 0.1


def test_resume_after_kill_matches_uninterrupted_run(demo, tmp_path):
    common = ("train.epochs=2", "train.patience=null", "train.max_steps=null")
    full = train(make_cfg(demo, tmp_path / "full", *common))
    killed = train(make_cfg(demo, tmp_path / "split", *common, "train.stop_after_epoch=1"))
    assert killed["interrupted"] == 1.0 and killed["epoch"] == 1.0
    resumed = train(make_cfg(demo, tmp_path / "split", *common, "train.resume=latest"))
    timing = {"train/pairs_per_s"}  # wall-clock, the only key allowed to differ
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in full.items() if k not in timing}
    assert resumed["val/hit@5"] == full["val/hit@5"] and not math.isnan(full["val/hit@5"])
    assert same_weights(tmp_path / "full", tmp_path / "split")


def test_resume_refuses_another_runs_checkpoint(demo, tmp_path):
    train(make_cfg(demo, tmp_path / "rcml", "train.epochs=2", "train.stop_after_epoch=1"))
    last = tmp_path / "rcml" / "checkpoints" / "last.pt"
    # resume=latest from a fresh sibling folder finds rcml's last.pt; another variant or seed
    # must not continue it
    for override in ("experiment=unconditioned", "train.seed=7"):
        with pytest.raises(ValueError, match=r"was trained with other settings than this run's: .*"
                           + ("variant: 'rcml' -> 'unconditioned'" if "experiment" in override
                              else "train.seed: 0 -> 7")):
            train(make_cfg(demo, tmp_path / "other", override, "train.epochs=2", "train.resume=latest"))
    assert not (tmp_path / "other" / "checkpoints").exists()
    # the same run continues with a longer schedule
    done = train(make_cfg(demo, tmp_path / "rcml", "train.epochs=3", f"train.resume={last}"))
    assert done["epoch"] == 3.0


def test_checkpoint_holds_training_state_and_loads_weights_only(demo, tmp_path):
    train(make_cfg(demo, tmp_path, "train.epochs=1"))
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    assert {"modules", "optimizer", "scheduler", "scaler", "epoch", "step", "rng", "config",
            "sampler", "early_stopping"} <= set(state)
    assert state["epoch"] == 1 and state["step"] > 0
    assert json.loads(state["config"])["variant"] == "rcml"


@pytest.mark.parametrize("experiment,beta,pairs", [
    ("clip", 1.0, "self"), ("unconditioned", 1.0, "relations"), ("no_inter", 0.5, "self"),
    ("no_intra", 0.5, "relations"), ("relation_ids", 0.5, "relations"), ("rcml", 0.5, "relations"),
    ("unconditioned_anylink", 1.0, "relations"),
])
def test_experiments_compose_and_train(demo, tmp_path, experiment, beta, pairs):
    metrics = train(make_cfg(demo, tmp_path, f"experiment={experiment}", "train.epochs=1",
                             "train.max_steps=3", "train.validate_before=false"))
    assert metrics["step"] == 3.0 and 0.0 <= metrics["val/hit@5"] <= 1.0
    config = json.loads(load_checkpoint(tmp_path / "checkpoints" / "last.pt")["config"])
    assert config["head"]["beta"] == beta and config["pairs"] == pairs
    if experiment == "clip":
        assert config["head"]["relation_mode"] == "none"
        assert config["cfg"]["model"]["variant"] == "clip"
    if experiment == "relation_ids":
        assert config["head"]["relation_mode"] == "ids"
    scope = "any_link" if experiment == "unconditioned_anylink" else "description"
    assert config["cfg"]["train"]["false_negative_scope"] == scope and config["method"] == experiment


def test_missing_cache_names_the_command(demo, tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m rcml_graph.features domain=demo model=tiny"):
        train(make_cfg(demo, tmp_path, f"train.cache_dir={tmp_path / 'nowhere'}"))


def test_bad_backbone_mode_is_named(demo, tmp_path):
    with pytest.raises(ValueError, match="'sideways'"):
        train(make_cfg(demo, tmp_path, "train.backbone=sideways"))


def test_bad_prefetch_is_named(demo, tmp_path):
    with pytest.raises(ValueError, match="prefetch_batches=-1"):
        train(make_cfg(demo, tmp_path, "train.prefetch_batches=-1"))


@pytest.mark.parametrize("override, named", [
    ("train.grad_clip=-1.0", "train.grad_clip=-1.0; accepted: null (no clipping) or > 0"),
    ("train.patience=0", "train.patience=0; accepted: null (never stop early) or >= 1"),
    ("train.log_every=0", "train.log_every=0"),
    ("train.w_global=-0.5", "train.w_global=-0.5"),
    ("train.monitor=val/hits@5", "train.monitor='val/hits@5' is not a validation metric; accepted: .*'val/hit@5'"),
])
def test_bad_loop_settings_are_named(demo, tmp_path, override, named):
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        train(make_cfg(demo, tmp_path, override, "train.max_steps=1"))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(demo, tmp_path, monkeypatch):
    train(make_cfg(demo, tmp_path, "train.epochs=1", "train.patience=null"))
    last = tmp_path / "checkpoints" / "last.pt"
    before = last.read_bytes()

    original = TensorFeatures.from_source.__func__

    def from_source(cls, source, device=None):
        table = original(cls, source, device)
        table.table.text_global[:] = float("nan")
        return table

    monkeypatch.setattr(TensorFeatures, "from_source", classmethod(from_source))
    with pytest.raises(RuntimeError, match=r"non-finite loss .* epoch 1, step \d+"):
        train(make_cfg(demo, tmp_path, "train.epochs=2", "train.patience=null", "train.resume=latest"))
    assert last.read_bytes() == before


def test_encoder_reproduces_validation_views_and_new_descriptions(demo, tmp_path):
    train(make_cfg(demo, tmp_path, "train.epochs=1"))
    encoder = ConditionedEncoder.from_checkpoint(tmp_path / "checkpoints" / "best.pt")
    products = torch.tensor([0, 1, 2, 2])
    relations = torch.tensor([0, 1, 1, 0])
    views = encoder.encode(products, relations)
    assert views.image.shape == views.text.shape == (4, 32)
    assert torch.allclose(views.text.norm(dim=1), torch.ones(4))
    # the same product under two descriptions gives two different conditioned views
    assert not torch.allclose(views.text[2], views.text[3])
    # a new description string encodes to the cached row of the same text
    from rcml_graph.data.graph_io import load_graph

    text = load_graph(demo / "demo" / "processed").relation_text[1]
    new_id = encoder.add_description(text)
    assert new_id == encoder.description_table.shape[0] - 1
    again = encoder.encode(torch.tensor([1, 2]), torch.tensor([new_id, new_id]))
    assert torch.allclose(again.text, views.text[1:3], atol=1e-5)
    glob = encoder.encode_global(torch.tensor([0, 1]))
    assert glob.text.shape == (2, 32) and not torch.allclose(glob.text[0], views.text[0])


def test_encoder_query_side_uses_the_trained_query_operator(demo, tmp_path):
    train(make_cfg(demo, tmp_path, "train.epochs=1"))
    encoder = ConditionedEncoder.from_checkpoint(tmp_path / "checkpoints" / "best.pt")
    assert encoder.head.has_query_operator  # on by default for the rcml variant
    products, relations = torch.tensor([1, 2, 2]), torch.tensor([1, 1, 0])
    targets, queries = encoder.encode(products, relations), encoder.encode_query(products, relations)
    # trained away from its zero start: the source side differs from the target side ...
    assert not torch.allclose(queries.text[:2], targets.text[:2])
    # ... except under the self relation (id 0), which is symmetric
    torch.testing.assert_close(queries.text[2], targets.text[2])


def test_checkpoint_flag_without_operator_weights_loads(demo, tmp_path):
    """A global-only checkpoint that recorded query_operator=True without weights (written
    before relation-free query maps existed) loads as the plain head it is."""
    import json

    train(make_cfg(demo, tmp_path, "experiment=unconditioned", "train.epochs=1"))
    path = tmp_path / "checkpoints" / "best.pt"
    state = torch.load(path, weights_only=True)
    config = json.loads(state["config"])
    assert not config["head"]["query_operator"]
    config["head"]["query_operator"] = True
    state["config"] = json.dumps(config)
    torch.save(state, path)
    encoder = ConditionedEncoder.from_checkpoint(path)
    assert not encoder.head.has_query_operator


def test_max_steps_stop_inside_an_epoch_resumes_its_remaining_batches(demo, tmp_path):
    # A constant learning rate (no warm-up, no decay) makes the schedule independent of
    # max_steps, so extending a max_steps run must retrace the uninterrupted one exactly.
    common = ("train.epochs=2", "train.patience=null", "train.warmup_steps=0", "train.min_lr_ratio=1.0",
              "train.validate_before=false")
    full = train(make_cfg(demo, tmp_path / "full", *common, "train.max_steps=null"))
    per_epoch = full["step"] / 2
    assert per_epoch > 3
    cut = train(make_cfg(demo, tmp_path / "split", *common, "train.max_steps=3"))
    assert cut["step"] == 3.0 and cut["epoch"] == 3 / per_epoch  # epoch 0, unfinished
    state = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert state["epoch"] == 0 and state["sampler"]["epoch"] == 0 and state["sampler"]["batch"] == 3
    resumed = train(make_cfg(demo, tmp_path / "split", *common, "train.max_steps=null", "train.resume=latest"))
    # before the fix the resume started epoch 1 and ended at 3 + per_epoch steps
    assert resumed["step"] == full["step"] and resumed["epoch"] == 2.0
    assert same_weights(tmp_path / "full", tmp_path / "split")
    # the validation at step 3 may have picked best.pt; the final validation is the same
    assert resumed["val/hit@5"] == full["val/hit@5"] and resumed["val/mrr"] == full["val/mrr"]


def test_max_steps_cuts_leave_early_stopping_as_an_uninterrupted_run_has_it(demo, tmp_path):
    # patience 1 on val/mrr: a validation inside an epoch that beat the next epoch-end one used
    # to become the bar, so the resumed run stopped an epoch early
    common = ("train.epochs=3", "train.patience=1", "train.monitor=val/mrr", "train.warmup_steps=0",
              "train.min_lr_ratio=1.0", "train.validate_before=false")
    full = train(make_cfg(demo, tmp_path / "full", *common, "train.max_steps=null"))
    per_epoch = int(full["step"] / full["epoch"])
    for i, cut in enumerate((per_epoch + 1, per_epoch + 3)):
        part = train(make_cfg(demo, tmp_path / "cut", *common, f"train.max_steps={cut}",
                              *(["train.resume=latest"] if i else [])))
        assert part["step"] == cut and part["epoch"] == 1 + (cut - per_epoch) / per_epoch
    resumed = train(make_cfg(demo, tmp_path / "cut", *common, "train.max_steps=null", "train.resume=latest"))
    assert resumed["step"] == full["step"] and resumed["epoch"] == full["epoch"]
    assert resumed["best_epoch"] == full["best_epoch"] and resumed["best/val/mrr"] == full["best/val/mrr"]
    assert same_weights(tmp_path / "full", tmp_path / "cut")
    history = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["early_stopping"]["history"]
    assert [h.get("partial", 0.0) for h in history] == [0.0, 1.0, 1.0] + [0.0] * (len(history) - 3)


def test_checkpoint_from_before_resumable_cuts_trains_the_rest_of_its_epoch(demo, tmp_path):
    common = ("train.epochs=2", "train.patience=null", "train.warmup_steps=0", "train.min_lr_ratio=1.0",
              "train.validate_before=false")
    full = train(make_cfg(demo, tmp_path / "full", *common, "train.max_steps=null"))
    train(make_cfg(demo, tmp_path / "old", *common, "train.max_steps=3"))
    last = tmp_path / "old" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    assert state["epoch"] == 0 and state["sampler"]["batch"] == 3
    state["epoch"] = 1  # what the loop wrote before e13c02e: the cut epoch counted as finished
    save_checkpoint(last, state)
    resumed = train(make_cfg(demo, tmp_path / "old", *common, "train.max_steps=null", "train.resume=latest"))
    assert resumed["step"] == full["step"] and same_weights(tmp_path / "full", tmp_path / "old")


def test_experiment_settings_reach_the_sampler(demo, tmp_path, monkeypatch):
    built = []
    original = train_module.build_sampler

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(train_module, "build_sampler", spy)
    train(make_cfg(demo, tmp_path / "a", "experiment=unconditioned_anylink", "train.epochs=1", "train.max_steps=1",
                   "train.validate_before=false"))
    train(make_cfg(demo, tmp_path / "b", "train.epochs=1", "train.max_steps=1", "train.validate_before=false",
                   "train.relation_negative_fraction=0.25"))
    assert [(s.false_negative_scope, s.relation_negative_fraction) for s in built] == [
        ("any_link", 0.0), ("description", 0.25)]
    with pytest.raises(ValueError, match="relation_negative_fraction=0.5 with false_negative_scope='any_link'"):
        train(make_cfg(demo, tmp_path / "c", "experiment=unconditioned", "train.false_negative_scope=any_link",
                       "train.max_steps=1"))
