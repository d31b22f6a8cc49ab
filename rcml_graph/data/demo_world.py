"""The demo world's tables (categories, interests, looks) and the image renderer.

See ``rcml_graph.data.demo`` for the generator and ``datasets/README.md`` for the story.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image, ImageDraw

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
INTEREST_INDEX = {name: index for index, name in enumerate(INTERESTS)}

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
CATEGORY_INDEX = {row[1]: index for index, row in enumerate(CATEGORY_TABLE)}

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
BRANDS_BY_INTEREST: Final[tuple[tuple[str, ...], ...]] = (
    ("Trailcraft", "Pinecrest", "Northfire"), ("Ridgeway", "Summitline", "Switchback"),
    ("Rivermark", "Castwell", "Deepwater"), ("Little Sprout", "Milkway", "Nurtura"),
    ("Dreamnest", "Hushaby", "Moonlamb"), ("Bean & Burr", "Morning Grind", "Crema Co"),
    ("Flourish", "Proofwell", "Crumbworks"), ("Emberline", "Smokehaus", "Charwell"),
    ("Greenthumb", "Rootstock", "Bloomfield"), ("Featherview", "Wingspan", "Songbird"),
    ("Ironcore", "Flexform", "Reprise"), ("Pawtrail", "Goodboy", "Barkley"),
)
GENERIC_BRANDS: Final[tuple[str, ...]] = ("Basics Plus", "Homely", "Everyday", "Vantex", "Nordica", "Generic")
USAGE_HINTS: Final[tuple[str, ...]] = (
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
