"""Produce the next items of an iterator in a background thread while the caller works.

A streamed pass alternates two kinds of work per chunk: reading and decoding it (pyarrow, and
the copy into one float64 matrix) and adding it to the statistics (NumPy reductions and a BLAS
product). Both release the GIL, so with the next chunk decoded in a thread while the current one
is added, the pass takes about the longer of the two instead of their sum. Memory stays bounded:
at most ``depth`` decoded chunks wait in the queue.

Errors raised by the producer (a bad value in row 73,112,905) reach the caller in order, after
the items before them; when the caller stops early (an error of its own, Ctrl-C, ``break``) the
producer is told to stop and the thread ends after its current item.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator

__all__ = ["prefetched"]

_DONE = object()
_POLL_SECONDS = 0.1


def prefetched[T](items: Iterable[T], *, depth: int = 2) -> Iterator[T]:
    """Yield the items of ``items``, each produced up to ``depth`` items ahead in a thread.

    Parameters
    ----------
    items : iterable
        Consumed in a daemon thread, in order.
    depth : int
        The most items produced and not yet taken (bounds the memory).

    Yields
    ------
    The items of ``items``, in order; an exception raised while producing them is raised here,
    at its place in the sequence.
    """
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}.")
    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                box.put(entry, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:  # handed to the caller, in order
            put((_DONE, exc))
            return
        put((_DONE, None))

    thread = threading.Thread(target=produce, name="hyperbayes-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item, error = box.get()
            if item is _DONE:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5 * _POLL_SECONDS)
