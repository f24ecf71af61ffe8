"""The command line: the outputs users and scripts rely on, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gapbench.benchmark.cli import app

runner = CliRunner()


def test_envs_describe_json_shows_the_shift():
    result = runner.invoke(
        app, ["envs", "describe", "halfcheetah", "--gap", "gravity=2.0,friction=0.3", "--json"]
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    for key in (
        "task",
        "gap",
        "gravity",
        "total_mass",
        "nominal_total_mass",
        "friction",
        "nominal_friction",
        "joint_noise",
    ):
        assert key in info
    assert info["gravity"] == pytest.approx([0, 0, -19.62])
    assert info["friction"][0] == pytest.approx([0.12, 0.03, 0.03])
    assert info["nominal_friction"][0] == pytest.approx([0.4, 0.1, 0.1])


def test_envs_describe_table_and_list():
    assert runner.invoke(app, ["envs", "list"]).exit_code == 0
    result = runner.invoke(app, ["envs", "describe", "hopper", "--gap", "mass.torso=2"])
    assert result.exit_code == 0 and "torso" in result.stdout


def test_envs_transfer_measures_the_gap_on_the_shipped_expert():
    from gapbench.benchmark.behavior import reevaluate

    result = runner.invoke(
        app, ["envs", "transfer", "walker2d", "--gap", "gravity=2.0", "--episodes", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    real, sim = json.loads(result.stdout)["systems"]
    assert (real["gap"], sim["gap"]) == ("", "gravity=2.0")
    again = reevaluate("walker2d", "expert", None, "", 2)  # the same initial states
    assert real["return_mean"] == pytest.approx(again["return_mean"])
    # the expert walks on the real system and collapses under doubled gravity (-92% measured)
    assert real["normalized_score"] > 60 and sim["return_mean"] < 0.5 * real["return_mean"]
    assert sim["change"] == pytest.approx(sim["return_mean"] / real["return_mean"] - 1)


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["envs", "describe", "hoper"], "unknown task 'hoper'"),
        (["envs", "describe", "hopper", "--gap", "gravity=-1"], "must be > 0"),
        (["envs", "transfer", "walker2d", "--gap", "frction=0.3"], "unknown gap key 'frction'"),
        (
            ["envs", "transfer", "walker2d", "--gap", "gravity=2", "--policy", "best"],
            "no snapshot 'best'",
        ),
        (["run", "--task", "hopper", "--algo", "ppo"], "unknown algorithm 'ppo'"),
        (
            ["run", "--task", "hopper", "--algo", "sac", "--set", "nope=1"],
            "unknown hyper-parameter",
        ),
        (["run", "--task", "hopper", "--algo", "cql"], "needs a dataset"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(args, fragment):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert fragment in result.stderr
    assert "Traceback" not in result.output


def test_run_smoke_writes_a_record(tmp_path):
    result = runner.invoke(
        app,
        [
            "run",
            "--task",
            "hopper",
            "--algo",
            "sac",
            "--gap",
            "gravity=2.0",
            "--budget",
            "updates=20",
            "--budget",
            "eval_every=10",
            "--budget",
            "warmup_steps=50",
            "--set",
            "hidden=32,32",
            "--out",
            str(tmp_path),
        ],
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "ok"


def test_bench_json_lists_updates_per_second(capfd):
    args = ["bench", "--algo", "sac", "--seconds", "0.2", "--profile", "--json"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    # the profiler backend's C++ chatter ("USDT ... profiler_start") stays out of the output
    assert "profiler_start" not in capfd.readouterr().err
    (row,) = json.loads(result.stdout)
    assert row["algo"] == "sac" and row["updates_per_s"] > 0
    assert row["flop_bound_updates_per_s"] > 0 and abs(row["gflop_per_update"] - 0.5816) < 1e-3
    shares = row["time_shares"]
    assert abs(sum(shares.values()) - 1) < 1e-9 and shares["matmul"] > shares["optimizer"] > 0
    bad = runner.invoke(app, ["bench", "--algo", "ppo"])
    assert bad.exit_code == 2 and "unknown algorithm 'ppo'" in bad.stderr


def test_run_and_matrix_run_log_to_tensorboard_when_asked(tmp_path, monkeypatch):
    """--tensorboard DIR: each run (also a matrix's worker processes) writes its scalars
    under DIR/<run_id>."""
    pytest.importorskip("tensorboard")
    from gapbench.benchmark.harness import TENSORBOARD_ENV

    # --tensorboard sets the variable in this process (for a matrix's workers): setenv makes
    # monkeypatch put back its absence afterwards, so no later test logs to TensorBoard
    monkeypatch.setenv(TENSORBOARD_ENV, "")
    board = tmp_path / "tb"
    res = CliRunner().invoke(
        app,
        ["run", "--task", "hopper", "--algo", "sac", "--preset", "smoke",
         "--out", str(tmp_path / "runs"), "--tensorboard", str(board)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert list((board / run_dir.name).glob("events.out.tfevents.*"))
    monkeypatch.delenv(TENSORBOARD_ENV, raising=False)
    config = Path(__file__).resolve().parents[1] / "benchmark" / "configs" / "smoke.yaml"
    res = CliRunner().invoke(
        app,
        ["matrix", "run", str(config), "--out", str(tmp_path / "m"), "--workers", "1",
         "--tensorboard", str(tmp_path / "mtb")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    run_ids = {p.name for p in (tmp_path / "m").iterdir() if p.is_dir()}
    logged = {p.name for p in (tmp_path / "mtb").iterdir()}
    assert run_ids and logged == run_ids
