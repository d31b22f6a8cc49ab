"""linkpred.resume: finished runs are skipped, a kill loses only the run in progress, and a
results folder never mixes runs made from different features under one method name."""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

import rcml_graph.linkpred as linkpred_entry
from rcml_graph.cli import CONFIG_DIR
from rcml_graph.downstream import RunLedger, features_fingerprint, run_key


#: The settings label of :func:`_run`'s rows.
SETTINGS = "epochs=2,eval_every=2,hidden_channels=8,hits_negatives=100,num_negatives=10"


def _run(demo_root: str, tmp_path, *extra: str) -> dict[str, float]:
    overrides = [f"paths.data_root={demo_root}", "linkpred.features=random", "linkpred.epochs=2",
                 "linkpred.eval_every=2", "linkpred.hidden_channels=8", "linkpred.num_negatives=10",
                 "linkpred.hits_negatives=100", f"linkpred.results_dir={tmp_path / 'results'}",
                 f"linkpred.output_dir={tmp_path / 'run'}", "show_progress=false", *extra]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        return linkpred_entry.run(compose(config_name="config", overrides=overrides))


@pytest.fixture
def trained(monkeypatch) -> list[tuple[str, int]]:
    """Records the (model, seed) of every link predictor actually trained."""
    calls: list[tuple[str, int]] = []
    real = linkpred_entry.train_and_evaluate

    def counting(data, x, model_name, settings, seed, *args, **kwargs):
        calls.append((model_name, seed))
        return real(data, x, model_name, settings, seed, *args, **kwargs)

    monkeypatch.setattr(linkpred_entry, "train_and_evaluate", counting)
    return calls


def _rows(tmp_path, name: str = "results.json") -> list[dict]:
    return json.loads((tmp_path / "results" / "demo" / name).read_text())["rows"]


def test_resume_skips_finished_runs_and_trains_the_rest(demo_root, tmp_path, trained) -> None:
    first = _run(demo_root, tmp_path, "linkpred.seeds=[0]")
    assert trained == [("sage", 0), ("mlp", 0)]
    rows_before = _rows(tmp_path)
    ledger = json.loads((tmp_path / "results" / "demo" / "runs.json").read_text())
    assert len(ledger["runs"]) == 2
    # What computed each run is recorded: its digits depend on the processor and thread count.
    recorded = RunLedger(tmp_path / "results" / "demo" / "runs.json").environment(
        run_key("random", "sage", 0, {"relation": "also_bought", "settings": SETTINGS}))
    assert recorded is not None
    assert recorded["torch"] == torch.__version__ and recorded["threads"] == torch.get_num_threads()
    assert recorded["device"] == "cpu" and recorded["processor"]

    trained.clear()
    again = _run(demo_root, tmp_path, "linkpred.seeds=[0,1]", "linkpred.resume=true")
    assert trained == [("sage", 1), ("mlp", 1)]
    rows = _rows(tmp_path)
    assert rows[: len(rows_before)] == rows_before  # seed 0's rows untouched
    assert {r["seed"] for r in rows} == {0, 1} and len(rows) == 2 * len(rows_before)
    # The summary covers both seeds: seed 0 from its recorded rows.
    seed1 = [r["value"] for r in rows if r["seed"] == 1 and r["model"] == "sage" and r["protocol"] == "heart"
             and r["metric"] == "mrr"]
    assert again["sage/heart/mrr"] == pytest.approx((first["sage/heart/mrr"] + seed1[0]) / 2)

    trained.clear()
    _run(demo_root, tmp_path, "linkpred.seeds=[0,1]", "linkpred.resume=true")
    assert trained == []
    # Without resume, runs are trained again (and their rows replaced, not duplicated).
    _run(demo_root, tmp_path, "linkpred.seeds=[1]", "linkpred.models=[mlp]")
    assert trained == [("mlp", 1)]
    assert len(_rows(tmp_path)) == 2 * len(rows_before)


