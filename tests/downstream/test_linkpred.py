import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch_geometric.data import HeteroData

from rcml_graph.cli import CONFIG_DIR
from rcml_graph.downstream import LinkPredSettings, random_features, train_and_evaluate
from rcml_graph.relations import SELF_RELATION_TEXT, edge_type, reverse_edge_type


def _clustered_graph(num_clusters: int = 20, size: int = 10, seed: int = 0) -> tuple[HeteroData, torch.Tensor]:
    """Products in clusters; also_bought links only inside a cluster; 80/10/10 split per pair."""
    generator = torch.Generator().manual_seed(seed)
    n = num_clusters * size
    cluster = torch.arange(n) // size
    u, v = torch.triu_indices(n, n, offset=1)
    inside = cluster[u] == cluster[v]
    keep = inside & (torch.rand(u.numel(), generator=generator) < 0.5)
    edge_index = torch.stack([u[keep], v[keep]])
    split = torch.multinomial(torch.tensor([0.8, 0.1, 0.1]), edge_index.size(1), replacement=True, generator=generator)
    data = HeteroData()
    data["product"].num_nodes = n
    data["product"].category_id = torch.full((n,), -1)
    for etype, ei in ((edge_type("also_bought"), edge_index), (reverse_edge_type("also_bought"), edge_index.flip(0))):
        data[etype].edge_index = ei
        data[etype].split = split
        data[etype].desc_id = torch.ones_like(split)
    data.relation_text = [SELF_RELATION_TEXT, "also bought by the same customers"]
    data.relation_kind_of_desc = torch.tensor([-1, 0])
    informative = torch.nn.functional.one_hot(cluster, num_clusters).float() + 0.1 * torch.randn(n, num_clusters, generator=generator)
    return data, informative


