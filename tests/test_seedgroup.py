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


def test_an_interrupted_group_resumes_as_a_group(tmp_path, monkeypatch):
    specs = seed_specs(_spec(), [1, 2])
    whole = run_group(specs, tmp_path / "whole")
    calls = {"n": 0}
    update_many = SeedBatch.update_many

    def interrupted(self, n, dataset=None, replay=None):
        calls["n"] += n
        if calls["n"] > 25:  # after the first evaluation and its checkpoint
            raise KeyboardInterrupt
        return update_many(self, n, dataset, replay)

    monkeypatch.setattr(SeedBatch, "update_many", interrupted)
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
        assert b["resumed"] == [{"update": 20, "exact": True}]
        assert a["final_return"] == b["final_return"]
        rows_a = _curve(tmp_path / "whole" / spec.run_id / "curve.csv")
        rows_b = _curve(tmp_path / "cut" / spec.run_id / "curve.csv")
        for ra, rb in zip(rows_a, rows_b, strict=True):
            assert {k: v for k, v in ra.items() if k not in WALL} == {
                k: v for k, v in rb.items() if k not in WALL
            }


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


def test_an_offline_group_writes_each_seeds_separate_record(tmp_path, monkeypatch):
    """IQL: the seeds share one copy of the dataset, each sampling it with its own
    generator, as its separate run does."""
    from gapbench.benchmark import datasets_build

    data = tmp_path / "data"
    did = datasets_build.build("hopper", "random", size=400, seed=1, data_dir=data, progress=False)
    monkeypatch.setenv("GAPBENCH_DATA_DIR", str(data))
    budget = Budget(updates=30, eval_every=15, eval_episodes=1)
    spec = RunSpec(task="hopper", algorithm="iql", dataset=did, hparams=TINY, budget=budget)
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
