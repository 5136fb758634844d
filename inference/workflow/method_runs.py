"""Running methods one after another with their failures isolated: the loop behind every
comparison table (:mod:`~hyperbayes.inference.workflow.compare`, the family's
:mod:`~hyperbayes.inference.workflow.family_compare`).

A method that raises becomes a row marked ``failed`` with its message (``not applicable`` for
an improper prior it cannot use) while the others still run; a method's Python warnings become
its summary's warnings, recorded where the user looks; Ctrl-C stops the whole loop.
"""

from __future__ import annotations

import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from hyperbayes.inference.methods.results import MethodSummary
from hyperbayes.models.hyperpriors import ImproperPriorError

__all__ = ["run_isolated"]


def run_isolated(
    names: Sequence[str],
    call: Callable[[str], MethodSummary],
    *,
    make_row: Callable[[MethodSummary, float], Any],
    failed_row: Callable[..., Any],
    progress: bool = False,
) -> tuple[list[Any], dict[str, MethodSummary]]:
    """Run each method with ``call(name)``, isolating failures: the loop behind every table.

    Parameters
    ----------
    names : sequence of str
        The methods, in the order to run them.
    call : callable
        ``call(name)`` runs one method and returns its summary.
    make_row : callable
        ``make_row(summary, elapsed_seconds)``: the row of a method that ran.
    failed_row : callable
        ``failed_row(name, status, wall_time=..., message=...)``: the row of a method that
        raised (status ``failed``) or does not apply (an improper prior: ``not applicable``).
    progress : bool
        Say on stderr which method is running, and why one failed.

    Returns
    -------
    rows : list
        One per name, in order.
    results : dict of str to MethodSummary
        The methods that ran; a method's Python warnings are added to its summary's warnings.
    """
    rows, results = [], {}
    for i, name in enumerate(names, start=1):
        if progress:
            print(f"hyperbayes: [{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        try:
            # A method's Python warnings become the row's warnings: recorded where the user
            # looks, neither lost nor printed twice.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                summary = call(name)
            summary = _with_caught(summary, caught)
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the whole comparison stops, no row
            raise
        except ImproperPriorError as exc:
            rows.append(failed_row(name, "not applicable", message=str(exc)))
            continue
        except Exception as exc:  # isolate the failure; the other methods still run
            message = f"{type(exc).__name__}: {exc}"
            if progress:
                print(f"hyperbayes: {name} failed: {message}", file=sys.stderr)
                traceback.print_exc(limit=3, file=sys.stderr)
            rows.append(failed_row(name, "failed", wall_time=time.perf_counter() - start,
                                   message=message))
            continue
        results[name] = summary
        rows.append(make_row(summary, time.perf_counter() - start))
        if progress:
            print(f"hyperbayes: {name} done in {rows[-1].wall_time:.1f} s", file=sys.stderr)
    return rows, results


def _with_caught(summary: MethodSummary, caught: list[warnings.WarningMessage]) -> MethodSummary:
    extra = [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)]
    new = [m for m in dict.fromkeys(extra) if m not in summary.warnings]
    return replace(summary, warnings=(*summary.warnings, *new)) if new else summary


