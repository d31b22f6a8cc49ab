import json
import subprocess
import sys

import pytest
import torch

from rcml_graph.data.graph import GraphSettings
from rcml_graph.data.graph_io import MANIFEST_JSON, load_graph, load_report, read_manifest
from rcml_graph.data.pipeline import build_domain, resolve_meta_path
from rcml_graph.relations import edge_type
from tests.conftest import REPO_ROOT
from tests.data.amazon_samples import write_2018


def test_build_save_load_roundtrip_and_skip(tmp_path):
    meta = write_2018(tmp_path / "meta.json.gz")
    out = tmp_path / "processed"
    first = build_domain(meta, out, GraphSettings(min_community_size=2), show_progress=False)
    assert not first.skipped
    loaded = load_graph(out)
    assert loaded["product"].product_id == first.data["product"].product_id
    assert loaded.relation_text == first.data.relation_text
    for kind in ("also_bought", "also_viewed"):
        assert torch.equal(loaded[edge_type(kind)].edge_index, first.data[edge_type(kind)].edge_index)
        assert torch.equal(loaded[edge_type(kind)].desc_id, first.data[edge_type(kind)].desc_id)
    # The report written (by orjson) reads back equal, stage timings included.
    assert load_report(out) == first.report
    stages = first.report["timing_seconds"]["build_graph_stages"]
    assert {"nodes_and_texts", "communities_co_purchase", "statistics"} <= set(stages)
    assert all(seconds >= 0 for seconds in stages.values()) and "statistics_cpu" in stages
    assert json.loads((out / "graph.json").read_text())["node_types"]["product"]["num_nodes"] == 3
    again = build_domain(meta, out, GraphSettings(min_community_size=2), show_progress=False)
    assert again.skipped
    assert again.report == first.report
    changed = build_domain(meta, out, GraphSettings(min_community_size=2, seed=5), show_progress=False)
    assert not changed.skipped
    forced = build_domain(meta, out, GraphSettings(min_community_size=2, seed=5), force=True,
                          show_progress=False)
    assert not forced.skipped


def test_corrupt_artifact_is_not_mistaken_for_a_build(tmp_path):
    meta = write_2018(tmp_path / "meta.json.gz")
    out = tmp_path / "processed"
    build_domain(meta, out, GraphSettings(), show_progress=False)
    assert read_manifest(out) is not None
    (out / "graph.json").write_text("{half")  # as if a crash had truncated it
    assert read_manifest(out) is None
    with pytest.raises(FileNotFoundError, match="no finished graph build"):
        load_graph(out)
    assert not build_domain(meta, out, GraphSettings(), show_progress=False).skipped
    assert read_manifest(out) is not None


def test_missing_input_names_expected_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="meta_Sports_and_Outdoors.json.gz") as err:
        resolve_meta_path("sports", meta_path=None, raw_dir=tmp_path,
                          meta_files=["meta_Sports_and_Outdoors.json.gz"])
    assert "download_amazon.py domain=sports" in str(err.value)
    with pytest.raises(FileNotFoundError, match="domain.meta_path='/nope'"):
        resolve_meta_path("x", meta_path="/nope", raw_dir=tmp_path, meta_files=[])


def test_magazines_end_to_end(magazines_meta, tmp_path):
    outcome = build_domain(magazines_meta, tmp_path / "mag", GraphSettings(), show_progress=False)
    cleaning, graph = outcome.report["cleaning"], outcome.report["graph"]
    # Facts of the real file (../shared/data/README.md).
    assert cleaning["lines"] == 3385
    assert graph["products"] == 2320 == outcome.data["product"].num_nodes
    assert cleaning["duplicate_records_merged"] == 1065 == 3385 - 2320
    assert cleaning["titles_html_stripped"] >= 3153
    assert cleaning["title_fallback_description"] + cleaning["title_fallback_brand_category"] >= 2000
    rel = cleaning["relations"]
    # Edges inside the file, counted before de-duplication, are the README's numbers.
    assert rel["also_bought"]["kept"] + rel["also_bought"]["duplicate_edges_merged"] == 10134
    assert rel["also_viewed"]["kept"] + rel["also_viewed"]["duplicate_edges_merged"] == 13874
    assert rel["also_bought"]["dangling_targets_dropped"] > rel["also_bought"]["kept"]
    assert not any("<span" in t for t in outcome.data["product"].title)
    assert graph["communities"]["co_purchase"]["count"] >= 5
    assert outcome.report["graph"]["descriptions"]["per_relation"]["also_bought"]["specific_context_share"] > 0.9


def test_script_rejects_typos_and_builds(magazines_meta, tmp_path):
    base = [sys.executable, str(REPO_ROOT / "scripts" / "build_graph.py"), "domain=magazines",
            f"paths.data_root={tmp_path}", f"paths.runs_root={tmp_path / 'runs'}", "show_progress=false"]
    typo = subprocess.run([*base, "graph.val_rati=0.2"], capture_output=True, text=True)
    assert typo.returncode != 0 and "val_rati" in typo.stderr
    ok = subprocess.run(base, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    summary = json.loads(ok.stdout[ok.stdout.index("{"):])
    assert summary["products"] == 2320
    assert (tmp_path / "magazines" / "processed" / MANIFEST_JSON).is_file()
