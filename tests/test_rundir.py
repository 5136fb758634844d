"""The run directory (all files or none) and the DataTree conversion and netCDF round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import hyperbayes.inference.workflow.rundir as rundir
from hyperbayes.inference.methods.arviz_io import draws_to_datatree, load_datatree, save_datatree
from hyperbayes.inference.workflow.rundir import RunDirectoryExists, write_run_directory

FEATURES = ("age", "bmi", "bp")


@pytest.fixture(scope="module")
def tree():
    rng = np.random.default_rng(0)
    return draws_to_datatree(
        {
            "sigma": rng.gamma(2.0, size=(2, 5)),
            "w": rng.standard_normal((2, 5, 3)),
            "noise": rng.gamma(3.0, size=(2, 5)),
        },
        feature_names=FEATURES,
        sample_stats={"diverging": np.zeros((2, 5), dtype=bool)},
        attrs={"method": "test", "log_evidence": -12.5},
    )


def test_draws_to_datatree_labels_features(tree):
    post = tree["posterior"]
    assert post["w"].dims == ("chain", "draw", "feature")
    assert list(post["w"].coords["feature"].values) == list(FEATURES)
    assert post["sigma"].dims == ("chain", "draw")
    assert tree["sample_stats"]["diverging"].shape == (2, 5)
    assert tree.attrs["method"] == "test"


def test_ard_sigma_gets_the_feature_dim():
    t = draws_to_datatree({"sigma": np.ones((1, 4, 3))}, feature_names=FEATURES)
    assert t["posterior"]["sigma"].dims == ("chain", "draw", "feature")


def test_netcdf_round_trip(tree, tmp_path):
    path = tmp_path / "t.nc"
    save_datatree(tree, path)
    back = load_datatree(path)
    for group in ("posterior", "sample_stats"):
        xr.testing.assert_equal(back[group].to_dataset(), tree[group].to_dataset())
    assert back.attrs["log_evidence"] == -12.5
    path.unlink()  # fully loaded: the file is closed and no longer needed


def test_write_run_directory(tree, tmp_path):
    out = tmp_path / "nested" / "run"
    written = write_run_directory(
        out,
        summary={"sigma": np.float64(1.5), "log_evidence": float("nan"), "w": np.arange(3)},
        datatrees={"nuts": tree, "eb": None},  # a method without draws writes no file
        extra_files={"report.html": lambda p: p.write_text("<html></html>")},
    )
    assert written == out
    assert sorted(p.name for p in out.iterdir()) == ["nuts.nc", "report.html", "summary.json"]
    text = (out / "summary.json").read_text()
    assert "NaN" not in text  # strict JSON
    assert json.loads(text) == {"sigma": 1.5, "log_evidence": None, "w": [0, 1, 2]}
    xr.testing.assert_equal(
        load_datatree(out / "nuts.nc")["posterior"].to_dataset(), tree["posterior"].to_dataset()
    )
    assert [p.name for p in out.parent.iterdir()] == ["run"]  # no temporary directory left


def test_run_directory_has_ordinary_permissions(tmp_path):
    # Same mode as any directory the user creates (umask), not a private temporary's 0700.
    (tmp_path / "plain").mkdir()
    out = write_run_directory(tmp_path / "run", summary={})
    assert out.stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_existing_directory_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(RunDirectoryExists, match="exists already") as info:
        write_run_directory(out, summary={"a": 1})
    assert isinstance(info.value, FileExistsError)
    assert [p.name for p in out.iterdir()] == ["old.txt"]


@pytest.mark.parametrize("error", [RuntimeError("report failed"), KeyboardInterrupt()])
def test_a_failing_writer_leaves_nothing(tree, tmp_path, error):
    def writer(path: Path) -> None:
        path.write_text("half")
        raise error

    with pytest.raises(type(error)):
        write_run_directory(
            tmp_path / "run",
            summary={"a": 1},
            datatrees={"nuts": tree},
            extra_files={"report.html": writer},
        )
    assert list(tmp_path.iterdir()) == []


def test_a_failing_netcdf_write_leaves_nothing(monkeypatch, tmp_path):
    def broken(tree, path):
        Path(path).write_bytes(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(rundir, "save_datatree", broken)
    with pytest.raises(OSError, match="No space left"):
        write_run_directory(tmp_path / "run", summary={"a": 1}, datatrees={"nuts": object()})
    assert list(tmp_path.iterdir()) == []
