"""The embedded ``demo`` domain: a seeded generator of a small Amazon-like product world.

The world is documented in ``datasets/README.md``. In short: products belong to categories
(grouped in departments) whose silhouette, colour and pattern are drawn into a JPEG and
stated, with varied wording, in the title and description; hidden *shopper interests* tie
categories that look different together (a nursing pillow, milk storage bags and a bottle
sterilizer through "infant feeding"). ``also_buy`` edges follow interests and mostly cross
categories, ``also_view`` edges join look-alikes of one category, ``bought_together`` joins
complementary categories of a shared interest. The same product therefore has different
neighbours under different relations, which a relation-agnostic embedding cannot express.

Output (2018 metadata format, plus the ``bought_together`` extension the reader accepts)::

    out_dir/meta_Demo.json.gz      one JSON object per line
    out_dir/images/<asin>.jpg      one JPEG per product that has an image
    out_dir/truth.json             hidden labels: per product category, interests, looks
    out_dir/truth_edges.tsv.gz     hidden context (interest) of every non-noise edge

Everything is a function of ``(num_products, seed)`` (images also of ``image_size``): the
same arguments give the same bytes. ``truth*`` files are for tests and oracles, never for
training.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from rcml_graph.data.amazon import RawProduct, read_products

META_FILE: Final = "meta_Demo.json.gz"
TRUTH_FILE: Final = "truth.json"
TRUTH_EDGES_FILE: Final = "truth_edges.tsv.gz"
IMAGE_DIR: Final = "images"
ROOT_CATEGORY: Final = "Demo"
HTML_TITLE: Final = '<span class="a-size-medium a-color-secondary"'
MIN_PRODUCTS: Final = 100
MAX_PRODUCTS: Final = 1_000_000

# Raw field names of the three product-product relations in the written file.
FIELD_OF_RELATION: Final[dict[str, str]] = {
    "also_bought": "also_buy",
    "also_viewed": "also_view",
    "bought_together": "bought_together",
}

# ----------------------------------------------------------------------------------------
# The world. Interests are never named in titles; a few descriptions carry a usage hint.
# ----------------------------------------------------------------------------------------
INTERESTS: Final[tuple[str, ...]] = (
    "camping", "hiking", "fishing", "infant feeding", "baby sleep", "home coffee",
    "home baking", "grilling", "gardening", "birdwatching", "home workouts", "dog care",
)
_I = {name: index for index, name in enumerate(INTERESTS)}

# (department, category, title nouns, silhouette, {interest: weight})
CATEGORY_TABLE: Final[tuple[tuple[str, str, tuple[str, ...], str, dict[str, float]], ...]] = (
    ("Sports & Outdoors", "Tents", ("tent", "dome tent", "2-person shelter", "tent"), "tent", {"camping": .8, "hiking": .2}),
    ("Sports & Outdoors", "Sleeping Bags", ("sleeping bag", "mummy bag", "sleep sack"), "capsule", {"camping": .7, "hiking": .3}),
    ("Sports & Outdoors", "Camp Stoves", ("stove", "gas burner", "portable stove"), "stove", {"camping": .6, "grilling": .4}),
    ("Sports & Outdoors", "Headlamps", ("headlamp", "head torch", "LED head light"), "headlamp", {"camping": .4, "fishing": .3, "hiking": .3}),
    ("Sports & Outdoors", "Hiking Boots", ("boots", "trail boots", "walking boots"), "boot", {"hiking": .8, "camping": .2}),
    ("Sports & Outdoors", "Water Bottles", ("water bottle", "flask", "drinking bottle"), "flask", {"hiking": .4, "home workouts": .35, "camping": .25}),
    ("Sports & Outdoors", "Binoculars", ("binoculars", "10x42 binocular", "field glasses"), "binoculars", {"birdwatching": .65, "hiking": .2, "fishing": .15}),
    ("Sports & Outdoors", "Fishing Rods", ("spinning rod", "casting rod", "fishing pole", "rod"), "rod", {"fishing": .9, "camping": .1}),
    ("Sports & Outdoors", "Fishing Reels", ("spinning reel", "baitcast reel", "reel"), "reel", {"fishing": .9, "camping": .1}),
    ("Sports & Outdoors", "Tackle Boxes", ("tackle box", "lure organizer", "utility box"), "case", {"fishing": .85, "camping": .15}),
    ("Sports & Outdoors", "Waders", ("chest waders", "waders", "wading boots"), "wader", {"fishing": .9, "hiking": .1}),
    ("Sports & Outdoors", "Yoga Mats", ("yoga mat", "exercise mat", "non-slip mat"), "roll", {"home workouts": .9, "hiking": .1}),
    ("Sports & Outdoors", "Dumbbells", ("dumbbell", "hand weight", "dumbbell pair"), "dumbbell", {"home workouts": .9, "dog care": .1}),
    ("Baby", "Baby Bottles", ("baby bottle", "feeding bottle", "anti-colic bottle"), "baby_bottle", {"infant feeding": .85, "baby sleep": .15}),
    ("Baby", "Bottle Sterilizers", ("sterilizer", "steam sterilizer", "bottle steriliser"), "dome", {"infant feeding": .9, "baby sleep": .1}),
    ("Baby", "Nursing Pillows", ("nursing pillow", "feeding cushion", "support pillow"), "crescent", {"infant feeding": .75, "baby sleep": .25}),
    ("Baby", "Milk Storage Bags", ("milk storage bags", "breastmilk bags", "freezer pouches"), "pouch", {"infant feeding": .9, "baby sleep": .1}),
    ("Baby", "Baby Monitors", ("baby monitor", "video monitor", "audio monitor"), "monitor", {"baby sleep": .85, "infant feeding": .15}),
    ("Baby", "Swaddle Blankets", ("swaddle", "swaddle blanket", "muslin wrap"), "diamond", {"baby sleep": .85, "infant feeding": .15}),
    ("Home & Kitchen", "Coffee Grinders", ("coffee grinder", "burr grinder", "bean mill"), "grinder", {"home coffee": .9, "home baking": .1}),
    ("Home & Kitchen", "French Presses", ("french press", "coffee press", "cafetiere"), "press", {"home coffee": .9, "camping": .1}),
    ("Home & Kitchen", "Mugs", ("mug", "coffee cup", "tea mug"), "mug", {"home coffee": .6, "camping": .2, "home baking": .2}),
    ("Home & Kitchen", "Mixing Bowls", ("mixing bowl", "bowl set", "prep bowl"), "bowl", {"home baking": .85, "grilling": .15}),
    ("Home & Kitchen", "Baking Sheets", ("baking sheet", "sheet pan", "cookie tray"), "sheet", {"home baking": .9, "grilling": .1}),
    ("Home & Kitchen", "Cast Iron Skillets", ("skillet", "frying pan", "cast iron pan"), "skillet", {"grilling": .5, "camping": .3, "home baking": .2}),
    ("Home & Kitchen", "Grill Tongs", ("tongs", "BBQ tongs", "locking tongs"), "tongs", {"grilling": .9, "camping": .1}),
    ("Patio, Lawn & Garden", "Garden Hoses", ("garden hose", "hose pipe", "expandable hose"), "hose", {"gardening": .9, "dog care": .1}),
    ("Patio, Lawn & Garden", "Pruning Shears", ("pruning shears", "secateurs", "bypass pruner"), "shears", {"gardening": .9, "birdwatching": .1}),
    ("Patio, Lawn & Garden", "Bird Feeders", ("bird feeder", "seed feeder", "hanging feeder"), "birdhouse", {"birdwatching": .8, "gardening": .2}),
    ("Pet Supplies", "Dog Leashes", ("dog leash", "lead", "retractable leash"), "leash", {"dog care": .8, "hiking": .2}),
    ("Pet Supplies", "Dog Beds", ("dog bed", "pet bed", "orthopedic bed"), "pet_bed", {"dog care": .9, "home workouts": .1}),
)
_C = {row[1]: index for index, row in enumerate(CATEGORY_TABLE)}

#: Complementary category pairs, linked by ``bought_together`` within the named interest.
COMPLEMENTARY_PAIRS: Final[tuple[tuple[str, str, str], ...]] = (
    ("Fishing Rods", "Fishing Reels", "fishing"), ("Waders", "Tackle Boxes", "fishing"),
    ("Tents", "Sleeping Bags", "camping"), ("Camp Stoves", "Mugs", "camping"),
    ("Hiking Boots", "Water Bottles", "hiking"), ("Baby Bottles", "Bottle Sterilizers", "infant feeding"),
    ("Nursing Pillows", "Milk Storage Bags", "infant feeding"), ("Baby Monitors", "Swaddle Blankets", "baby sleep"),
    ("Coffee Grinders", "French Presses", "home coffee"), ("Mixing Bowls", "Baking Sheets", "home baking"),
    ("Cast Iron Skillets", "Grill Tongs", "grilling"), ("Garden Hoses", "Pruning Shears", "gardening"),
    ("Bird Feeders", "Binoculars", "birdwatching"), ("Yoga Mats", "Dumbbells", "home workouts"),
    ("Dog Leashes", "Dog Beds", "dog care"),
)

COLOURS: Final[dict[str, tuple[tuple[int, int, int], tuple[str, ...]]]] = {
    "red": ((200, 30, 40), ("red", "crimson", "scarlet")),
    "orange": ((240, 130, 20), ("orange", "tangerine")),
    "yellow": ((235, 205, 40), ("yellow", "mustard", "lemon")),
    "green": ((40, 150, 60), ("green", "forest green", "olive")),
    "teal": ((20, 140, 140), ("teal", "turquoise")),
    "blue": ((40, 80, 200), ("blue", "navy", "cobalt")),
    "purple": ((120, 50, 160), ("purple", "violet", "plum")),
    "pink": ((235, 120, 170), ("pink", "rose", "blush")),
    "brown": ((120, 75, 40), ("brown", "tan", "chocolate")),
    "black": ((25, 25, 28), ("black", "charcoal", "jet black")),
    "grey": ((128, 128, 135), ("grey", "gray", "slate")),
    "white": ((245, 245, 240), ("white", "ivory", "cream")),
}
PATTERNS: Final[dict[str, tuple[str, ...]]] = {
    "plain": ("solid", "plain", "solid-colour"),
    "striped": ("striped", "stripes", "pinstripe"),
    "dotted": ("polka dot", "dotted", "spotted"),
    "checked": ("checked", "plaid", "checkered"),
}
SIZES: Final[dict[str, tuple[float, tuple[str, ...]]]] = {
    "small": (0.55, ("small", "compact", "mini")),
    "medium": (0.7, ("medium", "standard", "regular")),
    "large": (0.85, ("large", "XL", "oversized")),
}
_BRANDS_BY_INTEREST: Final[tuple[tuple[str, ...], ...]] = (
    ("Trailcraft", "Pinecrest", "Northfire"), ("Ridgeway", "Summitline", "Switchback"),
    ("Rivermark", "Castwell", "Deepwater"), ("Little Sprout", "Milkway", "Nurtura"),
    ("Dreamnest", "Hushaby", "Moonlamb"), ("Bean & Burr", "Morning Grind", "Crema Co"),
    ("Flourish", "Proofwell", "Crumbworks"), ("Emberline", "Smokehaus", "Charwell"),
    ("Greenthumb", "Rootstock", "Bloomfield"), ("Featherview", "Wingspan", "Songbird"),
    ("Ironcore", "Flexform", "Reprise"), ("Pawtrail", "Goodboy", "Barkley"),
)
GENERIC_BRANDS: Final[tuple[str, ...]] = ("Basics Plus", "Homely", "Everyday", "Vantex", "Nordica", "Generic")
_USAGE_HINTS: Final[tuple[str, ...]] = (
    "Packs down small for nights under the stars.", "Light enough for long days on the trail.",
    "Built for early mornings at the lake.", "Makes night feeds easier for new parents.",
    "Helps little ones settle at bedtime.", "For a better cup every morning.",
    "For weekend bakes and birthday cakes.", "Made for backyard cookouts.",
    "For tending beds and borders.", "For watching feathered visitors up close.",
    "For workouts in the living room.", "For daily walks with your four-legged friend.",
)

# Silhouettes in unit coordinates: (primitive, coordinates, stroke width, fill 255=on 0=cut).
_SHAPES: Final[dict[str, tuple[tuple[str, tuple[float, ...], float, int], ...]]] = {
    "tent": (("poly", (.5, .08, .96, .88, .04, .88), 0, 255), ("poly", (.5, .45, .62, .88, .38, .88), 0, 0)),
    "capsule": (("rrect", (.3, .04, .7, .96), .18, 255),),
    "stove": (("rect", (.2, .45, .8, .82), 0, 255), ("rect", (.32, .3, .68, .45), 0, 255), ("line", (.25, .82, .18, .97), .04, 255), ("line", (.75, .82, .82, .97), .04, 255)),
    "headlamp": (("ring", (.08, .2, .92, .8), .06, 255), ("ellipse", (.34, .32, .66, .68), 0, 255)),
    "boot": (("poly", (.25, .12, .55, .12, .55, .6, .92, .7, .92, .9, .25, .9), 0, 255),),
    "flask": (("rrect", (.34, .3, .66, .96), .06, 255), ("rect", (.42, .12, .58, .3), 0, 255), ("rect", (.39, .05, .61, .13), 0, 255)),
    "binoculars": (("ellipse", (.06, .3, .47, .85), 0, 255), ("ellipse", (.53, .3, .94, .85), 0, 255), ("rect", (.4, .4, .6, .55), 0, 255)),
    "rod": (("line", (.06, .96, .96, .04), .025, 255), ("line", (.06, .96, .26, .76), .07, 255)),
    "reel": (("ellipse", (.18, .18, .78, .78), 0, 255), ("line", (.48, .48, .92, .5), .05, 255), ("ellipse", (.84, .4, .98, .6), 0, 255), ("ellipse", (.38, .38, .58, .58), 0, 0)),
    "case": (("rect", (.08, .38, .92, .86), 0, 255), ("ring", (.35, .2, .65, .5), .05, 255), ("line", (.08, .55, .92, .55), .02, 0)),
    "wader": (("poly", (.3, .04, .62, .04, .62, .74, .88, .8, .88, .96, .3, .96), 0, 255), ("line", (.34, .04, .3, .0), .03, 255)),
    "roll": (("rrect", (.05, .38, .88, .66), .12, 255), ("ellipse", (.78, .36, .97, .68), 0, 255)),
    "dumbbell": (("rect", (.08, .25, .26, .75), 0, 255), ("rect", (.74, .25, .92, .75), 0, 255), ("rect", (.26, .44, .74, .56), 0, 255)),
    "baby_bottle": (("rrect", (.34, .36, .66, .96), .08, 255), ("rect", (.31, .28, .69, .37), 0, 255), ("ellipse", (.42, .06, .58, .3), 0, 255)),
    "dome": (("chord", (.12, .12, .88, .88), 0, 255), ("rect", (.08, .5, .92, .82), 0, 255)),
    "crescent": (("ellipse", (.06, .12, .94, .88), 0, 255), ("ellipse", (.3, .36, .7, .98), 0, 0)),
    "pouch": (("poly", (.3, .08, .7, .08, .76, .92, .24, .92), 0, 255), ("line", (.28, .2, .72, .2), .025, 0)),
    "monitor": (("rrect", (.24, .36, .76, .92), .06, 255), ("line", (.66, .38, .78, .05), .035, 255), ("ellipse", (.34, .48, .66, .8), 0, 0)),
    "diamond": (("poly", (.5, .04, .96, .5, .5, .96, .04, .5), 0, 255),),
    "grinder": (("rect", (.3, .42, .7, .96), 0, 255), ("poly", (.3, .42, .7, .42, .6, .12, .4, .12), 0, 255), ("line", (.5, .12, .85, .04), .035, 255)),
    "press": (("rect", (.3, .24, .68, .96), 0, 255), ("line", (.49, .04, .49, .24), .03, 255), ("ring", (.62, .4, .86, .8), .05, 255)),
    "mug": (("rrect", (.18, .24, .66, .9), .05, 255), ("ring", (.56, .36, .9, .74), .07, 255)),
    "bowl": (("chord_low", (.04, -.3, .96, .9), 0, 255),),
    "sheet": (("rect", (.04, .52, .96, .74), 0, 255), ("rect", (.08, .56, .92, .7), 0, 0)),
    "skillet": (("ellipse", (.04, .3, .6, .86), 0, 255), ("rect", (.58, .52, .98, .62), 0, 255)),
    "tongs": (("line", (.1, .92, .86, .12), .045, 255), ("line", (.2, .96, .94, .26), .045, 255)),
    "hose": (("ring", (.08, .08, .92, .92), .1, 255), ("ring", (.28, .28, .72, .72), .08, 255)),
    "shears": (("line", (.14, .14, .86, .86), .06, 255), ("line", (.86, .14, .14, .86), .06, 255), ("ellipse", (.42, .42, .58, .58), 0, 255)),
    "birdhouse": (("poly", (.5, .04, .92, .36, .08, .36), 0, 255), ("rect", (.2, .36, .8, .88), 0, 255), ("ellipse", (.42, .5, .58, .66), 0, 0)),
    "leash": (("ring", (.08, .04, .48, .36), .045, 255), ("line", (.28, .36, .84, .92), .035, 255), ("rect", (.8, .86, .92, .98), 0, 255)),
    "pet_bed": (("ellipse", (.04, .42, .96, .92), 0, 255), ("ellipse", (.2, .5, .8, .82), 0, 0), ("ellipse", (.24, .56, .76, .8), 0, 255)),
}

# Designed rates of the messy parts (share of products unless noted).
BRIDGE_RATE: Final = 0.2  # products with a second interest
ALSO_BOUGHT_CROSS_RATE: Final = 0.8  # also_bought draws that leave the source's category
ALSO_VIEWED_SAME_COLOUR_RATE: Final = 0.75  # also_viewed draws that keep the colour
BOUGHT_TOGETHER_RATE: Final = 0.6  # members of a pair's first category given a partner
NOISE_EDGE_RATE: Final = 0.07  # uniform random edges, per relation, relative to its edges
MISSING_IMAGE_RATE: Final = 0.10
MISSING_TITLE_RATE: Final = 0.02  # no "title" key
EMPTY_TITLE_RATE: Final = 0.03  # "title": ""
HTML_TITLE_RATE: Final = 0.04  # the whole title is an HTML fragment
MISSING_DESCRIPTION_RATE: Final = 0.10
HTML_DESCRIPTION_RATE: Final = 0.08  # <b>, <br> inside the description
USAGE_HINT_RATE: Final = 0.15  # descriptions with an interest's usage hint
BRAND_IN_TITLE_RATE: Final = 0.5
INTEREST_BRAND_RATE: Final = 0.5  # brands owned by the primary interest (others generic)
DUPLICATE_RATE: Final = 0.03  # products written a second time, whole or partial
DANGLING_RATE: Final = 0.01  # products listing one target that is not in the file


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`generate_demo` wrote: paths and the counts of designed features."""

    out_dir: Path
    meta_path: Path
    truth_path: Path
    truth_edges_path: Path
    image_dir: Path
    num_products: int
    num_records: int
    num_images: int
    num_edges: dict[str, int] = field(default_factory=dict)
    num_noise_edges: dict[str, int] = field(default_factory=dict)
    messiness: dict[str, int] = field(default_factory=dict)


