"""The package layout: one installed name, and imports that flow one way.

The four top-level folders are installed as ``gapbench.<folder>`` (pyproject's
package-dir); code that imported them by their bare names would work from the repository
root and break once installed, so no file may.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("algorithms", "gap_envs", "benchmark", "analysis")


def _python_files() -> list[Path]:
    skip = {".venv", ".nox", "results", "build"}
    return [
        p
        for p in ROOT.rglob("*.py")
        if not skip & set(p.relative_to(ROOT).parts) and "egg-info" not in str(p)
    ]


def _imported_modules(path: Path) -> list[str]:
    """Absolute module names a file imports (``import a.b``, ``from a.b import c``)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_file_imports_the_folders_by_their_bare_names():
    bad = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in _python_files()
        for name in _imported_modules(path)
        if name.split(".")[0] in PACKAGES
    ]
    assert not bad, "import these as gapbench.<package>:\n" + "\n".join(bad)


def test_the_folders_are_installed_under_gapbench_only(tmp_path):
    """From outside the repository (no folder on sys.path by accident): gapbench.<package>
    is the repository's folder, and no bare top-level <package> is installed."""
    code = (
        "import importlib.util as u, json; "
        f"print(json.dumps({{p: [u.find_spec('gapbench.' + p).origin, u.find_spec(p) is None] "
        f"for p in {PACKAGES!r}}}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    for package, (origin, bare_absent) in json.loads(out).items():
        assert Path(origin) == ROOT / package / "__init__.py", package
        assert bare_absent, f"a top-level {package!r} module is installed"


def test_gap_envs_imports_nothing_from_the_other_packages():
    """Imports flow one way: gap_envs (environments, dataset storage) knows nothing of
    learners, the harness or analysis; dataset building and behaviour policies live in
    gapbench.benchmark."""
    others = tuple(f"gapbench.{p}" for p in PACKAGES if p != "gap_envs")
    bad = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "gap_envs").rglob("*.py"))
        for name in _imported_modules(path)
        if name.startswith(others) or name == "gapbench" and _imports_a_package(path, others)
    ]
    assert not bad, "\n".join(bad)


def _imports_a_package(path: Path, others: tuple[str, ...]) -> bool:
    """``from gapbench import benchmark`` and the like."""
    return any(
        isinstance(node, ast.ImportFrom)
        and node.module == "gapbench"
        and any(f"gapbench.{alias.name}" in others for alias in node.names)
        for node in ast.walk(ast.parse(path.read_text()))
    )


# -- a spec resolved once, one table of the axes each regime uses ---------------------------
def test_analysis_regime_axes_agree_with_the_spec_table():
    """analysis reads records only (it imports nothing from benchmark), so it keeps its own
    copy of which axes each regime ignores; it must say what gapbench.benchmark.spec says."""
    from gapbench.algorithms.base import RUN_REGIMES
    from gapbench.analysis.records import DATA_FREE_REGIMES, GAP_FREE_REGIMES
    from gapbench.benchmark.spec import REGIME_AXES

    assert set(REGIME_AXES) == set(RUN_REGIMES)
    gap_free = {r for r, axes in REGIME_AXES.items() if "sim_gap" not in axes}
    data_free = {r for r, axes in REGIME_AXES.items() if "dataset" not in axes}
    assert (gap_free, data_free) == (GAP_FREE_REGIMES, DATA_FREE_REGIMES)


def test_a_specs_run_id_resolves_it_once(monkeypatch):
    from gapbench.benchmark.spec import RunSpec

    calls = []
    resolve = RunSpec.resolved
    monkeypatch.setattr(RunSpec, "resolved", lambda self: calls.append(1) or resolve(self))
    spec = RunSpec(task="hopper", algorithm="sac", gap="gravity=2.0")
    assert spec.run_id == spec.run_id == spec.run_id
    assert len(calls) == 1


def test_hyper_parameters_become_a_config_in_one_place():
    """spec.algorithm_config is the one home of "hparams -> validated Config": the harness
    takes the resolved spec's config, matrix files and tuning spaces validate through it."""
    bad = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "benchmark").rglob("*.py"))
        if ".make_config(" in path.read_text() and path.name != "spec.py"
    ]
    assert not bad, "call gapbench.benchmark.spec.algorithm_config instead in: " + ", ".join(bad)


# -- one copy of each manual: the CLI help ------------------------------------------------------
def test_the_matrix_help_pairs_the_axes_of_the_spec_table():
    """The pairing table in `gapbench matrix --help` (kept in the CLI so --help does not import
    torch) says what spec.REGIME_AXES says."""
    from gapbench.benchmark.cli.matrix import DOCS
    from gapbench.benchmark.spec import REGIME_AXES

    axes = {"sim_gaps": "sim_gap", "datasets": "dataset"}
    rows = {}
    for line in DOCS.splitlines():
        words = line.split()
        if words and words[0] in REGIME_AXES and "seeds" in words:
            rows[words[0]] = {axes[w] for w in words if w in axes}
    assert rows == {regime: set(used) for regime, used in REGIME_AXES.items()}


def test_the_readme_and_the_docstrings_point_to_the_manuals():
    import yaml

    from gapbench.benchmark import matrix, tuning
    from gapbench.benchmark.matrix import load

    readme = (ROOT / "README.md").read_text()
    for command, module in (("matrix", matrix), ("tune", tuning)):
        assert f"`gapbench {command} --help`" in readme, command
        assert f"gapbench {command} --help" in module.__doc__, module.__name__
    section = readme.split("## Many runs")[1].split("\n## ")[0]
    example = section.split("```yaml\n")[1].split("```")[0]  # the README's short example
    assert len(load(yaml.safe_load(example), out=ROOT / "unused", check_datasets=False)) == 9


def test_readme_contents_link_to_its_sections():
    import re

    readme = (ROOT / "README.md").read_text()
    contents = readme.split("**Contents:**")[1].split("\n\n")[0]
    links = re.findall(r"\]\(#([^)]+)\)", contents)

    def anchor(heading: str) -> str:  # GitHub's: lower case, punctuation dropped, - for space
        return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")

    sections = [anchor(h) for h in re.findall(r"^## (.+)$", readme, re.M)]
    assert links == sections  # every section, in order, and no dead link
