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


# -- item 8: inf in a curve; item 11: which record the report reads ------------------------
def test_a_non_finite_curve_is_reported_and_leaves_that_run_without_a_final_score(tmp_path):
    from test_report import write_record

    from gapbench.analysis import tables
    from gapbench.analysis.records import load_results
    from gapbench.analysis.report import build_report

    inf, nan = float("inf"), float("nan")
    diverged = write_record(tmp_path / "res", "hopper", "sac", 0, "gravity=2.0", scores=[1, 2, inf])
    early = write_record(tmp_path / "res", "hopper", "sac", 1, "gravity=2.0", scores=[inf, 1, 2, 3])
    lost = write_record(tmp_path / "res", "hopper", "sac", 2, "gravity=2.0", scores=[1, 2, nan])
    write_record(tmp_path / "res", "hopper", "sac", 3, "gravity=2.0", scores=[3, 4, 5])
    results = load_results(tmp_path / "res")
    for run_id in (diverged, early, lost):
        assert any(run_id in w and "non-finite" in w for w in results.warnings)
    finals = tables.final_scores(results.curves, last_k=3)
    # a NaN among the last evaluations is not skipped: like inf it leaves no final score
    assert sorted(finals["seed"]) == [1, 3]
    report = build_report(tmp_path / "res", tmp_path / "report", reps=50)
    assert report is not None
    assert f"run {diverged} has a non-finite" in (tmp_path / "report" / "index.md").read_text()


def _copy_record(src, new_id):
    import json
    import shutil

    dst = src.parent / new_id
    shutil.copytree(src, dst)
    meta = json.loads((dst / "spec.json").read_text())
    meta["run_id"] = new_id
    (dst / "spec.json").write_text(json.dumps(meta))
    return dst


def test_a_damaged_newer_record_does_not_hide_a_good_one(tmp_path):
    import os

    from test_report import write_record

    from gapbench.analysis.records import load_results

    good = write_record(tmp_path, "hopper", "sac", 0, "gravity=2.0", scores=[1, 2, 3])
    newer = _copy_record(tmp_path / good, "hopper-sac-s0-newer")
    (newer / "curve.csv").write_bytes(b"\x00\xff garbage")
    later = (tmp_path / good / "summary.json").stat().st_mtime + 60
    os.utime(newer / "summary.json", (later, later))
    results = load_results(tmp_path)
    assert list(results.complete["run_id"]) == [good]
    assert list(results.curves["normalized_score"]) == [1.0, 2.0, 3.0]


@pytest.mark.parametrize("field", ["budget", "hparams"])
def test_runs_of_one_cell_with_different_configs_are_refused(tmp_path, field):
    import json

    from test_report import write_record

    from gapbench.analysis.records import load_results

    write_record(tmp_path, "hopper", "sac", 0, "gravity=2.0")
    other = tmp_path / write_record(tmp_path, "hopper", "sac", 1, "gravity=2.0")
    meta = json.loads((other / "spec.json").read_text())
    if field == "budget":
        meta["spec"]["budget"]["updates"] = 5000
    else:
        meta["spec"]["hparams"] = {"batch_size": 64}
    (other / "spec.json").write_text(json.dumps(meta))
    differ = "budget_updates" if field == "budget" else "hparams"
    with pytest.raises(ValueError, match=f"label='sac'.* mixes different {differ} "):
        load_results(tmp_path)
    result = runner.invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "report")])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "distinct labels" in result.stderr
    assert not (tmp_path / "report").exists()


# -- item 10: two matrices starting together on one folder ---------------------------------
def test_two_matrices_writing_one_manifest_together_lose_nothing(tmp_path, monkeypatch):
    import threading
    import time

    from gapbench.benchmark import matrix as matrix_module

    barrier = threading.Barrier(2)
    read_json = matrix_module.records.read_json

    def slow_read(path):  # widen the read-modify-write window so the race always shows
        data = read_json(path)
        time.sleep(0.3)
        return data

    monkeypatch.setattr(matrix_module.records, "read_json", slow_read)
    matrix_module.write_manifest(
        load({"name": "first", "tasks": ["hopper"], "algorithms": {"sac": {}}}), tmp_path
    )
    mats = [
        load(
            {
                "name": name,
                "tasks": ["hopper"],
                "algorithms": {label: {"algorithm": "sac"}},
                "seeds": [seed],
            }
        )
        for name, label, seed in (("a", "sac-a", 1), ("b", "sac-b", 2))
    ]

    def write(m):
        barrier.wait()
        matrix_module.write_manifest(m, tmp_path)

    threads = [threading.Thread(target=write, args=(m,)) for m in mats]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    monkeypatch.undo()
    manifest = matrix_module.records.read_json(tmp_path / "matrix.json")
    assert set(manifest["matrices"]) == {"first", "a", "b"}
    labels = {entry["label"] for entry in manifest["runs"].values()}
    assert labels == {"sac", "sac-a", "sac-b"}


def test_slices_of_one_matrix_count_all_their_runs_in_the_manifest(tmp_path):
    """Two --only slices of one matrix (run side by side on one folder) each merge their
    runs into matrix.json; the matrix's run count is their union, not the last slice's."""
    from gapbench.benchmark import matrix as matrix_module

    data = {"name": "m", "tasks": ["hopper", "walker2d"], "algorithms": {"sac": {}}, "seeds": 2}
    for task in ("hopper", "walker2d", "hopper"):
        matrix_module.write_manifest(load(data, only={"task": task}), tmp_path)
    manifest = matrix_module.records.read_json(tmp_path / "matrix.json")
    assert manifest["matrices"]["m"]["runs"] == 4 == len(manifest["runs"])