@dataclass
class _World:
    asin: np.ndarray  # (N,) str
    category: np.ndarray  # (N,) int
    primary: np.ndarray  # (N,) int interest
    secondary: np.ndarray  # (N,) int interest or -1
    colour: np.ndarray
    pattern: np.ndarray
    size: np.ndarray
    brand: list[str]
    has_image: np.ndarray  # (N,) bool

    @property
    def num_products(self) -> int:
        return int(self.asin.size)

    def memberships(self) -> tuple[np.ndarray, np.ndarray]:
        """(product, interest) rows: every primary interest, then every secondary one."""
        bridge = np.flatnonzero(self.secondary >= 0)
        products = np.concatenate([np.arange(self.num_products), bridge])
        return products, np.concatenate([self.primary, self.secondary[bridge]])


@dataclass
class _Relation:
    src: np.ndarray
    dst: np.ndarray
    context: np.ndarray  # interest of the edge, -1 for none (also_viewed, noise)
    noise: np.ndarray  # bool


def _sample_world(num_products: int, rng: np.random.Generator) -> _World:
    num_categories = len(CATEGORY_TABLE)
    weights = np.zeros((num_categories, len(INTERESTS)))
    for c, row in enumerate(CATEGORY_TABLE):
        for name, weight in row[4].items():
            weights[c, _I[name]] = weight
    popularity = rng.dirichlet(np.full(num_categories, 20.0))
    category = rng.choice(num_categories, size=num_products, p=popularity)
    primary = _draw_rows(weights[category], rng)
    rest = weights[category].copy()
    rest[np.arange(num_products), primary] = 0.0
    secondary = np.where(rng.random(num_products) < BRIDGE_RATE, _draw_rows(rest, rng), -1)
    own_brand = rng.random(num_products) < INTEREST_BRAND_RATE
    brand_pick = rng.integers(0, 3, num_products)
    generic_pick = rng.integers(0, len(GENERIC_BRANDS), num_products)
    brand = [
        _BRANDS_BY_INTEREST[i][b] if own else GENERIC_BRANDS[g]
        for i, b, own, g in zip(primary.tolist(), brand_pick.tolist(), own_brand.tolist(), generic_pick.tolist())
    ]
    return _World(
        asin=np.char.add("D", np.char.zfill(np.arange(num_products).astype(str), 9)),
        category=category,
        primary=primary,
        secondary=secondary,
        colour=rng.integers(0, len(COLOURS), num_products),
        pattern=rng.choice(len(PATTERNS), size=num_products, p=[0.4, 0.25, 0.2, 0.15]),
        size=rng.integers(0, len(SIZES), num_products),
        brand=brand,
        has_image=rng.random(num_products) >= MISSING_IMAGE_RATE,
    )


