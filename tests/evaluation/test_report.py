"""results.json schema, the Markdown report and the PNG plots."""

import torch
from PIL import Image

from rcml_graph.eval.results import append_rows, load_results
from rcml_graph.evaluation import (
    SuiteSettings,
    collect_edges,
    plot_hit_per_relation,
    plot_relation_tsne,
    results_markdown,
    run_tasks,
)
from tests.evaluation.fakes import BlindEncoder, OracleEncoder, tiny_graph


def test_rows_long_form_markdown_and_plots(tmp_path):
    data = tiny_graph()
    edges = collect_edges(data)
    settings = SuiteSettings(num_negatives=5, max_queries=None, full_corpus_queries=0,
                             tasks=("retrieval", "retrieval_sensitive", "classification"))
    rows = []
    for seed in (0, 1):
        rows += run_tasks(data, edges, OracleEncoder(), "oracle", seed, settings)
        rows += run_tasks(data, edges, BlindEncoder(), "blind", seed, settings)
    written = append_rows(tmp_path / "results.json", "tiny", rows)
    loaded = load_results(tmp_path / "results.json")
    assert loaded.domain == "tiny" and len(loaded.rows) == len(written.rows) == len(rows)
    row = next(r.to_dict() for r in loaded.rows if r.task == "retrieval" and r.mode == "avg" and r.metric == "hit@5")
    assert set(row) >= {"task", "method", "seed", "mode", "metric", "value", "n", "protocol", "subset"}
    assert row["protocol"] == "random" and row["n"] == 24

    text = results_markdown("tiny", loaded.rows, notes=["text modes only"])
    assert "## retrieval_sensitive" in text and "- text modes only" in text
    # The oracle's sensitive Hit@1 over two seeds: 1.000 ± 0.000 on 24 queries.
    line = next(l for l in text.splitlines() if l.startswith("| oracle / sensitive / all / avg"))
    assert "1.000 ± 0.000 (n=24, 2 seeds)" in line
    assert "| blind / all | 1.000 ± 0.000 (n=7, 2 seeds)" in text  # classification, no mode

    bars = plot_hit_per_relation(loaded.rows, tmp_path / "hit5.png")
    products = torch.arange(24)
    oracle = OracleEncoder()
    tsne = plot_relation_tsne(
        [oracle.encode(products, torch.full_like(products, d)).text for d in (1, 3)],
        ["desc 1", "desc 3"], products // 6, tmp_path / "tsne.png",
    )
    for path in (bars, tsne):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100
