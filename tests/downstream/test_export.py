import hashlib
import json

import pytest
import torch

from rcml_graph.downstream import (
    attach_embeddings,
    conditioned_embeddings,
    export_embeddings,
    kind_description_ids,
    load_embeddings,
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
    manifest = json.loads((out / "manifest.json").read_text())
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
