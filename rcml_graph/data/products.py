"""One streaming pass from raw records to a de-duplicated, cleaned product table.

Every repair and drop is counted in ``ProductTable.report``; nothing here is fatal.
"""

from __future__ import annotations

import re
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import count, repeat

import numpy as np

from rcml_graph.data.amazon import MalformedLine, RawProduct
from rcml_graph.data.clean import clean_text, first_sentence
from rcml_graph.data.stats import sorted_unique
from rcml_graph.relations import RELATION_KINDS

MAX_REPORTED_LINES = 10
_ASIN = re.compile(r"[0-9A-Z]{10}")
_ASIN_LINES = re.compile(r"[0-9A-Z]{10}(?:\n[0-9A-Z]{10})*")
_BASE_36 = repeat(36)
_MAX_CACHED = 1 << 16  # distinct category paths / brands whose clean form is remembered


@dataclass
class ProductTable:
    """Clean products aligned by row, and their product-product relations.

    ``edges[kind]`` is an ``int64`` array of shape ``(2, E)`` of row indices: de-duplicated,
    without self-loops and without targets outside the table.
    """

    product_id: list[str]
    title: list[str]
    description: list[str]
    category_path: list[tuple[str, ...]]
    brand: list[str]
    image_urls: list[list[str]]
    edges: dict[str, np.ndarray]
    report: dict[str, object] = field(default_factory=dict)

    @property
    def num_products(self) -> int:
        return len(self.product_id)


