"""Link-prediction grid reports: per-configuration tables, the configuration chosen on validation,
paired per-seed differences against a reference source, and a convergence audit.

Reads what :mod:`rcml_graph.linkpred` writes to ``<results_dir>/<domain>/``: ``results.json``
(test rows) and ``validation.json`` (validation rows at the chosen epoch, plus protocol
``training`` rows). A *configuration* is ``(features, model, train_negatives, pair_score)``, the model
reading ``sage[lr=0.003,...]`` for rows written with non-default settings; the
rule applied to the paired differences is the one fixed in ``docs/linkpred.md`` since session 7:
positive on every seed, with a mean above twice the sample standard deviation.

    python scripts/linkpred_table.py results/linkpred_s9/magazines --relation also_bought
"""

from __future__ import annotations

import contextlib
import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rcml_graph.eval.results import ResultRow, load_results
from rcml_graph.io_utils import atomic_path

__all__ = ["Config", "PairedDifference", "budget_bound_runs", "choose_configurations", "linkpred_report",
           "metric_table", "paired_difference", "plot_chosen", "plot_paired", "unaudited_runs"]

#: ``(features, model, train_negatives, pair_score)``.
Config = tuple[str, str, str, str]
#: ``{configuration: {seed: value}}``.
Table = dict[Config, dict[int, float]]


def _config(row: ResultRow) -> Config:
    # Rows with the defaults (uniform negatives, no pair score, default settings) carry none of
    # those keys (linkpred_rows). Other settings join the model: "sage[dropout=0.3,lr=0.003]".
    model, settings = str(row.get("model")), row.get("settings")
    if settings:
        model = f"{model}[{settings}]"
    return (row.method, model, str(row.get("train_negatives") or "uniform"), str(row.get("pair_score") or "none"))


def _relation_matches(row: ResultRow, relation: str | None) -> bool:
    return relation is None or row.get("relation") == relation


def metric_table(rows: Iterable[ResultRow], protocol: str, metric: str = "mrr",
                 relation: str | None = None) -> Table:
    """``{configuration: {seed: value}}`` of one protocol's metric (``relation``: the target kind).

    Raises:
        ValueError: two rows for one configuration and seed (they would overwrite each other),
            or rows of several target kinds without ``relation``.
    """
    matching = [row for row in rows if row.task == "linkpred" and row.get("protocol") == protocol
                and row.metric == metric and _relation_matches(row, relation)]
    relations = {row.get("relation") for row in matching}
    if len(relations) > 1:
        raise ValueError(f"the rows hold several target kinds {sorted(relations, key=str)}; pass one relation")
    table: Table = {}
    for row in matching:
        seeds = table.setdefault(_config(row), {})
        if row.seed in seeds:
            raise ValueError(f"two {protocol} {metric} rows for {_config(row)} seed {row.seed}: "
                             f"{seeds[row.seed]} and {row.value}; accepted: one row per configuration and seed")
        seeds[row.seed] = row.value
    return table


def _mean(values: dict[int, float]) -> float:
    return statistics.fmean(values.values())


def _by_source(validation: Table) -> dict[str, list[Config]]:
    """The configurations of each feature source, in sorted order."""
    by_source: dict[str, list[Config]] = {}
    for config in sorted(validation):
        by_source.setdefault(config[0], []).append(config)
    return by_source


def choose_configurations(validation: Table, sources: Sequence[str] | None = None) -> dict[str, Config]:
    """Per feature source, the configuration with the highest mean validation value.

    The means are taken over the seeds every configuration of the source has, so configurations
    compete on the same seeds (one run on an extra seed neither wins nor loses by it). Ties go
    to the first configuration in sorted order, so the choice does not depend on the row order.

    Raises:
        ValueError: no rows for a requested source, or its configurations share no seed.
    """
    by_source = _by_source(validation)
    chosen = {}
    for source in sources if sources is not None else sorted(by_source):
        configs = by_source.get(source)
        if not configs:
            raise ValueError(f"no validation rows for features {source!r}; present: {sorted(by_source)}")
        common = set.intersection(*(set(validation[c]) for c in configs))
        if not common:
            raise ValueError(f"the configurations of features {source!r} share no seed: "
                             + "; ".join(f"{c[1:]} seeds {sorted(validation[c])}" for c in configs))
        chosen[source] = max(configs, key=lambda c: statistics.fmean(validation[c][s] for s in common))
    return chosen


