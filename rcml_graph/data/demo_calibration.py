"""Calibration of the demo world: relation-guided retrieval with a relation-agnostic
TF-IDF scorer against oracles that read the hidden interest labels."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np

from rcml_graph.data.amazon import RawProduct, read_products
from rcml_graph.data.demo_world import META_FILE, TRUTH_EDGES_FILE, TRUTH_FILE

def _expected_hit_at_1(pos_score: np.ndarray, neg_query: np.ndarray, neg_score: np.ndarray) -> np.ndarray:
    """Hit@1 per query under random tie-breaking, in expectation: 0 if a negative scores
    higher, else 1 / (1 + number of negatives tied with the positive)."""
    q = pos_score.size
    above = np.bincount(neg_query, weights=neg_score > pos_score[neg_query], minlength=q)
    tied = np.bincount(neg_query, weights=neg_score == pos_score[neg_query], minlength=q)
    return np.where(above == 0, 1.0 / (1.0 + tied), 0.0)


def _score_all(
    results: dict[str, float], prefix: str, src: np.ndarray, pos: np.ndarray, ctx: np.ndarray,
    neg_query: np.ndarray, neg: np.ndarray, scorers: dict[str, Any], valid: np.ndarray,
) -> None:
    """Mean expected Hit@1 over the ``valid`` queries, per scorer, into ``results``."""
    for name, score in scorers.items():
        hit = _expected_hit_at_1(
            score(src, pos, ctx), neg_query, score(src[neg_query], neg, ctx[neg_query]))
        results[f"{prefix}{name}_hit_at_1"] = float(hit[valid].mean())


def _read_demo(out_dir: Path) -> tuple[dict[str, Any], list[str], dict[str, np.ndarray], np.ndarray]:
    """truth.json; the first non-empty title per product and the observed also_bought /
    also_viewed edges as (2, E) index arrays, both read with the project's reader (dangling
    targets dropped); and the designed also_bought edges with their interest, (3, E)."""
    truth = json.loads((out_dir / TRUTH_FILE).read_text(encoding="utf-8"))
    index = {asin: i for i, asin in enumerate(truth["products"])}
    titles: list[str | None] = [None] * len(index)
    pairs: dict[str, list[tuple[int, int]]] = {"also_bought": [], "also_viewed": []}
    for product in read_products(out_dir / META_FILE, release="2018"):
        assert isinstance(product, RawProduct), product  # the generator writes no bad lines
        p = index[product.product_id]
        if titles[p] is None and product.title:
            titles[p] = product.title
        for kind, found in pairs.items():
            found += [(p, index[t]) for t in product.relations.get(kind, []) if t in index]
    edges = {name: np.unique(np.array(found, dtype=np.int64).reshape(-1, 2), axis=0).T for name, found in pairs.items()}
    interest_id = {name: i for i, name in enumerate(truth["interests"])}
    designed = []
    with gzip.open(out_dir / TRUTH_EDGES_FILE, "rt", encoding="utf-8") as rows:
        next(rows)
        for row in rows:
            kind, src, dst, context = row.rstrip("\n").split("\t")
            if kind == "also_bought":
                designed.append((index[src], index[dst], interest_id[context]))
    return truth, [t or "" for t in titles], edges, np.array(designed, dtype=np.int64).reshape(-1, 3).T


def relation_guided_retrieval_calibration(
    out_dir: Path, num_negatives: int = 20, seed: int = 0, max_queries: int = 2000
) -> dict[str, float]:
    """Hit@1 of a relation-agnostic text baseline and of an interest oracle on
    relation-guided retrieval over a generated demo world.

    A query is a designed ``also_bought`` edge ``(source, target, interest)``: find the target
    given the source and the relation "also bought by people who like <interest>".

    * ``random``: the positive and ``num_negatives`` products drawn uniformly among those not
      linked to the source by ``also_buy`` in either direction.
    * ``sensitive``: the negatives are the source's other neighbours: ``also_buy`` targets of
      a different interest and ``also_view`` targets (each query has its own count).

    Scorers: ``tfidf`` (cosine of TF-IDF title vectors, blind to the relation), ``oracle``
    (1 if the candidate carries the query's interest in ``truth.json``), ``story_oracle``
    (the interest first, then "in another category than the source", the rule by which
    ``also_buy`` was drawn), and ``chance``. Ties count as expected under random
    tie-breaking. Keys: ``queries``, ``chance``, ``<scorer>_hit_at_1``, and the same with a
    ``sensitive_`` prefix.
    """
    # Imported here: scikit-learn takes seconds to import and only calibration needs it.
    from sklearn.feature_extraction.text import TfidfVectorizer

    if num_negatives < 1:
        raise ValueError(f"num_negatives={num_negatives}; accepted: >= 1")
    out_dir = Path(out_dir)
    truth, titles, observed, designed = _read_demo(out_dir)
    n, num_interests = len(titles), len(truth["interests"])
    interest_id = {name: i for i, name in enumerate(truth["interests"])}
    has_interest = np.zeros((n, num_interests), dtype=bool)
    for p, product in enumerate(truth["products"].values()):
        has_interest[p, [interest_id[name] for name in product["interests"]]] = True
    vectors = TfidfVectorizer().fit_transform(titles)

    category_id = {name: i for i, name in enumerate(truth["categories"])}
    category = np.array([category_id[product["category"]] for product in truth["products"].values()])
    # Each scorer maps (source, candidate, interest) arrays to scores; higher ranks first.
    scorers = {
        "tfidf": lambda s, c, a: np.asarray(vectors[s].multiply(vectors[c]).sum(axis=1)).ravel(),
        "oracle": lambda s, c, a: has_interest[c, a].astype(float),
        "story_oracle": lambda s, c, a: 2.0 * has_interest[c, a] + (category[c] != category[s]),
    }

    rng = np.random.default_rng(seed)
    chosen = rng.choice(designed.shape[1], size=min(max_queries, designed.shape[1]), replace=False)
    src, pos, ctx = designed[:, np.sort(chosen)]
    q = src.size
    results: dict[str, float] = {"queries": float(q), "chance": 1.0 / (1 + num_negatives)}

    # random negatives, redrawn until none is the source or linked to it
    bought = observed["also_bought"]
    linked = np.unique(np.concatenate([bought[0] * n + bought[1], bought[1] * n + bought[0]]))
    neg_query = np.repeat(np.arange(q), num_negatives)
    neg = rng.integers(0, n, neg_query.size)
    while (bad := (neg == src[neg_query]) | np.isin(src[neg_query] * n + neg, linked)).any():
        neg[bad] = rng.integers(0, n, int(bad.sum()))
    _score_all(results, "", src, pos, ctx, neg_query, neg, scorers, np.ones(q, dtype=bool))

    # the source's own neighbours under other relations / other interests
    views = observed["also_viewed"]
    nbr_src = np.concatenate([designed[0], views[0]])
    nbr_dst = np.concatenate([designed[1], views[1]])
    nbr_ctx = np.concatenate([designed[2], np.full(views.shape[1], -1)])
    order = np.argsort(nbr_src, kind="stable")
    nbr_src, nbr_dst, nbr_ctx = nbr_src[order], nbr_dst[order], nbr_ctx[order]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(nbr_src, minlength=n))])
    degree = offsets[src + 1] - offsets[src]
    pair_query = np.repeat(np.arange(q), degree)
    pair = offsets[src][pair_query] + np.arange(pair_query.size) - np.repeat(np.cumsum(degree) - degree, degree)
    same_interest = np.unique((designed[0] * n + designed[1]) * num_interests + designed[2])
    cand = nbr_dst[pair]
    keep = (cand != pos[pair_query]) & (nbr_ctx[pair] != ctx[pair_query]) & ~np.isin(
        (src[pair_query] * n + cand) * num_interests + ctx[pair_query], same_interest)
    _, first = np.unique(pair_query[keep] * n + cand[keep], return_index=True)
    neg_query, neg = pair_query[keep][first], cand[keep][first]
    num_neg = np.bincount(neg_query, minlength=q)
    valid = num_neg > 0
    results["sensitive_queries"] = float(valid.sum())
    results["sensitive_chance"] = float((1.0 / (1 + num_neg[valid])).mean())
    _score_all(results, "sensitive_", src, pos, ctx, neg_query, neg, scorers, valid)
    return results
