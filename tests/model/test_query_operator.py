"""The query-side relation operator: identity at start, source-only, and what it can learn."""

import pytest
import torch
import torch.nn.functional as F

from rcml_graph.model import RCMLHead
from rcml_graph.model.query_operator import QueryOperator

from tests.model.test_rcml_head import D, DI, DT, _products  # the same hand-built products


def _head(query_operator: bool = True, **kwargs: object) -> RCMLHead:
    torch.manual_seed(0)
    return RCMLHead(embed_dim=D, image_token_dim=DI, text_token_dim=DT, out_dim=7, d_model=8,
                    num_heads=2, zero_init_attention=False, query_operator=query_operator,
                    **kwargs).eval()  # type: ignore[arg-type]


def _table() -> torch.Tensor:
    return torch.randn(3, D, generator=torch.Generator().manual_seed(1))


def _perturb(head: RCMLHead) -> None:
    with torch.no_grad():
        for op in (head.image_query, head.text_query):
            op.out.weight.copy_(torch.randn_like(op.out.weight))


def test_operator_starts_as_identity_so_the_head_starts_symmetric() -> None:
    products, table = _products(), _table()
    src, dst, rel = torch.tensor([0, 1, 3]), torch.tensor([1, 3, 0]), torch.tensor([1, 2, 1])
    with_op = _head(True)(products, src, dst, rel, table)
    without = _head(False)(products, src, dst, rel, table)  # same seed: same other weights
    torch.testing.assert_close(with_op.src_text, without.src_text)
    torch.testing.assert_close(with_op.src_image, without.src_image)
    torch.testing.assert_close(with_op.dst_text, without.dst_text)


def test_operator_moves_sources_only_and_never_the_self_relation() -> None:
    head = _head(True)
    _perturb(head)
    products, table = _products(), _table()
    # pair 0 and 1: the same view (product 1, relation 2) as source and as target
    src, dst, rel = torch.tensor([1, 0, 3]), torch.tensor([0, 1, 3]), torch.tensor([2, 2, 0])
    out = head(products, src, dst, rel, table)
    assert not torch.allclose(out.src_text[0], out.dst_text[1])  # source side moved
    torch.testing.assert_close(out.src_text[0].norm(), torch.tensor(1.0))
    # target side equals the plain view
    plain = head.encode_views(products, torch.tensor([1]), torch.tensor([2]), table)
    torch.testing.assert_close(out.dst_text[1], plain.text[0])
    # the self relation (id 0) is symmetric: source equals target
    torch.testing.assert_close(out.src_text[2], out.dst_text[2])
    torch.testing.assert_close(out.src_image[2], out.dst_image[2])
    # evaluation's query side is the training source side
    query = head.encode_views(products, src, rel, table, as_query=True)
    torch.testing.assert_close(query.text, out.src_text)
    torch.testing.assert_close(query.image, out.src_image)
    # a product without an image (2) keeps image == text on the query side too
    q2 = head.encode_views(products, torch.tensor([2]), torch.tensor([1]), table, as_query=True)
    torch.testing.assert_close(q2.image, q2.text)
    assert not bool(q2.image_valid[0])


def test_global_only_head_gets_a_relation_free_query_map() -> None:
    torch.manual_seed(0)
    head = RCMLHead(embed_dim=D, image_token_dim=DI, text_token_dim=DT, out_dim=7, beta=1.0,
                    relation_mode="none", query_operator=True).eval()
    _perturb(head)
    products = _products()
    src, dst = torch.tensor([0, 0, 3]), torch.tensor([1, 1, 3])
    out = head(products, src, dst, torch.tensor([1, 2, 0]))
    torch.testing.assert_close(out.src_text[0], out.src_text[1])  # the relation cannot matter
    target_side = head.encode_views(products, src[:1], torch.tensor([1])).text[0]
    assert not torch.allclose(out.src_text[0], target_side)  # but the map moves it
    torch.testing.assert_close(out.src_text[2], out.dst_text[2])  # self relation exempt
    query = head.encode_views(products, src, torch.tensor([1, 2, 0]), as_query=True)
    torch.testing.assert_close(query.text, out.src_text)
    plain = RCMLHead(embed_dim=D, image_token_dim=DI, text_token_dim=DT, beta=1.0, relation_mode="none")
    assert not plain.has_query_operator


def test_variants_get_the_operator_they_are_defined_with() -> None:
    from rcml_graph.model import get_variant
    from rcml_graph.training import HeadOptions, head_kwargs

    def built(name: str, query_operator: bool = True) -> bool:
        kwargs = head_kwargs(get_variant(name), HeadOptions(query_operator=query_operator), D, DI, DT, 3)
        return RCMLHead(**kwargs).has_query_operator

    assert built("rcml") and built("relation_ids") and built("no_intra")
    assert not built("rcml", query_operator=False)
    assert not built("unconditioned") and not built("clip")  # the baselines stay symmetric
    assert built("unconditioned_query", query_operator=False)  # the control always has its map


def test_operator_learns_what_a_symmetric_score_cannot() -> None:
    """A near-duplicate of the source is the negative and another product the positive.

    A symmetric score ``z(s) . z(t)`` is maximal for the duplicate whatever the weights, so it
    can never rank the positive first; the query operator learns to.
    """
    torch.manual_seed(0)
    num = 16
    base = F.normalize(torch.randn(num, 7), dim=-1)
    partner = torch.roll(base, 1, dims=0)  # the product each source is "bought with"
    duplicate = F.normalize(base + 0.01 * torch.randn(num, 7), dim=-1)
    relation = torch.randn(1, D).expand(num, D)
    index = torch.ones(num, dtype=torch.long)

    def ranks_positive_first(query: torch.Tensor) -> float:
        return float(((query * partner).sum(-1) > (query * duplicate).sum(-1)).float().mean())

    assert ranks_positive_first(base) == 0.0  # symmetric: the duplicate always wins
    op = QueryOperator(7, D, hidden_dim=32)
    optimizer = torch.optim.Adam(op.parameters(), lr=1e-2)
    for _ in range(300):
        q = op(base, relation, index)
        logits = torch.stack([(q * partner).sum(-1), (q * duplicate).sum(-1)], dim=1) / 0.1
        loss = F.cross_entropy(logits, torch.zeros(num, dtype=torch.long))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        assert ranks_positive_first(op(base, relation, index)) == 1.0
        # the self relation is untouched
        torch.testing.assert_close(op(base, relation, torch.zeros(num, dtype=torch.long)), base)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="embed_dim=0"):
        QueryOperator(0, 4)
