"""Benchmark matrices: expansion, validation, executors, resume, failures, status, Ray."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from support.resume import resume_after_stop_in_first_run, start_matrix_cli
from typer.testing import CliRunner

from gapbench.benchmark import matrix as mx
from gapbench.benchmark import records, runstate
from gapbench.benchmark.cli import app as cli_app
from gapbench.benchmark.executors import plan, run_matrix
from gapbench.benchmark.matrix import MatrixError, load, read_manifest, status
from gapbench.benchmark.runstate import RunLock

ROOT = Path(__file__).resolve().parents[1]
TINY_BUDGET = {"updates": 60, "eval_every": 20, "eval_episodes": 1, "warmup_steps": 50}
TINY_NET = {"hidden": [32, 32], "batch_size": 32}


def write(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def grid(**kw) -> dict:
    base = {
        "name": "t",
        "preset": "smoke",
        "tasks": ["hopper", "halfcheetah"],
        "sim_gaps": ["gravity=2.0", "friction=0.3"],
        "datasets": ["gapbench/{task}/medium-v0", "gapbench/{task}/expert-v0"],
        "algorithms": {
            "sac": {},
            "cql": {},
            "sac-oracle": {"algorithm": "sac", "regime": "oracle"},
        },
        "seeds": 2,
    }
    base.update(kw)
    return base


def cells(m) -> list[dict]:
    return [r.cell() for r in m.runs]


# -- expansion -------------------------------------------------------------------------------
def test_regime_aware_pairing_counts():
    m = load(grid(), check_datasets=False)
    by_label = {
        label: [c for c in cells(m) if c["label"] == label]
        for label in ("sac", "cql", "sac-oracle")
    }
    # online: tasks x sim_gaps x seeds; offline: tasks x datasets x seeds; oracle: tasks x seeds
    assert [len(by_label[k]) for k in ("sac", "cql", "sac-oracle")] == [8, 8, 4]
    assert len(m) == 20 and len({r.run_id for r in m.runs}) == 20
    assert all(
        c["dataset"] is None and c["gap"] and c["regime"] == "online" for c in by_label["sac"]
    )
    assert all(
        c["gap"] == "" and c["dataset"] and c["regime"] == "offline" for c in by_label["cql"]
    )
    assert all(
        c["gap"] == "" and c["dataset"] is None and c["regime"] == "oracle"
        for c in by_label["sac-oracle"]
    )
    # {task} is substituted per task
    assert {(c["task"], c["dataset"]) for c in by_label["cql"]} == {
        (t, f"gapbench/{t}/{q}-v0") for t in ("hopper", "halfcheetah") for q in ("medium", "expert")
    }
    # real gaps multiply every regime; seeds as a list
    m2 = load(grid(real_gaps=["", "mass=1.5"], seeds=[3]), check_datasets=False)
    assert len(m2) == 20 and {c["seed"] for c in cells(m2)} == {3}


def test_hybrid_pairing_and_datasets_of_one_task():
    data = grid(
        datasets=["gapbench/hopper/medium-v0", "gapbench/halfcheetah/medium-v0"],
        algorithms={"cql": {}},
        seeds=1,
    )
    m = load(data, check_datasets=False)
    # a gapbench/<task>/ id pairs only with its own task
    assert sorted((c["task"], c["dataset"]) for c in cells(m)) == [
        ("halfcheetah", "gapbench/halfcheetah/medium-v0"),
        ("hopper", "gapbench/hopper/medium-v0"),
    ]
    from gapbench import algorithms

    hybrid = [n for n in algorithms.names() if algorithms.get(n).regime == "hybrid"]
    if hybrid:  # h2o / darc when registered: tasks x sim_gaps x datasets x seeds
        m = load(grid(algorithms={hybrid[0]: {}}), check_datasets=False)
        assert len(m) == 2 * 2 * 2 * 2
        assert all(c["gap"] and c["dataset"] for c in cells(m))


def test_real_placeholder_names_the_dataset_of_each_real_system():
    data = grid(
        tasks=["hopper"],
        real_gaps=["", "mass=1.5"],
        datasets=["gapbench/{real}/medium-v0"],
        algorithms={"cql": {}},
        seeds=1,
    )
    m = load(data, check_datasets=False)
    assert sorted((c["real_gap"], c["dataset"]) for c in cells(m)) == [
        ("", "gapbench/hopper/medium-v0"),
        ("mass=1.5", "gapbench/hopper-mass_1p5/medium-v0"),
    ]


def test_exclude_include_and_duplicates_collapse():
    data = grid(
        tasks=["hopper", "halfcheetah"],
        seeds=1,
        sim_gaps=["gravity=2.0", "gravity=2", "friction=0.3"],  # gravity=2 == gravity=2.0
        algorithms={
            "sac": {},
            "cql": {},
            "sac-oracle": {"algorithm": "sac", "regime": "oracle"},
            "sac-again": {"algorithm": "sac"},  # the same runs as sac: they collapse
        },
        exclude=[{"task": "hopper", "algorithm": "cql"}, {"gap": "friction=0.30", "seed": 0}],
        include=[
            {"task": "hopper", "algorithm": "cql", "dataset": "gapbench/{task}/medium-v0"},
            {
                "task": "hopper",
                "algorithm": "sac",
                "gap": "joint_noise=1.0",
                "seed": 7,
                "label": "sac-noisy",
                "hparams": {"tau": 0.01},
            },
            {"task": "hopper", "algorithm": "sac-oracle"},  # already in the grid: collapses
        ],
    )
    m = load(data, check_datasets=False)
    cs = cells(m)
    # sac: 2 tasks x 1 gap (friction excluded, duplicates collapsed); cql: halfcheetah x 2
    # datasets + 1 included for hopper; oracle: 2; sac-noisy: 1
    assert len([c for c in cs if c["label"] == "sac"]) == 2
    assert {c["gap"] for c in cs if c["label"] == "sac"} == {"gravity=2.0"}
    assert sorted((c["task"], c["dataset"]) for c in cs if c["label"] == "cql") == [
        ("halfcheetah", "gapbench/halfcheetah/expert-v0"),
        ("halfcheetah", "gapbench/halfcheetah/medium-v0"),
        ("hopper", "gapbench/hopper/medium-v0"),
    ]
    assert len([c for c in cs if c["label"] == "sac-oracle"]) == 2
    noisy = [r for r in m.runs if r.label == "sac-noisy"]
    assert len(noisy) == 1 and noisy[0].spec.seed == 7 and noisy[0].spec.hparams == {"tau": 0.01}
    assert len(m) == 2 + 3 + 2 + 1
    assert m.collapsed == 2 + 1  # sac-again's two runs and the included oracle
    assert not [r for r in m.runs if r.label == "sac-again"]  # the first label wins


def test_only_runs_a_slice_and_checks_only_its_datasets(tmp_path):
    data = grid(datasets=["gapbench/{task}/medium-v0"])
    whole = load(data, check_datasets=False)
    part = load(data, check_datasets=False, only={"task": "hopper", "seed": 1})
    assert [r.run_id for r in part.runs] == [
        r.run_id for r in whole.runs if r.spec.task == "hopper" and r.spec.seed == 1
    ]
    assert {r.label for r in part.runs} == {"sac", "cql", "sac-oracle"}
    # the other task's missing dataset does not stop the slice; its own does
    with pytest.raises(MatrixError, match="halfcheetah/medium-v0"):
        load(data, only={"task": "halfcheetah"})
    with pytest.raises(MatrixError, match="--only .* matches no run"):
        load(data, check_datasets=False, only={"task": "walker2d"})
    with pytest.raises(MatrixError, match="unknown key 'size'"):
        load(data, check_datasets=False, only={"size": 3})
    # the CLI flag: KEY=VALUE pairs that must all match
    file = tmp_path / "m.yaml"
    file.write_text(yaml.safe_dump(data))
    runner = CliRunner()
    res = runner.invoke(
        cli_app, ["matrix", "status", str(file), "--only", "task=hopper", "--only", "seed=1",
                  "--json", "--out", str(tmp_path / "out")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert len(json.loads(res.stdout)["runs"]) == len(part.runs)
    res = runner.invoke(cli_app, ["matrix", "status", str(file), "--only", "size=3"])
    assert res.exit_code == 2 and "KEY one of task" in res.output


def test_validation_lists_every_problem_and_writes_nothing(tmp_path):
    bad = grid(
        algorithms={
            "ppo": {},
            "sac": {"hparams": {"learning_rate": 1e-3}},
            "cql": {"hparams": {"tau": "fast"}},
        },
        sim_gaps=["gravty=2.0"],
        budget={"updatez": 5},
        preset="smoke",
    )
    out = tmp_path / "out"
    with pytest.raises(MatrixError) as info:
        load(bad, out=out, check_datasets=False)
    text = str(info.value)
    for fragment in (
        "unknown algorithm 'ppo'",
        "unknown gap key 'gravty'",
        "'learning_rate'",
        "'tau' needs a number",
        "unknown budget key 'updatez'",
    ):
        assert fragment in text, fragment
    assert len(info.value.problems) == 5
    # through the CLI: exit status 2, one message, nothing written
    path = write(tmp_path / "bad.yaml", bad)
    result = CliRunner().invoke(cli_app, ["matrix", "run", str(path), "--out", str(out)])
    assert result.exit_code == 2
    assert "unknown algorithm 'ppo'" in result.output and "gravty" in result.output
    assert not out.exists()


def test_a_bad_regime_reads_the_same_in_a_rule_and_an_algorithm_entry():
    with pytest.raises(MatrixError) as info:
        load(
            grid(
                algorithms={"sac": {"regime": "offlin"}, "cql": {}},
                exclude=[{"regime": "offlin"}],
            ),
            check_datasets=False,
        )
    wording = "unknown regime 'offlin'; valid regimes: offline, online, oracle, hybrid"
    assert info.value.problems == [f"algorithms.sac: {wording}", f"exclude[0]: {wording}"]


def test_a_malformed_task_or_rule_value_is_a_listed_problem_not_a_crash():
    from gapbench.gap_envs import UnknownTaskError, get_task

    with pytest.raises(UnknownTaskError) as unknown:
        get_task("cheetah")
    with pytest.raises(MatrixError) as info:
        load(
            grid(
                tasks=["hopper", "cheetah", ["hopper"]],
                algorithms={"sac": {}},
                exclude=[{"task": ["x"]}, {"algorithm": ["sac"]}],
                include=[{"task": {"a": 1}, "algorithm": "sac"}],
            ),
            check_datasets=False,
        )
    problems = info.value.problems
    assert f"tasks: {unknown.value}" in problems  # get_task's wording
    assert any(p.startswith("tasks: unknown task ['hopper']") for p in problems)
    assert any(p.startswith("exclude[0]: unknown task ['x']") for p in problems)
    assert any(p.startswith("exclude[1]: algorithm ['sac'] is not a label") for p in problems)
    assert any(p.startswith("include[0]: unknown task {'a': 1}") for p in problems)


def test_missing_dataset_and_unknown_task_are_reported(monkeypatch, tmp_path):
    problem = mx.dataset_problem
    assert "not of the form gapbench/" in problem("gapbench/medium", "hopper")
    assert "unknown task 'cheetah'" in problem("gapbench/cheetah/medium-v0", "hopper")
    assert "not 'hopper'" in problem("gapbench/walker2d/medium-v0", "hopper")
    assert problem("/nowhere/data.hdf5", "hopper") is not None
    monkeypatch.setenv("GAPBENCH_DATA_DIR", str(tmp_path))  # an empty dataset folder
    if importlib.util.find_spec("gapbench.gap_envs.datasets") is not None:
        assert "not available locally" in problem("gapbench/hopper/medium-v0", "hopper")
    monkeypatch.setattr(
        mx, "dataset_problem", lambda ds, task: f"dataset {ds!r} is not available locally"
    )
    with pytest.raises(MatrixError) as info:
        load(grid(tasks=["hopper", "cheetah"], algorithms={"cql": {}}, seeds=1))
    text = str(info.value)
    assert "unknown task 'cheetah'" in text
    assert "'gapbench/hopper/medium-v0' is not available locally" in text


# -- locks -----------------------------------------------------------------------------------
def test_run_lock_excludes_and_stale_locks_are_taken_over(tmp_path):
    lock = RunLock.acquire(tmp_path)
    assert lock is not None and RunLock.acquire(tmp_path) is None
    lock.release()
    assert not (tmp_path / runstate.LOCK).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / runstate.LOCK).write_text(
        json.dumps({"pid": dead.pid, "host": os.uname().nodename, "since": time.time()})
    )
    assert runstate.run_status(tmp_path)[0] == "missing"
    lock = RunLock.acquire(tmp_path)
    assert lock is not None
    assert json.loads((tmp_path / runstate.LOCK).read_text())["pid"] == os.getpid()
    lock.release()
    # a lock from another node (Ray on a shared filesystem) holds while its heartbeat is fresh
    (tmp_path / runstate.LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "since": 0}))
    assert RunLock.acquire(tmp_path) is None and runstate.run_status(tmp_path)[0] == "running"
    old = time.time() - runstate.LOCK_TIMEOUT_S - 1
    os.utime(tmp_path / runstate.LOCK, (old, old))
    lock = RunLock.acquire(tmp_path)
    assert lock is not None
    lock.release()


def test_a_writer_killed_mid_write_leaves_no_temp_file_to_the_next_holder(tmp_path):
    """A matrix killed while its orphaned worker wrote a summary: the worker exits between
    the temp file and its rename; the next holder of the run's lock removes the temp file
    and nothing else (the intact target, other hidden files)."""
    (tmp_path / records.SUMMARY).write_text("{}")
    dead_write = tmp_path / f".{records.SUMMARY}.on9hb1rt.tmp"
    dead_write.write_text('{"half')
    (tmp_path / ".keep").write_text("")
    lock = RunLock.acquire(tmp_path)
    assert lock is not None
    lock.release()
    assert not dead_write.exists()
    assert (tmp_path / records.SUMMARY).read_text() == "{}" and (tmp_path / ".keep").exists()


def test_plan_removes_the_stale_lock_of_a_finished_run(tmp_path):
    """A worker killed between its summary and its lock release leaves a finished run's
    lock behind; the next plan removes it (not while its holder lives)."""
    m = load(write(tmp_path / "m.yaml", tiny_matrix()), out=tmp_path / "out")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    owners = {m.runs[0].run_id: dead.pid, m.runs[1].run_id: os.getpid()}
    for run_id, pid in owners.items():
        run_dir = tmp_path / "out" / run_id
        run_dir.mkdir(parents=True)
        records.write_json(run_dir / records.SUMMARY, {"status": "ok", "run_id": run_id})
        lock = {"pid": pid, "host": os.uname().nodename, "since": time.time()}
        (run_dir / runstate.LOCK).write_text(json.dumps(lock))
    todo, known = plan(m, tmp_path / "out", retry_failed=False)
    assert todo == [] and set(known) == set(owners)
    assert not (tmp_path / "out" / m.runs[0].run_id / runstate.LOCK).exists()  # holder dead
    assert (tmp_path / "out" / m.runs[1].run_id / runstate.LOCK).exists()  # holder alive


def test_plan_resumes_runs_with_a_checkpoint_first(tmp_path):
    m = load(write(tmp_path / "m.yaml", tiny_matrix(seeds=2)), out=tmp_path / "out")
    ids = [r.run_id for r in m.runs]
    assert [r.run_id for r in plan(m, tmp_path / "out", retry_failed=False)[0]] == ids
    for run_id in (ids[2], ids[1]):  # started, then interrupted
        (tmp_path / "out" / run_id).mkdir(parents=True)
        (tmp_path / "out" / run_id / records.CHECKPOINT).write_bytes(b"")
    (tmp_path / "out" / ids[0]).mkdir()  # a spec-only folder has nothing to resume
    todo = [r.run_id for r in plan(m, tmp_path / "out", retry_failed=False)[0]]
    assert todo == [ids[1], ids[2], ids[0], ids[3]]


# -- running ---------------------------------------------------------------------------------
def tiny_matrix(**kw) -> dict:
    base = {
        "name": "tiny",
        "preset": "smoke",
        "budget": TINY_BUDGET,
        "tasks": ["hopper"],
        "sim_gaps": ["gravity=2.0"],
        "algorithms": {
            "sac": {"hparams": TINY_NET},
            "sac-oracle": {"algorithm": "sac", "regime": "oracle", "hparams": TINY_NET},
        },
        "seeds": 1,
    }
    base.update(kw)
    return base


def check_record(run_dir: Path, steps: list[int]) -> dict:
    summary = records.read_json(run_dir / records.SUMMARY)
    spec = records.read_json(run_dir / records.SPEC)
    assert spec["run_id"] == run_dir.name == summary["run_id"]
    with open(run_dir / records.CURVE) as f:
        got = [int(r["step"]) for r in csv.DictReader(f)]
    assert got == steps  # strictly increasing, no duplicate rows after a resume
    assert not (run_dir / records.CHECKPOINT).exists() and not (run_dir / runstate.LOCK).exists()
    assert not list(run_dir.glob(".*.tmp"))
    return summary


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_matrix_resumes_and_runs_each_id_once(tmp_path, sig):
    budget = {**TINY_BUDGET, "updates": 120, "eval_every": 40}
    path = write(tmp_path / "m.yaml", tiny_matrix(seeds=2, budget=budget))
    out = tmp_path / "out"
    log = tmp_path / "first.log"
    proc = start_matrix_cli(path, out, log)
    deadline = time.time() + 240
    try:
        while not list(out.glob("*/summary.json")):
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "no run finished in time"
            time.sleep(0.1)
    finally:
        proc.send_signal(sig)
        proc.wait(timeout=60)
    if sig == signal.SIGTERM:  # stopped like Ctrl-C: workers ended, resume hint, no leaks
        text = log.read_text()
        assert proc.returncode == 130 and "interrupted" in text, text
        assert "leaked" not in text, text
    # the orphaned worker notices its parent died and stops; its lock goes stale
    deadline = time.time() + 30
    while any(runstate.lock_alive(runstate.read_lock(d)) for d in out.iterdir() if d.is_dir()):
        assert time.time() < deadline, "the worker outlived the killed matrix"
        time.sleep(0.2)
    m = load(path, out=out)
    before = status(m)["counts"]
    assert before["done"] >= 1 and before["done"] < 4
    results = run_matrix(m, workers=1, cpus_per_run=1)  # the same as re-running the command
    assert {r["status"] for r in results.values()} == {"ok"}
    after = status(m)
    assert after["counts"]["done"] == 4 and after["total"] == 4
    for r in m.runs:
        summary = check_record(out / r.run_id, [40, 80, 120])
        assert summary["status"] == "ok" and summary["updates"] == 120
        assert len(list((out / r.run_id).glob("summary*.json"))) == 1
    assert sorted(d.name for d in out.iterdir() if d.is_dir()) == sorted(r.run_id for r in m.runs)
    manifest = read_manifest(out)
    assert {k: v["label"] for k, v in manifest.items()} == {r.run_id: r.label for r in m.runs}


def test_a_stopped_matrix_checkpoints_its_running_run_and_starts_no_new_one(tmp_path):
    budget = {**TINY_BUDGET, "updates": 2000, "eval_every": 200}
    path = write(tmp_path / "m.yaml", tiny_matrix(budget=budget))
    out = tmp_path / "out"
    log = tmp_path / "first.log"
    proc = start_matrix_cli(path, out, log)
    deadline = time.time() + 240
    try:
        while not list(out.glob("*/curve.csv")):  # the first run is past an evaluation
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "no evaluation in time"
            time.sleep(0.1)
        stopped = CliRunner().invoke(cli_app, ["matrix", "stop", str(path), "--out", str(out)])
        assert stopped.exit_code == 0 and "stop requested" in stopped.output
        assert (out / runstate.STOP).exists()
        shown = CliRunner().invoke(cli_app, ["matrix", "status", str(path), "--out", str(out)])
        assert "stop requested" in shown.output
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 3 and "stopped on request" in text, text  # not done: not 0
    assert "(recorded)" not in text  # a stopped run has no record yet
    runs = resume_after_stop_in_first_run(load(path, out=out), out, updates=2000, every=200)
    assert not (out / runstate.STOP).exists()  # the new run cleared the request
    for run_dir in runs:
        check_record(run_dir, list(range(200, 2001, 200)))


FAILING = {"algorithm": "sac", "hparams": {**TINY_NET, "init_alpha": -1.0}}  # fails at start-up


def tiny_dataset(path: Path, n: int = 500) -> Path:
    """A D4RL-layout HDF5 file of random hopper-shaped transitions (offline runs need one)."""
    from gapbench.gap_envs.datasets import Transitions, save_d4rl_hdf5

    rng = np.random.default_rng(0)
    obs = rng.normal(size=(n + 1, 11)).astype(np.float32)
    ends = np.arange(n) % 100 == 99
    tr = Transitions(
        obs[:-1], rng.uniform(-1, 1, (n, 3)), rng.normal(size=n), obs[1:], np.zeros(n, bool), ends
    )
    return save_d4rl_hdf5(tr, path)


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory):
    """A good online run, a failing one and an offline (CQL) one, through the local executor."""
    root = tmp_path_factory.mktemp("three")
    data = tiny_matrix(
        datasets=[str(tiny_dataset(root / "tiny.hdf5"))],
        algorithms={
            "sac": {"hparams": TINY_NET},
            "sac-bad": FAILING,
            "cql": {"hparams": {**TINY_NET, "cql_n_actions": 2}},
        },
    )
    path = write(root / "m.yaml", data)
    m = load(path, out=root / "out")
    results = run_matrix(m, workers=1, cpus_per_run=1)
    return path, m, results


def test_failed_run_is_recorded_and_the_matrix_goes_on(three_runs, tmp_path):
    path, m, results = three_runs
    out = m.out
    ids = {r.label: r.run_id for r in m.runs}
    assert {label: results[i]["status"] for label, i in ids.items()} == {
        "sac": "ok",
        "sac-bad": "failed",
        "cql": "ok",
    }
    assert "'init_alpha' must be > 0" in results[ids["sac-bad"]]["error"]
    check_record(out / ids["sac"], [20, 40, 60])
    check_record(out / ids["cql"], [20, 40, 60])

    # status --json: done / failed / missing (a second seed was never run)
    more = write(tmp_path / "more.yaml", {**yaml.safe_load(path.read_text()), "seeds": 2})
    res = CliRunner().invoke(cli_app, ["matrix", "status", str(more), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    assert report["counts"] == {
        "done": 2,
        "failed": 1,
        "running": 0,
        "interrupted": 0,
        "missing": 3,
    }
    assert report["ids"]["done"] == [ids["sac"], ids["cql"]]
    assert report["ids"]["failed"] == [ids["sac-bad"]]
    assert {r["seed"] for r in report["runs"] if r["status"] == "missing"} == {1}

    # a plain re-run skips them all; --retry-failed re-runs the failed one only
    again = run_matrix(m)
    assert all(r["skipped"] for r in again.values())
    assert not list((out / ids["sac-bad"]).glob("summary.failed-*"))
    first_ok = (out / ids["sac"] / records.SUMMARY).read_text()
    retried = run_matrix(m, retry_failed=True, cpus_per_run=1)
    assert retried[ids["sac"]]["skipped"] and not retried[ids["sac-bad"]]["skipped"]
    assert retried[ids["sac-bad"]]["status"] == "failed"  # same hyper-parameters, same fate
    bad_dir = out / ids["sac-bad"]
    assert (bad_dir / "summary.failed-1.json").is_file()
    assert sorted(p.name for p in bad_dir.glob("summary*.json")) == [
        "summary.failed-1.json",
        "summary.json",
    ]
    assert (out / ids["sac"] / records.SUMMARY).read_text() == first_ok


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ray_executor_gives_the_same_records(three_runs, tmp_path):
    ray = pytest.importorskip("ray")
    _, m, local = three_runs
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        results = run_matrix(m, out=tmp_path, executor="ray")
    finally:
        ray.shutdown()
    assert {k: v["status"] for k, v in results.items()} == {
        k: v["status"] for k, v in local.items()
    }
    for run_id, result in results.items():
        summary = records.read_json(tmp_path / run_id / records.SUMMARY)
        assert summary["status"] == result["status"]
        assert (tmp_path / run_id / records.SPEC).is_file()
    assert set(read_manifest(tmp_path)) == set(local)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_ray_executor_logs_a_runs_last_line_in_the_driver(tmp_path, caplog):
    """The last run's final lines reached no console: Ray's forwarding of a worker's stderr
    lags, and ``ray.shutdown()`` came first. The lines now come to the driver's loggers
    before the task returns (issue 21.7); ``log_to_driver=False`` leaves no other way."""
    ray = pytest.importorskip("ray")
    data = tiny_matrix(algorithms={"sac": {"hparams": TINY_NET}})
    m = load(write(tmp_path / "m.yaml", data), out=tmp_path / "out")
    (run,) = m.runs
    try:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"a local Ray instance does not start here: {err}")
    caplog.set_level(logging.INFO, logger="gapbench")
    try:
        results = run_matrix(m, executor="ray", workers=1)
    finally:
        ray.shutdown()
    assert results[run.run_id]["status"] == "ok"
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count(f"[sac {run.run_id}] finished: ok") == 1, lines


def test_status_shows_how_far_unfinished_runs_got(tmp_path):
    from typer.testing import CliRunner

    from gapbench.benchmark.cli import app

    budget = {**TINY_BUDGET, "updates": 100_000}
    path = write(tmp_path / "m.yaml", tiny_matrix(seeds=2, budget=budget))
    out = tmp_path / "out"
    m = load(path, out=out)
    started, fresh = m.runs[0], m.runs[1]
    for run, rows in ((started, [(40, 1.5), (80, 3.25)]), (fresh, [])):
        run_dir = out / run.run_id
        run_dir.mkdir(parents=True)
        records.write_json(run_dir / records.SPEC, {"run_id": run.run_id})
        lines = ["step,env_steps,return_mean,return_std,normalized_score,wall_time_s"]
        lines += [f"{s},{s},0,0,{score},{s / 4}" for s, score in rows]  # 4 updates/s
        (run_dir / records.CURVE).write_text("\n".join(lines) + "\n")
    rows = {r["run_id"]: r for r in status(m)["runs"]}
    assert rows[started.run_id]["status"] == "interrupted"
    assert rows[started.run_id]["updates_done"] == 80
    assert rows[started.run_id]["last_normalized_score"] == 3.25
    assert rows[started.run_id]["updates_per_s"] == 4.0
    assert rows[started.run_id]["updates"] == started.spec.resolved().budget.updates
    assert rows[fresh.run_id]["updates_done"] is None
    text = CliRunner().invoke(app, ["matrix", "status", str(path), "--out", str(out)]).output
    assert "80 / " in text and "last score 3.2" in text and "no evaluation yet" in text
    # the interrupted run's logged pace is sac's last resort: (99,920 + 100,000) / 4 s
    assert "~13.9 run-hours for 2 unfinished runs" in " ".join(text.split()), text
    assert "not yet measured: sac-oracle (2)" in " ".join(text.split())  # no pace yet
    lock = RunLock.acquire(out / started.run_id)  # held by a live process: running
    try:
        text = CliRunner().invoke(app, ["matrix", "status", str(path), "--out", str(out)]).output
        left = status(m)["left"]
    finally:
        lock.release()
    assert re.search(r"sac\s+│ 0/2 \(1 running\)", text), text  # per method and task
    # (100,000 - 80) updates at 4 updates/s: 6 h 56 min
    assert "4.0 updates/s, ~6 h 56 min left" in " ".join(text.split()), text
    # the other seed at the running one's pace: (99,920 + 100,000) / 4 s = 13.9 h
    assert left == {"run_seconds": 49_980.0, "runs": 2, "unmeasured": {"sac-oracle": 2}}
    assert "left: ~13.9 run-hours for 2 unfinished runs" in " ".join(text.split()), text


def test_the_progress_bar_names_a_run_running_elsewhere_instead_of_counting_it(tmp_path):
    from typer.testing import CliRunner

    from gapbench.benchmark.cli import app

    path = write(tmp_path / "m.yaml", tiny_matrix())
    out = tmp_path / "out"
    busy, free = load(path, out=out).runs
    lock = RunLock.acquire(out / busy.run_id)  # another process's run
    try:
        args = ["matrix", "run", str(path), "--out", str(out), "--workers", "1", "--quiet"]
        result = CliRunner().invoke(app, args)
    finally:
        lock.release()
    text = " ".join(result.output.split())
    assert result.exit_code == 0 and "1/2 0 failed 1 running elsewhere" in text, text
    assert records.is_complete(out / free.run_id)


def test_the_status_grid_counts_each_methods_runs_per_task():
    def row(label, task, status):
        return {"label": label, "task": task, "status": status}

    rows = [
        row("h2o", "hopper", "done"), row("h2o", "hopper", "running"),
        row("h2o", "walker2d", "failed"), row("cql", "walker2d", "done"),
        row("h2o", "hopper", "done"), row("cql", "walker2d", "missing"),
    ]  # fmt: skip
    assert mx.status_grid(rows) == {
        "h2o": {"hopper": {"done": 2, "running": 1}, "walker2d": {"failed": 1}},
        "cql": {"walker2d": {"done": 1, "missing": 1}},
    }
    assert list(mx.status_grid(rows)) == ["h2o", "cql"]  # matrix order


def test_work_left_is_each_unfinished_run_at_its_method_pace():
    def row(label, status, done=None, pace=None, updates=1000):
        return {"label": label, "status": status, "updates": updates, "updates_done": done,
                "updates_per_s": pace}  # fmt: skip

    rows = [
        row("a", "done"), row("a", "done"), row("a", "done"),  # paces 10, 30, 20: median 20
        row("a", "missing"),  # 1000 / 20 = 50 s
        row("a", "interrupted", done=400, pace=99.0),  # 600 / 20 = 30 s: not its last interval
        row("a", "running", done=400, pace=60.0),  # its own pace: 600 / 60 = 10 s
        row("a", "failed"),  # skipped unless --retry-failed: nothing
        row("b", "running", done=0, pace=5.0, updates=100),  # 20 s
        row("b", "missing", updates=100),  # at the running one's pace: 20 s
        row("c", "missing"),  # never measured
        row("c", "interrupted", done=0),  # no evaluation yet: not measured either
        row("d", "interrupted", done=500, pace=10.0),  # only its logged pace: 500 / 10 = 50 s
        row("d", "missing"),  # at that pace too: 100 s
    ]  # fmt: skip
    summaries = [{"updates_per_s": p} for p in (10.0, 30.0, 20.0)] + [None] * 10
    assert mx.work_left(rows, summaries) == {
        "run_seconds": 280.0, "runs": 7, "unmeasured": {"c": 2}
    }  # fmt: skip


def test_the_stop_request_is_looked_for_at_most_every_poll_period(tmp_path):
    lazy, eager = runstate.stop_poller(tmp_path, every_s=3600), runstate.stop_poller(tmp_path, 0)
    assert not lazy() and not eager()
    runstate.request_stop(tmp_path)
    assert eager() and not lazy()  # the lazy one looks again only after an hour
    assert runstate.stop_requested(tmp_path) and runstate.clear_stop(tmp_path)
    assert eager()  # once seen, a stop stands: the run is already stopping
    assert not runstate.clear_stop(tmp_path) and not runstate.stop_poller(tmp_path, 0)()


def test_the_run_bar_eta_spreads_the_run_hours_left_over_the_workers():
    from gapbench.benchmark.cli.matrix import time_left_text

    left = {"run_seconds": 4 * 3600.0, "runs": 4, "unmeasured": {}}
    assert time_left_text(left, parallel=2) == "ETA ~2 h 00 min"
    assert time_left_text(left, parallel=8) == "ETA ~1 h 00 min"  # no more workers than runs
    left = {"run_seconds": 600.0, "runs": 1, "unmeasured": {"vgdf": 2}}
    assert time_left_text(left, 2) == "ETA ~10 min + 2 run(s) of unmeasured pace"
    assert time_left_text({"run_seconds": 0.0, "runs": 0, "unmeasured": {"a": 1}}, 1) == (
        "ETA unknown (1 run(s) of unmeasured pace)"
    )
    assert time_left_text({"run_seconds": 0.0, "runs": 0, "unmeasured": {}}, 1) == ""