def test_a_changed_label_drops_its_superseded_unfinished_runs_from_the_manifest(tmp_path):
    """Changing a label's hparams gives its slots new run ids; the old unfinished ids leave
    matrix.json (the report would list them as missing forever), a finished one stays, and
    another slice's runs are untouched."""
    from gapbench.benchmark import matrix as matrix_module
    from gapbench.benchmark import records

    def data(lr):
        algos = {"sac": {}, "tuned": {"algorithm": "sac", "hparams": {"actor_lr": lr}}}
        return {"name": "m", "tasks": ["hopper", "walker2d"], "algorithms": algos, "seeds": 2}

    old = load(data(3e-4), only={"task": "hopper"})
    matrix_module.write_manifest(load(data(3e-4), only={"task": "walker2d"}), tmp_path)
    matrix_module.write_manifest(old, tmp_path)
    old_tuned = [r.run_id for r in old.runs if r.label == "tuned"]
    (tmp_path / old_tuned[0]).mkdir()
    records.write_json(tmp_path / old_tuned[0] / records.SUMMARY, {"status": "ok"})
    new = load(data(1e-4), only={"task": "hopper"})
    matrix_module.write_manifest(new, tmp_path)
    runs = matrix_module.read_manifest(tmp_path)
    assert old_tuned[0] in runs and old_tuned[1] not in runs  # finished kept, unfinished dropped
    assert {r.run_id for r in new.runs} <= set(runs)
    assert sum(e["task"] == "walker2d" for e in runs.values()) == 4  # the other slice
    assert len(runs) == 4 + 4 + 1


# -- item 12: duplicate labels, a matrix name that is a path -------------------------------
def test_a_duplicate_label_in_a_matrix_file_is_an_error(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("tasks: [hopper]\nalgorithms:\n  sac: {}\n  sac: {hparams: {batch_size: 64}}\n")
    with pytest.raises(MatrixError, match="duplicate key 'sac' at line 4 \\(first at line 3\\)"):
        load(path)


@pytest.mark.parametrize("name", ["../elsewhere", "/tmp/abs", "a/b", "..", ".hidden", "a\\b"])
def test_a_matrix_name_cannot_place_the_output_outside_results(tmp_path, name):
    data = {"name": name, "tasks": ["hopper"], "algorithms": {"sac": {}}}
    with pytest.raises(MatrixError, match="is not a plain folder name"):
        load(data)
    result = runner.invoke(app, ["matrix", "run", str(_yaml(tmp_path, data)), "--dry-run"])
    assert result.exit_code == 2 and "not a plain folder name" in result.stderr
    assert load({**data, "name": "demo-1.2"}).out.as_posix() == "results/demo-1.2"


def _yaml(tmp_path, data):
    import yaml

    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# -- item 12: damaged datasets show as such, killed builds leave no staging folder ---------
@pytest.fixture
def built(tmp_path):
    """A tiny random hopper dataset in its own data folder: (root, id, data path)."""
    from gapbench.benchmark.datasets_build import build

    root = tmp_path / "data"
    did = build("hopper", "random", size=300, data_dir=root, progress=False, workers=1)
    return root, did, root / did / "data"


def test_a_truncated_dataset_is_unhealthy_in_its_card(built):
    root, did, data = built
    assert ds.card(did, data_dir=root)["problem"] is None
    main = data / "main_data.hdf5"
    main.write_bytes(main.read_bytes()[: main.stat().st_size // 2])
    problem = ds.card(did, data_dir=root)["problem"]
    assert problem and "main_data.hdf5" in problem
    result = runner.invoke(app, ["datasets", "info", did, "--data-dir", str(root), "--json"])
    assert result.exit_code == 0 and "main_data.hdf5" in result.stdout


def test_a_dataset_with_bad_metadata_is_listed_with_its_problem(built):
    root, did, data = built
    (data / "metadata.json").write_text("{not json")
    (row,) = ds.list_datasets(root)
    assert row["id"] == did and "unreadable metadata.json" in row["problem"]
    result = runner.invoke(app, ["datasets", "list", "--data-dir", str(root)])
    assert result.exit_code == 0 and "damaged" in result.stdout


def test_a_killed_build_leaves_no_staging_folder_behind(tmp_path):
    import os
    import socket
    import subprocess
    import sys

    from gapbench.benchmark.datasets_build import build

    root = tmp_path / "data"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    host = socket.gethostname()
    names = {
        "killed": f".gapbench-staging-{host}-{dead}-0123456789ab",
        "older form": ".gapbench-staging-0123456789ab",
        "still writing": f".gapbench-staging-{host}-{os.getpid()}-0123456789ab",
        "other host": f".gapbench-staging-elsewhere.example-{dead}-0123456789ab",
    }
    for name in names.values():
        (root / name / "x").mkdir(parents=True)
    build("hopper", "random", size=50, data_dir=root, progress=False, workers=1)
    left = {p.name for p in root.glob(".gapbench-staging-*")}
    assert left == {names["still writing"], names["other host"]}
