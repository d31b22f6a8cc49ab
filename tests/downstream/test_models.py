import pytest
import torch

from rcml_graph.downstream import EdgeDecoder, LinkPredictor, message_passing_graph
from tests.evaluation.fakes import tiny_graph


def test_dot_decoder_known_answer() -> None:
    h = torch.tensor([[1.0, 0.0], [2.0, 3.0], [-1.0, 4.0]])
    scores = EdgeDecoder(2, "dot")(h, torch.tensor([[0, 1], [1, 2]]))
    assert scores.tolist() == [2.0, 10.0]


@pytest.mark.parametrize("model", ["sage", "mlp"])
def test_link_predictor_shapes(model: str) -> None:
    graph = message_passing_graph(tiny_graph(), torch.randn(24, 5))
    predictor = LinkPredictor(5, graph.metadata(), model, hidden_channels=8)
    assert predictor.encode(graph).shape == (24, 8)
    assert predictor(graph, torch.tensor([[0, 1, 2], [3, 4, 5]])).shape == (3,)


def test_sage_uses_the_graph_and_mlp_does_not() -> None:
    data = tiny_graph()
    x = torch.randn(24, 5)
    full = message_passing_graph(data, x)
    empty = message_passing_graph(data, x, kinds=["also_viewed"])
    torch.manual_seed(0)
    sage = LinkPredictor(5, full.metadata(), "sage", hidden_channels=8)
    mlp = LinkPredictor(5, None, "mlp", hidden_channels=8)
    assert torch.equal(mlp.encode(full), mlp.encode(empty))
    sage_partial = LinkPredictor(5, empty.metadata(), "sage", hidden_channels=8)
    sage_partial.load_state_dict({k: v for k, v in sage.state_dict().items() if "also_bought" not in k}, strict=False)
    assert not torch.allclose(sage.encode(full), sage_partial.encode(empty))


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown link-prediction model 'gat'"):
        LinkPredictor(4, None, "gat")
    with pytest.raises(ValueError, match="unknown decoder 'cosine'"):
        EdgeDecoder(4, "cosine")
