"""Run a producer a few items ahead in a thread, so its work (decoding, drawing) overlaps the consumer's.

    for frame, rgb in Prefetch(decoded(path, fps), depth=8):    # decoding overlaps MediaPipe
        ...
    with Prefetch(draw(), depth=2, name="pix2dance-draw") as ahead:
        for chunk in ahead: ...                                  # leaving the block stops the thread

An error in the producer is raised in the consumer, after the items made before it. Leaving the
loop early (break, an exception, close()) stops the producer at its next item and joins its thread:
no thread outlives its consumer.
"""

from __future__ import annotations

import queue
import threading
from typing import Iterable, Iterator

_END = object()


class Prefetch:
    """Iterate `items` in a daemon thread, at most `depth` items ahead of the consumer."""

    def __init__(self, items: Iterable, depth: int = 2, name: str = "pix2dance-prefetch"):
        self._queue: queue.Queue = queue.Queue(depth)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(items,), name=name, daemon=True)
        self._thread.start()

    def _run(self, items: Iterable) -> None:
        try:
            for item in items:
                while not self._stop.is_set():          # a full queue: wait, but hear close()
                    try:
                        self._queue.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._error = e
        finally:
            self._queue.put(_END)

    def __iter__(self) -> Iterator:
        try:
            while (item := self._queue.get()) is not _END:
                yield item
            if self._error is not None:
                raise self._error
        finally:
            self.close()

    def close(self) -> None:
        """Stop the producer and wait for its thread (idempotent)."""
        self._stop.set()
        while self._thread.is_alive():                  # unblock a producer waiting on a full queue
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
