"""Validation by relation-guided retrieval: 1 positive + K sampled negatives per val edge.

The query set is fixed once (seeded negatives), so every epoch and every resumed run scores
the same candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from rcml_graph.eval.metrics import edge_keys, sample_negatives
from rcml_graph.eval.retrieval import relation_guided_retrieval
from rcml_graph.model.head import RCMLHead, ViewEmbeddings
from rcml_graph.relations import PRODUCT, RELATION_KINDS, edge_type, reverse_edge_type
from rcml_graph.training.sources import FeatureSource

VAL_SPLIT = 1


def retrieval_queries(
    data: HeteroData,
    split: int = VAL_SPLIT,
    num_negatives: int = 20,
    seed: int = 0,
    max_queries: int | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """The edges of ``split`` as queries ``(src, desc_id, candidates)``.

    ``candidates`` is ``(Q, 1 + K)``: the true target, then ``K`` negatives drawn uniformly from
    products not linked to the source under the query's description in any split (either
    direction), nor the source itself. With ``max_queries`` a seeded subset is kept.
    """
    num_nodes = int(data[PRODUCT].num_nodes)
    query_parts, forbid_parts = [], []
    for kind in RELATION_KINDS:
        if edge_type(kind) not in data.edge_types:
            continue
        store = data[edge_type(kind)]
        split_code = store.split.to(torch.long)
        desc = store.desc_id.to(torch.long)
        src, dst = store.edge_index.to(torch.long)
        keep = split_code == split
        query_parts.append(torch.stack([src[keep], dst[keep], desc[keep]]))
        forbid_parts.append(torch.stack([desc * num_nodes + src, dst]))
        if reverse_edge_type(kind) in data.edge_types:
            rev = data[reverse_edge_type(kind)]
            rsrc, rdst = rev.edge_index.to(torch.long)
            forbid_parts.append(torch.stack([rev.desc_id.to(torch.long) * num_nodes + rsrc, rdst]))
    if not query_parts:
        raise ValueError("the graph has no relation edge types; accepted: at least one of "
                         f"{', '.join(RELATION_KINDS)}")
    queries = torch.cat(query_parts, dim=1)
    if queries.shape[1] == 0:
        raise ValueError(f"no edges with split code {split} to validate on")
    generator = torch.Generator().manual_seed(seed)
    if max_queries is not None and queries.shape[1] > max_queries:
        keep = torch.randperm(queries.shape[1], generator=generator)[:max_queries].sort().values
        queries = queries[:, keep]
    src, dst, desc = queries
    forbidden = torch.cat(forbid_parts, dim=1)
    keys = edge_keys(forbidden[0], forbidden[1], num_nodes)
    negatives = sample_negatives(num_nodes, src, dst, keys, num_negatives, generator,
                                 groups=desc * num_nodes + src)
    return src, desc, torch.cat([dst[:, None], negatives], dim=1)


@torch.no_grad()
def embed_views(
    head: RCMLHead,
    source: FeatureSource,
    products: Tensor,
    relations: Tensor,
    description_table: Tensor | None,
    device: torch.device | str = "cpu",
    chunk_size: int = 4096,
    as_query: bool = False,
) -> ViewEmbeddings:
    """Embeddings of the views ``(products[v], relations[v])``, ``chunk_size`` views at a time;
    each chunk reads its distinct products' features once. ``as_query``: the source side of a
    query (see :meth:`RCMLHead.encode_views`)."""
    images, texts, valid = [], [], []
    for start in range(0, products.numel(), chunk_size):
        chunk_products = products[start:start + chunk_size]
        unique, local = torch.unique(chunk_products, return_inverse=True)
        features = source.product_features(unique, device=device)
        views = head.encode_views(features, local.to(device),
                                  relations[start:start + chunk_size].to(device), description_table,
                                  as_query=as_query)
        images.append(views.image)
        texts.append(views.text)
        valid.append(views.image_valid)
    return ViewEmbeddings(torch.cat(images), torch.cat(texts), torch.cat(valid))


class RetrievalValidator:
    """Relation-guided retrieval on the validation edges (see :func:`retrieval_queries`).

    Args:
        data: the product graph.
        num_negatives: negatives per query (default 20).
        seed: seed of the negatives and of the query subset.
        max_queries: score at most this many queries (None: all).
        split: edge split code to validate on (default 1).
    """

    def __init__(self, data: HeteroData, num_negatives: int = 20, seed: int = 0,
                 max_queries: int | None = None, split: int = VAL_SPLIT) -> None:
        self.src, self.desc, self.candidates = retrieval_queries(
            data, split, num_negatives, seed, max_queries)

    @property
    def num_queries(self) -> int:
        return self.src.numel()

    @torch.no_grad()
    def evaluate(
        self,
        head: RCMLHead,
        source: FeatureSource,
        description_table: Tensor | None,
        device: torch.device | str = "cpu",
        ks: Sequence[int] = (1, 5, 10),
    ) -> dict[str, float]:
        """``{"val/hit@5": ..., "val/mrr": ..., ...}`` in ``avg`` mode (``text2text`` when no
        product has an image), plus ``val/<mode>/hit@5``."""
        was_training = head.training
        head.eval()
        num_queries, num_candidates = self.candidates.shape
        query = embed_views(head, source, self.src, self.desc, description_table, device, as_query=True)
        views = embed_views(head, source, self.candidates.flatten(),
                            self.desc.repeat_interleave(num_candidates), description_table, device)
        head.train(was_training)
        shape = (num_queries, num_candidates, -1)
        results = relation_guided_retrieval(
            query.text, query.image, views.text.reshape(shape), views.image.reshape(shape),
            query.image_valid, views.image_valid.reshape(num_queries, num_candidates), ks=ks)
        # A domain without images (e.g. the text side of magazines) has no query in the image
        # modes, so avg is undefined (NaN): score it by text2text, as the evaluation does.
        main = "avg" if bool(views.image_valid.any() or query.image_valid.any()) else "text2text"
        out = {f"val/{name}": float(value) for name, value in results[main].items() if name != "n"}
        for mode, metrics in results.items():
            if mode != "avg":
                out[f"val/{mode}/hit@5"] = float(metrics["hit@5"])
        return out
