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

#: Paraphrases of every template, never used to build a graph: test-time wording the model has
#: not seen, for the open-vocabulary evaluation (``retrieval_unseen``, subset ``paraphrased``).
PARAPHRASE_TEMPLATES: Final[dict[str, str]] = {
    "also_bought": "often purchased by customers who are into {context}",
    "also_viewed": "looked at side by side by people shopping for {context}",
    "bought_together": "ordered in one purchase by fans of {context}",
    "buy_after_viewing": "purchased after browsing by customers searching for {context}",
}
GENERIC_PARAPHRASES: Final[dict[str, str]] = {
    "also_bought": "purchased by the very same customers",
    "also_viewed": "browsed in the same session by the same shoppers",
    "bought_together": "ordered together in a single purchase",
    "buy_after_viewing": "purchased after the shopper looked at the other item",
}


def paraphrase(description: str) -> str | None:
    """A paraphrase of a description produced by :func:`describe` (None for other texts)."""
    for kind in RELATION_KINDS:
        if description == GENERIC_TEMPLATES[kind]:
            return GENERIC_PARAPHRASES[kind]
        prefix = CONTEXT_TEMPLATES[kind].split("{context}")[0]
        if description.startswith(prefix) and len(description) > len(prefix):
            return PARAPHRASE_TEMPLATES[kind].format(context=description[len(prefix):])
    return None


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
