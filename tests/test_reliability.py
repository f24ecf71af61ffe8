"""Issue 20: nothing runs that was not asked for, nothing is lost, a stale or failed record
is never returned as if it answered the question asked."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gapbench.benchmark import records
from gapbench.benchmark.cli import app
from gapbench.benchmark.executors import plan
from gapbench.benchmark.harness import run
from gapbench.benchmark.matrix import load
from gapbench.benchmark.runstate import RunLock
from gapbench.benchmark.spec import Budget, RunSpec

runner = CliRunner()
TINY_ARGS = [
    "--budget", "updates=20", "--budget", "eval_every=10", "--budget", "eval_episodes=1",
    "--budget", "warmup_steps=20", "--set", "hidden=32,32", "--set", "batch_size=32",
]  # fmt: skip
TINY = Budget(updates=20, eval_every=10, eval_episodes=1, warmup_steps=20)
TINY_NET = {"hidden": (32, 32), "batch_size": 32}


def cli_run(out, *extra):
    args = ["run", "--task", "hopper", "--algo", "sac", "--gap", "gravity=2.0", *TINY_ARGS]
    return runner.invoke(app, [*args, "--out", str(out), *extra])


def sac_spec(**kw) -> RunSpec:
    base = {"task": "hopper", "algorithm": "sac", "gap": "gravity=2.0", "budget": TINY}
    return RunSpec(**{**base, "hparams": TINY_NET, **kw})


def tiny_dataset(path, seed=0, n=300):
    from gapbench.gap_envs.datasets import Transitions, save_d4rl_hdf5

    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n + 1, 11)).astype(np.float32)
    ends = np.arange(n) % 100 == 99
    tr = Transitions(
        obs[:-1], rng.uniform(-1, 1, (n, 3)), rng.normal(size=n), obs[1:], np.zeros(n, bool), ends
    )
    return save_d4rl_hdf5(tr, path)


# -- item 2: `run` takes the run's lock ------------------------------------------------------
def test_run_refuses_an_id_that_another_process_is_training(tmp_path):
    run_id = sac_spec().run_id
    lock = RunLock.acquire(tmp_path / run_id)  # a live holder: this test's process
    try:
        result = cli_run(tmp_path)
    finally:
        lock.release()
    assert result.exit_code == 2, result.output
    assert f"run {run_id} is being trained by another process" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr
    assert sorted(p.name for p in (tmp_path / run_id).iterdir()) == []  # nothing written
    # once the lock is free the same command trains it, and releases the lock
    result = cli_run(tmp_path)
    assert result.exit_code == 0, result.output
    assert not (tmp_path / run_id / ".lock").exists()


# -- item 4: failures do not stick, ids and records cover what changes the numbers ---------
def failed_record(out, spec: RunSpec, device: str = "cpu") -> None:
    run_dir = out / spec.run_id
    run_dir.mkdir(parents=True)
    records.write_json(run_dir / records.SPEC, {"spec": {**spec.to_dict(), "device": device}})
    records.write_json(run_dir / records.SUMMARY, {"status": "failed", "error": "disk full"})


def test_run_retry_failed_sets_the_failure_aside_and_runs_again(tmp_path):
    spec = sac_spec()
    failed_record(tmp_path, spec)
    result = cli_run(tmp_path)
    assert result.exit_code == 1 and "disk full" in result.stderr
    assert "--retry-failed runs it again" in result.stderr
    result = cli_run(tmp_path, "--retry-failed")
    assert result.exit_code == 0, result.output
    run_dir = tmp_path / spec.run_id
    assert records.read_json(run_dir / records.SUMMARY)["status"] == "ok"
    assert records.read_json(run_dir / "summary.failed-1.json")["error"] == "disk full"


def test_a_missing_gpu_writes_nothing_and_its_old_failure_does_not_stick(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = cli_run(tmp_path, "--device", "cuda")
    assert result.exit_code == 2
    assert "device 'cuda' requested but CUDA is not available here; valid: cpu" in result.stderr
    assert list(tmp_path.iterdir()) == []
    # a record that failed on cuda (an older gapbench, or a Ray node) is run again on cpu
    spec = sac_spec()
    failed_record(tmp_path, spec, device="cuda")
    result = cli_run(tmp_path, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert (tmp_path / spec.run_id / "summary.failed-1.json").is_file()


def test_a_replaced_dataset_makes_its_done_record_stale(tmp_path):
    data = tiny_dataset(tmp_path / "d.hdf5")
    spec = RunSpec(
        task="hopper", algorithm="iql", dataset=str(data), budget=TINY, hparams=TINY_NET
    ).resolved()
    m = load(
        {
            "tasks": ["hopper"],
            "datasets": [str(data)],
            "budget": {"updates": 20, "eval_every": 10, "eval_episodes": 1, "warmup_steps": 20},
            "algorithms": {"iql": {"hparams": {"hidden": [32, 32], "batch_size": 32}}},
        },
        out=tmp_path / "out",
    )
    assert m.runs[0].run_id == spec.run_id
    first = run(spec, tmp_path / "out", progress=False)
    run_dir = tmp_path / "out" / spec.run_id
    recorded = records.read_json(run_dir / records.SPEC)["dataset_sha256"]
    assert recorded == records.dataset_sha256(str(data)) and len(recorded) == 64
    assert plan(m, tmp_path / "out", retry_failed=False)[0] == []  # same data: done
    tiny_dataset(data, seed=1)  # new content under the same name
    todo, _ = plan(m, tmp_path / "out", retry_failed=False)
    assert [r.run_id for r in todo] == [spec.run_id]
    result = runner.invoke(
        app, ["run", "--task", "hopper", "--algo", "iql", "--dataset", str(data), *TINY_ARGS,
              "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert records.read_json(run_dir / "summary.stale-1.json") == first
    assert records.read_json(run_dir / records.SPEC)["dataset_sha256"] != recorded
    assert plan(m, tmp_path / "out", retry_failed=False)[0] == []


def test_a_corrupt_summary_reads_as_failed_and_is_retried(tmp_path):
    spec = sac_spec()
    run_dir = tmp_path / spec.run_id
    run_dir.mkdir()
    (run_dir / records.SUMMARY).write_text('{"status": "o')
    result = cli_run(tmp_path)
    assert result.exit_code == 1 and "summary.json is unreadable" in result.stderr
    result = cli_run(tmp_path, "--retry-failed")
    assert result.exit_code == 0, result.output
    assert (run_dir / "summary.failed-1.json").read_text() == '{"status": "o'
    assert json.loads((run_dir / records.SUMMARY).read_text())["status"] == "ok"


@pytest.mark.parametrize("device", ["cuda", "cuda:7"])
def test_device_problem_names_the_valid_devices(device, monkeypatch):
    from gapbench.benchmark.spec import device_problem

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device_problem("cpu") is None
    expected = None if device == "cuda" else "this machine has 1 GPU(s); valid: cuda:0..0"
    problem = device_problem(device)
    assert problem == expected or expected in problem


# -- item 5: one worker killed by the OS marks only its own run ------------------------------
def test_a_killed_worker_crashes_only_its_run_and_the_matrix_goes_on(tmp_path):
    """SIGKILL (the OOM killer) of the worker that trains the long run: the pool breaks and
    stops every worker, yet only that run is "crashed"; the others finish in a new pool."""
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from gapbench.benchmark import runstate

    net = {"hidden": [32, 32], "batch_size": 32}
    short = {"updates": 120, "eval_every": 40, "eval_episodes": 1, "warmup_steps": 50}
    data = {
        "name": "oom",
        "budget": short,
        "tasks": ["hopper"],
        "sim_gaps": ["gravity=2.0"],
        "algorithms": {
            "long": {"algorithm": "sac", "hparams": net, "budget": {"updates": 3000}},
            "short": {"algorithm": "sac", "hparams": net},
        },
        "seeds": 2,
        "exclude": [{"algorithm": "long", "seed": 1}],
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    m = load(path, out=out)
    victim = next(r.run_id for r in m.runs if r.label == "long")
    cmd = [sys.executable, "-m", "gapbench.benchmark.cli", "matrix", "run", str(path)]
    cmd += ["--out", str(out)]
    cmd += ["--workers", "2", "--cpus-per-run", "1", "--quiet"]
    env = {**os.environ, "COLUMNS": "250"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 240
    while True:  # the victim's worker holds its lock: kill that worker
        held = runstate.read_lock(out / victim)
        if held and held.get("pid") not in (None, proc.pid) and runstate.lock_alive(held):
            os.kill(held["pid"], signal.SIGKILL)
            break
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read().decode()
        time.sleep(0.05)
    text = proc.communicate(timeout=300)[0].decode()
    assert proc.returncode == 1, text
    assert f"{victim}" in text and "was killed by SIGKILL" in text, text
    assert "crashed: re-run the same command to resume" in text and "--retry-failed" not in text
    states = {r.run_id: runstate.run_status(out / r.run_id)[0] for r in m.runs}
    assert states.pop(victim) in ("interrupted", "missing")  # no record: the next run resumes it
    assert set(states.values()) == {"done"} and len(states) == 2


# -- item 6: a matrix is counted before it is expanded ---------------------------------------
def test_a_huge_matrix_is_refused_before_it_is_built(tmp_path):
    from gapbench.benchmark.matrix import MAX_RUNS, MatrixError

    base = {"tasks": ["hopper"], "algorithms": {"sac": {}, "iql": {}}, "datasets": ["d.hdf5"]}
    huge = f"at least 100,000,000 runs, above the limit of {MAX_RUNS:,}"
    with pytest.raises(MatrixError, match=huge):
        load({**base, "seeds": 100_000_000}, check_datasets=False)
    grid = {**base, "sim_gaps": [f"gravity={g}" for g in (1.5, 2, 3)], "seeds": 4}
    assert len(load(grid, check_datasets=False)) == 4 * (3 + 1)  # sac x gaps, iql x dataset
    with pytest.raises(MatrixError, match="expands to 16 runs, above the limit of 15"):
        load({**grid, "max_runs": 15}, check_datasets=False)
    assert len(load({**grid, "max_runs": 16}, check_datasets=False)) == 16
    with pytest.raises(MatrixError, match="max_runs: expected a positive integer, got 0"):
        load({**grid, "max_runs": 0}, check_datasets=False)


# -- item 9: records respect the umask -------------------------------------------------------
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_get_the_mode_the_umask_allows(tmp_path, umask):
    from gapbench.gap_envs.atomic import atomic_write_bytes, current_umask

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write_bytes(tmp_path / "summary.json", b"{}")
    finally:
        os.umask(old)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == 0o666 & ~umask


# -- items 7, 8: a hyper-parameter out of range is one line, before anything is written ------
@pytest.mark.parametrize(
    "setting, message",
    [
        ("batch_size=0", "'batch_size' must be an integer >= 1, got 0"),
        ("batch_size=inf", "'batch_size' needs an integer, got 'inf'"),
        ("actor_lr=-3e-4", "'actor_lr' must be a finite number > 0, got -0.0003"),
        ("critic_lr=nan", "'critic_lr' must be a finite number > 0, got nan"),
        ("n_critics=0", "'n_critics' must be an integer >= 1, got 0"),
        ("hidden=0", "'hidden' must be a list of layer widths, each >= 1, got (0,)"),
        ("discount=-3", "'discount' must be a number in (0, 1], got -3.0"),
        ("discount=1.5", "'discount' must be a number in (0, 1], got 1.5"),
        ("tau=0", "'tau' must be a number in (0, 1], got 0.0"),
    ],
)
def test_an_out_of_range_hyper_parameter_is_refused_up_front(tmp_path, setting, message):
    result = cli_run(tmp_path, "--set", setting)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == f"error: hyper-parameter {message}"
    assert list(tmp_path.iterdir()) == []


def test_a_matrix_lists_an_out_of_range_hyper_parameter():
    from gapbench.benchmark.matrix import MatrixError

    data = {"tasks": ["hopper"], "algorithms": {"sac": {"hparams": {"expectile": 1}}}}
    with pytest.raises(MatrixError, match="unknown hyper-parameter"):
        load(data)
    data["algorithms"] = {"iql": {"hparams": {"expectile": 1.0}}}
    with pytest.raises(MatrixError, match=r"'expectile' must be a number in \(0, 1\), got 1.0"):
        load({**data, "datasets": ["d.hdf5"]}, check_datasets=False)


# -- item 8: one line, not a traceback ------------------------------------------------------
def test_an_out_folder_that_cannot_hold_records_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    result = cli_run(tmp_path / "file" / "runs")
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("file is not a directory; valid: a writable folder")
    path = tmp_path / "m.yaml"
    path.write_text("tasks: [hopper]\nalgorithms: {sac: {}}\n")
    result = runner.invoke(app, ["matrix", "run", str(path), "--out", str(tmp_path / "file")])
    assert result.exit_code == 2 and "is not a directory" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "m.yaml"]


def test_a_matrix_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"tasks: [hopper\xff]\n")
    result = runner.invoke(app, ["matrix", "run", str(path), "--dry-run"])
    assert result.exit_code == 2 and "not a UTF-8 text file" in result.stderr
    assert "Traceback" not in result.output


def test_a_label_with_rich_markup_is_printed_as_written(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("tasks: [hopper]\nalgorithms: {'sac[/]': {algorithm: sac}}\n")
    (run,) = load(path, out=tmp_path / "out").runs
    records.write_json(
        tmp_path / "out" / run.run_id / records.SUMMARY,
        {"status": "ok", "final_normalized_score": 1.0},
    )
    result = runner.invoke(app, ["matrix", "run", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "sac[/]" in result.stdout
