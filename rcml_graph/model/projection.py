"""Projection heads from the backbone's embedding space to the contrastive space."""

from __future__ import annotations

from typing import Final

from torch import Tensor, nn

PROJECTION_KINDS: Final[tuple[str, ...]] = ("linear", "mlp", "identity")


class ProjectionHead(nn.Module):
    r"""A linear map, a two-layer GELU MLP, or the identity.

    Args:
        in_dim (int): input size.
        out_dim (int): output size; must equal ``in_dim`` for ``identity``.
        kind (str, optional): ``linear``, ``mlp`` or ``identity``. (default: ``linear``)
        hidden_dim (int, optional): MLP hidden size; None means ``in_dim``. (default: None)

    Shapes:
        - **input:** ``(*, in_dim)``
        - **output:** ``(*, out_dim)``
    """

    def __init__(
        self, in_dim: int, out_dim: int, kind: str = "linear", hidden_dim: int | None = None
    ) -> None:
        super().__init__()
        if kind not in PROJECTION_KINDS:
            raise ValueError(f"unknown projection kind {kind!r}; accepted: {', '.join(PROJECTION_KINDS)}")
        if kind == "identity" and in_dim != out_dim:
            raise ValueError(f"projection 'identity' needs in_dim == out_dim; got {in_dim} and {out_dim}")
        self.kind = kind
        if kind == "linear":
            self.net: nn.Module = nn.Linear(in_dim, out_dim)
        elif kind == "mlp":
            hidden = hidden_dim or in_dim
            self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))
        else:
            self.net = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)
