import pytest
import torch
import torch.nn.functional as F

from rcml_graph.model.attention import RelationCrossAttention


@pytest.fixture(autouse=True, params=["projected", "absorbed"])
def attention_path(request, monkeypatch):
    """Every test runs on both exact formulations (keys/values projected, or absorbed)."""
    monkeypatch.setattr(RelationCrossAttention, "attention_path", request.param)
    return request.param


def test_absorbed_equals_projected_values_and_gradients() -> None:
    torch.manual_seed(3)
    attn = RelationCrossAttention(relation_dim=6, token_dim=5, out_dim=4, d_model=8, num_heads=2)
    for module in (attn.key_proj, attn.value_proj):
        torch.nn.init.normal_(module.bias)  # the key bias cancels, the value bias does not
    relation = torch.randn(7, 6)
    tokens = torch.randn(3, 6, 5)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2] = False  # a product without tokens
    token_index = torch.tensor([0, 1, 1, 0, 2, 1, 0])
    results = {}
    for path in ("projected", "absorbed"):
        attn.attention_path = path
        attn.zero_grad()
        out, empty = attn(relation, tokens, mask, token_index)
        (out * torch.arange(4.0)).sum().backward()
        results[path] = (out.detach(), empty, attn.key_proj.weight.grad.clone(),
                         attn.value_proj.bias.grad.clone(), attn.query_proj.weight.grad.clone())
    for a, b in zip(results["projected"], results["absorbed"]):
        torch.testing.assert_close(a, b)
    assert results["absorbed"][1].tolist() == [False, False, False, False, True, False, False]


def test_auto_path_absorbs_one_view_per_row_and_projects_crowded_rows() -> None:
    attn = RelationCrossAttention(relation_dim=6, token_dim=1280, out_dim=4, d_model=256, num_heads=4)
    attn.attention_path = "auto"
    assert attn._absorb(num_rows=3000, max_views=1, length=49)  # a corpus under one relation
    assert not attn._absorb(num_rows=3000, max_views=40, length=49)  # above the ~28 break-even
    assert not attn._absorb(num_rows=10**6, max_views=1, length=49)  # token-space queries too big


def _attention(num_heads: int = 2) -> RelationCrossAttention:
    torch.manual_seed(0)
    attention = RelationCrossAttention(relation_dim=6, token_dim=4, out_dim=5, d_model=8, num_heads=num_heads)
    return attention.eval()


def test_shapes_and_empty_flag() -> None:
    attn = _attention()
    relation = torch.randn(3, 6)
    tokens = torch.randn(3, 7, 4)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1] = False
    mask[2, 4:] = False
    out, empty = attn(relation, tokens, mask)
    assert out.shape == (3, 5)
    assert empty.tolist() == [False, True, False]
    assert torch.equal(out[1], torch.zeros(5))
    assert torch.isfinite(out).all()


def test_single_valid_token_returns_its_projected_value() -> None:
    # Softmax over one key is 1, whatever the query: out = W_o(W_v(LN(token))).
    attn = _attention()
    tokens = torch.randn(2, 3, 4)
    mask = torch.tensor([[True, False, False], [False, False, True]])
    out, _ = attn(torch.randn(2, 6), tokens, mask)
    valid_token = torch.stack([tokens[0, 0], tokens[1, 2]])
    expected = attn.out_proj(attn.value_proj(attn.token_norm(valid_token)))
    torch.testing.assert_close(out, expected)


def test_zero_query_gives_mean_of_valid_values() -> None:
    # Zero query -> equal scores -> uniform weights over the valid keys only.
    attn = _attention()
    with torch.no_grad():
        attn.query_proj.weight.zero_()
        attn.query_proj.bias.zero_()
    tokens = torch.randn(1, 4, 4)
    mask = torch.tensor([[True, True, False, True]])
    out, _ = attn(torch.randn(1, 6), tokens, mask)
    values = attn.value_proj(attn.token_norm(tokens[0, [0, 1, 3]]))
    torch.testing.assert_close(out[0], attn.out_proj(values.mean(dim=0)))


def test_padding_values_do_not_change_output() -> None:
    attn = _attention()
    relation = torch.randn(2, 6)
    tokens = torch.randn(2, 5, 4)
    mask = torch.tensor([[True, True, False, False, False], [True, True, True, True, False]])
    out, _ = attn(relation, tokens, mask)
    changed = tokens.clone()
    changed[~mask] = 1000.0 * torch.randn(int((~mask).sum()), 4)
    out_changed, _ = attn(relation, changed, mask)
    torch.testing.assert_close(out, out_changed)


def test_relation_changes_output() -> None:
    attn = _attention()
    tokens = torch.randn(1, 5, 4).expand(2, 5, 4)
    out, _ = attn(torch.randn(2, 6), tokens, torch.ones(2, 5, dtype=torch.bool))
    assert not torch.allclose(out[0], out[1], atol=1e-4)


def test_fully_masked_rows_have_finite_gradients() -> None:
    attn = _attention()
    attn.train()
    tokens = torch.randn(2, 3, 4, requires_grad=True)
    mask = torch.tensor([[False, False, False], [True, True, False]])
    out, _ = attn(torch.randn(2, 6), tokens, mask)
    out.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in attn.parameters())
    assert torch.equal(tokens.grad[0], torch.zeros(3, 4))  # the empty row reaches no token
    assert tokens.grad[1, :2].abs().sum() > 0
    assert torch.equal(tokens.grad[1, 2], torch.zeros(4))  # padding gets no gradient


