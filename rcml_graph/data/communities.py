"""Interest communities on the co-purchase graph, and their names.

Communities come from networkx's seeded Louvain method. Above ``max_networkx_edges`` edges
networkx's pure-Python Louvain takes too long for a one-core build of a million products, so
a vectorised label propagation on a scipy CSR matrix is used instead (hand-written: no
well-kept library offers a vectorised one on scipy matrices). Names are each community's most
distinctive category/title terms by TF-IDF over communities.
"""

from __future__ import annotations

import re
from array import array
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import count

import networkx as nx
import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfTransformer

_WORD = re.compile(r"[a-z][a-z]+")
_MAX_TERMS = 200_000
_MAX_CACHED_FIELDS = 1 << 16


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


class _RowSorter:
    """Sorts the values of every CSR row in place, all rows at once.

    Rows are grouped by degree into power-of-two widths; each group is one padded
    ``(rows, width)`` int32 matrix sorted along its rows. That replaces a sort of
    ``row * N + value`` int64 keys over all entries, several times slower.
    """

    _PAD = np.iinfo(np.int32).max

    def __init__(self, indptr: np.ndarray) -> None:
        degree = np.diff(indptr)
        exponent = np.zeros(degree.size, dtype=np.int64)  # rows of 0 or 1 entries: sorted
        multi = degree > 1
        exponent[multi] = np.ceil(np.log2(degree[multi]))
        self.groups: list[tuple[np.ndarray, np.ndarray, tuple[int, int]]] = []
        for e in np.flatnonzero(np.bincount(exponent[multi])).tolist():
            w = 1 << e
            rows = np.flatnonzero(exponent == e)
            valid = np.arange(w) < degree[rows][:, None]  # (rows, w)
            entry = (indptr[rows][:, None] + np.arange(w))[valid]  # row-major = CSR order
            self.groups.append((valid, entry, (rows.size, w)))

    def sort(self, values: np.ndarray) -> None:
        for valid, entry, shape in self.groups:
            padded = np.full(shape, self._PAD, dtype=np.int32)
            padded[valid] = values[entry]
            padded.sort(axis=1)
            values[entry] = padded[valid]


def label_propagation_labels(adj: sp.csr_matrix, seed: int, iterations: int = 10) -> np.ndarray:
    """Synchronous label propagation with seeded random tie-breaking, fully vectorised.

    Each round every node takes the label of the largest total edge weight among its
    neighbours; a seeded jitter below 1e-3 per (node, label) breaks ties. The (node, label)
    groups are runs in each CSR row after its labels are sorted (:class:`_RowSorter`).
    Integer weights (edge multiplicities, as :func:`_symmetric_adjacency` gives) are expanded
    into repeated entries, so a group's score is its run length.
    """
    num_nodes = adj.shape[0]
    if num_nodes >= np.iinfo(np.int32).max:
        raise ValueError(f"label propagation takes fewer than 2**31 - 1 nodes, not {num_nodes}")
    weights = adj.data.astype(np.float64)
    if not np.all((weights >= 1) & (weights == np.round(weights)) & (weights < 2**31)):
        raise ValueError(
            "label propagation takes integer edge multiplicities >= 1 as weights; got values "
            f"in [{weights.min()}, {weights.max()}]"
        )
    rng = np.random.default_rng(seed)
    degree = np.diff(adj.indptr)
    multiplicity = weights.astype(np.int64)
    cols = np.repeat(adj.indices.astype(np.int32), multiplicity)
    entries_before = np.zeros(multiplicity.size + 1, dtype=np.int64)
    np.cumsum(multiplicity, out=entries_before[1:])
    indptr = entries_before[adj.indptr]
    num_entries = cols.size
    if num_entries == 0:
        return np.full(num_nodes, -1, dtype=np.int64)
    rows = np.repeat(np.arange(num_nodes, dtype=np.int32), np.diff(indptr))
    row_start = np.zeros(num_entries + 1, dtype=bool)
    row_start[indptr[:-1][degree > 0]] = True
    row_start[num_entries] = True
    sorter = _RowSorter(indptr)
    has_neighbours = np.flatnonzero(degree > 0)
    label = np.arange(num_nodes, dtype=np.int32)
    change = np.empty(num_entries + 1, dtype=bool)
    for _ in range(iterations):
        neighbour_label = label[cols]  # (E,) int32
        sorter.sort(neighbour_label)
        # Runs of one label inside one row: the (node, label) groups, in (node, label) order.
        np.not_equal(neighbour_label[1:], neighbour_label[:-1], out=change[1:num_entries])
        change[0] = True
        change[1:num_entries] |= row_start[1:num_entries]
        change[num_entries] = True
        bounds = np.flatnonzero(change)
        starts = bounds[:-1]
        score = (bounds[1:] - starts).astype(np.float64)
        # Random tie-break: a tiny seeded jitter per (node, label), in (node, label) order.
        score += rng.random(score.size) * 1e-3
        # Every node with neighbours owns one segment of groups; keep its first best group.
        group_bounds = np.flatnonzero(row_start[bounds])
        lengths = group_bounds[1:] - group_bounds[:-1]
        best_score = np.repeat(np.maximum.reduceat(score, group_bounds[:-1]), lengths)
        candidate = np.flatnonzero(score == best_score)
        node = rows[starts[candidate]]
        first = np.empty(candidate.size, dtype=bool)
        first[0] = True
        np.not_equal(node[1:], node[:-1], out=first[1:])
        new_label = label.copy()
        new_label[has_neighbours] = neighbour_label[starts[candidate[first]]]
        if np.array_equal(new_label, label):
            break
        label = new_label
    out = np.full(num_nodes, -1, dtype=np.int64)
    # Compact numbering in order of the surviving label values (isolated nodes: -1).
    surviving = label[has_neighbours].astype(np.int64)
    present = np.bincount(surviving, minlength=num_nodes) > 0
    out[has_neighbours] = (np.cumsum(present) - 1)[surviving]
    return out


