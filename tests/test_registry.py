"""The registry, `algos list`, and the plug-in path documented in the README."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gapbench import algorithms
from gapbench.algorithms import registry
from gapbench.benchmark.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"


def test_get_unknown_algorithm_lists_valid_names():
    with pytest.raises(algorithms.UnknownAlgorithmError, match="unknown algorithm 'ppo'.*sac"):
        algorithms.get("ppo")


def test_algos_list_json_has_regimes_and_defaults():
    result = CliRunner().invoke(app, ["algos", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"sac", "cql", "iql"} <= set(rows)
    assert rows["sac"]["regime"] == "online"
    assert rows["cql"]["regime"] == rows["iql"]["regime"] == "offline"
    assert rows["sac"]["hparams"]["discount"] == 0.99
    assert rows["sac"]["hparams"]["hidden"] == [256, 256]


@pytest.fixture
def readme_plugin(tmp_path, monkeypatch):
    """Install the README's worked example as a package exposing an entry point."""
    text = README.read_text()
    code = re.search(r"```python\n# my_package/gaussbc.py\n(.*?)```", text, re.S).group(1)
    pkg = tmp_path / "my_package"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "gaussbc.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint("gaussbc", "my_package.gaussbc:GaussianBC", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == ep.group else [])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_PLUGINS", {})
    monkeypatch.setattr(registry, "_BROKEN", {})
    yield
    registry._REGISTRY.pop("gaussbc", None)
    sys.modules.pop("my_package.gaussbc", None)
    sys.modules.pop("my_package", None)


def test_readme_plugin_is_found_through_its_entry_point(readme_plugin):
    assert "gaussbc" in algorithms.names()
    cls = algorithms.get("gaussbc")
    assert cls.regime == "offline"
    from gapbench.benchmark.speed import random_buffer

    algo = cls(5, 2, seed=0)
    data = random_buffer(300, 5, 2)
    before = algo.act(np.zeros((1, 5)))
    metrics = algo.update(dataset=data)
    assert np.isfinite(float(metrics["bc_loss"]))
    assert not np.array_equal(before, algo.act(np.zeros((1, 5))))
    listed = CliRunner().invoke(app, ["algos", "list", "--json"])
    assert "gaussbc" in {r["name"] for r in json.loads(listed.stdout)}


def test_readme_plugin_passes_conformance_and_lint(readme_plugin, tmp_path):
    """The worked example is what a plug-in author copies: it must be ruff-clean (no
    unused import), tunable (a search_space) and pass the shipped conformance checks."""
    from gapbench.algorithms.conformance import run_checks

    results = run_checks("gaussbc")
    assert not any(results.values()), results  # every check passed
    assert algorithms.get("gaussbc").search_space
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        pytest.skip("ruff is not installed (pip install -e .[dev])")
    code = re.search(r"```python\n# my_package/gaussbc.py\n(.*?)```", README.read_text(), re.S)
    (tmp_path / "gaussbc.py").write_text(code.group(1))
    # I001 aside: import grouping differs once `gapbench` is a third-party package
    config = README.with_name("pyproject.toml")
    args = [ruff, "check", "--config", config, "--extend-ignore", "I001", tmp_path / "gaussbc.py"]
    lint = subprocess.run(args, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


def test_readme_plugin_pyproject_declares_the_entry_point():
    text = README.read_text()
    block = re.search(r"```toml\n(\[build-system\].*?)```", text, re.S).group(1)
    project = tomllib.loads(block)
    assert project["project"]["entry-points"][registry.ENTRY_POINT_GROUP] == {
        "gaussbc": "my_package.gaussbc:GaussianBC"
    }
    assert "pip install -e" in text and "gapbench check-algorithm gaussbc" in text


def test_check_algorithm_passes_a_builtin_and_names_what_a_broken_one_fails():
    ok = CliRunner().invoke(app, ["check-algorithm", "iql"])
    assert ok.exit_code == 0, ok.output
    assert "FAILED" not in ok.stdout and "passes all checks" in ok.stdout

    sac = algorithms.get("sac")

    class Lazy(sac):
        """SAC that never learns and acts out of bounds."""

        name = "lazy-toy"
        search_space = {"no_such_param": [1, 2]}

        def update(self, dataset=None, replay=None):
            return {"loss": torch.tensor(float("nan"))}

        def act(self, obs, deterministic=False):
            return 2 * super().act(obs, deterministic) + 3

    registry.register(Lazy)
    try:
        bad = CliRunner().invoke(app, ["check-algorithm", "lazy-toy"])
    finally:
        registry._REGISTRY.pop("lazy-toy")
    assert bad.exit_code == 1
    failed = {line.split()[1].rstrip(":") for line in bad.stdout.splitlines() if "FAILED" in line}
    assert {
        "declares_regime_and_config",  # search_space names an unknown hyper-parameter
        "update_gives_finite_metrics_and_learns",
        "actions_in_bounds_and_shaped",
    } <= failed
    assert "no_such_param" in bad.stdout and "checks failed" in bad.stderr
    missing = CliRunner().invoke(app, ["check-algorithm", "nope"])
    assert missing.exit_code == 2 and "unknown algorithm 'nope'" in missing.stderr
