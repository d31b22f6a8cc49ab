"""Every task on the triangle graph with an oracle, a relation-blind and a random encoder."""

import math

import pytest
import torch

from rcml_graph.evaluation import (
    SuiteSettings,
    candidate_retrieval,
    category_probe,
    collect_edges,
    encode_pairs,
    full_corpus_retrieval,
    never_linked_in_train,
    product_groups,
    random_negatives,
    relation_type_encoder,
    relation_type_probe,
    relation_validation,
    run_tasks,
    select_queries,
    sensitive_negatives,
    unseen_descriptions,
)
from tests.evaluation.fakes import (
    BlindEncoder,
    OracleEncoder,
    RandomEncoder,
    tiny_graph,
)


@pytest.fixture(scope="module")
def graph():
    data = tiny_graph()
    edges = collect_edges(data)
    index = select_queries(edges, "test", None, torch.Generator().manual_seed(0))
    return data, edges, index


def _sensitive(graph):
    data, edges, index = graph
    return sensitive_negatives(
        edges, edges.source[index], edges.target[index], edges.desc_id[index],
        product_groups(data), 5, torch.Generator().manual_seed(1),
    )


def test_encode_pairs_encodes_each_distinct_pair_once():
    oracle = OracleEncoder()
    products = torch.tensor([[3, 3, 4], [3, 4, 4]])
    views = encode_pairs(oracle, products, torch.tensor(1), num_relations=5, batch_size=1)
    assert oracle.calls == 2
    assert views.text.shape == (2, 3, 64)
    assert torch.equal(views.text[0, 0], views.text[1, 0])