def _draw_rows(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One column index per row of non-negative ``weights`` (R, K), by inverse CDF."""
    cdf = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    return np.minimum((rng.random((weights.shape[0], 1)) > cdf).sum(axis=1), weights.shape[1] - 1)


def _draw_in_groups(
    group: np.ndarray, members_key: np.ndarray, num_groups: int, rng: np.random.Generator
) -> np.ndarray:
    """A uniform member of ``group[d]`` for every draw d; members of group g are the indices
    i with ``members_key[i] == g``. Returns -1 where the group is empty."""
    order = np.argsort(members_key, kind="stable")
    sizes = np.bincount(members_key, minlength=num_groups)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    size = sizes[group]
    pick = starts[group] + (rng.random(group.size) * size).astype(np.int64)
    return np.where(size > 0, order[np.minimum(pick, order.size - 1)], -1)


def _resample(
    src: np.ndarray, group: np.ndarray, members: np.ndarray, members_key: np.ndarray,
    num_groups: int, reject: Any, rng: np.random.Generator, rounds: int = 8,
) -> np.ndarray:
    """Draw a member of each draw's group (as product ids), redrawing rejected ones."""
    target = np.full(src.size, -1)
    todo = np.arange(src.size)
    for _ in range(rounds):
        pick = _draw_in_groups(group[todo], members_key, num_groups, rng)
        candidate = np.where(pick >= 0, members[np.maximum(pick, 0)], -1)
        ok = (candidate >= 0) & ~reject(src[todo], candidate)
        target[todo[ok]] = candidate[ok]
        todo = todo[~ok & (pick >= 0)]
        if todo.size == 0:
            break
    return target


def _sample_relations(world: _World, rng: np.random.Generator) -> dict[str, _Relation]:
    n, num_categories = world.num_products, len(CATEGORY_TABLE)
    category = world.category
    mem_product, mem_interest = world.memberships()

    # also_bought: per (product, interest) a few draws among that interest's members,
    # most of them in another category ("people who like X also buy ...").
    degree = rng.integers(2, 8, mem_product.size)
    src = np.repeat(mem_product, degree)
    interest = np.repeat(mem_interest, degree)
    cross = rng.random(src.size) < ALSO_BOUGHT_CROSS_RATE
    dst = np.empty_like(src)
    dst[cross] = _resample(
        src[cross], interest[cross], mem_product, mem_interest, len(INTERESTS),
        lambda s, t: category[s] == category[t], rng)
    ic_key = mem_interest * num_categories + category[mem_product]
    same = ~cross
    dst[same] = _resample(
        src[same], interest[same] * num_categories + category[src[same]], mem_product, ic_key,
        len(INTERESTS) * num_categories, lambda s, t: s == t, rng)
    also_bought = (src, dst, interest)

    # also_viewed: look-alikes of the same category, mostly of the same colour.
    degree = rng.integers(2, 9, n)
    src = np.repeat(np.arange(n), degree)
    keep_colour = rng.random(src.size) < ALSO_VIEWED_SAME_COLOUR_RATE
    num_colours = len(COLOURS)
    cc_key = category * num_colours + world.colour
    group = np.where(keep_colour, cc_key[src], num_categories * num_colours + category[src])
    key = np.concatenate([cc_key, num_categories * num_colours + category])
    products = np.concatenate([np.arange(n), np.arange(n)])
    num_groups = num_categories * (num_colours + 1)
    dst = _resample(src, group, products, key, num_groups, lambda s, t: s == t, rng)
    # A colour with no other product in the category falls back to the whole category.
    alone = np.flatnonzero(dst < 0)
    dst[alone] = _resample(
        src[alone], num_categories * num_colours + category[src[alone]], products, key, num_groups,
        lambda s, t: s == t, rng)
    also_viewed = (src, dst, np.full(src.size, -1))

    # bought_together: complementary categories within a shared interest, both directions.
    pair_src, pair_dst, pair_ctx = [], [], []
    for first, second, name in COMPLEMENTARY_PAIRS:
        in_interest = mem_interest == _I[name]
        left = mem_product[in_interest & (category[mem_product] == _C[first])]
        right = mem_product[in_interest & (category[mem_product] == _C[second])]
        if left.size == 0 or right.size == 0:
            continue
        left = left[rng.random(left.size) < BOUGHT_TOGETHER_RATE]
        partner = right[rng.integers(0, right.size, left.size)]
        pair_src += [left, partner]
        pair_dst += [partner, left]
        pair_ctx.append(np.full(2 * left.size, _I[name]))
    bought_together = tuple(np.concatenate(parts) for parts in (pair_src, pair_dst, pair_ctx))

    relations = {}
    for kind, (src, dst, context) in zip(
        FIELD_OF_RELATION, (also_bought, also_viewed, bought_together)
    ):
        valid = (dst >= 0) & (src != dst)
        _, first = np.unique(src[valid].astype(np.int64) * n + dst[valid], return_index=True)
        src, dst, context = src[valid][first], dst[valid][first], context[valid][first]
        num_noise = int(round(NOISE_EDGE_RATE * src.size))
        src = np.concatenate([src, rng.integers(0, n, num_noise)])
        dst = np.concatenate([dst, rng.integers(0, n, num_noise)])
        context = np.concatenate([context, np.full(num_noise, -1)])
        noise = np.arange(src.size) >= src.size - num_noise
        # First occurrence wins, so a noise edge never replaces a designed one.
        _, first = np.unique(src.astype(np.int64) * n + dst, return_index=True)
        first = first[src[first] != dst[first]]
        # Order lists by a random strength within each source, like the real ranked lists.
        first = first[np.lexsort((rng.random(first.size), src[first]))]
        relations[kind] = _Relation(src[first], dst[first], context[first], noise[first])
    return relations


# ----------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------
def _titles_and_descriptions(
    world: _World, rng: np.random.Generator
) -> tuple[list[str | None], list[list[str]], list[list[str]], dict[str, int]]:
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
            f"This {size_words[row[6] % 3]} {noun} comes in {colour_name} "
            f"with a {pattern_words[row[7] % len(pattern_words)]} finish.",
            f"Made by {world.brand[p]}.",
        ]
        if u_hint[p] < USAGE_HINT_RATE:
            hinted = world.secondary[p] if world.secondary[p] >= 0 and row[0] % 2 else world.primary[p]
            sentences.append(_USAGE_HINTS[hinted])
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


