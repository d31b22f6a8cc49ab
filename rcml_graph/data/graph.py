"""The pure core of the build: a clean product table -> relation-described ``HeteroData``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch_geometric.data import HeteroData

from rcml_graph.data.communities import Communities, find_communities, term_matrix
from rcml_graph.data.products import ProductTable
from rcml_graph.data.splits import (
    SPLIT_NAMES,
    inductive_edge_split,
    inductive_node_split,
    transductive_edge_split,
)
from rcml_graph.data.stats import relation_stats
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

    def __post_init__(self) -> None:
        if self.split not in ("transductive", "inductive"):
            raise ValueError(f"unknown split {self.split!r}; accepted: transductive, inductive")


def product_text(title: str, brand: str, category: tuple[str, ...], description: str) -> str:
    """The text a product is encoded from: title, brand, leaf category, description."""
    parts = [title]
    if brand:
        parts.append(f"Brand: {brand}.")
    if category:
        parts.append(f"Category: {category[-1]}.")
    if description and description != title:
        parts.append(description)
    return " ".join(parts)


def _canonical_edges(kind: str, edge_index: np.ndarray, num_nodes: int) -> np.ndarray:
    if kind not in SYMMETRIC_KINDS or edge_index.shape[1] == 0:
        return edge_index
    lo, hi = np.minimum(*edge_index), np.maximum(*edge_index)
    key = np.unique(lo * num_nodes + hi)
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


def _community_report(
    communities: Communities, category_id: np.ndarray, category_names: list[str]
) -> dict[str, object]:
    label = communities.label
    rows = []
    for c in range(communities.num_communities):
        members = np.flatnonzero(label == c)
        cats = category_id[members]
        cats = cats[cats >= 0]
        if cats.size:
            counts = np.bincount(cats)
            top = int(counts.argmax())
            purity, top_category = float(counts[top] / members.size), category_names[top]
        else:
            purity, top_category = 0.0, ""
        rows.append(
            {
                "id": c,
                "name": communities.names[c],
                "size": int(members.size),
                "category_purity": round(purity, 4),
                "top_category": top_category,
                "top_terms": communities.top_terms[c],
            }
        )
    sizes = np.array([r["size"] for r in rows]) if rows else np.zeros(0)
    return {
        "method": communities.method,
        "count": communities.num_communities,
        "products_in_a_community": int((label >= 0).sum()),
        "size_max": int(sizes.max(initial=0)),
        "size_median": float(np.median(sizes)) if sizes.size else 0.0,
        "mean_category_purity": float(np.mean([r["category_purity"] for r in rows])) if rows else 0.0,
        "communities": rows,
    }


def build_graph(table: ProductTable, settings: GraphSettings | None = None) -> tuple[HeteroData, dict]:
    """Turn a product table into a heterogeneous graph with described relation edges.

    Returns the graph and the graph part of the build report. See the README for the
    layout of the ``HeteroData`` (node stores, edge stores, the relation-text table).
    """
    settings = settings or GraphSettings()
    num_products = table.num_products
    data = HeteroData()

    # --- category and brand nodes -------------------------------------------------------
    category_names = sorted({" > ".join(p) for p in table.category_path if p})
    category_index = {name: i for i, name in enumerate(category_names)}
    category_id = np.array(
        [category_index[" > ".join(p)] if p else -1 for p in table.category_path], dtype=np.int64
    )
    brand_names = sorted({b for b in table.brand if b})
    brand_index = {name: i for i, name in enumerate(brand_names)}
    brand_id = np.array([brand_index.get(b, -1) for b in table.brand], dtype=np.int64)

    product = data[PRODUCT]
    product.num_nodes = num_products
    product.product_id = list(table.product_id)
    product.title = list(table.title)
    product.description = list(table.description)
    product.text = [
        product_text(t, b, c, d)[: settings.max_text_chars]
        for t, b, c, d in zip(table.title, table.brand, table.category_path, table.description)
    ]
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

    # --- relation edges and communities ------------------------------------------------
    edges = {
        kind: _canonical_edges(kind, table.edges[kind], num_products)
        for kind in RELATION_KINDS
        if kind in table.edges and table.edges[kind].shape[1] > 0
    }
    # Category levels below the root (the leaf twice: it is the most telling) and the title.
    terms = term_matrix([
        "\n".join([*c[1:], c[-1] if c else "", t]) for c, t in zip(table.category_path, table.title)
    ])
    families = {
        "co_purchase": [k for k in CO_PURCHASE_KINDS if k in edges],
        "also_viewed": [k for k in ("also_viewed",) if k in edges],
    }
    family_communities: dict[str, Communities] = {}
    family_degree: dict[str, np.ndarray] = {}
    for family, kinds in families.items():
        union = (
            np.concatenate([edges[k] for k in kinds], axis=1) if kinds else np.zeros((2, 0), np.int64)
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
    product.community = torch.from_numpy(family_communities["co_purchase"].label)
    product.view_community = torch.from_numpy(family_communities["also_viewed"].label)

    # --- splits ---------------------------------------------------------------------------
    if settings.split == "inductive":
        node_split = inductive_node_split(
            num_products, settings.val_ratio, settings.test_ratio, settings.seed
        )
        product.split = torch.from_numpy(node_split)

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
        for c in np.unique(context).tolist():
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

        if settings.split == "inductive":
            split = inductive_edge_split(edge_index, node_split)
        else:
            split = transductive_edge_split(
                edge_index, num_products, settings.val_ratio, settings.test_ratio,
                settings.seed + kind_id,
            )
        forward = torch.from_numpy(edge_index)
        for etype, ei in ((edge_type(kind), forward), (reverse_edge_type(kind), forward.flip(0))):
            store = data[etype]
            store.edge_index = ei.contiguous()
            store.desc_id = torch.from_numpy(desc_id)
            store.split = torch.from_numpy(split)
        description_report[kind] = {
            "edges": int(edge_index.shape[1]),
            "descriptions": int(np.unique(desc_id).size),
            "specific_context_share": float((context >= 0).mean()),
            "generic_fallback_share": float((context < 0).mean()),
        }
        split_report[kind] = {
            name: int((split == i).sum()) for i, name in enumerate(SPLIT_NAMES)
        }

    data.relation_text = relation_text
    data.relation_kind_of_desc = torch.tensor(relation_kind, dtype=torch.long)
    data.relation_community_of_desc = torch.tensor(relation_community, dtype=torch.long)
    data.community_names = family_communities["co_purchase"].names
    data.view_community_names = family_communities["also_viewed"].names

    report = {
        "products": num_products,
        "categories": len(category_names),
        "brands": len(brand_names),
        "products_with_image_urls": int(sum(1 for u in table.image_urls if u)),
        "relation_edges_undirected": {k: int(v.shape[1]) for k, v in edges.items()},
        "descriptions": {"total": len(relation_text), "per_relation": description_report},
        "communities": {
            family: _community_report(c, category_id, category_names)
            for family, c in family_communities.items()
        },
        "splits": {"mode": settings.split, "per_relation": split_report},
        "statistics": relation_stats(edges, num_products),
    }
    return data, report
