"""The ``hyperbayes`` command: parse, run a method (or the comparison), print, map errors.

Exit codes: 0 success (a degenerate optimum is a finding, not a failure); 1 a method failed
while running; 2 bad input (data, options, an existing output directory). Errors are one line
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

from numpy.linalg import LinAlgError

from hyperbayes.inference.methods.results import MethodSummary
from hyperbayes.inference.workflow.api import PreparedRun, prepare_run
from hyperbayes.inference.workflow.registry import METHODS, get_runner
from hyperbayes.models.data import DataError, Dataset, DataWarning, load_csv, load_diabetes
from hyperbayes.models.hyperpriors import ImproperPriorError

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class UsageError(ValueError):
    """Bad command-line input (exit code 2)."""


_BAD_INPUT = (DataError, ImproperPriorError, UsageError, FileExistsError, ValueError)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hyperbayes`` console script; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            # A data warning is shown once, as one line, not with a source excerpt.
            warnings.simplefilter("always", DataWarning)
            warnings.showwarning = _one_line_warning
            return args.handler(args)
    except KeyboardInterrupt:
        print("hyperbayes: interrupted; nothing was written.", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, no traceback
        if getattr(args, "debug", False):
            raise
        # LinAlgError subclasses ValueError, but it is a method failing, not bad input.
        if isinstance(exc, _BAD_INPUT) and not isinstance(exc, LinAlgError):
            print(f"hyperbayes: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        print(f"hyperbayes: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hyperbayes",
        description="Learn the prior scale of a Bayesian linear regression five ways, "
        "checked against the exact answer.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser("fit", help="run one method and print its result")
    fit.add_argument("method", choices=list(METHODS), help="the method to run")
    _add_data_options(fit)
    _add_model_options(fit)
    fit.add_argument("--out", type=Path, help="write a run directory (summary.json, draws as netCDF)")
    fit.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    fit.set_defaults(handler=_cmd_fit)

    cmp_ = sub.add_parser("compare", help="run every method on the same data into a run directory")
    _add_data_options(cmp_)
    _add_model_options(cmp_)
    cmp_.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)} (default all)")
    cmp_.add_argument("--out", type=Path, required=True, help="the run directory to create")
    cmp_.set_defaults(handler=_cmd_compare)

    rep = sub.add_parser("report", help="re-render report.html of a run directory from its files")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    rep.set_defaults(handler=_cmd_report)

    demo = sub.add_parser("demo", help="the main job: every method on the built-in diabetes data")
    demo.add_argument("--out", type=Path, help="run directory (default: a new hyperbayes-demo-* here)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress on stderr")
    demo.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    demo.set_defaults(handler=_cmd_demo)
    return parser


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, help="CSV file with a header row (default: built-in diabetes data)")
    p.add_argument("--target", help="name of the target column in --data")
    p.add_argument("--no-intercept", action="store_true", help="do not centre X and y")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--noise", type=float, help="known noise standard deviation delta")
    noise.add_argument("--learn-noise", action="store_true", help="learn delta (the default)")
    p.add_argument("--noise-prior", help="prior on delta when learned (default: halfnormal:sd(y))")
    p.add_argument("--hyperprior", help="prior on sigma, e.g. halfnormal:1 (default: scaled to the data)")
    p.add_argument("--ard", action="store_true", help="one sigma per feature where supported")
    p.add_argument("--seed", type=int, default=0, help="seed for every random step (default 0)")
    p.add_argument("--draws", type=int, help="draws per chain for the samplers")
    p.add_argument("--chains", type=int, help="number of chains for the samplers")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)


def load_data(args: argparse.Namespace) -> Dataset:
    """The data named on the command line (or the built-in standardised diabetes data)."""
    if args.data is None:
        if args.target is not None:
            raise UsageError("--target needs --data (the built-in data's target is fixed).")
        return load_diabetes(scaled=True)
    if args.target is None:
        raise UsageError("--data needs --target COL naming the column to predict.")
    return load_csv(args.data, target=args.target)


def prepare(args: argparse.Namespace) -> PreparedRun:
    """Load, centre and validate everything before any method runs."""
    data = load_data(args)
    if args.noise is not None and args.noise_prior:
        raise UsageError("--noise-prior goes with a learned noise; drop it or drop --noise.")
    run = prepare_run(
        data,
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
    note = run.data.methods_note()
    if note and not args.quiet:
        print(f"hyperbayes: note: {note}", file=sys.stderr)
    return run


def _cmd_fit(args: argparse.Namespace) -> int:
    run = prepare(args)
    if args.out is not None and args.out.exists():
        raise FileExistsError(f"output directory {args.out} exists already; choose a new --out.")
    get_runner(args.method)
    _progress(args, f"running {args.method} on N = {run.data.n}, D = {run.data.d} ...")
    with _progress_to_stderr(quiet=args.quiet):
        summary = run.fit(args.method)
    payload = summary.to_json()
    options = run.options
    payload.setdefault("hyperprior", str(options.hyperprior))
    payload.setdefault("noise_prior", str(options.noise_prior) if options.noise_prior else None)
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
    if args.out.exists():
        raise FileExistsError(f"output directory {args.out} exists already; choose a new --out.")
    with _progress_to_stderr(quiet=args.quiet):
        result = run.compare(methods)
    source = str(args.data) if args.data else "diabetes (Efron et al. 2004; columns centred, unit norm)"
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
    print(f"report: {write_report(args.run_dir)}")
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    from hyperbayes.inference.workflow.demo import run_demo

    with _progress_to_stderr(quiet=args.quiet):
        out = run_demo(out=args.out, seed=args.seed, progress=not args.quiet)
    print(f"report: {out / 'report.html'}")
    return EXIT_OK


def _human(s: MethodSummary) -> str:
    def fmt(x):
        return "n/a" if x is None else f"{x:.4g}"

    lines = [f"method: {s.method}", f"sigma: {fmt(s.sigma)}"]
    if s.sigma_interval:
        lines.append(f"sigma 95% interval: [{fmt(s.sigma_interval[0])}, {fmt(s.sigma_interval[1])}]")
    lines += [f"noise: {fmt(s.noise)}", f"log evidence: {fmt(s.log_evidence)}"]
    if s.intercept is not None:
        lines.append(f"intercept: {fmt(s.intercept)}")
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
