"""Loader, per-cell statistics, tables and the full report on hand-made run records."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gapbench.analysis import records, tables
from gapbench.analysis.records import CELL, load_results, missing_runs
from gapbench.analysis.report import build_report

REGIMES = {"h2o": "hybrid", "darc": "hybrid", "cql": "offline", "iql": "offline", "sac": "online"}
BASE = {"h2o": 62.0, "darc": 55.0, "cql": 50.0, "iql": 50.0, "sac": 40.0}
CURVE_HEADER = "step,env_steps,return_mean,return_std,normalized_score,wall_time_s"


def _spec(task, algo, seed, gap, dataset, regime, real_gap=""):
    # Resolved the way gapbench.benchmark.spec.RunSpec.resolved does: no gap for regimes that do not
    # use the simulator, no dataset for regimes that do not use one.
    gap = gap if regime in ("online", "hybrid") else ""
    dataset = dataset if regime in ("offline", "hybrid") else None
    spec = {
        "task": task,
        "algorithm": algo,
        "seed": seed,
        "gap": gap,
        "real_gap": real_gap,
        "dataset": dataset,
        "regime": regime,
        "hparams": {},
        "preset": "smoke",
        "budget": {
            "updates": 1000,
            "eval_every": 100,
            "eval_episodes": 2,
            "steps_per_update": 1,
            "collect_every": None,
            "warmup_steps": 0,
            "checkpoint_every": 1,
        },
        "sim_replay_capacity": None,
        "device": "cpu",
    }
    digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    return f"{task}-{algo}-s{seed}-{digest}", spec


def write_record(
    root,
    task,
    algo,
    seed,
    gap="",
    dataset=None,
    regime=None,
    status="ok",
    scores=None,
    real_gap="",
    extra_metrics=True,
):
    """Write one run record (spec.json, curve.csv, summary.json) like gapbench.benchmark.harness."""
    regime = regime or REGIMES[algo]
    run_id, spec = _spec(task, algo, seed, gap, dataset, regime, real_gap)
    path = Path(root) / run_id
    path.mkdir(parents=True)
    (path / "spec.json").write_text(
        json.dumps(
            {
                "run_id": run_id,
                "spec": spec,
                "config": {"batch_size": 256},
                "gapbench_version": "0.1.0",
                "git_commit": "abc",
                "python": "3.11",
            }
        )
    )
    if scores is None:
        rng = np.random.default_rng(zlib.crc32(repr((task, algo, seed, gap, dataset)).encode()))
        mag = float(gap.split(",")[0].split("=")[1]) if "=" in gap else 1.0
        final = BASE[algo] - (8 * (mag - 1) if regime in ("online", "hybrid") else 0)
        final += (5 if dataset and "expert" in dataset else 0) + rng.normal(0, 8)
        steps = np.arange(1, 11) * 100
        scores = final * (1 - np.exp(-steps / 300)) + rng.normal(0, 2, size=steps.size)
    scores = np.asarray(scores, dtype=float)
    steps = np.arange(1, scores.size + 1) * 100
    lines = [CURVE_HEADER + (",critic_loss" if extra_metrics else "")]
    for i, (step, s) in enumerate(zip(steps, scores, strict=True)):
        row = f"{step},{step + 100},{s * 30:.6f},1.0,{float(s)!r},{i + 1.5}"
        lines.append(row + (f",{1.0 / (i + 1)}" if extra_metrics else ""))
    (path / "curve.csv").write_text("\n".join(lines) + "\n")
    if status == "incomplete":
        return run_id
    summary = {"status": status, "run_id": run_id, "wall_time_s": 12.0}
    if status == "ok":
        summary.update(
            final_normalized_score=float(scores[-1]),
            best_normalized_score=float(scores.max()),
            updates_per_s=80.0,
        )
    else:
        summary["error"] = "FloatingPointError: non-finite critic loss"
    (path / "summary.json").write_text(json.dumps(summary))
    return run_id


GAPS = ("gravity=1.5", "gravity=2.0")
DATASETS = ("hopper-medium", "hopper-expert")


def make_matrix(
    root,
    task="hopper",
    algos=("h2o", "cql", "sac"),
    gaps=GAPS,
    datasets=DATASETS,
    seeds=(0, 1, 2),
    failed=(),
    incomplete=(),
):
    """3 algorithms x 2 gaps x 2 datasets x 3 seeds, as a matrix would write them.

    h2o (hybrid) has one run per (gap, dataset, seed); cql (offline) one per (dataset, seed),
    shared by both gaps; sac (online) one per (gap, seed), shared by both datasets. ``failed``
    and ``incomplete`` name (algo, gap, dataset, seed) slots written as failed / unfinished.
    """
    written = set()
    for algo in algos:
        for gap in gaps:
            for dataset in datasets:
                for seed in seeds:
                    regime = REGIMES[algo]
                    key = (
                        algo,
                        gap if regime != "offline" else "",
                        dataset if regime != "online" else None,
                        seed,
                    )
                    if key in written:
                        continue
                    written.add(key)
                    slot = (algo, gap, dataset, seed)
                    status = (
                        "failed" if slot in failed else "incomplete" if slot in incomplete else "ok"
                    )
                    write_record(root, task, algo, seed, gap, dataset, status=status)
    return root


@pytest.fixture(scope="module")
def fake_results(tmp_path_factory):
    root = tmp_path_factory.mktemp("results") / "matrix"
    make_matrix(
        root,
        failed={("h2o", "gravity=2.0", "hopper-expert", 2)},
        incomplete={("sac", "gravity=1.5", "hopper-medium", 1)},
    )
    return root


# ---------------------------------------------------------------------------------------------
# loader
# ---------------------------------------------------------------------------------------------


def test_loader_tidy_frame(fake_results, caplog):
    with caplog.at_level(logging.WARNING, logger="gapbench.analysis.records"):
        res = load_results(fake_results)
    # 12 h2o + 6 cql + 6 sac record folders, of which one failed and one is unfinished.
    assert res.runs["run_id"].nunique() == 24
    assert len(res.failed) == 1 and res.failed.iloc[0]["label"] == "h2o"
    assert "non-finite" in res.failed.iloc[0]["error"]
    assert res.incomplete["run_id"].nunique() == 1
    # The failure is logged, listing the run.
    assert any(res.failed.iloc[0]["run_id"] in r.getMessage() for r in caplog.records)
    curves = res.curves
    for col in (
        "run_id",
        "label",
        "task",
        "algorithm",
        "seed",
        "gap",
        "real_gap",
        "dataset",
        "regime",
        "preset",
        "hparams",
        "budget_updates",
        "step",
        "env_steps",
        "return_mean",
        "normalized_score",
        "wall_time_s",
        "critic_loss",
    ):
        assert col in curves.columns, col
    # Complete runs x cells they serve x 10 evaluations: h2o 11 runs x 1 cell, cql 6 x 2 gaps,
    # sac 5 x 2 datasets.
    assert len(curves) == (11 + 12 + 10) * 10
    assert curves.groupby(["label", *CELL, "seed"]).size().eq(10).all()
    assert set(curves["label"]) == {"h2o", "cql", "sac"}
    assert set(curves["gap"]) == set(GAPS)
    assert set(curves["dataset"]) == set(DATASETS)
    shared = curves[curves["label"] == "cql"]
    assert shared["shared"].all() and set(shared["gap"]) == set(GAPS)
    assert not curves[curves["label"] == "h2o"]["shared"].any()


def test_loader_real_layout_single_run(tmp_path):
    write_record(tmp_path / "a" / "b", "hopper", "sac", 0, "gravity=2.0", scores=[1.0, 2.0])
    res = load_results(tmp_path)
    assert len(res.curves) == 2
    assert res.curves["gap"].unique().tolist() == ["gravity=2.0"]
    assert res.curves["dataset"].unique().tolist() == [""]


def test_loader_no_records(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_results(tmp_path / "nope")


@pytest.mark.parametrize("shape", ["dict", "dict_runs", "list"])
def test_manifest_labels(tmp_path, shape):
    a = write_record(tmp_path, "hopper", "sac", 0, regime="oracle", scores=[10.0, 20.0])
    b = write_record(tmp_path, "hopper", "sac", 0, "gravity=2.0", scores=[5.0, 6.0])
    # As gapbench.benchmark.matrix writes it: the resolved spec's gap ("" for oracle) and dataset.
    entries = {
        a: {
            "label": "sac-oracle",
            "algorithm": "sac",
            "regime": "oracle",
            "task": "hopper",
            "gap": "",
            "real_gap": "",
            "dataset": None,
            "seed": 0,
            "matrix": "m",
        },
        b: {"label": "sac-sim", "task": "hopper", "gap": {"gravity": 2.0}, "seed": 0},
        "hopper-h2o-s0-missing": {
            "algorithm": "h2o",
            "regime": "hybrid",
            "task": "hopper",
            "gap": "gravity=2.0",
            "dataset": "hopper-medium",
            "seed": 0,
        },
    }
    data = {
        "dict": entries,
        "dict_runs": {"runs": entries, "matrices": {"m": {"runs": 3}}},
        "list": [{"run_id": k, **v} for k, v in entries.items()],
    }[shape]
    (tmp_path / "matrix.json").write_text(json.dumps(data))
    res = load_results(tmp_path)
    labels = dict(zip(res.runs["run_id"], res.runs["label"], strict=True))
    assert labels == {a: "sac-oracle", b: "sac-sim"}
    # The oracle run is shared into the sim-gap and dataset cells the other runs define
    # (the expected h2o run defines the dataset although it has no record).
    assert set(res.curves["gap"]) == {"gravity=2.0"}
    oracle = res.curves[res.curves["label"] == "sac-oracle"]
    assert set(oracle["dataset"]) == {"hopper-medium"} and oracle["shared"].all()
    missing = missing_runs(res)
    assert missing["label"].tolist() == ["h2o"]
    assert missing["status"].tolist() == ["not run"]
    assert missing["dataset"].tolist() == ["hopper-medium"]


def test_order_may_name_a_label_the_matrix_expects_but_has_not_run(tmp_path):
    done = write_record(tmp_path, "hopper", "sac", 0, "gravity=2.0", scores=[5.0, 6.0])
    entries = {
        done: {"label": "sac", "task": "hopper", "gap": "gravity=2.0", "seed": 0},
        "hopper-cql-s0-notyet": {"label": "cql", "algorithm": "cql", "regime": "offline",
                                 "task": "hopper", "dataset": "d", "seed": 0},
    }  # fmt: skip
    (tmp_path / "matrix.json").write_text(json.dumps({"runs": entries}))
    rep = build_report(tmp_path, tmp_path / "rep", reps=50, order=["cql", "sac"])
    assert rep.index.is_file()
    with pytest.raises(ValueError, match="order: h2o not among the algorithms; valid: cql, sac"):
        build_report(tmp_path, tmp_path / "rep2", reps=50, order=["h2o"])


def test_a_rebuilt_report_drops_an_earlier_reports_figures_and_keeps_other_files(tmp_path):
    write_record(tmp_path, "hopper", "sac", 0, "gravity=2.0", scores=[5.0, 6.0])
    figs = tmp_path / "rep" / "figures"
    figs.mkdir(parents=True)
    stale = [figs / f"aggregate_intervals_common.{ext}" for ext in ("png", "pdf")]
    mine = [figs / "my_sketch.png", tmp_path / "rep" / "notes.md"]
    for path in (*stale, *mine):
        path.write_text("earlier")
    build_report(tmp_path, tmp_path / "rep", reps=50)
    assert not any(p.exists() for p in stale)  # a name this report no longer writes
    assert all(p.read_text() == "earlier" for p in mine)
    assert (figs / "learning_curves_hopper.png").stat().st_size > 1000


def test_default_label_oracle(tmp_path):
    write_record(tmp_path, "hopper", "sac", 0, regime="oracle", scores=[10.0, 20.0])
    assert load_results(tmp_path).labels == ["sac-oracle"]


# ---------------------------------------------------------------------------------------------
# per-cell statistics
# ---------------------------------------------------------------------------------------------


def test_final_scores_mean_of_last_k(tmp_path):
    for seed, curve in enumerate([[0, 10, 20, 30, 40], [0, 0, 50, 60, 70], [5, 5, 5, 5, 5]]):
        write_record(tmp_path, "hopper", "sac", seed, "gravity=2.0", scores=curve)
    res = load_results(tmp_path)
    finals = tables.final_scores(res.curves, last_k=3)
    assert finals.sort_values("seed")["final_normalized_score"].tolist() == [30.0, 60.0, 5.0]
    assert tables.final_scores(res.curves, last_k=1)["final_normalized_score"].max() == 70.0
    # k larger than the curve: every evaluation is averaged.
    assert tables.final_scores(res.curves, last_k=50)["final_normalized_score"].min() == 5.0
    cell = tables.cell_stats(finals)
    assert len(cell) == 1
    row = cell.iloc[0]
    values = np.array([30.0, 60.0, 5.0])
    assert row["n"] == 3
    assert row["mean"] == pytest.approx(values.mean())
    assert row["std"] == pytest.approx(values.std(ddof=1))
    assert row["sem"] == pytest.approx(values.std(ddof=1) / math.sqrt(3))
    # t_{0.975, 2} = 4.302652729911275
    half = 4.302652729911275 * values.std(ddof=1) / math.sqrt(3)
    assert row["ci_low"] == pytest.approx(values.mean() - half)
    assert row["ci_high"] == pytest.approx(values.mean() + half)
    with pytest.raises(ValueError):
        tables.final_scores(res.curves, last_k=0)


def test_missing_cells_reported(fake_results):
    res = load_results(fake_results)
    missing = missing_runs(res)
    got = {(r.label, r.gap, r.dataset, r.seed, r.status) for r in missing.itertuples()}
    assert got == {
        ("h2o", "gravity=2.0", "hopper-expert", 2, "failed"),
        # The unfinished sac run is shared by both datasets.
        ("sac", "gravity=1.5", "hopper-medium", 1, "incomplete"),
        ("sac", "gravity=1.5", "hopper-expert", 1, "incomplete"),
    }


def test_cell_table_bold_best(fake_results):
    res = load_results(fake_results)
    stats_frame = tables.cell_stats(tables.final_scores(res.curves))
    md = tables.cell_table_markdown(stats_frame)
    tex = tables.cell_table_latex(stats_frame)
    body = [line for line in md.splitlines()[2:] if line.startswith("|")]
    assert len(body) == 4  # 2 gaps x 2 datasets
    for line in body:
        assert line.count("**") == 2
    for label in ("h2o", "cql", "sac"):
        assert label in md and label in tex
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    rows = [line for line in tex.splitlines() if line.rstrip().endswith("\\\\")][1:]
    assert len(rows) == 4
    for line in rows:
        assert line.count("\\textbf{") == 1


def test_cell_table_shows_a_dash_where_a_label_has_no_run_in_a_cell(tmp_path):
    # The reference matrix's shape: DARC ran on walker2d only, H2O on both tasks. pandas
    # stores the empty entry as NaN, not None (this table once failed on it).
    for task in ("hopper", "walker2d"):
        write_record(tmp_path, task, "h2o", 0, "gravity=2.0", "d", scores=[1.0, 2.0, 3.0])
    write_record(tmp_path, "walker2d", "darc", 0, "gravity=2.0", "d", scores=[4.0, 5.0, 6.0])
    cells = tables.cell_stats(tables.final_scores(load_results(tmp_path).curves))
    md = tables.cell_table_markdown(cells, order=["h2o", "darc"])
    assert "| hopper | gravity=2.0 | d | **2.0 (n=1)** | – |" in md  # one seed: no ± std
    assert "| walker2d | gravity=2.0 | d | 2.0 (n=1) | **5.0 (n=1)** |" in md
    tex = tables.cell_table_latex(cells, order=["h2o", "darc"])
    assert tex.count("--") == 1


def test_run_table_final_best_and_compute(tmp_path):
    run_id = write_record(tmp_path, "hopper", "sac", 0, "gravity=2.0", scores=[0, 10, 50, 20, 30])
    summary = tmp_path / run_id / "summary.json"
    data = json.loads(summary.read_text())
    data.update(resumed=[{"exact": True, "update": 200}], wall_time_s=5400.0)
    summary.write_text(json.dumps(data))
    write_record(tmp_path, "hopper", "h2o", 0, "gravity=2.0", "d", scores=[1.0, 2.0])
    res = load_results(tmp_path)
    table = tables.run_table(res.runs, res.curves)
    assert table["label"].tolist() == ["h2o", "sac"]  # h2o first, as in every table
    sac = table.set_index("label").loc["sac"]
    assert sac["final"] == pytest.approx(100 / 3)  # the last 3 evaluations
    assert (sac["best"], sac["best_step"], sac["last_step"]) == (50.0, 300, 500)
    assert sac["resumed_at"] == "200"
    md = tables.run_table_markdown(table)
    assert "| sac | 0 | 33.3 | 50.0 (300) | 500 | 1 h 30 min | 80.0 | 200 | `abc` |" in md
    assert "2 runs, 1.5 hours of wall time in all." in md  # 5400 s + 12 s


# ---------------------------------------------------------------------------------------------
# full report
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report_dir(fake_results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    build_report(fake_results, out, reps=200)
    return out


def test_report_files(report_dir):
    index = (report_dir / "index.md").read_text()
    expected_figs = {
        "learning_curves_hopper",
        "final_scores_hopper",
        "aggregate_intervals",
        "probability_of_improvement",
        "performance_profiles",
        "gap_heatmap_gravity",
        "diagnostics_hopper_critic_loss",  # the one training metric the fake runs log
    }
    figs = {p.stem for p in (report_dir / "figures").glob("*.pdf")}
    assert expected_figs <= figs, figs
    for stem in figs:
        for ext in ("pdf", "png"):
            f = report_dir / "figures" / f"{stem}.{ext}"
            assert f.stat().st_size > 1000, f
        page = (report_dir / "diagnostics.md").read_text() if "diagnostics_" in stem else index
        assert f"figures/{stem}.png" in page and f"figures/{stem}.pdf" in page
    assert "[diagnostics.md](diagnostics.md)" in index and "critic_loss" in index
    for name in (
        "cells.md",
        "cells.tex",
        "aggregates.md",
        "aggregates.tex",
        "cells.csv",
        "final_scores.csv",
        "aggregates.csv",
        "probability_of_improvement.csv",
        "missing.csv",
        "failed.csv",
        "runs.md",
    ):
        assert (report_dir / name).stat().st_size > 0, name
    # Every figure embedded, tables included, failures and missing runs listed.
    assert "non-finite critic loss" in index
    assert "incomplete" in index and "failed" in index
    assert "| h2o |" in index or "h2o" in index
    for label in ("h2o", "cql", "sac"):
        assert label in (report_dir / "cells.md").read_text()
        assert label in (report_dir / "cells.tex").read_text()
        assert label in (report_dir / "aggregates.tex").read_text()
    assert re.search(r"P\(h2o > ", index)
    assert "## Runs: scores and compute" in index and "hours of wall time in all" in index
    # the baseline's metrics at the end of training, in the index and the diagnostics page
    final_diag = (report_dir / "final_diagnostics.md").read_text()
    assert final_diag.startswith("| metric | hopper,") and "| critic_loss |" in final_diag
    assert final_diag in index and final_diag in (report_dir / "diagnostics.md").read_text()


def test_report_partial_and_empty_via_cli(tmp_path):
    from typer.testing import CliRunner

    from gapbench.benchmark.cli.report import app

    runner = CliRunner()
    write_record(tmp_path / "one", "hopper", "sac", 0, "gravity=2.0", scores=[1.0, 2.0, 4.0])
    out = tmp_path / "rep"
    # Options may follow the results folder, as in `gapbench report RESULTS --out DIR`.
    result = runner.invoke(app, [str(tmp_path / "one"), "--out", str(out), "--reps", "50"])
    assert result.exit_code == 0, result.output
    assert (out / "index.md").is_file()
    assert (out / "figures" / "learning_curves_hopper.png").is_file()
    index = (out / "index.md").read_text()
    assert "Skipped: needs at least two algorithms" in index
    assert index.startswith("# gapbench report\n")
    title = "Shipped records (produced by `gapbench matrix run x.yaml`)"
    result = runner.invoke(app, [str(tmp_path / "one"), "--out", str(out), "--title", title])
    assert result.exit_code == 0, result.output
    assert (out / "index.md").read_text().startswith(f"# {title}\n")
    write_record(tmp_path / "bad", "hopper", "sac", 0, "gravity=2.0", status="failed", scores=[1.0])
    result = runner.invoke(app, [str(tmp_path / "bad"), "--out", str(tmp_path / "rep2")])
    assert result.exit_code == 2
    assert "no complete" in result.output
    with pytest.raises(ValueError, match="no complete"):
        build_report(tmp_path / "bad", tmp_path / "rep3", reps=50)
    with pytest.raises(ValueError, match="baseline"):
        build_report(tmp_path / "one", tmp_path / "rep4", baseline="nope", reps=50)


def test_diagnostics_are_the_logged_metrics_and_plot_only_their_labels():
    from gapbench.analysis import plots

    base = {"task": "hopper", "gap": "", "real_gap": "", "dataset": "d", "seed": 0}
    rows = [
        {
            **base,
            "label": lab,
            "step": step,
            "normalized_score": 1.0,
            "env_steps": step,
            "budget_updates": 100,
            "penalty": 2.0 if lab == "h2o" else np.nan,
            "critic_loss": 0.5,
            "unused": np.nan,
        }  # fmt: skip
        for lab in ("h2o", "sac")
        for step in (100, 200)
    ]
    curves = pd.DataFrame(rows)
    assert plots.diagnostic_columns(curves) == ["critic_loss", "penalty"]
    palette = plots.label_palette(["h2o", "sac"])
    fig = plots.learning_curves(curves, "hopper", palette, y="penalty")
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["h2o"]
    assert fig.axes[0].get_ylabel() == "penalty"
    (line,) = fig.axes[0].get_lines()
    assert list(line.get_ydata()) == [2.0, 2.0]


def test_learning_curve_band_matches_seed_stats():
    from gapbench.analysis import plots, stats

    values = pd.Series([10.0, 12.0, 17.0, 11.0])
    s = stats.seed_stats(values.to_numpy(), 0.95)
    assert plots._t_band(values, 0.95) == pytest.approx((s["mean"], s["ci_low"], s["ci_high"]))
    assert plots._t_band(pd.Series([3.0]), 0.95) == (3.0, 3.0, 3.0)


def test_records_module_is_light():
    # Reading results must not need torch / MuJoCo.
    assert "torch" not in records.__dict__
    assert isinstance(records.CELL, tuple)
    assert isinstance(pd.DataFrame(), pd.DataFrame)


def test_a_dataset_given_as_a_folder_is_shown_by_its_id():
    from gapbench.analysis.tables import format_dataset

    assert format_dataset("gapbench/halfcheetah/medium-v0") == "gapbench/halfcheetah/medium-v0"
    path = "results/demo/data/gapbench/halfcheetah/medium-v0"
    assert format_dataset(path) == "…/gapbench/halfcheetah/medium-v0"
    assert format_dataset("") == "none"


def test_shipped_reference_records_tabulate():
    # The demo's last step reports the committed reference records; its tables must build
    # on whatever mix of cells and labels has finished so far.
    root = Path(__file__).resolve().parents[1] / "results" / "reference"
    if not any(root.glob("*/summary.json")):
        pytest.skip("no shipped reference record yet")
    res = load_results(root)
    finals = tables.final_scores(res.curves)
    cells = tables.cell_stats(finals)
    assert tables.cell_table_markdown(cells).count("\n") >= 2 + finals["task"].nunique()
    tables.cell_table_latex(cells)
    runs = tables.run_table(res.runs, res.curves)
    done = sorted(p.parent.name for p in root.glob("*/summary.json"))
    assert sorted(runs["run_id"]) == done
    assert f"{len(done)} runs," in tables.run_table_markdown(runs)


def _grid_finals(scores: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    """Final scores per (label, task) over seeds 0..n-1, one sim gap and dataset."""
    rows = []
    for (label, task), values in scores.items():
        for seed, score in enumerate(values):
            cell = {"task": task, "gap": "gravity=2.0", "real_gap": "", "dataset": "d"}
            rows.append({"label": label, **cell, "seed": seed, "final_normalized_score": score})
    return pd.DataFrame(rows)


def _reference_shape(bc: list[float]) -> pd.DataFrame:
    """The reference matrix's shape: h2o and sac on both tasks, bc on walker2d only."""
    return _grid_finals(
        {
            ("h2o", "hopper"): [10.0, 20.0],
            ("h2o", "walker2d"): [30.0, 40.0],
            ("sac", "hopper"): [15.0, 5.0],
            ("sac", "walker2d"): [35.0, 25.0],
            ("bc", "walker2d"): bc,
        }
    )


