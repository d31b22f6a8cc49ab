"""results.json round trip, replacement of identical rows, aggregation and the Markdown table."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rcml_graph.eval.results import ResultRow, aggregate, append_rows, load_results, markdown_table


def _row(seed: int, value: float, metric: str = "hit@5", method: str = "rcml", n: int = 100, **extra) -> ResultRow:
    return ResultRow(task="retrieval", method=method, seed=seed, mode="avg", metric=metric, value=value, n=n,
                     extra=extra)


def test_round_trip_long_form(tmp_path: Path) -> None:
    path = tmp_path / "out" / "results.json"
    rows = [_row(0, 0.61, n=1234), _row(0, 0.5, metric="mrr", subset="cold")]
    append_rows(path, "sports", rows)
    payload = json.loads(path.read_text())
    assert payload["domain"] == "sports"
    assert payload["rows"][0] == {"task": "retrieval", "method": "rcml", "seed": 0, "mode": "avg",
                                  "metric": "hit@5", "value": 0.61, "n": 1234}
    assert payload["rows"][1]["subset"] == "cold"
    loaded = load_results(path)
    assert loaded.domain == "sports"
    assert loaded.rows == rows
    assert not list(path.parent.glob("*.tmp"))  # the temporary file was moved into place
    # The mode a plain open() gives (mkstemp's 0600 made results unreadable to other users).
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


def test_append_replaces_rows_with_the_same_identity(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    append_rows(path, "sports", [_row(0, 0.1), _row(1, 0.2), _row(0, 0.3, subset="cold")])
    merged = append_rows(path, "sports", [_row(1, 0.9, n=7), _row(2, 0.4)])
    values = [(r.seed, r.value, r.n, dict(r.extra)) for r in load_results(path).rows]
    assert values == [(0, 0.1, 100, {}), (1, 0.9, 7, {}), (0, 0.3, 100, {"subset": "cold"}), (2, 0.4, 100, {})]
    assert len(merged.rows) == 4
    with pytest.raises(ValueError, match="domain 'sports', not 'baby'"):
        append_rows(path, "baby", [_row(0, 0.1)])


def _append_many(path: str, worker: int, count: int) -> None:
    for i in range(count):
        append_rows(path, "sports", [_row(worker * 1000 + i, float(i))])


def test_concurrent_appends_lose_no_row(tmp_path: Path) -> None:
    import multiprocessing

    path = tmp_path / "results.json"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(path), w, 25)) for w in range(4)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
        assert process.exitcode == 0
    # Without the lock this fails: each writer puts back only what it read plus its own row.
    seeds = sorted(r.seed for r in load_results(path).rows)
    assert seeds == sorted(w * 1000 + i for w in range(4) for i in range(25))


def test_aggregate_mean_std_over_seeds() -> None:
    rows = [_row(2, 0.8, n=100), _row(0, 0.6, n=100), _row(1, 0.7, n=90), _row(0, 0.5, method="clip")]
    rcml, clip = aggregate(rows)
    assert rcml.mean == pytest.approx(0.7)
    assert rcml.std == pytest.approx(0.1)  # sample std of 0.6, 0.7, 0.8
    assert rcml.seeds == (0, 1, 2) and rcml.ns == (100, 90, 100)
    assert (clip.mean, clip.std, clip.num_seeds) == (0.5, 0.0, 1)
    with pytest.raises(ValueError, match="seed repeated"):
        aggregate([_row(0, 0.1), _row(0, 0.2)])


def test_markdown_table_cells() -> None:
    rows = [_row(s, v, n=1234) for s, v in enumerate((0.6, 0.7, 0.8))]
    rows += [_row(s, v, metric="mrr", n=1234) for s, v in enumerate((0.5, 0.5, 0.5))]
    rows += [_row(0, 0.4, method="clip", n=1200), _row(1, 0.5, method="clip", n=1234)]
    table = markdown_table(rows, task="retrieval")
    lines = table.strip().splitlines()
    assert lines[0] == "| method | hit@5 | mrr |"
    assert lines[1] == "|---|---|---|"
    assert lines[2] == "| rcml | 0.700 ± 0.100 (n=1234, 3 seeds) | 0.500 ± 0.000 (n=1234, 3 seeds) |"
    assert lines[3] == "| clip | 0.450 ± 0.071 (n=1200-1234, 2 seeds) | - |"


def test_markdown_table_reports_a_field_that_collides() -> None:
    rows = [_row(0, 0.6, subset="cold"), _row(0, 0.7, subset="warm")]
    with pytest.raises(ValueError, match=r"\['subset'\] vary"):
        markdown_table(rows)
    table = markdown_table(rows, index=("method", "subset"))
    assert "| rcml / warm | 0.700 ± 0.000 (n=100, 1 seed) |" in table
    assert "| rcml / cold |" in markdown_table(rows, where={"subset": "cold"}, index=("method", "subset"))
