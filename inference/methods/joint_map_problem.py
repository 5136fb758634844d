"""The joint MAP optimisation problem: one compiled model, its density and ``pm.find_MAP`` runs.

Holds :class:`OptimizerRun` (what one ``pm.find_MAP`` run returned), :class:`Problem` (the
centred hierarchical model compiled once: the joint log density at any (sigma, w[, noise]),
its slope in log sigma, and the optimiser from any start) and :func:`start_points` (PyMC's
default start, then near zero, near w_ML and random ones). The verdict on the runs is drawn
in :mod:`hyperbayes.inference.methods.joint_map`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pymc as pm
import pytensor
from numpy.typing import ArrayLike, NDArray
from threadpoolctl import threadpool_limits

from hyperbayes.models.builders import hierarchical_regression
from hyperbayes.models.data import Dataset
from hyperbayes.models.hyperpriors import Hyperprior
from hyperbayes.models.streaming import StreamedData

__all__ = ["STATIONARY_TOL", "OptimizerRun", "Problem", "start_points"]

#: |dJ/d log sigma| at the optimiser's stopping point, per feature, above which the point is
#: not stationary. On the collapse path the slope is -D (so D per feature); at a local mode
#: it is 0 up to L-BFGS-B's tolerance (~1e-4 here).
STATIONARY_TOL = 0.1
#: Step in log sigma of the central difference giving dJ/d log sigma; truncation ~1e-10.
_FD_STEP = 1e-5
#: Compile mode of the optimiser's functions: the graphs are tiny, so compiling with every
#: rewrite (the default) costs more than all the evaluations together; the values are the same.
_MODE = "FAST_COMPILE"


@dataclass(frozen=True)
class OptimizerRun:
    """One ``pm.find_MAP`` run from one start.

    Attributes
    ----------
    label : str
        ``"default"`` (PyMC's initial point), ``"near zero"``, ``"near w_ML"`` or ``"random k"``.
    start_sigma : float
        sigma at the start (the starting w is ``path_w[0]``).
    sigma, w, noise : float, ndarray (D,), float or None
        Where the optimiser stopped (``noise`` only when it is learned).
    log_density : float
        The joint log density there (PyMC's ``logp(jacobian=False)``, the objective).
    success : bool
        scipy's own convergence flag: it says nothing about whether the point is a maximum.
    message : str
        scipy's message.
    iterations : int
    grad_log_sigma : float
        dJ / d log sigma at the stopping point: 0 at a stationary point, about -D on the
        collapse path (the density still rises as sigma falls).
    path_sigma, path_w : ndarray (k,), ndarray (k, D)
        The iterates, start first, for plotting.
    """

    label: str
    start_sigma: float
    sigma: float
    w: NDArray[np.float64]
    noise: float | None
    log_density: float
    success: bool
    message: str
    iterations: int
    grad_log_sigma: float
    path_sigma: NDArray[np.float64]
    path_w: NDArray[np.float64]

    @property
    def stationary(self) -> bool:
        """Whether the optimiser stopped where the slope in log sigma vanishes."""
        return abs(self.grad_log_sigma) <= STATIONARY_TOL * self.w.size

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "start_sigma": self.start_sigma,
            "sigma": self.sigma,
            "w": self.w.tolist(),
            "noise": self.noise,
            "log_density": self.log_density,
            "success": self.success,
            "iterations": self.iterations,
            "grad_log_sigma": self.grad_log_sigma,
        }



@dataclass(frozen=True, eq=False)
class Problem:
    """One model, compiled once: find_MAP from any start, and the density at any point."""

    model: pm.Model
    sigma_name: str  # the free variable: "sigma" or "sigma_sq"
    noise_name: str | None  # "noise", "noise_sq" or None (known noise)
    noise: float | None  # the known noise
    w_hat: NDArray[np.float64]
    support: tuple[float, float]
    logp: Any  # compiled logp(jacobian=False) on the value variables
    to_values: Any  # natural free-variable values -> value-variable values
    to_natural: Any  # point (value variables) -> (sigma, w[, noise])
    initial_point: dict[str, NDArray]  # PyMC's default start, on the value variables

    @classmethod
    def build(cls, data: Dataset, hp: Hyperprior, noise: float | Hyperprior) -> Problem:
        # "sufficient": the likelihood through (G, b, v, N), O(D^2) per gradient for any N.
        model = hierarchical_regression(
            data, hyperprior=hp, noise=noise, parametrization="centered", likelihood="sufficient"
        )
        free = {rv.name: rv for rv in model.free_RVs}
        sigma_name = "sigma_sq" if "sigma_sq" in free else "sigma"
        noise_name = next((n for n in ("noise", "noise_sq") if n in free), None)
        natural_in = [rv.type(rv.name) for rv in model.free_RVs]
        values_out = []
        for rv, x in zip(model.free_RVs, natural_in, strict=True):
            tr = model.rvs_to_transforms.get(rv)
            values_out.append(x if tr is None else tr.forward(x, *rv.owner.inputs))
        to_values = pytensor.function(natural_in, values_out, on_unused_input="ignore", mode=_MODE)
        outs = [model["sigma"], model["w"]] + ([model["noise"]] if noise_name else [])
        to_natural = model.compile_fn(
            model.replace_rvs_by_values(outs),
            inputs=model.value_vars,
            on_unused_input="ignore",
            mode=_MODE,
        )
        if isinstance(data, StreamedData):  # no rows: the minimum-norm solution of G w = b
            st = data.stats
            w_hat = np.linalg.lstsq(st.G, st.b, rcond=None)[0]
        else:
            w_hat = np.linalg.lstsq(data.X, data.y, rcond=None)[0]
        if not np.any(w_hat):  # y orthogonal to X: any direction shows the collapse
            w_hat = np.full(data.d, 1.0 / np.sqrt(data.d))
        return cls(
            model=model,
            sigma_name=sigma_name,
            noise_name=noise_name,
            noise=None if noise_name else float(noise),
            w_hat=w_hat,
            support=hp.support(),
            logp=model.compile_logp(jacobian=False),
            to_values=to_values,
            to_natural=to_natural,
            initial_point=model.initial_point(),
        )

    @property
    def sigma_ref(self) -> float:
        """||w_hat|| / sqrt(D): the scale of sigma the data suggest, for starts and paths."""
        return float(np.linalg.norm(self.w_hat) / np.sqrt(self.w_hat.size))

    def natural(self, sigma: float, w: ArrayLike, noise: float | None = None) -> dict[str, Any]:
        """Free-variable values (by name) for a point given as (sigma, w[, noise]); a learned
        noise left as None takes its value at PyMC's default start."""
        out = {self.sigma_name: sigma**2 if self.sigma_name == "sigma_sq" else sigma}
        out["w"] = np.asarray(w, dtype=float)
        if self.noise_name is not None:
            if noise is None:  # a learned noise starts where PyMC's default start has it
                noise = self._unravel(self._start_vector(None))[2]
            out[self.noise_name] = noise**2 if self.noise_name == "noise_sq" else noise
        return out

    def density(self, sigma: float, w: ArrayLike, noise: float | None) -> float:
        """The joint log density find_MAP maximises, at (sigma, w[, noise]); -inf off support."""
        nat = self.natural(sigma, w, noise)
        with np.errstate(all="ignore"):
            values = self.to_values(*[np.asarray(nat[rv.name]) for rv in self.model.free_RVs])
            point = {v.name: x for v, x in zip(self.model.value_vars, values, strict=True)}
            out = float(self.logp(point))
        return out if np.isfinite(out) or out == np.inf else -np.inf

    def find_map(self, label: str, start: dict[str, Any] | None) -> OptimizerRun:
        """One ``pm.find_MAP`` run; ``start`` gives free-variable values (None: PyMC's default)."""
        xs: list[NDArray] = []
        # Deep in the funnel the line search probes sigma = exp(-700) and beyond: overflow
        # there is expected and handled (the run is reported as it ended), not an error.
        # One BLAS thread: SciPy's L-BFGS-B makes many tiny BLAS calls per iteration, and
        # OpenBLAS's idle worker threads spin between them and take the second core away
        # (diabetes, D = 10, six starts: 14-17 s with free threads on the loaded 2-core
        # machine, 3.5 s with one; same numbers). The limit is restored on exit.
        with (
            warnings.catch_warnings(),
            np.errstate(all="ignore"),
            threadpool_limits(limits=1, user_api="blas"),
        ):
            # Non-convergence is reported in the result (success, message), not as a warning.
            warnings.filterwarnings("ignore", "The optimizer did not converge", UserWarning)
            tree = pm.find_MAP(
                model=self.model,
                initvals=start,
                jitter=False,  # the starts are chosen explicitly (and seeded) here
                return_inferencedata=True,
                progressbar=False,
                compile_kwargs={"mode": _MODE},
                callback=lambda r: xs.append(np.array(r.x, dtype=float)),
            )
        res = tree["optimizer_result"].to_dataset()
        x0 = self._start_vector(start)
        path = [self._unravel(x) for x in [x0, *xs]]
        sigma, w, noise = self._unravel(np.asarray(res["x"].values))
        return OptimizerRun(
            label=label,
            start_sigma=path[0][0],
            sigma=sigma,
            w=w,
            noise=noise,
            log_density=-float(res["fun"]),
            success=bool(res["success"]),
            message=str(res["message"].values),
            iterations=int(res["nit"]) if "nit" in res else len(xs),
            grad_log_sigma=self._grad_log_sigma(sigma, w, noise),
            path_sigma=np.array([p[0] for p in path]),
            path_w=np.array([p[1] for p in path]),
        )

    def _start_vector(self, start: dict[str, Any] | None) -> NDArray:
        """The optimiser's starting vector (value variables, model order)."""
        if start is None:
            point = self.initial_point
        else:
            values = self.to_values(*[np.asarray(start[rv.name]) for rv in self.model.free_RVs])
            point = {v.name: x for v, x in zip(self.model.value_vars, values, strict=True)}
        return np.concatenate([np.ravel(point[v.name]) for v in self.model.value_vars])

    def _unravel(self, x: NDArray) -> tuple[float, NDArray, float | None]:
        point, i = {}, 0
        for v in self.model.value_vars:
            shape = np.shape(self.initial_point[v.name])
            size = int(np.prod(shape))
            point[v.name] = x[i : i + size].reshape(shape)
            i += size
        out = self.to_natural(point)
        return float(out[0]), np.array(out[1], dtype=float), float(out[2]) if len(out) > 2 else None

    def _grad_log_sigma(self, sigma: float, w: NDArray, noise: float | None) -> float:
        up = self.density(sigma * np.exp(_FD_STEP), w, noise)
        down = self.density(sigma * np.exp(-_FD_STEP), w, noise)
        return (up - down) / (2 * _FD_STEP) if np.isfinite(up - down) else float("nan")


def start_points(problem: Problem, n: int, rng: np.random.Generator):
    """(label, free-variable values) for every start: PyMC's default first, then ours."""
    s, w_hat = problem.sigma_ref, problem.w_hat
    lo, hi = problem.support

    def start(sigma, w):
        sigma = float(np.clip(sigma, lo * 1.01, hi / 1.01))  # inside a bounded support
        return problem.natural(sigma, w)

    out = [
        ("default", None),
        ("near zero", start(1e-3 * s, 1e-3 * w_hat)),
        ("near w_ML", start(s, w_hat)),
    ]
    for k in range(max(n - len(out), 0)):
        log_sigma = np.log(s) + rng.uniform(-4.0, 1.0)  # from 1e-4/5 to e times the data's scale
        out.append(
            (f"random {k + 1}", start(np.exp(log_sigma), w_hat * rng.uniform(0.0, 1.5, w_hat.size)))
        )
    return out[:n]