def test_methods_on_part_of_the_grid_do_not_shrink_the_others_aggregates():
    # The comparison of h2o and sac keeps both cells; bc joins them on the common one.
    finals = _reference_shape([50.0, 60.0])
    full, first, common = tables.aggregate_scopes(finals, ["h2o", "sac", "bc"])
    assert list(full.scores) == ["h2o", "sac"] and len(full.cells) == 2
    assert full.scores["h2o"].tolist() == [[10.0, 30.0], [20.0, 40.0]]
    assert "bc (1)" in full.notes[0]
    # every cell is a scope, also the one only the full methods ran
    assert list(first.scores) == ["h2o", "sac"] and first.cells[0][0] == "hopper"
    assert list(common.scores) == ["h2o", "sac", "bc"] and len(common.cells) == 1
    assert common.scores["bc"].tolist() == [[50.0], [60.0]]
    # cql on the other cell only: no cell is common to all four, yet each cell is a scope
    # with every method that ran it (before, this left the second scope empty and dropped)
    with_cql = pd.concat([finals, _grid_finals({("cql", "hopper"): [70.0, 80.0]})])
    full, hopper, walker = tables.aggregate_scopes(with_cql, ["h2o", "sac", "bc", "cql"])
    assert list(full.scores) == ["h2o", "sac"] and len(full.cells) == 2
    assert list(hopper.scores) == ["h2o", "sac", "cql"] and hopper.cells[0][0] == "hopper"
    assert hopper.scores["h2o"].tolist() == [[10.0], [20.0]]
    assert hopper.scores["cql"].tolist() == [[70.0], [80.0]]
    assert list(walker.scores) == ["h2o", "sac", "bc"] and walker.cells[0][0] == "walker2d"
    assert walker.scores["sac"].tolist() == [[35.0], [25.0]]
    # every label on every cell: one scope, nothing left out
    (only,) = tables.aggregate_scopes(finals[finals["label"] != "bc"])
    assert len(only.cells) == 2 and not any("left out" in n for n in only.notes)


