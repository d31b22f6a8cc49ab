import pytest

from rcml_graph.data.amazon import MalformedLine, RawProduct, read_products
from tests.data.amazon_samples import write_2014, write_2018, write_2023


def test_2014_python_literal_lines(tmp_path):
    items = list(read_products(write_2014(tmp_path / "meta_2014.json.gz")))
    products = [i for i in items if isinstance(i, RawProduct)]
    malformed = [i for i in items if isinstance(i, MalformedLine)]
    assert [p.product_id for p in products] == ["A1", "A2", "A3"]
    assert [m.line_number for m in malformed] == [4]
    a1 = products[0]
    assert a1.category_path == ["Sports", "Camping", "Tents"]  # the longest path
    assert a1.image_urls == ["http://example.com/a1.jpg"]
    assert a1.relations == {
        "also_bought": ["A2", "A3", "ZZ"],
        "also_viewed": ["A3"],
        "bought_together": ["A2"],
        "buy_after_viewing": ["A1"],
    }


def test_2014_never_evaluates_code(tmp_path):
    path = tmp_path / "evil.json"
    path.write_text("__import__('os').system('touch pwned')\n{'asin': 'X1', 'title': 'ok'}\n")
    items = list(read_products(path))
    assert isinstance(items[0], MalformedLine)
    assert items[1].product_id == "X1"
    assert not (tmp_path / "pwned").exists()


def test_2018_json_lines_plain_and_gz(tmp_path):
    for gz in (True, False):
        path = write_2018(tmp_path / f"meta.json{'.gz' if gz else ''}", gz=gz)
        products = list(read_products(path))
        assert [p.product_id for p in products] == ["B1", "B2", "B1", "B3", "B4"]
        assert products[0].relations == {"also_bought": ["B2", "B3", "OUT1"], "also_viewed": ["B2"]}
        assert products[0].category_path == ["Magazine Subscriptions", "News"]


def test_2023_json_lines(tmp_path):
    products = list(read_products(write_2023(tmp_path / "meta.jsonl")))
    c1 = products[0]
    assert c1.product_id == "C1"
    assert c1.category_path == ["Baby", "Feeding", "Bottles"]
    assert c1.brand == "BabyCo"
    assert c1.image_urls == ["http://example.com/c1.jpg"]
    assert c1.relations == {"bought_together": ["C2"]}
    assert "BPA free" in c1.features


def test_unknown_release_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match="unknown release '2020'"):
        list(read_products(write_2023(tmp_path / "m.jsonl"), release="2020"))
    with pytest.raises(FileNotFoundError, match="nope.json.gz"):
        list(read_products(tmp_path / "nope.json.gz"))


def test_2018_lists_with_non_string_items_keep_only_strings():
    from rcml_graph.data.amazon import normalise_2018

    product = normalise_2018({
        "asin": "B1", "description": ["first", "", 5, None, "last"], "feature": ["a", 3, ""],
        "also_buy": ["B2", 7, None, "", "B3"], "also_view": [], "category": "Books",
    })
    assert product.description == "first 5 last"
    assert product.features == ["a"]
    assert product.relations == {"also_bought": ["B2", "B3"]}
    assert product.category_path == ["Books"]
