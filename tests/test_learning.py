"""Learning checks: the algorithms really learn. Slow (minutes to an hour on 2 cores), so
marked ``slow`` and run by hand: ``.venv/bin/pytest -m slow -s tests/test_learning.py``.
Each prints its curve; the figures go in the issue notes."""

from __future__ import annotations

import pytest

from gapbench.benchmark import records
from gapbench.benchmark.harness import run
from gapbench.benchmark.spec import Budget, RunSpec

pytestmark = pytest.mark.slow


def print_curve(tmp_path, spec):
    for row in records.read_curve(tmp_path / spec.resolved().run_id / records.CURVE):
        print(
            f"  step {int(row['step']):>6}  env steps {int(row['env_steps']):>6}  "
            f"return {row['return_mean']:8.1f}  normalized {row['normalized_score']:6.1f}"
        )


def test_sac_learns_nominal_halfcheetah(tmp_path):
    spec = RunSpec(task="halfcheetah", algorithm="sac", regime="oracle", seed=0, preset="mini")
    summary = run(spec, tmp_path, progress=False)
    print_curve(tmp_path, spec)
    assert summary["status"] == "ok"
    # Random actions score ~0 normalized (about -280 return); SAC passes 1000 return
    # (~10 normalized) within 35k env steps on this task.
    assert summary["best_normalized_score"] > 10.0


@pytest.fixture(scope="module")
def medium_dataset(tmp_path_factory):
    from gapbench.benchmark.datasets_build import build
    from gapbench.gap_envs import datasets

    root = tmp_path_factory.mktemp("data")
    did = build("halfcheetah", "medium", size=100_000, seed=0, data_dir=root, progress=False)
    return root, did, datasets.card(did, data_dir=root)


@pytest.mark.parametrize(("algo", "updates"), [("iql", 30_000), ("cql", 10_000)])
def test_offline_reaches_the_behaviour_floor(tmp_path, monkeypatch, medium_dataset, algo, updates):
    """Behaviour cloning recovers about the behaviour policy's score on medium data (D4RL:
    BC 42.6 vs medium ~40 on halfcheetah); CQL and IQL should at least reach that floor."""
    root, did, card = medium_dataset
    monkeypatch.setenv("GAPBENCH_DATA_DIR", str(root))
    spec = RunSpec(
        task="halfcheetah",
        algorithm=algo,
        dataset=did,
        seed=0,
        budget=Budget(updates=updates, eval_every=updates // 10, eval_episodes=5),
    )
    summary = run(spec, tmp_path, progress=False)
    print_curve(tmp_path, spec)
    floor = card["normalized_score"]
    print(
        f"{algo}: final {summary['final_normalized_score']:.1f}, best "
        f"{summary['best_normalized_score']:.1f}, dataset (behaviour) {floor:.1f}"
    )
    assert summary["status"] == "ok"
    assert summary["best_normalized_score"] >= 0.9 * floor
