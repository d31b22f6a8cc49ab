import json

import pytest
import torch
import torch.nn.functional as F
from torch_geometric.data import HeteroData

from rcml_graph.downstream import (
    LinkPredictor,
    LinkPredSettings,
    PairScore,
    build_evaluation_set,
    conditioned_embeddings,
    cosine_pair_score,
    embedding_score_metrics,
    pair_score_metrics,
    random_features,
    rcml_pair_score,
    source_descriptions,
    train_and_evaluate,
)
from rcml_graph.relations import SELF_RELATION_TEXT, edge_type, reverse_edge_type
from tests.downstream.test_linkpred import (
    _clustered_graph,
    _compose,
    _QueryFakeEncoder,
    _training_only,
    one_thread,  # noqa: F401  (fixture)
)


def _described_graph() -> HeteroData:
    """6 products, ``also_bought`` descriptions 1-3 (1 generic), ``also_viewed`` 4.

    Training ``also_bought`` edges (source: descriptions): 0: 2, 2, 3 -> 2; 1: 3, 2 -> 2 (tie,
    lowest id); 2: only a test edge (desc 3) -> none; 3: a training edge on a pair (3, 4) that is a
    test ``also_viewed`` pair -> excluded -> none; 4, 5: no outgoing edge -> none.
    """
    data = HeteroData()
    data["product"].num_nodes = 6
    data["product"].category_id = torch.tensor([0, 0, 1, 1, 2, 2])
    bought = torch.tensor([[0, 0, 0, 1, 1, 2, 3], [1, 2, 3, 2, 3, 5, 4]])
    bought_split = torch.tensor([0, 0, 0, 0, 0, 2, 0])
    bought_desc = torch.tensor([2, 2, 3, 3, 2, 3, 3])
    viewed = torch.tensor([[3, 0], [4, 5]])
    viewed_split, viewed_desc = torch.tensor([2, 0]), torch.tensor([4, 4])
    for kind, ei, split, desc in (("also_bought", bought, bought_split, bought_desc),
                                  ("also_viewed", viewed, viewed_split, viewed_desc)):
        for etype, index in ((edge_type(kind), ei), (reverse_edge_type(kind), ei.flip(0))):
            data[etype].edge_index, data[etype].split, data[etype].desc_id = index, split, desc
    data.relation_text = [SELF_RELATION_TEXT, "also bought by the same customers", "also bought by people who like a",
                          "also bought by people who like b", "viewed together by shoppers comparing c"]
    data.relation_kind_of_desc = torch.tensor([-1, 0, 0, 0, 1])
    return data


def test_source_descriptions_count_training_edges_only() -> None:
    data = _described_graph()
    assert source_descriptions(data, "also_bought").tolist() == [2, 2, -1, -1, -1, -1]
    assert source_descriptions(data, "also_viewed").tolist() == [4, -1, -1, -1, -1, -1]
    # Nothing held out plays a part: the same on a graph with every held-out edge removed.
    stripped = _training_only(data)
    assert torch.equal(source_descriptions(stripped, "also_bought"), source_descriptions(data, "also_bought"))
    # A held-out edge turned into a training one does change the answer (the test can fail).
    data[edge_type("also_bought")].split = torch.zeros(7, dtype=torch.long)
    data[edge_type("also_viewed")].split = torch.zeros(2, dtype=torch.long)
    assert source_descriptions(data, "also_bought").tolist() == [2, 2, 3, 3, -1, -1]


