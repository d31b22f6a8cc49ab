"""Small metadata files in each release's format, written by the tests."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

LINES_2014 = [
    "{'asin': 'A1', 'title': 'Trail Tent 2P', 'description': 'A light <b>two person</b> tent.', "
    "'imUrl': 'http://example.com/a1.jpg', 'categories': [['Sports', 'Camping'], ['Sports', 'Camping', 'Tents']], "
    "'brand': 'Acme', 'salesRank': {'Sports': 10}, "
    "'related': {'also_bought': ['A2', 'A3', 'ZZ'], 'also_viewed': ['A3'], 'bought_together': ['A2'], 'buy_after_viewing': ['A1']}}",
    "{'asin': 'A2', 'title': 'Camp Stove', 'categories': [['Sports', 'Camping', 'Stoves']], "
    "'related': {'also_bought': ['A1']}}",
    "{'asin': 'A3', 'title': 'Sleeping Bag', 'categories': [['Sports', 'Camping', 'Sleeping Bags']]}",
    "this is not a record",
]

LINES_2018 = [
    {"asin": "B1", "title": '<span class="a-size-medium a-color-secondary"', "description": ["Reason magazine. Politics and culture."],
     "category": ["Magazine Subscriptions", "News"], "brand": "Reason", "image": ["http://example.com/b1.jpg"],
     "also_buy": ["B2", "B3", "OUT1"], "also_view": ["B2"]},
    {"asin": "B2", "title": "Guitar &amp; Bass", "description": [], "category": ["Magazine Subscriptions", "Music"],
     "also_buy": ["B1"], "also_view": ["B1", "B2"]},
    {"asin": "B1", "title": "", "description": ["Reason magazine. Politics and culture. A longer description."],
     "also_buy": ["B3"], "image": ["http://example.com/b1b.jpg"]},
    {"asin": "B3", "title": "", "description": [], "category": ["Magazine Subscriptions", "News"], "brand": "Daily"},
    {"asin": "B4", "title": "", "description": [], "category": [], "brand": ""},
]

LINES_2023 = [
    {"parent_asin": "C1", "title": "Baby Bottle", "main_category": "Baby", "categories": ["Feeding", "Bottles"],
     "store": "BabyCo", "images": [{"thumb": "t1", "large": "http://example.com/c1.jpg", "hi_res": None, "variant": "MAIN"}],
     "description": ["Anti-colic bottle."], "features": ["BPA free"], "bought_together": ["C2"]},
    {"parent_asin": "C2", "title": "Bottle Sterilizer", "main_category": "Baby", "categories": ["Feeding", "Sterilizers"],
     "images": [], "description": [], "bought_together": ["C1"]},
]


def write_2014(path: Path) -> Path:
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(LINES_2014) + "\n")
    return path


def write_2018(path: Path, gz: bool = True) -> Path:
    text = "\n".join(json.dumps(r) for r in LINES_2018) + "\n"
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text)
    return path


def write_2023(path: Path) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in LINES_2023) + "\n")
    return path
