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


def test_headline_table_aggregates_seeds_per_method_and_marks_missing_numbers():
    import pytest

    from rcml_graph.eval.results import ResultRow
    from rcml_graph.evaluation.report import headline_table

    def sensitive(method, seed, value, n=10):
        return ResultRow("retrieval_sensitive", method, seed, "avg", "hit@5", value, n,
                         {"protocol": "sensitive", "subset": "all"})

    rows = [sensitive("rcml", 0, 0.5), sensitive("rcml", 1, 0.7, n=12), sensitive("clip", 0, 0.25),
            ResultRow("relation_type", "rcml", 0, None, "top1", 0.4, 50, {"subset": "all"}),
            # another mode and another subset must not leak into the avg / all cells
            ResultRow("retrieval_sensitive", "clip", 1, "text2text", "hit@5", 0.9, 10,
                      {"protocol": "sensitive", "subset": "all"}),
            ResultRow("retrieval_sensitive", "clip", 1, "avg", "hit@5", 0.9, 10,
                      {"protocol": "sensitive", "subset": "kind=also_viewed"})]
    lines = headline_table(rows).splitlines()
    assert lines[0] == "| task | metric | rcml | clip |"
    row = next(l for l in lines if l.startswith("| relation-sensitive (hard negatives) |"))
    assert row == "| relation-sensitive (hard negatives) | hit@5 | 0.600 ± 0.141 (n=10-12, 2) | 0.250 ± 0.000 (n=10, 1) |"
    assert next(l for l in lines if l.startswith("| relation-type")).endswith("| 0.400 ± 0.000 (n=50, 1) | – |")
    assert next(l for l in lines if l.startswith("| sensitive, also_viewed")).endswith("| – | 0.900 ± 0.000 (n=10, 1) |")
    with pytest.raises(ValueError, match="seed repeated"):
        headline_table(rows + [sensitive("rcml", 0, 0.1)])


def test_paired_table_differences_per_seed():
    import pytest

    from rcml_graph.eval.results import ResultRow
    from rcml_graph.evaluation.report import paired_table

    def sensitive(method, seed, value, mode="avg", n=10):
        return ResultRow("retrieval_sensitive", method, seed, mode, "hit@5", value, n,
                         {"protocol": "sensitive", "subset": "all"})

    rows = [sensitive("rcml", 0, 0.50), sensitive("rcml", 1, 0.455), sensitive("rcml", 2, 0.9),
            sensitive("unconditioned", 0, 0.375), sensitive("unconditioned", 1, 0.5),
            sensitive("unconditioned", 0, 0.0, mode="text2text")]  # another mode is not paired
    lines = paired_table(rows, "rcml", "unconditioned").splitlines()
    assert lines[0] == "| task | metric | seeds | rcml - unconditioned per seed | mean ± std | positive |"
    row = next(l for l in lines if l.startswith("| relation-sensitive (hard negatives) |"))
    # seed 2 has no unconditioned run: left out and counted; std is the sample std of +0.125, -0.045
    assert row == ("| relation-sensitive (hard negatives) | hit@5 | 2 (1 unpaired left out) | "
                   "0: +0.125, 1: -0.045 | +0.040 ± 0.120 | 1/2 |")
    assert next(l for l in lines if l.startswith("| relation-type")) == "| relation-type prediction | top1 | 0 | – | – | – |"
    with pytest.raises(ValueError, match="'rcml' seed 0 has two values"):
        paired_table(rows + [sensitive("rcml", 0, 0.1)], "rcml", "unconditioned")
    # values over different query sets are not paired
    unequal = [sensitive("rcml", 0, 0.5), sensitive("unconditioned", 0, 0.4, n=12)]
    with pytest.raises(ValueError, match="seed 0: 'rcml' has n=10 but 'unconditioned' has n=12"):
        paired_table(unequal, "rcml", "unconditioned")


def test_results_table_by_folder_pairs_one_method_across_folders(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from rcml_graph.eval.results import ResultRow, append_rows

    def sensitive(method, seed, value):
        return ResultRow("retrieval_sensitive", method, seed, "avg", "hit@5", value, 10,
                         {"protocol": "sensitive", "subset": "all"})

    old, new = tmp_path / "old", tmp_path / "new"
    for folder, values in ((old, (0.30, 0.40)), (new, (0.35, 0.50))):
        for seed, value in enumerate(values):
            append_rows(folder / f"base_s{seed}.json", "demo", [sensitive("base", seed, value)])
    script = Path(__file__).resolve().parents[2] / "scripts" / "results_table.py"
    files = sorted(str(p) for p in tmp_path.glob("*/*.json"))
    out = subprocess.run([sys.executable, str(script), "--by-folder", "--paired", "base@new", "base@old", *files],
                         capture_output=True, text=True, check=True).stdout
    row = next(l for l in out.splitlines() if l.startswith("| relation-sensitive (hard negatives) |"))
    assert "0: +0.050, 1: +0.100 | +0.075 ± 0.035 | 2/2" in row
    # without --by-folder the same method and seed in two files is refused
    refused = subprocess.run([sys.executable, str(script), *files], capture_output=True, text=True)
    assert refused.returncode != 0 and "seed repeated" in refused.stderr
