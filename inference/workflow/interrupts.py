"""Termination signals end a run the way Ctrl-C does: clean up, write nothing, exit 130.

Python turns SIGINT into ``KeyboardInterrupt``, which unwinds through every ``finally`` and
``except BaseException`` (the run directory's temporary sibling is removed on the way out).
SIGTERM (``kill``, a batch scheduler, ``timeout``) and SIGHUP (the terminal closed) kill the
process on the spot by default, leaving that sibling behind. :func:`signals_as_interrupts`
makes them raise :class:`Interrupted`, a ``KeyboardInterrupt``, so every path that handles
Ctrl-C handles them too; :func:`interrupted` is the command line's last word on it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

__all__ = ["EXIT_INTERRUPTED", "Interrupted", "interrupted", "signals_as_interrupts"]

#: The shell's convention for a run ended by SIGINT (128 + 2); used for every interrupt.
EXIT_INTERRUPTED = 130
#: Signals that become :class:`Interrupted` (those the platform has).
TERMINATION_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Interrupted(KeyboardInterrupt):
    """A termination signal (SIGTERM, SIGHUP) received while running, raised as an interrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def __reduce__(self):  # pickled by its signal number (args holds its name)
        return (type(self), (self.signum,))


@contextlib.contextmanager
def signals_as_interrupts(signals: tuple[int, ...] = TERMINATION_SIGNALS) -> Iterator[None]:
    """Inside the block, each of ``signals`` raises :class:`Interrupted` in the main thread.

    A signal that is ignored when the block starts stays ignored (``nohup`` ignores SIGHUP for
    the process on purpose). The previous handlers are restored when the block ends. Outside
    the main thread, where Python cannot set handlers, the block runs unchanged.
    """
    previous = {}
    main_thread = threading.current_thread() is threading.main_thread()
    for signum in signals if main_thread else ():
        handler = signal.getsignal(signum)
        if handler is signal.SIG_IGN or handler is None:  # None: set outside Python; keep it
            continue
        previous[signum] = signal.signal(signum, _raise_interrupted)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def interrupted(exc: KeyboardInterrupt) -> int:
    """Say on stderr, in one line, that the run was interrupted; return the exit code 130."""
    name = exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"
    with contextlib.suppress(OSError):  # after SIGHUP the terminal may be gone
        print(f"hyperbayes: interrupted ({name}); nothing was written.", file=sys.stderr)
    return EXIT_INTERRUPTED


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(signum)