def _renumber_by_size(label: np.ndarray, min_size: int) -> np.ndarray:
    """Number communities of at least ``min_size`` members by size (ties: smaller old id
    first); the others get -1."""
    valid = label >= 0
    counts = np.bincount(label[valid], minlength=int(label.max(initial=-1)) + 1)
    ids = np.flatnonzero(counts >= max(min_size, 1))
    order = np.lexsort((ids, -counts[ids]))
    new_id = np.full(counts.size, -1, dtype=np.int64)
    new_id[ids[order]] = np.arange(order.size)
    out = np.full(label.shape, -1, dtype=np.int64)
    out[valid] = new_id[label[valid]]
    return out


@dataclass
class TermMatrix:
    """Which naming terms each product's document contains: ``(N, V)`` binary CSR."""

    presence: sp.csr_matrix
    vocabulary: np.ndarray


def term_matrix(documents: Sequence[str | Sequence[str]]) -> TermMatrix:
    """Count the naming terms of every document once (shared by every community family).

    A document is a string whose lines are separate fields, or a sequence of fields. Terms are
    :func:`segment_ngrams`; kept are those in at least two documents, at most the 200,000 most
    frequent, numbered alphabetically: the matrix scikit-learn's ``CountVectorizer(analyzer=
    segment_ngrams, min_df=2, max_features=200_000, binary=True)`` gives, entry order included,
    without its per-term Python loop. The terms of a field are computed once per distinct
    field (category names repeat across many products).
    """
    first_seen: defaultdict[str, int] = defaultdict(count().__next__)
    term_ids = array("q")
    doc_end = array("q")
    terms_of_field: dict[str, list[int]] = {}
    for document in documents:
        for field in (document,) if isinstance(document, str) else document:
            ids = terms_of_field.get(field)
            if ids is None:
                ids = list(map(first_seen.__getitem__, segment_ngrams(field)))
                if len(terms_of_field) < _MAX_CACHED_FIELDS:
                    terms_of_field[field] = ids
            term_ids.extend(ids)
        doc_end.append(len(term_ids))
    num_docs, num_terms = len(doc_end), len(first_seen)
    empty = TermMatrix(sp.csr_matrix((num_docs, 0), dtype=np.float32), np.array([], dtype=object))
    if num_terms == 0:
        return empty
    indptr = np.zeros(num_docs + 1, dtype=np.int64)
    indptr[1:] = np.frombuffer(doc_end, dtype=np.int64)
    # Binary presence: duplicates merged, each row's terms in first-seen order.
    presence = sp.csr_matrix(
        (np.ones(len(term_ids), dtype=np.float32), np.frombuffer(term_ids, dtype=np.int64), indptr),
        shape=(num_docs, num_terms),
    )
    presence.sum_duplicates()
    presence.data.fill(1)
    document_frequency = np.bincount(presence.indices, minlength=num_terms)
    frequent = np.flatnonzero(document_frequency >= 2)
    if frequent.size == 0:
        return empty
    term_of_id = np.array(list(first_seen), dtype=object)
    frequent = frequent[np.argsort(term_of_id[frequent])]  # alphabetical, as sklearn numbers
    if frequent.size > _MAX_TERMS:
        # sklearn's choice among equally frequent terms, reproduced exactly.
        frequency = document_frequency[frequent].astype(np.float32)
        frequent = frequent[np.sort((-frequency).argsort()[:_MAX_TERMS])]
    new_id = np.full(num_terms, -1, dtype=np.int64)
    new_id[frequent] = np.arange(frequent.size)
    column = new_id[presence.indices]
    kept = column >= 0
    kept_before = np.zeros(kept.size + 1, dtype=np.int64)
    np.cumsum(kept, out=kept_before[1:])
    out_indptr = kept_before[presence.indptr]
    matrix = sp.csr_matrix(
        (presence.data[kept], column[kept].astype(np.int32), out_indptr.astype(np.int32)),
        shape=(num_docs, frequent.size),
    )
    return TermMatrix(matrix, term_of_id[frequent])


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
    # Each community's terms by decreasing weight, ties in storage order (a stable sort).
    entry_community = np.repeat(np.arange(num_communities), np.diff(tfidf.indptr))
    ranked_terms = tfidf.indices[np.lexsort((-tfidf.data, entry_community))]
    stems_of: dict[int, frozenset[str]] = {}
    vocabulary = terms.vocabulary
    names, top_terms = [], []
    bounds = tfidf.indptr.tolist()
    for c in range(num_communities):
        chosen: list[str] = []
        chosen_stems: set[str] = set()
        for term_id in ranked_terms[bounds[c] : bounds[c + 1]].tolist():
            words = stems_of.get(term_id)
            if words is None:
                words = stems_of[term_id] = frozenset(_stem(w) for w in vocabulary[term_id].split())
            # Skip a term that repeats a word already in the name, plurals included
            # ("dumbbell" after "dumbbells", "fly" after "fly fishing").
            if not words.isdisjoint(chosen_stems):
                continue
            chosen.append(str(vocabulary[term_id]))
            chosen_stems |= words
            if len(chosen) == max(num_terms, 5):
                break
        top_terms.append(chosen)
        names.append(" and ".join(chosen[:num_terms]) if chosen else f"community {c}")
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
