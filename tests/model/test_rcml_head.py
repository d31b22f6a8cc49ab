import pytest
import torch
import torch.nn.functional as F

from rcml_graph.losses import RCMLLoss
from rcml_graph.model import ProductFeatures, RCMLHead

D, DI, DT = 8, 6, 5


def _products(num_products: int = 4, seed: int = 0) -> ProductFeatures:
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(num_products, 4, dtype=torch.bool)
    text_mask[1, 2:] = False
    has_image = torch.ones(num_products, dtype=torch.bool)
    has_image[2] = False
    return ProductFeatures(
        image_global=torch.randn(num_products, D, generator=g),
        image_tokens=torch.randn(num_products, 3, DI, generator=g),
        text_global=torch.randn(num_products, D, generator=g),
        text_tokens=torch.randn(num_products, 4, DT, generator=g),
        text_mask=text_mask,
        has_image=has_image,
    )


def _head(**kwargs: object) -> RCMLHead:
    torch.manual_seed(0)
    defaults = dict(embed_dim=D, image_token_dim=DI, text_token_dim=DT, out_dim=7, d_model=8, num_heads=2,
                    zero_init_attention=False)
    defaults.update(kwargs)
    return RCMLHead(**defaults).eval()  # type: ignore[arg-type]


def _descriptions(num_relations: int = 3) -> torch.Tensor:
    return torch.randn(num_relations, D, generator=torch.Generator().manual_seed(1))


def test_pair_shapes_norms_and_image_validity() -> None:
    head = _head()
    src, dst, rel = torch.tensor([0, 1, 2]), torch.tensor([2, 3, 0]), torch.tensor([0, 1, 2])
    out = head(_products(), src, dst, rel, _descriptions())
    for z in (out.src_image, out.src_text, out.dst_image, out.dst_text):
        assert z.shape == (3, 7)
        torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    assert out.src_image_valid.tolist() == [True, True, False]  # product 2 has no image
    assert out.dst_image_valid.tolist() == [False, True, True]
    torch.testing.assert_close(out.logit_scale, torch.tensor(1 / 0.07))


def test_missing_image_falls_back_to_text_and_is_finite() -> None:
    head = _head()
    products = _products()
    products.image_tokens[2] = float("nan")  # never read: product 2 has no image
    products.image_tokens.requires_grad_(True)
    views = head.encode_views(products, torch.tensor([2, 0]), torch.tensor([1, 1]), _descriptions())
    assert torch.isfinite(views.image).all()
    assert torch.equal(views.image[0], views.text[0])
    assert views.image_valid.tolist() == [False, True]
    views.image.sum().backward()
    assert torch.equal(products.image_tokens.grad[2], torch.zeros(3, DI))
    assert all(torch.isfinite(p.grad).all() for p in head.image_attention.parameters())


def test_loss_gradients_are_finite_with_missing_images() -> None:
    head = _head()
    head.train()
    src, dst, rel = torch.tensor([0, 2, 1]), torch.tensor([2, 3, 2]), torch.tensor([0, 1, 2])
    out = head(_products(), src, dst, rel, _descriptions())
    loss, _ = RCMLLoss()(
        out.src_image, out.src_text, out.dst_image, out.dst_text, out.logit_scale,
        src_image_valid=out.src_image_valid, dst_image_valid=out.dst_image_valid,
    )
    loss.backward()
    assert torch.isfinite(loss)
    for name, param in head.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
    for attention in (head.image_attention, head.text_attention):
        assert attention is not None
        assert attention.query_proj.weight.grad.abs().sum() > 0
        assert attention.key_proj.weight.grad.abs().sum() > 0


def test_text_padding_does_not_change_output() -> None:
    head = _head()
    products = _products()
    index, relation = torch.tensor([1, 1]), torch.tensor([0, 2])
    before = head.encode_views(products, index, relation, _descriptions())
    products.text_tokens[1, 2:] = 1e3 * torch.randn(2, DT)  # product 1's padded positions
    after = head.encode_views(products, index, relation, _descriptions())
    torch.testing.assert_close(before.text, after.text)
    torch.testing.assert_close(before.image, after.image)


def test_beta_one_is_projected_global_and_ignores_relation() -> None:
    head = _head(beta=1.0)
    assert head.image_attention is None and head.text_attention is None
    products = _products()
    index = torch.tensor([0, 0, 3])
    a = head.encode_views(products, index, torch.tensor([0, 1, 2]), _descriptions())
    b = head.encode_views(products, index, torch.tensor([2, 2, 0]), torch.randn(3, D))
    expected_image = F.normalize(head.image_projection(products.image_global[index]), dim=-1)
    expected_text = F.normalize(head.text_projection(products.text_global[index]), dim=-1)
    torch.testing.assert_close(a.image, expected_image)
    torch.testing.assert_close(a.text, expected_text)
    assert torch.equal(a.image, b.image) and torch.equal(a.text, b.text)


