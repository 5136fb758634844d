"""The run directory (all files or none) and the DataTree conversion and netCDF round trip;
the destination checked before any work, and the temporary siblings of killed writers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import hyperbayes.inference.workflow.rundir as rundir
from hyperbayes.inference.methods.arviz_io import draws_to_datatree, load_datatree, save_datatree
from hyperbayes.inference.workflow.cli import main
from hyperbayes.inference.workflow.rundir import (
    RunDirectoryExists,
    UnusableDestination,
    check_destination,
    remove_stale_partials,
    write_run_directory,
)
from hyperbayes.models.data import simulate

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


# --------------------------------------------------------------------------- the destination


def test_the_temporary_sibling_is_named_after_its_writer(tmp_path):
    seen = []
    write_run_directory(tmp_path / "run", summary={}, extra_files={"x": lambda p: seen.append(p)})
    (tmp,) = seen
    assert re.fullmatch(rf"\.run\.{os.getpid()}@[A-Za-z0-9_-]+\.[0-9a-f]{{32}}\.partial",
                        tmp.parent.name)  # fmt: skip


def test_check_destination_accepts_a_new_directory_and_leaves_nothing(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    assert check_destination(out) == out
    assert list(tmp_path.iterdir()) == []  # neither the probe nor the parents


@pytest.mark.parametrize("kind", ["directory", "file", "dangling symlink"])
def test_check_destination_refuses_what_exists(tmp_path, kind):
    out = tmp_path / "run"
    if kind == "directory":
        out.mkdir()
    elif kind == "file":
        out.write_text("mine")
    else:
        out.symlink_to(tmp_path / "nowhere")
    with pytest.raises(RunDirectoryExists, match=f"output directory {out} exists already"):
        check_destination(out)


@pytest.mark.parametrize("depth", [0, 1], ids=["parent", "grandparent"])
def test_check_destination_refuses_a_parent_that_is_a_file(tmp_path, depth):
    blocker = tmp_path / "results.csv"
    blocker.write_text("a,b\n")
    out = blocker / "sub" / "run" if depth else blocker / "run"
    with pytest.raises(UnusableDestination) as info:
        check_destination(out)
    message = str(info.value)
    assert message == (
        f"cannot create output directory {out}: {blocker} is a file, not a directory; "
        "choose another --out."
    )
    assert blocker.read_text() == "a,b\n"


def test_check_destination_refuses_an_unwritable_place():
    # Permission bits do not stop root (the tests run as root); /proc refuses everyone.
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc: the one directory no user, root included, can write")
    out = Path("/proc/hyperbayes-test/run")
    with pytest.raises(UnusableDestination, match=r"^cannot create output directory "
                       r"/proc/hyperbayes-test/run: /proc is not writable \(.+\); choose a "
                       r"--out in a directory you can write to\.$"):  # fmt: skip
        check_destination(out)


def test_a_failure_also_removes_the_parents_it_made(tmp_path):
    def writer(path: Path) -> None:
        raise RuntimeError("report failed")

    with pytest.raises(RuntimeError):
        write_run_directory(tmp_path / "a" / "b" / "run", summary={}, extra_files={"r": writer})
    assert list(tmp_path.iterdir()) == []


def test_a_second_interrupt_does_not_stop_the_cleanup(monkeypatch, tmp_path):
    """Ctrl-C pressed again (or SIGTERM after SIGINT) while the temporary sibling is removed."""
    rmtree, calls = shutil.rmtree, []

    def interrupted_once(path, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt
        rmtree(path, **kwargs)

    def writer(path: Path) -> None:
        path.write_text("half")
        raise RuntimeError("report failed")

    monkeypatch.setattr(rundir.shutil, "rmtree", interrupted_once)
    with pytest.raises(KeyboardInterrupt):  # the interrupt wins: exit 130, not 1
        write_run_directory(tmp_path / "run", summary={}, extra_files={"r": writer})
    assert len(calls) == 2
    assert list(tmp_path.iterdir()) == []


def _partial(parent: Path, name: str, pid: int, host: str = rundir._HOST) -> Path:
    path = parent / f".{name}.{pid}@{host}.{uuid.uuid4().hex}.partial"
    path.mkdir()
    (path / "summary.json").write_text("{}")
    return path


def test_stale_partials_of_dead_writers_are_removed_and_no_others(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # exited and reaped: its pid names no process now
    stale = _partial(tmp_path, "run", child.pid)
    alive = _partial(tmp_path, "run", os.getpid())  # a writer that is still running
    elsewhere = _partial(tmp_path, "run", child.pid, host="another-host")  # shared file system
    other_name = _partial(tmp_path, "run2", child.pid)
    old_style = tmp_path / f".run.{uuid.uuid4().hex}.partial"  # no pid: whose, is unknown
    old_style.mkdir()
    out = write_run_directory(tmp_path / "run", summary={"a": 1})
    assert not stale.exists()
    assert all(p.exists() for p in (alive, elsewhere, other_name, old_style))
    assert json.loads((out / "summary.json").read_text()) == {"a": 1}
    assert remove_stale_partials(tmp_path / "run2") == [other_name]


# --------------------------------------------------------------------------- the command line


def _one_line_exit_2(capsys, argv: list[str]) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert (code, out) == (2, ""), err
    assert len(err.splitlines()) == 1, err  # no progress line: nothing ran
    assert err.startswith("hyperbayes: error: ")
    return err.strip()


@pytest.fixture
def small_csv(tmp_path):
    path = tmp_path / "data.csv"
    simulate(n=20, d=2, sigma=1.0, noise=1.0, seed=5).data.to_csv(path)
    return path


@pytest.mark.parametrize("command", ["fit", "compare", "demo"])
def test_an_out_under_a_file_is_refused_before_any_method_runs(capsys, tmp_path, small_csv, command):
    blocker = tmp_path / "notes.txt"
    blocker.write_text("mine")
    out = blocker / "run"
    data = ["--data", str(small_csv), "--target", "y", "--noise", "1"]
    argv = {
        "fit": ["fit", "exact", *data, "--out", str(out)],
        "compare": ["compare", *data, "--methods", "exact", "--out", str(out)],
        "demo": ["demo", "--out", str(out)],
    }[command]
    err = _one_line_exit_2(capsys, argv)
    assert f"{blocker} is a file, not a directory; choose another --out." in err
    assert blocker.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "notes.txt"]


def test_an_unwritable_out_is_refused_before_the_method_runs(capsys, small_csv):
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc: the one directory no user, root included, can write")
    err = _one_line_exit_2(capsys, ["fit", "exact", "--data", str(small_csv), "--target", "y",
                                    "--noise", "1", "--out", "/proc/hyperbayes-test/run"])  # fmt: skip
    assert "/proc is not writable" in err and "choose a --out in a directory you can write" in err
