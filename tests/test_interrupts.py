"""Interruption: Ctrl-C, SIGTERM and SIGHUP end a run with exit code 130 and write nothing.

The signals are sent as a user (or a batch scheduler) sends them: to a real ``hyperbayes``
process, once it is sampling. Such a process shows its progress on stderr only when it thinks
it writes to a terminal; ``TTY_COMPATIBLE`` and ``TTY_INTERACTIVE`` tell rich (PyMC's progress
bars) to draw it anyway, so the tests can wait for the first draws instead of a fixed time.
Each waits with a generous deadline but polls, so a fast machine is not slowed down.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pymc as pm
import pytest

from hyperbayes.inference.methods.nuts import sample_posterior
from hyperbayes.inference.methods.sampler_interrupts import propagate_interrupts
from hyperbayes.inference.workflow.cli import main
from hyperbayes.inference.workflow.interrupts import (
    EXIT_INTERRUPTED,
    Interrupted,
    interrupted,
    signals_as_interrupts,
)
from hyperbayes.models.data import simulate

SCRIPT = Path(sys.executable).parent / "hyperbayes"
#: Seconds to wait for a process to reach the point where the signal is sent (imports and
#: nutpie's compilation, on a loaded 2-core machine) and then to exit after it.
REACH_TIMEOUT = 180
EXIT_TIMEOUT = 60
#: A row of nutpie's or PyMC's progress table whose draw count is no longer 0.
SAMPLING = re.compile(r"[━╸╺]+\s+[1-9]")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: NUTS on the ARD model of ``csv_10d`` makes ~4000 draws per second (127 gradients each, on
#: the 2-core machine), so this many take ~25 s per chain, 50 s in all: the run is always
#: interrupted while sampling, even on a machine ten times faster.
NUTS_ARGS = ("--ard", "--noise", "1", "--draws", "100000", "--chains", "2")
#: Seconds from the signal to the exit: measured 0.6 s in process (nutpie's abort) and 4-5 s
#: for the whole process at a load of 8 on 2 cores; well below the 50 s of the full run.
EXIT_WITHIN = 30


@pytest.fixture(scope="module")
def csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("interrupts") / "data.csv"
    simulate(n=30, d=2, sigma=1.0, noise=1.0, seed=3).data.to_csv(path)
    return path


@pytest.fixture(scope="module")
def csv_10d(tmp_path_factory):
    path = tmp_path_factory.mktemp("interrupts") / "data10.csv"
    simulate(n=50, d=10, sigma=1.0, noise=1.0, seed=3).data.to_csv(path)
    return path


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.endswith(".partial"))


class Run:
    """A ``hyperbayes`` (or Python) process with stdout and stderr in files, polled."""

    def __init__(self, argv: list[str], tmp_path: Path) -> None:
        self.out_path, self.err_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        env = os.environ | {
            "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "200", "NO_COLOR": "1",
        }  # fmt: skip
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            # Python's SIGINT handler is only installed when SIGINT is not ignored; a test run
            # started in the background of a script ignores it, so give the child the default.
            self.proc = subprocess.Popen(
                argv, stdout=out, stderr=err, env=env, cwd=tmp_path, preexec_fn=_default_sigint
            )

    @property
    def stderr(self) -> str:
        """What the process wrote on stderr, without the terminal's control sequences."""
        return ANSI_ESCAPE.sub("", self.err_path.read_text(errors="replace"))

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def wait_for(self, pattern: re.Pattern[str]) -> None:
        deadline = time.monotonic() + REACH_TIMEOUT
        while not pattern.search(self.stderr):
            if self.proc.poll() is not None:
                pytest.fail(f"exited with {self.proc.returncode} before {pattern.pattern!r}:\n"
                            f"{self.stderr[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {pattern.pattern!r} within {REACH_TIMEOUT} s:\n{self.stderr[-2000:]}")
            time.sleep(0.05)

    def interrupt(self, signum: int) -> tuple[int, float]:
        """Send ``signum``; return the exit code and the seconds it took to exit."""
        start = time.monotonic()
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=EXIT_TIMEOUT)
        return code, time.monotonic() - start

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def spawn(tmp_path):
    runs = []

    def start(argv):
        runs.append(Run(argv, tmp_path))
        return runs[-1]

    yield start
    for run in runs:
        run.close()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def last_line(stderr: str) -> str:
    return stderr.rstrip().splitlines()[-1]