def test_probability_of_improvement_is_over_the_cells_each_pair_shares():
    finals = _reference_shape([50.0, 35.0])
    poi = tables.poi_estimates(finals, "h2o", ["h2o", "sac", "bc"], reps=200).set_index("other")
    # hopper: h2o {10, 20} vs sac {15, 5}: 3 wins of 4; walker2d {30, 40} vs {35, 25}: 3 of 4
    assert poi.loc["sac", "point"] == pytest.approx(0.75) and poi.loc["sac", "cells"] == 2
    # walker2d only: {30, 40} vs {50, 35}: 40 > 35 is the one win of 4
    assert poi.loc["bc", "point"] == pytest.approx(0.25) and poi.loc["bc", "cells"] == 1
    assert poi.loc["bc", "lower"] <= 0.25 <= poi.loc["bc", "upper"]


def test_final_metrics_are_the_mean_of_the_last_k_evaluations_over_seeds(tmp_path):
    # write_record logs critic_loss = 1 / (i + 1) at evaluation i
    for seed in (0, 1):
        write_record(tmp_path, "hopper", "h2o", seed, "gravity=2.0", "d", scores=[1.0] * 4)
    write_record(tmp_path, "hopper", "sac", 0, "gravity=2.0", "d", scores=[1.0] * 4)
    curves = load_results(tmp_path).curves
    frame = tables.final_metrics(curves, "h2o", ["critic_loss", "never_logged"], last_k=2)
    (row,) = frame.itertuples(index=False)  # one cell, the metric h2o logged
    assert row.metric == "critic_loss" and row.n == 2
    assert row.mean == pytest.approx((1 / 3 + 1 / 4) / 2) and row.std == pytest.approx(0.0)
    md = tables.final_metrics_markdown(frame)
    assert "| metric | hopper, gravity=2.0, d |" in md and "| critic_loss | 0.292 ± 0 |" in md
    assert tables.final_metrics(curves, "iql", ["critic_loss"]).empty