def test_rcml_pair_score_is_the_heads_score_under_the_sources_description() -> None:
    data = _described_graph()
    encoder = _QueryFakeEncoder(6, 5)
    score = rcml_pair_score(encoder, data, "also_bought")
    # Sources 0 and 1 use description 2; the others fall back to the generic description 1.
    assert score.targets.shape == (2, 6, 16) and score.slot.tolist() == [1, 1, 0, 0, 0, 0]
    pairs = torch.tensor([[0, 1, 2, 4, 5], [3, 0, 5, 1, 4]])
    products = torch.arange(6)
    expected = []
    for u, v in pairs.T.tolist():
        d = 2 if u in (0, 1) else 1
        q = conditioned_embeddings(encoder, data, products[u : u + 1], d, as_query=True)
        z = conditioned_embeddings(encoder, data, products[v : v + 1], d)
        expected.append(float((q * z).sum()))
    assert torch.allclose(score.raw(pairs), torch.tensor(expected), atol=1e-6)
    assert torch.allclose(score(pairs), (torch.tensor(expected) - score.mean) / score.std, atol=1e-5)
    # Training edges only: identical scores with every held-out edge removed.
    stripped = rcml_pair_score(encoder, _training_only(data), "also_bought")
    assert torch.equal(stripped.source, score.source) and torch.equal(stripped.targets, score.targets)
    assert (stripped.mean, stripped.std) == (score.mean, score.std)
    with pytest.raises(ValueError, match="no description in this graph"):
        rcml_pair_score(encoder, data, "bought_together")


def test_cosine_pair_score_ranks_like_the_cosine_and_is_standardised() -> None:
    data, informative = _clustered_graph(num_clusters=8, size=8)
    score = cosine_pair_score(informative)
    pairs = torch.randint(0, 64, (2, 500), generator=torch.Generator().manual_seed(1))
    cosine = F.cosine_similarity(informative[pairs[0]], informative[pairs[1]], dim=-1)
    assert torch.allclose(score.raw(pairs), cosine, atol=1e-5)
    reference = torch.randint(0, 64, (2, 20_000), generator=torch.Generator().manual_seed(2))
    reference = score(reference[:, reference[0] != reference[1]])  # like the constants: no self-pairs
    assert abs(float(reference.mean())) < 0.05 and abs(float(reference.std()) - 1) < 0.05
    # Standardising is monotone: the metrics are those of the raw cosine.
    evaluation = build_evaluation_set(data, "test", LinkPredSettings(num_negatives=10, hits_negatives=100), 0)
    unit = F.normalize(informative, dim=-1)
    assert pair_score_metrics(score, evaluation) == embedding_score_metrics(unit, unit, evaluation)
    with pytest.raises(ValueError, match=r"targets must be \(M, 64, 8\)"):
        PairScore(unit, unit[None, :, :4], torch.zeros(64, dtype=torch.long))


def test_no_pair_score_leaves_every_number_unchanged(one_thread) -> None:
    # Values measured with the code of commit 1c751cf, before the pair-score option existed
    # (same graph, settings and seed; one thread).
    data, informative = _clustered_graph(num_clusters=8, size=8)
    expected = {("full", "uniform"): (0.31904760003089905, 0.36853739619255066),
                ("full", "heart"): (0.41139456629753113, 0.6333333253860474),
                ("minibatch", "mixed"): (0.30178573727607727, 0.5821428298950195)}
    for (mode, negatives), (heart, uniform) in expected.items():
        settings = LinkPredSettings(epochs=6, eval_every=3, num_negatives=10, hits_negatives=100, hidden_channels=8,
                                    mode=mode, batch_size=32, num_neighbors=(5, 5), train_negatives=negatives)
        outcome = train_and_evaluate(data, informative, "sage", settings, seed=0)
        assert outcome.metrics["heart"]["mrr"] == pytest.approx(heart, abs=1e-6)
        assert outcome.metrics["uniform"]["mrr"] == pytest.approx(uniform, abs=1e-6)
        assert outcome.pair_weight is None
        # The validation metrics kept for choosing between configurations: those of the chosen epoch.
        assert outcome.val_metrics["uniform"]["mrr"] == outcome.best_val_mrr
        assert 0.0 < outcome.val_metrics["heart"]["mrr"] <= 1.0
    assert "pair_weight" not in dict(LinkPredictor(8, None, "mlp", 8).named_parameters())
    with pytest.raises(ValueError, match="unknown pair_score 'cos'; accepted: none, cosine, rcml"):
        LinkPredSettings(pair_score="cos")


