"""The epoch/batch position shared by the project's seeded batch samplers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rcml_graph.sampling.batch import PairBatch


class EpochCursor:
    """Iterates ``batch_at(epoch, index)`` over an epoch and resumes from a saved position.

    Subclasses set ``seed``, ``epoch = 0`` and ``_batch = 0`` and implement ``__len__``
    (batches per epoch) and ``batch_at``; batch ``b`` of epoch ``e`` must depend only on
    ``(seed, e, b)`` so that a resumed run continues with the same batches.
    """

    seed: int
    epoch: int
    _batch: int

    def __len__(self) -> int:
        raise NotImplementedError

    def batch_at(self, epoch: int, index: int) -> PairBatch:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch."""
        if epoch < 0:
            raise ValueError(f"epoch={epoch!r}; accepted: an integer >= 0")
        self.epoch, self._batch = epoch, 0

    def state_dict(self) -> dict[str, int]:
        """The position to resume from: the epoch and the next batch within it."""
        return {"seed": self.seed, "epoch": self.epoch, "batch": self._batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if int(state["seed"]) != self.seed:
            raise ValueError(f"state seed {state['seed']!r} differs from this sampler's "
                             f"seed {self.seed}; accepted: a state saved with seed {self.seed}")
        batch = int(state["batch"])
        if not 0 <= batch <= len(self):
            raise ValueError(f"state batch {batch} out of range; accepted: 0..{len(self)}")
        self.epoch, self._batch = int(state["epoch"]), batch

    def __iter__(self) -> Iterator[PairBatch]:
        """The remaining batches of the current epoch; afterwards the next epoch is current."""
        while self._batch < len(self):
            batch = self.batch_at(self.epoch, self._batch)
            self._batch += 1
            yield batch
        self.epoch, self._batch = self.epoch + 1, 0
