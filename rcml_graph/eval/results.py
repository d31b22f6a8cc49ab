"""Long-form results files (``results.json``), seed aggregation and Markdown tables.

A results file holds one domain and one row per measured number::

    {"domain": "sports",
     "rows": [{"task": "retrieval", "method": "rcml", "seed": 0, "mode": "avg",
               "metric": "hit@5", "value": 0.61, "n": 1234}, ...]}

``n`` is the number of queries (or edges) behind the number. Rows may carry extra keys
(``model``, ``protocol``, ``subset``, ...); together with the fixed fields they form the row's
identity, so writing a row again replaces the old value instead of duplicating it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from rcml_graph.io_utils import atomic_write_text

__all__ = [
    "AggregateRow",
    "ResultRow",
    "ResultsFile",
    "aggregate",
    "append_rows",
    "load_results",
    "markdown_table",
]

ExtraValue = str | int | float | bool | None
_FIXED_FIELDS = ("task", "method", "seed", "mode", "metric", "value", "n")


@dataclass(frozen=True)
class ResultRow:
    """One measured number.

    Args:
        task: What was evaluated, e.g. ``"retrieval"``, ``"full_corpus"``, ``"link_prediction"``.
        method: The model or baseline, e.g. ``"rcml"``, ``"clip"``.
        seed: Training/evaluation seed.
        mode: Sub-setting such as a similarity mode (``"avg"``); ``None`` if not applicable.
        metric: Metric name, e.g. ``"hit@5"``, ``"mrr"``.
        value: The measured value.
        n: Number of queries or edges the value was computed on.
        extra: Further identity keys (``model``, ``protocol``, ``subset``); values are scalars.
    """

    task: str
    method: str
    seed: int
    mode: str | None
    metric: str
    value: float
    n: int
    extra: Mapping[str, ExtraValue] = field(default_factory=dict)

    def __post_init__(self) -> None:
        clash = sorted(set(self.extra) & set(_FIXED_FIELDS))
        if clash:
            raise ValueError(f"extra keys {clash} clash with fixed fields {list(_FIXED_FIELDS)}")

    def key(self) -> tuple:
        """Identity of the row: every field except ``value`` and ``n``."""
        return (self.task, self.method, self.seed, self.mode, self.metric, tuple(sorted(self.extra.items())))

    def get(self, name: str) -> ExtraValue:
        """A fixed field or an extra key by name (``None`` for an extra key the row lacks)."""
        if name in _FIXED_FIELDS:
            return getattr(self, name)
        return self.extra.get(name)

    def to_dict(self) -> dict[str, ExtraValue]:
        """Flat JSON-ready dict: fixed fields then extra keys."""
        row: dict[str, ExtraValue] = {name: getattr(self, name) for name in _FIXED_FIELDS}
        row.update(self.extra)
        return row

    @classmethod
    def from_dict(cls, row: Mapping[str, ExtraValue]) -> ResultRow:
        """Inverse of :meth:`to_dict`; unknown keys become ``extra``."""
        missing = [name for name in _FIXED_FIELDS if name not in row and name != "mode"]
        if missing:
            raise ValueError(f"result row {dict(row)} lacks required keys {missing}")
        return cls(
            task=str(row["task"]),
            method=str(row["method"]),
            seed=int(row["seed"]),  # type: ignore[arg-type]
            mode=None if row.get("mode") is None else str(row["mode"]),
            metric=str(row["metric"]),
            value=float(row["value"]),  # type: ignore[arg-type]
            n=int(row["n"]),  # type: ignore[arg-type]
            extra={k: v for k, v in row.items() if k not in _FIXED_FIELDS},
        )


@dataclass(frozen=True)
class ResultsFile:
    """The contents of a results file: one domain and its rows."""

    domain: str
    rows: list[ResultRow]


def load_results(path: str | os.PathLike) -> ResultsFile:
    """Read a results file written by :func:`append_rows`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"results file {path} does not exist")
    payload = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(payload, dict) or "domain" not in payload or "rows" not in payload:
        raise ValueError(f"{path} is not a results file: expected keys 'domain' and 'rows'")
    return ResultsFile(domain=str(payload["domain"]), rows=[ResultRow.from_dict(r) for r in payload["rows"]])


