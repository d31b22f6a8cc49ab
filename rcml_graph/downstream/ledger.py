"""Which link-prediction runs a results folder already holds, and from which features.

A grid of link predictors (sources x hyperparameter cells x seeds) runs for hours on a CPU; a
killed grid should resume where it stopped, not start again, and must never skip a run whose
rows were made from *other* features (another checkpoint behind the same ``method`` name): the
result rows do not name the checkpoint. The ledger, ``<results_dir>/<domain>/runs.json``, maps
each finished run's identity (method, model, seed and the rows' identity keys) to a fingerprint
of the features it read (node features, source-role features, pair score) and the environment
that computed it (:func:`environment`: versions, CPU or GPU, intra-op threads). The environment
is recorded, not compared: the link predictor is chaotic in floating-point summation order (on
magazines, one seed's test HeaRT MRR moved from 0.326 to 0.352 between 1 and 2 CPU threads,
same code and features), so rows from another machine or thread count differ in their digits,
and the record says why. The ledger is written after
the run's rows, under the same kind of inter-process lock as the results files, and atomically,
so a run is in the ledger only if its rows are on disk.

Hand-written: no library keeps such a record for PyG/OGB link-prediction grids (Hydra's
multirun has no notion of a finished job).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from filelock import FileLock
from torch import Tensor

from rcml_graph.io_utils import atomic_write_json

__all__ = ["LEDGER_NAME", "RunLedger", "environment", "features_fingerprint", "run_key"]

#: File name of the ledger inside ``<results_dir>/<domain>/``.
LEDGER_NAME = "runs.json"
_FORMAT = 1


def features_fingerprint(tensors: Iterable[Tensor | None]) -> str:
    """sha256 (first 16 hex digits) of the tensors' dtypes, shapes and values, in order; None counts."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none;")
            continue
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)};".encode())
        # bytes of the storage: bf16 and other dtypes numpy lacks are viewed as raw bytes
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def environment(device: str = "cpu") -> dict[str, str | int]:
    """What computed a run, beyond its code and inputs: library versions, the processor, threads."""
    import torch_geometric

    if torch.device(device).type == "cuda":
        processor = torch.cuda.get_device_name(torch.device(device))
    else:
        processor = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    processor = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return {"torch": torch.__version__, "torch_geometric": torch_geometric.__version__, "device": device,
            "processor": processor, "threads": torch.get_num_threads()}


def run_key(method: str, model: str, seed: int, identity: Mapping[str, object]) -> str:
    """A stable string naming one run: ``method``, ``model``, ``seed`` and the rows' identity keys."""
    return json.dumps({"method": method, "model": model, "seed": int(seed), **identity}, sort_keys=True)


class RunLedger:
    """The finished runs of one results folder (``runs.json``), with their features' fingerprints.

    Args:
        path: The ledger file (created on the first :meth:`record`).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _runs(self) -> dict[str, dict]:
        if not self.path.exists():
            return {}
        payload = json.loads(self.path.read_text(encoding="utf-8"))
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT or not isinstance(payload.get("runs"), dict):
            raise ValueError(f"{self.path} is not a link-prediction run ledger (format {_FORMAT}); move it away "
                             "or pass another linkpred.results_dir")
        return dict(payload["runs"])

    def fingerprint(self, key: str) -> str | None:
        """The features fingerprint recorded for the run ``key``, or None if it never finished."""
        record = self._runs().get(key)
        return None if record is None else str(record["features"])

    def environment(self, key: str) -> dict[str, object] | None:
        """The environment recorded with the run ``key`` (None if none was)."""
        return self._runs().get(key, {}).get("environment")

    def record(self, key: str, fingerprint: str, environment: Mapping[str, object] | None = None) -> None:
        """Record the run ``key`` as finished from features ``fingerprint`` (replacing an older record)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path.with_name(f".{self.path.name}.lock"))):
            runs = self._runs()
            runs[key] = {"features": fingerprint, **({} if environment is None else {"environment": dict(environment)})}
            atomic_write_json(self.path, {"format": _FORMAT, "runs": runs})
