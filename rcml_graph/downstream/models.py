"""Link predictors: GraphSAGE made heterogeneous with ``to_hetero``, or an MLP; one edge decoder."""

from __future__ import annotations

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
        channels: Embedding size ``H``.
        kind: ``dot`` (``<h_u, h_v>``) or ``mlp`` (an MLP on ``h_u * h_v``).
        dropout: Dropout inside the MLP decoder.

    Shapes:
        - input: embeddings ``(N, H)``, pairs ``(2, B)``
        - output: logits ``(B,)``
    """

    def __init__(self, channels: int, kind: str = "mlp", dropout: float = 0.0) -> None:
        super().__init__()
        if kind not in DECODERS:
            raise ValueError(f"unknown decoder {kind!r}; accepted: {', '.join(DECODERS)}")
        self.kind = kind
        self.mlp = MLP([channels, channels, 1], dropout=dropout, norm=None) if kind == "mlp" else None

    def forward(self, h: Tensor, pairs: Tensor) -> Tensor:
        product = h[pairs[0]] * h[pairs[1]]  # (B, H)
        if self.mlp is None:
            return product.sum(dim=-1)
        return self.mlp(product).squeeze(-1)


class LinkPredictor(nn.Module):
    """Node encoder (heterogeneous GraphSAGE or MLP) plus :class:`EdgeDecoder`.

    Args:
        in_channels: Node feature size ``F``.
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

    Shapes:
        - input: a ``HeteroData`` with ``["product"].x`` ``(N, F)`` and its edge types; pairs ``(2, B)``
        - output: node embeddings ``(N, H)`` from :meth:`encode`; logits ``(B,)`` from :meth:`forward`
    """

    def __init__(self, in_channels: int, metadata: Metadata | None = None, model: str = "sage",
                 hidden_channels: int = 128, num_layers: int = 2, decoder: str = "mlp",
                 dropout: float = 0.0, relation_aggr: str = "mean") -> None:
        super().__init__()
        if relation_aggr not in RELATION_AGGRS:
            raise ValueError(f"unknown relation_aggr {relation_aggr!r}; accepted: {', '.join(RELATION_AGGRS)}")
        if model not in MODELS:
            raise ValueError(f"unknown link-prediction model {model!r}; accepted: {', '.join(MODELS)}")
        self.model = model
        if model == "sage":
            if metadata is None or not metadata[1]:
                raise ValueError("model='sage' needs the metadata of a graph with at least one edge type")
            self.encoder: nn.Module = to_hetero(
                SAGEEncoder(in_channels, hidden_channels, num_layers, dropout), metadata, aggr=relation_aggr)
        else:
            self.encoder = MLP(in_channels=in_channels, hidden_channels=hidden_channels,
                               out_channels=hidden_channels, num_layers=num_layers, dropout=dropout, norm=None)
        self.decoder = EdgeDecoder(hidden_channels, decoder, dropout)

    def encode(self, graph: HeteroData) -> Tensor:
        x = graph[PRODUCT].x
        if self.model == "mlp":
            return self.encoder(x)
        return self.encoder({PRODUCT: x}, graph.edge_index_dict)[PRODUCT]

    def forward(self, graph: HeteroData, pairs: Tensor) -> Tensor:
        return self.decoder(self.encode(graph), pairs)
