"""The installed PyTensor backend: Numba by default, no degraded-path warning, same densities.

PyTensor 3 compiles through Numba unless configured otherwise; the old C backend warned at
first use when it found no BLAS and fell back to slow NumPy code. This test runs a fresh
interpreter with every warning an error (``-W error``), as a new user's first run would, so a
fallback or configuration warning anywhere in building, compiling or sampling fails it.
pytensor.config.blas__ldflags is deliberately never read: reading it runs the BLAS probe of
the C backend, whose warning would then be our own doing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

# Numba and PyTensor's Python-implemented ops evaluate the same float64 graph; they may
# differ by fused-multiply-add and summation order only.
BACKEND_RTOL = 1e-10

SCRIPT = textwrap.dedent(
    """
    import sys

    import numpy as np
    import pymc as pm
    from pytensor.compile.mode import get_default_mode
    from pytensor.link.numba.linker import NumbaLinker

    from hyperbayes.models.builders import hierarchical_regression, marginal_regression
    from hyperbayes.models.data import simulate

    linker = get_default_mode().linker
    assert isinstance(linker, NumbaLinker), "default linker is " + repr(linker) + ", not Numba"

    data = simulate(n=30, d=3, sigma=1.0, noise=0.5, seed=1).data
    # The observation model (sampled below) and the ARD marginal, whose Cholesky and triangular
    # solve are the least ordinary ops the builders use.
    models = {
        "observations": hierarchical_regression(
            data, hyperprior="halfnormal:1", noise="halfnormal:1"
        ),
        "ard": marginal_regression(data, hyperprior="loguniform:0.01,100", noise=0.5, ard=True),
    }
    rng = np.random.default_rng(0)
    RTOL = float(sys.argv[1])
    for name, model in models.items():
        logp, dlogp = model.compile_logp(), model.compile_dlogp()
        ref_logp = model.compile_logp(mode="FAST_COMPILE")
        ref_dlogp = model.compile_dlogp(mode="FAST_COMPILE")
        point = {k: v + rng.normal(0, 0.5, np.shape(v)) for k, v in model.initial_point().items()}
        np.testing.assert_allclose(logp(point), ref_logp(point), rtol=RTOL)
        np.testing.assert_allclose(dlogp(point), ref_dlogp(point), rtol=RTOL, atol=1e-12)

    with models["observations"]:
        tree = pm.sample(
            draws=50, tune=50, chains=2, cores=1, nuts_sampler="pymc", random_seed=1,
            progressbar=False,
        )
    assert tree["posterior"]["w"].shape == (2, 50, 3)

    # The default NUTS backend, nutpie, compiles the same graphs through Numba on its own.
    from hyperbayes.inference.methods.nuts import sample_posterior

    result = sample_posterior(
        data, hyperprior="halfnormal:1", noise=0.5, draws=50, tune=50, chains=2, seed=1
    )
    assert result.backend == "nutpie" and result.draws["posterior"]["w"].shape == (2, 50, 3)
    print("BACKEND OK")
    """
)


def test_first_run_is_on_numba_and_raises_no_warning(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTENSOR", "PYTHONWARN"))}
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", SCRIPT, str(BACKEND_RTOL)],
        cwd=tmp_path,  # the installed package, not the source tree's modules by accident
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "BACKEND OK"
    assert "Warning" not in proc.stderr, proc.stderr