def incomplete_choices(validation: Table) -> dict[str, tuple[list[int], dict[Config, list[int]]]]:
    """Sources whose configurations do not all have the same seeds: ``{source: (the seeds the
    choice used, {configuration: its seeds beyond those})}``.

    :func:`choose_configurations` compares on the seeds every configuration has, so on an
    unfinished grid a choice rests on fewer seeds than its table row shows.
    """
    by_source = _by_source(validation)
    incomplete = {}
    for source, configs in by_source.items():
        seeds = [set(validation[c]) for c in configs]
        common = set.intersection(*seeds)
        if common != set.union(*seeds):
            extra = {c: sorted(set(validation[c]) - common) for c in configs if set(validation[c]) != common}
            incomplete[source] = (sorted(common), extra)
    return incomplete


@dataclass(frozen=True)
class PairedDifference:
    """``a - b`` per shared seed, with the rule's verdict."""

    per_seed: dict[int, float]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.per_seed.values())

    @property
    def std(self) -> float:
        """Sample standard deviation (nan with fewer than two seeds)."""
        return statistics.stdev(self.per_seed.values()) if len(self.per_seed) > 1 else float("nan")

    @property
    def meets(self) -> bool:
        """Positive on every seed and a mean above twice the sample std (needs two seeds or more)."""
        values = list(self.per_seed.values())
        return len(values) > 1 and all(v > 0 for v in values) and self.mean > 2 * self.std

    @property
    def positive(self) -> int:
        """How many seeds have ``a > b``."""
        return sum(v > 0 for v in self.per_seed.values())

    @property
    def t(self) -> float:
        """Paired t statistic, ``mean / (std / sqrt(n))`` (nan with fewer than two seeds; inf when
        every seed has the same nonzero difference). Reported beside the rule, not part of it."""
        n = len(self.per_seed)
        if n < 2:
            return float("nan")
        if self.std == 0:
            return math.copysign(math.inf, self.mean) if self.mean else float("nan")
        return self.mean / (self.std / math.sqrt(n))

    @property
    def p_t(self) -> float:
        """One-sided p of the paired t-test (``a > b``): Student's t survival at :attr:`t` with
        ``n - 1`` degrees of freedom (nan with fewer than two seeds)."""
        from scipy import stats

        return float("nan") if math.isnan(self.t) else float(stats.t.sf(self.t, len(self.per_seed) - 1))

    @property
    def p_wilcoxon(self) -> float:
        """One-sided p of the Wilcoxon signed-rank test (``a > b``), nan with fewer than two seeds
        or when every difference is zero.

        Differences are rounded to 1e-10 first, so that scores equal up to float rounding tie
        rather than rank. Zero differences are dropped (scipy's ``zero_method="wilcox"``); scipy
        (>= 1.15) then uses the exact null without ties, an exact permutation null with ties up to
        13 seeds, and the normal approximation beyond. The smallest one-sided p of ``n`` seeds is
        ``2**-n`` (0.125 for three).
        """
        from scipy import stats

        values = [round(v, 10) for v in self.per_seed.values()]
        if len(values) < 2 or not any(values):
            return float("nan")
        return float(stats.wilcoxon(values, alternative="greater").pvalue)

    def grouped(self, period: int) -> PairedDifference:
        """The mean difference of each group of seeds equal modulo ``period``, keyed by ``seed %
        period``: seeds that share a checkpoint (link-prediction seed ``s`` on checkpoint ``s mod
        period``) are not independent, so a test over them counts one checkpoint several times."""
        if period < 1:
            raise ValueError(f"period must be a positive number of seeds; got {period}")
        groups: dict[int, list[float]] = {}
        for seed, value in self.per_seed.items():
            groups.setdefault(seed % period, []).append(value)
        return PairedDifference({g: statistics.fmean(v) for g, v in sorted(groups.items())})

    def text(self) -> str:
        seeds = ", ".join(f"{v:+.3f}" for _, v in sorted(self.per_seed.items()))
        return f"{self.mean:+.3f} ± {self.std:.3f} ({seeds})"


def paired_difference(table: Table, a: Config, b: Config) -> PairedDifference:
    """``table[a] - table[b]`` on the seeds both have (an error when they share none)."""
    shared = sorted(set(table.get(a, {})) & set(table.get(b, {})))
    if not shared:
        raise ValueError(f"{a} and {b} share no seed: {sorted(table.get(a, {}))} vs {sorted(table.get(b, {}))}")
    return PairedDifference({s: table[a][s] - table[b][s] for s in shared})


