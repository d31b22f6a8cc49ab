"""Export per-product embeddings of a :class:`RelationEncoder` and attach them to a graph.

An export folder (``datasets/<domain>/embeddings/<method>/``) holds

- ``embeddings.safetensors``: ``(N, D)`` float32 tensors keyed ``global`` (relation-free),
  ``kind/<kind>`` (conditioned on that kind's generic description, or its most frequent one)
  and ``description/<i>`` (conditioned on the ``i``-th requested description string): the
  *target* side of a relation, as candidates are embedded. When the encoder has a query side
  (a head with a query operator, see :func:`has_query_side`) also ``query/kind/<kind>`` and
  ``query/description/<i>``: the same views as the *source* of a query, through the operator
  (``encode_query``). A pair ``(u, v)`` under relation ``r`` is scored
  ``query/<r>[u] . <r>[v]`` by such a model, so both sides are needed downstream.
- ``manifest.json``: written last; the checkpoint's path and sha256, the graph's hash, the
  description behind every key, every tensor's shape, the side of every key (``sides``:
  ``global``/``target``/``query``) and the query key of each target key (``query_keys``).

Every vector is the fused embedding of the evaluation suite
(:func:`rcml_graph.evaluation.encoders.fused_embedding`): the L2-normalised sum of the text and
image views, the text view alone for a product without an image.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from torch_geometric.data import HeteroData

from rcml_graph.data.graph_io import read_manifest
from rcml_graph.evaluation.encoders import (
    RelationEncoder,
    encode_global,
    encode_pairs,
    encodes_queries,
    fused_embedding,
)
from rcml_graph.io_utils import atomic_path, atomic_write_json, sha256_file, sha256_json
from rcml_graph.relations import GENERIC_TEMPLATES, PRODUCT, RELATION_KINDS, edge_type

__all__ = [
    "EMBEDDINGS_FILE",
    "MANIFEST_FILE",
    "EmbeddingExport",
    "attach_embeddings",
    "conditioned_embeddings",
    "export_checkpoint",
    "export_embeddings",
    "graph_hash",
    "has_query_side",
    "kind_description_ids",
    "load_embeddings",
    "query_key",
]

log = logging.getLogger(__name__)

EMBEDDINGS_FILE = "embeddings.safetensors"
MANIFEST_FILE = "manifest.json"
#: 2 added the query-side keys (``query/...``) and the manifest's ``sides``/``query_keys``.
FORMAT_VERSION = 2
#: Prefix of a query-side key: ``query/kind/<kind>`` is the source side of ``kind/<kind>``.
QUERY_PREFIX = "query/"


def query_key(key: str) -> str:
    """The query-side key of a target-side export key (``kind/x`` -> ``query/kind/x``)."""
    if key == "global" or key.startswith(QUERY_PREFIX):
        raise ValueError(f"{key!r} has no query side; accepted: a kind/<kind> or description/<i> key")
    return QUERY_PREFIX + key


def has_query_side(encoder: RelationEncoder) -> bool:
    """Whether ``encoder`` embeds the source of a query differently from its targets.

    True for an encoder with ``encode_query`` unless it says it has no query operator
    (``encoder.head.has_query_operator`` False: a symmetric head, whose ``encode_query`` is
    ``encode``).
    """
    if not encodes_queries(encoder):
        return False
    head = getattr(encoder, "head", None)
    return bool(getattr(head, "has_query_operator", True))


@dataclass(frozen=True)
class EmbeddingExport:
    """A loaded export: ``tensors`` by key (each ``(N, D)``) and its manifest."""

    tensors: dict[str, Tensor]
    manifest: dict[str, Any]

    @property
    def num_products(self) -> int:
        return int(self.manifest["num_products"])


def graph_hash(processed_dir: str | Path) -> str:
    """A hash of a finished graph build: the sha256 of its manifest's file hashes."""
    manifest = read_manifest(processed_dir)
    if manifest is None:
        raise FileNotFoundError(
            f"no finished graph build in {processed_dir}; run `python scripts/build_graph.py` first"
        )
    return sha256_json(manifest["files"])


