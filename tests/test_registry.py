"""The registry, `algos list`, and the plug-in path documented in the README."""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import algorithms
from algorithms import registry
from benchmark.cli import app

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
    code = re.search(r"```python\n# my_package/bc.py\n(.*?)```", text, re.S).group(1)
    pkg = tmp_path / "my_package"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "bc.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint("bc", "my_package.bc:BC", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == ep.group else [])
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    monkeypatch.setattr(registry, "_PLUGINS", {})
    monkeypatch.setattr(registry, "_BROKEN", {})
    yield
    registry._REGISTRY.pop("bc", None)
    sys.modules.pop("my_package.bc", None)
    sys.modules.pop("my_package", None)


def test_readme_plugin_is_found_through_its_entry_point(readme_plugin):
    assert "bc" in algorithms.names()
    cls = algorithms.get("bc")
    assert cls.regime == "offline"
    from benchmark.speed import random_buffer

    algo = cls(5, 2, seed=0)
    data = random_buffer(300, 5, 2)
    before = algo.act(np.zeros((1, 5)))
    metrics = algo.update(dataset=data)
    assert np.isfinite(float(metrics["bc_loss"]))
    assert not np.array_equal(before, algo.act(np.zeros((1, 5))))
    listed = CliRunner().invoke(app, ["algos", "list", "--json"])
    assert "bc" in {r["name"] for r in json.loads(listed.stdout)}
