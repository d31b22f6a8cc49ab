import hashlib
import json

import pytest
import torch

from rcml_graph.downstream import (
    attach_embeddings,
    conditioned_embeddings,
    export_embeddings,
    has_query_side,
    kind_description_ids,
    load_embeddings,
    query_key,
)
from rcml_graph.evaluation.encoders import fused_embedding
from tests.evaluation.fakes import OracleEncoder, tiny_graph


def test_kind_descriptions_prefer_generic_text_then_most_frequent() -> None:
    data = tiny_graph()
    # desc 1 and 2 (also_bought) are used by 12 edges each: the lower id wins; same for 3 and 4.
    assert kind_description_ids(data) == {"also_bought": 1, "also_viewed": 3}
    data.relation_text = list(data.relation_text) + ["also bought by the same customers"]
    data.relation_kind_of_desc = torch.tensor([-1, 0, 0, 1, 1, 0])
    assert kind_description_ids(data)["also_bought"] == 5


def test_export_round_trip_and_attach(tmp_path) -> None:
    data = tiny_graph()
    encoder = OracleEncoder()
    checkpoint = tmp_path / "fake.pt"
    checkpoint.write_bytes(b"weights")
    out = export_embeddings(encoder, data, tmp_path / "export", method="oracle",
                            descriptions=["viewed together by shoppers comparing maps", "a brand-new relation"],
                            checkpoint=checkpoint, graph_sha256="abc")
    export = load_embeddings(out)
    assert sorted(export.tensors) == ["description/0", "global", "kind/also_bought", "kind/also_viewed"]
    products = torch.arange(24)
    expected = fused_embedding(encoder.encode(products, torch.full_like(products, 1)))
    assert torch.allclose(export.tensors["kind/also_bought"], expected, atol=1e-6)
    # The known description is desc 4; the new string is skipped (the oracle cannot embed text).
    expected4 = fused_embedding(encoder.encode(products, torch.full_like(products, 4)))
    assert torch.allclose(export.tensors["description/0"], expected4, atol=1e-6)
    manifest = json.loads((out / "manifest.json").read_bytes())
    assert manifest["skipped_descriptions"][0]["text"] == "a brand-new relation"
    assert manifest["checkpoint"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert manifest["graph_sha256"] == "abc"
    assert manifest["shapes"]["global"] == [24, 64]
    assert manifest["kinds"]["also_viewed"]["desc_id"] == 3

    attach_embeddings(data, out)
    assert torch.equal(data["product"].x, export.tensors["global"])
    assert torch.equal(data["product"].x_also_viewed, export.tensors["kind/also_viewed"])

    with pytest.raises(ValueError, match="exported for graph abc"):
        load_embeddings(out, expected_graph_sha256="other")
    (out / "embeddings.safetensors").write_bytes(b"corrupt")
    with pytest.raises(ValueError, match="changed since the export"):
        load_embeddings(out)


def test_attach_refuses_other_graph_and_missing_export(tmp_path) -> None:
    data = tiny_graph()
    out = export_embeddings(OracleEncoder(), data, tmp_path / "e", method="oracle")
    data["product"].num_nodes = 30
    with pytest.raises(ValueError, match="has 24 products; the graph has 30"):
        attach_embeddings(data, out)
    with pytest.raises(FileNotFoundError, match="no finished embedding export"):
        load_embeddings(tmp_path / "nothing")


def test_conditioned_embeddings_accepts_kind_text_and_id() -> None:
    data, encoder = tiny_graph(), OracleEncoder()
    products = torch.tensor([0, 1, 7])
    by_kind = conditioned_embeddings(encoder, data, products, "also_viewed")
    by_text = conditioned_embeddings(encoder, data, products, "viewed together by shoppers comparing lamps")
    by_id = conditioned_embeddings(encoder, data, products, 3)
    assert torch.equal(by_kind, by_text) and torch.equal(by_kind, by_id)
    # Products 1 and 3 share desc 3's triangle; 0 does not.
    same = conditioned_embeddings(encoder, data, torch.tensor([1, 3, 0]), 3)
    assert torch.allclose(same[0], same[1]) and not torch.allclose(same[0], same[2])
    with pytest.raises(ValueError, match="cannot embed the new description"):
        conditioned_embeddings(encoder, data, products, "never seen")
    with pytest.raises(ValueError, match="relation id 9 out of range"):
        conditioned_embeddings(encoder, data, products, 9)


# --- query-side views (a head with a query operator scores q(u, r) . z(v, r)) ---------------

def _conditioned_encoder(query_operator: bool, perturb: bool = False):
    """A real ``ConditionedEncoder`` around a tiny random head over 24 products (no checkpoint)."""
    from rcml_graph.model import ProductFeatures, RCMLHead
    from rcml_graph.training.encoder import ConditionedEncoder
    from rcml_graph.training.sources import TensorFeatures

    g = torch.Generator().manual_seed(0)
    n, d, di, dt = 24, 8, 6, 5
    has_image = torch.arange(n) % 5 != 0  # some products without an image
    products = ProductFeatures(
        image_global=torch.randn(n, d, generator=g), image_tokens=torch.randn(n, 3, di, generator=g),
        text_global=torch.randn(n, d, generator=g), text_tokens=torch.randn(n, 4, dt, generator=g),
        text_mask=torch.ones(n, 4, dtype=torch.bool), has_image=has_image)
    torch.manual_seed(0)
    head = RCMLHead(embed_dim=d, image_token_dim=di, text_token_dim=dt, out_dim=7, d_model=8, num_heads=2,
                    zero_init_attention=False, query_operator=query_operator)
    if perturb:  # stands in for a trained operator (it starts as the identity)
        with torch.no_grad():
            for op in (head.image_query, head.text_query):
                op.out.weight.copy_(torch.randn(op.out.weight.shape, generator=g))
    table = torch.randn(5, d, generator=g)  # one row per description of tiny_graph
    return ConditionedEncoder(head, TensorFeatures(products), table, config={"variant": "rcml"})


def test_export_has_query_side_that_moves_with_the_operator(tmp_path) -> None:
    data = tiny_graph()
    encoder = _conditioned_encoder(query_operator=True, perturb=True)
    out = export_embeddings(encoder, data, tmp_path / "q", method="rcml",
                            descriptions=["viewed together by shoppers comparing maps"])
    export = load_embeddings(out)
    assert sorted(export.tensors) == [
        "description/0", "global", "kind/also_bought", "kind/also_viewed",
        "query/description/0", "query/kind/also_bought", "query/kind/also_viewed"]
    manifest = export.manifest
    assert manifest["query_side"] is True and manifest["format_version"] == 2
    assert manifest["sides"]["query/kind/also_bought"] == "query" and manifest["sides"]["kind/also_bought"] == "target"
    assert manifest["sides"]["global"] == "global"
    assert manifest["query_keys"] == {"kind/also_bought": "query/kind/also_bought",
                                      "kind/also_viewed": "query/kind/also_viewed",
                                      "description/0": "query/description/0"}
    assert manifest["shapes"]["query/kind/also_viewed"] == [24, 7]
    products = torch.arange(24)
    for kind, desc in (("also_bought", 1), ("also_viewed", 3)):
        query, target = export.tensors[f"query/kind/{kind}"], export.tensors[f"kind/{kind}"]
        # The export is the fused query view of encode_query under the kind's description...
        expected = fused_embedding(encoder.encode_query(products, torch.full_like(products, desc)))
        assert torch.allclose(query, expected, atol=1e-6)
        torch.testing.assert_close(query.norm(dim=-1), torch.ones(24))
        # ...and the perturbed operator moves every product away from its target-side view.
        assert ((query - target).norm(dim=-1) > 1e-3).all()
    # The known description is desc 4 (also_viewed): its query side under desc 4, not desc 3.
    q4 = fused_embedding(encoder.encode_query(products, torch.full_like(products, 4)))
    assert torch.allclose(export.tensors["query/description/0"], q4, atol=1e-6)
    assert not torch.allclose(export.tensors["query/description/0"], export.tensors["query/kind/also_viewed"])
    attach_embeddings(data, out)
    assert torch.equal(data["product"].xq_also_bought, export.tensors["query/kind/also_bought"])


def test_query_side_equals_target_side_without_a_moved_operator(tmp_path) -> None:
    data = tiny_graph()
    products = torch.arange(24)
    # A zero-initialised operator is the identity: query side == target side.
    fresh = _conditioned_encoder(query_operator=True)
    assert has_query_side(fresh)
    export = load_embeddings(export_embeddings(fresh, data, tmp_path / "fresh", method="rcml"))
    for kind in ("also_bought", "also_viewed"):
        torch.testing.assert_close(export.tensors[f"query/kind/{kind}"], export.tensors[f"kind/{kind}"])
    # A head without an operator has no query side: no query keys, and as_query gives the target view.
    plain = _conditioned_encoder(query_operator=False)
    assert not has_query_side(plain)
    export = load_embeddings(export_embeddings(plain, data, tmp_path / "plain", method="rcml"))
    assert export.manifest["query_side"] is False and export.manifest["query_keys"] == {}
    assert not any(key.startswith("query/") for key in export.tensors)
    as_query = conditioned_embeddings(plain, data, products, "also_viewed", as_query=True)
    assert torch.equal(as_query, conditioned_embeddings(plain, data, products, "also_viewed"))
    # The oracle fake has no encode_query: no query side either.
    assert not has_query_side(OracleEncoder())
    with pytest.raises(ValueError, match="needs a relation"):
        conditioned_embeddings(plain, data, products, None, as_query=True)
    with pytest.raises(ValueError, match="'global' has no query side"):
        query_key("global")
