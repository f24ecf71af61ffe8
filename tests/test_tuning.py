"""Hyper-parameter tuning: studies of ordinary run records, resume, pruning, workers, the
exported matrix snippet, and clear errors before any trial starts."""

from __future__ import annotations

import json
import re

import optuna
import pytest
import torch
import yaml
from typer.testing import CliRunner

from gapbench import algorithms
from gapbench.benchmark import records
from gapbench.benchmark.cli import app
from gapbench.benchmark.spec import Budget, RunSpec
from gapbench.benchmark.tuning import (
    BEST,
    PLOTS_DIR,
    TRIALS_DIR,
    TuneConfig,
    TuningError,
    optimize,
    prepare,
    tune,
)

TINY = Budget(updates=20, eval_every=10, eval_episodes=1, warmup_steps=50)
FIXED = {"batch_size": 32, "hidden": (32, 32)}
SPACE = {  # two parameters, so parameter importances can be plotted
    "_inherit": False,
    "actor_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
    "tau": [0.005, 0.01],
}
runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets on a busy 2-core box: more threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(out, **kw) -> TuneConfig:
    base = dict(
        algorithm="sac",
        task="hopper",
        budget=TINY,
        hparams=dict(FIXED),
        space=SPACE,
        trials=3,
        sampler="random",
        sampler_seed=0,
        pruner="none",
        out=out,
        plots=False,
    )
    base.update(kw)
    return TuneConfig(**base)


def load_study(prep_or_url, name=None):
    if name is None:
        prep_or_url, name = prep_or_url.storage_url, prep_or_url.study_name
    from gapbench.benchmark.tuning import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(prep_or_url))


def check_trial_records(out, trials):
    """Every trial's runs are complete records under OUT/trials with the trial's hparams."""
    for t in trials:
        assert t.user_attrs["trial_number"] == t.number
        assert t.user_attrs["run_id"] == t.user_attrs["run_ids"][0]
        for run_id in t.user_attrs["run_ids"]:
            run_dir = out / TRIALS_DIR / run_id
            assert records.is_complete(run_dir)
            spec = json.loads((run_dir / records.SPEC).read_text())["spec"]
            for name, value in t.params.items():
                assert spec["hparams"][name] == pytest.approx(value)
            assert spec["hparams"]["batch_size"] == 32


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune")
    result = tune(config(out, plots=True))
    return out, result


