"""The entry point on a saved tiny graph with the zero-shot baseline (tiny backbone)."""

import json

from hydra import compose, initialize_config_dir

from rcml_graph.cli import CONFIG_DIR
from rcml_graph.data.graph_io import save_processed
from rcml_graph.evaluate import evaluate
from tests.evaluation.fakes import tiny_graph


def test_evaluate_zero_shot_writes_results(tmp_path):
    processed = save_processed(tmp_path / "processed", tiny_graph(), {}, {})
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(
            config_name="config",
            overrides=[
                "model=tiny",
                f"domain.processed_dir={processed}",
                f"domain.image_dir={tmp_path / 'images'}",
                "eval.seeds=[0]",
                "eval.num_negatives=5",
                "eval.full_corpus_queries=8",
                "eval.tsne_points=24",
                f"eval.output_dir={tmp_path / 'run'}",
                f"eval.results_dir={tmp_path / 'results'}",
                "show_progress=false",
            ],
        )
    summary = evaluate(cfg)
    payload = json.loads((tmp_path / "run" / "results.json").read_text())
    assert payload["domain"] == "demo"
    rows = payload["rows"]
    assert {r["method"] for r in rows} == {"zero_shot", "backbone_probe"}
    assert {"retrieval", "retrieval_sensitive", "relation_type", "relation_validation",
            "classification"} <= {r["task"] for r in rows}
    # No image manifest: only text modes are reported, and the report says so.
    assert {r["mode"] for r in rows if r["task"] == "retrieval"} == {"text2text"}
    assert all(0.0 <= r["value"] <= 1.0 for r in rows if r["metric"].startswith("hit@"))
    shared = json.loads((tmp_path / "results" / "demo" / "results.json").read_text())
    assert len(shared["rows"]) == len(rows)
    report = (tmp_path / "run" / "results.md").read_text()
    assert "text modes only" in report and "## relation_validation" in report
    assert (tmp_path / "run" / "tsne_relations.png").stat().st_size > 0
    assert (tmp_path / "run" / "hit5_per_relation.png").stat().st_size > 0
    assert summary["num_rows"] == len(rows)
