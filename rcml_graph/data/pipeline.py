"""The build stage's side-effect layer: find the input, read it, build, write artifacts.

``build_graph`` itself is pure; this module does the file work around it and the skip logic
(an unchanged input and unchanged settings reuse the finished build).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch_geometric.data import HeteroData
from tqdm.auto import tqdm

from rcml_graph.data.amazon import read_products
from rcml_graph.data.graph import GraphSettings, build_graph
from rcml_graph.data.graph_io import load_graph, load_report, read_manifest, save_processed
from rcml_graph.data.products import collect_products
from rcml_graph.io_utils import sha256_file, sha256_json

log = logging.getLogger(__name__)

#: Bumped whenever the artifact layout or the build's semantics change.
GRAPH_FORMAT_VERSION = 1
AMAZON_DATA_PAGES = (
    "2014: https://jmcauley.ucsd.edu/data/amazon/ ; "
    "2018: https://nijianmo.github.io/amazon/index.html ; "
    "2023: https://amazon-reviews-2023.github.io/"
)


def resolve_meta_path(
    domain: str,
    *,
    meta_path: str | None,
    raw_dir: str | Path,
    meta_files: list[str],
    search_dirs: list[str] | None = None,
) -> Path:
    """The metadata file of a domain, or a FileNotFoundError that says what was expected."""
    if meta_path:
        path = Path(meta_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"domain.meta_path={meta_path!r} does not exist or is not a file")
        return path
    dirs = [Path(raw_dir), *(Path(d) for d in search_dirs or [])]
    candidates = [d / name for d in dirs for name in meta_files]
    for path in candidates:
        if path.is_file():
            return path
    expected = "\n  ".join(str(p) for p in candidates) or "(no meta_files configured)"
    raise FileNotFoundError(
        f"no metadata file for domain {domain!r}; expected one of:\n  {expected}\n"
        f"Download the product metadata of the public Amazon review data ({AMAZON_DATA_PAGES}), "
        f"e.g. `python scripts/download_amazon.py domain={domain}`, or pass "
        "domain.meta_path=/path/to/meta_<Category>.json.gz"
    )


@dataclass
class BuildOutcome:
    data: HeteroData
    report: dict[str, Any]
    processed_dir: Path
    skipped: bool


def build_domain(
    meta_path: str | Path,
    processed_dir: str | Path,
    settings: GraphSettings,
    *,
    release: str = "auto",
    drop_no_text: bool = True,
    force: bool = False,
    show_progress: bool = True,
) -> BuildOutcome:
    """Build (or reuse) the processed graph of one metadata file."""
    meta_path, processed_dir = Path(meta_path), Path(processed_dir)
    provenance = {
        "format_version": GRAPH_FORMAT_VERSION,
        "input": {"path": str(meta_path.resolve()), "sha256": sha256_file(meta_path)},
        "settings_sha256": sha256_json(
            {**dataclasses.asdict(settings), "release": release, "drop_no_text": drop_no_text}
        ),
        "settings": {**dataclasses.asdict(settings), "release": release, "drop_no_text": drop_no_text},
    }
    manifest = None if force else read_manifest(processed_dir)
    if (
        manifest is not None
        and manifest.get("format_version") == GRAPH_FORMAT_VERSION
        and manifest.get("input", {}).get("sha256") == provenance["input"]["sha256"]
        and manifest.get("settings_sha256") == provenance["settings_sha256"]
    ):
        log.info("unchanged input and settings: reusing %s (force=true rebuilds)", processed_dir)
        return BuildOutcome(load_graph(processed_dir), load_report(processed_dir), processed_dir, True)

    start, start_cpu = time.perf_counter(), time.process_time()
    records = read_products(meta_path, release)
    if show_progress:
        records = tqdm(records, desc=f"reading {meta_path.name}", unit=" lines", mininterval=1.0)
    table = collect_products(
        records, max_text_chars=settings.max_text_chars, drop_no_text=drop_no_text
    )
    read_seconds, read_cpu = time.perf_counter() - start, time.process_time() - start_cpu
    graph_stages: dict[str, float] = {}
    data, graph_report = build_graph(table, settings, stage_seconds=graph_stages)
    report = {
        "input": provenance["input"],
        "cleaning": table.report,
        "graph": graph_report,
        # The write is not in "total": the report is part of what is written.
        "timing_seconds": {
            "read_and_clean": round(read_seconds, 3),
            "read_and_clean_cpu": round(read_cpu, 3),
            "build_graph": round(time.perf_counter() - start - read_seconds, 3),
            "build_graph_stages": graph_stages,
            "total": round(time.perf_counter() - start, 3),
            "total_cpu": round(time.process_time() - start_cpu, 3),
        },
    }
    del table  # the graph holds what is still needed: free the lists before the write
    save_processed(processed_dir, data, report, provenance)
    return BuildOutcome(data, report, processed_dir, False)
