"""Issue 21: defaults and outputs that fit how researchers already work (pasted help
snippets parse, CSVs load cleanly in pandas, a broken plug-in cannot break the tool,
one torch thread per run, one meaning of "final normalized score")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from gapbench import algorithms
from gapbench.algorithms import registry
from gapbench.benchmark.cli import app
from gapbench.benchmark.cli import matrix as cli_matrix
from gapbench.benchmark.matrix import load

runner = CliRunner()


def _indented_blocks(text: str) -> list[str]:
    blocks = []
    for para in text.split("\n\n"):
        lines = para.split("\n")
        if lines and all(line.startswith("    ") for line in lines if line.strip()):
            blocks.append("\n".join(line[4:] for line in lines))
    return blocks


def test_matrix_help_yaml_parses_when_pasted(tmp_path):
    """Every YAML block in `matrix run --help` is a valid matrix file once pasted."""
    yaml_blocks = [b for b in _indented_blocks(cli_matrix.DOCS) if re.match(r"\w+:", b)]
    assert yaml_blocks, "the help shows a matrix file"
    for block in yaml_blocks:
        data = yaml.safe_load(block)
        assert {"tasks", "algorithms"} <= set(data)
        path = tmp_path / "pasted.yaml"
        path.write_text(block)
        matrix = load(path, out=tmp_path / "out", check_datasets=False)
        assert len(matrix) > 0


def test_matrix_yaml_error_is_clean(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(  # the help's old snippet: an unquoted {task} in a flow list
        "tasks: [hopper]\ndatasets: [gapbench/{task}/medium-v0]\nalgorithms: {cql: {}}\n"
    )
    result = runner.invoke(app, ["matrix", "run", str(bad), "--dry-run"])
    assert result.exit_code == 2
    assert "invalid YAML" in result.stderr
    assert "\\[" not in result.stderr  # rich markup escaped twice
    assert "quote values" in result.stderr


def test_report_csvs_keep_nominal_rows_in_pandas_groupby(tmp_path):
    """A nominal gap is written "nominal" (not an empty field pandas reads as NaN)."""
    from test_report import write_record

    from gapbench.analysis.records import read_csv
    from gapbench.analysis.report import build_report

    results = tmp_path / "results"
    for seed in (0, 1):
        write_record(results, "hopper", "sac", seed, "")  # nominal sim, no dataset
        write_record(results, "hopper", "sac", seed, "gravity=2.0")
    build_report(results, tmp_path / "rep", reps=20)
    for name, n_nominal in (("final_scores.csv", 2), ("cells.csv", 1), ("runs.csv", 2)):
        frame = pd.read_csv(tmp_path / "rep" / name)
        assert set(frame["gap"]) == {"nominal", "gravity=2.0"}, name
        assert set(frame["real_gap"]) == {"nominal"}, name
        assert set(frame["dataset"]) == {"none"}, name
        sizes = frame.groupby(["label", "gap", "real_gap", "dataset"]).size()
        assert sizes.sum() == len(frame) and sizes["sac", "nominal"].sum() == n_nominal, name
        back = read_csv(tmp_path / "rep" / name)
        assert set(back["gap"]) == {"", "gravity=2.0"} and set(back["dataset"]) == {""}, name
    # an older CSV with empty fields reads back the same way
    (tmp_path / "old.csv").write_text("label,gap,real_gap,dataset,x\nsac,,,,1.0\n")
    old = read_csv(tmp_path / "old.csv")
    assert old.loc[0, "gap"] == old.loc[0, "real_gap"] == old.loc[0, "dataset"] == ""
    assert old.loc[0, "x"] == 1.0


# -- a broken plug-in cannot break the tool ---------------------------------------------


@pytest.fixture
def broken_plugins(tmp_path, monkeypatch):
    """Two entry points that cannot load: a missing module and a module that raises."""
    (tmp_path / "raising_plugin.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    group = registry.ENTRY_POINT_GROUP
    eps = [
        EntryPoint("ghost", "no_such_module_xyz:Ghost", group),
        EntryPoint("boom", "raising_plugin:Boom", group),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: eps)
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_PLUGINS", {})
    monkeypatch.setattr(registry, "_BROKEN", {})
    yield
    sys.modules.pop("raising_plugin", None)


def test_broken_plugin_is_one_warning_in_algos_list(broken_plugins):
    result = runner.invoke(app, ["algos", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert {"sac", "cql"} <= {r["name"] for r in json.loads(result.stdout)}
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert "'ghost'" in warnings[0] + warnings[1] and "'boom'" in warnings[0] + warnings[1]
    assert "no_such_module_xyz" in result.stderr and "boom at import" in result.stderr
    assert "Traceback" not in result.output


def test_broken_plugin_fails_clearly_only_when_asked_for(broken_plugins, tmp_path):
    assert {"ghost", "boom", "sac"} <= set(algorithms.names())  # listed, not imported
    assert algorithms.get("sac").regime == "online"
    with pytest.raises(algorithms.PluginLoadError, match="'ghost'.*no_such_module_xyz"):
        algorithms.get("ghost")
    unused = tmp_path / "unused.yaml"
    unused.write_text("tasks: [hopper]\nalgorithms: {sac: {}}\nseeds: 1\n")
    result = runner.invoke(app, ["matrix", "run", str(unused), "--dry-run", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    used = tmp_path / "used.yaml"
    used.write_text("tasks: [hopper]\nalgorithms: {boom: {}}\nseeds: 1\n")
    result = runner.invoke(app, ["matrix", "run", str(used), "--dry-run", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "'boom'" in result.stderr and "boom at import" in result.stderr
    assert "Traceback" not in result.output


def test_broken_installed_plugin_does_not_break_test_collection(tmp_path):
    """A real (installed-looking) broken entry point: collection of the conformance
    suite still works, and the broken plug-in's own tests are the ones that fail."""
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\nghost = no_such_module_xyz:Ghost\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"}
    test_file = Path(__file__).with_name("test_conformance.py")
    args = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-q", "--collect-only"]
    done = subprocess.run(
        [*args, str(test_file)], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[ghost-" in done.stdout and "[sac-" in done.stdout


# -- one torch thread per run by default; one meaning of "final normalized score" -------

TINY = ["--budget", "updates=40", "--budget", "eval_every=10", "--budget", "warmup_steps=50"]


@pytest.fixture
def two_threads():
    """Start from torch's usual default (>1 thread) so the default under test shows."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_run_defaults_to_one_thread_and_final_is_the_reports_mean(tmp_path, two_threads):
    args = ["run", "--task", "hopper", "--algo", "sac", "--set", "hidden=32,32", *TINY]
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (run_dir,) = tmp_path.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["torch_threads"] == 1
    scores = pd.read_csv(run_dir / "curve.csv")["normalized_score"].to_numpy()
    assert len(scores) == 4
    assert summary["final_normalized_score"] == pytest.approx(scores[-3:].mean())
    assert summary["last_normalized_score"] == pytest.approx(scores[-1])
    # the report's final score of the same run is the same number under the same name
    from gapbench.analysis.records import load_results
    from gapbench.analysis.tables import final_scores

    finals = final_scores(load_results(tmp_path).curves)
    assert finals["final_normalized_score"].item() == pytest.approx(
        summary["final_normalized_score"]
    )
    again = runner.invoke(app, [*args, "--seed", "1", "--threads", "2", "--out", str(tmp_path)])
    assert again.exit_code == 0, again.output
    threads = {
        json.loads((d / "summary.json").read_text())["torch_threads"] for d in tmp_path.iterdir()
    }
    assert threads == {1, 2}


def test_bench_tune_and_matrix_default_to_one_thread(tmp_path, monkeypatch, two_threads):
    import gapbench.benchmark.executors
    import gapbench.benchmark.tuning

    result = runner.invoke(app, ["bench", "--algo", "sac", "--seconds", "0.05", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["threads"] == 1
    assert gapbench.benchmark.executors.worker_threads(1) == 1  # the library default too

    seen = {}

    def fake_run_matrix(matrix, out, executor, workers, retry, address, threads, **kw):
        seen["matrix"] = threads
        return {}

    monkeypatch.setattr(gapbench.benchmark.executors, "run_matrix", fake_run_matrix)
    smoke = tmp_path / "m.yaml"
    smoke.write_text("tasks: [hopper]\nalgorithms: {sac: {}}\nseeds: 1\n")
    assert runner.invoke(app, ["matrix", "run", str(smoke)]).exit_code == 0
    assert seen["matrix"] == 1
    old_name = runner.invoke(app, ["matrix", "run", str(smoke), "--cpus-per-run", "3"])
    assert old_name.exit_code == 0 and seen["matrix"] == 3

    def fake_run_prepared(prepared):
        seen["tune"] = prepared.config.threads
        raise KeyboardInterrupt

    monkeypatch.setattr(gapbench.benchmark.tuning, "run_prepared", fake_run_prepared)
    tune = ["tune", "--algo", "sac", "--task", "hopper", "--out", str(tmp_path / "t")]
    runner.invoke(app, tune)
    assert seen["tune"] == 1
    runner.invoke(app, [*tune, "--threads", "2"])
    assert seen["tune"] == 2


# -- figures and statistics that do not mislead -----------------------------------------


def _finals(n_seeds: int, low: float, high: float) -> pd.DataFrame:
    rows = []
    for label, shift in (("h2o", 0.0), ("sac", -1.0)):
        for seed, score in enumerate(np.linspace(low, high, n_seeds) + shift):
            cell = {"task": "hopper", "gap": "gravity=2.0", "real_gap": "", "dataset": ""}
            rows.append({"label": label, **cell, "seed": seed, "final_normalized_score": score})
    return pd.DataFrame(rows)


def test_performance_profile_taus_follow_the_scores():
    from gapbench.analysis.tables import profile_taus, score_matrices

    taus = profile_taus(score_matrices(_finals(5, 2.0, 15.0)))
    assert taus[0] < 1.0 and taus[-1] > 15.0  # every score inside the range
    assert taus[-1] < 20.0  # not 0-100: low scores would collapse at the left edge


def test_aggregates_over_few_runs_carry_a_warning():
    from gapbench.analysis.tables import score_matrices

    few = score_matrices(_finals(2, 10.0, 20.0)).notes
    assert any("cannot be trusted" in n and "h2o 2" in n for n in few), few
    enough = score_matrices(_finals(5, 10.0, 20.0)).notes
    assert not any("cannot be trusted" in n for n in enough), enough


def test_license_and_citation_match_the_package():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"]["text"] == "MIT"
    assert (root / "LICENSE").read_text().startswith("MIT License")
    cff = yaml.safe_load((root / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "MIT"
    assert cff["version"] == project["version"]


# -- 21.8: tau range, algorithm order, titles -----------------------------------------------


@pytest.fixture(scope="module")
def three_algos(tmp_path_factory):
    from test_report import write_record

    results = tmp_path_factory.mktemp("results")
    for algo in ("cql", "h2o", "sac"):
        for seed in (0, 1):
            write_record(results, "hopper", algo, seed, "gravity=2.0")
    return results


def test_report_order_and_tau_range_reach_tables_and_figures(three_algos, tmp_path):
    out = tmp_path / "rep"
    result = runner.invoke(
        app,
        ["report", str(three_algos), "--out", str(out), "--reps", "20"]
        + ["--order", "sac,cql", "--tau-range", "-5,250"],
    )
    assert result.exit_code == 0, result.output
    header = (out / "cells.md").read_text().splitlines()[0]
    assert header.index("sac") < header.index("cql") < header.index("h2o"), header
    table = (out / "aggregates.md").read_text().splitlines()
    rows = [line.split("|")[1].strip() for line in table[2:]]
    assert rows == ["sac", "cql", "h2o"], rows
    taus = pd.read_csv(out / "performance_profiles.csv")["tau"]
    assert taus.min() == -5.0 and taus.max() == 250.0
    assert "(sac, cql, h2o)" in (out / "index.md").read_text()


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--order", "sac,bogus", "bogus"),
        ("--tau-range", "50,10", "50,10"),
        ("--tau-range", "x", "x"),
    ],
)
def test_report_bad_order_or_tau_range_is_one_line(three_algos, tmp_path, option, value, named):
    out = tmp_path / "rep"
    result = runner.invoke(app, ["report", str(three_algos), "--out", str(out), option, value])
    assert result.exit_code == 2
    assert named in result.stderr and "valid" in result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing written


def test_figure_titles_break_between_phrases_only():
    from gapbench.analysis import plots

    title = plots._wrap([["halfcheetah: learning curves", "(mean, 95% CI over seeds)"]], 3.2, 9)
    assert title.split("\n") == ["halfcheetah: learning curves", "  (mean, 95% CI over seeds)"]
    panel = plots._panel_title(
        "gravity=2.0,friction=0.3,joint_noise=1.0",
        "",
        "gapbench/halfcheetah/medium-replay-v0",
        False,
    )
    phrases = (
        "gravity=2.0,",
        "friction=0.3,",
        "joint_noise=1.0",
        "gapbench/halfcheetah/medium-replay-v0",
    )
    for phrase in phrases:  # each phrase whole on one line
        assert any(phrase in line for line in panel.split("\n")), panel
