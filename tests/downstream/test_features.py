import pytest
import torch

from rcml_graph.downstream import normalize_features


def test_standard_features_have_zero_mean_and_unit_spread_per_column() -> None:
    x = torch.tensor([[1.0, 5.0, 2.0], [3.0, 5.0, 2.0], [5.0, 5.0, 8.0]])
    z = normalize_features(x)
    # Column 0: mean 3, population std sqrt(8/3); column 1 is constant -> zeros; column 2: mean 4, std sqrt(8).
    expected_0 = torch.tensor([-2.0, 0.0, 2.0]) / (8 / 3) ** 0.5
    assert torch.allclose(z[:, 0], expected_0)
    assert torch.equal(z[:, 1], torch.zeros(3))
    assert torch.allclose(z[:, 2], torch.tensor([-2.0, -2.0, 4.0]) / 8**0.5)


def test_none_keeps_the_features_and_unknown_norms_are_refused() -> None:
    x = torch.randn(4, 2, dtype=torch.float64)
    assert torch.equal(normalize_features(x, "none"), x.float())
    with pytest.raises(ValueError, match="unknown feature_norm 'l2'; accepted: standard, none"):
        normalize_features(x, "l2")
