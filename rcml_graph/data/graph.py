"""The pure core of the build: a clean product table -> relation-described ``HeteroData``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import repeat

import numpy as np
import torch
from torch_geometric.data import HeteroData

from rcml_graph.data.communities import Communities, find_communities, term_matrix
from rcml_graph.data.products import ProductTable
from rcml_graph.data.splits import (
    SPLIT_NAMES,
    TRAIN,
    inductive_edge_split,
    inductive_node_split,
    pair_keys,
    transductive_edge_split,
)
from rcml_graph.data.stats import (
    count_distinct,
    relation_stats,
    sorted_unique,
    sorted_unique_counts,
)
from rcml_graph.relations import (
    BRAND,
    BRAND_EDGE,
    CATEGORY,
    CATEGORY_EDGE,
    PRODUCT,
    RELATION_KINDS,
    REVERSE_PREFIX,
    SELF_RELATION_TEXT,
    describe,
    edge_type,
    reverse_edge_type,
)

#: Kinds whose edges have no direction: stored once per unordered pair.
SYMMETRIC_KINDS = ("also_bought", "also_viewed", "bought_together")
#: Co-purchase kinds share one set of interest communities; also_viewed gets its own.
CO_PURCHASE_KINDS = ("also_bought", "bought_together", "buy_after_viewing")


@dataclass
class GraphSettings:
    """Options of :func:`build_graph` (defaults are the project's)."""

    val_ratio: float = 0.1
    test_ratio: float = 0.1
    split: str = "transductive"  # or "inductive" (held-out products)
    seed: int = 0
    community_resolution: float = 2.0
    min_community_size: int = 3
    max_networkx_edges: int = 250_000
    max_text_chars: int = 1000
    #: Which edges the interest communities (and so every edge's description, the products'
    #: ``community`` labels and the degrees that pick an edge's community) are computed from:
    #: ``train`` (default) = training edges on pairs that are held out in no relation kind, so
    #: no validation/test edge shapes a description or a label; ``all`` = every edge (the
    #: behaviour before session 8: test edges leak into the descriptions of training edges).
    community_edges: str = "train"

    def __post_init__(self) -> None:
        if self.split not in ("transductive", "inductive"):
            raise ValueError(f"unknown split {self.split!r}; accepted: transductive, inductive")
        if self.community_edges not in ("train", "all"):
            raise ValueError(
                f"unknown community_edges {self.community_edges!r}; accepted: train, all"
            )


def product_text(
    title: str,
    brand: str,
    category: tuple[str, ...],
    description: str,
    max_chars: int | None = None,
) -> str:
    """The text a product is encoded from: title, brand, leaf category, description (the
    whole cut to ``max_chars``)."""
    parts = [title]
    if brand:
        parts.append(f"Brand: {brand}.")
    if category:
        parts.append(f"Category: {category[-1]}.")
    if description and description != title:
        parts.append(description)
    return " ".join(parts)[:max_chars]


def _canonical_edges(kind: str, edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    if kind not in SYMMETRIC_KINDS or edge_index.shape[1] == 0:
        return edge_index
    key = sorted_unique(pair_keys(edge_index, num_nodes))
    return np.stack([key // num_nodes, key % num_nodes])


def _edge_context(edge_index: np.ndarray, label: np.ndarray, degree: np.ndarray) -> np.ndarray:
    """Community that describes each edge (-1: none, generic description).

    Same community -> that one. Otherwise the community of the lower-degree endpoint (the more
    specific product: a hub bought by several interests says little), falling back to the
    other endpoint's when that one has none.
    """
    src, dst = edge_index
    src_label, dst_label = label[src], label[dst]
    prefer_src = (degree[src] < degree[dst]) | ((degree[src] == degree[dst]) & (src < dst))
    chosen = np.where(prefer_src, src_label, dst_label)
    other = np.where(prefer_src, dst_label, src_label)
    return np.where(chosen >= 0, chosen, other)


def community_edge_subset(
    edges: dict[str, np.ndarray], splits: dict[str, np.ndarray], num_nodes: int
) -> dict[str, np.ndarray]:
    """Each kind's edges that may shape communities: training edges whose unordered pair is
    held out (validation or test) in no relation kind. ``(2, E_k)`` per kind."""
    held_out = [
        pair_keys(edges[k][:, splits[k] != TRAIN], num_nodes) for k in edges
    ]
    held_out_keys = (
        np.unique(np.concatenate(held_out)) if held_out else np.zeros(0, dtype=np.int64)
    )
    subset = {}
    for kind, edge_index in edges.items():
        train = edge_index[:, splits[kind] == TRAIN]
        keep = ~np.isin(pair_keys(train, num_nodes), held_out_keys)
        subset[kind] = train[:, keep]
    return subset


def _community_report(
    communities: Communities, category_id: np.ndarray, category_names: list[str]
) -> dict[str, object]:
    label = communities.label
    num_communities = communities.num_communities
    sizes = np.bincount(label[label >= 0], minlength=num_communities)
    # Each community's most frequent category (ties: the smaller category id), from one sort
    # of (community, category) keys over the members that have a category.
    member = (label >= 0) & (category_id >= 0)
    num_categories = max(len(category_names), 1)
    pair = sorted_unique_counts(label[member] * num_categories + category_id[member])
    top_category = np.full(num_communities, -1, dtype=np.int64)
    top_count = np.zeros(num_communities, dtype=np.int64)
    if pair[0].size:
        keys, counts = pair
        community = keys // num_categories
        starts = np.flatnonzero(np.diff(community, prepend=-1))
        lengths = np.diff(starts, append=keys.size)
        is_max = counts == np.repeat(np.maximum.reduceat(counts, starts), lengths)
        candidate = np.flatnonzero(is_max)
        first = candidate[np.diff(community[candidate], prepend=-1) != 0]
        top_category[community[first]] = keys[first] % num_categories
        top_count[community[first]] = counts[first]
    purity = top_count / np.maximum(sizes, 1)
    rows = [
        {
            "id": c,
            "name": communities.names[c],
            "size": size,
            "category_purity": round(p, 4) if cat >= 0 else 0.0,
            "top_category": category_names[cat] if cat >= 0 else "",
            "top_terms": communities.top_terms[c],
        }
        for c, size, p, cat in zip(
            range(num_communities), sizes.tolist(), purity.tolist(), top_category.tolist()
        )
    ]
    return {
        "method": communities.method,
        "count": num_communities,
        "products_in_a_community": int((label >= 0).sum()),
        "size_max": int(sizes.max(initial=0)),
        "size_median": float(np.median(sizes)) if sizes.size else 0.0,
        "mean_category_purity": float(np.mean([r["category_purity"] for r in rows])) if rows else 0.0,
        "communities": rows,
    }


def build_graph(
    table: ProductTable,
    settings: GraphSettings | None = None,
    stage_seconds: dict[str, float] | None = None,
) -> tuple[HeteroData, dict]:
    """Turn a product table into a heterogeneous graph with described relation edges.

    Returns the graph and the graph part of the build report. See the README for the
    layout of the ``HeteroData`` (node stores, edge stores, the relation-text table).

    Args:
        stage_seconds: if given, filled with the wall time of each stage and, under
            ``"<stage>_cpu"``, this process's CPU time in it (for benchmarks on a shared
            machine; kept out of the report, which stays a pure function of the input).
    """
    clock = [time.perf_counter(), time.process_time()]

    def lap(stage: str) -> None:
        now = [time.perf_counter(), time.process_time()]
        if stage_seconds is not None:
            stage_seconds[stage] = round(now[0] - clock[0], 3)
            stage_seconds[f"{stage}_cpu"] = round(now[1] - clock[1], 3)
        clock[:] = now

    settings = settings or GraphSettings()
    num_products = table.num_products
    data = HeteroData()

    # --- category and brand nodes -------------------------------------------------------
    # Look up each distinct path once (two paths may join to the same name: one category).
    name_of_path = {p: " > ".join(p) for p in set(table.category_path) if p}
    category_names = sorted(set(name_of_path.values()))
    category_index = {name: i for i, name in enumerate(category_names)}
    id_of_path = {p: category_index[name] for p, name in name_of_path.items()}
    category_id = np.fromiter(
        map(id_of_path.get, table.category_path, repeat(-1)), dtype=np.int64, count=num_products
    )
    brand_names = sorted({b for b in table.brand if b})
    brand_index = {name: i for i, name in enumerate(brand_names)}
    brand_id = np.fromiter(
        map(brand_index.get, table.brand, repeat(-1)), dtype=np.int64, count=num_products
    )

    product = data[PRODUCT]
    product.num_nodes = num_products
    product.product_id = list(table.product_id)
    product.title = list(table.title)
    product.description = list(table.description)
    product.text = list(
        map(
            product_text,
            table.title,
            table.brand,
            table.category_path,
            table.description,
            repeat(settings.max_text_chars),
        )
    )
    product.image_urls = [list(u) for u in table.image_urls]
    product.category_id = torch.from_numpy(category_id)
    product.brand_id = torch.from_numpy(brand_id)
    data[CATEGORY].num_nodes = len(category_names)
    data[CATEGORY].name = category_names
    data[BRAND].num_nodes = len(brand_names)
    data[BRAND].name = brand_names
    for (src_t, rel, dst_t), ids in ((CATEGORY_EDGE, category_id), (BRAND_EDGE, brand_id)):
        rows = np.flatnonzero(ids >= 0)
        forward = torch.from_numpy(np.stack([rows, ids[rows]]))
        data[src_t, rel, dst_t].edge_index = forward
        data[dst_t, REVERSE_PREFIX + rel, src_t].edge_index = forward.flip(0)

    lap("nodes_and_texts")

    # --- relation edges and communities ------------------------------------------------
    edges = {
        kind: _canonical_edges(kind, table.edges[kind], num_products)
        for kind in RELATION_KINDS
        if kind in table.edges and table.edges[kind].shape[1] > 0
    }
    # Category levels below the root (the leaf twice: it is the most telling) and the title.
    terms = term_matrix(
        [(*c[1:], c[-1] if c else "", t) for c, t in zip(table.category_path, table.title)]
    )
    lap("edges_and_terms")
    # --- splits (before the communities, which see only training edges by default) ---------
    if settings.split == "inductive":
        node_split = inductive_node_split(
            num_products, settings.val_ratio, settings.test_ratio, settings.seed
        )
        product.split = torch.from_numpy(node_split)
    splits: dict[str, np.ndarray] = {}
    for kind_id, kind in enumerate(RELATION_KINDS):
        if kind not in edges:
            continue
        if settings.split == "inductive":
            splits[kind] = inductive_edge_split(edges[kind], node_split)
        else:
            splits[kind] = transductive_edge_split(
                edges[kind], num_products, settings.val_ratio, settings.test_ratio,
                settings.seed + kind_id,
            )
    community_edges = (
        community_edge_subset(edges, splits, num_products)
        if settings.community_edges == "train"
        else edges
    )
    lap("splits")
    families = {
        "co_purchase": [k for k in CO_PURCHASE_KINDS if k in edges],
        "also_viewed": [k for k in ("also_viewed",) if k in edges],
    }
    family_communities: dict[str, Communities] = {}
    family_degree: dict[str, np.ndarray] = {}
    family_edges_used: dict[str, int] = {}
    for family, kinds in families.items():
        union = (
            np.concatenate([community_edges[k] for k in kinds], axis=1)
            if kinds
            else np.zeros((2, 0), np.int64)
        )
        family_communities[family] = find_communities(
            union,
            num_products,
            terms,
            seed=settings.seed,
            resolution=settings.community_resolution,
            min_size=settings.min_community_size,
            max_networkx_edges=settings.max_networkx_edges,
        )
        family_degree[family] = np.bincount(union.ravel(), minlength=num_products)
        family_edges_used[family] = int(union.shape[1])
        lap(f"communities_{family}")
    product.community = torch.from_numpy(family_communities["co_purchase"].label)
    product.view_community = torch.from_numpy(family_communities["also_viewed"].label)


    relation_text = [SELF_RELATION_TEXT]
    relation_kind = [-1]
    relation_community = [-1]
    text_index = {SELF_RELATION_TEXT: 0}
    description_report: dict[str, dict[str, object]] = {}
    split_report: dict[str, dict[str, int]] = {}
    for kind_id, kind in enumerate(RELATION_KINDS):
        if kind not in edges:
            continue
        edge_index = edges[kind]
        family = "co_purchase" if kind in CO_PURCHASE_KINDS else "also_viewed"
        communities = family_communities[family]
        context = _edge_context(edge_index, communities.label, family_degree[family])
        # One description per (kind, community); ids assigned in first-seen order of a
        # sorted community list, so they are deterministic.
        desc_of_context = {}
        for c in (np.flatnonzero(np.bincount(context + 1)) - 1).tolist():
            text = describe(kind, communities.names[c] if c >= 0 else None)
            if text not in text_index:
                text_index[text] = len(relation_text)
                relation_text.append(text)
                relation_kind.append(kind_id)
                relation_community.append(c)
            desc_of_context[c] = text_index[text]
        lookup_keys = np.array(sorted(desc_of_context), dtype=np.int64)
        lookup_vals = np.array([desc_of_context[k] for k in lookup_keys.tolist()], dtype=np.int64)
        desc_id = lookup_vals[np.searchsorted(lookup_keys, context)]

        split = splits[kind]
        forward = torch.from_numpy(edge_index)
        for etype, ei in ((edge_type(kind), forward), (reverse_edge_type(kind), forward.flip(0))):
            store = data[etype]
            store.edge_index = ei.contiguous()
            store.desc_id = torch.from_numpy(desc_id)
            store.split = torch.from_numpy(split)
        description_report[kind] = {
            "edges": int(edge_index.shape[1]),
            "descriptions": count_distinct(desc_id, len(relation_text)),
            "specific_context_share": float((context >= 0).mean()),
            "generic_fallback_share": float((context < 0).mean()),
        }
        split_counts = np.bincount(split, minlength=len(SPLIT_NAMES)).tolist()
        split_report[kind] = dict(zip(SPLIT_NAMES, split_counts))

    lap("descriptions")
    data.relation_text = relation_text
    data.relation_kind_of_desc = torch.tensor(relation_kind, dtype=torch.long)
    data.relation_community_of_desc = torch.tensor(relation_community, dtype=torch.long)
    data.community_names = family_communities["co_purchase"].names
    data.view_community_names = family_communities["also_viewed"].names

    community_report = {
        family: {
            "edges_used": family_edges_used[family],
            **_community_report(c, category_id, category_names),
        }
        for family, c in family_communities.items()
    }
    lap("community_report")
    statistics = relation_stats(edges, num_products)
    lap("statistics")
    report = {
        "products": num_products,
        "categories": len(category_names),
        "brands": len(brand_names),
        "products_with_image_urls": int(sum(1 for u in table.image_urls if u)),
        "relation_edges_undirected": {k: int(v.shape[1]) for k, v in edges.items()},
        "descriptions": {"total": len(relation_text), "per_relation": description_report},
        "communities": community_report,
        "community_edges": settings.community_edges,
        "splits": {"mode": settings.split, "per_relation": split_report},
        "statistics": statistics,
    }
    return data, report