def test_other_hyperparameters_are_other_runs(demo_root, tmp_path, trained) -> None:
    _run(demo_root, tmp_path, "linkpred.seeds=[0]", "linkpred.models=[mlp]")
    trained.clear()
    _run(demo_root, tmp_path, "linkpred.seeds=[0]", "linkpred.models=[mlp]", "linkpred.dropout=0.3",
         "linkpred.resume=true")
    assert trained == [("mlp", 0)]
    assert len({r.get("settings") for r in _rows(tmp_path)}) == 2


def test_a_crash_keeps_the_finished_runs(demo_root, tmp_path, monkeypatch) -> None:
    real = linkpred_entry.train_and_evaluate

    def crash_on_mlp(data, x, model_name, *args, **kwargs):
        if model_name == "mlp":
            raise RuntimeError("killed")
        return real(data, x, model_name, *args, **kwargs)

    monkeypatch.setattr(linkpred_entry, "train_and_evaluate", crash_on_mlp)
    with pytest.raises(RuntimeError, match="killed"):
        _run(demo_root, tmp_path, "linkpred.seeds=[0]")
    assert {r["model"] for r in _rows(tmp_path)} == {"sage"}
    assert {r["model"] for r in _rows(tmp_path, "validation.json")} == {"sage"}
    calls = []
    monkeypatch.setattr(linkpred_entry, "train_and_evaluate",
                        lambda data, x, model_name, settings, seed, *a, **k: calls.append(model_name)
                        or real(data, x, model_name, settings, seed, *a, **k))
    _run(demo_root, tmp_path, "linkpred.seeds=[0]", "linkpred.resume=true")
    assert calls == ["mlp"]
    assert {r["model"] for r in _rows(tmp_path)} == {"sage", "mlp"}


def test_resume_refuses_rows_made_from_other_features(demo_root, tmp_path, monkeypatch, caplog) -> None:
    _run(demo_root, tmp_path, "linkpred.seeds=[0]", "linkpred.models=[mlp]")
    real = linkpred_entry.random_features
    # Another "checkpoint" behind the same method name: other feature values, same identity.
    monkeypatch.setattr(linkpred_entry, "random_features", lambda n, dim, seed: real(n, dim, seed + 100))
    with pytest.raises(ValueError, match=r"random/mlp seed 0 made from other features .*linkpred.resume=false"):
        _run(demo_root, tmp_path, "linkpred.seeds=[0]", "linkpred.models=[mlp]", "linkpred.resume=true")
    with caplog.at_level("WARNING", logger="linkpred"):
        _run(demo_root, tmp_path, "linkpred.seeds=[0]", "linkpred.models=[mlp]")
    assert "replacing rows made from other features" in caplog.text
    _run(demo_root, tmp_path, "linkpred.seeds=[0]", "linkpred.models=[mlp]", "linkpred.resume=true")  # now recorded


def test_fingerprint_tells_values_shapes_dtypes_and_missing_tensors_apart() -> None:
    x = torch.arange(12, dtype=torch.float32).view(3, 4)
    base = features_fingerprint([x, None])
    assert base == features_fingerprint([x.clone(), None])
    others = [[x + 1e-6 * (x == 0), None], [x.view(4, 3), None], [x.double(), None], [x, x], [x],
              [x.bfloat16(), None]]
    prints = {features_fingerprint(tensors) for tensors in others}
    assert base not in prints and len(prints) == len(others)


def test_ledger_records_replaces_and_rejects_a_foreign_file(tmp_path) -> None:
    ledger = RunLedger(tmp_path / "runs.json")
    key = run_key("rcml", "sage", 0, {"relation": "also_bought"})
    assert ledger.fingerprint(key) is None
    ledger.record(key, "aaaa", {"threads": 1})
    ledger.record(run_key("rcml", "sage", 1, {"relation": "also_bought"}), "bbbb")
    ledger.record(key, "cccc")
    assert ledger.fingerprint(key) == "cccc"
    assert ledger.environment(key) is None  # the later record had none
    assert RunLedger(tmp_path / "runs.json").fingerprint(run_key("rcml", "sage", 1, {"relation": "also_bought"})) \
        == "bbbb"
    (tmp_path / "bad.json").write_text('{"domain": "demo", "rows": []}')
    with pytest.raises(ValueError, match=r"bad.json is not a link-prediction run ledger"):
        RunLedger(tmp_path / "bad.json").fingerprint(key)
