"""The matrix files shipped in benchmark/configs: they expand as documented, and the
CI smoke matrix runs end to end through the command line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gapbench.benchmark import matrix
from gapbench.benchmark.cli import app

CONFIGS = Path(__file__).resolve().parents[1] / "benchmark" / "configs"


def labels(m):
    return Counter(r.label for r in m.runs)


def test_h2o_paper_grid_is_the_papers():
    m = matrix.load(CONFIGS / "h2o-paper.yaml", check_datasets=False)
    # 3 tasks x 3 gaps x 3 datasets x 5 seeds for each hybrid method, 3 x 3 gaps x 5 for
    # SAC in the simulator, 3 x 3 datasets x 5 for each offline method
    assert labels(m) == {"h2o": 135, "darc": 135, "sac": 45, "cql": 45, "iql": 45}
    assert {r.spec.gap for r in m.runs if r.label == "h2o"} == {
        "gravity=2.0",
        "friction=0.3",
        "joint_noise=1.0,noise_ctrl_cost=noisy",  # the authors' simulator's reward
    }
    assert {r.spec.preset for r in m.runs} == {"paper"}


def test_h2o_paper_optional_lines_add_the_later_methods(tmp_path):
    """The commented-out BC / TD3+BC / PAR / VGDF lines of h2o-paper.yaml, uncommented, are
    valid: 45 offline runs each (3 tasks x 3 datasets x 5 seeds) for BC and TD3+BC, 135
    hybrid runs each (x 3 gaps) for PAR and VGDF."""
    text = (CONFIGS / "h2o-paper.yaml").read_text()
    optional = ("  # bc: {}", "  # td3bc: {}", "  # par: {}", "  # vgdf: {}")
    assert all(line in text.splitlines() for line in optional)
    for line in optional:
        text = text.replace(line, line.replace("# ", "", 1))
    (tmp_path / "h2o-paper.yaml").write_text(text)
    m = matrix.load(tmp_path / "h2o-paper.yaml", check_datasets=False)
    counts = {"h2o": 135, "darc": 135, "sac": 45, "cql": 45, "iql": 45}
    assert labels(m) == {**counts, "bc": 45, "td3bc": 45, "par": 135, "vgdf": 135}
    regimes = {r.label: r.spec.resolved().regime for r in m.runs}
    assert {regimes[k] for k in ("bc", "td3bc")} == {"offline"}
    assert {regimes[k] for k in ("par", "vgdf", "h2o")} == {"hybrid"}


def test_reference_matrix_is_its_two_cells_with_every_method():
    m = matrix.load(CONFIGS / "reference.yaml", check_datasets=False)
    assert labels(m) == {
        **dict.fromkeys(("h2o", "darc", "sac", "sac-oracle", "cql", "iql"), 6),
        **dict.fromkeys(("bc", "td3bc", "vgdf", "par"), 3),  # the later methods: walker2d
    }
    later = {(r.spec.task, r.spec.gap, r.spec.dataset) for r in m.runs if r.label == "vgdf"}
    assert later == {("walker2d", "friction=0.3", "gapbench/walker2d/medium-v1")}
    cells = {(r.spec.task, r.spec.gap, r.spec.dataset) for r in m.runs if r.label == "h2o"}
    assert cells == {
        ("halfcheetah", "gravity=2.0", "gapbench/halfcheetah/medium-replay-v1"),
        ("walker2d", "friction=0.3", "gapbench/walker2d/medium-v1"),
    }
    sims = {(r.spec.task, r.spec.gap) for r in m.runs if r.label == "sac"}
    assert sims == {("halfcheetah", "gravity=2.0"), ("walker2d", "friction=0.3")}
    budgets = {(r.label, r.spec.resolved().budget.updates) for r in m.runs}
    # 10% of the papers' 1M for every method; CQL half of it (its cost: the file's header)
    assert budgets == {(label, 50_000 if label == "cql" else 100_000) for label in labels(m)}


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_name_the_datasets_the_shipped_policies_build(name):
    """A gapbench id of an older version can no longer be built (its policies are gone):
    every shipped matrix names the -vN of each task's published policies ({version})."""
    from gapbench.benchmark.policies import dataset_version

    m = matrix.load(CONFIGS / name, check_datasets=False)
    ids = {r.spec.dataset for r in m.runs if r.spec.dataset}
    for did in ids:
        parts = did.removeprefix("results/demo/data/").split("/")
        if parts[0] == "gapbench":
            task, version = parts[1], int(parts[2].rsplit("-v", 1)[1])
            assert version == dataset_version(task), did


def test_demo_live_part_is_the_offline_anchors_on_the_shipped_medium_replay_log():
    from gapbench.benchmark.policies import dataset_version

    m = matrix.load(CONFIGS / "demo.yaml", check_datasets=False)
    assert labels(m) == {"bc": 3, "td3bc": 3, "iql": 3}
    assert {r.spec.resolved().regime for r in m.runs} == {"offline"}
    # the log scripts/demo.sh builds into its own folder (never the user's 1M dataset), of
    # the version the shipped halfcheetah policies build: a new publication moves the demo
    v = dataset_version("halfcheetah")
    log = f"results/demo/data/gapbench/halfcheetah/medium-replay-v{v}"
    assert {r.spec.dataset for r in m.runs} == {log}
    demo = (CONFIGS.parents[1] / "scripts" / "demo.sh").read_text()
    assert f"log={log}\n" in demo
    assert "--quality medium-replay --size 100000 --data-dir results/demo/data" in demo


def test_smoke_matrix_runs_through_the_cli(tmp_path):
    config = str(CONFIGS / "smoke.yaml")
    result = CliRunner().invoke(
        app, ["matrix", "run", config, "--out", str(tmp_path), "--workers", "2"]
    )
    assert result.exit_code == 0, result.output
    status = CliRunner().invoke(app, ["matrix", "status", config, "--out", str(tmp_path), "--json"])
    counts = json.loads(status.stdout)["counts"]
    assert counts["done"] == 2 and counts["failed"] == 0 and counts["missing"] == 0


@pytest.mark.parametrize(
    "name, expected",
    [
        ("h2o-mini", {"h2o": 30_000, "darc": 30_000, "sac": 30_000, "cql": 30_000}),
        ("h2o-10k", {"h2o": 10_000, "darc": 10_000, "sac": 10_000, "cql": 3_000}),
    ],
)
def test_h2o_evidence_matrices_are_the_h2o_setting_with_every_baseline(name, expected):
    m = matrix.load(CONFIGS / f"{name}.yaml", check_datasets=False)
    assert labels(m) == {"h2o": 3, "darc": 3, "sac": 3, "cql": 3}
    assert {r.spec.gap for r in m.runs if r.label in ("h2o", "darc", "sac")} == {"gravity=2.0"}
    updates = {r.label: r.spec.resolved().budget.updates for r in m.runs}
    assert updates == expected
    # DARC's warm-up is the paper's 10% of the updates
    darc = next(r for r in m.runs if r.label == "darc")
    assert darc.spec.hparams["warmup_steps"] == expected["darc"] // 10
