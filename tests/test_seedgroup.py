"""``gapbench run --seeds``: K seeds of one spec trained as one batch write the records
their separate runs write (benchmark/seedgroup.py)."""

from __future__ import annotations

import csv
import json

import pytest

from gapbench.algorithms.seeds import SeedBatch
from gapbench.benchmark import harness, records
from gapbench.benchmark.seedgroup import group_problem, parse_seeds, run_group, seed_specs
from gapbench.benchmark.spec import Budget, RunSpec

TINY = {"hidden": [32, 32], "batch_size": 32}
BUDGET = Budget(updates=40, eval_every=20, eval_episodes=1, warmup_steps=64)
WALL = {"wall_time_s", "updates_per_s", "torch_threads"}


def _curve(path):
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _spec(**kw) -> RunSpec:
    return RunSpec(task="hopper", algorithm="sac", hparams=TINY, budget=BUDGET, **kw)


@pytest.mark.parametrize("regime", ["online", "oracle"])
def test_a_group_writes_each_seeds_separate_record(tmp_path, regime):
    gap = "gravity=1.5" if regime == "online" else ""
    specs = seed_specs(_spec(regime=regime, gap=gap), [0, 3])
    grouped = run_group(specs, tmp_path / "group")
    for spec in specs:
        harness.run(spec, tmp_path / "alone")
    for spec, summary in zip(specs, grouped, strict=True):
        mine, theirs = tmp_path / "group" / spec.run_id, tmp_path / "alone" / spec.run_id
        assert summary["status"] == "ok" and summary["seed_group"] == [0, 3]
        assert json.loads((mine / "spec.json").read_text()) == json.loads(
            (theirs / "spec.json").read_text()
        )
        alone = records.read_json(theirs / records.SUMMARY)
        assert set(summary) - {"seed_group"} == set(alone)
        for key, value in alone.items():
            if key not in WALL and not isinstance(value, str):
                assert summary[key] == pytest.approx(value, rel=1e-3, abs=1e-3), key
        rows, rows_alone = _curve(mine / "curve.csv"), _curve(theirs / "curve.csv")
        assert len(rows) == len(rows_alone) == 2
        for a, b in zip(rows, rows_alone, strict=True):
            assert a.keys() == b.keys()
            for key in a.keys() - WALL:
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-3), key
        assert not (mine / records.CHECKPOINT).exists()


def interrupt_group_after(monkeypatch, updates: int):
    """A group's training raises KeyboardInterrupt (as a killed process stops the loop)
    once it asks for more than ``updates`` updates; returns the original update_many."""
    calls = {"n": 0}
    update_many = SeedBatch.update_many

    def interrupted(self, n, dataset=None, replay=None):
        calls["n"] += n
        if calls["n"] > updates:
            raise KeyboardInterrupt
        return update_many(self, n, dataset, replay)

    monkeypatch.setattr(SeedBatch, "update_many", interrupted)
    return update_many


def test_an_interrupted_group_resumes_as_a_group(tmp_path, monkeypatch):
    specs = seed_specs(_spec(), [1, 2])
    whole = run_group(specs, tmp_path / "whole")
    update_many = interrupt_group_after(monkeypatch, 25)  # after the 1st checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_group(specs, tmp_path / "cut")
    for spec in specs:
        assert (
            records.load_checkpoint(tmp_path / "cut" / spec.run_id / "checkpoint.pt")["updates"]
            == 20
        )
    monkeypatch.setattr(SeedBatch, "update_many", update_many)
    resumed = run_group(specs, tmp_path / "cut")
    for spec, a, b in zip(specs, whole, resumed, strict=True):
        assert b["resumed"] == [{"update": 20, "exact": True, "git_commit": harness.git_commit()}]
        assert a["final_return"] == b["final_return"]
        rows_a = _curve(tmp_path / "whole" / spec.run_id / "curve.csv")
        rows_b = _curve(tmp_path / "cut" / spec.run_id / "curve.csv")
        for ra, rb in zip(rows_a, rows_b, strict=True):
            assert {k: v for k, v in ra.items() if k not in WALL} == {
                k: v for k, v in rb.items() if k not in WALL
            }