def kind_description_ids(data: HeteroData) -> dict[str, int]:
    """Per relation kind with descriptions, the id of its generic description.

    The generic template (:data:`~rcml_graph.relations.GENERIC_TEMPLATES`) when the table holds
    it, else the kind's description used by the most edges (lowest id on ties).
    """
    relation_text = list(data.relation_text)
    kind_of_desc = torch.as_tensor(data.relation_kind_of_desc).long()
    num_desc = len(relation_text)
    counts = torch.zeros(num_desc, dtype=torch.long)
    for kind in RELATION_KINDS:
        if edge_type(kind) in data.edge_types:
            counts += torch.bincount(data[edge_type(kind)].desc_id.long(), minlength=num_desc)
    out: dict[str, int] = {}
    for kind_id, kind in enumerate(RELATION_KINDS):
        candidates = (kind_of_desc == kind_id).nonzero().flatten()
        if candidates.numel() == 0:
            continue
        generic = [int(d) for d in candidates if relation_text[int(d)] == GENERIC_TEMPLATES[kind]]
        if generic:
            out[kind] = generic[0]
        else:
            # argmax returns the first maximum: the lowest id among ties.
            out[kind] = int(candidates[torch.argmax(counts[candidates])])
    return out


def _num_relations(encoder: RelationEncoder, data: HeteroData) -> int:
    return max(len(data.relation_text), int(getattr(encoder, "num_relations", 0) or 0))


def _relation_id(encoder: RelationEncoder, data: HeteroData, relation: str | int) -> int:
    """The description id behind a kind, a known description, a new string or an id."""
    if isinstance(relation, str):
        if relation in RELATION_KINDS:
            kinds = kind_description_ids(data)
            if relation not in kinds:
                raise ValueError(f"relation kind {relation!r} has no description in this graph; "
                                 f"kinds with descriptions: {sorted(kinds)}")
            relation_id = kinds[relation]
        elif relation in data.relation_text:
            relation_id = list(data.relation_text).index(relation)
        elif hasattr(encoder, "add_description"):
            relation_id = encoder.add_description(relation)  # type: ignore[attr-defined]
        else:
            raise ValueError(f"{type(encoder).__name__} cannot embed the new description {relation!r}; "
                             "accepted: a relation kind, a description of data.relation_text or an id")
    else:
        relation_id = int(relation)
    num_relations = _num_relations(encoder, data)
    if not 0 <= relation_id < num_relations:
        raise ValueError(f"relation id {relation_id} out of range [0, {num_relations})")
    return relation_id


def conditioned_embeddings(
    encoder: RelationEncoder,
    data: HeteroData,
    products: Tensor,
    relation: str | int | Tensor | None,
    batch_size: int = 1024,
    as_query: bool = False,
) -> Tensor:
    """Fused embeddings of ``products`` ``(B,)`` conditioned on one relation -> ``(B, D)``.

    Args:
        encoder: A :class:`RelationEncoder` (e.g. ``ConditionedEncoder.from_checkpoint(path)``).
        data: The graph the encoder was trained on (for its description table).
        products: Product indices.
        relation: ``None`` for relation-free embeddings; a relation kind (``"also_bought"``,
            its generic description); a description id; a description string (one of
            ``data.relation_text``, or a new string if the encoder has ``add_description``);
            or a ``(B,)`` tensor of description ids, one per product.
        batch_size: Distinct products per encoder call.
        as_query: Embed the products as the *source* of a query under ``relation`` (through
            the encoder's query operator; the target-side view for an encoder without one).

    Raises:
        ValueError: an unknown kind or id, a new string for an encoder that cannot embed it, or
            ``as_query`` without a relation.
    """
    products = products.long()
    if relation is None:
        if as_query:
            raise ValueError("as_query=True needs a relation; the relation-free (global) view has no query side")
        return fused_embedding(encode_global(encoder, products, batch_size))
    if isinstance(relation, Tensor):
        ids = relation.long()
        num_relations = _num_relations(encoder, data)
        if ids.shape != products.shape or (ids.numel() and not 0 <= int(ids.min()) <= int(ids.max()) < num_relations):
            raise ValueError(f"relation ids must have the products' shape {tuple(products.shape)} and lie in "
                             f"[0, {num_relations}); got shape {tuple(ids.shape)}")
    else:
        ids = torch.full_like(products, _relation_id(encoder, data, relation))
    return fused_embedding(encode_pairs(encoder, products, ids, _num_relations(encoder, data), batch_size,
                                       as_query=as_query))


