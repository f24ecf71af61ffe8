"""The single-run harness: specs, records, regimes, failure handling and resume."""

from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import torch
from support.resume import run_interrupted

from gapbench import algorithms
from gapbench.benchmark import records
from gapbench.benchmark.evaluation import evaluate, evaluate_sequential, make_eval_env
from gapbench.benchmark.harness import git_commit, run
from gapbench.benchmark.spec import Budget, RunSpec, SpecError, algorithm_config

TINY = Budget(updates=20, eval_every=10, eval_episodes=2, warmup_steps=50)


def spec(**kw):
    base = dict(
        task="hopper",
        algorithm="sac",
        gap="gravity=2.0",
        budget=TINY,
        hparams={"batch_size": 32, "hidden": (32, 32)},
    )
    base.update(kw)
    return RunSpec(**base)


def test_spec_round_trips_through_json_with_a_stable_id():
    s = spec(hparams={"batch_size": "32", "tau": "0.01"}).resolved()
    again = RunSpec.from_json(s.to_json())
    assert again.to_dict() == s.to_dict()
    assert again.run_id == s.run_id
    assert s.hparams == {"batch_size": 32, "tau": 0.01}  # coerced to the field types
    assert spec(gap="friction=0.3,gravity=2").run_id == spec(gap="gravity=2.0,friction=0.3").run_id
    assert spec(seed=1).run_id != spec(seed=0).run_id
    assert spec(device="cuda").run_id == spec().run_id  # the device never changes the id


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"task": "cheetah"}, "unknown task 'cheetah'"),
        ({"algorithm": "ppo"}, "unknown algorithm 'ppo'.*sac"),
        ({"regime": "offline"}, "cannot run in regime 'offline'.*online, oracle"),
        ({"gap": "gravty=2"}, "unknown gap key 'gravty'"),
        ({"hparams": {"lr": 1}}, "unknown hyper-parameter.*'lr'.*valid"),
        ({"hparams": {"tau": "fast"}}, "'tau' needs a number"),
        ({"budget": None, "preset": "huge"}, "unknown preset 'huge'.*smoke, mini, paper"),
        ({"algorithm": "cql", "gap": ""}, "needs a dataset"),
    ],
)
def test_bad_spec_is_a_clear_error(kw, fragment):
    with pytest.raises((SpecError, ValueError, KeyError), match=fragment):
        spec(**kw).resolved()


def test_offline_spec_drops_the_sim_gap():
    s = spec(algorithm="cql", dataset="x.hdf5", hparams={}).resolved()
    assert s.gap == "" and s.regime == "offline"


def test_a_spec_is_resolved_once_and_the_harness_takes_its_config(tmp_path, monkeypatch):
    s = spec(hparams={"batch_size": "32", "hidden": "32,32"}).resolved()
    assert s.is_resolved and s.resolved() is s and not spec().is_resolved
    assert s.config == algorithm_config("sac", {"batch_size": 32, "hidden": [32, 32]})
    assert s.config is not s.config  # a fresh copy: an algorithm may change its own
    assert not dataclasses.replace(s, seed=1).is_resolved  # another spec: resolved anew
    parsed = []
    monkeypatch.setattr(
        algorithms.get("sac"), "make_config", classmethod(lambda cls, o=None: parsed.append(o))
    )
    assert run(s, tmp_path)["status"] == "ok"
    assert parsed == []  # the harness parsed no hyper-parameter again
    record = json.loads((tmp_path / s.run_id / records.SPEC).read_text())
    assert record["config"] == {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(s.config).items()
    }


@pytest.mark.parametrize("regime", ["online", "oracle"])
def test_online_run_writes_a_complete_record(tmp_path, regime):
    s = spec(regime=regime)
    summary = run(s, tmp_path, progress=False)
    run_dir = tmp_path / s.run_id
    assert summary["status"] == "ok"
    assert records.is_complete(run_dir)
    assert not (run_dir / records.CHECKPOINT).exists()
    spec_json = json.loads((run_dir / records.SPEC).read_text())
    assert spec_json["spec"]["regime"] == regime
    assert spec_json["config"]["batch_size"] == 32 and "discount" in spec_json["config"]
    with open(run_dir / records.CURVE) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [10, 20]
    for column in ("return_mean", "return_std", "normalized_score", "wall_time_s", "critic_loss"):
        assert np.isfinite(float(rows[-1][column]))
    # "final" means what the report means: the mean of the last 3 (here both) evaluations
    scores = [float(r["normalized_score"]) for r in rows]
    assert summary["final_normalized_score"] == pytest.approx(np.mean(scores))
    assert summary["last_normalized_score"] == pytest.approx(scores[-1])
    assert summary["env_steps"] == 50 + 20  # warm-up + one step per update
    # a finished run is not run again
    assert run(s, tmp_path, progress=False) == summary


