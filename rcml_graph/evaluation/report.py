"""Markdown report of a results file: one table per task, ``mean ± std (n, seeds)`` cells."""

from __future__ import annotations

from collections.abc import Sequence

from rcml_graph.eval.results import ResultRow, markdown_table

__all__ = ["results_markdown"]


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