@pytest.mark.parametrize("mode", ["full", "minibatch"])
def test_pair_score_channel_carries_an_informative_score(one_thread, mode: str) -> None:
    data, informative = _clustered_graph()
    common = dict(epochs=25, eval_every=5, num_negatives=20, hits_negatives=500, hidden_channels=16, mode=mode,
                  batch_size=64, num_neighbors=(5, 5))
    noise = random_features(200, 20, 0)
    plain = train_and_evaluate(data, noise, "mlp", LinkPredSettings(**common), seed=0)
    with_score = train_and_evaluate(data, noise, "mlp", LinkPredSettings(pair_score="cosine", **common), seed=0,
                                    pair_score=cosine_pair_score(informative))
    # Random features alone know no link; the cluster cosine does, in training (mini-batch: read
    # by product id, not subgraph row) and in evaluation. Measured uniform MRR 0.12 -> 0.86 (full),
    # 0.16 -> 0.86 (mini-batch); learned weight 0.98 / 1.73.
    assert with_score.metrics["uniform"]["mrr"] > plain.metrics["uniform"]["mrr"] + 0.3
    assert with_score.pair_weight is not None and with_score.pair_weight > 0.5
    with pytest.raises(ValueError, match="pair_score='cosine' needs a PairScore"):
        train_and_evaluate(data, noise, "mlp", LinkPredSettings(pair_score="cosine", **common), seed=0)
    with pytest.raises(ValueError, match="pair_score='none' needs a PairScore, and only"):
        train_and_evaluate(data, noise, "mlp", LinkPredSettings(**common), seed=0,
                           pair_score=cosine_pair_score(informative))


def test_linkpred_end_to_end_with_pair_scores(demo_root: str, tmp_path, monkeypatch) -> None:  # noqa: F811
    from rcml_graph.data.graph_io import load_graph
    from rcml_graph.downstream import export_embeddings, graph_hash
    from rcml_graph.eval.results import load_results
    from rcml_graph.linkpred import pair_score_of, run
    from rcml_graph.training import encoder as encoder_module

    processed = f"{demo_root}/demo/processed"
    data = load_graph(processed)
    num_products, num_relations = int(data["product"].num_nodes), len(data.relation_text)
    fake = _QueryFakeEncoder(num_products, num_relations)
    checkpoint = tmp_path / "fake.pt"
    checkpoint.write_bytes(b"weights")
    export = export_embeddings(fake, data, tmp_path / "q", method="rcml", checkpoint=checkpoint,
                               graph_sha256=graph_hash(processed))
    loads = []
    monkeypatch.setattr(encoder_module.ConditionedEncoder, "from_checkpoint",
                        classmethod(lambda cls, path, **kw: loads.append(path) or fake))

    cosine = run(_compose(demo_root, tmp_path / "cos", "linkpred.pair_score=cosine"))
    rows = load_results(tmp_path / "cos" / "results" / "demo" / "results.json").rows
    assert len(rows) == 22 and {r.get("pair_score") for r in rows} == {"cosine"}
    validation = load_results(tmp_path / "cos" / "results" / "demo" / "validation.json").rows
    assert {(r.get("model"), r.get("protocol"), r.metric) for r in validation} == {
        (m, p, k) for m in ("sage", "mlp") for p in ("heart", "uniform") for k in ("mrr", "hits@1", "hits@3", "hits@10")
    } | {(m, "training", k) for m in ("sage", "mlp") for k in ("best_epoch", "epochs_trained", "stopped_early",
                                                                "budget_bound")}
    assert all(r.get("pair_score") == "cosine" for r in validation)
    assert all(0.0 <= r.value <= 1.0 for r in validation if r.get("protocol") != "training")
    training = {(r.get("model"), r.metric): r.value for r in validation if r.get("protocol") == "training"}
    for model in ("sage", "mlp"):  # 3 epochs, one validation: patience (20) cannot fire, so budget-bound
        assert training[model, "epochs_trained"] == 3 and training[model, "best_epoch"] == 3
        assert training[model, "budget_bound"] == 1.0 and training[model, "stopped_early"] == 0.0
    assert 0.0 < cosine["mlp/heart/mrr"] <= 1.0
    plain = run(_compose(demo_root, tmp_path / "none"))
    assert {r.get("pair_score") for r in load_results(tmp_path / "none" / "results" / "demo"
                                                       / "results.json").rows} == {None}
    assert plain["mlp/heart/mrr"] != cosine["mlp/heart/mrr"]

    overrides = ("linkpred.features=rcml", f"linkpred.checkpoint={export}", "linkpred.pair_score=rcml")
    score = pair_score_of(_compose(demo_root, tmp_path / "rcml", *overrides), data, 0, {})
    assert loads == [checkpoint] and score.name == "rcml"
    assert torch.equal(score.source, rcml_pair_score(fake, data, "also_bought").source)
    cached = pair_score_of(_compose(demo_root, tmp_path / "rcml", *overrides), data, 0, {})
    assert loads == [checkpoint]  # the second call reads the cache
    assert torch.equal(cached.targets, score.targets) and cached.mean == score.mean
    summary = run(_compose(demo_root, tmp_path / "rcml", *overrides))
    rows = json.loads((tmp_path / "rcml" / "results" / "demo" / "results.json").read_text())["rows"]
    assert {r["pair_score"] for r in rows} == {"rcml"} and 0.0 < summary["sage/uniform/mrr"] <= 1.0

    with pytest.raises(ValueError, match="pair_score=rcml reads an RCML checkpoint; linkpred.features is 'random'"):
        pair_score_of(_compose(demo_root, tmp_path, "linkpred.pair_score=rcml"), data, 0, {})
    checkpoint.write_bytes(b"other weights")
    with pytest.raises(ValueError, match="missing or has changed"):
        pair_score_of(_compose(demo_root, tmp_path / "x", *overrides), data, 0, {})