# --------------------------------------------------------------------------- the console script


def test_fit_nuts_interrupted_while_sampling_exits_130_and_writes_nothing(spawn, tmp_path, csv_10d):
    """Ctrl-C: nutpie catches the interrupt and returns the draws so far; the run must not go on.
    (SIGTERM inside nutpie: the compare test below; SIGHUP: the writer's tests.)"""
    out = tmp_path / "run"
    run = spawn([str(SCRIPT), "fit", "nuts", "--data", str(csv_10d), "--target", "y", *NUTS_ARGS,
                 "--json", "--out", str(out)])  # fmt: skip
    run.wait_for(SAMPLING)
    code, seconds = run.interrupt(signal.SIGINT)
    assert code == EXIT_INTERRUPTED, run.stderr[-2000:]
    assert last_line(run.stderr) == "hyperbayes: interrupted (SIGINT); nothing was written."
    assert "Traceback" not in run.stderr
    assert run.stdout == ""  # no JSON object of a partial (or empty) posterior
    assert not out.exists()
    assert leftovers(tmp_path) == []
    assert seconds < EXIT_WITHIN  # it stopped sampling, and did not finish first


def test_compare_terminated_in_nuts_runs_no_further_method(spawn, tmp_path, csv_10d):
    """An interrupt swallowed by nutpie used to let the next method run and the report crash;
    SIGTERM (a batch scheduler's) goes the same way as Ctrl-C, through nutpie's handler."""
    out = tmp_path / "run"
    run = spawn([str(SCRIPT), "compare", "--data", str(csv_10d), "--target", "y", *NUTS_ARGS,
                 "--methods", "nuts,eb", "--out", str(out)])  # fmt: skip
    run.wait_for(SAMPLING)
    code, _ = run.interrupt(signal.SIGTERM)
    assert code == EXIT_INTERRUPTED, run.stderr[-2000:]
    assert last_line(run.stderr) == "hyperbayes: interrupted (SIGTERM); nothing was written."
    assert "[2/2] eb" not in run.stderr and "nuts failed" not in run.stderr
    assert run.stdout == ""
    assert not out.exists()
    assert leftovers(tmp_path) == []


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import hyperbayes.inference.workflow.rundir as rundir
    from hyperbayes.inference.workflow.cli import main

    def slow_save(tree, path):  # half a file on disk, then a long write
        Path(path).write_bytes(b"\\x89HDF partial")
        print("hyperbayes-test: writing", file=sys.stderr, flush=True)
        for _ in range(1200):
            time.sleep(0.05)

    rundir.save_datatree = slow_save
    sys.exit(main(sys.argv[1:]))
    """
)
WRITING = re.compile("hyperbayes-test: writing")


def writer_argv(csv: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", WRITER, "fit", "exact", "--data", str(csv), "--target", "y",
            "--noise", "1", "--hyperprior", "halfnormal:1", "--draws", "20", "--quiet",
            "--out", str(out)]  # fmt: skip


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=["SIGINT", "SIGTERM", "SIGHUP"])  # fmt: skip
def test_killed_while_writing_the_run_directory_leaves_nothing(spawn, tmp_path, csv, signum):
    out = tmp_path / "run"
    run = spawn(writer_argv(csv, out))
    run.wait_for(WRITING)
    assert len(leftovers(tmp_path)) == 1  # the temporary sibling, half written
    code, _ = run.interrupt(signum)
    assert code == EXIT_INTERRUPTED, run.stderr[-2000:]
    name = signal.Signals(signum).name
    assert run.stderr.splitlines()[-1] == f"hyperbayes: interrupted ({name}); nothing was written."
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_a_stale_partial_of_a_killed_writer_is_removed_by_the_next_run(spawn, tmp_path, csv):
    """SIGKILL cannot be handled: the temporary sibling stays, named after the dead process,
    and the next write to the same directory removes it."""
    out = tmp_path / "run"
    run = spawn(writer_argv(csv, out))
    run.wait_for(WRITING)
    pid = run.proc.pid
    code, _ = run.interrupt(signal.SIGKILL)
    assert code == -signal.SIGKILL
    (stale,) = leftovers(tmp_path)
    assert stale.startswith(f".run.{pid}@") and (tmp_path / stale / "summary.json").exists()
    code = main(["fit", "exact", "--data", str(csv), "--target", "y", "--noise", "1",
                 "--hyperprior", "halfnormal:1", "--draws", "20", "--quiet", "--json",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["exact.nc", "summary.json"]
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- samplers in process


def test_pymc_nuts_swallowing_ctrl_c_still_raises_it_and_stops_every_chain(monkeypatch, weak_1d):
    """PyMC's sequential NUTS swallows Ctrl-C for the chain it samples, then starts the next one
    in full; the interrupt must end the call, and quickly."""
    draws_seen = []
    sample, handler = pm.sample, signal.getsignal(signal.SIGINT)

    def sample_and_press_ctrl_c(*args, callback=None, **kwargs):
        def pressing(trace, draw):
            draws_seen.append(draw.draw_idx)
            if len(draws_seen) == 50:
                signal.raise_signal(signal.SIGINT)  # as the terminal does, in the first chain
            if callback is not None:
                callback(trace=trace, draw=draw)

        return sample(*args, callback=pressing, **kwargs)

    monkeypatch.setattr(pm, "sample", sample_and_press_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        sample_posterior(weak_1d.data, hyperprior="halfnormal:1", noise=1.0, backend="pymc",
                         draws=100_000, tune=100, chains=3, seed=0)  # fmt: skip
    # 50 draws in the first chain, then at most one in each later chain.
    assert len(draws_seen) <= 50 + 2
    assert signal.getsignal(signal.SIGINT) is handler


def test_propagate_interrupts_raises_what_the_block_swallowed():
    handler = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), propagate_interrupts() as watch:
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass  # as nutpie does
        assert watch.interrupted
    with pytest.raises(KeyboardInterrupt) as info, propagate_interrupts():
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            raise ValueError("Not enough samples to build a trace.") from None  # as PyMC does
    assert isinstance(info.value.__cause__, ValueError)
    with propagate_interrupts() as watch:  # no interrupt: nothing happens
        pass
    assert not watch.interrupted
    assert signal.getsignal(signal.SIGINT) is handler


# --------------------------------------------------------------------------- the signal handling


def test_termination_signals_become_interrupts_and_handlers_are_restored():
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        with pytest.raises(Interrupted) as info, signals_as_interrupts():
            signal.raise_signal(signum)
        assert isinstance(info.value, KeyboardInterrupt)
        assert info.value.signal_name == signal.Signals(signum).name
        assert pickle.loads(pickle.dumps(info.value)).signum == signum  # e.g. from a worker
    assert {s: signal.getsignal(s) for s in before} == before


def test_an_ignored_signal_stays_ignored():
    """Under ``nohup`` SIGHUP is ignored on purpose; a closed terminal must not end the run."""
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with signals_as_interrupts():
            signal.raise_signal(signal.SIGHUP)  # ignored: nothing happens
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_the_interrupt_message_names_the_signal(capsys):
    assert interrupted(KeyboardInterrupt()) == 130
    assert interrupted(Interrupted(signal.SIGTERM)) == 130
    assert capsys.readouterr().err.splitlines() == [
        "hyperbayes: interrupted (SIGINT); nothing was written.",
        "hyperbayes: interrupted (SIGTERM); nothing was written.",
    ]


# --------------------------------------------------------------------------- --debug


@pytest.mark.parametrize("command", ["fit", "compare", "report", "demo"])
def test_debug_is_documented_in_help(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--debug show the traceback of an error" in help_text
