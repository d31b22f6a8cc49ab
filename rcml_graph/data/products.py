"""One streaming pass from raw records to a de-duplicated, cleaned product table.

Every repair and drop is counted in ``ProductTable.report``; nothing here is fatal.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from rcml_graph.data.amazon import MalformedLine, RawProduct
from rcml_graph.data.clean import clean_text, first_sentence
from rcml_graph.relations import RELATION_KINDS

MAX_REPORTED_LINES = 10


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
        self.key_of: dict[str, int] = {}  # every asin seen, products and relation targets
        self.row_of: dict[str, int] = {}  # asin -> row, products only
        self.title: list[str] = []
        self.description: list[str] = []
        self.category: list[tuple[str, ...]] = []
        self.brand: list[str] = []
        self.images: list[list[str]] = []
        self.ids: list[str] = []
        self.src = {kind: array("q") for kind in RELATION_KINDS}
        self.dst = {kind: array("q") for kind in RELATION_KINDS}
        self.counts: Counter[str] = Counter()
        self.malformed_lines: list[int] = []
        self.malformed_reasons: Counter[str] = Counter()

    def intern(self, asin: str) -> int:
        key = self.key_of.get(asin)
        if key is None:
            key = self.key_of[asin] = len(self.key_of)
        return key

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
        category = tuple(c for c in (clean_text(c)[0] for c in item.category_path) if c)
        brand = clean_text(item.brand)[0]

        row = self.row_of.get(asin)
        if row is None:
            row = self.row_of[asin] = len(self.ids)
            self.ids.append(asin)
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
        key = self.intern(asin)
        for kind, targets in item.relations.items():
            self.src[kind].extend([key] * len(targets))
            self.dst[kind].extend(self.intern(t.strip()) for t in targets)

    def finish(self, drop_no_text: bool) -> ProductTable:
        counts = self.counts
        num_raw = len(self.ids)
        keep = np.ones(num_raw, dtype=bool)
        for row in range(num_raw):
            if self.title[row]:
                continue
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

        # Map every interned key to its final row (-1: not a kept product).
        row_of_key = np.full(len(self.key_of), -1, dtype=np.int64)
        new_row = np.cumsum(keep) - 1
        product_keys = np.fromiter((self.key_of[a] for a in self.ids), np.int64, num_raw)
        row_of_key[product_keys[keep]] = new_row[keep]

        num_products = int(keep.sum())
        edges: dict[str, np.ndarray] = {}
        relation_counts: dict[str, dict[str, int]] = {}
        for kind in RELATION_KINDS:
            src_key = np.frombuffer(self.src[kind], dtype=np.int64)
            dst_key = np.frombuffer(self.dst[kind], dtype=np.int64)
            if src_key.size == 0:
                continue
            src, dst = row_of_key[src_key], row_of_key[dst_key]
            dangling = dst < 0
            from_dropped = (src < 0) & ~dangling
            self_loop = (src == dst) & (src >= 0)
            valid = (src >= 0) & (dst >= 0) & ~self_loop
            pair_key = np.unique(src[valid] * num_products + dst[valid])
            edges[kind] = np.stack([pair_key // num_products, pair_key % num_products])
            relation_counts[kind] = {
                "listed": int(src_key.size),
                "dangling_targets_dropped": int(dangling.sum()),
                "distinct_dangling_targets": int(np.unique(dst_key[dangling]).size),
                "edges_of_dropped_products": int(from_dropped.sum()),
                "self_loops_dropped": int(self_loop.sum()),
                "duplicate_edges_merged": int(valid.sum() - pair_key.size),
                "kept": int(pair_key.size),
            }
        keep_rows = np.flatnonzero(keep).tolist()
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
            "products_with_image_urls": sum(1 for r in keep_rows if self.images[r]),
            "relations": relation_counts,
        }
        return ProductTable(
            product_id=[self.ids[r] for r in keep_rows],
            title=[self.title[r] for r in keep_rows],
            description=[self.description[r] for r in keep_rows],
            category_path=[self.category[r] for r in keep_rows],
            brand=[self.brand[r] for r in keep_rows],
            image_urls=[self.images[r] for r in keep_rows],
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