def budget_bound_runs(validation_rows: Iterable[ResultRow], relation: str | None = None) -> dict[Config, list[int]]:
    """``{configuration: [seeds]}`` of runs the epoch budget, not convergence, ended."""
    bound: dict[Config, list[int]] = {}
    for row in validation_rows:
        if row.get("protocol") == "training" and row.metric == "budget_bound" and row.value \
                and _relation_matches(row, relation):
            bound.setdefault(_config(row), []).append(row.seed)
    return {config: sorted(seeds) for config, seeds in sorted(bound.items())}


def unaudited_runs(validation: Table, validation_rows: Iterable[ResultRow],
                   relation: str | None = None) -> dict[Config, list[int]]:
    """``{configuration: [seeds]}`` of runs in ``validation`` with no ``training`` rows (runs
    written before ``linkpred.patience`` existed): whether they converged is unknown."""
    audited = {(_config(r), r.seed) for r in validation_rows
               if r.get("protocol") == "training" and r.metric == "budget_bound" and _relation_matches(r, relation)}
    missing = {c: sorted(s for s in seeds if (c, s) not in audited) for c, seeds in sorted(validation.items())}
    return {c: seeds for c, seeds in missing.items() if seeds}


def _cell(values: dict[int, float] | None) -> str:
    if not values:
        return ""
    if len(values) == 1:
        return f"{_mean(values):.3f} (1)"
    return f"{_mean(values):.3f} ± {statistics.stdev(values.values()):.3f}"


