"""Interest communities on the co-purchase graph, and their names.

Communities come from networkx's seeded Louvain method. Above ``max_networkx_edges`` edges
networkx's pure-Python Louvain takes too long for a one-core build of a million products, so
a vectorised label propagation on a scipy CSR matrix is used instead (hand-written: no
well-kept library offers a vectorised one on scipy matrices). Names are each community's most
distinctive category/title terms by TF-IDF over communities.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import networkx as nx
import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, TfidfTransformer

_WORD = re.compile(r"[a-z][a-z]+")


def _stem(word: str) -> str:
    return word[:-2] if word.endswith("es") and len(word) > 4 else word.rstrip("s")


def segment_ngrams(document: str) -> list[str]:
    """Unigrams and bigrams inside each line of ``document``: no bigram spans two fields
    (the end of a category name and the start of a title)."""
    terms: list[str] = []
    for segment in document.lower().split("\n"):
        words = [w for w in _WORD.findall(segment) if w not in ENGLISH_STOP_WORDS]
        terms.extend(words)
        terms.extend(f"{a} {b}" for a, b in zip(words, words[1:]) if a != b)
    return terms


@dataclass
class Communities:
    """A partition of products into communities.

    ``label[i]`` is product i's community (``-1``: none, e.g. an isolated product or a
    community smaller than the minimum size); ``names[c]`` is community c's name and
    ``top_terms[c]`` its most distinctive terms.
    """

    label: np.ndarray
    names: list[str]
    top_terms: list[list[str]]
    method: str

    @property
    def num_communities(self) -> int:
        return len(self.names)


def _symmetric_adjacency(edge_index: np.ndarray, num_nodes: int) -> sp.csr_matrix:
    src, dst = edge_index
    data = np.ones(2 * src.size, dtype=np.float32)
    adj = sp.coo_matrix(
        (data, (np.concatenate([src, dst]), np.concatenate([dst, src]))),
        shape=(num_nodes, num_nodes),
    ).tocsr()
    adj.sum_duplicates()
    return adj


def louvain_labels(adj: sp.csr_matrix, seed: int, resolution: float) -> np.ndarray:
    graph = nx.from_scipy_sparse_array(adj)
    graph.remove_nodes_from([n for n, d in graph.degree() if d == 0])
    label = np.full(adj.shape[0], -1, dtype=np.int64)
    parts = nx.community.louvain_communities(graph, seed=seed, resolution=resolution)
    # Deterministic numbering: by size, then by smallest member.
    parts = sorted((sorted(p) for p in parts), key=lambda p: (-len(p), p[0]))
    for index, members in enumerate(parts):
        label[members] = index
    return label


def label_propagation_labels(adj: sp.csr_matrix, seed: int, iterations: int = 10) -> np.ndarray:
    """Synchronous label propagation with seeded random tie-breaking, fully vectorised."""
    num_nodes = adj.shape[0]
    rng = np.random.default_rng(seed)
    label = np.arange(num_nodes, dtype=np.int64)
    coo = adj.tocoo()
    rows, cols, weights = coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data
    for _ in range(iterations):
        key = rows * num_nodes + label[cols]
        unique_key, inverse = np.unique(key, return_inverse=True)
        score = np.bincount(inverse, weights=weights)
        # Random tie-break: a tiny seeded jitter per (node, label).
        score = score + rng.random(score.size) * 1e-3
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
    degree = np.diff(adj.indptr)
    label[degree == 0] = -1
    _, compact = np.unique(label[label >= 0], return_inverse=True)
    out = np.full(num_nodes, -1, dtype=np.int64)
    out[label >= 0] = compact
    return out


def _renumber_by_size(label: np.ndarray, min_size: int) -> np.ndarray:
    valid = label >= 0
    ids, counts = np.unique(label[valid], return_counts=True)
    keep = counts >= min_size
    order = np.lexsort((ids[keep], -counts[keep]))
    new_id = np.full(int(label.max(initial=-1)) + 1, -1, dtype=np.int64)
    new_id[ids[keep][order]] = np.arange(order.size)
    out = np.full(label.shape, -1, dtype=np.int64)
    out[valid] = new_id[label[valid]]
    return out


@dataclass
class TermMatrix:
    """Which naming terms each product's document contains: ``(N, V)`` binary CSR."""

    presence: sp.csr_matrix
    vocabulary: np.ndarray


