"""Titles, descriptions and feature bullets of the demo products (see ``rcml_graph.data.demo``).

Every product's words state its category, colour, pattern and size in varied wording; brands
and usage hints sometimes appear; a counted share of the texts is missing, empty or HTML, as
in real Amazon dumps.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from rcml_graph.data.demo_world import (
    BRAND_IN_TITLE_RATE,
    CATEGORY_TABLE,
    COLOURS,
    EMPTY_TITLE_RATE,
    HTML_DESCRIPTION_RATE,
    HTML_TITLE,
    HTML_TITLE_RATE,
    MISSING_DESCRIPTION_RATE,
    MISSING_TITLE_RATE,
    PATTERNS,
    SIZES,
    USAGE_HINT_RATE,
    USAGE_HINTS,
)

if TYPE_CHECKING:
    from rcml_graph.data.demo import _World

__all__ = ["titles_and_descriptions"]


def titles_and_descriptions(
    world: _World, rng: np.random.Generator
) -> tuple[list[str | None], list[list[str]], list[list[str]], dict[str, int]]:
    """Title, description sentences and feature bullets of every product, with the messiness of
    real dumps (missing, empty and HTML titles; missing and HTML descriptions) and its counts.

    Consumes ``rng`` in a fixed order, so the demo's bytes stay a function of its arguments.
    """
    n = world.num_products
    colours, patterns, sizes = list(COLOURS.values()), list(PATTERNS.values()), list(SIZES.values())
    pick = rng.integers(0, 1 << 30, size=(n, 8))  # synonym / template choices
    drop = rng.random((n, 3)) < 0.2  # colour, pattern, size left out of the title
    drop_feature = rng.random((n, 3)) < 0.3  # ... and out of the feature bullets
    category, colour_of, pattern_of, size_of = (
        a.tolist() for a in (world.category, world.colour, world.pattern, world.size))
    show_brand = rng.random(n) < BRAND_IN_TITLE_RATE
    u_title, u_desc, u_hint = rng.random(n), rng.random(n), rng.random(n)
    titles: list[str | None] = []
    descriptions: list[list[str]] = []
    features: list[list[str]] = []
    for p in range(n):
        row = pick[p]
        nouns = CATEGORY_TABLE[category[p]][2]
        noun = nouns[row[0] % len(nouns)]
        colour_words = colours[colour_of[p]][1]
        colour = "" if drop[p, 0] else colour_words[row[1] % len(colour_words)]
        pattern_words = patterns[pattern_of[p]]
        pattern = "" if drop[p, 1] else pattern_words[row[2] % len(pattern_words)]
        size_words = sizes[size_of[p]][1]
        size = "" if drop[p, 2] else size_words[row[3] % 3]
        brand = world.brand[p] if show_brand[p] else ""
        template = row[4] % 5
        if template == 0:
            words = [brand, size, colour, pattern, noun]
        elif template == 1:
            words = [noun.capitalize() + ",", colour + ("," if colour else ""), pattern, size, "by " + brand if brand else ""]
        elif template == 2:
            words = [size, pattern, noun, "in " + colour if colour else "", "-" if brand else "", brand]
        elif template == 3:
            words = [brand, noun, "-", pattern, colour, "design" if pattern or colour else ""]
        else:
            words = [colour, noun, f"({size})" if size else "", brand]
        title = " ".join(w for w in words if w).strip(" ,-")
        if u_title[p] < MISSING_TITLE_RATE:
            titles.append(None)
        elif u_title[p] < MISSING_TITLE_RATE + EMPTY_TITLE_RATE:
            titles.append("")
        elif u_title[p] < MISSING_TITLE_RATE + EMPTY_TITLE_RATE + HTML_TITLE_RATE:
            titles.append(HTML_TITLE)
        else:
            titles.append(title)

        colour_name = colour_words[row[5] % len(colour_words)]
        sentences = [
            (f"This {size_words[row[6] % 3]} {noun} comes in {colour_name} "
             f"with a {pattern_words[row[7] % len(pattern_words)]} finish."),
            f"Made by {world.brand[p]}.",
        ]
        if u_hint[p] < USAGE_HINT_RATE:
            hinted = world.secondary[p] if world.secondary[p] >= 0 and row[0] % 2 else world.primary[p]
            sentences.append(USAGE_HINTS[hinted])
        if u_desc[p] < MISSING_DESCRIPTION_RATE:
            descriptions.append([])
        elif u_desc[p] < MISSING_DESCRIPTION_RATE + HTML_DESCRIPTION_RATE:
            descriptions.append([f"<b>{sentences[0]}</b><br>", *sentences[1:]])
        else:
            descriptions.append(sentences)
        feature = [f"Colour: {colour_name}", f"Pattern: {pattern_words[0]}", f"Size: {size_words[0]}"]
        features.append([f for f, d in zip(feature, drop_feature[p]) if not d])
    counts = {
        "missing_titles": int((u_title < MISSING_TITLE_RATE).sum()),
        "empty_titles": int(((u_title >= MISSING_TITLE_RATE) & (u_title < MISSING_TITLE_RATE + EMPTY_TITLE_RATE)).sum()),
        "html_titles": sum(t == HTML_TITLE for t in titles),
        "missing_descriptions": int((u_desc < MISSING_DESCRIPTION_RATE).sum()),
        "html_descriptions": sum(bool(d) and d[0].startswith("<b>") for d in descriptions),
    }
    return titles, descriptions, features, counts
