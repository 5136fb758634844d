"""Independent simulations as a map on ``dask.distributed``, with a progress bar.

:func:`cluster_client` gives a client: of a running scheduler (by address), or of a new
LocalCluster of single-threaded worker processes that is closed with the block.
:func:`map_indexed` runs ``fn(i, **shared)`` for i = 0..n-1 on it, collects the results as they
complete, and turns a task that raised (its worker died, say) into a failure record instead of
stopping the others. Nothing here sets a default client or other global state.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

__all__ = ["cluster_client", "map_indexed"]


@contextlib.contextmanager
def cluster_client(
    scheduler: str | None = None, n_workers: int | None = None, *, as_default: bool = False
) -> Iterator[Any]:
    """A ``distributed.Client`` for the block: connected to ``scheduler`` (an address such as
    ``tcp://host:8786``), or to a new LocalCluster of ``n_workers`` processes with one thread
    each (default: one per core), closed when the block ends. With ``as_default`` Dask
    collections computed in the block run on it (the streamed statistics pass); otherwise
    work is submitted to the client explicitly (SBC's map)."""
    from distributed import Client, LocalCluster

    if scheduler is not None:
        with Client(scheduler, set_as_default=as_default) as client:
            yield client
        return
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=":0",  # any free port: 8787 may be another cluster's
            silence_logs=logging.WARNING,
        ) as cluster,
        Client(cluster, set_as_default=as_default) as client,
    ):
        yield client


def map_indexed(
    client: Any,
    fn: Callable[..., dict[str, Any]],
    n: int,
    *,
    label: str,
    start: int = 0,
    workers: Sequence[str] | None = None,
    progress: bool = False,
    **shared: Any,
) -> list[dict[str, Any]]:
    """``[fn(i, **shared) for i in range(start, start + n)]``, computed on ``client``'s workers.

    ``fn`` must be importable by the workers (a module-level function) and return a dict with
    a ``status``; a task that raises becomes ``{"index": i, "status": "failed", "message":
    ...}``. ``workers`` restricts the tasks to those worker addresses. On an interrupt the
    tasks still queued are cancelled.
    """
    from distributed import as_completed

    token = uuid.uuid4().hex[:8]
    futures = client.map(
        fn,
        range(start, start + n),
        key=[f"{label}-{token}-{i}" for i in range(start, start + n)],
        workers=list(workers) if workers else None,
        pure=False,
        **shared,
    )
    index_of = {f.key: i for i, f in enumerate(futures)}
    results: list[dict[str, Any]] = [{}] * n
    bar = _ProgressBar(label, n) if progress else None
    try:
        for future in as_completed(futures, loop=client.loop):
            i = index_of[future.key]
            try:
                results[i] = future.result()
            except Exception as exc:  # the task itself failed (e.g. its worker died)
                results[i] = {
                    "index": start + i,
                    "status": "failed",
                    "message": f"{type(exc).__name__}: {exc}",
                }
            if bar:
                bar.update(failed=results[i].get("status") != "ok")
    finally:
        client.cancel(futures)  # after an interrupt nothing goes on running
        if bar:
            bar.close()
    return results


class _ProgressBar:
    """A one-line text progress bar on stderr: done/total, failures, elapsed seconds."""

    def __init__(self, label: str, total: int, width: int = 30) -> None:
        self.label, self.total, self.width = label, total, width
        self.done = self.failed = 0
        self.start = time.perf_counter()
        self._draw()

    def update(self, *, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        self._draw()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()

    def _draw(self) -> None:
        filled = self.width * self.done // max(self.total, 1)
        sys.stderr.write(
            f"\r{self.label} [{'#' * filled}{'.' * (self.width - filled)}] "
            f"{self.done}/{self.total}, {self.failed} failed, "
            f"{time.perf_counter() - self.start:.0f} s"
        )
        sys.stderr.flush()
