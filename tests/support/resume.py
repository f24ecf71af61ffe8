"""Kill-and-resume for the resume tests: a run stopped the way a killed process stops the
loop, so that the next ``run`` of the same spec and folder resumes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gapbench.benchmark.harness import run


def run_interrupted(spec: Any, out: Path, at_step: int) -> None:
    """Run ``spec`` into ``out`` and interrupt it right after its evaluation at ``at_step``
    (before that evaluation's checkpoint is written)."""

    def kill(row: dict[str, Any], algo: Any) -> None:
        if row["step"] == at_step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(spec, out, on_eval=kill, progress=False)


def start_cli(args: list[str], log: Path, own_group: bool = False):
    """``gapbench ARGS`` in a child process logging to ``log``, for the tests that kill or
    interrupt it; ``own_group``: in a process group of its own, which a test can signal as
    a terminal's Ctrl-C signals the foreground group. Returns the Popen."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "gapbench.benchmark.cli", *args]
    root = Path(__file__).resolve().parents[2]
    with open(log, "w") as f:
        return subprocess.Popen(
            cmd,
            cwd=root,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
            preexec_fn=_answer_sigint,
        )


def _answer_sigint() -> None:
    """In the child before exec: SIGINT at its default, even when this test process runs
    with it ignored (a background job of a script), which the child would inherit."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_matrix_cli(
    config: Path, out: Path, log: Path, *extra: str, own_group: bool = False, quiet: bool = True
):
    """``gapbench matrix run CONFIG --out OUT --workers 1`` with one torch thread (no
    OpenMP spinning on a busy 2-core machine) in a child process logging to ``log``
    (``quiet=False``: with the runs' progress lines)."""
    args = ["matrix", "run", str(config), "--out", str(out), "--workers", "1", "--threads", "1"]
    return start_cli([*args, *extra, *(["--quiet"] if quiet else [])], log, own_group)


def resume_after_stop_in_first_run(matrix: Any, out: Path, updates: int, every: int):
    """For a two-run matrix stopped during its first run: the first has a checkpoint
    mid-way and no record, the second never started; running the matrix again (as
    re-running the command does) completes both, the first resumed at its checkpoint.
    Returns the two run folders."""
    from gapbench.benchmark import records
    from gapbench.benchmark.executors import run_matrix

    first, second = (out / r.run_id for r in matrix.runs)
    state = records.load_checkpoint(first / records.CHECKPOINT)
    assert every <= state["updates"] < updates and not records.is_complete(first)
    assert not second.exists()  # never started
    results = run_matrix(matrix, workers=1, cpus_per_run=1)
    assert {r["status"] for r in results.values()} == {"ok"}
    summary = records.read_json(first / records.SUMMARY)
    assert summary["resumed"][0]["update"] == state["updates"]
    for run_dir in (first, second):
        curve = records.read_curve(run_dir / records.CURVE)
        assert [int(r["step"]) for r in curve] == list(range(every, updates + 1, every))
    return first, second
