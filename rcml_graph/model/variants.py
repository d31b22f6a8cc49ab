"""RCML and its baselines/ablations as settings of one code path.

Every variant trains the same :class:`~rcml_graph.model.head.RCMLHead` with the same
:class:`~rcml_graph.losses.RCMLLoss`; a variant only fixes some of their settings.

======================  ==========  ==============  =================  =======  =======
variant                 beta        relation        pairs              inter    intra
======================  ==========  ==============  =================  =======  =======
``rcml``                configured  description     self + relations   yes      yes
``clip``                1           none            self only          yes      no
``unconditioned``       1           none            self + relations   yes      yes
``no_inter_modal``      configured  description     self + relations   no       yes
``no_intra``            configured  description     self + relations   yes      no
``relation_ids``        configured  learned ids     self + relations   yes      yes
``unconditioned_query`` 1           none            self + relations   yes      yes
======================  ==========  ==============  =================  =======  =======

The conditioned variants use the query-side relation operator when ``model.head.query_operator``
is set (the default; see :mod:`rcml_graph.model.query_operator`). ``unconditioned_query`` is the
control for it: the unconditioned model with a *relation-free* query map (``q = normalize(z +
MLP(z))``), i.e. asymmetric scoring without reading the relation, so that what the operator gains
by asymmetry alone is separated from what it gains by reading the relation.

``no_inter_modal`` drops the inter-modal loss terms (image-text across source and target), the
counterpart of ``no_intra``; the pairs are unchanged. (The ``experiment=no_inter`` ablation of
the issue, no inter-sample relation pairs, is the ``rcml`` variant trained on self pairs only.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Variant:
    """The settings a variant fixes.

    Attributes:
        name: the variant's name.
        relation_mode: ``description``, ``ids`` or ``none`` (see :class:`RelationEncoder`).
        conditioned: False forces ``beta = 1`` (the global embedding, i.e. CLIP).
        self_pairs_only: train on (product, product) self pairs only.
        use_inter: keep the inter-modal loss terms (``w_inter`` is zeroed otherwise).
        use_intra: keep the intra-modal loss terms (``w_intra`` is zeroed otherwise).
        relation_free_query: give the head a query map that does not read the relation.
    """

    name: str
    relation_mode: str
    conditioned: bool
    self_pairs_only: bool
    use_inter: bool
    use_intra: bool
    relation_free_query: bool = False

    def resolve_beta(self, beta: float) -> float:
        """The ``beta`` to build the head with: the configured one, or 1 if unconditioned."""
        return beta if self.conditioned else 1.0

    def resolve_weights(self, w_inter: float, w_intra: float) -> tuple[float, float]:
        """The loss weights ``(w_inter, w_intra)`` with the dropped terms zeroed."""
        return (w_inter if self.use_inter else 0.0, w_intra if self.use_intra else 0.0)


VARIANTS: Final[dict[str, Variant]] = {
    v.name: v
    for v in (
        Variant("rcml", "description", True, False, True, True),
        Variant("clip", "none", False, True, True, False),
        Variant("unconditioned", "none", False, False, True, True),
        Variant("no_inter_modal", "description", True, False, False, True),
        Variant("no_intra", "description", True, False, True, False),
        Variant("relation_ids", "ids", True, False, True, True),
        Variant("unconditioned_query", "none", False, False, True, True, relation_free_query=True),
    )
}


def get_variant(name: str) -> Variant:
    """The :class:`Variant` called ``name``; ``ValueError`` listing the known ones otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown model variant {name!r}; available: {', '.join(VARIANTS)}") from None