@pytest.fixture
def one_thread():
    """One intra-op thread: parallel CPU reductions otherwise change the float sums between runs
    (seen as a flaky margin when the machine was loaded)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_informative_features_beat_random_on_mrr(one_thread) -> None:
    data, informative = _clustered_graph()
    settings = LinkPredSettings(epochs=25, eval_every=5, num_negatives=20, hits_negatives=500, hidden_channels=16)
    good = train_and_evaluate(data, informative, "mlp", settings, seed=0)
    noise = train_and_evaluate(data, random_features(200, 20, 0), "mlp", settings, seed=0)
    # Without a category, the hard negatives are the 2-hop neighbourhood (same cluster, not yet
    # linked) then random products: cluster features rank positives above the random fill.
    assert good.metrics["heart"]["mrr"] > noise.metrics["heart"]["mrr"] + 0.1
    # About 5% of 500 random pairs fall inside a cluster and look like links; 100 is past them.
    # Measured about 0.375 vs 0.175; the value moves by a few points with the thread count, so
    # the margin leaves room for that (the MRR check above is the main claim).
    assert good.metrics["random"]["hits@100"] > noise.metrics["random"]["hits@100"] + 0.1
    assert 0.0 <= noise.metrics["heart"]["mrr"] <= 1.0
    assert good.metrics["heart"]["n"] == int((data[edge_type("also_bought")].split == 2).sum())


def test_sage_learns_the_structure_from_random_features(one_thread) -> None:
    data, _ = _clustered_graph()
    settings = LinkPredSettings(epochs=25, eval_every=5, num_negatives=20, hits_negatives=500, hidden_channels=16)
    noise = random_features(200, 20, 0)
    sage = train_and_evaluate(data, noise, "sage", settings, seed=0)
    mlp = train_and_evaluate(data, noise, "mlp", settings, seed=0)
    # Random features carry no link; message passing over the training edges does (the SAGE
    # embedding of a node averages its cluster). Measured uniform MRR 0.34 vs 0.12.
    assert sage.metrics["uniform"]["mrr"] > mlp.metrics["uniform"]["mrr"] + 0.1


def test_raw_anisotropic_features_are_normalised(one_thread) -> None:
    # Features like a contrastive encoder's: one large shared direction, tiny informative part.
    data, informative = _clustered_graph()
    shared = torch.full((1, 64), 1.0)
    anisotropic = shared + 0.01 * torch.cat([informative, torch.zeros(200, 44)], dim=1)
    settings = LinkPredSettings(epochs=25, eval_every=5, num_negatives=20, hits_negatives=500, hidden_channels=16)
    outcome = train_and_evaluate(data, anisotropic, "sage", settings, seed=0)
    # After z-scoring the informative columns dominate: far above the ~0.18 of chance among 20.
    assert outcome.metrics["uniform"]["mrr"] > 0.4


def test_minibatch_training_is_comparable_with_full_batch(one_thread) -> None:
    data, informative = _clustered_graph()
    common = dict(epochs=25, eval_every=5, num_negatives=20, hits_negatives=500, hidden_channels=16,
                  batch_size=64, num_neighbors=(5, 5))
    full = train_and_evaluate(data, informative, "sage", LinkPredSettings(mode="full", **common), seed=0)
    # auto switches to mini-batch above max_full_batch_nodes.
    auto = train_and_evaluate(data, informative, "sage", LinkPredSettings(max_full_batch_nodes=10, **common), seed=0)
    forced = train_and_evaluate(data, informative, "sage", LinkPredSettings(mode="minibatch", **common), seed=0)
    assert auto.metrics == forced.metrics  # same seed, same sampler draws
    # Measured 0.59 (full) and 0.84 (mini-batch: more optimiser steps per epoch).
    assert forced.metrics["uniform"]["mrr"] > full.metrics["uniform"]["mrr"] - 0.1
    assert forced.metrics["heart"]["n"] == full.metrics["heart"]["n"]
    with pytest.raises(ValueError, match="unknown mode 'batched'"):
        LinkPredSettings(mode="batched")
    with pytest.raises(ValueError, match=r"one fan-out per layer \(2\); got \[5\]"):
        LinkPredSettings(num_neighbors=(5,))


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> str:
    from rcml_graph.data.demo import generate_demo
    from rcml_graph.data.graph import GraphSettings
    from rcml_graph.data.pipeline import build_domain

    root = tmp_path_factory.mktemp("data")
    generate_demo(root / "demo" / "raw", num_products=300, images=False)
    build_domain(root / "demo" / "raw" / "meta_Demo.json.gz", root / "demo" / "processed", GraphSettings(),
                 show_progress=False)
    return str(root)


@pytest.mark.parametrize("features,extra", [
    ("random", []), pytest.param("backbone", ["model=tiny"], marks=pytest.mark.slow)])
def test_linkpred_end_to_end_on_demo(demo_root: str, tmp_path, features: str, extra: list[str]) -> None:
    from rcml_graph.linkpred import run

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = compose(config_name="config", overrides=[
            f"paths.data_root={demo_root}", f"linkpred.features={features}",
            "linkpred.seeds=[0]", "linkpred.epochs=3", "linkpred.eval_every=3", "linkpred.hidden_channels=16", "linkpred.num_negatives=20",
            "linkpred.hits_negatives=300", f"linkpred.results_dir={tmp_path / 'results'}",
            f"linkpred.output_dir={tmp_path / 'run'}", "show_progress=false", *extra,
        ])
        summary = run(cfg)
    payload = json.loads((tmp_path / "results" / "demo" / "results.json").read_text())
    rows = payload["rows"]
    assert {r["model"] for r in rows} == {"sage", "mlp"}
    assert {r["method"] for r in rows} == {features}
    assert {(r["protocol"], r["metric"]) for r in rows} == {
        ("heart", "mrr"), ("heart", "hits@1"), ("heart", "hits@3"), ("heart", "hits@10"),
        ("uniform", "mrr"), ("uniform", "hits@1"), ("uniform", "hits@3"), ("uniform", "hits@10"),
        ("random", "hits@10"), ("random", "hits@50"), ("random", "hits@100")}
    assert all(r["task"] == "linkpred" and 0.0 <= r["value"] <= 1.0 and r["n"] > 0 for r in rows)
    assert len(rows) == 22
    assert 0.0 < summary["sage/heart/mrr"] <= 1.0
    assert "| random" in (tmp_path / "run" / "results.md").read_text() or features != "random"