def test_a_run_with_nan_losses_fails_with_the_reason(tmp_path, monkeypatch):
    cls = algorithms.get("sac")
    original = cls.update

    def poisoned(self, **kw):
        out = original(self, **kw)
        out["critic_loss"] = torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(cls, "update", poisoned)
    s = spec()
    summary = run(s, tmp_path, progress=False)
    assert summary["status"] == "failed"
    assert "non-finite" in summary["error"] and "critic_loss" in summary["error"]
    assert records.is_complete(tmp_path / s.run_id)


def test_resume_from_checkpoint_continues_where_it_stopped(tmp_path):
    s = spec(budget=Budget(updates=30, eval_every=10, eval_episodes=2, warmup_steps=50))

    def stop_after_second_eval(row, algo):
        if row["step"] == 20:
            raise KeyboardInterrupt  # what a killed process looks like to the loop

    with pytest.raises(KeyboardInterrupt):
        run(s, tmp_path, progress=False, on_eval=stop_after_second_eval)
    run_dir = tmp_path / s.run_id
    assert not records.is_complete(run_dir)
    assert records.load_checkpoint(run_dir / records.CHECKPOINT)["updates"] == 10
    summary = run(s, tmp_path, progress=False)
    assert summary["status"] == "ok" and summary["updates"] == 30
    steps = [int(r["step"]) for r in records.read_curve(run_dir / records.CURVE)]
    assert steps == [10, 20, 30]  # resumed from update 10: no duplicate rows


def test_vector_evaluation_matches_sequential_episodes():
    algo = algorithms.get("sac")(11, 3, seed=0)
    policy = lambda o: algo.act(o, deterministic=True)  # noqa: E731
    env = make_eval_env("hopper", "", 3)
    vector = evaluate(env, policy, seed=7)
    sequential = evaluate_sequential("hopper", "", policy, 3, seed=7)
    np.testing.assert_allclose(vector, sequential, rtol=1e-6)


def _curve_without_time(run_dir):
    rows = records.read_curve(run_dir / records.CURVE)
    return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]


def test_a_resumed_runs_update_rate_counts_only_the_updates_it_timed():
    """A run resumed at 40k times its last 60k updates: 60k / 600 s is 100 updates/s, not
    100k / 600 s (the reference H2O run reported 21.8 for 13.1)."""
    from gapbench.benchmark.harness import summary_record

    curve = [{"normalized_score": 1.0, "return_mean": 10.0}]
    resumed = summary_record(curve, 100_000, 0, 600.0, 0.0, [{"update": 40_000, "exact": True}])
    assert resumed["updates_per_s"] == pytest.approx(100.0)
    whole = summary_record(curve, 100_000, 0, 1000.0, 0.0, [])
    assert whole["updates_per_s"] == pytest.approx(100.0)


