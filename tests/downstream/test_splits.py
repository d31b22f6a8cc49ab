import pytest
import torch
from torch_geometric.data import HeteroData

from rcml_graph.downstream import held_out_pair_keys, message_passing_graph, target_edges
from rcml_graph.relations import SELF_RELATION_TEXT, edge_type, reverse_edge_type
from tests.evaluation.fakes import tiny_graph


def _overlapping_graph() -> HeteroData:
    # also_bought: 0-1 train, 2-3 test. also_viewed: 2-3 train (a test pair of also_bought), 0-2 train.
    data = HeteroData()
    data["product"].num_nodes = 4
    data["product"].category_id = torch.tensor([0, 0, 1, 1])
    for kind, edges, split in (("also_bought", [[0, 2], [1, 3]], [0, 2]), ("also_viewed", [[2, 0], [3, 2]], [0, 0])):
        edge_index = torch.tensor(edges)
        data[edge_type(kind)].edge_index = edge_index
        data[reverse_edge_type(kind)].edge_index = edge_index.flip(0)
        for etype in (edge_type(kind), reverse_edge_type(kind)):
            data[etype].split = torch.tensor(split)
            data[etype].desc_id = torch.tensor([1, 1] if kind == "also_bought" else [2, 2])
    data.relation_text = [SELF_RELATION_TEXT, "also bought by the same customers", "viewed together by the same shoppers"]
    data.relation_kind_of_desc = torch.tensor([-1, 0, 1])
    return data


def test_held_out_pair_of_one_kind_never_reaches_message_passing() -> None:
    data = _overlapping_graph()
    assert held_out_pair_keys(data).tolist() == [2 * 4 + 3]
    graph = message_passing_graph(data, torch.eye(4))
    assert graph[edge_type("also_bought")].edge_index.tolist() == [[0], [1]]
    assert graph[reverse_edge_type("also_bought")].edge_index.tolist() == [[1], [0]]
    # The also_viewed training edge 2-3 is the also_bought test pair: dropped.
    assert graph[edge_type("also_viewed")].edge_index.tolist() == [[0], [2]]
    assert torch.equal(graph["product"].x, torch.eye(4))


def test_message_passing_holds_exactly_the_training_edges() -> None:
    data = tiny_graph()
    graph = message_passing_graph(data, torch.zeros(24, 3))
    test_pairs = set()
    for kind in ("also_bought", "also_viewed"):
        store = data[edge_type(kind)]
        held = store.edge_index[:, store.split != 0]
        test_pairs |= {tuple(sorted(p)) for p in held.T.tolist()}
    seen = set()
    for store in graph.edge_stores:
        pairs = {tuple(sorted(p)) for p in store.edge_index.T.tolist()}
        assert pairs.isdisjoint(test_pairs)
        seen |= pairs
    # tiny_graph: per block, also_bought triangles {0,1,2} and {0,3,4} give 4 training pairs,
    # also_viewed {1,3,5} gives 2 (desc 4 is test only): 6 pairs in each of 4 blocks.
    assert len(seen) == 24
    assert target_edges(data, "also_bought", "test").size(1) == 8
    assert target_edges(data, "also_bought", "train").size(1) == 16


def test_bad_inputs_are_named() -> None:
    data = tiny_graph()
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        target_edges(data, "also_bought", "dev")
    with pytest.raises(ValueError, match="graph has no 'bought_together' edges"):
        target_edges(data, "bought_together", "test")
    with pytest.raises(ValueError, match="x has 5 rows"):
        message_passing_graph(data, torch.zeros(5, 2))