def export_embeddings(
    encoder: RelationEncoder,
    data: HeteroData,
    out_dir: str | Path,
    *,
    method: str,
    descriptions: Sequence[str] = (),
    checkpoint: str | Path | None = None,
    graph_sha256: str | None = None,
    batch_size: int = 1024,
) -> Path:
    """Embed every product (global, per kind, per requested description) and write the export.

    With an encoder that has a query side (:func:`has_query_side`) every conditioned key also
    gets its query-side twin (``query/kind/<kind>``, ``query/description/<i>``).

    Args:
        encoder: The model.
        data: Its graph.
        out_dir: The export folder (created); ``manifest.json`` is written last.
        method: Label of the encoder (``rcml``, ``clip``...), stored in the manifest.
        descriptions: Extra description strings; skipped (and listed in the manifest) when the
            encoder cannot embed a new string.
        checkpoint: The checkpoint file, hashed into the manifest.
        graph_sha256: The graph build's hash (:func:`graph_hash`).
        batch_size: Products per encoder call.

    Returns:
        ``out_dir``.
    """
    out_dir = Path(out_dir)
    num_products = int(data[PRODUCT].num_nodes)
    products = torch.arange(num_products)
    tensors: dict[str, Tensor] = {"global": conditioned_embeddings(encoder, data, products, None, batch_size)}
    sides = {"global": "global"}
    query_side = has_query_side(encoder)

    def add(key: str, relation_id: int) -> None:
        tensors[key] = conditioned_embeddings(encoder, data, products, relation_id, batch_size)
        sides[key] = "target"
        if query_side:
            tensors[query_key(key)] = conditioned_embeddings(encoder, data, products, relation_id, batch_size,
                                                             as_query=True)
            sides[query_key(key)] = "query"

    kinds = kind_description_ids(data)
    for kind, desc_id in kinds.items():
        add(f"kind/{kind}", desc_id)
    described, skipped = [], []
    for index, text in enumerate(descriptions):
        try:
            # One id per string: a new description is added to the encoder's table once.
            add(f"description/{index}", _relation_id(encoder, data, text))
            described.append({"key": f"description/{index}", "text": text})
        except ValueError as err:
            log.warning("skipping description %r: %s", text, err)
            skipped.append({"text": text, "reason": str(err)})
    tensors = {key: value.float().contiguous() for key, value in tensors.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST_FILE).unlink(missing_ok=True)  # a crash below leaves no finished export
    with atomic_path(out_dir / EMBEDDINGS_FILE) as tmp:
        save_file(tensors, str(tmp))
    manifest = {
        "format_version": FORMAT_VERSION,
        "method": method,
        "checkpoint": None if checkpoint is None else {
            "path": str(Path(checkpoint).resolve()), "sha256": sha256_file(checkpoint)},
        "graph_sha256": graph_sha256,
        "num_products": num_products,
        "representation": "fused: L2-normalised text+image views (text alone without an image)",
        "shapes": {key: list(value.shape) for key, value in tensors.items()},
        "query_side": query_side,
        "sides": sides,
        "query_keys": {key: query_key(key) for key, side in sides.items() if side == "target" and query_side},
        "kinds": {kind: {"desc_id": d, "text": data.relation_text[d]} for kind, d in kinds.items()},
        "descriptions": described,
        "skipped_descriptions": skipped,
        "files": {EMBEDDINGS_FILE: sha256_file(out_dir / EMBEDDINGS_FILE)},
    }
    atomic_write_json(out_dir / MANIFEST_FILE, manifest)
    return out_dir


