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
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from rcml_graph.data.demo_world import (  # noqa: F401  (re-exported: the world tables)
    ALSO_BOUGHT_CROSS_RATE,
    ALSO_VIEWED_SAME_COLOUR_RATE,
    BOUGHT_TOGETHER_RATE,
    BRANDS_BY_INTEREST,
    BRAND_IN_TITLE_RATE,
    BRIDGE_RATE,
    CATEGORY_INDEX,
    CATEGORY_TABLE,
    COLOURS,
    COMPLEMENTARY_PAIRS,
    DANGLING_RATE,
    DUPLICATE_RATE,
    EMPTY_TITLE_RATE,
    FIELD_OF_RELATION,
    GENERIC_BRANDS,
    HTML_DESCRIPTION_RATE,
    HTML_TITLE,
    HTML_TITLE_RATE,
    IMAGE_DIR,
    INTERESTS,
    INTEREST_BRAND_RATE,
    INTEREST_INDEX,
    MAX_PRODUCTS,
    META_FILE,
    MIN_PRODUCTS,
    MISSING_DESCRIPTION_RATE,
    MISSING_IMAGE_RATE,
    MISSING_TITLE_RATE,
    NOISE_EDGE_RATE,
    PATTERNS,
    ROOT_CATEGORY,
    SIZES,
    TRUTH_EDGES_FILE,
    TRUTH_FILE,
    USAGE_HINTS,
    USAGE_HINT_RATE,
    render_image,
)
from rcml_graph.data.demo_calibration import relation_guided_retrieval_calibration  # noqa: F401
from rcml_graph.data.demo_text import titles_and_descriptions

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
            weights[c, INTEREST_INDEX[name]] = weight
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
        BRANDS_BY_INTEREST[i][b] if own else GENERIC_BRANDS[g]
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
        in_interest = mem_interest == INTEREST_INDEX[name]
        left = mem_product[in_interest & (category[mem_product] == CATEGORY_INDEX[first])]
        right = mem_product[in_interest & (category[mem_product] == CATEGORY_INDEX[second])]
        if left.size == 0 or right.size == 0:
            continue
        left = left[rng.random(left.size) < BOUGHT_TOGETHER_RATE]
        partner = right[rng.integers(0, right.size, left.size)]
        pair_src += [left, partner]
        pair_dst += [partner, left]
        pair_ctx.append(np.full(2 * left.size, INTEREST_INDEX[name]))
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
    titles, descriptions, features, messiness = titles_and_descriptions(world, rng)
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
