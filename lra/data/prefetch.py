"""Training batches placed on the devices ahead of the step that takes them (``config.prefetch``).

:class:`DevicePrefetcher` wraps a batch iterator (a :class:`lra.data.pipeline.TrainIterator`) and a ``place``
function (``lambda b: lra.sharding.shard_batch(b, mesh)``: the step's input sharding). With ``size`` > 0 one
background thread takes batches from the iterator, places them and keeps up to ``size`` of them waiting in a FIFO
queue, so that building a batch on the host and copying it to the devices overlap the running step. With ``size``
0 each batch is built and placed when it is asked for (no thread), the same as before prefetching existed.

Guarantees (``tests/lra/test_prefetch.py``):

- the order of the batches is the iterator's, so a run gives bit-identical results with any ``size``;
- ``get_state()`` is the iterator's state *after the last batch handed out* (not after the batches already made
  ahead), so a checkpoint records the position of the training, and a resumed run sees the batches an
  uninterrupted run would; ``set_state()`` drops the batches made ahead and restarts from the given state;
- an exception raised in the thread (by the iterator or by ``place``) is raised by ``next()`` in the consuming
  thread (the same exception object, its traceback reaching into the thread), after the batches made before it,
  and again by every later ``next()``; the end of the data (``StopIteration``) ends the
  iteration after the batches made before it;
- ``close()`` stops the thread (it never blocks forever on a full queue) and is safe to call more than once; the
  trainer calls it when the run ends or fails.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator

_END = object()  # the iterator is exhausted


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class DevicePrefetcher:
    """Batches from ``iterator`` passed through ``place``, up to ``size`` of them made ahead by a thread."""

    def __init__(self, iterator: Iterator, place: Callable[[Any], Any], size: int = 2):
        if size < 0:
            raise ValueError(f"prefetch size must be >= 0, got {size}")
        self.iterator, self.place, self.size = iterator, place, int(size)
        self._state = self._iterator_state()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._done = False
        self._failed: BaseException | None = None

    def _iterator_state(self):
        get = getattr(self.iterator, "get_state", None)
        return get() if get is not None else None

    # ------------------------------------------------------------------------------------------------ state

    def get_state(self):
        """The iterator's state after the last batch handed out."""
        return self._state

    def set_state(self, state) -> None:
        """Restart from ``state``: batches made ahead are dropped."""
        self.close()
        self.iterator.set_state(state)
        self._state, self._done, self._failed = self._iterator_state(), False, None

    # ------------------------------------------------------------------------------------------------ thread

    def _start(self) -> None:
        self._queue = queue.Queue(maxsize=self.size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(self._queue, self._stop), daemon=True,
                                        name="lra-prefetch")
        self._thread.start()

    def _put(self, q: queue.Queue, stop: threading.Event, item) -> bool:
        """Put ``item``, waiting for room; False if asked to stop meanwhile."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self, q: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                batch = next(self.iterator)
            except StopIteration:
                self._put(q, stop, _END)
                return
            except BaseException as e:  # noqa: BLE001 - every failure goes to the consumer
                self._put(q, stop, _Failure(e))
                return
            try:
                item = (self.place(batch), self._iterator_state())
            except BaseException as e:  # noqa: BLE001
                self._put(q, stop, _Failure(e))
                return
            if not self._put(q, stop, item):
                return

    def close(self) -> None:
        """Stop the thread and drop the batches made ahead (the state stays that of the last batch handed out)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = self._queue = self._stop = None

    # ------------------------------------------------------------------------------------------------ iteration

    def __iter__(self):
        return self

    def __next__(self):
        if self._failed is not None:
            raise self._failed
        if self._done:
            raise StopIteration
        if self.size == 0:
            try:
                batch = next(self.iterator)
            except StopIteration:
                self._done = True
                raise
            placed = self.place(batch)
            self._state = self._iterator_state()
            return placed
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if item is _END:
            self._done = True
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self._failed = item.error
            self.close()
            raise item.error
        placed, self._state = item
        return placed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
