"""Link predictors: GraphSAGE made heterogeneous with ``to_hetero``, or an MLP; one edge decoder.

Symmetric (default): every product has one feature vector and one embedding ``h``, and a pair
``(u, v)`` is scored from ``h_u * h_v``. Asymmetric (``asymmetric=True``): every product has a
*source-role* and a *target-role* feature vector (for RCML: its query-side and target-side
views), stored side by side in ``x = [x_src | x_dst]`` ``(N, 2F)``; the same encoder embeds both
(``h = [enc(x_src) | enc(x_dst)]``, ``(N, 2H)``) and ``(u, v)`` is scored from
``h_src[u] * h_dst[v]``, so the score can follow a relation that is not a similarity (the RCML
head's own score is ``q(u, r) . z(v, r)``). With ``x_src == x_dst`` it is the symmetric model.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.nn import MLP, SAGEConv, to_hetero
from torch_geometric.typing import Metadata

from rcml_graph.relations import PRODUCT

__all__ = ["DECODERS", "MODELS", "RELATION_AGGRS", "EdgeDecoder", "LinkPredictor", "SAGEEncoder"]

#: Accepted ``model`` and ``decoder`` names.
MODELS: tuple[str, ...] = ("sage", "mlp")
DECODERS: tuple[str, ...] = ("dot", "mlp")
#: Accepted ways of combining the messages of several relation types (``to_hetero`` ``aggr``).
RELATION_AGGRS: tuple[str, ...] = ("mean", "sum")


class SAGEEncoder(nn.Module):
    """A homogeneous GraphSAGE stack, written to be traced by ``to_hetero``.

    The features are first projected to the hidden width by one linear layer shared by every
    relation type, so that message passing (repeated for each of the ``2 * kinds`` edge types
    under ``to_hetero``) runs at width ``H`` rather than ``F``: with 768-wide backbone features
    that is ten times cheaper, and the projection is a low-rank factor of the first
    ``SAGEConv``'s weights (both are linear before the first activation).

    Args:
        in_channels: Input feature size ``F``.
        hidden_channels: Width of the projection, of every layer and of the output ``H``
            (default 64 in configs).
        num_layers: Number of ``SAGEConv`` layers (>= 1).
        dropout: Dropout between layers (an ``nn.Dropout`` module, so tracing keeps train/eval).

    Shapes:
        - input: node features ``(N, F)``, edge indices ``(2, E)``
        - output: node embeddings ``(N, H)``
    """

    def __init__(self, in_channels: int, hidden_channels: int, num_layers: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1; got {num_layers}")
        self.project = nn.Linear(in_channels, hidden_channels)
        self.convs = nn.ModuleList(SAGEConv(hidden_channels, hidden_channels) for _ in range(num_layers))
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        x = self.project(x)  # (N, H)
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = conv(x, edge_index)
            if i < last:
                x = self.dropout(self.act(x))
        return x


class EdgeDecoder(nn.Module):
    """Scores product pairs from their embeddings.

    Args:
        channels: Embedding size ``H`` (of each role, when ``asymmetric``).
        kind: ``dot`` (``<h_u, h_v>``) or ``mlp`` (an MLP on ``h_u * h_v``).
        dropout: Dropout inside the MLP decoder.
        asymmetric: ``h`` is ``[h_src | h_dst]`` ``(N, 2H)``; a pair ``(u, v)`` reads ``u``'s
            source half and ``v``'s target half (default False).

    Shapes:
        - input: embeddings ``(N, H)`` (``(N, 2H)`` when asymmetric), pairs ``(2, B)``
        - output: logits ``(B,)``
    """

    def __init__(self, channels: int, kind: str = "mlp", dropout: float = 0.0, asymmetric: bool = False) -> None:
        super().__init__()
        if kind not in DECODERS:
            raise ValueError(f"unknown decoder {kind!r}; accepted: {', '.join(DECODERS)}")
        self.kind = kind
        self.channels = channels
        self.asymmetric = asymmetric
        self.mlp = MLP([channels, channels, 1], dropout=dropout, norm=None) if kind == "mlp" else None

    def forward(self, h: Tensor, pairs: Tensor) -> Tensor:
        expected = 2 * self.channels if self.asymmetric else self.channels
        if h.size(-1) != expected:
            raise ValueError(f"embeddings have {h.size(-1)} columns; this decoder expects {expected}")
        if self.asymmetric:
            product = h[pairs[0], : self.channels] * h[pairs[1], self.channels :]  # (B, H)
        else:
            product = h[pairs[0]] * h[pairs[1]]  # (B, H)
        if self.mlp is None:
            return product.sum(dim=-1)
        return self.mlp(product).squeeze(-1)


class LinkPredictor(nn.Module):
    """Node encoder (heterogeneous GraphSAGE or MLP) plus :class:`EdgeDecoder`.

    Args:
        in_channels: Node feature size ``F`` (of each role, when ``asymmetric``).
        metadata: ``graph.metadata()`` of the message-passing graph (``sage`` only).
        model: ``sage`` (``to_hetero(SAGEEncoder)`` over every relation edge type, combined by ``relation_aggr``) or
            ``mlp`` (the features through an MLP, no message passing).
        hidden_channels: Embedding size ``H`` (default 128).
        num_layers: Layers of the encoder (default 2).
        decoder: ``dot`` or ``mlp`` (default).
        dropout: Dropout of encoder and decoder (default 0.0).
        relation_aggr: How ``to_hetero`` combines the per-edge-type messages of a node:
            ``mean`` (default; its scale does not grow with the number of relation types) or
            ``sum``.
        asymmetric: ``["product"].x`` is ``[x_src | x_dst]`` ``(N, 2F)``: the encoder (one set of
            weights) embeds each half, and pairs are scored source half to target half
            (default False).
        pair_score: Add a fixed pair score to the logit, ``decoder(h, pairs) + pair_weight * s``
            (:meth:`score`; ``pair_weight`` a learned scalar starting at 1), for a standardised
            score such as :class:`~rcml_graph.downstream.pair_scores.PairScore` (default False).

    Shapes:
        - input: a ``HeteroData`` with ``["product"].x`` ``(N, F)`` (``(N, 2F)`` when asymmetric)
          and its edge types; pairs ``(2, B)``
        - input: (pair_score) fixed scores ``(B,)`` of the pairs
        - output: node embeddings ``(N, H)`` (``(N, 2H)``: ``[h_src | h_dst]`` when asymmetric)
          from :meth:`encode`; logits ``(B,)`` from :meth:`forward` and :meth:`score`
    """

    def __init__(self, in_channels: int, metadata: Metadata | None = None, model: str = "sage",
                 hidden_channels: int = 128, num_layers: int = 2, decoder: str = "mlp",
                 dropout: float = 0.0, relation_aggr: str = "mean", asymmetric: bool = False,
                 pair_score: bool = False) -> None:
        super().__init__()
        if relation_aggr not in RELATION_AGGRS:
            raise ValueError(f"unknown relation_aggr {relation_aggr!r}; accepted: {', '.join(RELATION_AGGRS)}")
        if model not in MODELS:
            raise ValueError(f"unknown link-prediction model {model!r}; accepted: {', '.join(MODELS)}")
        self.model = model
        self.in_channels = in_channels
        self.asymmetric = asymmetric
        if model == "sage":
            if metadata is None or not metadata[1]:
                raise ValueError("model='sage' needs the metadata of a graph with at least one edge type")
            self.encoder: nn.Module = to_hetero(
                SAGEEncoder(in_channels, hidden_channels, num_layers, dropout), metadata, aggr=relation_aggr)
        else:
            self.encoder = MLP(in_channels=in_channels, hidden_channels=hidden_channels,
                               out_channels=hidden_channels, num_layers=num_layers, dropout=dropout, norm=None)
        self.decoder = EdgeDecoder(hidden_channels, decoder, dropout, asymmetric)
        # Starts at 1: a standardised score moves the logit by one spread per unit at once; at
        # lr 1e-2 Adam a weight starting at 0 could not reach that scale within 100 steps.
        self.pair_weight = nn.Parameter(torch.ones(())) if pair_score else None

    def encode(self, graph: HeteroData) -> Tensor:
        x = graph[PRODUCT].x
        expected = 2 * self.in_channels if self.asymmetric else self.in_channels
        if x.size(-1) != expected:
            raise ValueError(f"node features have {x.size(-1)} columns; this model expects {expected}"
                             + (" ([x_src | x_dst])" if self.asymmetric else ""))
        if not self.asymmetric:
            return self._encode_role(x, graph)
        x_src, x_dst = x.split(self.in_channels, dim=-1)
        return torch.cat([self._encode_role(x_src, graph), self._encode_role(x_dst, graph)], dim=-1)

    def _encode_role(self, x: Tensor, graph: HeteroData) -> Tensor:
        if self.model == "mlp":
            return self.encoder(x)
        return self.encoder({PRODUCT: x}, graph.edge_index_dict)[PRODUCT]

    def score(self, h: Tensor, pairs: Tensor, pair_score: Tensor | None = None) -> Tensor:
        """Logits ``(B,)`` of ``pairs`` ``(2, B)`` from embeddings ``h``, plus ``pair_weight * pair_score``
        ``(B,)`` when the model has a pair-score channel (which then needs it)."""
        logits = self.decoder(h, pairs)
        if (self.pair_weight is None) != (pair_score is None):
            raise ValueError("a pair score is needed by a model built with pair_score=True, and only by one")
        if pair_score is None:
            return logits
        return logits + self.pair_weight * pair_score.to(logits.dtype)

    def forward(self, graph: HeteroData, pairs: Tensor, pair_score: Tensor | None = None) -> Tensor:
        return self.score(self.encode(graph), pairs, pair_score)