def test_several_results_folders_make_one_report_and_a_record_counts_once(tmp_path):
    ref, ablation = tmp_path / "reference", tmp_path / "ablation"
    write_record(ref, "hopper", "h2o", 0, "gravity=2.0", "d", scores=[1.0, 2.0, 3.0])
    write_record(ablation, "hopper", "sac", 0, "gravity=2.0", "d", scores=[4.0, 5.0, 6.0])
    res = load_results([ref, ablation, tmp_path])  # tmp_path holds both again
    assert sorted(res.complete["label"]) == ["h2o", "sac"]
    assert res.where == f"{ref}, {ablation}, {tmp_path}"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_results([ref, tmp_path / "nowhere"])
    from typer.testing import CliRunner

    from gapbench.benchmark.cli.report import app

    out = tmp_path / "r"
    result = CliRunner().invoke(app, [str(ref), str(ablation), "--out", str(out), "--reps", "50"])
    assert result.exit_code == 0, result.output
    assert f"`{ref}, {ablation}`" in (out / "index.md").read_text()


def test_a_metric_logged_under_its_old_name_joins_the_current_one(tmp_path):
    # PAR logged q_real / q_sim until it took H2O's and VGDF's names: one metric, one figure
    def add_column(run_id: str, name: str, value: float) -> None:
        path = tmp_path / run_id / "curve.csv"
        head, *rows = path.read_text().splitlines()
        path.write_text("\n".join([f"{head},{name}", *(f"{r},{value}" for r in rows)]) + "\n")

    add_column(write_record(tmp_path, "hopper", "h2o", 0, "gravity=2.0", "d"), "q_real_mean", 7.0)
    add_column(write_record(tmp_path, "hopper", "darc", 0, "gravity=2.0", "d"), "q_real", 3.0)
    curves = load_results(tmp_path).curves
    assert "q_real" not in curves
    assert curves.groupby("algorithm")["q_real_mean"].unique().to_dict() == {
        "darc": [3.0],
        "h2o": [7.0],
    }
