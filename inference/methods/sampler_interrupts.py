"""Interrupts that a sampler swallows are raised again once it returns.

nutpie and PyMC's own NUTS catch ``KeyboardInterrupt`` while they sample and return the draws
made so far, as if sampling had finished: nutpie a shorter ``draw`` dimension with the unfinished
chains all NaN, PyMC's NUTS fewer chains (or a ``ValueError`` when no draw was kept). A run
that goes on from there reports a partial posterior as a result. :func:`propagate_interrupts`
notes every interrupt raised by a Python signal handler while its block runs (Ctrl-C, and the
termination signals that the command line turns into interrupts) and raises it again when the
block ends, whatever the block did with it; its :class:`InterruptWatch` can also stop the
sampler's remaining chains at once (PyMC's sequential NUTS would otherwise start each of them).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["InterruptWatch", "propagate_interrupts"]

#: The signals whose Python handlers may raise an interrupt (where the platform has them).
_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class InterruptWatch:
    """What :func:`propagate_interrupts` saw: the interrupts raised in its block, first first."""

    def __init__(self) -> None:
        self.caught: list[BaseException] = []

    @property
    def interrupted(self) -> bool:
        return bool(self.caught)

    def check(self, *args: Any, **kwargs: Any) -> None:
        """Raise the first interrupt again, if there was one.

        Fits PyMC's per-draw ``callback`` of ``pm.sample``: PyMC's sequential NUTS swallows
        Ctrl-C only for the chain it is sampling and then starts the next one in full; with
        this callback every later chain stops at its first draw.
        """
        if self.caught:
            raise self.caught[0]


@contextlib.contextmanager
def propagate_interrupts() -> Iterator[InterruptWatch]:
    """Raise again, when the block ends, an interrupt that code inside it caught.

    Each signal in SIGINT, SIGTERM, SIGHUP that has a Python handler (Python's own for SIGINT
    raises ``KeyboardInterrupt``) gets a wrapper that calls that handler and notes the
    exception it raises. If the block then returns, or raises something else (PyMC's
    "Not enough samples to build a trace" after an interrupt in tuning), the first noted
    interrupt is raised instead. Ignored and default-action signals are left alone, and the
    previous handlers are restored on exit. Outside the main thread (where Python handles no
    signals) the block runs unchanged.

    Yields
    ------
    InterruptWatch
        The interrupts noted so far; its ``check`` can end a sampler's remaining work early.
    """
    watch = InterruptWatch()
    if threading.current_thread() is not threading.main_thread():
        yield watch
        return
    previous = {}
    for signum in _SIGNALS:
        handler = signal.getsignal(signum)
        if callable(handler):
            previous[signum] = handler
            signal.signal(signum, _noting(handler, watch.caught))
    try:
        yield watch
    except BaseException as exc:
        if watch.caught and exc is not watch.caught[0]:
            raise watch.caught[0] from exc
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    watch.check()


def _noting(handler: Callable[[int, Any], Any], caught: list[BaseException]):
    def wrapper(signum: int, frame: Any) -> Any:
        try:
            return handler(signum, frame)
        except BaseException as exc:
            caught.append(exc)
            raise

    return wrapper