def _grid(table: Table, title: str) -> list[str]:
    columns = sorted({(c[2], c[3]) for c in table})
    rows = sorted({(c[0], c[1]) for c in table})
    lines = [f"### {title}", "", "| features | model | " + " | ".join(f"{n}, {p}" for n, p in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for features, model in rows:
        cells = [_cell(table.get((features, model, n, p))) for n, p in columns]
        lines.append(f"| {features} | {model} | " + " | ".join(cells) + " |")
    return lines + [""]


Folders = str | Path | Sequence[str | Path]


def _paths(directories: Folders) -> list[Path]:
    paths = [Path(directories)] if isinstance(directories, (str, Path)) else [Path(d) for d in directories]
    if not paths:
        raise ValueError("no results folder given; accepted: one or more <linkpred.results_dir>/<domain> folders")
    return paths


def _load(directories: Folders, relation: str | None, selection: str,
          metric: str) -> tuple[dict[str, Table], Table, list]:
    paths = _paths(directories)
    test_rows, val_rows = [], []
    for path in paths:
        tests_here = load_results(path / "results.json").rows
        val_here = load_results(path / "validation.json").rows
        if len(paths) > 1:  # one folder per hyperparameter cell: the cell joins the model's name
            tests_here, val_here = _labelled(tests_here, path), _labelled(val_here, path)
        test_rows += tests_here
        val_rows += val_here
    tests = {p: metric_table(test_rows, p, metric, relation) for p in ("heart", "uniform")}
    validation = metric_table(val_rows, selection, metric, relation)
    if not validation:
        raise ValueError(f"no validation rows with protocol {selection!r} and metric {metric!r} in "
                         f"{', '.join(map(str, paths))}" + (f" for relation {relation!r}" if relation else ""))
    return tests, validation, val_rows


def _labelled(rows: Sequence[ResultRow], path: Path) -> list[ResultRow]:
    """Rows whose ``model`` reads ``<model>@<cell>``, the cell being the folder above ``<domain>``
    (``results/linkpred_tune/<cell>/<domain>``): rows written before ``settings`` existed carry
    no hyperparameters, so the folder tells the cells apart."""
    label = path.parent.name
    return [replace(row, extra={**row.extra, "model": f"{row.get('model')}@{label}"}) for row in rows]


def _tick_label(config: Config) -> str:
    """``rcml``, the model and each of its settings, negatives and pair score on lines of their own."""
    source, model, *rest = config
    # the model label is _config's "sage[a,b]", with "@cell" after it when cells have folders (_labelled)
    return "\n".join([source, *filter(None, re.split(r"[\[\],]", model)), ", ".join(rest)])


def _paired_row(label: str, heart: PairedDifference, uniform: PairedDifference) -> str:
    return (f"| {label} | {heart.text()} | {'MEETS' if heart.meets else 'no'} | "
            f"{heart.positive}/{len(heart.per_seed)}, t = {heart.t:.2f} | "
            f"{_p(heart.p_t)}, {_p(heart.p_wilcoxon)} | {uniform.text()} |")


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _target(relation: str | None) -> str:
    return f" ({relation})" if relation else ""


def _save_png(fig: Any, path: str | Path) -> None:
    """Lay out, write atomically as a PNG and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_chosen(directory: Folders, path: str | Path, relation: str | None = None, selection: str = "heart",
                metric: str = "mrr") -> dict[str, dict[int, float]]:
    """Bars of each source's chosen configuration's test HeaRT ``metric`` (mean, sample-std error
    bars, one dot per seed), written atomically as a PNG; returns the plotted ``{source: {seed: value}}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tests, validation, _ = _load(directory, relation, selection, metric)
    chosen = choose_configurations(validation)
    plotted = {source: tests["heart"].get(config, {}) for source, config in chosen.items()}
    fig, ax = plt.subplots(figsize=(max(5.0, 2.0 * len(plotted)), 4.8))
    for i, (source, values) in enumerate(plotted.items()):
        if not values:
            continue
        spread = statistics.stdev(values.values()) if len(values) > 1 else 0.0
        ax.bar(i, _mean(values), 0.6, yerr=spread, capsize=4, color="#9ecae1" if source != "rcml" else "#3182bd")
        ax.scatter([i] * len(values), list(values.values()), color="black", s=12, zorder=3)
    ax.set_xticks(range(len(plotted)))
    ax.set_xticklabels([_tick_label(chosen[s]) for s in plotted], fontsize=7)
    ax.set_ylabel(f"test HeaRT {metric}")
    ax.set_title(f"Link prediction{_target(relation)}:\nconfiguration chosen on validation {selection}", fontsize=10)
    _save_png(fig, path)
    return plotted


def plot_paired(directory: Folders, path: str | Path, reference: str = "rcml", relation: str | None = None,
                selection: str = "heart", metric: str = "mrr") -> dict[str, PairedDifference]:
    """Per-seed test HeaRT differences ``reference - source`` of the chosen configurations: one
    column of dots per source, its mean with a two-sided 95% t interval, and the zero line; written
    atomically as a PNG. Bars from zero (:func:`plot_chosen`) hide differences of a few hundredths;
    this shows them, and how many seeds fall below zero. Returns the plotted differences."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import stats

    tests, validation, _ = _load(directory, relation, selection, metric)
    chosen = choose_configurations(validation)
    if reference not in chosen:
        raise ValueError(f"no rows for the reference features {reference!r}; present: {', '.join(chosen)}")
    differences = {}
    for source, config in chosen.items():
        if source != reference:
            with contextlib.suppress(ValueError):  # no shared seed: nothing to plot for it
                differences[source] = paired_difference(tests["heart"], chosen[reference], config)
    if not differences:
        raise ValueError(f"no source shares a test seed with {reference!r}: nothing to plot")
    fig, ax = plt.subplots(figsize=(max(4.5, 1.8 * len(differences)), 4.2))
    ax.axhline(0.0, color="grey", linewidth=1)
    for i, (source, diff) in enumerate(differences.items()):
        values = [v for _, v in sorted(diff.per_seed.items())]
        ax.scatter([i] * len(values), values, color=["#3182bd" if v > 0 else "#de2d26" for v in values], s=14,
                   zorder=3)
        if len(values) > 1:
            half = stats.t.isf(0.025, len(values) - 1) * diff.std / math.sqrt(len(values))
            ax.errorbar(i + 0.15, diff.mean, yerr=half, fmt="o", color="black", capsize=4)
    ax.set_xticks(range(len(differences)))
    ax.set_xticklabels([f"{reference} - {s}\n{d.positive}/{len(d.per_seed)} > 0, t = {d.t:.2f}"
                        for s, d in differences.items()], fontsize=8)
    ax.set_ylabel(f"test HeaRT {metric} difference")
    ax.set_title(f"Paired per seed{_target(relation)}: dots are seeds,\nblack the mean with its 95% t interval", fontsize=10)
    _save_png(fig, path)
    return differences


def linkpred_report(directory: Folders, reference: str = "rcml", relation: str | None = None,
                    selection: str = "heart", metric: str = "mrr", seed_groups: int | None = None) -> str:
    """Markdown report of a link-prediction grid in ``directory`` (``results.json`` and ``validation.json``).

    Args:
        directory: ``<linkpred.results_dir>/<domain>``, or several such folders, one per
            hyperparameter cell (``<root>/<cell>/<domain>``): each configuration's model then reads
            ``<model>@<cell>`` and the cells compete in the choice on validation.
        reference: The feature source compared with every other (``rcml``).
        relation: Only rows of this target kind (None: all; give it when a folder holds several).
        selection: Validation protocol that chooses each source's configuration (``heart``).
        metric: The metric of the tables and of the choice (``mrr``).
        seed_groups: Seeds equal modulo this share a checkpoint: each comparison also gets a row
            over the per-group means (:meth:`PairedDifference.grouped`). None: seeds independent.
    """
    tests, validation, val_rows = _load(directory, relation, selection, metric)
    chosen = choose_configurations(validation)
    where = ", ".join(map(str, _paths(directory)))
    lines = [f"# Link prediction grid: {where}" + (f" ({relation})" if relation else ""), ""]
    lines += _grid(tests["heart"], f"test HeaRT {metric} (mean ± sample std over seeds)")
    lines += _grid(tests["uniform"], f"test uniform {metric}")
    lines += _grid(validation, f"validation {selection} {metric} at the chosen epoch")
    lines += [f"### chosen configuration per source (highest mean validation {selection} {metric})", "",
              f"| features | model, negatives, pair score | validation {selection} | test HeaRT | test uniform |",
              "|---|---|---|---|---|"]
    for source, config in chosen.items():
        lines.append(f"| {source} | {', '.join(config[1:])} | {_cell(validation[config])} | "
                     f"{_cell(tests['heart'].get(config))} | {_cell(tests['uniform'].get(config))} |")
    for source, (common, extra) in incomplete_choices(validation).items():
        if set(extra) == {chosen[source]}:  # select on a few seeds, then run the chosen cell on more
            lines += ["", f"- {source}: chosen on seeds {common} (the seeds every configuration has); the chosen "
                      f"configuration also ran on seeds {extra[chosen[source]]}, and its rows above and its paired "
                      "differences below use every seed it ran"]
            continue
        lines += ["", f"- **{source}: unfinished grid, chosen on seeds {common} only** (the seeds every configuration "
                  f"has); {len(extra)} of its configurations have more: "
                  + "; ".join(f"{', '.join(c[1:])} {seeds}" for c, seeds in extra.items())]
    lines += ["", f"### paired per seed, test HeaRT {metric}, {reference} (chosen) minus each source (chosen)", ""]
    if reference not in chosen:
        lines.append(f"No rows for the reference features {reference!r} (present: {', '.join(chosen)}): no paired "
                     "differences; pass --reference.")
    else:
        lines += ["| | mean ± std (per seed) | every seed > 0 and mean > 2 std | seeds > 0, paired t | "
                  "one-sided p: t-test, Wilcoxon | uniform difference |", "|---|---|---|---|---|---|"]
    for source, config in chosen.items():
        if source == reference or reference not in chosen:
            continue
        try:
            heart = paired_difference(tests["heart"], chosen[reference], config)
            uniform = paired_difference(tests["uniform"], chosen[reference], config)
        except ValueError:
            lines.append(f"| {reference} - {source} | no shared test seed | – | – | – | – |")
            continue
        lines.append(_paired_row(f"{reference} - {source}", heart, uniform))
        if seed_groups is not None:
            sizes = sorted(set(Counter(s % seed_groups for s in heart.per_seed).values()))
            lines.append(_paired_row(f"{reference} - {source}, means of seeds equal mod {seed_groups} "
                                     f"(seeds per group: {'-'.join(map(str, sizes))})",
                                     heart.grouped(seed_groups), uniform.grouped(seed_groups)))
    bound = budget_bound_runs(val_rows, relation)
    unaudited = unaudited_runs(validation, val_rows, relation)
    lines += ["", "### convergence", ""]
    if bound:
        lines.append("Runs the epoch budget ended before patience did (not converged): "
                     + "; ".join(f"{', '.join(c)} seeds {s}" for c, s in bound.items()) + ".")
    if unaudited:
        lines.append("Runs without `training` rows (written before `linkpred.patience` existed; not audited): "
                     + "; ".join(f"{', '.join(c)} seeds {s}" for c, s in unaudited.items()) + ".")
    if not bound and not unaudited:
        lines.append("Every run stopped by patience (or peaked before its last epoch): none was cut short by "
                     "`linkpred.epochs`.")
    return "\n".join(lines) + "\n"
