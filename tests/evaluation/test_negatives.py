"""Negatives of the random and sensitive protocols on the hand-built triangle graph."""

import torch

from rcml_graph.evaluation.edges import (
    collect_edges,
    descriptions_by_kind,
    product_groups,
    select_queries,
)
from rcml_graph.evaluation.negatives import random_negatives, sensitive_negatives
from tests.evaluation.fakes import NUM_PRODUCTS, tiny_graph, triangle_of


def _queries():
    data = tiny_graph()
    edges = collect_edges(data)
    index = select_queries(edges, "test", None, torch.Generator().manual_seed(0))
    return data, edges, index, edges.source[index], edges.target[index], edges.desc_id[index]


def _linked(edges, u: int, v: int) -> set[int]:
    """Descriptions under which u and v are linked (either direction), from the raw lists."""
    out = set()
    for s, t, d in zip(edges.source.tolist(), edges.target.tolist(), edges.desc_id.tolist()):
        if {s, t} == {u, v}:
            out.add(d)
    return out


def test_collect_edges_counts_and_tables():
    data, edges, index, *_ = _queries()
    # 4 blocks x 4 triangles x 3 edges; test = one edge per triangle + all desc-4 edges.
    assert edges.num_edges == 48
    assert index.numel() == 4 * (3 * 1 + 3)
    assert descriptions_by_kind(edges)[:2].tolist() == [[1, 2], [3, 4]]
    assert product_groups(data).tolist() == (torch.arange(NUM_PRODUCTS) // 6).tolist()


def test_random_negatives_avoid_positive_source_and_links():
    _, edges, _, src, dst, desc = _queries()
    neg = random_negatives(edges, src, dst, desc, 5, torch.Generator().manual_seed(3)).negatives
    assert neg.shape == (src.numel(), 5)
    for q in range(src.numel()):
        row = neg[q].tolist()
        assert len(set(row)) == 5
        assert int(dst[q]) not in row and int(src[q]) not in row
        for c in row:
            assert int(desc[q]) not in _linked(edges, int(src[q]), c)


def test_sensitive_negatives_are_hard_first_and_never_positive():
    data, edges, _, src, dst, desc = _queries()
    result = sensitive_negatives(edges, src, dst, desc, product_groups(data), 5, torch.Generator().manual_seed(3))
    for q in range(src.numel()):
        s, t, d = int(src[q]), int(dst[q]), int(desc[q])
        row = result.negatives[q].tolist()
        assert len(set(row)) == 5 and t not in row and s not in row
        # The source's block: its 2 neighbours under other descriptions and 1 plain member.
        assert result.hard[q].tolist() == [True, True, True, False, False]
        assert result.linked_other[q].tolist() == [True, True, False, False, False]
        for c in row[:2]:
            linked = _linked(edges, s, c)
            assert linked and d not in linked  # linked under another description only
        assert row[2] // 6 == s // 6 and not _linked(edges, s, row[2])
        for c in row:
            assert d not in _linked(edges, s, c)
        # Linked under d means the same triangle: no negative shares the source's triangle.
        assert not bool((triangle_of(torch.tensor(row), torch.tensor(d)) == triangle_of(torch.tensor(s), torch.tensor(d))).any())


def test_same_seed_same_negatives_other_seed_differs():
    data, edges, _, src, dst, desc = _queries()
    groups = product_groups(data)
    a = sensitive_negatives(edges, src, dst, desc, groups, 5, torch.Generator().manual_seed(7)).negatives
    b = sensitive_negatives(edges, src, dst, desc, groups, 5, torch.Generator().manual_seed(7)).negatives
    c = sensitive_negatives(edges, src, dst, desc, groups, 5, torch.Generator().manual_seed(8)).negatives
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
