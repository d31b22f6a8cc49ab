import pytest
import torch

from rcml_graph.downstream import (
    heart_negatives,
    message_passing_graph,
    random_pair_negatives,
    target_edges,
    uniform_negatives,
)
from rcml_graph.relations import edge_type
from tests.evaluation.fakes import tiny_graph


def _eight_products() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # Message passing: 0-1, 1-2, 4-5. True link: 0-1. Categories: {0,1,6}, {2,3,4}, 5 none, 7 alone.
    message = torch.tensor([[0, 1, 4], [1, 2, 5]])
    true = torch.tensor([[0], [1]])
    category = torch.tensor([0, 0, 1, 1, 1, -1, 0, 2])
    return message, true, category


def test_hard_negatives_come_from_neighbourhood_and_category_first() -> None:
    message, true, category = _eight_products()
    negatives = heart_negatives(torch.tensor([0, 3]), message, true, category, 3, torch.Generator().manual_seed(0))
    assert negatives.shape == (2, 3)
    # Source 0: 2 is its 2-hop neighbour (via 1), 6 shares its category; 1 is a true link.
    assert set(negatives[0, :2].tolist()) == {2, 6}
    assert negatives[0, 2].item() not in (0, 1, 2, 6)
    # Source 3: no neighbours; 2 and 4 share its category.
    assert set(negatives[1, :2].tolist()) == {2, 4}
    assert negatives[1, 2].item() != 3


def test_neighbour_in_the_same_category_ranks_first() -> None:
    message, true, category = _eight_products()
    category = category.clone()
    category[2] = 0  # now 2 is both a 2-hop neighbour and in 0's category
    negatives = heart_negatives(torch.tensor([0]), message, true, category, 2, torch.Generator().manual_seed(1))
    assert negatives[0, 0].item() == 2
    assert negatives[0, 1].item() == 6


def test_hard_negatives_never_hit_a_true_link_on_a_graph() -> None:
    data = tiny_graph()
    graph = message_passing_graph(data, torch.zeros(24, 1))
    message = torch.cat([s.edge_index for s in graph.edge_stores], dim=1)
    positives = target_edges(data, "also_bought", "test")
    true = data[edge_type("also_bought")].edge_index
    negatives = heart_negatives(positives[0], message, true, data["product"].category_id, 15,
                                torch.Generator().manual_seed(0))
    true_pairs = set(map(tuple, true.T.tolist())) | set(map(tuple, true.flip(0).T.tolist()))
    for source, row in zip(positives[0].tolist(), negatives.tolist()):
        assert len(set(row)) == 15
        assert source not in row
        assert not any((source, w) in true_pairs for w in row)
        # Five same-category products are admissible for each source; they all come first.
        same = {w for w in range(24) if w // 6 == source // 6 and w != source and (source, w) not in true_pairs}
        assert same <= set(row)


def test_too_many_negatives_is_refused() -> None:
    message, true, category = _eight_products()
    with pytest.raises(ValueError, match="num_negatives=7"):
        heart_negatives(torch.tensor([0]), message, true, category, 7, torch.Generator())


def test_random_pair_negatives_avoid_links_and_self_loops() -> None:
    true = torch.tensor([[0, 1, 2], [1, 2, 3]])
    pairs = random_pair_negatives(5, 200, true, torch.Generator().manual_seed(0))
    assert pairs.shape == (2, 200)
    assert bool((pairs[0] != pairs[1]).all())
    keys = {tuple(sorted(p)) for p in pairs.T.tolist()}
    assert keys.isdisjoint({(0, 1), (1, 2), (2, 3)})
    # 10 unordered pairs minus 3 links: all 7 show up in 200 draws.
    assert len(keys) == 7


def test_uniform_negatives_avoid_the_source_and_its_true_links() -> None:
    # Product 0 is linked to 1 and 2 (in either direction); 4 products in all.
    true = torch.tensor([[0, 2], [1, 0]])
    negatives = uniform_negatives(torch.tensor([0, 3]), 4, 50, true, torch.Generator().manual_seed(0))
    assert negatives.shape == (2, 50)
    assert set(negatives[0].tolist()) == {3}  # the only admissible target of 0
    assert set(negatives[1].tolist()) == {0, 1, 2}  # anything but 3 itself
    again = uniform_negatives(torch.tensor([0, 3]), 4, 50, true, torch.Generator().manual_seed(0))
    assert torch.equal(negatives, again)


def test_uniform_negatives_refuse_a_source_linked_to_everything() -> None:
    true = torch.tensor([[0, 0], [1, 2]])
    with pytest.raises(ValueError, match="could not draw 5 non-links per source among 3 products"):
        uniform_negatives(torch.tensor([0]), 3, 5, true, torch.Generator().manual_seed(0), max_rounds=5)
