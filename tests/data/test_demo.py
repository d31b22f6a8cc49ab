"""The demo world generator: determinism, images, designed relation statistics, designed
messiness, and the calibration of relation-guided retrieval."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rcml_graph.data.amazon import RawProduct, read_products
from rcml_graph.data.demo_calibration import _expected_hit_at_1
from rcml_graph.data.demo import (
    COLOURS,
    COMPLEMENTARY_PAIRS,
    HTML_TITLE,
    INTERESTS,
    PATTERNS,
    DemoSummary,
    generate_demo,
    relation_guided_retrieval_calibration,
    render_image,
)

NUM_PRODUCTS = 500
IMAGE_SIZE = 64


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoSummary:
    return generate_demo(tmp_path_factory.mktemp("demo"), num_products=NUM_PRODUCTS, seed=0, image_size=IMAGE_SIZE)


@pytest.fixture(scope="module")
def records(demo: DemoSummary) -> list[dict]:
    with gzip.open(demo.meta_path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def truth(demo: DemoSummary) -> dict:
    return json.loads(demo.truth_path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def full_records(records: list[dict]) -> dict[str, dict]:
    """The complete record of each product (partial duplicates carry no ``also_view``)."""
    return {r["asin"]: r for r in records if "also_view" in r}


def _designed_edges(demo: DemoSummary, kind: str) -> list[tuple[str, str, str]]:
    with gzip.open(demo.truth_edges_path, "rt", encoding="utf-8") as rows:
        next(rows)
        return [tuple(row.rstrip("\n").split("\t")[1:]) for row in rows if row.startswith(kind + "\t")]


def test_same_seed_same_bytes_other_seed_other_world(demo: DemoSummary, tmp_path: Path) -> None:
    again = generate_demo(tmp_path / "again", num_products=NUM_PRODUCTS, seed=0, image_size=IMAGE_SIZE)
    for name in ("meta_path", "truth_path", "truth_edges_path"):
        assert getattr(again, name).read_bytes() == getattr(demo, name).read_bytes(), name
    images = sorted(demo.image_dir.glob("*.jpg"))
    assert [p.name for p in sorted(again.image_dir.glob("*.jpg"))] == [p.name for p in images]
    for path in images[:: max(1, len(images) // 20)]:
        assert (again.image_dir / path.name).read_bytes() == path.read_bytes(), path.name
    # Gzip header: no file name, mtime 0 (bytes 4..7), so the bytes do not depend on the day.
    assert demo.meta_path.read_bytes()[3:8] == b"\x00\x00\x00\x00\x00"
    # The metadata does not depend on whether images are drawn.
    no_images = generate_demo(tmp_path / "no_images", num_products=NUM_PRODUCTS, seed=0, images=False)
    assert no_images.meta_path.read_bytes() == demo.meta_path.read_bytes()
    assert no_images.num_images == 0 and not no_images.image_dir.exists()
    other = generate_demo(tmp_path / "other", num_products=NUM_PRODUCTS, seed=1, images=False)
    assert other.meta_path.read_bytes() != demo.meta_path.read_bytes()
    assert not list(tmp_path.rglob("*.tmp")), "atomic writes left temporary files"


def test_images_decode_at_size_and_match_metadata(demo: DemoSummary, full_records: dict, truth: dict) -> None:
    files = sorted(demo.image_dir.glob("*.jpg"))
    with_image = sorted(a for a, p in truth["products"].items() if p["has_image"])
    assert [p.stem for p in files] == with_image
    assert demo.num_images == len(files) == NUM_PRODUCTS - demo.messiness["missing_images"]
    for path in files[:: max(1, len(files) // 25)]:
        with Image.open(path) as image:
            image.load()
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size == (IMAGE_SIZE, IMAGE_SIZE)
    for asin, record in full_records.items():
        expected = [f"images/{asin}.jpg"] if truth["products"][asin]["has_image"] else []
        assert record["imageURL"] == expected


def test_render_image_draws_the_colour_and_the_silhouette() -> None:
    colours, plain = list(COLOURS), list(PATTERNS).index("plain")
    blue = render_image(0, colours.index("blue"), plain, 2, 96, np.random.default_rng(0))
    pixels = np.asarray(blue, dtype=int)
    bluish = (pixels[..., 2] > pixels[..., 0] + 80) & (pixels[..., 2] > pixels[..., 1] + 60)
    # A large tent covers about a quarter of the canvas; the background is pale (>= 200).
    assert 0.1 < bluish.mean() < 0.6
    red = np.asarray(render_image(0, colours.index("red"), plain, 2, 96, np.random.default_rng(0)), dtype=int)
    assert not ((red[..., 2] > red[..., 0] + 80) & (red[..., 2] > red[..., 1] + 60)).any()
    # Same colour and jitter, other category: a different silhouette.
    rod = np.asarray(render_image(7, colours.index("blue"), plain, 2, 96, np.random.default_rng(0)), dtype=int)
    rod_bluish = (rod[..., 2] > rod[..., 0] + 80) & (rod[..., 2] > rod[..., 1] + 60)
    assert rod_bluish.mean() < 0.5 * bluish.mean()


def test_the_project_reader_reads_every_line(demo: DemoSummary, full_records: dict) -> None:
    products = list(read_products(demo.meta_path))
    assert all(isinstance(p, RawProduct) for p in products)
    assert len(products) == demo.num_records == NUM_PRODUCTS + demo.messiness["duplicate_records"]
    kinds = Counter(kind for p in products for kind in p.relations)
    assert {"also_bought", "also_viewed", "bought_together"} <= set(kinds)
    assert all(r["category"][0] == "Demo" and len(r["category"]) == 3 for r in full_records.values())


def test_relation_statistics_are_as_designed(demo: DemoSummary, full_records: dict, truth: dict) -> None:
    products = truth["products"]
    category = {a: p["category"] for a, p in products.items()}

    def edges(field: str) -> list[tuple[str, str]]:
        return [(a, t) for a, r in full_records.items() for t in r.get(field, []) if t in category]

    also_buy, also_view, together = edges("also_buy"), edges("also_view"), edges("bought_together")
    assert len(also_buy) == demo.num_edges["also_bought"]
    cross = np.mean([category[a] != category[t] for a, t in also_buy])
    assert 0.7 <= cross <= 0.9  # 80% of designed draws leave the category, noise is ~97% cross
    assert np.mean([category[a] == category[t] for a, t in also_view]) >= 0.85
    # Look-alikes: same colour far above the 1 in 12 of a random pair (75% by design where the
    # category has another product of that colour, which at 500 products is often not so).
    same_colour = np.mean([products[a]["colour"] == products[t]["colour"] for a, t in also_view])
    assert same_colour >= 3 / len(COLOURS)
    complementary = {frozenset(pair[:2]) for pair in COMPLEMENTARY_PAIRS}
    assert np.mean([frozenset((category[a], category[t])) in complementary for a, t in together]) >= 0.85
    # Every designed bought_together edge joins a complementary pair sharing its interest.
    pair_interest = {frozenset(pair[:2]): pair[2] for pair in COMPLEMENTARY_PAIRS}
    for a, t, interest in _designed_edges(demo, "bought_together"):
        assert pair_interest[frozenset((category[a], category[t]))] == interest
        assert interest in products[a]["interests"] and interest in products[t]["interests"]
    for kind, noise in truth["noise_edges"].items():
        assert noise and 0.04 <= len(noise) / demo.num_edges[kind] <= 0.1, kind
    degree = np.bincount([int(a[1:]) for a, _ in also_buy], minlength=NUM_PRODUCTS)
    assert 3 <= np.median(degree) <= 10 and degree.max() <= 30
    bridges = [a for a, p in products.items() if len(p["interests"]) == 2]
    assert 0.15 <= len(bridges) / NUM_PRODUCTS <= 0.25


def test_a_bridge_product_has_neighbours_of_both_interests(demo: DemoSummary, truth: dict) -> None:
    contexts: dict[str, set[str]] = {}
    for a, _, interest in _designed_edges(demo, "also_bought"):
        contexts.setdefault(a, set()).add(interest)
        assert interest in truth["products"][a]["interests"]
    bridges = [a for a, p in truth["products"].items() if len(p["interests"]) == 2]
    assert np.mean([len(contexts.get(a, ())) == 2 for a in bridges]) >= 0.9


def test_designed_messiness_is_present_and_counted(demo: DemoSummary, records: list[dict], truth: dict) -> None:
    counts = Counter(r["asin"] for r in records)
    assert sum(c - 1 for c in counts.values()) == demo.messiness["duplicate_records"] > 0
    first = {}
    for r in records:
        first.setdefault(r["asin"], r)
    titles = [r.get("title") for r in first.values()]
    assert sum(t == HTML_TITLE for t in titles) == demo.messiness["html_titles"] > 0
    assert sum(t is None for t in titles) == demo.messiness["missing_titles"] > 0
    assert sum(t == "" for t in titles) == demo.messiness["empty_titles"] > 0
    assert any("<b>" in " ".join(r.get("description", [])) for r in records)
    assert demo.messiness["missing_images"] == sum(not p["has_image"] for p in truth["products"].values()) > 0
    targets = {t for r in records for f in ("also_buy", "also_view") for t in r.get(f, [])}
    assert len(targets - set(counts)) == demo.messiness["dangling_targets"] > 0
    assert truth["messiness"] == demo.messiness


def test_titles_rarely_name_the_interest(full_records: dict) -> None:
    titles = [r.get("title") or "" for r in full_records.values()]
    named = [t for t in titles if any(name in t.lower() for name in INTERESTS)]
    assert len(named) / len(titles) < 0.05


def test_expected_hit_at_1_with_ties_by_hand() -> None:
    pos = np.array([0.9, 0.5, 0.5, 0.1])
    neg_query = np.array([0, 0, 1, 1, 2, 2, 2, 3])
    neg = np.array([0.1, 0.2, 0.5, 0.4, 0.5, 0.5, 0.3, 0.2])
    # query 0 wins, query 1 ties with one (1/2), query 2 ties with two (1/3), query 3 loses
    np.testing.assert_allclose(_expected_hit_at_1(pos, neg_query, neg), [1.0, 0.5, 1 / 3, 0.0])


def test_calibration_neither_trivial_nor_impossible(demo: DemoSummary) -> None:
    result = relation_guided_retrieval_calibration(demo.out_dir, num_negatives=20, seed=0)
    assert result["chance"] == pytest.approx(1 / 21)
    # Random negatives: text similarity helps a little, the interest labels help a lot.
    assert result["tfidf_hit_at_1"] > result["chance"] + 0.03
    assert result["oracle_hit_at_1"] - result["tfidf_hit_at_1"] >= 0.25
    # The source's other neighbours as negatives: a relation-blind scorer is at best chance,
    # an oracle that knows the interest and the relation's rule stays high.
    assert result["sensitive_queries"] >= 0.9 * result["queries"]
    assert result["sensitive_tfidf_hit_at_1"] <= result["sensitive_chance"] + 0.05
    assert result["sensitive_oracle_hit_at_1"] > result["sensitive_chance"] + 0.05
    assert result["sensitive_story_oracle_hit_at_1"] >= 0.6


def test_bad_arguments_name_the_value(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="num_products=10"):
        generate_demo(tmp_path, num_products=10)
    with pytest.raises(ValueError, match="image_size=8"):
        generate_demo(tmp_path, image_size=8)
    with pytest.raises(ValueError, match="num_negatives=0"):
        relation_guided_retrieval_calibration(tmp_path, num_negatives=0)