def test_multi_head_matches_manual_computation() -> None:
    attn = _attention(num_heads=2)
    relation = torch.randn(1, 6)
    tokens = torch.randn(1, 3, 4)
    mask = torch.tensor([[True, True, False]])
    out, _ = attn(relation, tokens, mask)
    q = attn.query_proj(attn.query_norm(relation)).view(2, 4)  # (H, d)
    normed = attn.token_norm(tokens[0, :2])
    k = attn.key_proj(normed).view(2, 2, 4).transpose(0, 1)  # (H, L, d)
    v = attn.value_proj(normed).view(2, 2, 4).transpose(0, 1)
    weights = F.softmax((k @ q[:, :, None]).squeeze(-1) / 2.0, dim=-1)  # sqrt(d) = 2
    heads = (weights[:, :, None] * v).sum(dim=1)  # (H, d)
    torch.testing.assert_close(out[0], attn.out_proj(heads.reshape(8)))


def test_bad_head_count_raises() -> None:
    with pytest.raises(ValueError, match="num_heads=3"):
        RelationCrossAttention(4, 4, 4, d_model=8, num_heads=3)


def test_token_index_shares_keys_and_matches_repeated_tokens() -> None:
    attn = _attention()
    relation = torch.randn(3, 6)
    tokens = torch.randn(2, 4, 4)
    mask = torch.tensor([[True, True, True, False], [False, False, False, False]])
    token_index = torch.tensor([0, 0, 1])
    shared, empty = attn(relation, tokens, mask, token_index)
    repeated, _ = attn(relation, tokens[token_index], mask[token_index])
    torch.testing.assert_close(shared, repeated)
    assert empty.tolist() == [False, False, True]
    with pytest.raises(ValueError, match=r"relation rows \(3\) must equal token rows \(2\)"):
        attn(relation, tokens, mask)


def test_folded_layer_norm_affine_matches_unfolded_reference() -> None:
    """The token layer norm's scale and shift are folded into the key/value projections; values
    and the gradients of every parameter (the norm's included) equal the plain composition
    LN -> key/value Linear -> softmax attention, with a non-trivial affine and biases."""
    torch.manual_seed(5)
    attn = RelationCrossAttention(relation_dim=6, token_dim=4, out_dim=5, d_model=8, num_heads=2)
    with torch.no_grad():
        for param in (attn.token_norm.weight, attn.token_norm.bias, attn.key_proj.bias, attn.value_proj.bias):
            param.copy_(torch.randn_like(param))
    relation = torch.randn(3, 6)
    tokens = torch.randn(2, 5, 4)
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    token_index = torch.tensor([0, 1, 0])
    weight = torch.randn(3, 5)

    out, _ = attn(relation, tokens, mask, token_index)
    grads = torch.autograd.grad((out * weight).sum(), list(attn.parameters()))

    q = attn.query_proj(attn.query_norm(relation)).view(3, 2, 4)  # (V, H, d)
    rows = []
    for view, row in enumerate(token_index.tolist()):
        normed = attn.token_norm(tokens[row, mask[row]])  # the affine applied, as written
        k = attn.key_proj(normed).view(-1, 2, 4).transpose(0, 1)  # (H, L, d)
        v = attn.value_proj(normed).view(-1, 2, 4).transpose(0, 1)
        w = F.softmax((k @ q[view, :, :, None]).squeeze(-1) / 2.0, dim=-1)  # (H, L)
        rows.append(attn.out_proj((w[:, :, None] * v).sum(dim=1).reshape(8)))
    expected = torch.stack(rows)
    expected_grads = torch.autograd.grad((expected * weight).sum(), list(attn.parameters()))
    torch.testing.assert_close(out, expected)
    for (name, _), got, want in zip(attn.named_parameters(), grads, expected_grads):
        torch.testing.assert_close(got, want, msg=name)


def test_explicit_attention_equals_sdpa_values_and_gradients() -> None:
    """The CPU-autocast formulation (explicit matmuls, float32 softmax) is the same attention."""
    torch.manual_seed(5)
    attn = _attention(num_heads=2)
    query = torch.randn(3, 2, 4, 4, requires_grad=True)  # (N, H, K, d)
    key = torch.randn(3, 2, 6, 4, requires_grad=True)  # (N, H, L, d)
    value = torch.randn(3, 2, 6, 4, requires_grad=True)
    attend = torch.ones(3, 6, dtype=torch.bool)
    attend[0, 2:] = False
    attend[1, :5] = False
    grads = []
    for fn in (attn._attend_sdpa, attn._attend_explicit):
        out = fn(query, key, value, attend)
        (out * torch.arange(4.0)).sum().backward()
        grads.append([out.detach()] + [t.grad.clone() for t in (query, key, value)])
        for t in (query, key, value):
            t.grad = None
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_cpu_autocast_uses_explicit_attention_close_to_sdpa() -> None:
    attn = RelationCrossAttention(relation_dim=6, token_dim=5, out_dim=4, d_model=8, num_heads=2)
    attn.attention_path = "projected"
    torch.nn.init.normal_(attn.out_proj.weight)
    relation, tokens = torch.randn(7, 6), torch.randn(3, 6, 5)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 4:] = False
    token_index = torch.tensor([0, 1, 1, 0, 2, 1, 0])
    assert not attn._explicit(torch.device("cpu"))
    outputs = []
    for explicit in (False, True):
        attn.cpu_autocast_explicit = explicit
        attn.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert attn._explicit(torch.device("cpu")) is explicit
            out, _ = attn(relation, tokens, mask, token_index)
        out.float().sum().backward()
        outputs.append((out.float().detach(), attn.key_proj.weight.grad.clone()))
    (sdpa_out, sdpa_grad), (explicit_out, explicit_grad) = outputs
    torch.testing.assert_close(explicit_out, sdpa_out, rtol=0.03, atol=0.03)  # bf16 rounding
    torch.testing.assert_close(explicit_grad, sdpa_grad, rtol=0.05, atol=0.05)
