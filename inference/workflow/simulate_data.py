"""``hyperbayes simulate``: a Parquet data set of any size drawn from the model, with its truth.

    x_ij = m_j + s_j z_ij,   w ~ N(0, sigma^2 I),   y = b0 + X w + delta eps

written a chunk of rows at a time (one row group per chunk), so memory stays at one chunk
whatever N is. The true sigma, delta, w, intercept and column means are stored in the file's
key-value metadata (``hyperbayes.truth``) and next to it as ``FILE.truth.json``. The column
means (m_j up to 1e3) make the intercept matter; the streamed pass handles them exactly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

__all__ = ["add_parser", "write_simulated_parquet"]


def write_simulated_parquet(
    out: str | Path,
    *,
    rows: int,
    features: int,
    sigma: float = 0.5,
    noise: float = 1.0,
    seed: int = 0,
    chunk_rows: int = 1 << 19,
) -> dict:
    """Write the data set; returns the truth (also in the file's metadata and FILE.truth.json)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if rows < 1 or features < 1:
        raise ValueError(f"rows and features must be at least 1, got {rows}, {features}.")
    rng = np.random.default_rng(seed)
    means = np.round(rng.uniform(-1e3, 1e3, features), 3)
    scales = np.round(rng.uniform(0.5, 2.0, features), 3)
    w = sigma * rng.standard_normal(features)
    b0 = 10.0
    truth = {"sigma": sigma, "noise": noise, "weights": w.tolist(), "intercept": b0,
             "column_means": means.tolist(), "column_scales": scales.tolist(), "rows": rows,
             "features": features, "seed": seed}
    names = [f"x{j}" for j in range(features)]
    schema = pa.schema([(n, pa.float64()) for n in [*names, "y"]],
                       metadata={"hyperbayes.truth": json.dumps(truth)})
    out = Path(out)
    with pq.ParquetWriter(out, schema) as writer:
        for start in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - start)
            X = means + scales * rng.standard_normal((n, features))
            y = b0 + X @ w + noise * rng.standard_normal(n)
            cols = [pa.array(X[:, j]) for j in range(features)] + [pa.array(y)]
            writer.write_table(pa.Table.from_arrays(cols, schema=schema))
    out.with_name(out.name + ".truth.json").write_text(json.dumps(truth, indent=1))
    return truth


def add_parser(sub) -> None:
    """Add the ``simulate`` subcommand to the CLI's subparsers."""
    p = sub.add_parser("simulate", help="write a simulated Parquet data set with known true scales")
    p.add_argument("--rows", type=int, required=True, help="number of rows N")
    p.add_argument("--features", type=int, required=True, help="number of features D")
    p.add_argument("--out", type=Path, required=True, help="the .parquet file to write")
    p.add_argument("--sigma", type=float, default=0.5, help="true prior scale of the weights")
    p.add_argument("--noise", type=float, default=1.0, help="true noise scale")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.set_defaults(handler=_cmd_simulate)


def _cmd_simulate(args: argparse.Namespace) -> int:
    from hyperbayes.models.data_checks import DataError

    if args.out.exists():
        raise FileExistsError(f"{args.out} exists; choose a new --out or remove it.")
    if args.rows < 1 or args.features < 1:
        raise DataError(f"--rows and --features must be at least 1, got {args.rows}, {args.features}.")
    truth = write_simulated_parquet(args.out, rows=args.rows, features=args.features,
                                    sigma=args.sigma, noise=args.noise, seed=args.seed)
    print(json.dumps({"out": str(args.out), "truth": str(args.out) + ".truth.json",
                      "sigma": truth["sigma"], "noise": truth["noise"], "rows": args.rows}))
    return 0
