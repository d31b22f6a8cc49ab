"""Run-directory metric sinks: a long-format ``metrics.csv`` and TensorBoard event files."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import IO, Any


class MetricsLogger:
    """Append scalars to ``run_dir/metrics.csv`` (``step,epoch,name,value``) and TensorBoard.

    Args:
        run_dir: the run folder; TensorBoard events go to ``run_dir/tensorboard``.
        tensorboard: also write TensorBoard events.
        enabled: False makes every call a no-op (non-zero DDP ranks).
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, enabled: bool = True) -> None:
        self.enabled = enabled
        self._file: IO[str] | None = None
        self._writer: Any = None
        if not enabled:
            return
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / "metrics.csv"
        fresh = not path.exists()
        self._file = path.open("a", newline="", encoding="utf-8")
        self._csv = csv.writer(self._file)
        if fresh:
            self._csv.writerow(["step", "epoch", "name", "value"])
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tensorboard"))

    def log(self, metrics: dict[str, float], step: int, epoch: int) -> None:
        """Record every ``name: value`` of ``metrics`` at ``step``."""
        if not self.enabled:
            return
        assert self._file is not None
        for name, value in metrics.items():
            self._csv.writerow([step, epoch, name, f"{float(value):.8g}"])
            if self._writer is not None:
                self._writer.add_scalar(name, float(value), step)
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._writer is not None:
            self._writer.close()
            self._writer = None
