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

import pytest
import yaml
from typer.testing import CliRunner

import algorithms
from algorithms import registry
from benchmark import cli_matrix
from benchmark.cli import app
from benchmark.matrix import load

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
    import pandas as pd
    from test_report import write_record

    from analysis.records import read_csv
    from analysis.report import build_report

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
    assert "[ghost]" in done.stdout and "[sac]" in done.stdout
