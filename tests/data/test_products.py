import numpy as np

from rcml_graph.data.amazon import RawProduct, read_products
from rcml_graph.data.clean import clean_text
from rcml_graph.data.products import collect_products
from tests.data.amazon_samples import write_2014, write_2018


def test_clean_text_rules():
    assert clean_text('<span class="a-size-medium a-color-secondary"') == ("", True)
    assert clean_text("Guitar &amp; Bass") == ("Guitar & Bass", True)
    assert clean_text("A  <b>bold</b>\n\tclaim") == ("A bold claim", True)
    assert clean_text("ｆｕｌｌ width") == ("full width", False)  # NFKC
    assert clean_text("&lt;i&gt;x&lt;/i&gt;") == ("x", True)


def test_2018_cleaning_is_counted(tmp_path):
    table = collect_products(read_products(write_2018(tmp_path / "m.json.gz")))
    report = table.report
    assert table.product_id == ["B1", "B2", "B3"]  # B4 has no usable text: dropped
    assert report["duplicate_records_merged"] == 1
    assert report["products_without_usable_text"] == 1
    assert report["products_dropped_no_text"] == 1
    # B1's title is only markup: falls back to the (richest, merged) description's first sentence.
    assert table.title[0] == "Reason magazine."
    assert table.description[0].endswith("A longer description.")
    assert table.image_urls[0] == ["http://example.com/b1.jpg", "http://example.com/b1b.jpg"]
    assert table.title[1] == "Guitar & Bass"
    assert table.title[2] == "Daily News"  # brand + leaf category
    assert report["title_fallback_description"] == 1
    assert report["title_fallback_brand_category"] == 1
    also_bought = report["relations"]["also_bought"]
    # B1 lists B2, B3, OUT1 then (duplicate record) B3 again; B2 lists B1.
    assert also_bought["listed"] == 5
    assert also_bought["dangling_targets_dropped"] == 1
    assert also_bought["duplicate_edges_merged"] == 1
    assert also_bought["kept"] == 3
    np.testing.assert_array_equal(table.edges["also_bought"], [[0, 0, 1], [1, 2, 0]])
    also_viewed = report["relations"]["also_viewed"]
    assert also_viewed["self_loops_dropped"] == 1  # B2 -> B2


def test_2014_self_loop_and_malformed(tmp_path):
    table = collect_products(read_products(write_2014(tmp_path / "m.json.gz")))
    assert table.report["malformed_lines"] == 1
    assert table.report["malformed_line_numbers"] == [4]
    assert table.report["relations"]["buy_after_viewing"]["self_loops_dropped"] == 1
    assert "buy_after_viewing" not in table.edges or table.edges["buy_after_viewing"].shape[1] == 0
    assert table.description[0] == "A light two person tent."


def test_clean_text_fast_path_matches_the_general_rules():
    # Printable ASCII skips NFKC and the control-character table; the rest does not.
    assert clean_text("  plain   ascii\ttitle \n") == ("plain ascii title", False)
    assert clean_text("bell\x07 and\x00null") == ("bell andnull", False)  # controls removed
    assert clean_text("no\u00a0break\u2003em") == ("no break em", False)  # NFKC spaces
    assert clean_text("ﬁne\u2028line") == ("fine line", False)  # ligature, line separator
    assert clean_text("") == ("", False)


def test_asin_and_other_ids_resolve_to_the_same_products():
    # ASIN-shaped ids (10 of [0-9A-Z]) take a numeric fast path, other ids a dictionary; a
    # target must find its product either way, and only an exact (stripped) id matches.
    items = [
        RawProduct("B000000001", title="one", relations={
            "also_bought": ["B000000002", "item-3", "B000000009"],  # last one: dangling
            "also_viewed": [" B000000002 ", "b000000002", "item-3"],  # padded; lowercase
        }),
        RawProduct("B000000002", title="two", relations={"also_bought": ["B000000001", "B000000001"]}),
        RawProduct("item-3", title="three", relations={"also_bought": ["B000000002\nB000000001"]}),
    ]
    table = collect_products(items)
    assert table.product_id == ["B000000001", "B000000002", "item-3"]
    np.testing.assert_array_equal(table.edges["also_bought"], [[0, 0, 1], [1, 2, 0]])
    np.testing.assert_array_equal(table.edges["also_viewed"], [[0, 0], [1, 2]])
    bought = table.report["relations"]["also_bought"]
    # Dangling: "B000000009" and the one target with a newline inside.
    assert bought["dangling_targets_dropped"] == 2 and bought["distinct_dangling_targets"] == 2
    assert bought["duplicate_edges_merged"] == 1
    viewed = table.report["relations"]["also_viewed"]
    assert viewed["dangling_targets_dropped"] == 1  # "b000000002" is not "B000000002"