def test_a_stopped_group_checkpoints_at_its_next_evaluation_and_resumes_as_a_group(tmp_path):
    from gapbench.benchmark.runstate import RunStopped

    specs = seed_specs(_spec(), [1, 2])
    whole = run_group(specs, tmp_path / "whole")
    assert BUDGET.eval_every == 20 and BUDGET.updates == 40  # stop asked at the 1st evaluation
    with pytest.raises(RunStopped):
        run_group(specs, tmp_path / "cut", stop=lambda: True)
    for spec in specs:
        state = records.load_checkpoint(tmp_path / "cut" / spec.run_id / "checkpoint.pt")
        assert state["updates"] == 20 and not records.is_complete(tmp_path / "cut" / spec.run_id)
    resumed = run_group(specs, tmp_path / "cut")
    for a, b in zip(whole, resumed, strict=True):
        assert b["resumed"][0]["update"] == 20 and b["seed_group"] == [1, 2]
        assert a["final_return"] == b["final_return"]


def test_what_cannot_be_batched_runs_seed_by_seed(tmp_path, caplog):
    specs = seed_specs(RunSpec(task="hopper", algorithm="td3bc", dataset="any"), [0, 1])
    assert "no seed-batched path" in group_problem(specs)
    mixed = [*seed_specs(_spec(), [0]), *seed_specs(_spec(gap="gravity=2.0"), [1])]
    assert "only by seed" in group_problem(mixed)
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    for bad in ("0,x", "1,1", ""):
        with pytest.raises(ValueError):
            parse_seeds(bad)
    # one seed done already: the other trains alone, as an ordinary run
    specs = seed_specs(_spec(), [0, 1])
    harness.run(specs[0], tmp_path)
    with caplog.at_level("INFO", logger="gapbench.run"):
        out = run_group(specs, tmp_path)
    assert "one by one" in caplog.text
    assert [s["status"] for s in out] == ["ok", "ok"] and "seed_group" not in out[1]


@pytest.mark.parametrize("algo", ["iql", "cql"])
def test_an_offline_group_writes_each_seeds_separate_record(tmp_path, monkeypatch, algo):
    """IQL, CQL: the seeds share one copy of the dataset, each sampling it with its own
    generator, as its separate run does."""
    from gapbench.benchmark import datasets_build

    data = tmp_path / "data"
    did = datasets_build.build("hopper", "random", size=400, seed=1, data_dir=data, progress=False)
    monkeypatch.setenv("GAPBENCH_DATA_DIR", str(data))
    budget = Budget(updates=30, eval_every=15, eval_episodes=1)
    spec = RunSpec(task="hopper", algorithm=algo, dataset=did, hparams=TINY, budget=budget)
    specs = seed_specs(spec, [0, 1])
    grouped = run_group(specs, tmp_path / "group")
    for spec in specs:
        harness.run(spec, tmp_path / "alone")
    for spec, summary in zip(specs, grouped, strict=True):
        assert summary["status"] == "ok" and summary["seed_group"] == [0, 1]
        rows = _curve(tmp_path / "group" / spec.run_id / "curve.csv")
        rows_alone = _curve(tmp_path / "alone" / spec.run_id / "curve.csv")
        for a, b in zip(rows, rows_alone, strict=True):
            for key in a.keys() - WALL:
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-3), key


HYBRID = {
    "darc": {**TINY, "warmup_steps": 10},  # the reward correction on from update 10
    "h2o": {
        "hidden": [32, 32],
        "real_batch_size": 32,
        "sim_batch_size": 32,
        "disc_batch_size": 32,
        "disc_hidden": [32, 32],
    },
}


