"""Markdown report of a results file: one table per task, ``mean ± std (n, seeds)`` cells."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from rcml_graph.eval.results import ResultRow, aggregate, markdown_table, n_range_text

__all__ = ["HEADLINE_ROWS", "headline_table", "paired_table", "results_markdown"]


def results_markdown(domain: str, rows: Sequence[ResultRow], notes: Sequence[str] = ()) -> str:
    """The whole report: a heading, notes, and per task a table indexed by method and the
    row keys that vary within the task (mode, protocol, subset), one column per metric."""
    lines = [f"# Evaluation results: {domain}", ""]
    lines += [f"- {note}" for note in notes]
    if notes:
        lines.append("")
    tasks: list[str] = []
    for row in rows:
        if row.task not in tasks:
            tasks.append(row.task)
    for task in tasks:
        task_rows = [r for r in rows if r.task == task]
        extra_keys = sorted({key for r in task_rows for key in r.extra})
        index = ["method", *extra_keys]
        if any(r.mode is not None for r in task_rows):
            index.append("mode")
        lines += [f"## {task}", "", markdown_table(task_rows, task=task, index=index, columns=("metric",))]
    return "\n".join(lines)


#: The headline numbers of docs/results.md: (label, task, mode, metric, extra keys).
HEADLINE_ROWS: tuple[tuple[str, str, str | None, str, dict[str, str]], ...] = (
    ("paper protocol (1 + 20 random negatives)", "retrieval", "avg", "hit@5",
     {"protocol": "random", "subset": "all"}),
    ("same, never linked in training", "retrieval", "avg", "hit@5",
     {"protocol": "random", "subset": "never_linked_in_train"}),
    ("relation-sensitive (hard negatives)", "retrieval_sensitive", "avg", "hit@5",
     {"protocol": "sensitive", "subset": "all"}),
    ("sensitive, never linked in training", "retrieval_sensitive", "avg", "hit@5",
     {"protocol": "sensitive", "subset": "never_linked_in_train"}),
    ("sensitive, also_bought", "retrieval_sensitive", "avg", "hit@5",
     {"protocol": "sensitive", "subset": "kind=also_bought"}),
    ("sensitive, also_viewed", "retrieval_sensitive", "avg", "hit@5",
     {"protocol": "sensitive", "subset": "kind=also_viewed"}),
    ("paper protocol, paraphrased (unseen) descriptions", "retrieval_unseen", "avg", "hit@5",
     {"protocol": "random", "subset": "paraphrased"}),
    ("sensitive, paraphrased descriptions", "retrieval_unseen", "avg", "hit@5",
     {"protocol": "sensitive", "subset": "paraphrased"}),
    ("relation-type prediction", "relation_type", None, "top1", {"subset": "all"}),
    ("relation validation", "relation_validation", None, "roc_auc", {"subset": "all"}),
    ("category probe", "classification", None, "accuracy", {"subset": "all"}),
    ("own text->image (retention)", "retention", "text2image", "mrr", {"subset": "own_pair"}),
)


def _headline_rows(rows: Sequence[ResultRow], method: str, task: str, mode: str | None, metric: str,
                   extra: dict[str, str]) -> list[ResultRow]:
    """The rows of ``method`` that one :data:`HEADLINE_ROWS` entry picks (any seed)."""
    return [r for r in rows if r.task == task and r.method == method and r.mode == mode
            and r.metric == metric and all(r.extra.get(k) == v for k, v in extra.items())]


def _headline_by_seed(rows: Sequence[ResultRow], method: str, task: str, mode: str | None, metric: str,
                     extra: dict[str, str]) -> dict[int, ResultRow]:
    """Per seed, the one headline row of ``method`` (a seed with two values is refused)."""
    values: dict[int, ResultRow] = {}
    for r in _headline_rows(rows, method, task, mode, metric, extra):
        if r.seed in values:
            raise ValueError(f"{method!r} seed {r.seed} has two values for {task}/{metric} {extra}; "
                             "accepted: one results file per (method, seed)")
        values[r.seed] = r
    return values


def paired_table(rows: Sequence[ResultRow], method_a: str, method_b: str, mode: str = "avg",
                 digits: int = 3) -> str:
    """Per :data:`HEADLINE_ROWS` row, ``method_a - method_b`` paired by seed: each seed's
    difference, their mean ± std (sample std, n - 1) and how many are positive. Seeds that only
    one method has are left out and counted. A seed whose two values were computed on different
    numbers of queries is refused: they were not measured on the same queries, so not paired."""
    header = ["task", "metric", "seeds", f"{method_a} - {method_b} per seed", "mean ± std", "positive"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for label, task, row_mode, metric, extra in HEADLINE_ROWS:
        wanted_mode = mode if row_mode == "avg" else row_mode
        a = _headline_by_seed(rows, method_a, task, wanted_mode, metric, extra)
        b = _headline_by_seed(rows, method_b, task, wanted_mode, metric, extra)
        seeds = sorted(set(a) & set(b))
        unpaired = len(set(a) ^ set(b))
        if not seeds:
            lines.append(f"| {label} | {metric} | 0 | – | – | – |")
            continue
        for s in seeds:
            if a[s].n != b[s].n:
                raise ValueError(f"{label!r} seed {s}: {method_a!r} has n={a[s].n} but {method_b!r} has "
                                 f"n={b[s].n}; accepted: both evaluated on the same queries (equal n)")
        diffs = [a[s].value - b[s].value for s in seeds]
        std = statistics.stdev(diffs) if len(diffs) > 1 else float("nan")
        per_seed = ", ".join(f"{s}: {d:+.{digits}f}" for s, d in zip(seeds, diffs))
        seeds_text = f"{len(seeds)}" + (f" ({unpaired} unpaired left out)" if unpaired else "")
        lines.append(f"| {label} | {metric} | {seeds_text} | {per_seed} | "
                     f"{statistics.fmean(diffs):+.{digits}f} ± {std:.{digits}f} | "
                     f"{sum(d > 0 for d in diffs)}/{len(diffs)} |")
    return "\n".join(lines) + "\n"


def headline_table(rows: Sequence[ResultRow], mode: str = "avg", digits: int = 3) -> str:
    """One Markdown table of :data:`HEADLINE_ROWS` (retrieval rows in similarity ``mode``), a
    column per method in order of first appearance, ``mean ± std (n=...)`` cells aggregated over
    the seeds present (``(S)`` seeds); ``–`` where a method has no such number."""
    methods = list(dict.fromkeys(r.method for r in rows))
    header = ["task", "metric", *methods]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for label, task, row_mode, metric, extra in HEADLINE_ROWS:
        wanted_mode = mode if row_mode == "avg" else row_mode
        cells = []
        for method in methods:
            found = aggregate(_headline_rows(rows, method, task, wanted_mode, metric, extra))
            if len(found) > 1:
                raise ValueError(f"{label!r} of method {method!r} matches {len(found)} aggregated rows "
                                 f"(rows differ in keys other than {sorted(extra)})")
            if not found:
                cells.append("–")
                continue
            agg = found[0]
            cells.append(f"{agg.mean:.{digits}f} ± {agg.std:.{digits}f} ({n_range_text(agg.ns)}, {agg.num_seeds})")
        lines.append("| " + " | ".join([label, metric, *cells]) + " |")
    return "\n".join(lines) + "\n"
