"""Streaming readers for the 2014, 2018 and 2023 releases of the Amazon product metadata.

Each reader yields one normalised :class:`RawProduct` per line in a single pass with bounded
memory. The release is detected per file from its first parseable line; ``.gz`` or plain text.
Malformed lines are yielded as :class:`MalformedLine` so the caller can count them.
"""

from __future__ import annotations

import ast
import gzip
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any

from rcml_graph.relations import RAW_RELATION_FIELDS, RELATION_KINDS

try:  # orjson parses the 2018/2023 JSON lines several times faster; json is the fallback.
    import orjson

    _json_loads = orjson.loads
    _JSON_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError, ValueError)
except ImportError:  # pragma: no cover - orjson is a declared dependency
    _json_loads = json.loads
    _JSON_ERRORS = (ValueError,)

RELEASES = ("2014", "2018", "2023")
# ``map(isinstance, values, _STR)`` checks a whole list in C, without a Python-level loop.
_STR = repeat(str)


@dataclass
class RawProduct:
    """One product as read from any release, before cleaning."""

    product_id: str
    title: str = ""
    description: str = ""
    features: list[str] = field(default_factory=list)
    category_path: list[str] = field(default_factory=list)
    brand: str = ""
    image_urls: list[str] = field(default_factory=list)
    relations: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class MalformedLine:
    line_number: int
    reason: str


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a plain or gzip-compressed text file (detected by magic bytes, not by name)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metadata file not found: {path}")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(2)
    except OSError as exc:
        raise OSError(f"cannot read metadata file {path}: {exc}") from exc
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        if all(map(isinstance, value, _STR)):
            return " ".join(filter(None, value))
        return " ".join(_as_text(v) for v in value if v)
    return str(value)


def _as_str_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, (list, tuple)):
        if all(map(isinstance, value, _STR)):
            return list(filter(None, value))
        return [v for v in value if isinstance(v, str) and v]
    return []


def _relations(obj: dict[str, Any]) -> dict[str, list[str]]:
    relations: dict[str, list[str]] = {}
    for raw_name, kind in RAW_RELATION_FIELDS.items():
        value = obj.get(raw_name)
        if not value:
            continue
        targets = _as_str_list(value)
        if targets:
            if kind in relations:
                relations[kind].extend(targets)
            else:
                relations[kind] = targets
    return relations


def normalise_2014(obj: dict[str, Any]) -> RawProduct:
    categories = obj.get("categories") or []
    # 2014 lists several category paths; the longest is the most specific.
    path = max((p for p in categories if isinstance(p, list)), key=len, default=[])
    related = obj.get("related") or {}
    return RawProduct(
        product_id=str(obj["asin"]),
        title=_as_text(obj.get("title")),
        description=_as_text(obj.get("description")),
        category_path=_as_str_list(path),
        brand=_as_text(obj.get("brand")),
        image_urls=_as_str_list(obj.get("imUrl")),
        relations=_relations(related if isinstance(related, dict) else {}),
    )


def normalise_2018(obj: dict[str, Any]) -> RawProduct:
    images = _as_str_list(obj.get("imageURLHighRes")) or _as_str_list(obj.get("imageURL"))
    images = images or _as_str_list(obj.get("image"))
    category = _as_str_list(obj.get("category"))
    if not category and obj.get("main_cat"):
        category = [_as_text(obj.get("main_cat"))]
    return RawProduct(
        product_id=str(obj["asin"]),
        title=_as_text(obj.get("title")),
        description=_as_text(obj.get("description")),
        features=_as_str_list(obj.get("feature")),
        category_path=category,
        brand=_as_text(obj.get("brand")),
        image_urls=images,
        relations=_relations(obj),
    )


def normalise_2023(obj: dict[str, Any]) -> RawProduct:
    images: list[str] = []
    for image in obj.get("images") or []:
        if isinstance(image, dict):
            url = image.get("hi_res") or image.get("large") or image.get("thumb")
            if isinstance(url, str) and url:
                images.append(url)
    category = _as_str_list(obj.get("categories"))
    main = _as_text(obj.get("main_category"))
    if main and (not category or category[0] != main):
        category = [main, *category]
    relations = {}
    together = _as_str_list(obj.get("bought_together"))
    if together:
        relations["bought_together"] = together
    return RawProduct(
        product_id=str(obj.get("parent_asin") or obj["asin"]),
        title=_as_text(obj.get("title")),
        description=_as_text(obj.get("description")),
        features=_as_str_list(obj.get("features")),
        category_path=category,
        brand=_as_text(obj.get("store")) or _as_text((obj.get("details") or {}).get("Brand")),
        image_urls=images,
        relations=relations,
    )


_NORMALISERS = {"2014": normalise_2014, "2018": normalise_2018, "2023": normalise_2023}


def _parse_line(line: str) -> dict[str, Any] | None:
    """JSON first (2018/2023); a Python literal second (2014). Never ``eval``."""
    try:
        obj = _json_loads(line)
    except _JSON_ERRORS:
        try:
            obj = ast.literal_eval(line)
        except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
            return None
    return obj if isinstance(obj, dict) else None


def detect_release(obj: dict[str, Any]) -> str:
    """Which release a parsed metadata object comes from."""
    if "parent_asin" in obj or "main_category" in obj or "images" in obj and "asin" not in obj:
        return "2023"
    if "related" in obj or "imUrl" in obj or "categories" in obj or "salesRank" in obj:
        return "2014"
    return "2018"


def read_products(path: str | Path, release: str = "auto") -> Iterator[RawProduct | MalformedLine]:
    """Stream the products of one metadata file.

    Args:
        path: a ``.json``/``.jsonl`` file, gzip-compressed or plain, of any release.
        release: ``"auto"`` (detect from the first parseable line) or one of ``RELEASES``.
    """
    if release != "auto" and release not in RELEASES:
        raise ValueError(f"unknown release {release!r}; accepted: auto, {', '.join(RELEASES)}")
    normalise = None if release == "auto" else _NORMALISERS[release]
    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            obj = _parse_line(line)
            if obj is None:
                yield MalformedLine(line_number, "unparseable line")
                continue
            if normalise is None:
                normalise = _NORMALISERS[detect_release(obj)]
            try:
                yield normalise(obj)
            except (KeyError, TypeError, AttributeError) as exc:
                yield MalformedLine(line_number, f"missing or invalid field: {exc}")


__all__ = [
    "RELEASES",
    "RELATION_KINDS",
    "MalformedLine",
    "RawProduct",
    "detect_release",
    "open_text",
    "read_products",
]
