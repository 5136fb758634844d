"""The main job: every method on the built-in diabetes data, written as a run directory."""

from __future__ import annotations

import time
from pathlib import Path

from hyperbayes.inference.workflow.api import prepare_run
from hyperbayes.inference.workflow.report import write_comparison
from hyperbayes.inference.workflow.rundir import check_destination
from hyperbayes.models.data import load_diabetes

__all__ = ["run_demo"]

DEMO_DRAWS = 2000  # per chain (SMC: particles per chain, >= 100 per free parameter at D = 10)
DEMO_CHAINS = 4


def run_demo(*, out: Path | None = None, seed: int = 0, progress: bool = True) -> Path:
    """Run ``compare`` on the standardised diabetes data (intercept by centring, noise learned,
    hyperpriors scaled to the data) and write the run directory with its report.

    Returns the run directory (default: a new ``hyperbayes-demo-YYYYmmdd-HHMMSS`` here).
    """
    if out is None:
        out = Path(f"hyperbayes-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    check_destination(out)  # before anything runs: a bad --out fails at once
    run = prepare_run(
        load_diabetes(scaled=True), seed=seed, draws=DEMO_DRAWS, chains=DEMO_CHAINS, progress=progress
    )
    return write_comparison(out, run.compare(), run.data, dataset="diabetes (Efron et al. 2004; columns centred, unit norm)")
