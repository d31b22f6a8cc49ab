import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from rcml_graph.data import communities
from rcml_graph.data.communities import (
    TermMatrix,
    _RowSorter,
    _symmetric_adjacency,
    label_propagation_labels,
    name_communities,
    segment_ngrams,
    term_matrix,
)


def _reference_label_propagation(adj: sp.csr_matrix, seed: int, iterations: int = 10) -> np.ndarray:
    """The first, plainly written version (np.unique + lexsort per round): the vectorised one
    must give exactly its labels, random tie-breaks included."""
    num_nodes = adj.shape[0]
    rng = np.random.default_rng(seed)
    label = np.arange(num_nodes, dtype=np.int64)
    coo = adj.tocoo()
    rows, cols, weights = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
    for _ in range(iterations):
        unique_key, inverse = np.unique(rows * num_nodes + label[cols], return_inverse=True)
        score = np.bincount(inverse, weights=weights) + rng.random(unique_key.size) * 1e-3
        node = unique_key // num_nodes
        order = np.lexsort((-score, node))
        first = np.ones(order.size, dtype=bool)
        first[1:] = node[order][1:] != node[order][:-1]
        best = order[first]
        new_label = label.copy()
        new_label[node[best]] = unique_key[best] % num_nodes
        if np.array_equal(new_label, label):
            break
        label = new_label
    label[np.diff(adj.indptr) == 0] = -1
    _, compact = np.unique(label[label >= 0], return_inverse=True)
    out = np.full(num_nodes, -1, dtype=np.int64)
    out[label >= 0] = compact
    return out


@pytest.mark.parametrize("seed", range(4))
def test_label_propagation_finds_two_cliques_and_leaves_isolated_nodes_out(seed):
    # Two 5-cliques {0..4} and {5..9} joined by one edge 4-5; node 10 isolated.
    clique = [(a, b) for a in range(5) for b in range(a + 1, 5)]
    edges = np.array(clique + [(a + 5, b + 5) for a, b in clique] + [(4, 5)]).T
    label = label_propagation_labels(_symmetric_adjacency(edges, 11), seed=seed)
    np.testing.assert_array_equal(label, [0] * 5 + [1] * 5 + [-1])


@pytest.mark.parametrize("seed", range(6))
def test_label_propagation_equals_the_reference_with_multiplicities(seed):
    rng = np.random.default_rng(seed)
    num_nodes = int(rng.integers(5, 80))
    # Duplicate pairs (both orders) and self-loops give weights of 2 and more.
    edges = rng.integers(0, num_nodes, (2, int(rng.integers(1, 300))))
    adj = _symmetric_adjacency(edges, num_nodes + 3)  # three isolated nodes at the end
    assert adj.data.max() > 1
    for iterations in (1, 2, 10):
        np.testing.assert_array_equal(
            label_propagation_labels(adj, seed, iterations),
            _reference_label_propagation(adj, seed, iterations),
        )


def test_label_propagation_rejects_fractional_weights():
    adj = sp.csr_matrix(np.array([[0, 0.5], [0.5, 0]]))
    with pytest.raises(ValueError, match="integer edge multiplicities"):
        label_propagation_labels(adj, seed=0)


def test_row_sorter_sorts_every_row_in_place():
    rng = np.random.default_rng(0)
    degree = np.array([0, 1, 2, 3, 4, 5, 9, 17, 0, 2])
    indptr = np.concatenate([[0], np.cumsum(degree)])
    values = rng.integers(0, 50, indptr[-1]).astype(np.int32)
    expected = np.concatenate([np.sort(values[a:b]) for a, b in zip(indptr[:-1], indptr[1:])])
    _RowSorter(indptr).sort(values)
    np.testing.assert_array_equal(values, expected)


def test_segment_ngrams_stay_inside_a_line():
    assert segment_ngrams("Fly Fishing\nthe Reels and reels") == [
        "fly", "fishing", "fly fishing", "reels", "reels",  # "reels reels" is no bigram
    ]


def _documents() -> list[tuple[str, ...]]:
    return [
        ("Fishing", "Fly Fishing", "fly rod 9ft"),
        ("Fishing", "Fly Fishing", "fly reel large arbor"),
        ("Fishing", "Reels", "spinning reel"),
        ("Baby", "Bottles", "glass baby bottle"),
        ("Baby", "Bottles", "baby bottle warmer"),
        ("Baby", "", "glass teether"),
    ]


@pytest.mark.parametrize("max_terms", [200_000, 5, 2])
def test_term_matrix_is_sklearns_count_vectorizer(monkeypatch, max_terms):
    monkeypatch.setattr(communities, "_MAX_TERMS", max_terms)
    docs = _documents()
    terms = term_matrix(docs)
    vectorizer = CountVectorizer(
        analyzer=segment_ngrams, min_df=2, max_features=max_terms, binary=True, dtype=np.float32
    )
    expected = vectorizer.fit_transform(["\n".join(d) for d in docs]).tocsr()
    assert terms.vocabulary.tolist() == vectorizer.get_feature_names_out().tolist()
    # Same entries in the same storage order: community names depend on it through ties.
    np.testing.assert_array_equal(terms.presence.indptr, expected.indptr)
    np.testing.assert_array_equal(terms.presence.indices, expected.indices)
    np.testing.assert_array_equal(terms.presence.data, expected.data)
    # The joined-string form of a document gives the same matrix.
    assert (term_matrix(["\n".join(d) for d in docs]).presence != terms.presence).nnz == 0


def test_term_matrix_without_repeated_terms_is_empty():
    terms = term_matrix(["alpha", "beta"])
    assert terms.presence.shape == (2, 0) and terms.vocabulary.size == 0


def test_name_communities_by_distinctive_terms_without_repeated_words():
    vocabulary = np.array(["dumbbell", "dumbbells", "fly", "fly fishing", "yoga"], dtype=object)
    # Rows: products 0-3 (community 0), 4-5 (community 1), 6 (community 2, no terms), 7 (none).
    presence = sp.csr_matrix(np.array([
        [0, 1, 1, 1, 0],
        [0, 1, 1, 1, 0],
        [1, 0, 1, 1, 0],
        [0, 0, 0, 1, 0],
        [0, 0, 0, 0, 1],
        [0, 0, 0, 0, 1],
        [0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
    ], dtype=np.float32))
    label = np.array([0, 0, 0, 0, 1, 1, 2, -1])
    names, top_terms = name_communities(label, TermMatrix(presence, vocabulary), num_terms=2)
    # Community 0 counts: fly fishing 4, fly 3, dumbbells 2, dumbbell 1; every term is in one
    # community only (equal idf), so the order is by count. "fly" repeats a word of "fly
    # fishing" and "dumbbell" a (singular) word of "dumbbells": both skipped.
    assert top_terms == [["fly fishing", "dumbbells"], ["yoga"], []]
    assert names == ["fly fishing and dumbbells", "yoga", "community 2"]
    empty = TermMatrix(sp.csr_matrix((2, 0), dtype=np.float32), np.array([], dtype=object))
    assert name_communities(np.array([0, -1]), empty) == (["community 0"], [[]])
