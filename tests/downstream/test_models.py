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


def test_asymmetric_decoder_reads_source_then_target_half() -> None:
    # h = [h_src | h_dst] with H = 2: the score of (u, v) is h_src[u] . h_dst[v].
    h = torch.tensor([[1.0, 0.0, 0.0, 5.0],
                      [0.0, 2.0, 3.0, 0.0]])
    decoder = EdgeDecoder(2, "dot", asymmetric=True)
    assert decoder(h, torch.tensor([[0, 1, 0], [1, 0, 0]])).tolist() == [3.0, 10.0, 0.0]
    with pytest.raises(ValueError, match="embeddings have 2 columns; this decoder expects 4"):
        decoder(h[:, :2], torch.tensor([[0], [1]]))


@pytest.mark.parametrize("model", ["sage", "mlp"])
def test_asymmetric_predictor_is_the_symmetric_one_on_equal_roles(model: str) -> None:
    data = tiny_graph()
    x, x_other = torch.randn(24, 5), torch.randn(24, 5)
    symmetric_graph = message_passing_graph(data, x)
    torch.manual_seed(0)
    symmetric = LinkPredictor(5, symmetric_graph.metadata(), model, hidden_channels=8)
    torch.manual_seed(0)
    asymmetric = LinkPredictor(5, symmetric_graph.metadata(), model, hidden_channels=8, asymmetric=True)
    assert asymmetric.state_dict().keys() == symmetric.state_dict().keys()  # one encoder for both roles
    asymmetric.load_state_dict(symmetric.state_dict())
    pairs = torch.tensor([[0, 1, 2, 7], [3, 4, 5, 1]])
    same = message_passing_graph(data, torch.cat([x, x], dim=1))
    h = asymmetric.encode(same)
    assert h.shape == (24, 16)
    torch.testing.assert_close(asymmetric(same, pairs), symmetric(symmetric_graph, pairs))
    # Different source features move the scores of (u, v) but not the target half of h.
    moved = message_passing_graph(data, torch.cat([x_other, x], dim=1))
    h_moved = asymmetric.encode(moved)
    torch.testing.assert_close(h_moved[:, 8:], h[:, 8:])
    assert not torch.allclose(asymmetric(moved, pairs), asymmetric(same, pairs))
    with pytest.raises(ValueError, match=r"node features have 5 columns; this model expects 10 \(\[x_src \| x_dst\]\)"):
        asymmetric.encode(symmetric_graph)
