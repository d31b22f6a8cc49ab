"""The demo's product texts: every product gets one, the messiness counts match what was written,
and a present title names the product's category noun."""

import numpy as np

from rcml_graph.data.demo import _sample_world
from rcml_graph.data.demo_text import titles_and_descriptions
from rcml_graph.data.demo_world import CATEGORY_TABLE, HTML_TITLE


def test_texts_and_their_messiness_counts() -> None:
    world = _sample_world(2000, np.random.default_rng(0))
    titles, descriptions, features, counts = titles_and_descriptions(world, np.random.default_rng(1))
    assert len(titles) == len(descriptions) == len(features) == 2000
    assert counts["missing_titles"] == sum(t is None for t in titles) > 0
    assert counts["empty_titles"] == sum(t == "" for t in titles) > 0
    assert counts["html_titles"] == sum(t == HTML_TITLE for t in titles) > 0
    assert counts["missing_descriptions"] == sum(not d for d in descriptions) > 0
    assert counts["html_descriptions"] == sum(bool(d) and d[0].startswith("<b>") for d in descriptions) > 0
    clean = [p for p, t in enumerate(titles) if t and t != HTML_TITLE]
    for p in clean:
        nouns = CATEGORY_TABLE[world.category[p]][2]
        assert any(noun.lower() in titles[p].lower() for noun in nouns), titles[p]
    again = titles_and_descriptions(world, np.random.default_rng(1))
    assert again == (titles, descriptions, features, counts)