@pytest.mark.parametrize("algo", sorted(HYBRID))
def test_a_hybrid_group_writes_and_resumes_each_seeds_separate_record(tmp_path, monkeypatch, algo):
    """DARC, H2O: a shared dataset, each seed's own sim replay and classifier streams; a
    group interrupted after its first checkpoint resumes as a group (H2O's classifier
    generator restored per seed) to the records of the separate runs."""
    from gapbench.benchmark import datasets_build

    data = tmp_path / "data"
    did = datasets_build.build("hopper", "random", size=400, seed=1, data_dir=data, progress=False)
    monkeypatch.setenv("GAPBENCH_DATA_DIR", str(data))
    budget = Budget(updates=30, eval_every=15, eval_episodes=1, warmup_steps=64)
    spec = RunSpec(
        task="hopper",
        algorithm=algo,
        gap="gravity=2.0",
        dataset=did,
        hparams=HYBRID[algo],
        budget=budget,
    )
    specs = seed_specs(spec, [0, 1])
    update_many = interrupt_group_after(monkeypatch, 20)  # after the 1st checkpoint
    with pytest.raises(KeyboardInterrupt):
        run_group(specs, tmp_path / "group")
    monkeypatch.setattr(SeedBatch, "update_many", update_many)
    grouped = run_group(specs, tmp_path / "group")
    for spec in specs:
        harness.run(spec, tmp_path / "alone")
    for spec, summary in zip(specs, grouped, strict=True):
        assert summary["status"] == "ok" and summary["seed_group"] == [0, 1]
        resumed = {"update": 15, "exact": True, "git_commit": harness.git_commit()}
        assert summary["resumed"] == [resumed]
        rows = _curve(tmp_path / "group" / spec.run_id / "curve.csv")
        rows_alone = _curve(tmp_path / "alone" / spec.run_id / "curve.csv")
        assert [r["step"] for r in rows] == [r["step"] for r in rows_alone] == [15, 30]
        for a, b in zip(rows, rows_alone, strict=True):
            for key in a.keys() - WALL:
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-3), key


