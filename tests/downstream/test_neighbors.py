import pytest
import torch
from torch_geometric.data import HeteroData

from rcml_graph.downstream import NeighborSampler, held_out_pair_keys, message_passing_graph, pair_keys
from rcml_graph.evaluation.edges import is_member
from rcml_graph.relations import PRODUCT, edge_type, reverse_edge_type
from tests.evaluation.fakes import tiny_graph

BOUGHT = edge_type("also_bought")
REV_BOUGHT = reverse_edge_type("also_bought")


def _star_graph() -> HeteroData:
    """Messages into 0 from 1, 2, 3, 4; into 1 from 0 and 5; into 5 from 6. One edge type."""
    graph = HeteroData()
    graph[PRODUCT].x = torch.arange(7, dtype=torch.float)[:, None] * 10
    graph[PRODUCT].num_nodes = 7
    graph[BOUGHT].edge_index = torch.tensor([[1, 2, 3, 4, 0, 5, 6], [0, 0, 0, 0, 1, 1, 5]])
    return graph


def _global_edges(sub: HeteroData, etype: tuple[str, str, str]) -> set[tuple[int, int]]:
    n_id = sub[PRODUCT].n_id
    return set(map(tuple, n_id[sub[etype].edge_index].T.tolist()))


def test_all_neighbours_two_hops_known_answer() -> None:
    sub = NeighborSampler(_star_graph(), [-1, -1]).sample(torch.tensor([1]), torch.Generator().manual_seed(0))
    # Hop 1 reaches 0 and 5 (into 1); hop 2 expands them: 1-4 into 0, 6 into 5.
    assert sub[PRODUCT].n_id[0].item() == 1 and sub[PRODUCT].batch_size == 1
    assert set(sub[PRODUCT].n_id.tolist()) == set(range(7))
    assert _global_edges(sub, BOUGHT) == {(0, 1), (5, 1), (1, 0), (2, 0), (3, 0), (4, 0), (6, 5)}
    assert torch.equal(sub[PRODUCT].x, _star_graph()[PRODUCT].x[sub[PRODUCT].n_id])


def test_fan_out_draws_distinct_neighbours_and_keeps_small_neighbourhoods_whole() -> None:
    sampler = NeighborSampler(_star_graph(), [2])
    for seed in range(5):
        sub = sampler.sample(torch.tensor([0, 1]), torch.Generator().manual_seed(seed))
        edges = _global_edges(sub, BOUGHT)
        into_zero = {u for u, v in edges if v == 0}
        assert len(into_zero) == 2 and into_zero <= {1, 2, 3, 4}
        assert {u for u, v in edges if v == 1} == {0, 5}  # in-degree 2 <= fan-out: all kept
        assert sub[PRODUCT].n_id[:2].tolist() == [0, 1]


def test_one_hop_fan_out_is_respected_on_every_edge_type() -> None:
    graph = message_passing_graph(tiny_graph(), torch.randn(24, 3))
    sub = NeighborSampler(graph, [1]).sample(torch.arange(24), torch.Generator().manual_seed(0))
    for etype in graph.edge_types:
        full_in_degree = torch.bincount(graph[etype].edge_index[1], minlength=24)
        sampled_in_degree = torch.bincount(sub[PRODUCT].n_id[sub[etype].edge_index[1]], minlength=24)
        assert torch.equal(sampled_in_degree, full_in_degree.clamp_max(1))


def test_sampling_is_deterministic_by_seed() -> None:
    graph = message_passing_graph(tiny_graph(), torch.randn(24, 3))
    sampler = NeighborSampler(graph, [1, 1])
    seeds = torch.tensor([0, 7, 13])

    def draw(seed: int) -> list[torch.Tensor]:
        sub = sampler.sample(seeds, torch.Generator().manual_seed(seed))
        return [sub[PRODUCT].n_id] + [sub[etype].edge_index for etype in sub.edge_types]

    assert all(torch.equal(a, b) for a, b in zip(draw(3), draw(3)))
    assert any(a.shape != b.shape or not torch.equal(a, b) for seed in range(1, 6) for a, b in zip(draw(0), draw(seed)))


def test_no_held_out_pair_is_ever_sampled() -> None:
    data = tiny_graph()
    graph = message_passing_graph(data, torch.randn(24, 3))
    held_out = held_out_pair_keys(data)
    assert held_out.numel() > 0
    sub = NeighborSampler(graph, [-1, -1, -1]).sample(torch.arange(24), torch.Generator().manual_seed(0))
    sampled = torch.cat([sub[PRODUCT].n_id[sub[etype].edge_index] for etype in sub.edge_types], dim=1)
    assert sampled.size(1) == sum(graph[etype].edge_index.size(1) for etype in graph.edge_types)
    assert not is_member(pair_keys(sampled, 24), held_out).any()


def test_no_hops_gives_the_seeds_alone() -> None:
    sub = NeighborSampler(_star_graph(), []).sample(torch.tensor([4, 2]), torch.Generator().manual_seed(0))
    assert sub[PRODUCT].n_id.tolist() == [4, 2]
    assert sub[BOUGHT].edge_index.shape == (2, 0)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"num_neighbors must be positive or -1 .* got \[2, 0\]"):
        NeighborSampler(_star_graph(), [2, 0])
    sampler = NeighborSampler(_star_graph(), [2])
    with pytest.raises(ValueError, match="distinct node ids"):
        sampler.sample(torch.tensor([1, 1]), torch.Generator())
    with pytest.raises(ValueError, match=r"must lie in \[0, 7\)"):
        sampler.sample(torch.tensor([7]), torch.Generator())