def append_rows(path: str | os.PathLike, domain: str, rows: Iterable[ResultRow]) -> ResultsFile:
    """Merge ``rows`` into the results file at ``path`` and write it atomically.

    Existing rows with the same identity (:meth:`ResultRow.key`) as a new row are replaced;
    others are kept in order, new rows are appended. The file is written to a temporary file
    in the same directory and moved into place with :func:`os.replace`, so a reader never sees
    a half-written file.

    Args:
        path: Results file; created (with its parent directories) if absent.
        domain: The file's domain; must match an existing file's domain.
        rows: Rows to add or replace.

    Returns:
        The merged contents as written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Read-merge-write under an inter-process lock: two runs finishing together (parallel jobs,
    # a Hydra multirun) would otherwise each write back only their own rows.
    with FileLock(str(path.with_name(f".{path.name}.lock"))):
        return _merge_and_write(path, domain, rows)


def _merge_and_write(path: Path, domain: str, rows: Iterable[ResultRow]) -> ResultsFile:
    existing: list[ResultRow] = []
    if path.exists():
        current = load_results(path)
        if current.domain != domain:
            raise ValueError(
                f"{path} holds results for domain {current.domain!r}, not {domain!r}; "
                f"write each domain to its own file"
            )
        existing = current.rows
    merged: dict[tuple, ResultRow] = {row.key(): row for row in existing}
    for row in rows:
        merged[row.key()] = row  # a replaced key keeps its original position
    result = ResultsFile(domain=domain, rows=list(merged.values()))
    payload = {"domain": domain, "rows": [row.to_dict() for row in result.rows]}
    atomic_write_text(path, json.dumps(payload, indent=1) + "\n")
    return result


@dataclass(frozen=True)
class AggregateRow:
    """Mean and standard deviation of one number over seeds.

    ``std`` is the sample standard deviation (``ddof=1``), 0.0 for a single seed. ``ns`` lists
    each seed's query count in seed order.
    """

    task: str
    method: str
    mode: str | None
    metric: str
    extra: Mapping[str, ExtraValue]
    mean: float
    std: float
    seeds: tuple[int, ...]
    ns: tuple[int, ...]

    @property
    def num_seeds(self) -> int:
        return len(self.seeds)

    def get(self, name: str) -> ExtraValue:
        """A field (``task``, ``method``, ``mode``, ``metric``) or an extra key by name."""
        if name in ("task", "method", "mode", "metric"):
            return getattr(self, name)
        return self.extra.get(name)


def aggregate(rows: Iterable[ResultRow]) -> list[AggregateRow]:
    """Group rows that differ only in ``seed`` and reduce each group to mean, std and ``n``.

    Groups are returned in order of first appearance. A seed repeated within a group is an
    error (the rows should have been merged by :func:`append_rows`).
    """
    groups: dict[tuple, list[ResultRow]] = {}
    for row in rows:
        group_key = (row.task, row.method, row.mode, row.metric, tuple(sorted(row.extra.items())))
        groups.setdefault(group_key, []).append(row)
    out: list[AggregateRow] = []
    for members in groups.values():
        members = sorted(members, key=lambda r: r.seed)
        seeds = tuple(r.seed for r in members)
        if len(set(seeds)) != len(seeds):
            first = members[0]
            raise ValueError(
                f"seed repeated in {seeds} for task={first.task!r} method={first.method!r} "
                f"mode={first.mode!r} metric={first.metric!r}"
            )
        values = [r.value for r in members]
        mean = math.fsum(values) / len(values)
        std = (
            math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
            if len(values) > 1
            else 0.0
        )
        first = members[0]
        out.append(
            AggregateRow(
                task=first.task,
                method=first.method,
                mode=first.mode,
                metric=first.metric,
                extra=dict(first.extra),
                mean=mean,
                std=std,
                seeds=seeds,
                ns=tuple(r.n for r in members),
            )
        )
    return out


def n_range_text(ns: Sequence[int]) -> str:
    """``n=12`` or ``n=10-12``: the query counts behind an aggregated number."""
    low, high = min(ns), max(ns)
    return f"n={low}" if low == high else f"n={low}-{high}"


def _format_cell(row: AggregateRow, digits: int) -> str:
    n_text = n_range_text(row.ns)
    seeds_text = "1 seed" if row.num_seeds == 1 else f"{row.num_seeds} seeds"
    return f"{row.mean:.{digits}f} ± {row.std:.{digits}f} ({n_text}, {seeds_text})"


def markdown_table(
    rows: Iterable[ResultRow],
    task: str | None = None,
    index: Sequence[str] = ("method",),
    columns: Sequence[str] = ("metric",),
    where: Mapping[str, ExtraValue] | None = None,
    digits: int = 3,
) -> str:
    """A Markdown table of ``mean ± std (n=..., S seeds)`` cells aggregated over seeds.

    Args:
        rows: Raw per-seed rows (e.g. ``load_results(path).rows``).
        task: Keep only rows of this task (``None`` keeps all).
        index: Fields (fixed or extra) whose values label the table's rows.
        columns: Fields whose values label the table's columns.
        where: Further equality filters, e.g. ``{"mode": "avg"}``.
        digits: Decimals for mean and std.

    Returns:
        The table text, rows and columns in order of first appearance; a missing cell is ``-``.

    Raises:
        ValueError: when two aggregated numbers fall into the same cell (a field that varies is
            in neither ``index``, ``columns`` nor ``where``; the message names it).
    """
    selected = [r for r in rows if task is None or r.task == task]
    for name, wanted in (where or {}).items():
        selected = [r for r in selected if r.get(name) == wanted]
    aggregated = aggregate(selected)
    if not aggregated:
        raise ValueError(f"no result rows match task={task!r} where={dict(where or {})}")
    cells: dict[tuple, dict[tuple, AggregateRow]] = {}
    column_keys: dict[tuple, None] = {}
    for agg in aggregated:
        row_key = tuple(agg.get(name) for name in index)
        col_key = tuple(agg.get(name) for name in columns)
        column_keys[col_key] = None
        clash = cells.setdefault(row_key, {}).get(col_key)
        if clash is not None:
            fields = ["task", "method", "mode", "metric", *sorted(set(agg.extra) | set(clash.extra))]
            varying = [f for f in fields if agg.get(f) != clash.get(f)]
            raise ValueError(
                f"cell {row_key} x {col_key} gets two numbers; field(s) {varying} vary: "
                f"add them to index/columns or filter with where="
            )
        cells[row_key][col_key] = agg

    def label(key: tuple) -> str:
        return " / ".join("-" if v is None else str(v) for v in key)

    header = [" / ".join(index), *(label(c) for c in column_keys)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for row_key, row_cells in cells.items():
        values = [_format_cell(row_cells[c], digits) if c in row_cells else "-" for c in column_keys]
        lines.append("| " + " | ".join([label(row_key), *values]) + " |")
    return "\n".join(lines) + "\n"
