"""The ``hyperbayes`` command: parse, run a method (or the comparison), print, map errors.

A model formula or a model option (``--formula "y ~ x + (1|g)"``, ``--se COL``, ``--weights
COL``, ``--penalise COLS``, ``--reml`` / ``--ml``, ``--fixed-prior SD``) makes it a family run
on a model specification (see :mod:`hyperbayes.inference.workflow.api`).

Exit codes: 0 success (a degenerate optimum is a finding, not a failure); 1 a method failed
while running; 2 bad input (data, options, an output directory that exists or cannot be
created); 130 interrupted (SIGINT, SIGTERM, SIGHUP; nothing is written). Errors are one line
on stderr, never a traceback (``--debug`` shows it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from hyperbayes.inference.methods.exact import ImproperPosteriorError
from hyperbayes.inference.methods.results import MethodSummary
from hyperbayes.inference.workflow.api import PreparedRun, prepare_run
from hyperbayes.inference.workflow.cli_parser import build_parser
from hyperbayes.inference.workflow.data_sources import read_data
from hyperbayes.inference.workflow.interrupts import interrupted, signals_as_interrupts
from hyperbayes.inference.workflow.registry import METHODS, get_runner
from hyperbayes.inference.workflow.rundir import UnusableDestination
from hyperbayes.models.data import DataError, Dataset, DataWarning, load_diabetes
from hyperbayes.models.hyperpriors import ImproperPriorError, OptionError
from hyperbayes.models.streaming import FOLDS, StreamedData

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(ValueError):
    """Bad command-line input (exit code 2)."""


#: What bad input raises (exit 2): the project's validation errors, each with a message that
#: names the input and the fix. Every other exception is a failure (exit 1), whatever its type:
#: a ValueError from NumPy ("All-NaN slice encountered") comes from a method, not from the user.
#: (The exact oracle's ImproperPosteriorError is the same finding as ImproperPriorError.)
_BAD_INPUT = (
    DataError,
    OptionError,
    ImproperPriorError,
    ImproperPosteriorError,
    UsageError,
    FileExistsError,
    UnusableDestination,
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hyperbayes`` console script; returns the exit code."""
    parser = build_parser(fit=_cmd_fit, compare=_cmd_compare, report=_cmd_report, demo=_cmd_demo)
    args = parser.parse_args(argv)
    try:
        # SIGTERM and SIGHUP end the run as Ctrl-C does (KeyboardInterrupt; exit 130).
        with warnings.catch_warnings(), signals_as_interrupts():
            # A data warning is shown once, as one line, not with a source excerpt.
            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = _one_line_warning
            return args.handler(args)
    except KeyboardInterrupt as exc:
        return interrupted(exc)
    except _BAD_INPUT as exc:  # one line naming the input and the fix, no traceback
        if getattr(args, "debug", False):
            raise
        print(f"hyperbayes: error: {_first_line(exc)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as exc:  # a method (or the writing) failed: one line, no traceback
        if getattr(args, "debug", False):
            raise
        # Name the method that failed; an OSError comes from the files, not from the method.
        what = args.command if isinstance(exc, OSError) else getattr(args, "method", args.command)
        print(
            f"hyperbayes: failed: {what}: {type(exc).__name__}: {_first_line(exc)} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def _first_line(exc: BaseException) -> str:
    """The first line of an exception's message (PyMC's run to a dozen)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "(no message)"


def _family_options(args: argparse.Namespace) -> dict | None:
    """The model options of a family run (None: today's shared-sigma run)."""
    penalise = [c.strip() for c in args.penalise.split(",") if c.strip()] if args.penalise else None
    given = {"formula": args.formula, "standard_errors": args.se, "weights": args.weights,
             "penalise": penalise}
    if all(v is None for v in [*given.values(), args.convention, args.fixed_prior]):
        return None
    if args.se and (args.noise is not None or args.learn_noise or args.noise_prior):
        raise UsageError("--se fixes the noise scale at 1 (omega_i = 1 / s_i^2); drop --noise / "
                         "--learn-noise / --noise-prior, or use --weights to learn a noise scale.")
    if args.data is None and args.target is not None:
        raise UsageError("--target needs --data (the built-in data's target is fixed).")
    return given | {"convention": args.convention, "target": args.target,
                    "fixed_prior": args.fixed_prior}


def load_data(args: argparse.Namespace) -> Dataset | StreamedData:
    """The data named on the command line (or the built-in standardised diabetes data)."""
    if args.data is None:
        if args.target is not None:
            raise UsageError("--target needs --data (the built-in data's target is fixed).")
        return load_diabetes(scaled=True)
    if args.target is None:
        raise UsageError("--data needs --target COL naming the column to predict.")
    if args.chunk_rows is not None and args.chunk_rows < 1:
        raise UsageError(f"--chunk-rows must be at least 1, got {args.chunk_rows}.")
    methods = [args.method] if args.command == "fit" else (args.methods or "cv").split(",")
    return read_data(args.data, target=args.target, chunk_rows=args.chunk_rows, seed=args.seed,
                     folds=FOLDS if "cv" in methods else None, dask=args.dask,
                     scheduler=args.scheduler)


def prepare(args: argparse.Namespace) -> PreparedRun:
    """Load, centre and validate everything before any method runs."""
    family = _family_options(args)
    if family is None:
        data, family = load_data(args), {}
    else:  # the API reads the file: it keeps text columns and reads only a formula's columns
        data = args.data if args.data is not None else load_diabetes(scaled=True)
        family |= {"chunk_rows": args.chunk_rows, "dask": args.dask, "scheduler": args.scheduler}
    if args.noise is not None and args.noise_prior:
        raise UsageError("--noise-prior goes with a learned noise; drop it or drop --noise.")
    run = prepare_run(
        data,
        **family,
        intercept=not args.no_intercept,
        hyperprior=args.hyperprior or None,
        noise=args.noise,
        noise_prior=args.noise_prior or None,
        seed=args.seed,
        draws=args.draws,
        chains=args.chains,
        ard=args.ard,
        progress=not args.quiet,
    )
    note = None if run.family else run.data.methods_note()
    if note and not args.quiet:
        print(f"hyperbayes: note: {note}", file=sys.stderr)
    return run


def _cmd_fit(args: argparse.Namespace) -> int:
    run = prepare(args)
    if args.out is not None:
        from hyperbayes.inference.workflow.rundir import check_destination

        check_destination(args.out)  # before the method runs, not after
    get_runner(args.method)
    size = f"{len(run.data.groups)} group(s)" if run.family else f"D = {run.data.d}"
    _progress(args, f"running {args.method} on N = {run.data.n}, {size} ...")
    with _progress_to_stderr(quiet=args.quiet):
        summary = run.fit(args.method)
    payload = summary.to_json()
    options = run.options
    payload.setdefault("hyperprior", str(options.hyperprior))
    payload.setdefault("noise_prior", str(options.noise_prior) if options.noise_prior else None)
    if isinstance(run.data, StreamedData):
        payload.setdefault("data_read", run.data.reading.to_json())
    if run.family:
        payload.setdefault("model", run.data.describe())
        payload.setdefault("priors", {g.name: str(g.prior) for g in run.data.groups if g.prior})
    if args.out is not None:
        from hyperbayes.inference.workflow.rundir import write_run_directory

        write_run_directory(args.out, summary=payload, datatrees={args.method: summary.draws})
        _progress(args, f"wrote {args.out}")
    if args.json:
        print(json.dumps(payload))
    else:
        print(_human(summary))
    return EXIT_OK


def _cmd_compare(args: argparse.Namespace) -> int:
    from hyperbayes.inference.workflow.report import REPORT_NAME, write_comparison

    run = prepare(args)
    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    unknown = [m for m in methods or [] if m not in METHODS]
    if unknown:
        raise UsageError(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}.")
    from hyperbayes.inference.workflow.rundir import check_destination

    check_destination(args.out)  # before the methods run, not after
    with _progress_to_stderr(quiet=args.quiet):
        result = run.compare(methods)
    source = str(args.data) if args.data else "diabetes (Efron et al. 2004; columns centred, unit norm)"
    if args.formula:
        source += f"; formula {args.formula}"
    out = write_comparison(args.out, result, run.data, dataset=source)
    failed = [r.method for r in result.rows if r.status == "failed"]
    print(f"report: {out / REPORT_NAME}")
    if failed:
        print(f"hyperbayes: {len(failed)} method(s) failed: {', '.join(failed)}", file=sys.stderr)
    return EXIT_OK


def _cmd_report(args: argparse.Namespace) -> int:
    from hyperbayes.inference.workflow.report import write_report

    if not (args.run_dir / "summary.json").is_file():
        raise UsageError(f"{args.run_dir} is not a run directory (no summary.json).")
    _check_run_summary(args.run_dir)
    print(f"report: {write_report(args.run_dir)}")
    return EXIT_OK


def _check_run_summary(run_dir: Path) -> None:
    """Refuse a summary.json that the report cannot be rendered from, naming the file."""
    path = run_dir / "summary.json"
    redo = "recreate the run directory with `hyperbayes compare ... --out DIR`"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" ({exc.msg}, line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise UsageError(f"{path} is not a valid run summary: it is not JSON{where}; {redo}.") from None
    if not isinstance(summary, dict):
        kind = type(summary).__name__.replace("dict", "object").replace("list", "array")
        raise UsageError(f"{path} is not a valid run summary: it holds a JSON {kind}, not an object; {redo}.")
    if "table" not in summary and "method" in summary:
        raise UsageError(
            f"{run_dir} holds the result of one `hyperbayes fit`, not a comparison; "
            "`hyperbayes report` renders the run directories `hyperbayes compare` writes."
        )
    table = summary.get("table")
    rows_ok = isinstance(table, list) and all(
        isinstance(r, dict) and isinstance(r.get("method"), str) and isinstance(r.get("status"), str)
        for r in table
    )
    expected = {"n": int, "d": int, "hyperprior": str, "methods": dict}
    wrong = [k for k, t in expected.items() if not isinstance(summary.get(k), t)]
    if not rows_ok or wrong:
        what = ", ".join(([] if rows_ok else ["table"]) + wrong)
        raise UsageError(f"{path} is not a valid run summary: {what} missing or malformed; {redo}.")
    if not any((run_dir / name).is_file() for name in ("data.csv", "statistics.json")):
        raise UsageError(f"{run_dir} has no data.csv, which the report's figures are drawn from; {redo}.")


def _cmd_demo(args: argparse.Namespace) -> int:
    from hyperbayes.inference.workflow.demo import run_demo

    with _progress_to_stderr(quiet=args.quiet):
        out = run_demo(out=args.out, data=args.data, seed=args.seed, progress=not args.quiet)
    print(f"report: {out / 'report.html'}")
    return EXIT_OK


def _human(s: MethodSummary) -> str:
    def fmt(x):
        return "n/a" if x is None else f"{x:.4g}"

    lines = [f"method: {s.method}"]
    intervals = s.sigma_intervals or {}
    for name, value in (s.sigmas or {"": s.sigma}).items():
        key = f"sigma[{name}]" if name else "sigma"
        lines.append(f"{key}: {fmt(value)}")
        lo_hi = intervals.get(name) if name else s.sigma_interval
        if lo_hi:
            lines.append(f"{key} 95% interval: [{fmt(lo_hi[0])}, {fmt(lo_hi[1])}]")
    lines += [f"noise: {fmt(s.noise)}", f"log evidence: {fmt(s.log_evidence)}"]
    if s.fixed_effects:
        lines += [f"beta[{k}]: {fmt(m)} (se {fmt(se)})" for k, (m, se) in s.fixed_effects.items()]
    elif s.intercept is not None:
        lines.append(f"intercept: {fmt(s.intercept)}")
    if s.weights:
        lines.append("weights: " + ", ".join(fmt(w) for w in s.weights))
    if s.degenerate:
        lines.append("degenerate: yes")
    lines += [f"warning: {w}" for w in s.warnings]
    return "\n".join(lines)


@contextlib.contextmanager
def _progress_to_stderr(*, quiet: bool):
    """Keep stdout for results: PyMC's progress bars (rich) write to stdout, so send them to
    stderr; with ``quiet`` also silence PyMC's log messages ("Initializing NUTS ...", and its
    warnings, which our diagnostics report in the result)."""
    import pymc  # noqa: F401  (its import sets its logger's level; do that before we change it)

    logger = logging.getLogger("pymc")
    level = logger.level
    if quiet:
        logger.setLevel(logging.ERROR)  # its sampling warnings are in our diagnostics anyway
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        logger.setLevel(level)


def _progress(args: argparse.Namespace, message: str) -> None:
    if not getattr(args, "quiet", False):
        print(f"hyperbayes: {message}", file=sys.stderr)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"hyperbayes: warning: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
