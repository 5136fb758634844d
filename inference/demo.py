"""The main job: every method on the built-in diabetes data, written as a run directory."""

from __future__ import annotations

import time
from pathlib import Path

from inference.compare import compare
from inference.report import write_comparison
from inference.results import RunOptions
from models.data import load_diabetes
from models.hyperpriors import default_hyperpriors

__all__ = ["run_demo"]

DEMO_DRAWS = 2000  # per chain (SMC: particles per chain, >= 100 per free parameter at D = 10)
DEMO_CHAINS = 4


def run_demo(*, out: Path | None = None, seed: int = 0, progress: bool = True) -> Path:
    """Run ``compare`` on the standardised diabetes data (intercept by centring, noise learned,
    hyperpriors scaled to the data) and write the run directory with its report.

    Returns the run directory (default: a new ``hyperbayes-demo-YYYYmmdd-HHMMSS`` here).
    """
    data, centering = load_diabetes(scaled=True).center()
    sigma_prior, noise_prior = default_hyperpriors(data)
    options = RunOptions(
        hyperprior=sigma_prior,
        noise=None,
        noise_prior=noise_prior,
        seed=seed,
        draws=DEMO_DRAWS,
        chains=DEMO_CHAINS,
        progress=progress,
    )
    if out is None:
        out = Path(f"hyperbayes-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    if out.exists():
        raise FileExistsError(f"output directory {out} exists already; choose a new --out.")
    result = compare(data, options, centering=centering, progress=progress)
    return write_comparison(out, result, data, dataset="diabetes (Efron et al. 2004; columns centred, unit norm)")