def test_evaluation_pairs_are_scored_once_per_set(one_thread) -> None:
    # Values measured with the code of commit 825571a, which rescored the validation pairs at every
    # validation (same graph, settings and seed; one thread): caching changes no number.
    data, informative = _clustered_graph(num_clusters=8, size=8)
    noise = random_features(64, 12, 0)
    expected = {("full", "heart"): (0.5976190567016602, 0.8214285969734192, 0.8571428656578064, 0.9702395796775818),
                ("minibatch", "mixed"): (0.5380952954292297, 0.7380952835083008, 1.0, 0.9107973575592041)}
    for (mode, negatives), (heart, uniform, val, weight) in expected.items():
        settings = LinkPredSettings(epochs=6, eval_every=3, num_negatives=10, hits_negatives=100, hidden_channels=8,
                                    mode=mode, batch_size=32, num_neighbors=(5, 5), train_negatives=negatives,
                                    pair_score="cosine")
        calls = []

        class Counting(PairScore):
            def __call__(self, pairs):
                calls.append(pairs.clone())
                return super().__call__(pairs)

        score = cosine_pair_score(informative)
        counting = Counting(score.source, score.targets, score.slot, score.mean, score.std)
        outcome = train_and_evaluate(data, noise, "sage", settings, seed=0, pair_score=counting)
        assert outcome.metrics["heart"]["mrr"] == pytest.approx(heart, abs=1e-6)
        assert outcome.metrics["uniform"]["mrr"] == pytest.approx(uniform, abs=1e-6)
        assert outcome.best_val_mrr == pytest.approx(val, abs=1e-6)
        assert outcome.pair_weight == pytest.approx(weight, abs=1e-6)
        # Two validations (epochs 3 and 6), but each validation pair set is scored once.
        validation = build_evaluation_set(data, "val", settings, 0)
        for negatives in (validation.hard_negatives, validation.uniform_negatives):
            sources = validation.positives[0][:, None].expand_as(negatives)
            pairs = torch.stack([sources.reshape(-1), negatives.reshape(-1)])
            assert sum(c.shape == pairs.shape and torch.equal(c, pairs) for c in calls) == 1