def test_beta_below_one_depends_on_relation() -> None:
    head = _head(beta=0.5)
    views = head.encode_views(_products(), torch.tensor([0, 0]), torch.tensor([0, 1]), _descriptions())
    assert not torch.allclose(views.image[0], views.image[1], atol=1e-4)
    assert not torch.allclose(views.text[0], views.text[1], atol=1e-4)


def test_beta_zero_blend_matches_formula() -> None:
    # beta = 0.25: z = normalize(P(0.25 g + 0.75 a)) with a the cross-attention output.
    head = _head(beta=0.25)
    products = _products()
    table = _descriptions()
    views = head.encode_views(products, torch.tensor([3]), torch.tensor([1]), table)
    attended, _ = head.text_attention(table[[1]], products.text_tokens[[3]], products.text_mask[[3]])
    expected = F.normalize(head.text_projection(0.25 * products.text_global[[3]] + 0.75 * attended), dim=-1)
    torch.testing.assert_close(views.text, expected)


def test_duplicate_views_are_attended_once_and_match_single_views() -> None:
    head = _head()
    products = _products()
    table = _descriptions()
    seen_rows: list[int] = []
    head.image_attention.register_forward_hook(lambda m, args, out: seen_rows.append(args[0].shape[0]))
    src, dst, rel = torch.tensor([0, 0, 1]), torch.tensor([1, 1, 0]), torch.tensor([2, 2, 2])
    out = head(products, src, dst, rel, table)
    assert seen_rows == [2]  # views (0, 2) and (1, 2) only
    single = head.encode_views(products, torch.tensor([1]), torch.tensor([2]), table)
    torch.testing.assert_close(out.dst_text[0], single.text[0])
    torch.testing.assert_close(out.src_text[2], single.text[0])


def test_relation_ids_mode_needs_no_descriptions_and_learns_ids() -> None:
    head = _head(relation_mode="ids", num_relations=3)
    head.train()
    views = head.encode_views(_products(), torch.tensor([0, 0]), torch.tensor([0, 2]))
    assert not torch.allclose(views.text[0], views.text[1], atol=1e-4)
    views.text.sum().backward()
    grad = head.relation_encoder.id_embedding.weight.grad
    assert grad[0].abs().sum() > 0 and grad[2].abs().sum() > 0
    assert torch.equal(grad[1], torch.zeros(D))  # relation 1 was not used


def test_cached_descriptions_are_used_when_no_table_is_given() -> None:
    head = _head()
    table = _descriptions()
    head.cache_descriptions(table)
    products = _products()
    a = head.encode_views(products, torch.tensor([0, 3]), torch.tensor([1, 2]))
    b = head.encode_views(products, torch.tensor([0, 3]), torch.tensor([1, 2]), table)
    torch.testing.assert_close(a.image, b.image)
    with pytest.raises(ValueError, match="description_table"):
        _head().encode_views(products, torch.tensor([0]), torch.tensor([0]))


def test_learned_beta_starts_at_init_and_gets_gradient() -> None:
    head = _head(beta=0.3, learn_beta=True)
    torch.testing.assert_close(head.beta, torch.tensor(0.3))
    views = head.encode_views(_products(), torch.tensor([0, 1]), torch.tensor([0, 1]), _descriptions())
    (views.image * torch.randn_like(views.image)).sum().backward()
    assert head.beta_logit.grad is not None and head.beta_logit.grad != 0