def test_sensitive_protocol_oracle_wins_blind_ties(graph):
    _, edges, index = graph
    subsets = {"all": torch.ones(index.numel(), dtype=torch.bool)}
    negatives = _sensitive(graph)
    oracle = candidate_retrieval(OracleEncoder(), edges, index, negatives, subsets)["all"]
    blind = candidate_retrieval(BlindEncoder(), edges, index, negatives, subsets)["all"]
    for mode in ("text2text", "avg"):
        assert oracle[mode]["hit@1"] == 1.0 and oracle[mode]["mrr"] == 1.0
        assert oracle[mode]["n"] == 24
    # Blind: the target ties with the 3 same-community hard negatives, beats the 2 random
    # ones: Hit@1 = 1/4, Hit@5 = 1, tie-expected MRR = (1 + 1/2 + 1/3 + 1/4) / 4.
    assert blind["avg"]["hit@1"] == pytest.approx(0.25)
    assert blind["avg"]["hit@5"] == pytest.approx(1.0)
    assert blind["avg"]["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 3 + 1 / 4) / 4)


class AntiQueryOracle(OracleEncoder):
    """The oracle for targets, its negation for queries: only an evaluation that embeds the
    source with ``encode_query`` (the asymmetric head's query side) ranks the target last."""

    def __init__(self) -> None:
        super().__init__()
        self.query_calls = 0

    def encode_query(self, products, relation_ids):
        self.query_calls += products.numel()
        views = super().encode(products, relation_ids)
        return type(views)(-views.image, -views.text, views.image_valid)


def test_query_side_goes_through_encode_query(graph):
    _, edges, index = graph
    subsets = {"all": torch.ones(index.numel(), dtype=torch.bool)}
    encoder = AntiQueryOracle()
    result = candidate_retrieval(encoder, edges, index, _sensitive(graph), subsets)["all"]
    # negated query codes: the true target (cosine -1) ranks below every negative
    assert result["avg"]["hit@1"] == 0.0 and result["avg"]["mrr"] < 0.25
    distinct_queries = torch.unique(edges.source[index] * 5 + edges.desc_id[index]).numel()
    assert encoder.query_calls == distinct_queries
    top = relation_type_encoder(encoder, edges, index)
    assert top["top1"] < 1.0  # the oracle itself is perfect (test below)


def test_random_protocol_blind_is_better_than_on_sensitive(graph):
    _, edges, index = graph
    subsets = {"all": torch.ones(index.numel(), dtype=torch.bool)}
    negatives = random_negatives(edges, edges.source[index], edges.target[index], edges.desc_id[index], 5,
                                 torch.Generator().manual_seed(1))
    blind = candidate_retrieval(BlindEncoder(), edges, index, negatives, subsets)["all"]["avg"]
    assert blind["hit@1"] > 0.25 + 0.1


def test_subsets_never_linked_and_unseen(graph):
    _, edges, index = graph
    # Each pair is linked once, and every test edge is a test-only pair.
    assert bool(never_linked_in_train(edges, index).all())
    # A test pair that is also a training edge is not "never linked".
    train_edge = (edges.split == 0).nonzero()[0]
    assert not bool(never_linked_in_train(edges, train_edge).any())
    unseen = unseen_descriptions(edges)
    assert set(edges.desc_id[unseen].tolist()) == {4}


def test_full_corpus_oracle_and_blind(graph):
    _, edges, index = graph
    subsets = {"all": torch.ones(index.numel(), dtype=torch.bool)}
    oracle = full_corpus_retrieval(OracleEncoder(), edges, index, subsets, ks=(1, 10))["all"]
    assert oracle["avg"]["recall@1"] == 1.0 and oracle["text2text"]["mrr"] == 1.0
    blind = full_corpus_retrieval(BlindEncoder(), edges, index, subsets, ks=(1, 10))["all"]
    # Blind: the source and its other target under d are excluded; the target ties with the
    # 3 remaining block members and beats the other blocks: Hit@1 = 1/4.
    assert blind["avg"]["recall@1"] == pytest.approx(1 / 4)
    assert blind["avg"]["recall@10"] == pytest.approx(1.0)


def test_relation_type_oracle_is_perfect_probe_runs(graph):
    _, edges, index = graph
    oracle = relation_type_encoder(OracleEncoder(), edges, index)
    assert oracle["top1"] == 1.0 and oracle["num_candidates"] == 2.0 and oracle["n"] == 24
    # Blind scores both candidates the same: a two-way tie, top-1 = 1/2, top-3 = 1.
    blind = relation_type_encoder(BlindEncoder(), edges, index)
    assert blind["top1"] == pytest.approx(0.5) and blind["top3"] == 1.0
    train = (edges.split == 0).nonzero().flatten()
    features = torch.eye(24)
    probe = relation_type_probe(features, edges, train, index, seed=0)
    assert 0.0 <= probe["top1"] <= 1.0 and probe["top3"] == 1.0 and probe["n"] == 24


def test_relation_validation_oracle_auc_one_random_chance(graph):
    _, edges, index = graph
    train = (edges.split == 0).nonzero().flatten()
    oracle = relation_validation(OracleEncoder(), edges, train, index, seed=0)
    assert oracle["roc_auc"] > 0.98 and oracle["accuracy"] > 0.9 and oracle["n"] == 48
    random = relation_validation(RandomEncoder(), edges, train, index, seed=0)
    assert abs(random["roc_auc"] - 0.5) < 0.2


def test_category_probe_separable_is_perfect_and_checks_input():
    labels = torch.arange(40) % 4
    features = torch.nn.functional.one_hot(labels, 4).float() + 0.01 * torch.randn(40, 4, generator=torch.Generator().manual_seed(0))
    result = category_probe(features, labels, seed=0, test_ratio=0.25)
    assert result["accuracy"] == 1.0 and result["macro_f1"] == 1.0 and result["n"] == 10
    with pytest.raises(ValueError, match="test_ratio"):
        category_probe(features, labels, seed=0, test_ratio=1.5)


def test_run_tasks_rows_and_determinism(graph):
    data, edges, _ = graph
    settings = SuiteSettings(num_negatives=5, max_queries=16, full_corpus_queries=8)
    rows_a = run_tasks(data, edges, OracleEncoder(), "oracle", 0, settings, probe_features=torch.eye(24))
    rows_b = run_tasks(data, edges, OracleEncoder(), "oracle", 0, settings, probe_features=torch.eye(24))
    assert [r.to_dict() for r in rows_a] == [r.to_dict() for r in rows_b]
    tasks = {r.task for r in rows_a}
    assert tasks == {"retrieval", "retrieval_sensitive", "retrieval_unseen", "relation_type",
                     "relation_validation", "classification", "retention"}
    for r in rows_a:
        assert r.n > 0 and not math.isnan(r.value)
    sensitive = [r for r in rows_a if r.task == "retrieval_sensitive" and r.metric == "hit@1"
                 and r.extra["subset"] == "all"]
    assert {r.mode for r in sensitive} == {"text2text", "image2image", "text2image", "image2text", "avg"}
    assert all(r.value == 1.0 and r.n == 16 for r in sensitive)
    assert any(r.extra.get("subset") == "never_linked_in_train" for r in rows_a)
    assert any(r.extra.get("subset") == "kind=also_viewed" for r in rows_a)
    assert any(r.method == "backbone_probe" for r in rows_a)
    with pytest.raises(ValueError, match="unknown evaluation task"):
        SuiteSettings(tasks=("retreival",))


class ParaphraseOracle(OracleEncoder):
    """The oracle, and it understands paraphrases: a new description maps back to its original."""

    def __init__(self, relation_text: list[str]) -> None:
        super().__init__()
        from rcml_graph.relations import paraphrase

        self.original = {paraphrase(t): i for i, t in enumerate(relation_text)}
        self.table = list(range(len(relation_text)))

    def add_description(self, text: str) -> int:
        self.table.append(self.original[text])
        return len(self.table) - 1

    def encode(self, products, relation_ids):
        return super().encode(products, torch.tensor(self.table)[relation_ids])


def test_paraphrased_descriptions_rows(graph):
    data, edges, _ = graph
    settings = SuiteSettings(num_negatives=5, max_queries=16, full_corpus_queries=0,
                             tasks=("retrieval", "retrieval_unseen"))
    rows = run_tasks(data, edges, ParaphraseOracle(data.relation_text), "oracle", 0, settings)
    para = [r for r in rows if r.extra.get("subset") == "paraphrased" and r.metric == "hit@1"]
    assert {r.extra["protocol"] for r in para} == {"random", "sensitive"}
    assert all(r.value == 1.0 and r.n == 16 for r in para if r.extra["protocol"] == "sensitive")
    # An encoder that cannot take new descriptions gets no paraphrased rows.
    blind = run_tasks(data, edges, BlindEncoder(), "blind", 0, settings)
    assert not any(r.extra.get("subset") == "paraphrased" for r in blind)

    class IdsOracle(ParaphraseOracle):  # has add_description but says it cannot (a relation-ids head)
        accepts_new_descriptions = False

        def add_description(self, text):
            raise ValueError("relation mode 'ids' cannot take a new description")

    ids = run_tasks(data, edges, IdsOracle(data.relation_text), "ids", 0, settings)
    assert not any(r.extra.get("subset") == "paraphrased" for r in ids)
    assert any(r.task == "retrieval" for r in ids)


def test_paraphrase_known_answers():
    from rcml_graph.relations import describe, paraphrase

    assert paraphrase(describe("also_bought", "fly fishing")) == \
        "often purchased by customers who are into fly fishing"
    assert paraphrase(describe("also_viewed", None)) == "browsed in the same session by the same shoppers"
    assert paraphrase("the image and the text describe the same product") is None
    assert paraphrase("also bought by people who like ") is None  # no context left