def test_smoke_study_records_trials_then_resumes_from_the_cli(smoke):
    out, first = smoke
    assert first.n_trials == 3 and first.states == {"COMPLETE": 3}
    assert first.storage == f"sqlite:///{(out / 'optuna.db').resolve()}"
    assert (out / BEST).exists() and (out / "trials.csv").exists()
    assert (out / PLOTS_DIR / "optimization_history.png").exists()
    assert any("param_importances skipped" in n for n in first.notes)  # 3 < 4 trials

    args = ["tune", "--algo", "sac", "--task", "hopper", "--trials", "3", "--out", str(out)]
    args += ["--set", "batch_size=32", "--set", "hidden=32,32", "--pruner", "none"]
    args += ["--budget", "updates=20", "--budget", "eval_every=10", "--budget", "eval_episodes=1"]
    args += ["--budget", "warmup_steps=50", "--study", first.study_name, "--sampler", "random"]
    space = out / "space.yaml"
    space.write_text(yaml.safe_dump({"sac": SPACE}))
    result = runner.invoke(app, [*args, "--space", str(space), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # --json: nothing but the JSON on stdout
    assert summary["n_trials"] == 6 and summary["study_name"] == first.study_name
    assert summary["best_value"] == max(
        t.value for t in load_study(first.storage, first.study_name).trials
    )
    # progress on stderr: this invocation's trials done / asked for, the study's best so far
    assert "[1/3] trial    3  COMPLETE" in result.stderr
    assert "[3/3] trial    5  COMPLETE" in result.stderr and "| best so far " in result.stderr
    assert f"optuna-dashboard {first.storage}" in result.stderr

    trials = load_study(first.storage, first.study_name).trials
    assert [t.number for t in trials] == list(range(6))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    check_trial_records(out, trials)
    assert len((out / "trials.csv").read_text().strip().splitlines()) == 1 + 6
    assert (out / PLOTS_DIR / "param_importances.png").exists()
    assert (out / PLOTS_DIR / "parallel_coordinate.png").exists()


def test_best_yaml_round_trips_into_a_matrix(smoke, tmp_path):
    out, first = smoke
    study = load_study(first.storage, first.study_name)
    best = study.best_trial
    snippet = yaml.safe_load((out / BEST).read_text())
    assert set(snippet) == {"algorithms"} and set(snippet["algorithms"]) == {"sac"}
    hparams = snippet["algorithms"]["sac"]["hparams"]
    assert hparams["actor_lr"] == pytest.approx(best.params["actor_lr"])
    assert hparams["hidden"] == [32, 32] and hparams["batch_size"] == 32

    config = algorithms.get("sac").make_config(hparams)
    assert config.hidden == (32, 32) and config.tau == best.params["tau"]
    budget = {"updates": 20, "eval_every": 10, "eval_episodes": 1, "warmup_steps": 50}
    spec = RunSpec(task="hopper", algorithm="sac", hparams=hparams, budget=TINY).resolved()
    assert spec.run_id == best.user_attrs["run_id"]  # the comparison run = the best trial's run

    try:
        from gapbench.benchmark import matrix
    except ModuleNotFoundError:
        return
    data = {"tasks": ["hopper"], "seeds": [0], "preset": "smoke", "budget": budget}
    data["algorithms"] = {"sac-oracle": {"algorithm": "sac", "regime": "oracle"}}
    data["algorithms"].update(snippet["algorithms"])
    expanded = matrix.load(data, out=tmp_path)
    run = next(r for r in expanded.runs if r.label == "sac")
    assert run.spec.hparams["actor_lr"] == pytest.approx(best.params["actor_lr"])
    assert run.run_id == best.user_attrs["run_id"]


def test_a_bad_trial_is_pruned_by_the_median_pruner(tmp_path, caplog):
    prep = prepare(config(tmp_path, trials=1, pruner="median"))
    study = load_study(prep)
    good = {10: 1e4, 20: 1e4}  # far above anything a 20-update SAC reaches
    for _ in range(5):  # the median pruner's startup trials
        study.add_trial(optuna.trial.create_trial(value=1e4, intermediate_values=good))
    optimize(prep)
    trial = load_study(prep).trials[-1]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert list(trial.intermediate_values) == [10]  # stopped at the first evaluation
    run_dir = tmp_path / TRIALS_DIR / trial.user_attrs["run_id"]
    assert records.read_json(run_dir / records.SUMMARY)["status"] == "pruned"
    assert len(records.read_curve(run_dir / records.CURVE)) == 1
    assert not [r for r in caplog.records if r.exc_info]  # no "run failed" traceback


def test_seeds_report_a_running_mean_laid_end_to_end(tmp_path):
    prep = prepare(config(tmp_path, trials=1, seeds=2, seed_start=100, last_k=1))
    optimize(prep)
    trial = load_study(prep).trials[0]
    curves = [
        records.read_curve(tmp_path / TRIALS_DIR / run_id / records.CURVE)
        for run_id in trial.user_attrs["run_ids"]
    ]
    a, b = ([row["normalized_score"] for row in c] for c in curves)
    assert trial.intermediate_values == pytest.approx(
        {10: a[0], 20: a[1], 30: (a[0] + b[0]) / 2, 40: (a[1] + b[1]) / 2}
    )
    assert trial.value == pytest.approx((a[-1] + b[-1]) / 2)
    assert [json.loads((tmp_path / TRIALS_DIR / r / records.SPEC).read_text())["spec"]["seed"]
            for r in trial.user_attrs["run_ids"]] == [100, 101]  # fmt: skip


def test_two_worker_processes_share_one_journal_storage(tmp_path):
    storage = f"journal:{tmp_path / 'journal.log'}"
    result = tune(config(tmp_path, trials=4, workers=2, storage=storage))
    assert result.n_trials == 4 and result.states == {"COMPLETE": 4}
    trials = load_study(storage, result.study_name).trials
    assert sorted(t.number for t in trials) == [0, 1, 2, 3]
    assert len({t.user_attrs["run_id"] for t in trials}) == 4
    check_trial_records(tmp_path, trials)
    for t in trials:  # no lost results: each value is its record's score
        summary = records.read_json(tmp_path / TRIALS_DIR / t.user_attrs["run_id"] / "summary.json")
        curve = records.read_curve(tmp_path / TRIALS_DIR / t.user_attrs["run_id"] / "curve.csv")
        assert summary["status"] == "ok"
        assert t.value == pytest.approx(sum(r["normalized_score"] for r in curve) / len(curve))


F, C = "float", "categorical"


@pytest.mark.parametrize(
    ("space", "fragment"),
    [
        ({"lr": {"type": F, "low": 1e-4, "high": 1e-3}}, "unknown hyper-parameter 'lr'.*actor_lr"),
        ({"tau": {"type": F, "low": 0.1, "high": 0.01}}, r"low \(0.1\) must be < high"),
        ({"tau": {"type": F, "low": 0.0, "high": 0.1, "log": True}}, "log scale needs low > 0"),
        ({"tau": {"type": C, "choices": []}}, "'choices' must be a non-empty list"),
        ({"tau": {"type": "uniform", "low": 0, "high": 1}}, "type 'uniform'; valid: float, int"),
        ({"n_critics": {"type": F, "low": 1, "high": 4}}, "integer hyper-parameter; use type: int"),
        ({"auto_alpha": {"type": C, "choices": ["maybe"]}}, "needs true/false"),
        ({"tau": {"type": F, "low": 0.01, "hi": 0.1}}, r"unknown key\(s\) 'hi'.*valid: type, low"),
    ],
)
def test_a_bad_search_space_is_an_error_before_any_trial(tmp_path, space, fragment):
    with pytest.raises(TuningError, match=fragment):
        prepare(config(tmp_path, space=space))
    assert not (tmp_path / TRIALS_DIR).exists()


def test_every_declared_space_is_valid():
    from gapbench.benchmark.tuning import declared_space, parse_space

    for name in ("sac", "cql", "iql", "h2o", "darc"):
        assert len(parse_space(declared_space(name), name)) >= 3, name


@pytest.mark.parametrize(
    ("storage", "fragment"),
    [
        ("nosuchdialect://user@host/db", "bad storage 'nosuchdialect://"),
        ("optuna.db", "not a URL.*journal:PATH"),
        ("journal:/no/such/folder/j.log", "does not exist"),
    ],
)
def test_a_bad_storage_is_an_error_before_any_trial(tmp_path, storage, fragment):
    with pytest.raises(TuningError, match=fragment):
        prepare(config(tmp_path, storage=storage))


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--storage", "nosuchdialect://x/y"], "bad storage"),
        (["--sampler", "grid"], "unknown sampler 'grid'; valid: tpe, random, cmaes"),
        (["--pruner", "asha"], "unknown pruner 'asha'; valid: median, hyperband, none"),
        (["--set", "lr=1"], "unknown hyper-parameter.*'lr'"),
        (["--space", "SPACE"], "unknown hyper-parameter 'actor_lrr'"),
        # what `gapbench run` refuses (spec.device_problem, spec.run_problem), named by flag
        (["--gap", "mass.wing=2"], "--gap: gap mass.wing: no such body in task 'hopper'"),
        (["--objective-gap", "mass.wing=2"], "--objective-gap: gap mass.wing: no such body"),
        (["--device", "cuda:7"], "device 'cuda:7'"),
    ],
)
def test_cli_errors_exit_2_before_any_trial(tmp_path, extra, fragment):
    bad = tmp_path / "space.yaml"
    bad.write_text("actor_lrr: {type: float, low: 0.001, high: 0.01}\n")
    extra = [str(bad) if e == "SPACE" else e for e in extra]
    args = ["tune", "--algo", "sac", "--task", "hopper", "--out", str(tmp_path / "o"), *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert re.search(fragment, " ".join(result.output.split())), result.output
    assert not (tmp_path / "o" / TRIALS_DIR).exists()


def test_a_study_refuses_a_different_setup(tmp_path):
    prep = prepare(config(tmp_path))
    with pytest.raises(
        TuningError, match=r"(?s)different setup.*gap: .. \(study\) vs .gravity=2.0."
    ):
        prepare(config(tmp_path, gap="gravity=2.0", study=prep.study_name))


def test_a_space_file_merges_over_the_declared_space(tmp_path):
    from gapbench.benchmark.tuning import declared_space, merge_space, parse_space, read_space_file

    path = tmp_path / "space.yaml"
    path.write_text(
        "h2o:\n"
        "  penalty_weight: {type: float, low: 0.01, high: 0.1, log: true}\n"
        "  critic_lr: null\n"
        "  hidden: [[64, 64], [32, 32]]\n"
        "sac: {_inherit: false, tau: [0.01]}\n"
    )
    space = parse_space(merge_space(declared_space("h2o"), read_space_file(path, "h2o")), "h2o")
    assert "critic_lr" not in space and "actor_lr" in space
    assert (space["penalty_weight"].low, space["penalty_weight"].high) == (0.01, 0.1)
    assert space["hidden"].choices == ("64,64", "32,32")  # coerced to (64, 64) by make_config
    assert list(
        parse_space(merge_space(declared_space("sac"), read_space_file(path, "sac")), "sac")
    ) == ["tau"]
    with pytest.raises(TuningError, match="no entry for 'cql'"):
        read_space_file(path, "cql")
