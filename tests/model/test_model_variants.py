import pytest
import torch

from rcml_graph.model import RCMLHead, RelationEncoder, get_variant


def test_clip_is_beta_one_self_pairs_without_relation_or_intra_loss() -> None:
    clip = get_variant("clip")
    assert clip.resolve_beta(0.3) == 1.0
    assert clip.self_pairs_only and clip.relation_mode == "none"
    assert clip.resolve_weights(1.0, 0.5) == (1.0, 0.0)


@pytest.mark.parametrize(
    ("name", "beta", "weights", "mode", "self_only"),
    [
        ("rcml", 0.3, (1.0, 0.5), "description", False),
        ("unconditioned", 1.0, (1.0, 0.5), "none", False),
        ("no_inter_modal", 0.3, (0.0, 0.5), "description", False),
        ("no_intra", 0.3, (1.0, 0.0), "description", False),
        ("relation_ids", 0.3, (1.0, 0.5), "ids", False),
    ],
)
def test_variant_settings(name: str, beta: float, weights: tuple, mode: str, self_only: bool) -> None:
    variant = get_variant(name)
    assert variant.resolve_beta(0.3) == beta
    assert variant.resolve_weights(1.0, 0.5) == weights
    assert variant.relation_mode == mode
    assert variant.self_pairs_only is self_only


def test_unconditioned_variant_builds_a_global_only_head() -> None:
    variant = get_variant("unconditioned")
    head = RCMLHead(8, 4, 4, beta=variant.resolve_beta(0.5), relation_mode=variant.relation_mode)
    assert head.global_only and head.image_attention is None


def test_unknown_variant_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown model variant 'clipp'; available: rcml, clip"):
        get_variant("clipp")


def test_relation_encoder_modes() -> None:
    table = torch.arange(6.0).view(3, 2)
    assert torch.equal(RelationEncoder("description")(torch.tensor([2, 0]), table), table[[2, 0]])
    assert RelationEncoder("none")(torch.tensor([1])) is None
    ids = RelationEncoder("ids", embed_dim=2, num_relations=3)
    assert torch.equal(ids(torch.tensor([1])), ids.id_embedding.weight[[1]])
    with pytest.raises(ValueError, match="description_table must be"):
        RelationEncoder().cache_descriptions(torch.zeros(3))
