"""The link-prediction grid report: choice on validation, paired differences, convergence audit."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
import subprocess
import sys
from pathlib import Path

import pytest
import scipy.stats

from rcml_graph.downstream.report import (
    PairedDifference,
    _tick_label,
    budget_bound_runs,
    choose_configurations,
    incomplete_choices,
    linkpred_report,
    metric_table,
    paired_difference,
    plot_chosen,
    plot_paired,
    unaudited_runs,
)
from rcml_graph.eval.results import ResultRow, append_rows

REPO = Path(__file__).resolve().parents[2]


def _row(method, model, seed, value, protocol="heart", metric="mrr", negatives="uniform", pair_score="none",
         relation="also_bought"):
    extra = {"model": model, "protocol": protocol, "relation": relation}
    if negatives != "uniform":
        extra["train_negatives"] = negatives
    if pair_score != "none":
        extra["pair_score"] = pair_score
    return ResultRow(task="linkpred", method=method, seed=seed, mode=None, metric=metric, value=value, n=10,
                     extra=extra)


def test_metric_table_keys_default_options_like_linkpred_rows() -> None:
    rows = [_row("clip", "sage", 0, 0.3), _row("clip", "sage", 0, 0.4, negatives="heart", pair_score="cosine"),
            _row("clip", "sage", 0, 0.9, protocol="uniform"), _row("clip", "sage", 0, 0.1, metric="hits@1"),
            _row("clip", "sage", 0, 0.7, relation="also_viewed")]
    table = metric_table(rows, "heart", relation="also_bought")
    assert table == {("clip", "sage", "uniform", "none"): {0: 0.3}, ("clip", "sage", "heart", "cosine"): {0: 0.4}}
    # Two target kinds in one folder would overwrite each other under one key: refused.
    with pytest.raises(ValueError, match=r"several target kinds \['also_bought', 'also_viewed'\]"):
        metric_table(rows, "heart")
    assert metric_table(rows[:2], "heart") == table


def test_settings_label_names_what_differs_from_the_defaults() -> None:
    from rcml_graph.downstream import LinkPredSettings, settings_label

    assert settings_label(LinkPredSettings()) == ""
    # Target kind, negatives and pair score have keys of their own; device and hits_ks change no number.
    assert settings_label(LinkPredSettings(target_kind="also_viewed", train_negatives="heart", pair_score="cosine",
                                           device="cuda", hits_ks=(10,))) == ""
    changed = LinkPredSettings(lr=0.003, hidden_channels=256, dropout=0.3, patience=None, num_neighbors=(15, 5))
    assert settings_label(changed) == "dropout=0.3,hidden_channels=256,lr=0.003,num_neighbors=[15,5],patience=null"
    assert settings_label(LinkPredSettings(lr=0.01, dropout=0)) == ""  # equal to the defaults however typed
    assert settings_label(LinkPredSettings(), random_dim=(32, 128)) == "random_dim=32"
    assert settings_label(LinkPredSettings(), random_dim=(128, 128)) == ""


def test_rows_with_settings_compete_as_their_own_configurations(tmp_path: Path) -> None:
    def with_settings(row: ResultRow, settings: str) -> ResultRow:
        return replace(row, extra={**row.extra, "settings": settings})

    folder = tmp_path / "magazines"
    tests = [_row("rcml", "sage", s, 0.40) for s in (0, 1)] + [_row("clip", "sage", s, 0.30) for s in (0, 1)]
    tests += [with_settings(_row("clip", "sage", s, v), "lr=0.003") for s, v in ((0, 0.36), (1, 0.37))]
    tests += [replace(row, extra={**row.extra, "protocol": "uniform"}) for row in tests]
    val = [_row("rcml", "sage", s, 0.5) for s in (0, 1)] + [_row("clip", "sage", s, 0.2) for s in (0, 1)]
    val += [with_settings(_row("clip", "sage", s, 0.25), "lr=0.003") for s in (0, 1)]
    append_rows(folder / "results.json", "magazines", tests)  # one file: the settings keep the rows apart
    append_rows(folder / "validation.json", "magazines", val)
    report = linkpred_report(folder, relation="also_bought")
    assert "| clip | sage[lr=0.003], uniform, none | 0.250 ± 0.000 | 0.365 ± 0.007 |" in report
    assert "| rcml - clip | +0.035 ± 0.007 (+0.040, +0.030) |" in report


def test_choice_is_the_best_mean_over_the_shared_seeds() -> None:
    table = {("a", "sage", "heart", "none"): {0: 0.30, 1: 0.34, 2: 0.99},  # seed 2 alone: not compared
             ("a", "mlp", "heart", "none"): {0: 0.31, 1: 0.35},           # mean 0.33 on {0, 1}: chosen
             ("a", "mlp", "uniform", "none"): {0: 0.20, 1: 0.20},
             ("b", "sage", "heart", "none"): {0: 0.2, 1: 0.2}}
    chosen = choose_configurations(table)
    assert chosen == {"a": ("a", "mlp", "heart", "none"), "b": ("b", "sage", "heart", "none")}
    with pytest.raises(ValueError, match="no validation rows for features 'c'"):
        choose_configurations(table, ["c"])
    with pytest.raises(ValueError, match="features 'd' share no seed"):
        choose_configurations({("d", "sage", "heart", "none"): {0: 0.1}, ("d", "mlp", "heart", "none"): {1: 0.2}})


def test_an_unfinished_grid_says_which_seeds_its_choice_used(tmp_path: Path) -> None:
    table = {("a", "sage", "heart", "none"): {0: 0.30, 1: 0.34, 2: 0.99},
             ("a", "mlp", "heart", "none"): {0: 0.31, 1: 0.35},
             ("b", "sage", "heart", "none"): {0: 0.2, 1: 0.2}}
    assert incomplete_choices(table) == {"a": ([0, 1], {("a", "sage", "heart", "none"): [2]})}
    _grid(tmp_path)
    assert "unfinished grid" not in linkpred_report(tmp_path)
    append_rows(tmp_path / "validation.json", "demo", [_row("clip", "mlp", 9, 0.5)])  # not the chosen one
    assert ("- **clip: unfinished grid, chosen on seeds [0, 1, 2] only** (the seeds every configuration has); "
            "1 of its configurations have more: mlp, uniform, none [9]") in linkpred_report(tmp_path)


def test_a_chosen_configuration_run_on_more_seeds_is_a_confirmation_not_an_unfinished_grid(tmp_path: Path) -> None:
    _grid(tmp_path)  # clip's chosen configuration: sage (mlp is 0.05 lower on every seed)
    append_rows(tmp_path / "validation.json", "demo", [_row("clip", "sage", 7, 0.1), _row("clip", "sage", 8, 0.1)])
    report = linkpred_report(tmp_path)
    assert "unfinished grid" not in report
    assert ("- clip: chosen on seeds [0, 1, 2] (the seeds every configuration has); the chosen configuration also "
            "ran on seeds [7, 8]") in report
    append_rows(tmp_path / "validation.json", "demo", [_row("clip", "mlp", 9, 0.1)])  # now another has more too
    assert "- **clip: unfinished grid, chosen on seeds [0, 1, 2] only**" in linkpred_report(tmp_path)


def test_metric_table_refuses_two_rows_for_one_run() -> None:
    rows = [_row("clip", "sage", 0, 0.3), _row("clip", "sage", 0, 0.4)]
    with pytest.raises(ValueError, match=r"two heart mrr rows for \('clip', 'sage', 'uniform', 'none'\) seed 0"):
        metric_table(rows, "heart")


def test_paired_difference_and_the_rule() -> None:
    table = {("r",) * 4: {0: 0.40, 1: 0.42, 2: 0.41}, ("b",) * 4: {0: 0.30, 1: 0.35, 2: 0.33, 3: 0.1}}
    diff = paired_difference(table, ("r",) * 4, ("b",) * 4)
    assert diff.per_seed == pytest.approx({0: 0.10, 1: 0.07, 2: 0.08})  # seed 3 unpaired: left out
    assert diff.mean == pytest.approx(0.25 / 3) and diff.std == pytest.approx(0.0152753, abs=1e-6)
    assert diff.meets  # every seed positive, 0.083 > 2 x 0.015
    assert diff.positive == 3
    reference = scipy.stats.ttest_1samp([0.10, 0.07, 0.08], 0.0, alternative="greater")
    assert diff.t == pytest.approx(reference.statistic)
    assert diff.p_t == pytest.approx(reference.pvalue)
    # Three positive differences: the exact signed-rank null puts 1/8 on "all positive".
    assert diff.p_wilcoxon == pytest.approx(0.125)
    mixed = PairedDifference({0: 0.03, 1: -0.01, 2: 0.02, 3: 0.05, 4: -0.02, 5: 0.04})
    assert mixed.p_t == pytest.approx(scipy.stats.ttest_1samp(list(mixed.per_seed.values()), 0.0,
                                                              alternative="greater").pvalue)
    # The exact null by hand: |d| ranks 0.01 -> 1, the two 0.02s (one of each sign) -> 2.5 each,
    # 0.03 -> 4, 0.04 -> 5, 0.05 -> 6; W+ sums the positive differences' ranks, and under the null
    # each of the 2**6 sign patterns is equally likely.
    ranks = {0.01: 1, 0.02: 2.5, 0.03: 4, 0.04: 5, 0.05: 6}
    observed = ranks[0.03] + ranks[0.02] + ranks[0.05] + ranks[0.04]  # 17.5
    patterns = [sum(r for r, sign in zip((1, 2.5, 2.5, 4, 5, 6), bits) if sign)
                for bits in itertools.product((0, 1), repeat=6)]
    assert mixed.p_wilcoxon == pytest.approx(sum(w >= observed for w in patterns) / 64)
    assert PairedDifference({0: -0.1, 1: -0.2, 2: -0.15}).p_t > 0.95  # one-sided: a > b only
    assert PairedDifference({0: 0.1, 1: 0.1}).p_t == 0.0  # t = inf
    assert math.isnan(PairedDifference({0: 0.0, 1: 0.0}).p_wilcoxon)
    assert PairedDifference({0: 0.1, 1: -0.1}).positive == 1
    assert PairedDifference({0: 0.1, 1: 0.1}).t == math.inf
    # Positive on every seed but too spread (session 8's backbone margin: 1.6 std).
    assert not PairedDifference({0: 0.088, 1: 0.075, 2: 0.019}).meets
    assert not PairedDifference({0: 0.2, 1: 0.2, 2: -0.001}).meets  # one seed negative
    # Seeds 20-23 on checkpoints 0, 1, 0, 1 (s mod 2): one mean per checkpoint.
    shared = PairedDifference({20: 0.1, 21: 0.3, 22: 0.2, 23: 0.5}).grouped(2)
    assert shared.per_seed == pytest.approx({0: 0.15, 1: 0.4})
    with pytest.raises(ValueError, match="period must be a positive"):
        shared.grouped(0)
    single = PairedDifference({0: 0.5})
    assert not single.meets and math.isnan(single.std) and math.isnan(single.t)
    assert math.isnan(single.p_t) and math.isnan(single.p_wilcoxon)
    with pytest.raises(ValueError, match="share no seed"):
        paired_difference({("x",) * 4: {0: 1.0}, ("y",) * 4: {1: 1.0}}, ("x",) * 4, ("y",) * 4)


def test_budget_bound_and_unaudited_runs_read_the_training_rows() -> None:
    rows = [_row("a", "sage", 0, 1.0, protocol="training", metric="budget_bound"),
            _row("a", "sage", 1, 0.0, protocol="training", metric="budget_bound"),
            _row("a", "sage", 2, 1.0, protocol="training", metric="budget_bound"),
            _row("a", "sage", 2, 100.0, protocol="training", metric="best_epoch")]
    assert budget_bound_runs(rows) == {("a", "sage", "uniform", "none"): [0, 2]}
    validation = {("a", "sage", "uniform", "none"): {0: 0.3, 1: 0.3, 2: 0.3, 3: 0.3},
                  ("a", "mlp", "uniform", "none"): {0: 0.2}}
    assert unaudited_runs(validation, rows) == {("a", "mlp", "uniform", "none"): [0],
                                                ("a", "sage", "uniform", "none"): [3]}


def _grid(directory: Path, with_training: bool = True) -> None:
    test, val = [], []
    values = {"rcml": (0.40, 0.42, 0.41), "clip": (0.30, 0.31, 0.30), "backbone": (0.38, 0.30, 0.40)}
    for method, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            for model, shift in (("sage", 0.0), ("mlp", -0.05)):
                test += [_row(method, model, seed, value + shift), _row(method, model, seed, value + shift + 0.2,
                                                                        protocol="uniform")]
                val.append(_row(method, model, seed, value + shift))
                if with_training:
                    val.append(_row(method, model, seed, float(method == "backbone" and model == "sage"),
                                    protocol="training", metric="budget_bound"))
    append_rows(directory / "results.json", "demo", test)
    append_rows(directory / "validation.json", "demo", val)


def test_report_chooses_compares_and_audits(tmp_path: Path) -> None:
    _grid(tmp_path)
    report = linkpred_report(tmp_path, relation="also_bought")
    assert "| rcml | sage, uniform, none | 0.410 ± 0.010 | 0.410 ± 0.010 | 0.610 ± 0.010 |" in report
    assert "| rcml - clip | +0.107 ± 0.006 (+0.100, +0.110, +0.110) | MEETS | 3/3, t = 32.00 | <0.001, 0.125 |" in report
    assert "| rcml - backbone | +0.050 ± 0.061 (+0.020, +0.120, +0.010) | no | 3/3, t = 1.42 | 0.145, 0.125 |" in report
    assert "ended before patience did (not converged): backbone, sage, uniform, none seeds [0, 1, 2]" in report
    assert "not audited" not in report
    grouped = linkpred_report(tmp_path, relation="also_bought", seed_groups=2)  # seeds 0, 2 | 1
    assert ("| rcml - clip, means of seeds equal mod 2 (seeds per group: 1-2) | +0.107 ± 0.004 (+0.105, +0.110)"
            in grouped)
    assert "means of seeds equal mod" not in report
    # A grid without the reference still gets its tables and choices, and says why no differences.
    other = linkpred_report(tmp_path, reference="unconditioned")
    assert "No rows for the reference features 'unconditioned' (present: backbone, clip, rcml)" in other
    assert "| rcml | sage, uniform, none |" in other and "MEETS" not in other
    with pytest.raises(ValueError, match="for relation 'also_viewed'"):
        linkpred_report(tmp_path, relation="also_viewed")


def test_report_says_when_runs_are_not_audited(tmp_path: Path) -> None:
    _grid(tmp_path, with_training=False)
    report = linkpred_report(tmp_path)
    assert "not audited): backbone, mlp, uniform, none seeds [0, 1, 2]" in report
    assert "none was cut short" not in report


def test_report_survives_a_partial_grid(tmp_path: Path) -> None:
    _grid(tmp_path)
    late = [_row("random", "sage", 7, 0.1), _row("random", "sage", 7, 0.2, protocol="uniform")]
    append_rows(tmp_path / "results.json", "demo", late)
    append_rows(tmp_path / "validation.json", "demo", late[:1])
    report = linkpred_report(tmp_path)
    assert "| rcml - random | no shared test seed | – | – |" in report
    assert "| rcml - clip | +0.107 ± 0.006" in report


def test_script_prints_the_report_and_plots(tmp_path: Path) -> None:
    _grid(tmp_path)
    png = tmp_path / "plots" / "chosen.png"
    script = str(REPO / "scripts" / "linkpred_table.py")
    out = subprocess.run([sys.executable, script, str(tmp_path), "--plot", str(png)],
                         capture_output=True, text=True, check=True).stdout
    assert out == linkpred_report(tmp_path)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in png.parent.iterdir() if p.name != "chosen.png"]  # no temporary file left


def test_paired_plot_draws_the_per_seed_differences(tmp_path: Path) -> None:
    _grid(tmp_path)
    late = [_row("random", "sage", 7, 0.1), _row("random", "sage", 7, 0.2, protocol="uniform")]
    append_rows(tmp_path / "results.json", "demo", late)
    append_rows(tmp_path / "validation.json", "demo", late[:1])
    png = tmp_path / "plots" / "paired.png"
    plotted = plot_paired(tmp_path, png)
    assert set(plotted) == {"clip", "backbone"}  # random shares no seed with rcml: left out
    assert plotted["clip"].per_seed == pytest.approx({0: 0.10, 1: 0.11, 2: 0.11})
    assert plotted["backbone"].per_seed == pytest.approx({0: 0.02, 1: 0.12, 2: 0.01})
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and len(list(png.parent.iterdir())) == 1
    script = str(REPO / "scripts" / "linkpred_table.py")
    subprocess.run([sys.executable, script, str(tmp_path), "--plot-paired", str(tmp_path / "p2.png")],
                   capture_output=True, text=True, check=True)
    assert (tmp_path / "p2.png").stat().st_size > 0
    with pytest.raises(ValueError, match="no rows for the reference features 'unconditioned'"):
        plot_paired(tmp_path, tmp_path / "x.png", reference="unconditioned")
    lonely = tmp_path / "lonely"
    rows = [_row("rcml", "sage", 0, 0.4), _row("random", "sage", 7, 0.1)]
    append_rows(lonely / "results.json", "demo", rows)
    append_rows(lonely / "validation.json", "demo", rows)
    with pytest.raises(ValueError, match="no source shares a test seed with 'rcml'"):
        plot_paired(lonely, lonely / "x.png")
    assert not (lonely / "x.png").exists()


def test_plot_draws_each_sources_chosen_configuration(tmp_path: Path) -> None:
    _grid(tmp_path)
    plotted = plot_chosen(tmp_path, tmp_path / "chosen.png")
    assert plotted["rcml"] == pytest.approx({0: 0.40, 1: 0.42, 2: 0.41})       # sage beats mlp on validation
    assert plotted["backbone"] == pytest.approx({0: 0.38, 1: 0.30, 2: 0.40})
    # each setting on a line of its own under the bar (one long line overlapped its neighbours')
    assert _tick_label(("rcml", "sage[dropout=0.3,lr=0.003]", "uniform", "cosine")) == \
        "rcml\nsage\ndropout=0.3\nlr=0.003\nuniform, cosine"
    assert _tick_label(("clip", "sage", "uniform", "none")) == "clip\nsage\nuniform, none"


def test_cells_in_separate_folders_compete_in_the_choice(tmp_path: Path) -> None:
    # Link-prediction rows carry no hyperparameters: a tuning grid keeps one folder per cell.
    for cell, rcml_val, clip_val in (("lr0.01", 0.40, 0.30), ("lr0.001", 0.45, 0.25)):
        folder = tmp_path / cell / "magazines"
        for split, offset in (("validation", 0.0), ("results", -0.05)):
            rows = [_row(m, "sage", s, v + offset + 0.001 * s, protocol=p) for s in (0, 1)
                    for m, v in (("rcml", rcml_val), ("clip", clip_val)) for p in ("heart", "uniform")]
            append_rows(folder / f"{split}.json", "magazines", rows)
    folders = sorted(tmp_path.glob("*/magazines"))
    report = linkpred_report(folders, relation="also_bought")
    # rcml's best validation is the lr0.001 cell, clip's the lr0.01 cell.
    assert "| rcml | sage@lr0.001, uniform, none |" in report
    assert "| clip | sage@lr0.01, uniform, none |" in report
    # Paired on the chosen cells: (0.45 - 0.05 + s/1000) - (0.30 - 0.05 + s/1000) = +0.150 on both seeds.
    assert "| rcml - clip | +0.150 ± 0.000" in report
    # One folder alone keeps the plain model names.
    assert "| rcml | sage, uniform, none |" in linkpred_report(folders[0], relation="also_bought")
    out = subprocess.run([sys.executable, str(REPO / "scripts" / "linkpred_table.py"), *map(str, folders),
                          "--relation", "also_bought"], capture_output=True, text=True, check=True).stdout
    assert "sage@lr0.001" in out