def test_logit_scale_is_clamped() -> None:
    head = _head(logit_scale_init=10.0, logit_scale_max=100.0)
    torch.testing.assert_close(head.logit_scale(), torch.tensor(100.0))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"beta": 1.5}, "beta=1.5"),
        ({"beta": 1.0, "learn_beta": True}, "learn_beta"),
        ({"relation_mode": "none", "beta": 0.5}, "relation_mode 'none'"),
        ({"relation_mode": "words"}, "unknown relation mode 'words'"),
        ({"relation_mode": "ids"}, "num_relations"),
        ({"projection": "conv"}, "unknown projection kind 'conv'"),
    ],
)
def test_bad_configuration_raises(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _head(**kwargs)


def test_mismatched_index_shapes_raise() -> None:
    with pytest.raises(ValueError, match="equal length"):
        _head()(_products(), torch.tensor([0, 1]), torch.tensor([1]), torch.tensor([0, 0]), _descriptions())


def test_product_features_validate_names_the_bad_field() -> None:
    products = _products()
    products.text_mask = products.text_mask[:, :2]
    with pytest.raises(ValueError, match="text_mask length 2"):
        products.validate()


def test_products_without_image_skip_image_attention_and_leave_others_unchanged() -> None:
    head = _head()
    products = _products()  # product 2 has no image
    table = _descriptions()
    rows: list[int] = []
    head.image_attention.register_forward_hook(lambda m, args, out: rows.append(args[1].shape[0]))
    views = head.encode_views(products, torch.tensor([0, 2, 3, 2]), torch.tensor([1, 1, 2, 0]), table)
    assert rows == [2]  # the tokens of products 0 and 3 only
    assert views.image_valid.tolist() == [True, False, True, False]
    torch.testing.assert_close(views.image[1], views.text[1])  # fallback to the text view
    # The same views computed one product at a time agree.
    for position, (product, relation) in enumerate([(0, 1), (3, 2)]):
        alone = head.encode_views(products, torch.tensor([product]), torch.tensor([relation]), table)
        torch.testing.assert_close(views.image[position * 2], alone.image[0])


def test_explicit_negatives_are_embedded_under_the_pair_relation() -> None:
    head = _head()
    products = _products()
    table = _descriptions()
    src, dst, rel = torch.tensor([0, 1]), torch.tensor([1, 3]), torch.tensor([1, 2])
    negatives = torch.tensor([[3, -1], [0, 2]])
    out = head(products, src, dst, rel, table, negatives)
    assert out.neg_text.shape == (2, 2, 7) and out.neg_valid.tolist() == [[True, False], [True, True]]
    assert out.neg_image_valid.tolist() == [[True, False], [True, False]]  # product 2 has no image
    expected = head.encode_views(products, torch.tensor([3, 0, 2]), torch.tensor([1, 2, 2]), table)
    torch.testing.assert_close(out.neg_text[0, 0], expected.text[0])
    torch.testing.assert_close(out.neg_text[1, 0], expected.text[1])
    torch.testing.assert_close(out.neg_image[1, 0], expected.image[1])
    torch.testing.assert_close(out.neg_text[1, 1], expected.text[2])


def test_zero_init_attention_starts_as_the_unconditioned_head() -> None:
    products, table = _products(), _descriptions()
    src, dst, rel = torch.tensor([0, 1, 3]), torch.tensor([1, 3, 0]), torch.tensor([1, 2, 0])
    conditioned = _head(zero_init_attention=True, projection="linear")
    out = conditioned(products, src, dst, rel, table)
    # With a = 0 the blend is beta * g: a linear projection of it, normalised, is the projection
    # of g up to the bias; compare with the head's own beta = 1 path on the same weights.
    g_text = F.normalize(conditioned.text_projection(0.5 * products.text_global[src]), dim=-1)
    torch.testing.assert_close(out.src_text, g_text)
    other = conditioned(products, src, dst, torch.tensor([2, 0, 1]), table)
    torch.testing.assert_close(out.src_text, other.src_text)  # the relation does not matter yet
    # ... and it gets gradients, so it does not stay a no-op.
    loss = out.src_text.sum() + out.src_image.sum()
    loss.backward()
    assert conditioned.text_attention.out_proj.weight.grad.abs().sum() > 0


def test_with_global_gives_the_relation_free_views_of_the_same_projections() -> None:
    head = _head()
    products, table = _products(), _descriptions()
    src, dst, rel = torch.tensor([0, 2]), torch.tensor([3, 1]), torch.tensor([1, 2])
    out = head(products, src, dst, rel, table, with_global=True)
    text = F.normalize(head.text_projection(products.text_global), dim=-1)
    image = F.normalize(head.image_projection(products.image_global), dim=-1)
    torch.testing.assert_close(out.global_src_text, text[src])
    torch.testing.assert_close(out.global_dst_image, image[dst])
    torch.testing.assert_close(out.global_src_image[1], text[2])  # product 2 has no image
    assert head(products, src, dst, rel, table).global_src_text is None


def _affine_head() -> RCMLHead:
    """A head whose token layer norms have a non-trivial affine (what normalisation must not fold away)."""
    head = _head().train()
    with torch.no_grad():
        for attention in (head.image_attention, head.text_attention):
            attention.token_norm.weight.uniform_(0.5, 1.5)
            attention.token_norm.bias.normal_()
            attention.key_proj.bias.normal_()
    return head


def _pair_outputs_and_grads(head: RCMLHead, products: ProductFeatures) -> list[torch.Tensor]:
    head.zero_grad()
    out = head(products, torch.tensor([0, 1, 3, 2]), torch.tensor([3, 2, 0, 0]), torch.tensor([1, 2, 1, 0]),
               _descriptions(), torch.tensor([[2, 1], [0, -1], [1, 3], [3, 2]]))
    loss = sum((t * torch.linspace(-1, 1, t.shape[-1])).sum()
               for t in (out.src_image, out.src_text, out.dst_image, out.dst_text, out.neg_image, out.neg_text))
    loss.backward()
    values = [out.src_image, out.src_text, out.dst_image, out.dst_text, out.neg_image, out.neg_text]
    return [v.detach() for v in values] + [p.grad.clone() for p in head.parameters() if p.grad is not None]


@pytest.mark.parametrize("path", ["projected", "absorbed"])
def test_prenormalised_tokens_give_the_raw_tokens_values_and_gradients(path: str, monkeypatch) -> None:
    from rcml_graph.model.attention import RelationCrossAttention

    monkeypatch.setattr(RelationCrossAttention, "attention_path", path)
    head = _affine_head()
    raw = _products()
    raw.text_tokens[1, 2:] = float("nan")  # padding may hold anything
    raw.image_tokens[2] = float("nan")  # product 2 has no image
    normalised = raw.normalize_tokens(eps=head.token_norm_eps)
    assert normalised.token_norm_eps == head.token_norm_eps
    assert torch.isfinite(normalised.text_tokens).all() and torch.isfinite(normalised.image_tokens).all()
    assert (normalised.image_tokens[2] == 0).all() and (normalised.text_tokens[1, 2:] == 0).all()
    expected = _pair_outputs_and_grads(head, raw)
    got = _pair_outputs_and_grads(head, normalised)
    assert len(got) == len(expected) > 6  # the token norms' affine parameters got gradients too
    assert head.image_attention.token_norm.weight.grad is not None
    for a, b in zip(expected, got):
        torch.testing.assert_close(a, b)
    # A different eps would be a different function: refused, naming both values.
    with pytest.raises(ValueError, match=r"eps=0.001.*eps=1e-05"):
        head(raw.normalize_tokens(eps=1e-3), torch.tensor([0]), torch.tensor([1]), torch.tensor([1]),
             _descriptions())
    with pytest.raises(ValueError, match="already normalised"):
        normalised.normalize_tokens()


def test_bfloat16_prenormalised_tokens_match_raw_tokens_under_autocast() -> None:
    head = _affine_head()
    raw = _products()
    stored = raw.normalize_tokens(eps=head.token_norm_eps, dtype=torch.bfloat16)
    assert stored.text_tokens.dtype == stored.image_tokens.dtype == torch.bfloat16
    assert stored.text_global.dtype == torch.float32  # globals are left as they are
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = _pair_outputs_and_grads(head, raw)
        got = _pair_outputs_and_grads(head, stored)
    for a, b in zip(expected, got):
        torch.testing.assert_close(a.float(), b.float(), rtol=2e-2, atol=2e-2)
    # Outside autocast the bf16 tokens are computed in the weights' dtype (no dtype clash).
    fp32 = _pair_outputs_and_grads(head, stored)
    assert fp32[0].dtype == torch.float32


def test_tensor_features_keep_normalised_tokens_and_their_dtype() -> None:
    from rcml_graph.training import TensorFeatures, prepare_frozen_source

    table = TensorFeatures(_products())
    conditioned, global_only = _head(), _head(beta=1.0)
    # A global-only head reads no tokens: its table drops them (new, empty storage) and its
    # pair embeddings are those of the full table.
    lean = prepare_frozen_source(table, global_only, torch.device("cpu"), "bfloat16")
    assert lean.table.image_tokens.shape == (table.num_products, 0, table.table.image_tokens.shape[-1])
    assert lean.table.text_tokens.numel() == lean.table.text_mask.numel() == 0
    assert lean.table.image_tokens.untyped_storage().nbytes() == 0  # not a view of the full table
    index = torch.tensor([3, 1, 0, 3])
    src, dst, rel = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), torch.tensor([0, 1, 0])
    full_out = global_only(table.product_features(index), src, dst, rel)
    lean_out = global_only(lean.product_features(index), src, dst, rel)
    for name in ("src_image", "src_text", "dst_image", "dst_text"):
        torch.testing.assert_close(getattr(lean_out, name), getattr(full_out, name))
    prepared = prepare_frozen_source(table, conditioned, torch.device("cpu"), "bfloat16")
    picked = prepared.product_features(torch.tensor([3, 1]))
    assert picked.token_norm_eps == conditioned.token_norm_eps
    assert picked.text_tokens.dtype == torch.float32  # bf16 storage only under CUDA autocast
    expected = _products().normalize_tokens()
    torch.testing.assert_close(picked.text_tokens, expected.text_tokens[[3, 1]])
    torch.testing.assert_close(picked.image_global, expected.image_global[[3, 1]])
    bf16 = table.with_normalized_tokens(dtype=torch.bfloat16).product_features(torch.tensor([0]))
    assert bf16.image_tokens.dtype == torch.bfloat16 and bf16.image_global.dtype == torch.float32