def term_matrix(documents: list[str]) -> TermMatrix:
    """Count the naming terms of every document once (shared by every community family)."""
    vectorizer = CountVectorizer(
        analyzer=segment_ngrams, min_df=2, max_features=200_000, binary=True, dtype=np.float32
    )
    try:
        presence = vectorizer.fit_transform(documents).tocsr()
    except ValueError:  # no term occurs twice
        return TermMatrix(sp.csr_matrix((len(documents), 0), dtype=np.float32), np.array([], dtype=object))
    return TermMatrix(presence, vectorizer.get_feature_names_out())


def name_communities(
    label: np.ndarray, terms: TermMatrix, num_terms: int = 2
) -> tuple[list[str], list[list[str]]]:
    """Name each community by its most distinctive terms (TF-IDF over communities)."""
    num_communities = int(label.max(initial=-1)) + 1
    if num_communities == 0:
        return [], []
    if terms.vocabulary.size == 0:
        return [f"community {c}" for c in range(num_communities)], [[] for _ in range(num_communities)]
    members = np.flatnonzero(label >= 0)
    membership = sp.csr_matrix(
        (np.ones(members.size, dtype=np.float32), (label[members], members)),
        shape=(num_communities, terms.presence.shape[0]),
    )
    # Document frequency per community, not raw counts: one verbose product must not name it.
    community_terms = membership @ terms.presence
    tfidf = TfidfTransformer(sublinear_tf=True).fit_transform(community_terms).tocsr()
    vocabulary = terms.vocabulary
    names, top_terms = [], []
    for c in range(num_communities):
        row = tfidf.getrow(c)
        order = np.argsort(-row.data, kind="stable")
        terms: list[str] = []
        for term in vocabulary[row.indices[order]]:
            # Skip a term that repeats a word already in the name, plurals included
            # ("dumbbell" after "dumbbells", "fly" after "fly fishing").
            words = {_stem(w) for w in term.split()}
            if any(words & {_stem(w) for w in t.split()} for t in terms):
                continue
            terms.append(str(term))
            if len(terms) == max(num_terms, 5):
                break
        top_terms.append(terms)
        names.append(" and ".join(terms[:num_terms]) if terms else f"community {c}")
    return names, top_terms


def find_communities(
    edge_index: np.ndarray,
    num_nodes: int,
    terms: TermMatrix,
    *,
    seed: int = 0,
    resolution: float = 1.0,
    min_size: int = 3,
    max_networkx_edges: int = 250_000,
    num_name_terms: int = 2,
) -> Communities:
    """Find and name communities of the undirected graph given by ``edge_index`` (2, E).

    Args:
        terms: the naming terms of each node (:func:`term_matrix` of one document per node,
            whose lines, category names and title, are separate fields).
        min_size: communities smaller than this get label -1 (generic descriptions).
        max_networkx_edges: above this, label propagation replaces networkx Louvain.
    """
    adj = _symmetric_adjacency(edge_index, num_nodes)
    if edge_index.shape[1] == 0:
        return Communities(np.full(num_nodes, -1, dtype=np.int64), [], [], "none")
    if edge_index.shape[1] <= max_networkx_edges:
        raw, method = louvain_labels(adj, seed, resolution), "networkx-louvain"
    else:
        raw, method = label_propagation_labels(adj, seed), "label-propagation"
    label = _renumber_by_size(raw, min_size)
    names, top_terms = name_communities(label, terms, num_name_terms)
    return Communities(label, names, top_terms, method)