# ----------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------
def render_image(
    category: int, colour: int, pattern: int, size: int, image_size: int, rng: np.random.Generator
) -> Image.Image:
    """Draw one product: its category's silhouette filled with its colour and pattern on a
    jittered background, at a jittered position and scale, maybe mirrored, plus pixel noise.

    Args:
        category, colour, pattern, size: indices into ``CATEGORY_TABLE``, ``COLOURS``,
            ``PATTERNS`` and ``SIZES``.
        image_size: side of the square RGB image in pixels.
        rng: the source of all jitter (the generator passes one seeded per product).
    """
    s = image_size
    mask = Image.new("L", (s, s), 0)
    draw = ImageDraw.Draw(mask)
    scale = SIZES[list(SIZES)[size]][0] * rng.uniform(0.9, 1.1) * s
    ox, oy = rng.uniform(0, s - scale, 2)

    def xy(coords: tuple[float, ...]) -> list[float]:
        return [ox + v * scale if i % 2 == 0 else oy + v * scale for i, v in enumerate(coords)]

    for kind, coords, width, fill in _SHAPES[CATEGORY_TABLE[category][3]]:
        box = xy(coords)
        stroke = max(1, int(width * scale))
        if kind == "poly":
            draw.polygon(box, fill=fill)
        elif kind == "rect":
            draw.rectangle(box, fill=fill)
        elif kind == "rrect":
            draw.rounded_rectangle(box, radius=stroke, fill=fill)
        elif kind == "ellipse":
            draw.ellipse(box, fill=fill)
        elif kind == "ring":
            draw.ellipse(box, outline=fill, width=stroke)
        elif kind == "line":
            draw.line(box, fill=fill, width=stroke)
        elif kind == "chord":
            draw.chord(box, 180, 360, fill=fill)
        else:  # "chord_low": the lower half of an ellipse
            draw.chord(box, 0, 180, fill=fill)
    shape = np.asarray(mask, dtype=bool)
    if rng.random() < 0.5:
        shape = shape[:, ::-1]

    base = np.clip(np.array(list(COLOURS.values())[colour][0]) + rng.uniform(-15, 15, 3), 0, 255)
    shade = np.clip(base * 0.55 if base.mean() > 90 else base + 90, 0, 255)
    palette = np.stack([rng.integers(200, 256, 3), base, shade]).astype(np.int16)  # bg, fill, mark
    period = max(4, int(s * rng.uniform(0.06, 0.1)))
    dy, dx = rng.integers(0, period, 2)
    y = (np.arange(s, dtype=np.int32) + dy)[:, None]
    x = (np.arange(s, dtype=np.int32) + dx)[None, :]
    pattern_name = list(PATTERNS)[pattern]
    if pattern_name == "striped":
        marked = (x + y) % period < max(1, period // 3)
    elif pattern_name == "dotted":
        half = period / 2
        marked = (x % period - half) ** 2 + (y % period - half) ** 2 <= (period / 4) ** 2
    elif pattern_name == "checked":
        marked = (x // period + y // period) % 2 == 1
    else:
        marked = np.zeros((s, s), dtype=bool)
    pixels = palette[shape * (1 + marked)] + rng.integers(-6, 7, (s, s, 3), dtype=np.int16)
    return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))


