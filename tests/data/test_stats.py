import numpy as np

from rcml_graph.data.stats import count_distinct, relation_stats, sorted_unique, sorted_unique_counts


def test_sorted_unique_helpers():
    values = np.array([5, 3, 5, 9, 3, 3, 0], dtype=np.int64)
    np.testing.assert_array_equal(sorted_unique(values), [0, 3, 5, 9])
    keys, counts = sorted_unique_counts(values)
    np.testing.assert_array_equal(keys, [0, 3, 5, 9])
    np.testing.assert_array_equal(counts, [1, 3, 2, 1])
    assert count_distinct(values, upper=10) == 4
    assert sorted_unique(np.zeros(0, dtype=np.int64)).size == 0
    assert sorted_unique_counts(np.zeros(0, dtype=np.int64))[1].size == 0


def test_relation_stats_counts_components_and_degrees():
    # Products 0-1-2 in a path (also_bought) plus 3-4 (also_viewed); 5 isolated.
    edges = {"also_bought": np.array([[0, 1], [1, 2]]), "also_viewed": np.array([[3], [4]])}
    stats = relation_stats(edges, 6)
    assert stats["components"] == {
        "count": 3, "largest": 3, "largest_share": 0.5, "singletons": 1,
    }
    bought = stats["per_relation"]["also_bought"]
    assert bought["edges"] == 2 and bought["density"] == 2 / 15
    assert bought["degree"]["max"] == 2 and bought["degree"]["isolated"] == 3
