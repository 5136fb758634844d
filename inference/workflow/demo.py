"""The main job: every method on a built-in data set, written as a run directory.

- ``diabetes`` (the default): the standardised diabetes data, one shared sigma, the intercept
  by centring, the noise learned, hyperpriors scaled to the data.
- ``eight-schools``: Rubin's eight schools (known standard errors, a random intercept per
  school, scale tau). The prior on tau is HalfCauchy(5), the prior of the PyMC and Stan
  eight-schools case studies (and of ArviZ's ``centered_eight`` / ``non_centered_eight``
  example data), not the data-scaled default HalfNormal(sd(y) = 10.4): the point of this demo
  is to show the familiar numbers (posterior mean of tau about 3.6, the funnel, EB's tau = 0 on
  the boundary) that readers can check against those published analyses, and a heavy-tailed
  prior is the standard advice for a group scale with eight groups (Gelman 2006).
- ``bcg``: the 13 BCG vaccine trials as a meta-regression on absolute latitude (the classic
  analysis of Berkey et al. 1995 and metafor's ``dat.bcg`` example: latitude explains most of
  the between-trial heterogeneity); tau gets the data-scaled default prior HalfNormal(sd(y)),
  as there is no canonical Bayesian prior for these data to reproduce.
"""

from __future__ import annotations

import time
from pathlib import Path

from hyperbayes.inference.workflow.rundir import check_destination

__all__ = ["DEMO_DATA", "run_demo"]

DEMO_DRAWS = 2000  # per chain (SMC: particles per chain, >= 100 per free parameter at D = 10)
DEMO_CHAINS = 4
#: The built-in data sets of ``hyperbayes demo --data``.
DEMO_DATA = ("diabetes", "eight-schools", "bcg")
#: The prior on tau for the eight schools (see the module notes).
EIGHT_SCHOOLS_TAU_PRIOR = "halfcauchy:5"

_DESCRIPTION = {
    "diabetes": "diabetes (Efron et al. 2004; columns centred, unit norm)",
    "eight-schools": "eight schools (Rubin 1981; BDA3 Table 5.2): y_j ~ N(mu + u_j, s_j^2), "
    f"u_j ~ N(0, tau^2), tau ~ {EIGHT_SCHOOLS_TAU_PRIOR}",
    "bcg": "BCG vaccine trials (Colditz et al. 1994): log risk ratio ~ latitude + (1|trial), "
    "known sampling variances",
}


def run_demo(
    *, out: Path | None = None, data: str = "diabetes", seed: int = 0, progress: bool = True
) -> Path:
    """Run ``compare`` on a built-in data set and write the run directory with its report.

    Parameters
    ----------
    out : Path, optional
        The run directory (default: a new ``hyperbayes-demo-YYYYmmdd-HHMMSS`` here).
    data : {"diabetes", "eight-schools", "bcg"}
        The data set (see the module notes for each model and prior).
    seed : int
    progress : bool
        Say on stderr which method is running.

    Returns
    -------
    Path
        The run directory.
    """
    from hyperbayes.inference.workflow.api import prepare_run
    from hyperbayes.inference.workflow.report import write_comparison
    from hyperbayes.models.hyperpriors import OptionError

    if data not in DEMO_DATA:
        raise OptionError(f"unknown demo data {data!r}; choose one of {', '.join(DEMO_DATA)}.")
    if out is None:
        out = Path(f"hyperbayes-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    check_destination(out)  # before anything runs: a bad --out fails at once
    run = prepare_run(_demo_data(data), seed=seed, draws=DEMO_DRAWS, chains=DEMO_CHAINS,
                      progress=progress)
    return write_comparison(out, run.compare(), run.data, dataset=_DESCRIPTION[data])


def _demo_data(name: str):
    from hyperbayes.models import datasets
    from hyperbayes.models.data import load_diabetes

    if name == "eight-schools":
        return datasets.load_eight_schools(tau_prior=EIGHT_SCHOOLS_TAU_PRIOR)
    if name == "bcg":
        return datasets.load_bcg(latitude=True)  # tau's prior: the data-scaled default
    return load_diabetes(scaled=True)