@pytest.mark.parametrize("regime", ["online", "oracle"])
def test_a_resumed_run_equals_the_uninterrupted_one(tmp_path, regime):
    """The checkpoint holds no replay: the resume re-simulates the logged actions, which
    rebuilds the replay and the collecting env mid-episode, so every number is the same."""
    budget = Budget(updates=40, eval_every=10, eval_episodes=2, warmup_steps=30)
    s = spec(regime=regime, budget=budget)
    whole = run(s, tmp_path / "whole", progress=False)
    run_interrupted(s, tmp_path / "cut", at_step=30)
    run_dir = tmp_path / "cut" / s.run_id
    state = records.load_checkpoint(run_dir / records.CHECKPOINT)
    assert state["updates"] == 20 and "replay" not in state
    logged = sorted(p.name for p in (run_dir / records.ACTIONS).iterdir())
    assert logged == ["0000000000.npy", "0000000040.npy"]  # warm-up + 10 steps, then 10 more
    started = records.read_json(run_dir / records.SPEC)
    records.write_json(run_dir / records.SPEC, {**started, "git_commit": "started-at"})
    resumed = run(s, tmp_path / "cut", progress=False)
    # the spec keeps the commit the run started at; the resume names its own
    assert resumed["resumed"] == [{"update": 20, "exact": True, "git_commit": git_commit()}]
    assert records.read_json(run_dir / records.SPEC)["git_commit"] == "started-at"
    assert _curve_without_time(run_dir) == _curve_without_time(tmp_path / "whole" / s.run_id)
    assert resumed["final_return"] == whole["final_return"]
    assert not (run_dir / records.ACTIONS).exists()  # resume state goes with completion


def test_a_checkpoint_that_is_not_plain_data_is_refused_not_run(tmp_path):
    s = spec()
    run_dir = tmp_path / s.run_id
    run_dir.mkdir()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"algo": Payload()}, run_dir / records.CHECKPOINT)
    summary = run(s, tmp_path, progress=False)
    assert summary["status"] == "failed" and "cannot load checkpoint" in summary["error"]
    assert not marker.exists()