class _Collector:
    def __init__(self, max_text_chars: int) -> None:
        self.max_text_chars = max_text_chars
        # Every id seen, products and relation targets, gets an int64 key: an ASIN (10 of
        # [0-9A-Z]) its base-36 value (>= 0); any other id -1 - its first-seen number here. A
        # missing id numbers itself (``count().__next__`` in C).
        self.key_of: defaultdict[str, int] = defaultdict(count().__next__)
        self.row_of: dict[str, int] = {}  # asin -> row, products only
        self.product_key = array("q")
        self.title: list[str] = []
        self.description: list[str] = []
        self.category: list[tuple[str, ...]] = []
        self.brand: list[str] = []
        self.images: list[list[str]] = []
        self.ids: list[str] = []
        self.src = {kind: array("q") for kind in RELATION_KINDS}  # row of the listing product
        self.dst = {kind: array("q") for kind in RELATION_KINDS}  # key of the listed target
        self.counts: Counter[str] = Counter()
        self.clean_category: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.clean_brand: dict[str, str] = {}
        self.malformed_lines: list[int] = []
        self.malformed_reasons: Counter[str] = Counter()

    def key(self, product_id: str) -> int:
        """The int64 key of a stripped product id."""
        if _ASIN.fullmatch(product_id):
            return int(product_id, 36)
        return -1 - self.key_of[product_id]

    def target_keys(self, targets: list[str]) -> Iterable[int]:
        # A whole list of ASINs (the common case) converts in C, without a Python-level loop.
        joined = "\n".join(targets)
        # The length check rules out a target with a newline of its own.
        if len(joined) == 11 * len(targets) - 1 and _ASIN_LINES.fullmatch(joined):
            return map(int, targets, _BASE_36)
        return map(self.key, map(str.strip, targets))

    def add(self, item: RawProduct | MalformedLine) -> None:
        self.counts["lines"] += 1
        if isinstance(item, MalformedLine) or not item.product_id.strip():
            reason = item.reason if isinstance(item, MalformedLine) else "empty product id"
            line = item.line_number if isinstance(item, MalformedLine) else self.counts["lines"]
            self.counts["malformed_lines"] += 1
            self.malformed_reasons[reason.split(":")[0]] += 1
            if len(self.malformed_lines) < MAX_REPORTED_LINES:
                self.malformed_lines.append(line)
            return
        asin = item.product_id.strip()
        title, title_html = clean_text(item.title)
        description, description_html = clean_text(
            " ".join([item.description, *item.features]).strip()
        )
        self.counts["titles_html_stripped"] += title_html
        self.counts["descriptions_html_stripped"] += description_html
        description = description[: self.max_text_chars]
        # Category paths and brands repeat across products: clean each distinct one once.
        raw_category = tuple(item.category_path)
        category = self.clean_category.get(raw_category)
        if category is None:
            category = tuple(c for c in (clean_text(c)[0] for c in raw_category) if c)
            if len(self.clean_category) < _MAX_CACHED:
                self.clean_category[raw_category] = category
        brand = self.clean_brand.get(item.brand)
        if brand is None:
            brand = clean_text(item.brand)[0]
            if len(self.clean_brand) < _MAX_CACHED:
                self.clean_brand[item.brand] = brand

        row = self.row_of.get(asin)
        if row is None:
            row = self.row_of[asin] = len(self.ids)
            self.ids.append(asin)
            self.product_key.append(self.key(asin))
            self.title.append(title)
            self.description.append(description)
            self.category.append(category)
            self.brand.append(brand)
            self.images.append(list(dict.fromkeys(item.image_urls)))
        else:
            # Duplicate id: keep the richest text, union images and relations.
            self.counts["duplicate_records_merged"] += 1
            if len(title) > len(self.title[row]):
                self.title[row] = title
            if len(description) > len(self.description[row]):
                self.description[row] = description
            if len(category) > len(self.category[row]):
                self.category[row] = category
            if not self.brand[row]:
                self.brand[row] = brand
            self.images[row] = list(dict.fromkeys([*self.images[row], *item.image_urls]))
        for kind, targets in item.relations.items():
            self.src[kind].extend([row] * len(targets))
            self.dst[kind].extend(self.target_keys(targets))

    def _row_lookup(self, kept_row: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        """A vectorised map from keys to kept rows (-1: not a kept product)."""
        product_key = np.frombuffer(self.product_key, dtype=np.int64)
        is_code = product_key >= 0
        code_order = np.argsort(product_key[is_code], kind="stable")
        sorted_code = product_key[is_code][code_order]
        row_of_code = kept_row[is_code][code_order]
        row_of_number = np.full(len(self.key_of), -1, dtype=np.int64)
        row_of_number[-1 - product_key[~is_code]] = kept_row[~is_code]

        def row_of_key(keys: np.ndarray) -> np.ndarray:
            rows = np.full(keys.shape, -1, dtype=np.int64)
            code = keys >= 0
            if sorted_code.size:
                position = np.searchsorted(sorted_code, keys[code])
                np.minimum(position, sorted_code.size - 1, out=position)
                found = sorted_code[position] == keys[code]
                rows[code] = np.where(found, row_of_code[position], -1)
            rows[~code] = row_of_number[-1 - keys[~code]]
            return rows

        return row_of_key

    def finish(self, drop_no_text: bool) -> ProductTable:
        counts = self.counts
        num_raw = len(self.ids)
        keep = np.ones(num_raw, dtype=bool)
        for row in [row for row, title in enumerate(self.title) if not title]:
            if self.description[row]:
                self.title[row] = first_sentence(self.description[row])
                counts["title_fallback_description"] += 1
            elif self.brand[row] or self.category[row]:
                leaf = self.category[row][-1] if self.category[row] else ""
                self.title[row] = " ".join(p for p in (self.brand[row], leaf) if p)
                counts["title_fallback_brand_category"] += 1
            else:
                counts["products_without_usable_text"] += 1
                keep[row] = not drop_no_text
        if drop_no_text:
            counts["products_dropped_no_text"] = int((~keep).sum())

        kept_row = np.where(keep, np.cumsum(keep) - 1, -1)
        row_of_key = self._row_lookup(kept_row)

        num_products = int(keep.sum())
        edges: dict[str, np.ndarray] = {}
        relation_counts: dict[str, dict[str, int]] = {}
        for kind in RELATION_KINDS:
            src_row = np.frombuffer(self.src[kind], dtype=np.int64)
            dst_key = np.frombuffer(self.dst[kind], dtype=np.int64)
            if src_row.size == 0:
                continue
            src, dst = kept_row[src_row], row_of_key(dst_key)
            dangling = dst < 0
            from_dropped = (src < 0) & ~dangling
            self_loop = (src == dst) & (src >= 0)
            valid = (src >= 0) & (dst >= 0) & ~self_loop
            pair_key = sorted_unique(src[valid] * num_products + dst[valid])
            edges[kind] = np.stack([pair_key // num_products, pair_key % num_products])
            relation_counts[kind] = {
                "listed": int(src_row.size),
                "dangling_targets_dropped": int(dangling.sum()),
                "distinct_dangling_targets": int(sorted_unique(dst_key[dangling]).size),
                "edges_of_dropped_products": int(from_dropped.sum()),
                "self_loops_dropped": int(self_loop.sum()),
                "duplicate_edges_merged": int(valid.sum() - pair_key.size),
                "kept": int(pair_key.size),
            }
        keep_rows = None if keep.all() else np.flatnonzero(keep).tolist()

        def kept(column: list) -> list:
            return column if keep_rows is None else [column[r] for r in keep_rows]

        report = {
            "lines": counts["lines"],
            "malformed_lines": counts["malformed_lines"],
            "malformed_line_numbers": self.malformed_lines,
            "malformed_reasons": dict(self.malformed_reasons),
            "distinct_products": num_raw,
            "products": num_products,
            "duplicate_records_merged": counts["duplicate_records_merged"],
            "titles_html_stripped": counts["titles_html_stripped"],
            "descriptions_html_stripped": counts["descriptions_html_stripped"],
            "title_fallback_description": counts["title_fallback_description"],
            "title_fallback_brand_category": counts["title_fallback_brand_category"],
            "products_without_usable_text": counts["products_without_usable_text"],
            "products_dropped_no_text": counts.get("products_dropped_no_text", 0),
            "products_with_image_urls": sum(map(bool, kept(self.images))),
            "relations": relation_counts,
        }
        return ProductTable(
            product_id=kept(self.ids),
            title=kept(self.title),
            description=kept(self.description),
            category_path=kept(self.category),
            brand=kept(self.brand),
            image_urls=kept(self.images),
            edges=edges,
            report=report,
        )


def collect_products(
    items: Iterable[RawProduct | MalformedLine],
    *,
    max_text_chars: int = 2000,
    drop_no_text: bool = True,
) -> ProductTable:
    """Clean, de-duplicate and index products in one pass over ``items``.

    Args:
        items: records from :func:`rcml_graph.data.amazon.read_products` (or hand-built).
        max_text_chars: descriptions are cut to this many characters.
        drop_no_text: drop products with no title, description, brand or category.
    """
    collector = _Collector(max_text_chars)
    for item in items:
        collector.add(item)
    return collector.finish(drop_no_text)
