"""The epoch/batch position shared by the project's seeded batch samplers."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
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

    #: Batches computed ahead on worker threads while the caller works on the current one
    #: (0: none). Batches are pure functions of ``(seed, epoch, index)``, so prefetching changes
    #: neither the batches nor the resume position (:meth:`state_dict` counts batches handed
    #: out, not computed).
    prefetch: int = 0
    #: Worker threads computing the prefetched batches (used when ``prefetch > 0``). With more
    #: than one, several :meth:`batch_at` calls run at once, so a subclass must keep its
    #: per-call scratch per thread; batches still come out in order.
    prefetch_workers: int = 1

    def __iter__(self) -> Iterator[PairBatch]:
        """The remaining batches of the current epoch; afterwards the next epoch is current."""
        if self.prefetch > 0:
            yield from self._prefetching()
            return
        while self._batch < len(self):
            batch = self.batch_at(self.epoch, self._batch)
            self._batch += 1
            yield batch
        self.epoch, self._batch = self.epoch + 1, 0

    def _prefetching(self) -> Iterator[PairBatch]:
        epoch, following = self.epoch, self._batch
        workers = self.prefetch_workers
        if workers < 1:
            raise ValueError(f"prefetch_workers={workers!r}; accepted: an integer >= 1")
        ahead = max(self.prefetch, workers)
        pending: deque[Future[PairBatch]] = deque()
        # torch's own DataLoader would need a Dataset and worker processes for what is one call
        # per batch here; threads keep the order and the device tensors in-process, and torch
        # releases the GIL inside its ops, so several workers overlap their memory stalls.
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="batch-prefetch") as pool:
            try:
                while self._batch < len(self):
                    while following < len(self) and len(pending) <= ahead:
                        pending.append(pool.submit(self.batch_at, epoch, following))
                        following += 1
                    batch = pending.popleft().result()
                    self._batch += 1
                    yield batch
            finally:
                for future in pending:
                    future.cancel()
        self.epoch, self._batch = epoch + 1, 0
