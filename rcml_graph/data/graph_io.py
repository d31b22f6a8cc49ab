"""Save and load a built graph: tensors as safetensors, everything else as JSON.

Layout of a processed folder (``datasets/<domain>/processed/``):

- ``graph.safetensors``: every tensor, keyed ``<store>/<attribute>`` (store ``product``,
  ``product__also_bought__product``, or ``_global`` for graph-level tensors);
- ``graph.json``: node counts and every non-tensor attribute (texts, ids, names, the
  relation-text table);
- ``build_report.json``: what the build repaired, dropped and measured;
- ``manifest.json``: written last; the hashes of the input and of the settings, and the sha256
  of each artifact. A folder without a valid manifest is not a finished build.

Loading never unpickles anything.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch_geometric.data import HeteroData

from rcml_graph.io_utils import atomic_open, atomic_path, atomic_write_json, sha256_file

try:  # orjson writes the graph's texts several times faster than json; json is the fallback.
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    orjson = None

GRAPH_TENSORS = "graph.safetensors"
GRAPH_JSON = "graph.json"
REPORT_JSON = "build_report.json"
MANIFEST_JSON = "manifest.json"
_SEP = "__"
_GLOBAL = "_global"


def _store_key(key: str | tuple[str, str, str]) -> str:
    return key if isinstance(key, str) else _SEP.join(key)


def _parse_store_key(key: str) -> str | tuple[str, str, str]:
    parts = key.split(_SEP)
    return parts[0] if len(parts) == 1 else tuple(parts)  # type: ignore[return-value]


def _json_bytes(obj: Any, indent: bool) -> bytes:
    """``obj`` as UTF-8 JSON (indented by 2 if ``indent``), by orjson where it can."""
    if orjson is not None:
        option = orjson.OPT_SERIALIZE_NUMPY | (orjson.OPT_INDENT_2 if indent else 0)
        try:
            return orjson.dumps(obj, option=option) + (b"\n" if indent else b"")
        except TypeError:  # a type orjson does not know: json decides (and explains)
            pass
    text = json.dumps(obj, ensure_ascii=False, indent=2 if indent else None)
    return (text + ("\n" if indent else "")).encode("utf-8")


def _json_loads(raw: bytes) -> Any:
    return orjson.loads(raw) if orjson is not None else json.loads(raw)


def graph_to_artifacts(data: HeteroData) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()

    def own(value: torch.Tensor) -> torch.Tensor:
        # safetensors refuses shared storage (a reverse edge type shares desc_id/split).
        value = value.contiguous()
        if value.numel() and value.untyped_storage().data_ptr() in seen:
            value = value.clone()
        seen.add(value.untyped_storage().data_ptr())
        return value

    meta: dict[str, Any] = {"node_types": {}, "edge_types": [], "global": {}}
    for name, value in data.to_dict().get("_global_store", {}).items():
        if isinstance(value, torch.Tensor):
            tensors[f"{_GLOBAL}/{name}"] = own(value)
        else:
            meta["global"][name] = value
    for store in data.node_stores + data.edge_stores:
        key = _store_key(store._key)
        attrs: dict[str, Any] = {}
        for name, value in store.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{key}/{name}"] = own(value)
            elif name != "num_nodes":
                attrs[name] = value
        if isinstance(store._key, str):
            meta["node_types"][key] = {"num_nodes": int(store.num_nodes), "attrs": attrs}
        else:
            meta["edge_types"].append({"key": key, "attrs": attrs})
    return tensors, meta


def artifacts_to_graph(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> HeteroData:
    data = HeteroData()
    for name, value in meta["global"].items():
        data[name] = value
    for key, info in meta["node_types"].items():
        data[key].num_nodes = info["num_nodes"]
        for name, value in info["attrs"].items():
            data[key][name] = value
    for info in meta["edge_types"]:
        for name, value in info["attrs"].items():
            data[_parse_store_key(info["key"])][name] = value
    for full_name, tensor in tensors.items():
        key, name = full_name.split("/", 1)
        if key == _GLOBAL:
            data[name] = tensor
        else:
            data[_parse_store_key(key)][name] = tensor
    return data


def save_processed(
    out_dir: str | Path, data: HeteroData, report: dict[str, Any], provenance: dict[str, Any]
) -> Path:
    """Write graph, report and (last) the manifest; each file atomically."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = out_dir / MANIFEST_JSON
    # Invalidate first: a crash below leaves no manifest, so the next run rebuilds.
    if manifest_path.exists():
        os.unlink(manifest_path)
    tensors, meta = graph_to_artifacts(data)
    with atomic_path(out_dir / GRAPH_TENSORS) as tmp:
        save_file(tensors, str(tmp))
    with atomic_open(out_dir / GRAPH_JSON) as handle:
        handle.write(_json_bytes(meta, indent=False))
    with atomic_open(out_dir / REPORT_JSON) as handle:
        handle.write(_json_bytes(report, indent=True))
    files = {name: sha256_file(out_dir / name) for name in (GRAPH_TENSORS, GRAPH_JSON, REPORT_JSON)}
    atomic_write_json(manifest_path, {**provenance, "files": files})
    return out_dir


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest of a finished build, or None if absent, unreadable or inconsistent."""
    out_dir = Path(out_dir)
    try:
        manifest = json.loads((out_dir / MANIFEST_JSON).read_bytes())
        files = manifest["files"]
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None
    for name, digest in files.items():
        path = out_dir / name
        if not path.is_file() or sha256_file(path) != digest:
            return None
    return manifest


def load_graph(out_dir: str | Path) -> HeteroData:
    """Load a finished build from ``datasets/<domain>/processed/``."""
    out_dir = Path(out_dir)
    if read_manifest(out_dir) is None:
        raise FileNotFoundError(
            f"no finished graph build in {out_dir} (missing or inconsistent {MANIFEST_JSON}); "
            "run `python scripts/build_graph.py domain=<name>` first"
        )
    meta = _json_loads((out_dir / GRAPH_JSON).read_bytes())
    return artifacts_to_graph(load_file(str(out_dir / GRAPH_TENSORS)), meta)


def load_report(out_dir: str | Path) -> dict[str, Any]:
    return _json_loads((Path(out_dir) / REPORT_JSON).read_bytes())
