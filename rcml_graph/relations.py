"""The relation vocabulary: canonical edge types, their reverses and description templates.

Every other module imports relation names from here; nothing else spells them out.
"""

from __future__ import annotations

from typing import Final

PRODUCT: Final = "product"
CATEGORY: Final = "category"
BRAND: Final = "brand"

#: Relation kinds between products, in a fixed order (their index is the relation-kind id).
RELATION_KINDS: Final[tuple[str, ...]] = (
    "also_bought",
    "also_viewed",
    "bought_together",
    "buy_after_viewing",
)
REVERSE_PREFIX: Final = "rev_"

IN_CATEGORY: Final = "in_category"
HAS_BRAND: Final = "has_brand"

#: The generic intra-sample relation: a product's own image and text.
SELF_RELATION_TEXT: Final = "the image and the text describe the same product"

#: Description templates per relation kind. ``{context}`` is an interest community's name.
CONTEXT_TEMPLATES: Final[dict[str, str]] = {
    "also_bought": "also bought by people who like {context}",
    "also_viewed": "viewed together by shoppers comparing {context}",
    "bought_together": "bought together by people who like {context}",
    "buy_after_viewing": "bought after viewing by shoppers looking for {context}",
}
#: Fallback descriptions when an edge has no specific context.
GENERIC_TEMPLATES: Final[dict[str, str]] = {
    "also_bought": "also bought by the same customers",
    "also_viewed": "viewed together by the same shoppers",
    "bought_together": "bought together in the same order",
    "buy_after_viewing": "bought after viewing the other product",
}

# Raw field names per Amazon release, mapped onto the canonical relation kinds.
RAW_RELATION_FIELDS: Final[dict[str, str]] = {
    # 2014 (inside ``related``)
    "also_bought": "also_bought",
    "also_viewed": "also_viewed",
    "bought_together": "bought_together",
    "buy_after_viewing": "buy_after_viewing",
    # 2018
    "also_buy": "also_bought",
    "also_view": "also_viewed",
}


def edge_type(kind: str) -> tuple[str, str, str]:
    """The forward PyG edge type of a product-product relation kind."""
    check_kind(kind)
    return (PRODUCT, kind, PRODUCT)


def reverse_edge_type(kind: str) -> tuple[str, str, str]:
    """The reverse PyG edge type of a product-product relation kind (``rev_<kind>``)."""
    check_kind(kind)
    return (PRODUCT, REVERSE_PREFIX + kind, PRODUCT)


def check_kind(kind: str) -> None:
    if kind not in RELATION_KINDS:
        raise ValueError(f"unknown relation kind {kind!r}; accepted: {', '.join(RELATION_KINDS)}")


def describe(kind: str, context: str | None) -> str:
    """The natural-language description of a relation of ``kind`` in ``context``.

    ``context`` is None (or empty) for the generic fallback.
    """
    check_kind(kind)
    if context:
        return CONTEXT_TEMPLATES[kind].format(context=context)
    return GENERIC_TEMPLATES[kind]


CATEGORY_EDGE: Final = (PRODUCT, IN_CATEGORY, CATEGORY)
BRAND_EDGE: Final = (PRODUCT, HAS_BRAND, BRAND)
