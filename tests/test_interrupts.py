"""Ctrl-C and SIGTERM checkpoint a run where it stands (``runstate.interrupts_as_stop``):
the first signal is a stop request, a second aborts at once."""

from __future__ import annotations

import csv
import logging
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
import yaml
from support.resume import resume_after_stop_in_first_run, start_cli, start_matrix_cli

from gapbench.benchmark import records, runstate
from gapbench.benchmark.matrix import load

NET = ["--set", "hidden=32,32", "--set", "batch_size=32"]
# no periodic checkpoint before the end: a checkpoint found after the signal is the stop's
BUDGET = {"updates": 2000, "eval_every": 200, "eval_episodes": 1, "warmup_steps": 50,
          "checkpoint_every": 100}  # fmt: skip


def _interrupt_after_first_evaluation(proc, log: Path, group: bool = False) -> str:
    """Ctrl-C the child once it logs its first evaluation (the curve reaches disk only at
    checkpoints), as a terminal would (``group``: its whole process group); wait for it
    and return its output with rich's line wrapping undone."""
    deadline = time.time() + 240
    try:
        while "update 200/" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "no evaluation in time"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT) if group else proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL) if group else proc.kill()
    return " ".join(log.read_text().split())


def _steps(run_dir: Path) -> list[int]:
    with open(run_dir / records.CURVE) as f:
        return [int(r["step"]) for r in csv.DictReader(f)]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_first_signal_asks_to_stop_and_the_second_aborts(sig):
    told = []
    # answered by default (pytest may run with SIGINT ignored, as a script's background job)
    outer = signal.signal(sig, signal.default_int_handler)
    try:
        with runstate.interrupts_as_stop(lambda: told.append(1)) as stop:
            assert not stop()
            os.kill(os.getpid(), sig)
            time.sleep(0.05)  # the handler runs in the main thread between two bytecodes
            assert stop() and told == [1]
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), sig)
                time.sleep(1)
        assert signal.getsignal(sig) is signal.default_int_handler  # the previous one is back
    finally:
        signal.signal(sig, outer)


