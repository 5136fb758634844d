"""The command line on streamed data: Parquet files, directories, globs; bad files exit 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from hyperbayes.inference.methods.arviz_io import load_datatree, save_datatree
from hyperbayes.inference.workflow.cli import main
from hyperbayes.inference.workflow.simulate_data import write_simulated_parquet
from hyperbayes.models.data import Dataset
from hyperbayes.models.streaming import stream_data


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts")
    rng = np.random.default_rng(4)
    X = rng.standard_normal((3000, 3)) + [10, -5, 2]
    df = pd.DataFrame(X, columns=["a", "b", "c"])
    df["y"] = X @ [0.5, -0.3, 0.2] + rng.standard_normal(3000)
    for i, lo in enumerate(range(0, 3000, 1000)):
        df.iloc[lo : lo + 1000].to_parquet(folder / f"part-{i}.parquet", index=False)
    return folder, df


def _fit(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fit_eb_streams_a_parquet_directory_and_says_how(parts, capsys):
    folder, df = parts
    code, out, _ = _fit(["fit", "eb", "--data", str(folder), "--target", "y", "--json",
                         "--chunk-rows", "250", "--quiet"], capsys)
    assert code == 0
    got = json.loads(out)
    assert got["data_read"]["rows"] == 3000 and got["data_read"]["files"] == 3
    assert got["data_read"]["chunks"] == 12 and got["data_read"]["passes"] == 1
    data = Dataset.from_arrays(df[["a", "b", "c"]].to_numpy(), df["y"].to_numpy(),
                               feature_names=["a", "b", "c"])
    csv = folder.parent / "same.csv"
    data.to_csv(csv)
    code, out, _ = _fit(["fit", "eb", "--data", str(csv), "--target", "y", "--json", "--quiet"], capsys)
    want = json.loads(out)
    assert "data_read" not in want  # a small CSV is still read into memory
    assert got["sigma"] == pytest.approx(want["sigma"], rel=1e-9)
    assert got["intercept"] == pytest.approx(want["intercept"], rel=1e-9)


def test_compare_on_a_glob_writes_statistics_not_rows(parts, tmp_path, capsys):
    folder, _ = parts
    out = tmp_path / "run"
    code, _, _ = _fit(["compare", "--data", f"{folder}/part-*.parquet", "--target", "y",
                       "--methods", "exact,eb,cv", "--out", str(out), "--quiet"], capsys)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["exact.nc", "report.html", "statistics.json",
                                                    "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_read"]["rows"] == 3000
    assert "Data read: streamed: 3,000 rows" in (out / "report.html").read_text()
    assert main(["report", str(out)]) == 0  # re-rendered from the statistics alone


@pytest.mark.parametrize("problem", ["nan", "missing-column", "corrupt"])
def test_bad_files_exit_2_with_one_line_and_no_run_directory(parts, tmp_path, capsys, problem):
    _, df = parts
    folder = tmp_path / "bad"
    folder.mkdir()
    df.iloc[:1000].to_parquet(folder / "part-0.parquet", index=False)
    second = df.iloc[1000:].copy()
    if problem == "nan":
        second.iloc[1733, 1] = np.nan
        expect = "part-1.parquet, row 1,734, column 'b'"
    elif problem == "missing-column":
        second = second.drop(columns="c")
        expect = "part-1.parquet has no column(s) ['c']"
    if problem == "corrupt":
        (folder / "part-1.parquet").write_bytes(b"PAR1\x00garbage")
        expect = "part-1.parquet is not a readable Parquet file"
    else:
        second.to_parquet(folder / "part-1.parquet", index=False)
    out = tmp_path / "run"
    code, _, err = _fit(["compare", "--data", str(folder), "--target", "y", "--out", str(out),
                         "--quiet"], capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and expect in err
    assert not out.exists() and not list(tmp_path.glob(".run*"))


def test_simulate_writes_a_parquet_data_set_with_its_truth(tmp_path, capsys):
    out = tmp_path / "sim.parquet"
    assert main(["simulate", "--rows", "5000", "--features", "4", "--out", str(out), "--seed", "3"]) == 0
    truth = json.loads((tmp_path / "sim.parquet.truth.json").read_text())
    assert truth["rows"] == 5000 and truth["sigma"] == 0.5
    data = stream_data(out, target="y")
    assert (data.n, data.d) == (5000, 4)
    centred, centering = data.center()
    w = np.linalg.solve(centred.stats.G, centred.stats.b)
    np.testing.assert_allclose(w, truth["weights"], atol=0.05)  # least squares, N = 5000
    with pytest.raises(ValueError, match="at least 1"):
        write_simulated_parquet(tmp_path / "x.parquet", rows=0, features=2)


def test_netcdf_is_written_compressed(tmp_path):
    import xarray as xr

    draws = np.random.default_rng(0).standard_normal((2, 500, 300)).round(2)  # compressible
    tree = xr.DataTree.from_dict({"posterior": xr.Dataset({"w": (("chain", "draw", "f"), draws)})})
    save_datatree(tree, tmp_path / "t.nc")
    tree.to_netcdf(tmp_path / "raw.nc", engine="h5netcdf")
    assert (tmp_path / "t.nc").stat().st_size < 0.7 * (tmp_path / "raw.nc").stat().st_size
    np.testing.assert_array_equal(load_datatree(tmp_path / "t.nc")["posterior"]["w"].values, draws)


def test_fit_with_dask_reads_on_a_local_cluster_and_agrees(parts, capsys):
    folder, _ = parts
    argv = ["fit", "cv", "--data", str(folder), "--target", "y", "--json", "--quiet"]
    code, out, _ = _fit(argv, capsys)
    single = json.loads(out)
    code, out, err = _fit([*argv, "--dask"], capsys)
    assert code == 0, err
    dist = json.loads(out)
    assert dist["data_read"]["format"] == "dask" and dist["data_read"]["rows"] == 3000
    # The same hashed folds (row numbers carried across partitions): the same CV answer.
    assert dist["lambda"] == pytest.approx(single["lambda"], rel=1e-9)
    assert dist["intercept"] == pytest.approx(single["intercept"], rel=1e-9)
