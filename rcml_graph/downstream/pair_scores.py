"""Fixed pair scores for the link predictor's logit (``linkpred.pair_score``).

A pair score ``s(u, v)`` is computed once from frozen embeddings, never trained, and added to
the decoder's logit with a learned weight (:class:`~rcml_graph.downstream.models.LinkPredictor`
``pair_score=True``). Two kinds:

* ``cosine``: the cosine of the endpoints' (global) input features, available to every feature
  source, so that a comparison between sources gives each of them the same channel;
* ``rcml``: an RCML head's own asymmetric score under the description the *source's* training
  edges carry, ``q(u, d_u) . z(v, d_u)``. It is pair-dependent (every candidate ``v`` is
  embedded under ``u``'s description), so a per-product export cannot express it.

Both are :class:`PairScore` tables ``source[u] . targets[slot[u], v]``: ``cosine`` has one
target table, ``rcml`` one per description in use (``slot[u]`` picks ``d_u``'s). ``d_u``
(:func:`source_descriptions`) is read from the leakage-free training edges only
(:func:`~rcml_graph.downstream.splits.target_edges` ``"train"``), never from a
validation/test edge.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch_geometric.data import HeteroData

from rcml_graph.downstream.export import conditioned_embeddings, kind_description_ids
from rcml_graph.downstream.splits import target_edge_mask
from rcml_graph.evaluation.encoders import RelationEncoder
from rcml_graph.relations import PRODUCT, edge_type

__all__ = ["PAIR_SCORES", "PairScore", "cosine_pair_score", "rcml_pair_score", "source_descriptions"]

#: Accepted ``linkpred.pair_score`` values.
PAIR_SCORES: tuple[str, ...] = ("none", "cosine", "rcml")
#: Pairs scored per chunk (bounds the ``(chunk, D)`` gathers).
_CHUNK = 1 << 16
#: Random pairs behind the standardisation constants.
_REFERENCE_PAIRS = 1 << 16


@dataclass(frozen=True)
class PairScore:
    """A fixed, standardised score of product pairs: ``(source[u] . targets[slot[u], v] - mean) / std``.

    Attributes:
        source: ``(N, D)`` source-side vectors.
        targets: ``(M, N, D)`` target-side tables; ``M = 1`` for a symmetric score.
        slot: ``(N,)`` the target table of each source.
        mean: Mean of the raw score over random pairs (:meth:`standardised`).
        std: Its standard deviation.
        name: ``cosine`` or ``rcml`` (for logs).
    """

    source: Tensor
    targets: Tensor
    slot: Tensor
    mean: float = 0.0
    std: float = 1.0
    name: str = "cosine"

    def __post_init__(self) -> None:
        num_nodes, dim = self.source.shape
        if self.targets.dim() != 3 or self.targets.shape[1:] != (num_nodes, dim):
            raise ValueError(f"targets must be (M, {num_nodes}, {dim}); got {tuple(self.targets.shape)}")
        if self.slot.shape != (num_nodes,) or not 0 <= int(self.slot.min()) <= int(self.slot.max()) < self.targets.size(0):
            raise ValueError(f"slot must be ({num_nodes},) indices into {self.targets.size(0)} target tables")

    @property
    def num_nodes(self) -> int:
        return int(self.source.size(0))

    def raw(self, pairs: Tensor) -> Tensor:
        """Unstandardised scores of ``(2, B)`` pairs -> ``(B,)`` (on the score's device)."""
        pairs = pairs.to(self.source.device).long()
        parts = []
        for start in range(0, pairs.size(1), _CHUNK):
            u, v = pairs[:, start : start + _CHUNK]
            parts.append((self.source[u] * self.targets[self.slot[u], v]).sum(dim=-1))  # (chunk,)
        return torch.cat(parts) if parts else torch.zeros(0, device=self.source.device)

    def __call__(self, pairs: Tensor) -> Tensor:
        """Standardised scores of ``(2, B)`` pairs -> ``(B,)`` on ``pairs``' device."""
        return ((self.raw(pairs) - self.mean) / self.std).to(pairs.device)

    def standardised(self, seed: int = 0) -> PairScore:
        """The same score with ``mean``/``std`` measured on seeded uniformly random pairs.

        The constants use no edge, so nothing leaks; a learned weight of ~1 then means a logit
        change of one score spread, the same scale for every feature source.
        """
        generator = torch.Generator().manual_seed(seed)
        pairs = torch.randint(0, self.num_nodes, (2, _REFERENCE_PAIRS), generator=generator)
        pairs = pairs[:, pairs[0] != pairs[1]]
        std, mean = torch.std_mean(self.raw(pairs).float())
        return PairScore(self.source, self.targets, self.slot, float(mean), max(float(std), 1e-6), self.name)


def cosine_pair_score(x: Tensor, seed: int = 0) -> PairScore:
    """The standardised cosine of ``(N, F)`` features ``x`` (rows L2-normalised)."""
    source = F.normalize(x.float(), dim=-1)
    return PairScore(source, source[None], torch.zeros(x.size(0), dtype=torch.long), name="cosine").standardised(seed)


def source_descriptions(data: HeteroData, kind: str) -> Tensor:
    """``(N,)`` the description id most frequent among each product's outgoing training edges of
    ``kind`` (lowest id on ties), ``-1`` for a product with none.

    Only the leakage-free training edges count (:func:`~rcml_graph.downstream.splits.target_edges`
    ``"train"``: no validation/test edge, no training edge on a held-out pair), so the result is
    the same on a graph with every held-out edge removed.
    """
    num_nodes = int(data[PRODUCT].num_nodes)
    num_desc = len(data.relation_text)
    store = data[edge_type(kind)]
    keep = target_edge_mask(data, kind, "train")
    sources = store.edge_index[0, keep].long()
    descriptions = store.desc_id[keep].long()
    out = torch.full((num_nodes,), -1, dtype=torch.long)
    if sources.numel() == 0:
        return out
    keys, counts = torch.unique(sources * num_desc + descriptions, return_counts=True)  # sorted by (u, d)
    # Order by (source, count descending, description ascending): two stable sorts.
    order = torch.sort(-counts, stable=True).indices
    order = order[torch.sort(keys[order] // num_desc, stable=True).indices]
    keys = keys[order]
    first = torch.ones_like(keys, dtype=torch.bool)
    first[1:] = keys[1:] // num_desc != keys[:-1] // num_desc
    out[keys[first] // num_desc] = keys[first] % num_desc
    return out


@torch.no_grad()
def rcml_pair_score(encoder: RelationEncoder, data: HeteroData, kind: str, batch_size: int = 1024,
                    seed: int = 0, max_table_bytes: int = 4 << 30) -> PairScore:
    """The head's own score under each source's training description, ``q(u, d_u) . z(v, d_u)``.

    ``d_u`` is :func:`source_descriptions` (training edges only), falling back to the kind's
    export description (:func:`~rcml_graph.downstream.export.kind_description_ids`) for a
    product without outgoing training edges of ``kind``. Every product is embedded under every
    description in use, once (``M`` descriptions: ``M x N`` target-side and ``N`` query-side
    encoder calls).

    Raises:
        ValueError: the kind has no description, or the ``(M, N, D)`` table would pass
            ``max_table_bytes``.
    """
    kinds = kind_description_ids(data)
    if kind not in kinds:
        raise ValueError(f"relation kind {kind!r} has no description in this graph; kinds with descriptions: "
                         f"{sorted(kinds)}")
    num_nodes = int(data[PRODUCT].num_nodes)
    description = source_descriptions(data, kind)
    description = torch.where(description >= 0, description, torch.full_like(description, kinds[kind]))
    used, slot = torch.unique(description, return_inverse=True)
    products = torch.arange(num_nodes)
    source = conditioned_embeddings(encoder, data, products, description, batch_size, as_query=True)  # (N, D)
    table_bytes = used.numel() * source.numel() * source.element_size()
    if table_bytes > max_table_bytes:
        raise ValueError(f"the rcml pair score needs {used.numel()} descriptions x {num_nodes} products "
                         f"({table_bytes / 2**30:.1f} GiB), above max_table_bytes={max_table_bytes}")
    grid = products[None, :].expand(used.numel(), -1)
    targets = conditioned_embeddings(encoder, data, grid.reshape(-1), used[:, None].expand_as(grid).reshape(-1),
                                     batch_size).view(used.numel(), num_nodes, -1)  # (M, N, D)
    return PairScore(source, targets, slot, name="rcml").standardised(seed)