def test_an_ignored_signal_stays_ignored():
    """A shell starts background jobs with SIGINT ignored; a Ctrl-C meant for the script
    must not stop them."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with runstate.interrupts_as_stop() as stop:
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            assert not stop()
            assert signal.getsignal(signal.SIGTERM) != signal.SIG_IGN  # still answered
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_polled_flag_stops_like_the_folder_request(tmp_path):
    flag = []
    stop = runstate.stop_poller(tmp_path, every_s=0, also=lambda: bool(flag))
    assert not stop() and not runstate.stop_requested(tmp_path)
    flag.append(1)
    assert stop()
    flag.clear()
    assert stop()  # once seen, a stop stands: the run is already stopping


def test_ctrl_c_checkpoints_a_single_run_where_it_stands_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "out"
    budget = [x for k, v in BUDGET.items() for x in ("--budget", f"{k}={v}")]
    args = ["run", "--task", "hopper", "--algo", "sac", "--gap", "gravity=2.0", *NET, *budget]
    args += ["--out", str(out)]
    log = tmp_path / "first.log"
    proc = start_cli(args, log)
    text = _interrupt_after_first_evaluation(proc, log)
    assert proc.returncode == 130 and "interrupted" in text and "stopped at update" in text, text
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    _same_command_resumes_where_it_stopped(args, run_dir, tmp_path / "second.log")


def _same_command_resumes_where_it_stopped(args: list[str], run_dir: Path, log: Path) -> None:
    """``run_dir`` holds a checkpoint mid-way and no record nor lock; ``gapbench ARGS``
    again completes it from that checkpoint, with every evaluation once."""
    state = records.load_checkpoint(run_dir / records.CHECKPOINT)
    assert 200 <= state["updates"] < 2000 and not records.is_complete(run_dir)
    assert not (run_dir / runstate.LOCK).exists()
    again = start_cli(args, log)
    assert again.wait(timeout=600) == 0, log.read_text()
    summary = records.read_json(run_dir / records.SUMMARY)
    assert summary["status"] == "ok" and summary["resumed"][0]["update"] == state["updates"]
    assert _steps(run_dir) == list(range(200, 2001, 200))


def test_ctrl_c_checkpoints_a_tuning_trial_and_the_same_command_resumes_it(tmp_path):
    """The stopped trial ends FAIL and is enqueued again with its hyper-parameters, so the
    next tune of the study trains the same run id on from its checkpoint."""
    out = tmp_path / "tune"
    budget = [x for k, v in BUDGET.items() for x in ("--budget", f"{k}={v}")]
    args = ["tune", "--algo", "sac", "--task", "hopper", "--trials", "1", "--study", "s"]
    args += [*NET, *budget, "--sampler", "random", "--pruner", "none", "--no-plots"]
    args += ["--threads", "1", "--out", str(out)]
    log = tmp_path / "first.log"
    proc = start_cli(args, log)
    text = _interrupt_after_first_evaluation(proc, log)
    assert proc.returncode == 130 and "stopped on request" in text, text
    assert "[1/1] trial 0 STOPPED" in text and "Traceback" not in text, text
    storage = f"sqlite:///{out / 'optuna.db'}"
    stopped, queued = optuna.load_study(study_name="s", storage=storage).trials
    assert stopped.state == optuna.trial.TrialState.FAIL and "stopped" in stopped.user_attrs
    assert queued.state == optuna.trial.TrialState.WAITING
    assert queued.user_attrs == {"resumes_trial": 0}
    run_dir = out / "trials" / stopped.user_attrs["run_id"]
    _same_command_resumes_where_it_stopped(args, run_dir, tmp_path / "second.log")
    assert "[1/1] trial    1  COMPLETE" in (tmp_path / "second.log").read_text()
    resumed = optuna.load_study(study_name="s", storage=storage).trials[1]
    assert resumed.state == optuna.trial.TrialState.COMPLETE
    assert resumed.params == stopped.params
    assert resumed.user_attrs["run_id"] == stopped.user_attrs["run_id"]
    # the pruner saw the whole curve: the evaluations before the checkpoint, replayed
    assert sorted(resumed.intermediate_values) == _steps(run_dir) == list(range(200, 2001, 200))


def _two_sac_runs(tmp_path: Path, budget: dict | None = None) -> Path:
    """A matrix file of two small SAC runs (seeds 0 and 1); returns its path."""
    net = {"hidden": [32, 32], "batch_size": 32}
    config = {
        "name": "ctrl-c",
        "preset": "smoke",
        "budget": budget or BUDGET,
        "tasks": ["hopper"],
        "sim_gaps": ["gravity=2.0"],
        "algorithms": {"sac": {"hparams": net}},
        "seeds": 2,
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_ctrl_c_on_a_local_matrix_checkpoints_its_running_run_and_starts_no_new_one(tmp_path):
    """A terminal's Ctrl-C signals the whole foreground group, workers included: the
    workers leave it to the matrix, whose running run checkpoints where it stands."""
    path = _two_sac_runs(tmp_path)
    out = tmp_path / "out"
    log = tmp_path / "first.log"
    proc = start_matrix_cli(path, out, log, "--no-seed-groups", own_group=True, quiet=False)
    text = _interrupt_after_first_evaluation(proc, log, group=True)
    assert proc.returncode == 130 and "checkpoint where they stand" in text, text
    assert "0/2 0 failed 2 stopped" in text, text  # the bar counts no stopped run as done
    assert not (out / runstate.STOP).exists()  # this matrix's workers only, not the folder's
    resume_after_stop_in_first_run(load(path, out=out), out, updates=2000, every=200)


def test_ctrl_c_on_a_ray_matrix_checkpoints_its_running_run_and_starts_no_new_one(tmp_path):
    """Ray's tasks see the driver's Ctrl-C through a request file of their matrix's own,
    removed once they stopped, not the folder's OUT/STOP (other matrices there go on); the
    same matrix then resumes each run at its checkpoint (Ray may run both at once). The
    driver sees a task's lines a moment late, so the run is long enough (1000 updates) that
    the request always lands before it ends."""
    ray = pytest.importorskip("ray")
    from gapbench.benchmark.executors import run_matrix

    out = tmp_path / "out"
    matrix = load(_two_sac_runs(tmp_path, {**BUDGET, "updates": 1000}), out=out)

    class CtrlC(logging.Handler):  # the driver logs each task's lines in its main thread
        sent = False
        requests: set[str] = set()  # request files seen after the signal

        def emit(self, record: logging.LogRecord) -> None:
            if self.sent:
                self.requests |= {p.name for p in out.iterdir() if "stop" in p.name.lower()}
            elif "update 200/" in record.getMessage():  # one signal: a second aborts
                self.sent = True
                os.kill(os.getpid(), signal.SIGINT)

    logger, handler = logging.getLogger("gapbench"), CtrlC()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)  # the tasks log at the driver's level
    # answered by default (pytest may run with SIGINT ignored, as a script's background job)
    outer = signal.signal(signal.SIGINT, signal.default_int_handler)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_matrix(matrix, executor="ray", workers=1)
    finally:
        ray.shutdown()
        signal.signal(signal.SIGINT, outer)
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert [name.startswith(".stop-") for name in handler.requests] == [True], handler.requests
    assert not [p for p in out.iterdir() if "stop" in p.name.lower()]  # removed
    first, second = (out / r.run_id for r in matrix.runs)
    at = records.load_checkpoint(first / records.CHECKPOINT)["updates"]
    assert 200 <= at < 1000 and not records.is_complete(first)
    if second.exists():  # started beside the first: stopped where it stood
        assert not records.is_complete(second)
    results = run_matrix(matrix, workers=1, cpus_per_run=1)
    assert {r["status"] for r in results.values()} == {"ok"}
    assert records.read_json(first / records.SUMMARY)["resumed"][0]["update"] == at
    assert _steps(first) == _steps(second) == [200, 400, 600, 800, 1000]


def test_ctrl_c_checkpoints_a_behaviour_training_where_it_stands(tmp_path):
    out = tmp_path / "behavior"
    args = ["behavior", "train", "--task", "hopper", "--steps", "20000"]
    args += ["--snapshot-every", "200", "--out", str(out)]
    log = tmp_path / "train.log"
    proc = start_cli(args, log)
    text = _interrupt_after_first_evaluation(proc, log)
    assert proc.returncode == 130 and "interrupted" in text, text
    (run_dir,) = [d for d in out.iterdir() if d.is_dir()]
    state = records.load_checkpoint(run_dir / records.CHECKPOINT)
    assert f"stopped at update {state['updates']};" in text and state["updates"] >= 200
    assert not records.is_complete(run_dir)