# ----------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------
@contextmanager
def _atomic(path: Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write ``path`` through a temporary file in its folder, renamed into place at the end."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, mode) as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _gzip_text(path: Path) -> Iterator[IO[str]]:
    """A text stream into ``path`` as gzip with no name and no time in its header."""
    with _atomic(path) as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
        with io.TextIOWrapper(gz, encoding="utf-8", newline="\n") as text:
            yield text


def _neighbour_lists(relation: _Relation, n: int) -> tuple[np.ndarray, np.ndarray]:
    """CSR offsets (N+1,) and targets of a relation whose edges are sorted by source."""
    offsets = np.concatenate([[0], np.cumsum(np.bincount(relation.src, minlength=n))])
    return offsets, relation.dst


def _check_arguments(num_products: int, image_size: int) -> None:
    if not MIN_PRODUCTS <= num_products <= MAX_PRODUCTS:
        raise ValueError(f"num_products={num_products} is out of range; accepted: {MIN_PRODUCTS}..{MAX_PRODUCTS}")
    if not 32 <= image_size <= 1024:
        raise ValueError(f"image_size={image_size} is out of range; accepted: 32..1024")


def generate_demo(
    out_dir: Path,
    num_products: int = 3000,
    seed: int = 0,
    images: bool = True,
    image_size: int = 224,
    show_progress: bool = False,
) -> DemoSummary:
    """Write the demo world for ``(num_products, seed)`` into ``out_dir``.

    Args:
        out_dir: the raw-data folder, usually ``datasets/demo/raw``; created if absent.
        num_products: distinct products, ``100..1_000_000``.
        seed: the world's seed; the same seed gives the same bytes.
        images: draw ``images/<asin>.jpg``. Without images the metadata is byte-identical
            (it still lists each image path), only the JPEGs are absent.
        image_size: side of the square JPEGs in pixels.
        show_progress: a tqdm bar while drawing images.
    """
    _check_arguments(num_products, image_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    world = _sample_world(num_products, rng)
    relations = _sample_relations(world, rng)
    titles, descriptions, features, messiness = _titles_and_descriptions(world, rng)
    n = num_products

    # Duplicate records land near (before or after) their original line.
    duplicated = np.flatnonzero(rng.random(n) < DUPLICATE_RATE)
    partial = rng.random(duplicated.size) < 0.5
    line_product = np.concatenate([np.arange(n), duplicated])
    line_key = np.concatenate([np.arange(n, dtype=np.float64), duplicated + rng.uniform(-30, 30, duplicated.size)])
    line_is_partial = np.concatenate([np.zeros(n, bool), partial])
    line_order = np.argsort(line_key, kind="stable")
    dangling = np.flatnonzero(rng.random(n) < DANGLING_RATE)
    dangling_field = rng.integers(0, 2, dangling.size)  # also_buy or also_view
    dangling_of = dict(zip(dangling.tolist(), dangling_field.tolist()))
    lists = {kind: _neighbour_lists(rel, n) for kind, rel in relations.items()}
    asins = world.asin.tolist()

    meta_path = out_dir / META_FILE
    with _gzip_text(meta_path) as out:
        for line in line_order.tolist():
            p = int(line_product[line])
            asin = asins[p]
            category = CATEGORY_TABLE[world.category[p]]
            related = {}
            for kind, (offsets, targets) in lists.items():
                related[FIELD_OF_RELATION[kind]] = [asins[t] for t in targets[offsets[p]:offsets[p + 1]].tolist()]
            if p in dangling_of:
                # An "X" prefix never collides with generated "D" ASINs.
                related[("also_buy", "also_view")[dangling_of[p]]].append(f"X{p:09d}")
            record: dict[str, Any] = {
                "asin": asin,
                "category": [ROOT_CATEGORY, category[0], category[1]],
                "main_cat": category[0],
                "brand": world.brand[p],
            }
            if titles[p] is not None:
                record["title"] = titles[p]
            if line_is_partial[line]:
                record["description"] = []
                record["also_buy"] = related["also_buy"][: len(related["also_buy"]) // 2]
            else:
                record.update(
                    description=descriptions[p], feature=features[p],
                    imageURL=[f"{IMAGE_DIR}/{asin}.jpg"] if world.has_image[p] else [],
                    also_buy=related["also_buy"], also_view=related["also_view"],
                )
                if related["bought_together"]:
                    record["bought_together"] = related["bought_together"]
            out.write(json.dumps(record, ensure_ascii=False) + "\n")

    num_images = 0
    if images:
        (out_dir / IMAGE_DIR).mkdir(parents=True, exist_ok=True)
        with_image = np.flatnonzero(world.has_image).tolist()
        for p in tqdm(with_image, desc="demo images", disable=not show_progress):
            image = render_image(
                int(world.category[p]), int(world.colour[p]), int(world.pattern[p]), int(world.size[p]),
                image_size, np.random.default_rng([seed, p]))
            with _atomic(out_dir / IMAGE_DIR / f"{asins[p]}.jpg") as handle:
                image.save(handle, format="JPEG", quality=90, optimize=False)
            num_images += 1
        # A previous world in the same folder may have drawn products this one does not have.
        expected = {f"{asins[p]}.jpg" for p in with_image}
        for stale in sorted((out_dir / IMAGE_DIR).glob("*.jpg")):
            if stale.name not in expected:
                stale.unlink()

    messiness.update(
        duplicate_records=int(duplicated.size),
        partial_duplicate_records=int(partial.sum()),
        missing_images=int((~world.has_image).sum()),
        dangling_targets=int(dangling.size),
    )
    truth_path, truth_edges_path = out_dir / TRUTH_FILE, out_dir / TRUTH_EDGES_FILE
    _write_truth(truth_path, world, relations, messiness, seed)
    with _gzip_text(truth_edges_path) as out:
        out.write("relation\tsrc\tdst\tcontext\n")
        for kind, rel in relations.items():
            designed = np.flatnonzero(~rel.noise & (rel.context >= 0))
            for s, d, c in zip(rel.src[designed].tolist(), rel.dst[designed].tolist(), rel.context[designed].tolist()):
                out.write(f"{kind}\t{asins[s]}\t{asins[d]}\t{INTERESTS[c]}\n")
    return DemoSummary(
        out_dir=out_dir, meta_path=meta_path, truth_path=truth_path, truth_edges_path=truth_edges_path,
        image_dir=out_dir / IMAGE_DIR, num_products=n, num_records=int(line_order.size), num_images=num_images,
        num_edges={kind: int(rel.src.size) for kind, rel in relations.items()},
        num_noise_edges={kind: int(rel.noise.sum()) for kind, rel in relations.items()},
        messiness=messiness,
    )


def _write_truth(path: Path, world: _World, relations: dict[str, _Relation], messiness: dict[str, int], seed: int) -> None:
    """truth.json, streamed one product per line so that a million products fit in memory."""
    colours, patterns, sizes = list(COLOURS), list(PATTERNS), list(SIZES)
    asins = world.asin.tolist()
    header = {
        "format_version": 1,
        "seed": seed,
        "num_products": world.num_products,
        "interests": list(INTERESTS),
        "categories": {
            row[1]: {"department": row[0], "silhouette": row[3], "interests": row[4]} for row in CATEGORY_TABLE
        },
        "complementary_pairs": [list(pair) for pair in COMPLEMENTARY_PAIRS],
        "messiness": messiness,
    }
    with _atomic(path, "w") as out:
        out.write(json.dumps(header, ensure_ascii=False)[:-1] + ',\n"products": {\n')
        for p in range(world.num_products):
            interests = [INTERESTS[world.primary[p]]]
            if world.secondary[p] >= 0:
                interests.append(INTERESTS[world.secondary[p]])
            entry = {
                "category": CATEGORY_TABLE[world.category[p]][1],
                "interests": interests,
                "colour": colours[world.colour[p]],
                "pattern": patterns[world.pattern[p]],
                "size": sizes[world.size[p]],
                "has_image": bool(world.has_image[p]),
            }
            sep = ",\n" if p + 1 < world.num_products else "\n"
            out.write(f"{json.dumps(asins[p])}: {json.dumps(entry)}{sep}")
        out.write('},\n"noise_edges": {\n')
        for index, (kind, rel) in enumerate(relations.items()):
            pairs = [[asins[s], asins[d]] for s, d in zip(rel.src[rel.noise].tolist(), rel.dst[rel.noise].tolist())]
            sep = ",\n" if index + 1 < len(relations) else "\n"
            out.write(f"{json.dumps(kind)}: {json.dumps(pairs)}{sep}")
        out.write("}}\n")


# ----------------------------------------------------------------------------------------
# Calibration: is relation-guided retrieval on this world neither trivial nor impossible?
# ----------------------------------------------------------------------------------------
def _expected_hit_at_1(pos_score: np.ndarray, neg_query: np.ndarray, neg_score: np.ndarray) -> np.ndarray:
    """Hit@1 per query under random tie-breaking, in expectation: 0 if a negative scores
    higher, else 1 / (1 + number of negatives tied with the positive)."""
    q = pos_score.size
    above = np.bincount(neg_query, weights=neg_score > pos_score[neg_query], minlength=q)
    tied = np.bincount(neg_query, weights=neg_score == pos_score[neg_query], minlength=q)
    return np.where(above == 0, 1.0 / (1.0 + tied), 0.0)


def _score_all(
    results: dict[str, float], prefix: str, src: np.ndarray, pos: np.ndarray, ctx: np.ndarray,
    neg_query: np.ndarray, neg: np.ndarray, scorers: dict[str, Any], valid: np.ndarray,
) -> None:
    """Mean expected Hit@1 over the ``valid`` queries, per scorer, into ``results``."""
    for name, score in scorers.items():
        hit = _expected_hit_at_1(
            score(src, pos, ctx), neg_query, score(src[neg_query], neg, ctx[neg_query]))
        results[f"{prefix}{name}_hit_at_1"] = float(hit[valid].mean())


def _read_demo(out_dir: Path) -> tuple[dict[str, Any], list[str], dict[str, np.ndarray], np.ndarray]:
    """truth.json; the first non-empty title per product and the observed also_bought /
    also_viewed edges as (2, E) index arrays, both read with the project's reader (dangling
    targets dropped); and the designed also_bought edges with their interest, (3, E)."""
    truth = json.loads((out_dir / TRUTH_FILE).read_text(encoding="utf-8"))
    index = {asin: i for i, asin in enumerate(truth["products"])}
    titles: list[str | None] = [None] * len(index)
    pairs: dict[str, list[tuple[int, int]]] = {"also_bought": [], "also_viewed": []}
    for product in read_products(out_dir / META_FILE, release="2018"):
        assert isinstance(product, RawProduct), product  # the generator writes no bad lines
        p = index[product.product_id]
        if titles[p] is None and product.title:
            titles[p] = product.title
        for kind, found in pairs.items():
            found += [(p, index[t]) for t in product.relations.get(kind, []) if t in index]
    edges = {name: np.unique(np.array(found, dtype=np.int64).reshape(-1, 2), axis=0).T for name, found in pairs.items()}
    interest_id = {name: i for i, name in enumerate(truth["interests"])}
    designed = []
    with gzip.open(out_dir / TRUTH_EDGES_FILE, "rt", encoding="utf-8") as rows:
        next(rows)
        for row in rows:
            kind, src, dst, context = row.rstrip("\n").split("\t")
            if kind == "also_bought":
                designed.append((index[src], index[dst], interest_id[context]))
    return truth, [t or "" for t in titles], edges, np.array(designed, dtype=np.int64).reshape(-1, 3).T


def relation_guided_retrieval_calibration(
    out_dir: Path, num_negatives: int = 20, seed: int = 0, max_queries: int = 2000
) -> dict[str, float]:
    """Hit@1 of a relation-agnostic text baseline and of an interest oracle on
    relation-guided retrieval over a generated demo world.

    A query is a designed ``also_bought`` edge ``(source, target, interest)``: find the target
    given the source and the relation "also bought by people who like <interest>".

    * ``random``: the positive and ``num_negatives`` products drawn uniformly among those not
      linked to the source by ``also_buy`` in either direction.
    * ``sensitive``: the negatives are the source's other neighbours: ``also_buy`` targets of
      a different interest and ``also_view`` targets (each query has its own count).

    Scorers: ``tfidf`` (cosine of TF-IDF title vectors, blind to the relation), ``oracle``
    (1 if the candidate carries the query's interest in ``truth.json``), ``story_oracle``
    (the interest first, then "in another category than the source", the rule by which
    ``also_buy`` was drawn), and ``chance``. Ties count as expected under random
    tie-breaking. Keys: ``queries``, ``chance``, ``<scorer>_hit_at_1``, and the same with a
    ``sensitive_`` prefix.
    """
    # Imported here: scikit-learn takes seconds to import and only calibration needs it.
    from sklearn.feature_extraction.text import TfidfVectorizer

    if num_negatives < 1:
        raise ValueError(f"num_negatives={num_negatives}; accepted: >= 1")
    out_dir = Path(out_dir)
    truth, titles, observed, designed = _read_demo(out_dir)
    n, num_interests = len(titles), len(truth["interests"])
    interest_id = {name: i for i, name in enumerate(truth["interests"])}
    has_interest = np.zeros((n, num_interests), dtype=bool)
    for p, product in enumerate(truth["products"].values()):
        has_interest[p, [interest_id[name] for name in product["interests"]]] = True
    vectors = TfidfVectorizer().fit_transform(titles)

    category_id = {name: i for i, name in enumerate(truth["categories"])}
    category = np.array([category_id[product["category"]] for product in truth["products"].values()])
    # Each scorer maps (source, candidate, interest) arrays to scores; higher ranks first.
    scorers = {
        "tfidf": lambda s, c, a: np.asarray(vectors[s].multiply(vectors[c]).sum(axis=1)).ravel(),
        "oracle": lambda s, c, a: has_interest[c, a].astype(float),
        "story_oracle": lambda s, c, a: 2.0 * has_interest[c, a] + (category[c] != category[s]),
    }

    rng = np.random.default_rng(seed)
    chosen = rng.choice(designed.shape[1], size=min(max_queries, designed.shape[1]), replace=False)
    src, pos, ctx = designed[:, np.sort(chosen)]
    q = src.size
    results: dict[str, float] = {"queries": float(q), "chance": 1.0 / (1 + num_negatives)}

    # random negatives, redrawn until none is the source or linked to it
    bought = observed["also_bought"]
    linked = np.unique(np.concatenate([bought[0] * n + bought[1], bought[1] * n + bought[0]]))
    neg_query = np.repeat(np.arange(q), num_negatives)
    neg = rng.integers(0, n, neg_query.size)
    while (bad := (neg == src[neg_query]) | np.isin(src[neg_query] * n + neg, linked)).any():
        neg[bad] = rng.integers(0, n, int(bad.sum()))
    _score_all(results, "", src, pos, ctx, neg_query, neg, scorers, np.ones(q, dtype=bool))

    # the source's own neighbours under other relations / other interests
    views = observed["also_viewed"]
    nbr_src = np.concatenate([designed[0], views[0]])
    nbr_dst = np.concatenate([designed[1], views[1]])
    nbr_ctx = np.concatenate([designed[2], np.full(views.shape[1], -1)])
    order = np.argsort(nbr_src, kind="stable")
    nbr_src, nbr_dst, nbr_ctx = nbr_src[order], nbr_dst[order], nbr_ctx[order]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(nbr_src, minlength=n))])
    degree = offsets[src + 1] - offsets[src]
    pair_query = np.repeat(np.arange(q), degree)
    pair = offsets[src][pair_query] + np.arange(pair_query.size) - np.repeat(np.cumsum(degree) - degree, degree)
    same_interest = np.unique((designed[0] * n + designed[1]) * num_interests + designed[2])
    cand = nbr_dst[pair]
    keep = (cand != pos[pair_query]) & (nbr_ctx[pair] != ctx[pair_query]) & ~np.isin(
        (src[pair_query] * n + cand) * num_interests + ctx[pair_query], same_interest)
    _, first = np.unique(pair_query[keep] * n + cand[keep], return_index=True)
    neg_query, neg = pair_query[keep][first], cand[keep][first]
    num_neg = np.bincount(neg_query, minlength=q)
    valid = num_neg > 0
    results["sensitive_queries"] = float(valid.sum())
    results["sensitive_chance"] = float((1.0 / (1 + num_neg[valid])).mean())
    _score_all(results, "sensitive_", src, pos, ctx, neg_query, neg, scorers, valid)
    return results
