"""The command line's own inputs (issue 20.8, CLI side; issue 21.9): a bad option value is
one line on stderr (exit 2) naming the value and the valid choices, never a traceback, and
``--json`` prints machine-readable JSON and nothing else on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from gapbench.benchmark.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("option", "value", "valid"),
    [
        ("--threads", "-1", "greater than or equal to 1"),
        ("--task", "foo", "valid tasks: halfcheetah"),
        ("--device", "foo", "valid: cpu, cuda, cuda:N"),
        ("--device", "cuda:x", "valid: cpu, cuda, cuda:N"),
    ],
)
def test_bench_bad_option_is_one_line(option, value, valid):
    result = runner.invoke(app, ["bench", "--algo", "sac", "--seconds", "0.01", option, value])
    assert result.exit_code == 2
    assert valid in result.stderr
    assert isinstance(result.exception, SystemExit)  # a clean exit, not a traceback
    assert result.stdout == ""


@pytest.mark.parametrize("command", ["run", "tune"])
@pytest.mark.parametrize(
    ("pair", "problem"),
    [
        ("updates=x", "budget updates needs an integer, got 'x'"),
        ("updatez=5", "unknown budget key 'updatez'; valid: updates, eval_every"),
        ("updates=0", "budget updates must be > 0, got 0"),
    ],
)
def test_run_and_tune_budget_errors_are_the_matrix_files(tmp_path, command, pair, problem):
    """--budget is parsed by the function that parses a matrix file's budget:."""
    args = [command, "--algo", "sac", "--task", "hopper", "--out", str(tmp_path / "out")]
    result = runner.invoke(app, [*args, "--budget", pair])
    assert result.exit_code == 2
    assert f"--budget: {problem}" in " ".join(result.stderr.split())
    assert list(tmp_path.iterdir()) == []  # refused before anything is written


@pytest.mark.parametrize("command", ["report", "tune"])
def test_report_and_tune_refuse_an_out_that_is_not_a_folder(tmp_path, command):
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "sub"
    args = {
        "report": ["report", str(tmp_path), "--out", str(out)],
        "tune": ["tune", "--algo", "sac", "--task", "hopper", "--out", str(out)],
    }[command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("file is not a directory; valid: a writable folder")
    assert [p.name for p in tmp_path.iterdir()] == ["file"]  # nothing written


# -- 21.9: --json on run, matrix run, tune (tests/test_tuning.py) and report ---------------
def test_run_json_is_the_summary_and_nothing_else(tmp_path):
    from test_reliability import TINY_ARGS

    args = ["run", "--task", "hopper", "--algo", "sac", "--gap", "gravity=2.0", *TINY_ARGS]
    result = runner.invoke(app, [*args, "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["status"] == "ok" and summary["recorded"] is False
    assert summary == {**json.loads(Path(summary["path"], "summary.json").read_text()), **summary}
    assert "done" in result.stderr  # the human line moved to stderr


def test_matrix_run_json_lists_every_run(tmp_path):
    matrix = {
        "name": "tiny",
        "budget": {"updates": 20, "eval_every": 10, "eval_episodes": 1, "warmup_steps": 20},
        "tasks": ["hopper"],
        "sim_gaps": ["gravity=2.0"],
        "algorithms": {"sac": {"hparams": {"hidden": [32, 32], "batch_size": 32}}},
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(matrix))
    args = ["matrix", "run", str(path), "--out", str(tmp_path / "out"), "--workers", "1"]
    dry = runner.invoke(app, [*args, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["counts"]["missing"] == 1
    result = runner.invoke(app, [*args, "--json", "--quiet"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["matrix"] == "tiny" and report["counts"] == {"ok": 1}
    (run,) = report["runs"]
    assert run["label"] == "sac" and run["status"] == "ok"
    assert (tmp_path / "out" / run["run_id"] / "summary.json").exists()


def test_report_json_names_the_files_and_counts(tmp_path):
    from test_report import write_record

    for seed in (0, 1):
        write_record(tmp_path / "results", "hopper", "sac", seed, "gravity=2.0")
    out = tmp_path / "rep"
    result = runner.invoke(
        app, ["report", str(tmp_path / "results"), "--out", str(out)] + ["--reps", "20", "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["complete_runs"] == 2 and summary["index"] == str(out / "index.md")
    assert all(Path(p).exists() for p in summary["files"])
    assert "learning_curves_hopper" in summary["figures"]


def test_report_json_carries_both_aggregate_scopes(tmp_path):
    """Two methods on two cells and one on the first only: the aggregates over both cells
    leave the third out, then each cell is a scope with every method that ran it."""
    from test_report import write_record

    for algo, gaps in (("sac", ("gravity=2.0", "friction=0.3")), ("darc", ("gravity=2.0",
                       "friction=0.3")), ("h2o", ("gravity=2.0",))):  # fmt: skip
        for gap in gaps:
            for seed in (0, 1):
                write_record(tmp_path / "results", "hopper", algo, seed, gap)
    args = ["report", str(tmp_path / "results"), "--out", str(tmp_path / "rep")]
    result = runner.invoke(app, [*args, "--reps", "20", "--json"])
    assert result.exit_code == 0, result.output
    every, friction, gravity = json.loads(result.stdout)["aggregate_scopes"]
    assert sorted(every["algorithms"]) == ["darc", "sac"] and len(every["cells"]) == 2
    assert sorted(gravity["algorithms"]) == ["darc", "h2o", "sac"]
    assert [cell[1] for cell in gravity["cells"]] == ["gravity=2.0"]
    assert {row["algorithm"] for row in gravity["aggregates"]} == {"darc", "h2o", "sac"}
    assert sorted(friction["algorithms"]) == ["darc", "sac"]  # the cell h2o did not run
    assert [cell[1] for cell in friction["cells"]] == ["friction=0.3"]
    assert json.loads(result.stdout)["aggregates"] == every["aggregates"]
