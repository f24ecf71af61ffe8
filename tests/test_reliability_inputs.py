"""Issue 20 (items 7, 10-12) and 21.9: bad inputs are refused up front with one clear
message, records and datasets that are damaged show as such, concurrent writers lose
nothing."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from gapbench.benchmark.cli import app
from gapbench.benchmark.matrix import MatrixError, load
from gapbench.gap_envs import datasets as ds

runner = CliRunner()
TINY_ARGS = [
    "--budget", "updates=20", "--budget", "eval_every=10", "--budget", "eval_episodes=1",
    "--budget", "warmup_steps=20", "--set", "hidden=32,32", "--set", "batch_size=32",
]  # fmt: skip


def tiny_transitions(n=300, obs_dim=11, act_dim=3, seed=0) -> ds.Transitions:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
    ends = np.arange(n) % 100 == 99
    return ds.Transitions(
        obs[:-1],
        rng.uniform(-1, 1, (n, act_dim)),
        rng.normal(size=n),
        obs[1:],
        np.zeros(n, bool),
        ends,
    )


# -- item 7: body names, dataset shape / task / NaN, a missing dataset ----------------------
def test_a_matrix_checks_body_names_against_every_task():
    data = {
        "tasks": ["hopper", "halfcheetah"],
        "sim_gaps": ["mass.torso=2", "mass.bthigh=2"],
        "real_gaps": ["mass.nose=1.5"],
        "algorithms": {"sac": {}},
    }
    with pytest.raises(MatrixError) as err:
        load(data)
    problems = err.value.problems
    # torso is in both; bthigh only in halfcheetah; nose in neither: one line each, all listed
    assert any("mass.bthigh" in p and "'hopper'" in p and "valid bodies:" in p for p in problems)
    assert any("mass.nose" in p and "'hopper'" in p for p in problems)
    assert any("mass.nose" in p and "'halfcheetah'" in p for p in problems)
    assert not any("mass.torso" in p for p in problems), problems


def test_run_refuses_an_unknown_body_and_writes_nothing(tmp_path):
    args = ["run", "--task", "hopper", "--algo", "sac", "--gap", "mass.bthigh=2", *TINY_ARGS]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert "mass.bthigh" in result.stderr and "valid bodies: torso" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_run_refuses_a_missing_dataset_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv(ds.DATA_DIR_ENV, str(tmp_path / "data"))
    args = ["run", "--task", "hopper", "--algo", "cql", *TINY_ARGS]
    for dataset in ("gapbench/hopper/medium-v0", str(tmp_path / "absent.hdf5")):
        result = runner.invoke(app, [*args, "--dataset", dataset, "--out", str(tmp_path / "o")])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: dataset") and "Traceback" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_dataset_of_the_wrong_shape_is_refused_up_front_and_when_loaded(tmp_path):
    path = ds.save_d4rl_hdf5(tiny_transitions(obs_dim=17, act_dim=6), tmp_path / "hc.hdf5")
    with pytest.raises(ds.DatasetError, match="observations of size 17 .* needs 11 and 3"):
        ds.exists(path, task="hopper")
    with pytest.raises(ds.DatasetError, match="observations of size 17 .* needs 11 and 3"):
        ds.load(path, task="hopper")
    data = {"tasks": ["hopper"], "datasets": [str(path)], "algorithms": {"cql": {}}}
    with pytest.raises(MatrixError, match="needs 11 and 3"):
        load(data)


@pytest.mark.parametrize("key", ["observations", "actions", "rewards"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_a_dataset_with_nan_or_inf_is_refused_when_loaded(tmp_path, key, value):
    tr = tiny_transitions()
    getattr(tr, key)[7] = value
    path = ds.save_d4rl_hdf5(tr, tmp_path / "bad.hdf5")
    with pytest.raises(ds.DatasetError, match=f"non-finite value.* in {key}, first at row 7"):
        ds.load(path, task="hopper")


# -- issue 21.9: D4RL's infos/qpos and infos/qvel survive the import -------------------------
@pytest.mark.parametrize("with_next", [True, False])
def test_d4rl_qpos_and_qvel_are_kept_row_aligned(tmp_path, with_next):
    import h5py

    tr = tiny_transitions(n=10)
    path = ds.save_d4rl_hdf5(tr, tmp_path / "d4rl.hdf5", next_observations=with_next)
    qpos = np.arange(10 * 6, dtype=np.float64).reshape(10, 6)  # hopper: nq=6, nv=6
    with h5py.File(path, "a") as f:
        f["infos/qpos"], f["infos/qvel"] = qpos, -qpos
    loaded = ds.load(path, task="hopper")
    assert set(loaded.infos) == {"qpos", "qvel"}
    # without next_observations the last row (no successor) is dropped, as in D4RL
    rows = 10 if with_next else 9
    np.testing.assert_array_equal(loaded.infos["qpos"], qpos[:rows])
    np.testing.assert_array_equal(loaded.infos["qvel"], -qpos[:rows])
    assert len(loaded) == rows
