"""A hand-built 24-product graph and fake encoders with known behaviour.

Four communities of six products (``p // 6``). Inside each block ``b = 6 * c`` the links of
every description form one triangle (offsets below), so each pair is linked under at most
one description and "linked under d" is "same triangle under d":

    desc 1 (also_bought): {0, 1, 2}      desc 3 (also_viewed): {1, 3, 5}
    desc 2 (also_bought): {0, 3, 4}      desc 4 (also_viewed): {2, 4, 5}

Of a triangle's edges (a, b), (a, c), (b, c) the first two are training edges and the last
a test edge; desc 4 only occurs in the test split (an unseen description).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from rcml_graph.evaluation.encoders import ViewEmbeddings
from rcml_graph.relations import SELF_RELATION_TEXT, edge_type, reverse_edge_type

NUM_PRODUCTS = 24
TRIANGLES = {1: (0, 1, 2), 2: (0, 3, 4), 3: (1, 3, 5), 4: (2, 4, 5)}
KIND_OF_DESC = {1: "also_bought", 2: "also_bought", 3: "also_viewed", 4: "also_viewed"}
DIM = 64


def tiny_graph() -> HeteroData:
    data = HeteroData()
    data["product"].num_nodes = NUM_PRODUCTS
    data["product"].community = torch.arange(NUM_PRODUCTS) // 6
    data["product"].category_id = torch.arange(NUM_PRODUCTS) // 6
    data["product"].text = [f"product {p} of community {p // 6}" for p in range(NUM_PRODUCTS)]
    data["product"].asin = [f"A{p:03d}" for p in range(NUM_PRODUCTS)]
    data["product"].product_id = list(data["product"].asin)
    per_kind: dict[str, list[tuple[int, int, int, int]]] = {}
    for block in range(0, NUM_PRODUCTS, 6):
        for desc, (a, b, c) in TRIANGLES.items():
            pairs = [(a, b), (a, c), (b, c)]
            for i, (u, v) in enumerate(pairs):
                split = 2 if desc == 4 or i == 2 else 0
                per_kind.setdefault(KIND_OF_DESC[desc], []).append((block + u, block + v, desc, split))
    for kind, rows in per_kind.items():
        table = torch.tensor(rows, dtype=torch.long)
        edge_index = table[:, :2].T.contiguous()
        for etype, ei in ((edge_type(kind), edge_index), (reverse_edge_type(kind), edge_index.flip(0))):
            data[etype].edge_index = ei
            data[etype].desc_id = table[:, 2]
            data[etype].split = table[:, 3]
    data.relation_text = [
        SELF_RELATION_TEXT,
        "also bought by people who like tents",
        "also bought by people who like stoves",
        "viewed together by shoppers comparing lamps",
        "viewed together by shoppers comparing maps",
    ]
    data.relation_kind_of_desc = torch.tensor([-1, 0, 0, 1, 1])
    return data


def triangle_of(product: Tensor, desc: Tensor) -> Tensor:
    """Component id of ``product`` under ``desc``: its triangle, else a private id."""
    offset = product % 6
    block = product // 6
    members = torch.zeros(5, 6, dtype=torch.bool)
    for d, tri in TRIANGLES.items():
        members[d, list(tri)] = True
    inside = members[desc, offset]
    private = 1000 + product * 5 + desc
    return torch.where(inside, block * 5 + desc, private)


def _codes(ids: Tensor, salt: int) -> Tensor:
    """A fixed random unit vector per integer id."""
    out = []
    for i in ids.tolist():
        g = torch.Generator().manual_seed(salt * 1_000_003 + int(i))
        out.append(torch.randn(DIM, generator=g))
    return F.normalize(torch.stack(out), dim=-1) if out else torch.zeros(0, DIM)


def _views(emb: Tensor) -> ViewEmbeddings:
    return ViewEmbeddings(emb, emb.clone(), torch.ones(emb.size(0), dtype=torch.bool))


class OracleEncoder:
    """Knows the graph: ``encode(p, d)`` is the code of p's triangle under d."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, products: Tensor, relation_ids: Tensor) -> ViewEmbeddings:
        self.calls += products.numel()
        return _views(_codes(triangle_of(products, relation_ids), salt=1))

    def encode_global(self, products: Tensor) -> ViewEmbeddings:
        # Category code plus a little product-specific noise: linearly separable categories.
        noise = 0.1 * _codes(products, salt=3)
        return _views(_codes(products // 6, salt=2) + noise)


class BlindEncoder:
    """Ignores the relation: every product is its community's code."""

    def encode(self, products: Tensor, relation_ids: Tensor) -> ViewEmbeddings:
        return _views(_codes(products // 6, salt=4))

    def encode_global(self, products: Tensor) -> ViewEmbeddings:
        return _views(_codes(products // 6, salt=4))


class RandomEncoder:
    """An independent random vector per (product, relation)."""

    def encode(self, products: Tensor, relation_ids: Tensor) -> ViewEmbeddings:
        return _views(_codes(products * 7 + relation_ids, salt=5))

    def encode_global(self, products: Tensor) -> ViewEmbeddings:
        return _views(_codes(products, salt=6))