def test_the_cli_trains_seeds_as_one_batch(tmp_path):
    from typer.testing import CliRunner

    from gapbench.benchmark.cli import app

    runner = CliRunner()
    base = ["run", "--task", "hopper", "--algo", "sac", "--set", "hidden=32,32", "--out"]
    budget = ["--budget", "updates=20", "--budget", "eval_every=10", "--budget", "warmup_steps=50"]
    result = runner.invoke(app, [*base, str(tmp_path), *budget, "--seeds", "0,1", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert [r["seed_group"] for r in rows] == [[0, 1], [0, 1]]
    assert {p.name for p in tmp_path.iterdir()} == {r["run_id"] for r in rows}
    again = runner.invoke(app, [*base, str(tmp_path), *budget, "--seeds", "0,1", "--json"])
    assert [r["recorded"] for r in json.loads(again.stdout)] == [True, True]
    bad = runner.invoke(app, [*base, str(tmp_path), "--seeds", "0,x"])
    assert bad.exit_code == 2 and "--seeds" in bad.stderr
    bench = runner.invoke(
        app, ["bench", "--algo", "sac", "--seeds", "1,2", "--seconds", "0.3", "--json"]
    )
    assert bench.exit_code == 0, bench.output
    assert [(r["algo"], r["seeds"]) for r in json.loads(bench.stdout)] == [("sac", 1), ("sac", 2)]


def test_bench_processes_sums_rates_of_processes_timed_together():
    """``bench --seeds K --processes P``: P processes time at once, each reports its own
    rate, and the row holds their sum; without --seeds the option is refused."""
    from typer.testing import CliRunner

    from gapbench.benchmark.cli import app
    from gapbench.benchmark.speed import parallel_seed_batch_rows

    (row,) = parallel_seed_batch_rows("sac", [2], seconds=0.3, processes=2)
    assert row["processes"] == 2 and row["seeds"] == 2 and row["threads"] == 1
    parts = row["per_process_seed_updates_per_s"]
    assert len(parts) == 2 and all(rate > 0 for rate in parts)
    assert row["seed_updates_per_s"] == pytest.approx(sum(parts))
    assert row["single_updates_per_s"] > 0
    refused = CliRunner().invoke(app, ["bench", "--algo", "sac", "--processes", "2"])
    assert refused.exit_code == 2 and "needs --seeds" in refused.stderr


def test_a_seed_that_turns_nan_fails_alone(tmp_path, monkeypatch):
    """As its separate run would, a seed whose numbers turn non-finite is recorded failed
    with the reason; the other seeds of its group go on and finish."""
    from gapbench.benchmark import seedgroup

    specs = seed_specs(_spec(), [0, 1])
    evaluate_row = harness._evaluate_row

    def poisoned(spec, *args):
        row = evaluate_row(spec, *args)
        if spec.seed == 1:
            row["actor_loss"] = float("nan")
        return row

    monkeypatch.setattr(seedgroup.h, "_evaluate_row", poisoned)
    ok, failed = run_group(specs, tmp_path)
    assert ok["status"] == "ok" and ok["updates"] == BUDGET.updates
    assert failed["status"] == "failed" and "non-finite values at update 20" in failed["error"]
    assert failed["run_id"] == specs[1].run_id
    assert not (tmp_path / specs[1].run_id / records.CHECKPOINT).exists()


# -- matrices: the local executor groups the seeds of a spec --------------------------------
def _tiny_matrix(tmp_path, updates: int = 40, eval_every: int = 20):
    import yaml

    data = {
        "name": "seeds",
        "preset": "smoke",
        "budget": {
            "updates": updates,
            "eval_every": eval_every,
            "eval_episodes": 1,
            "warmup_steps": 64,
        },
        "tasks": ["hopper"],
        "sim_gaps": ["gravity=2.0"],
        "algorithms": {"sac": {"hparams": TINY}},
        "seeds": 2,
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_a_matrix_trains_the_seeds_of_a_spec_as_one_group(tmp_path):
    """Two seeds of sac: one seed-group job, records equal to those of the same matrix with
    grouping off (plus seed_group)."""
    from gapbench.benchmark.executors import run_matrix, seed_group_jobs
    from gapbench.benchmark.matrix import load

    path = _tiny_matrix(tmp_path)
    grouped = load(path, out=tmp_path / "grouped")
    jobs = seed_group_jobs(grouped.runs, tmp_path / "grouped")
    assert len(jobs) == 1 and [d["seed"] for d in jobs[0][0]] == [0, 1]
    res = run_matrix(grouped, workers=1, cpus_per_run=1, seed_groups=True)  # CPU runs too
    alone = load(path, out=tmp_path / "alone")
    res_alone = run_matrix(alone, workers=1, cpus_per_run=1, seed_groups=False)
    assert {r["status"] for r in [*res.values(), *res_alone.values()]} == {"ok"}
    for r in grouped.runs:
        mine, theirs = tmp_path / "grouped" / r.run_id, tmp_path / "alone" / r.run_id
        summary = records.read_json(mine / records.SUMMARY)
        other = records.read_json(theirs / records.SUMMARY)
        assert summary["seed_group"] == [0, 1] and "seed_group" not in other
        assert set(summary) - {"seed_group"} == set(other)
        for key, value in other.items():
            if key not in WALL and not isinstance(value, str):
                assert summary[key] == pytest.approx(value, rel=1e-3, abs=1e-3), key
        assert records.read_json(mine / "spec.json") == records.read_json(theirs / "spec.json")
        rows, rows_alone = _curve(mine / "curve.csv"), _curve(theirs / "curve.csv")
        assert [r["step"] for r in rows] == [r["step"] for r in rows_alone] == [20, 40]
        for a, b in zip(rows, rows_alone, strict=True):
            for key in a.keys() - WALL:
                assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-3), key
    # re-running runs nothing
    again = run_matrix(grouped, workers=1, cpus_per_run=1, seed_groups=True)
    assert all(r["skipped"] for r in again.values())


def test_by_default_only_gpu_runs_are_grouped_and_groups_start_first(tmp_path):
    """On a CPU thread a group of 2-3 seeds is slower than its seeds run separately
    (README "Performance"): the default groups GPU runs only. A group is K runs long, so
    it is started before the single runs rather than left to run alone at the end."""
    import dataclasses

    from gapbench.benchmark.executors import seed_group_jobs
    from gapbench.benchmark.matrix import load

    m = load(_tiny_matrix(tmp_path), out=tmp_path / "out")
    assert [isinstance(j[0], dict) for j in seed_group_jobs(m.runs, tmp_path, on_cpu=False)] == [
        True,
        True,
    ]
    on_gpu = [
        dataclasses.replace(r, spec=dataclasses.replace(r.spec, device="cuda")) for r in m.runs
    ]
    cpu_other = dataclasses.replace(m.runs[0], label="other")
    jobs = seed_group_jobs([cpu_other, *on_gpu], tmp_path, on_cpu=False)
    assert [isinstance(j[0], list) for j in jobs] == [True, False]
    assert [d["seed"] for d in jobs[0][0]] == [0, 1] and jobs[1][1] == "other"


def test_a_seed_with_partial_state_of_its_own_is_not_grouped(tmp_path):
    """A checkpoint at another update than its fellow seeds': that seed resumes alone from
    it, the others run as usual; every record is complete and has no duplicate rows."""
    from support.resume import run_interrupted

    from gapbench.benchmark.executors import run_matrix, seed_group_jobs
    from gapbench.benchmark.matrix import load

    m = load(_tiny_matrix(tmp_path, updates=60), out=tmp_path / "out")
    first = m.runs[0]
    run_interrupted(first.spec, tmp_path / "out", at_step=40)  # checkpoint at 20
    jobs = seed_group_jobs(m.runs, tmp_path / "out")
    assert [isinstance(j[0], dict) for j in jobs] == [True, True]
    run_matrix(m, workers=1, cpus_per_run=1, seed_groups=True)
    for r in m.runs:
        summary = records.read_json(tmp_path / "out" / r.run_id / records.SUMMARY)
        assert summary["status"] == "ok" and "seed_group" not in summary
        steps = [row["step"] for row in _curve(tmp_path / "out" / r.run_id / "curve.csv")]
        assert steps == [20, 40, 60]
    resumed = records.read_json(tmp_path / "out" / first.run_id / records.SUMMARY)["resumed"]
    assert resumed == [{"update": 20, "exact": True, "git_commit": harness.git_commit()}]


def test_a_killed_grouped_matrix_resumes_without_duplicates(tmp_path):
    """``matrix run`` killed (SIGKILL) once both seeds of its group have a checkpoint; the
    next run resumes them (as a group when their checkpoints agree) and every record has
    each evaluation once and one summary."""
    import signal
    import time

    from support.resume import start_matrix_cli

    from gapbench.benchmark import runstate
    from gapbench.benchmark.executors import run_matrix
    from gapbench.benchmark.matrix import load

    path = _tiny_matrix(tmp_path, updates=120, eval_every=30)
    out = tmp_path / "out"
    m = load(path, out=out)
    dirs = [out / r.run_id for r in m.runs]
    log = tmp_path / "first.log"
    proc = start_matrix_cli(path, out, log, "--seed-groups")
    deadline = time.time() + 300
    try:
        while not all((d / records.CHECKPOINT).exists() for d in dirs):
            assert proc.poll() is None, log.read_text()
            assert time.time() < deadline, "no checkpoint in time"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    deadline = time.time() + 30  # the orphaned worker notices and stops
    while any(runstate.lock_alive(runstate.read_lock(d)) for d in dirs):
        assert time.time() < deadline, "the worker outlived the killed matrix"
        time.sleep(0.2)
    at = {
        records.load_checkpoint(d / records.CHECKPOINT)["updates"]
        for d in dirs
        if (d / records.CHECKPOINT).exists()
    }
    results = run_matrix(m, workers=1, cpus_per_run=1, seed_groups=True)
    assert {r["status"] for r in results.values()} == {"ok"}
    for d in dirs:
        summary = records.read_json(d / records.SUMMARY)
        assert summary["status"] == "ok" and summary["updates"] == 120
        assert [row["step"] for row in _curve(d / "curve.csv")] == [30, 60, 90, 120]
        assert len(list(d.glob("summary*.json"))) == 1
        assert not (d / records.CHECKPOINT).exists()
        if len(at) == 1:  # the checkpoints agreed: resumed as a group
            assert summary["seed_group"] == [0, 1]
            assert summary["resumed"][0]["exact"] is True
