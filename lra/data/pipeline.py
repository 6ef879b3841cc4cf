"""The batch pipeline: deterministic, resumable, per-process.

Data are NumPy arrays (one dict per split, see ``lra.tasks``). Training batches come from :class:`TrainIterator`:
each epoch is a permutation drawn from ``(seed, epoch)`` alone, so the batch at any step is a pure function of the
seed and the step; the iterator state ``{"epoch", "batch"}`` is saved with every checkpoint and a resumed run sees
exactly the batches an uninterrupted run would. The last incomplete batch of an epoch is dropped (training only).

Evaluation batches come from :func:`eval_batches`: every example exactly once, in order, the last batch padded to the
full batch size with ``weights`` 0 so that metrics are exact whatever the batch size or device count.

Multi-host: a global batch of ``B`` examples is cut into ``process_count`` consecutive slices and each process
builds only its slice (``B / process_count`` examples); ``lra.sharding.shard_batch`` assembles the global array.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np


def num_examples(arrays: dict[str, np.ndarray]) -> int:
    sizes = {k: len(v) for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"arrays of one split have different lengths: {sizes}")
    return next(iter(sizes.values()))


def _local_slice(global_batch_size: int, process_index: int, process_count: int) -> slice:
    if global_batch_size % process_count:
        raise ValueError(f"batch size {global_batch_size} is not divisible by the process count {process_count}")
    per = global_batch_size // process_count
    return slice(process_index * per, (process_index + 1) * per)


class TrainIterator:
    """Endless shuffled training batches with a saveable state."""

    def __init__(self, arrays, batch_size: int, *, seed: int, process_index: int = 0, process_count: int = 1,
                 shuffle: bool = True):
        self.arrays = arrays
        self.n = num_examples(arrays)
        if batch_size > self.n:
            raise ValueError(f"batch size {batch_size} is larger than the training set ({self.n} examples)")
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.local = _local_slice(batch_size, process_index, process_count)
        self.batches_per_epoch = self.n // batch_size
        self.epoch, self.batch = 0, 0
        self._perm_epoch, self._perm = None, None

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def set_state(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

    def _permutation(self) -> np.ndarray:
        if self._perm_epoch != self.epoch:
            if self.shuffle:
                self._perm = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
            else:
                self._perm = np.arange(self.n)
            self._perm_epoch = self.epoch
        return self._perm

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        start = self.batch * self.batch_size
        idx = self._permutation()[start:start + self.batch_size][self.local]
        self.batch += 1
        if self.batch == self.batches_per_epoch:
            self.epoch, self.batch = self.epoch + 1, 0
        return {k: v[idx] for k, v in self.arrays.items()}


def eval_batches(arrays, batch_size: int, *, process_index: int = 0, process_count: int = 1
                 ) -> Iterator[dict[str, np.ndarray]]:
    """Every example once, in order; the last batch padded (repeating example 0) with ``weights`` = 0."""
    n = num_examples(arrays)
    local = _local_slice(batch_size, process_index, process_count)
    for start in range(0, n, batch_size):
        idx = np.arange(start, start + batch_size)
        weights = (idx < n).astype(np.float32)
        idx = np.where(idx < n, idx, 0)[local]
        batch = {k: v[idx] for k, v in arrays.items()}
        batch["weights"] = weights[local]
        yield batch
