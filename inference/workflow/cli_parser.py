"""The ``hyperbayes`` command line's grammar: its subcommands and their options.

:func:`build_parser` is the whole parser of :func:`hyperbayes.inference.workflow.cli.main`,
which passes in the handlers it runs (so this module imports none of them).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from hyperbayes.inference.workflow.demo import DEMO_DATA
from hyperbayes.inference.workflow.registry import METHODS

__all__ = ["build_parser"]

#: A subcommand's handler: the parsed arguments in, the exit code out.
Handler = Callable[[argparse.Namespace], int]


def build_parser(
    *, fit: Handler, compare: Handler, report: Handler, demo: Handler
) -> argparse.ArgumentParser:
    """The ``hyperbayes`` argument parser: subcommands ``fit``, ``compare``, ``report``,
    ``demo``, ``simulate`` and ``sbc``.

    Parameters
    ----------
    fit, compare, report, demo : callable
        The handler of each subcommand: takes the parsed arguments, returns the exit code (the
        parsed namespace's ``handler``). ``simulate`` and ``sbc`` bring their own.

    Returns
    -------
    argparse.ArgumentParser
    """
    parser = argparse.ArgumentParser(
        prog="hyperbayes",
        description="Learn the prior scale of a Bayesian linear regression five ways, "
        "checked against the exact answer.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    one = sub.add_parser("fit", help="run one method and print its result")
    one.add_argument("method", choices=list(METHODS), help="the method to run")
    _add_data_options(one)
    _add_model_options(one)
    _add_family_options(one)
    one.add_argument("--out", type=Path, help="write a run directory (summary.json, draws as netCDF)")
    one.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    one.set_defaults(handler=fit)

    all_ = sub.add_parser("compare", help="run every method on the same data into a run directory")
    _add_data_options(all_)
    _add_model_options(all_)
    _add_family_options(all_)
    all_.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)} (default all)")
    all_.add_argument("--out", type=Path, required=True, help="the run directory to create")
    all_.set_defaults(handler=compare)

    rep = sub.add_parser("report", help="re-render report.html of a run directory from its files")
    rep.add_argument("run_dir", type=Path)
    rep.add_argument("--debug", action="store_true", help="show the traceback of an error")
    rep.set_defaults(handler=report)

    job = sub.add_parser("demo", help="the main job: every method on a built-in data set")
    job.add_argument("--data", choices=DEMO_DATA, default="diabetes",
                     help="diabetes (default; shared sigma), eight-schools or bcg (random effects)")
    job.add_argument("--out", type=Path, help="run directory (default: a new hyperbayes-demo-* here)")
    job.add_argument("--seed", type=int, default=0)
    job.add_argument("--quiet", action="store_true", help="no progress on stderr")
    job.add_argument("--debug", action="store_true", help="show the traceback of an error")
    job.set_defaults(handler=demo)

    from hyperbayes.inference.workflow import cli_sbc, simulate_data

    simulate_data.add_parser(sub)  # hyperbayes simulate --rows N --features D --out FILE.parquet
    cli_sbc.add_sbc_parser(sub)  # hyperbayes sbc --method M --sims K [--draws L] [--out DIR]
    return parser


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        help="CSV file with a header row, or a Parquet file, directory or glob (streamed in "
        "chunks; so is a CSV over 64 MiB) (default: built-in diabetes data)",
    )
    p.add_argument("--target", help="name of the target column in --data (not needed with --formula)")
    p.add_argument("--no-intercept", action="store_true", help="do not centre X and y")
    p.add_argument("--chunk-rows", type=int, help="rows per chunk when --data is streamed")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--dask", action="store_true", help="read --data on a Dask LocalCluster here")
    where.add_argument("--scheduler", help="read --data on the Dask cluster at this ADDRESS")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    noise = p.add_mutually_exclusive_group()
    noise.add_argument("--noise", type=float, help="known noise standard deviation delta")
    noise.add_argument("--learn-noise", action="store_true", help="learn delta (the default)")
    p.add_argument("--noise-prior", help="prior on delta when learned (default: halfnormal:sd(y))")
    p.add_argument("--hyperprior", help="prior on sigma (in a family run: on every learned group's "
                   "scale), e.g. halfnormal:1 (default: scaled to the data)")
    p.add_argument("--ard", action="store_true", help="one sigma per feature where supported")
    p.add_argument("--seed", type=int, default=0, help="seed for every random step (default 0)")
    p.add_argument("--draws", type=int, help="draws per chain for the samplers")
    p.add_argument("--chains", type=int, help="number of chains for the samplers")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _add_family_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--formula", help='model formula, e.g. "y ~ age + C(sex) + (1|site)": plain terms '
                   "fixed, (1|g) a random intercept (then --target is not needed)")
    known = p.add_mutually_exclusive_group()
    known.add_argument("--se", metavar="COL", help="column of known standard errors (noise fixed at 1)")
    known.add_argument("--weights", metavar="COL", help="column of observation weights omega_i")
    p.add_argument("--penalise", metavar="COLS", help="comma-separated terms to penalise in one group")
    conv = p.add_mutually_exclusive_group()
    conv.add_argument("--reml", dest="convention", action="store_const", const="reml",
                      help="empirical Bayes by restricted likelihood (the default of a family run)")
    conv.add_argument("--ml", dest="convention", action="store_const", const="ml",
                      help="empirical Bayes by profile (maximum) likelihood")
    p.set_defaults(convention=None)  # either flag makes a family run (see prepare_run)
    p.add_argument("--fixed-prior", type=float, metavar="SD",
                   help="Normal(0, SD^2) prior on the fixed effects, intercept included: makes "
                   "log p(y) a true evidence")
