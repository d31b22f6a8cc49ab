"""Relation embeddings: natural-language descriptions, learned ids, or none."""

from __future__ import annotations

from typing import Final

import torch
from torch import Tensor, nn

#: ``description``: the backbone text tower's global embedding of each relation description.
#: ``ids``: a learned embedding per relation id (the ``relation_ids`` ablation: no semantics).
#: ``none``: no relation at all (the ``clip`` and ``unconditioned`` baselines).
RELATION_MODES: Final[tuple[str, ...]] = ("description", "ids", "none")


class RelationEncoder(nn.Module):
    r"""Looks up the embedding of each view's relation.

    In ``description`` mode the table of description embeddings is produced by the backbone's
    text tower and passed to :meth:`forward` every step (trainable backbone), or stored once
    with :meth:`cache_descriptions` when the backbone is frozen. In ``ids`` mode a learned
    :class:`torch.nn.Embedding` replaces the descriptions.

    Args:
        mode (str, optional): one of ``description``, ``ids``, ``none``. (default: ``description``)
        embed_dim (int, optional): relation embedding size; required for ``ids``. (default: None)
        num_relations (int, optional): number of relation ids; required for ``ids``.
            (default: None)

    Shapes:
        - **input:** relation_index ``(V,)`` long, description_table ``(R, D)`` or None.
        - **output:** ``(V, D)``; in ``none`` mode, None.
    """

    def __init__(
        self,
        mode: str = "description",
        embed_dim: int | None = None,
        num_relations: int | None = None,
    ) -> None:
        super().__init__()
        if mode not in RELATION_MODES:
            raise ValueError(f"unknown relation mode {mode!r}; accepted: {', '.join(RELATION_MODES)}")
        self.mode = mode
        self.id_embedding: nn.Embedding | None = None
        if mode == "ids":
            if not embed_dim or not num_relations or embed_dim < 1 or num_relations < 1:
                raise ValueError(
                    f"relation mode 'ids' needs positive embed_dim and num_relations; got "
                    f"embed_dim={embed_dim}, num_relations={num_relations}"
                )
            self.id_embedding = nn.Embedding(num_relations, embed_dim)
            nn.init.normal_(self.id_embedding.weight, std=embed_dim**-0.5)
        self.register_buffer("description_cache", None, persistent=False)

    @torch.no_grad()
    def cache_descriptions(self, description_table: Tensor) -> None:
        """Store ``(R, D)`` description embeddings of a frozen text tower for later steps."""
        if description_table.dim() != 2:
            raise ValueError(
                f"description_table must be (R, D); got shape {tuple(description_table.shape)}"
            )
        self.description_cache = description_table.detach().clone()

    def forward(self, relation_index: Tensor, description_table: Tensor | None = None) -> Tensor | None:
        if self.mode == "none":
            return None
        if self.mode == "ids":
            assert self.id_embedding is not None
            return self.id_embedding(relation_index)
        table = description_table if description_table is not None else self.description_cache
        if table is None:
            raise ValueError(
                "relation mode 'description' needs a description_table (R, D) or a cache set "
                "with cache_descriptions(); got neither"
            )
        return table[relation_index]
