"""The ``hyperbayes sbc`` subcommand: simulation-based calibration of one method on Dask.

``add_sbc_parser(subparsers)`` adds the subcommand to the ``hyperbayes`` parser; its handler,
:func:`sbc_command`, returns the exit code, and raises on bad input like the other handlers
(``OptionError``, ``DataError``, ``FileExistsError``: the CLI's ``main`` maps them to exit
code 2 and one line on stderr). Exit codes:
0 the check ran (whether the method passed or failed it: a miscalibration is a finding, not
an error); 1 fewer than two simulations completed, so nothing could be tested.

Everything heavy (Dask, PyMC) is imported when the command runs, not when the parser is built,
so ``hyperbayes --help`` stays fast.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from hyperbayes.inference.workflow.sbc_methods import (
    ALIASES,
    DEFAULT_D,
    DEFAULT_DRAWS,
    DEFAULT_HYPERPRIOR,
    DEFAULT_N,
    DEFAULT_NOISE_PRIOR,
    SBC_METHODS,
)
from hyperbayes.models.hyperpriors import OptionError

__all__ = ["add_sbc_parser", "sbc_command"]

EXIT_OK, EXIT_FAILED = 0, 1


def add_sbc_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``sbc`` to the ``hyperbayes`` subcommands; returns its parser."""
    p = subparsers.add_parser(
        "sbc",
        help="simulation-based calibration of a method, run on a Dask cluster",
        description="Draw the scales and weights from the prior and y from the model K times, "
        "run the method on each data set, and test whether the ranks of the true sigma, delta "
        "and two weights among its draws are uniform (ECDF-difference band and chi-square).",
    )
    p.add_argument("--method", required=True, choices=[*SBC_METHODS, *ALIASES], help="method to check")
    p.add_argument("--sims", type=int, required=True, help="number of simulations K")
    p.add_argument("--draws", type=int, default=DEFAULT_DRAWS, help=f"draws kept per simulation L (ranks 0..L; default {DEFAULT_DRAWS})")
    p.add_argument("--out", type=Path, help="write a run directory (summary.json, sbc.nc, report.html)")
    p.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    p.add_argument("--first", type=int, default=0, help="index of the first simulation: extend an earlier run of the same seed (default 0)")
    p.add_argument("--n", type=int, default=DEFAULT_N, help=f"rows of the simulated design (default {DEFAULT_N})")
    p.add_argument("--d", type=int, default=DEFAULT_D, help=f"columns of the simulated design (default {DEFAULT_D})")
    p.add_argument("--data", type=Path, help="take the design X from this CSV's feature columns")
    p.add_argument("--target", help="the column of --data to leave out (its values are not used)")
    p.add_argument("--hyperprior", default=DEFAULT_HYPERPRIOR, help="prior on sigma (default halfnormal:1)")
    p.add_argument("--noise-prior", default=DEFAULT_NOISE_PRIOR, help="prior on delta (default halfnormal:1)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (default: start a LocalCluster)")
    p.add_argument("--workers", type=int, help="worker processes of the LocalCluster (default: one per core)")
    p.add_argument("--no-reference", action="store_true", help="skip the exact oracle's bias measurement")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.set_defaults(handler=sbc_command)
    return p


def sbc_command(args: argparse.Namespace) -> int:
    """Run the check, write ``--out``, print the result; returns the exit code."""
    from hyperbayes.inference.workflow.sbc import run_sbc
    from hyperbayes.inference.workflow.sbc_report import REPORT_NAME, write_sbc

    if args.out is not None:
        from hyperbayes.inference.workflow.rundir import check_destination

        check_destination(args.out)  # before any simulation runs, not after
    if args.workers is not None and args.scheduler is not None:
        raise OptionError("--workers sizes a new LocalCluster; it does not apply with --scheduler.")
    design = _design(args)
    with contextlib.redirect_stdout(sys.stderr):  # stdout is for the result alone
        result = run_sbc(
            args.method,
            sims=args.sims,
            draws=args.draws,
            seed=args.seed,
            first=args.first,
            design=design,
            n=args.n,
            d=args.d,
            hyperprior=args.hyperprior,
            noise_prior=args.noise_prior,
            reference=not args.no_reference,
            scheduler=args.scheduler,
            n_workers=args.workers,
            progress=not args.quiet,
        )
    payload = result.to_json()
    if args.out is not None:
        write_sbc(args.out, result)
        payload["report"] = str(args.out / REPORT_NAME)
    print(json.dumps(payload) if args.json else _human(payload))
    return EXIT_OK if result.uniformity is not None else EXIT_FAILED


def _design(args: argparse.Namespace):
    if args.data is None:
        if args.target is not None:
            raise OptionError("--target goes with --data (the simulated design has no columns to drop).")
        return None
    if args.target is None:
        raise OptionError("--data needs --target COL naming the column to leave out of X.")
    from hyperbayes.models.data import load_csv

    return load_csv(args.data, target=args.target)


def _human(payload: dict) -> str:
    uni = payload.get("uniformity")
    lines = [
        f"method: {payload['method']}",
        f"simulations: {payload['completed']} of {payload['sims']} completed, L = {payload['draws']}",
    ]
    if uni:
        for q in uni["quantities"]:
            band = "inside" if q["inside_band"] else "OUTSIDE"
            lines.append(
                f"  {q['name']:>6}: chi-square p = {q['chi2_p']:.3g}, ECDF band: {band}"
                f" -> {'pass' if q['passed'] else 'FAIL'}"
            )
        lines.append(f"verdict: {'calibrated' if uni['passed'] else 'NOT calibrated'}")
    else:
        lines.append("verdict: too few simulations completed to test")
    bias = payload.get("info", {}).get("bias_z")
    if bias and bias.get("mean") is not None:
        lines.append(f"bias of log sigma vs exact: mean {bias['mean']:.3g} sd units (se {bias.get('se', float('nan')):.2g})")
    lines += [f"failed: simulation {f['index']}: {f['message']}" for f in payload["failed"][:5]]
    lines.append(f"time: {payload['wall_time']:.1f} s on {payload['n_workers']} worker(s)")
    if "report" in payload:
        lines.append(f"report: {payload['report']}")
    return "\n".join(lines)