def load_embeddings(path: str | Path, expected_graph_sha256: str | None = None) -> EmbeddingExport:
    """Read an export folder written by :func:`export_embeddings`, after checking it.

    Raises:
        FileNotFoundError: no finished export (no manifest) in ``path``.
        ValueError: the tensors changed since the export, or were made for another graph.
    """
    path = Path(path)
    if path.is_file():
        path = path.parent
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise FileNotFoundError(f"no finished embedding export in {path} (missing {MANIFEST_FILE}); "
                                "run `python -m rcml_graph.embed checkpoint=<path>` first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    tensor_path = path / EMBEDDINGS_FILE
    if not tensor_path.is_file() or sha256_file(tensor_path) != manifest["files"][EMBEDDINGS_FILE]:
        raise ValueError(f"{tensor_path} is missing or changed since the export; export again")
    if expected_graph_sha256 is not None and manifest.get("graph_sha256") not in (None, expected_graph_sha256):
        raise ValueError(f"embeddings in {path} were exported for graph {str(manifest['graph_sha256'])[:12]}, "
                         f"the graph is now {expected_graph_sha256[:12]}; export again")
    return EmbeddingExport(load_file(str(tensor_path)), manifest)


def attach_embeddings(data: HeteroData, path: str | Path) -> HeteroData:
    """Set ``data["product"].x`` (global), ``x_<kind>`` (per kind, target side) and, for an export
    with a query side, ``xq_<kind>`` (per kind, query side) from an export; returns ``data``.

    Raises:
        ValueError: the export has another number of products than ``data``.
    """
    export = load_embeddings(path)
    num_products = int(data[PRODUCT].num_nodes)
    if export.num_products != num_products:
        raise ValueError(f"export in {path} has {export.num_products} products; the graph has {num_products}")
    data[PRODUCT].x = export.tensors["global"]
    for key, value in export.tensors.items():
        if key.startswith("kind/"):
            data[PRODUCT][f"x_{key[len('kind/'):]}"] = value
        elif key.startswith(QUERY_PREFIX + "kind/"):
            data[PRODUCT][f"xq_{key[len(QUERY_PREFIX + 'kind/'):]}"] = value
    return data


def export_checkpoint(
    checkpoint: str | Path,
    data: HeteroData,
    out_dir: str | Path | None = None,
    *,
    data_root: str | Path = "datasets",
    domain: str = "demo",
    method: str | None = None,
    descriptions: Sequence[str] = (),
    graph_sha256: str | None = None,
    device: str = "cpu",
    batch_size: int = 1024,
) -> Path:
    """Load a trained checkpoint (``ConditionedEncoder``) and :func:`export_embeddings` it.

    ``method`` defaults to the checkpoint's method label (its ``experiment=`` name: ``no_inter``
    and ``rcml`` share a variant), else its variant; ``out_dir`` to
    ``<data_root>/<domain>/embeddings/<method>``. Returns the export folder.
    """
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    from rcml_graph.training.encoder import ConditionedEncoder  # the training stack, only when needed

    encoder = ConditionedEncoder.from_checkpoint(checkpoint, device=device)
    method = method or str(encoder.config.get("method") or encoder.config.get("variant") or "rcml")
    out_dir = Path(out_dir) if out_dir is not None else Path(data_root) / domain / "embeddings" / method
    return export_embeddings(encoder, data, out_dir, method=method, descriptions=descriptions,
                             checkpoint=checkpoint, graph_sha256=graph_sha256, batch_size=batch_size)