@pytest.mark.parametrize("algorithm", ["h2o", "darc"])
def test_a_resumed_hybrid_run_equals_the_uninterrupted_one(tmp_path, monkeypatch, algorithm):
    """Hybrid runs too: the dataset's sampler, the sim replay (re-simulated in the shifted
    simulator) and the classifiers' generators all come back as they were; on two threads
    H2O's overlapped classifier chain is exercised as in real runs."""
    from gapbench.benchmark import datasets_build

    data = tmp_path / "data"
    did = datasets_build.build("hopper", "random", size=400, seed=1, data_dir=data, progress=False)
    monkeypatch.setenv("GAPBENCH_DATA_DIR", str(data))
    hp = {"hidden": (32, 32), "disc_hidden": (16, 16)} if algorithm == "h2o" else {
        "hidden": (32, 32), "warmup_steps": 5}  # fmt: skip
    budget = Budget(updates=30, eval_every=10, eval_episodes=2, warmup_steps=20, collect_every=5)
    s = spec(algorithm=algorithm, dataset=did, hparams=hp, budget=budget)
    threads = torch.get_num_threads()
    torch.set_num_threads(2 if algorithm == "h2o" else 1)  # H2O overlaps on 2+ threads
    try:
        run(s, tmp_path / "whole", progress=False)
        run_interrupted(s, tmp_path / "cut", at_step=30)
        resumed = run(s, tmp_path / "cut", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert resumed["resumed"] == [{"update": 20, "exact": True, "git_commit": git_commit()}]
    run_id = s.resolved().run_id
    assert _curve_without_time(tmp_path / "cut" / run_id) == _curve_without_time(
        tmp_path / "whole" / run_id
    )


def test_tensorboard_logs_training_metrics_and_evaluations_without_changing_numbers(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    budget = Budget(updates=30, eval_every=10, eval_episodes=2, warmup_steps=20)
    s = spec(budget=budget)
    plain = run(s, tmp_path / "plain", progress=False)
    logged = run(s, tmp_path / "logged", progress=False, tensorboard=tmp_path / "tb")
    run_id = s.resolved().run_id
    assert _curve_without_time(tmp_path / "logged" / run_id) == _curve_without_time(
        tmp_path / "plain" / run_id
    )
    assert logged["final_return"] == plain["final_return"]
    events = EventAccumulator(str(tmp_path / "tb" / run_id))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert {"train/critic_loss", "train/alpha", "eval/normalized_score"} <= set(tags)
    assert [e.step for e in events.Scalars("eval/return_mean")] == [10, 20, 30]
    assert [e.step for e in events.Scalars("train/critic_loss")] == [10, 20, 30]
    curve = records.read_curve(tmp_path / "plain" / run_id / records.CURVE)
    assert [e.value for e in events.Scalars("eval/return_mean")] == pytest.approx(
        [r["return_mean"] for r in curve]
    )


def test_the_sim_replay_is_no_larger_than_the_run_can_fill_and_that_changes_nothing(
    tmp_path, monkeypatch
):
    """H2O's 10 x dataset capacity is capped at what the run collects: a ring that never
    wraps draws the same batches whatever its size."""
    from gapbench.algorithms.buffer import TensorBuffer
    from gapbench.benchmark import datasets_build

    data = tmp_path / "data"
    did = datasets_build.build("hopper", "random", size=400, seed=1, data_dir=data, progress=False)
    monkeypatch.setenv("GAPBENCH_DATA_DIR", str(data))
    sizes = []
    original = TensorBuffer.__init__

    def record(self, capacity, *args, **kwargs):
        sizes.append(capacity)
        original(self, capacity, *args, **kwargs)

    monkeypatch.setattr(TensorBuffer, "__init__", record)
    hp = {"hidden": (32, 32), "disc_hidden": (16, 16)}
    budget = Budget(updates=20, eval_every=10, eval_episodes=2, warmup_steps=20, collect_every=5)
    capped = spec(algorithm="h2o", dataset=did, hparams=hp, budget=budget)
    full = spec(algorithm="h2o", dataset=did, hparams=hp, budget=budget, sim_replay_capacity=4000)
    run(capped, tmp_path, progress=False)
    assert 40 in sizes and 4000 not in sizes  # 20 warm-up + 20 steps, not 10 x 400
    run(full, tmp_path, progress=False)
    assert 4000 in sizes
    assert _curve_without_time(tmp_path / capped.resolved().run_id) == _curve_without_time(
        tmp_path / full.resolved().run_id
    )


def _stop_after(calls: int):
    """A stop() that asks the run to stop at its ``calls``-th question (between steps)."""
    asked = [0]

    def stop() -> bool:
        asked[0] += 1
        return asked[0] >= calls

    return stop


@pytest.mark.parametrize(
    ("algorithm", "regime", "calls", "stopped_at"),
    [("sac", "online", 14, 14), ("iql", "offline", 17, 17), ("h2o", "hybrid", 3, 15)],
)
def test_a_run_stopped_between_evaluations_resumes_to_the_uninterrupted_run(
    tmp_path, monkeypatch, algorithm, regime, calls, stopped_at
):
    """A stop request checkpoints mid-way between two evaluations (with the training
    metrics summed so far) and raises RunStopped; the resumed run's every number equals
    the run that was never stopped (hybrid: stopped between two collection phases)."""
    from gapbench.benchmark.runstate import RunStopped

    kw: dict = {"algorithm": algorithm, "regime": regime}
    budget = Budget(updates=30, eval_every=10, eval_episodes=2, warmup_steps=20)
    if regime != "online":
        from gapbench.benchmark import datasets_build

        data = tmp_path / "data"
        did = datasets_build.build(
            "hopper", "random", size=400, seed=1, data_dir=data, progress=False
        )
        monkeypatch.setenv("GAPBENCH_DATA_DIR", str(data))
        kw["dataset"] = did
        if regime == "offline":
            kw["gap"] = ""
    if algorithm == "h2o":
        kw["hparams"] = {"hidden": (32, 32), "disc_hidden": (16, 16)}
        budget = dataclasses.replace(budget, collect_every=5)
    elif algorithm == "iql":
        kw["hparams"] = {"batch_size": 32, "hidden": (32, 32)}
    s = spec(budget=budget, **kw)
    whole = run(s, tmp_path / "whole", progress=False)
    with pytest.raises(RunStopped):
        run(s, tmp_path / "cut", progress=False, stop=_stop_after(calls))
    run_dir = tmp_path / "cut" / s.run_id
    assert not records.is_complete(run_dir)
    state = records.load_checkpoint(run_dir / records.CHECKPOINT)
    assert state["updates"] == stopped_at and state["n_sum"] == stopped_at - 10
    assert state["sums"]  # the metrics since the evaluation at 10 updates
    resumed = run(s, tmp_path / "cut", progress=False)
    assert resumed["resumed"][0]["update"] == stopped_at and resumed["resumed"][0]["exact"]
    assert _curve_without_time(run_dir) == _curve_without_time(tmp_path / "whole" / s.run_id)
    assert resumed["final_return"] == whole["final_return"]
