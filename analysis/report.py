"""One report from a results folder: statistics, tables, figures and an ``index.md``.

:func:`build_report` loads every run record under the folder (see :mod:`gapbench.analysis.records`),
computes per-cell statistics over seeds and aggregates across cells with stratified-bootstrap
CIs (Agarwal et al., 2021), and writes into the output folder::

    index.md                          everything below, linked and embedded
    diagnostics.md                    the curves of every logged training metric
    figures/<name>.pdf, .png          learning_curves_<task>, final_scores,
                                      aggregate_intervals, probability_of_improvement,
                                      performance_profiles, gap_heatmap_<key>,
                                      diagnostics_<task>_<metric>
    cells.md, cells.tex, cells.csv    per-cell mean ± std (best per row in bold) and all stats
    final_diagnostics.md              the baseline's logged metrics at the end of training
    aggregates.md, .tex, .csv         mean / median / IQM / optimality gap with 95% CIs
    aggregates_cell<k>.md, .tex, .csv when some algorithms ran on part of the grid only: the
                                      same per cell such an algorithm ran, for every
                                      algorithm that ran it (aggregate_scopes.json: which)
    probability_of_improvement.csv    P(baseline > X) with 95% CIs
    performance_profiles.csv          fraction of runs above each threshold, with CIs
    final_scores.csv                  the final score of every run and cell
    runs.csv                          every record found, with its status
    failed.csv, missing.csv           runs that failed, and expected runs without a result

In the CSV files a nominal gap is spelled ``nominal`` and a run without a dataset ``none``
(an empty field would load as NaN, which pandas' ``groupby`` drops);
:func:`gapbench.analysis.records.read_csv` reads them back as ``""``.

Figures and tables that need what the results lack (a second algorithm for the probability of
improvement, a cell shared by the algorithms compared for the aggregates, a sweep of one gap
key for the heatmap) are skipped, and ``index.md`` says why.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from gapbench.analysis import plots, tables
from gapbench.analysis.records import CELL, Results, load_results, missing_runs, to_csv

__all__ = ["Report", "build_report", "choose_baseline"]

Progress = Callable[[str, int, int], None]


@dataclass
class Report:
    """What :func:`build_report` wrote (paths) and computed (frames)."""

    out: Path
    index: Path
    figures: dict[str, list[Path]] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    results: Results | None = None
    cells: pd.DataFrame | None = None
    aggregates: pd.DataFrame | None = None
    # (scope, its aggregate estimates): the first, then one per cell a partial method ran
    scopes: list[tuple[tables.AggregateInput, pd.DataFrame]] = field(default_factory=list)
    poi: pd.DataFrame | None = None
    missing: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    heatmaps: dict[str, str] = field(default_factory=dict)  # gap key -> figure name
    # task -> {metric: figure name} of the training-diagnostics page
    diagnostics: dict[str, dict[str, str]] = field(default_factory=dict)
    final_diagnostics: str | None = None  # the label of final_diagnostics.md, if written


def choose_baseline(
    labels: list[str], baseline: str | None, order: Sequence[str] | None = None
) -> str:
    """``baseline`` if given (it must be a label), else ``h2o`` if present, else the first
    (of ``order`` when given)."""
    ordered = tables.label_order(labels, order)
    if baseline is None:
        return ordered[0]
    if baseline not in ordered:
        raise ValueError(f"baseline {baseline!r} is not among the algorithms: {', '.join(ordered)}")
    return baseline


SCOPES = "aggregate_scopes.json"  # which algorithms and cells each aggregates file covers


def _scope_suffix(i: int) -> str:
    """aggregates.md for the first scope, aggregates_cell1.md ... for the per-cell ones."""
    return "" if i == 0 else f"_cell{i}"


def _cell_text(cell: tuple) -> str:
    """A cell (task, gap, real gap, dataset) as prose: its non-empty parts."""
    return ", ".join(str(part) for part in cell if str(part) not in ("", "nan", "None"))


def scope_index(scopes: list) -> list[dict]:
    """Which aggregates file covers which algorithms and cells (aggregate_scopes.json)."""
    return [
        {
            "file": f"aggregates{_scope_suffix(i)}.md",
            "algorithms": list(scope.scores),
            "cells": [list(map(str, cell)) for cell in scope.cells],
            "cells_text": [_cell_text(cell) for cell in scope.cells],
        }
        for i, (scope, _) in enumerate(scopes)
    ]


def _md(text: object) -> str:
    """A value for a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _md_table(frame: pd.DataFrame, columns: list[str], limit: int | None = None) -> str:
    shown = frame if limit is None else frame.head(limit)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join([":---"] * len(columns)) + "|"]
    for row in shown.itertuples(index=False):
        lines.append("| " + " | ".join(_md(getattr(row, c)) for c in columns) + " |")
    if limit is not None and len(frame) > limit:
        lines.append(f"\n… and {len(frame) - limit} more.")
    return "\n".join(lines) + "\n"


def _figure_md(name: str, paths: list[Path], out: Path, caption: str) -> str:
    pdf, png = (os.path.relpath(p, out) for p in paths)
    return f"![{caption}]({png})\n\n*{caption}* ([PDF]({pdf}), [PNG]({png}))\n"


def _display(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for col in ("gap", "dataset"):
        if col in frame:
            frame[col] = frame[col].map(lambda v: v or "none")
    if "real_gap" in frame:
        frame["real_gap"] = frame["real_gap"].map(lambda v: v or "nominal")
    return frame


FIGURE_PREFIXES = (
    "learning_curves_",
    "final_scores",
    "aggregate_intervals",
    "probability_of_improvement",
    "performance_profiles",
    "gap_heatmap_",
    "diagnostics_",
)


def _remove_stale_figures(fig_dir: Path) -> None:
    """Drop figures an earlier report wrote here (and this one may not), nothing else."""
    if not fig_dir.is_dir():
        return
    for path in fig_dir.iterdir():
        if path.suffix in (".pdf", ".png") and path.name.startswith(FIGURE_PREFIXES):
            path.unlink()


def build_report(
    results_dir: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    baseline: str | None = None,
    last_k: int = 3,
    reps: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
    progress: Progress | None = None,
    order: Sequence[str] | None = None,
    tau_range: tuple[float, float] | None = None,
    title: str = "gapbench report",
) -> Report:
    """Write the full report of ``results_dir`` into ``out_dir`` (see the module docstring).

    Args:
        results_dir: folder searched recursively for run records, or several such folders
            (one report of all their records, e.g. a reference matrix and an ablation).
        out_dir: report folder (created; existing files are overwritten).
        baseline: algorithm label for P(baseline > X); default ``h2o`` if present, else the
            first label in sorted order.
        last_k: the final score of a run is the mean of its last ``last_k`` evaluations.
        reps: stratified-bootstrap resamples for the aggregate intervals, the probability of
            improvement and the performance profiles.
        confidence: coverage of every interval.
        seed: bootstrap seed.
        progress: called as ``progress(description, done, total)`` before each step.
        order: algorithm labels in the order of colours, legends, table columns and rows;
            labels left out follow, sorted with ``h2o`` first (the default order).
        tau_range: (low, high) thresholds of the performance profiles; default: the range
            of the final scores with a 5% margin.
        title: the heading of ``index.md`` (e.g. to say where shipped records came from).

    Raises:
        FileNotFoundError: no run records under ``results_dir``.
        ValueError: no complete, successful run, ``baseline`` or a name in ``order`` is not
            a label, or ``tau_range`` is not two finite numbers, low < high.
    """
    if tau_range is not None:
        low, high = tau_range
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f"tau range {low:g},{high:g}: valid: two finite numbers, low < high")
    out = Path(out_dir)
    fig_dir = out / "figures"
    step = [0]
    total = [4]

    def tick(what: str) -> None:
        if progress is not None:
            progress(what, step[0], total[0])
        step[0] += 1

    tick("loading run records")
    results = load_results(results_dir)
    if results.curves.empty:
        raise ValueError(
            f"no complete successful runs under {results.where}: {len(results.failed)} failed or "
            f"pruned, {results.incomplete['run_id'].nunique()} incomplete (no summary.json)"
        )
    # a label the matrix expects but has no run of yet may be named too (a matrix in progress)
    expected = results.manifest["label"] if results.manifest is not None else []
    known = tables.label_order([*results.runs["label"], *expected])
    unknown = [name for name in order or () if name not in known]
    if unknown:  # before anything is written
        raise ValueError(
            f"order: {', '.join(unknown)} not among the algorithms; valid: {', '.join(known)}"
        )
    rep = Report(out=out, index=out / "index.md", results=results)
    out.mkdir(parents=True, exist_ok=True)
    _remove_stale_figures(fig_dir)

    def write(name: str, text: str) -> Path:
        path = out / name
        path.write_text(text)
        rep.files.append(path)
        return path

    def write_csv(name: str, frame: pd.DataFrame) -> Path:
        path = out / name
        to_csv(frame, path)
        rep.files.append(path)
        return path

    def figure(name: str, fig) -> list[Path]:
        paths = plots.save_figure(fig, fig_dir, name)
        rep.figures[name] = paths
        return paths

    curves = results.curves
    finals = tables.final_scores(curves, last_k)
    cells = tables.cell_stats(finals, confidence)
    rep.cells = cells
    labels = tables.label_order(results.runs["label"], order)
    palette = plots.label_palette(labels, order)
    complete_labels = tables.label_order(finals["label"], order)
    base = choose_baseline(complete_labels, baseline, order)
    tasks = sorted(curves["task"].unique())
    sweeps = plots.gap_sweeps(cells)
    diagnostics = plots.diagnostic_columns(curves)
    total[0] = 6 + (3 if diagnostics else 2) * len(tasks) + len(sweeps)

    tick("per-cell statistics")
    write_csv("final_scores.csv", finals)
    write_csv("cells.csv", cells)
    write_csv("runs.csv", results.runs)
    failed = results.failed.drop_duplicates("run_id")
    write_csv("failed.csv", failed[["run_id", "label", *CELL, "seed", "status", "error", "path"]])
    missing = missing_runs(results)
    rep.missing = missing
    write_csv("missing.csv", missing)
    write(
        "runs.md", tables.run_table_markdown(tables.run_table(results.runs, curves, last_k), order)
    )
    write("cells.md", tables.cell_table_markdown(cells, order=order))
    write("cells.tex", tables.cell_table_latex(cells, order=order))

    tick("aggregate metrics (stratified bootstrap)")
    scopes = tables.aggregate_scopes(finals, complete_labels)
    agg_in = scopes[0]
    for old in [*out.glob("aggregates_c*.*"), out / SCOPES]:  # an earlier report's scopes
        old.unlink(missing_ok=True)
    for i, scope in enumerate(scopes):
        rep.notes += scope.notes
        suffix = _scope_suffix(i)
        aggregates = tables.aggregate_estimates(scope, reps, confidence, seed)
        rep.scopes.append((scope, aggregates))
        write_csv(f"aggregates{suffix}.csv", aggregates)
        if not aggregates.empty:
            write(
                f"aggregates{suffix}.md", tables.aggregate_table_markdown(aggregates, order=order)
            )
            write(f"aggregates{suffix}.tex", tables.aggregate_table_latex(aggregates, order=order))
            figure(
                f"aggregate_intervals{suffix}",
                plots.aggregate_interval_plot(aggregates, palette, len(scope.cells)),
            )
    rep.aggregates = rep.scopes[0][1]
    if len(scopes) > 1:
        write(SCOPES, json.dumps(scope_index(rep.scopes), indent=2) + "\n")

    tick("probability of improvement")
    poi = tables.poi_estimates(finals, base, complete_labels, reps, confidence, seed)
    rep.poi = poi
    write_csv("probability_of_improvement.csv", poi)
    if not poi.empty:
        figure("probability_of_improvement", plots.poi_plot(poi, palette))

    tick("performance profiles")
    taus = None if tau_range is None else np.linspace(*tau_range, 101)
    profiles = tables.profile_estimates(agg_in, taus, reps=reps, confidence=confidence, seed=seed)
    write_csv("performance_profiles.csv", profiles)
    if not profiles.empty:
        figure("performance_profiles", plots.performance_profile_plot(profiles, palette))

    for task in tasks:
        tick(f"learning curves: {task}")
        figure(f"learning_curves_{task}", plots.learning_curves(curves, task, palette, confidence))

    for task in tasks:
        tick(f"final scores per cell: {task}")
        figure(f"final_scores_{task}", plots.final_score_plot(cells, task, palette, confidence))

    for key, magnitudes in sweeps.items():
        tick(f"gap sweep heatmap: {key}")
        name = "gap_heatmap_" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key)
        figure(name, plots.gap_heatmap(cells, key, magnitudes, palette))
        rep.heatmaps[key] = name

    for task in tasks if diagnostics else []:
        tick(f"training diagnostics: {task}")
        for metric in diagnostics:
            if curves.loc[curves["task"] == task, metric].notna().any():
                name = f"diagnostics_{task}_{metric}"
                figure(name, plots.learning_curves(curves, task, palette, confidence, y=metric))
                rep.diagnostics.setdefault(task, {})[metric] = name
    # the baseline's metrics at the end of training, as a table (H2O: w, u, omega, penalty,
    # real vs sim Q); columns in the order the algorithm logs them
    logged = [c for c in curves.columns if c in diagnostics]
    final_diag = tables.final_metrics(curves, base, logged, last_k)
    if final_diag.empty:
        (out / "final_diagnostics.md").unlink(missing_ok=True)
    else:
        write("final_diagnostics.md", tables.final_metrics_markdown(final_diag))
        rep.final_diagnostics = base
    if rep.diagnostics:
        write("diagnostics.md", _diagnostics_page(rep, confidence, last_k))
    else:  # an earlier report's page would link figures that were just removed
        (out / "diagnostics.md").unlink(missing_ok=True)

    tick("index.md")
    write(
        "index.md",
        _index(rep, results, finals, agg_in, base, sweeps, last_k, reps, confidence, order, title),
    )
    if progress is not None:
        progress("done", total[0], total[0])
    return rep


def _final_diagnostics_md(rep: Report, last_k: int) -> list[str]:
    if rep.final_diagnostics is None:
        return []
    return [
        f"**{rep.final_diagnostics}** at the end of training: each metric's mean over a run's "
        f"last {last_k} evaluations (as the final score), mean ± std over seeds "
        "([final_diagnostics.md](final_diagnostics.md)).",
        "",
        (rep.out / "final_diagnostics.md").read_text(),
    ]


def _diagnostics_page(rep: Report, confidence: float, last_k: int) -> str:
    """Every training metric the runs logged, per task, as curves over seeds."""
    lines = [
        "# Training diagnostics",
        "",
        *_final_diagnostics_md(rep, last_k),
        "The metrics each algorithm logged next to its score at every evaluation (mean over "
        f"the updates since the previous one), mean and {confidence:.0%} CI over seeds; "
        "rows: sim gap, columns: dataset. An algorithm appears only in the metrics it logs. "
        "[Back to the report](index.md).",
        "",
    ]
    for task, figures in rep.diagnostics.items():
        lines += [f"## {task}", "", " · ".join(f"[{m}](#{task}-{m})" for m in figures), ""]
        for metric, name in figures.items():
            lines += [
                f'<a id="{task}-{metric}"></a>',
                "",
                f"### {metric}",
                "",
                _figure_md(name, rep.figures[name], rep.out, f"{task}: {metric}"),
                "",
            ]
    return "\n".join(lines)


def _index(
    rep: Report,
    results: Results,
    finals: pd.DataFrame,
    agg_in,
    baseline: str,
    sweeps: dict,
    last_k: int,
    reps: int,
    confidence: float,
    order: Sequence[str] | None = None,
    title: str = "gapbench report",
) -> str:
    out = rep.out
    runs = results.runs
    complete = runs[runs["status"] == "ok"]
    n_cells = finals[list(CELL)].drop_duplicates().shape[0]
    pct = f"{confidence:.0%}"
    lines = [
        f"# {title}",
        "",
        f"Results: `{results.where}` — generated {_dt.datetime.now():%Y-%m-%d %H:%M}.",
        "",
        "## Summary",
        "",
        f"- **{complete['run_id'].nunique()} complete runs** of "
        f"{len(tables.label_order(finals['label']))} algorithms "
        f"({', '.join(tables.label_order(finals['label'], order))}) on "
        f"{finals['task'].nunique()} task(s), {n_cells} cell(s) (task × sim gap × real gap × "
        "dataset); "
        f"{results.failed['run_id'].nunique()} failed or pruned; "
        f"{results.incomplete['run_id'].nunique()} incomplete (no summary.json, ignored).",
        f"- Final normalized score of a run (`final_normalized_score`): the mean normalized "
        f"score (D4RL, %) of its last {last_k} evaluations"
        + (" (summary.json uses the last 3)" if last_k != 3 else "")
        + ". Per cell: mean ± std over seeds, with a "
        f"{pct} Student-t interval (cells.csv).",
        f"- Aggregates: stratified bootstrap with {reps} resamples, {pct} percentile intervals "
        "(Agarwal et al., 2021), every cell counting as one task.",
    ]
    if runs["shared"].any():
        shared = sorted(runs.loc[runs["shared"], "label"].unique())
        lines.append(
            f"- Runs of {', '.join(shared)} do not depend on the sim gap (offline / oracle) or "
            "on the dataset (online / oracle); each such run is shared by every cell of its "
            "task that differs only in that axis."
        )
    if results.manifest is not None:
        lines.append(
            f"- Labels and expected runs come from the matrix manifest "
            f"({results.manifest['run_id'].nunique()} runs filling {len(results.manifest)} "
            "cell × algorithm × seed slots)."
        )
    for note in results.warnings:
        if "did not succeed" not in note:
            lines.append(f"- Warning: {_md(note)}")
    lines.append("")

    # -- failures and gaps -------------------------------------------------------------------
    failed = results.failed.drop_duplicates("run_id")
    lines += ["## Failed runs", ""]
    if failed.empty:
        lines += ["None.", ""]
    else:
        f = _display(failed).assign(
            error=failed["error"].map(lambda e: (str(e)[:300] + "…") if len(str(e)) > 300 else e)
        )
        lines += [
            f"{len(failed)} run(s) ended without success (failed.csv):",
            "",
            _md_table(f, ["run_id", "label", "task", "gap", "dataset", "seed", "status", "error"]),
        ]
    missing = rep.missing
    lines += ["## Missing runs", ""]
    if results.manifest is not None:
        basis = "the runs listed in matrix.json"
    else:
        basis = (
            "the full cross product of observed cells × algorithms × seeds (no matrix.json found)"
        )
    if missing is None or missing.empty:
        lines += [f"None: every expected run ({basis}) has a complete record.", ""]
    else:
        cols = ["label", "task", "gap", "dataset", "seed", "status", "run_id"]
        if tables.varying(results.runs, "real_gap"):
            cols.insert(3, "real_gap")
        lines += [
            f"Expected: one result per cell × algorithm × seed from {basis}; {len(missing)} "
            "of these slots have no complete successful run (missing.csv; a run shared by "
            "several cells fills one slot in each). Status: `failed`/`pruned` (see above), "
            "`incomplete` (started, no summary.json) or `not run`.",
            "",
            _md_table(_display(missing), cols, limit=200),
        ]

    # -- per-cell ---------------------------------------------------------------------------
    lines += [
        "## Final normalized score per cell",
        "",
        f"Final normalized score (D4RL, %), mean ± std over seeds (n = seeds when not the "
        f"usual, and for a single seed, shown without ± std); best mean per row in **bold**. "
        f"LaTeX: [cells.tex](cells.tex); all statistics with {pct} CIs: [cells.csv](cells.csv).",
        "",
        (out / "cells.md").read_text(),
    ]
    for name, paths in rep.figures.items():
        if name.startswith("final_scores_"):
            task = name.removeprefix("final_scores_")
            lines += [
                _figure_md(
                    name,
                    paths,
                    out,
                    f"{task}: final score per cell, mean and "
                    f"{pct} CI over seeds; rows: sim gap, columns: dataset.",
                ),
                "",
            ]

    lines += ["## Learning curves", ""]
    for name, paths in rep.figures.items():
        if name.startswith("learning_curves_"):
            task = name.removeprefix("learning_curves_")
            lines += [
                f"### {task}",
                "",
                _figure_md(
                    name,
                    paths,
                    out,
                    f"{task}: normalized score vs gradient updates, mean and {pct} CI over seeds; "
                    "rows: sim gap, columns: dataset.",
                ),
                "",
            ]

    diag = sorted({metric for figures in rep.diagnostics.values() for metric in figures})
    if diag:
        lines += [
            f"Training diagnostics — the curves of the {len(diag)} metrics the algorithms "
            f"logged ({', '.join(diag)}): [diagnostics.md](diagnostics.md).",
            "",
            *_final_diagnostics_md(rep, last_k),
        ]

    # -- aggregates ------------------------------------------------------------------------
    lines += ["## Aggregate metrics", ""]
    if rep.aggregates is None or rep.aggregates.empty:
        lines += [
            "Skipped: no cell is shared by every algorithm, so their aggregates would not "
            "be comparable.",
            "",
        ]
    n_all = len(agg_in.all_cells)
    for i, (scope, aggregates) in enumerate(rep.scopes):
        if aggregates.empty:
            continue
        suffix = _scope_suffix(i)
        n = len(scope.cells)
        if n == n_all:
            where = f"all {n_all} cells"
        elif i > 0:
            where = f"the cell {_cell_text(scope.cells[0])}"
        else:
            where = (
                f"the {n} cell{'s' if n != 1 else ''} common to every algorithm (of {n_all} "
                "cells in all; the interval estimates need the same tasks for every algorithm)"
            )
        who = "every algorithm" if len(rep.scopes) == 1 else ", ".join(scope.scores)
        lines += [
            f"Mean, median (of per-cell means, as rliable), IQM and optimality gap (shortfall "
            f"below 100) of the final scores of {who} over {where}; point estimate "
            f"[{pct} CI]. LaTeX: [aggregates{suffix}.tex](aggregates{suffix}.tex).",
            "",
        ]
        lines += [f"- {_md(note)}" for note in scope.notes] + ([""] if scope.notes else [])
        lines += [(out / f"aggregates{suffix}.md").read_text(), ""]
        lines += [
            _figure_md(
                f"aggregate_intervals{suffix}",
                rep.figures[f"aggregate_intervals{suffix}"],
                out,
                f"Aggregate metrics with {pct} stratified-bootstrap CIs over {n} cell(s).",
            ),
            "",
        ]

    lines += ["## Probability of improvement", ""]
    if rep.poi is None or rep.poi.empty:
        lines += ["Skipped: needs at least two algorithms with shared cells.", ""]
    else:
        p = rep.poi.assign(
            comparison=[
                f"P({b} > {o})" for b, o in zip(rep.poi["baseline"], rep.poi["other"], strict=True)
            ],
            estimate=[
                f"{x:.2f} [{lo:.2f}, {hi:.2f}]"
                for x, lo, hi in zip(
                    rep.poi["point"], rep.poi["lower"], rep.poi["upper"], strict=True
                )
            ],
        )
        lines += [
            f"Probability that a run of the baseline **{baseline}** beats a run of X on a "
            f"random cell the two share (ties count ½), with {pct} bootstrap CIs; above 0.5 "
            f"favours {baseline}.",
            "",
            _md_table(p, ["comparison", "estimate", "cells"]),
            _figure_md(
                "probability_of_improvement",
                rep.figures["probability_of_improvement"],
                out,
                f"P({baseline} > X) with {pct} CIs.",
            ),
            "",
        ]

    lines += ["## Performance profiles", ""]
    if "performance_profiles" in rep.figures:
        lines += [
            _figure_md(
                "performance_profiles",
                rep.figures["performance_profiles"],
                out,
                f"Fraction of runs with final score above τ, {pct} CI bands "
                f"(performance_profiles.csv), over the cells of the first aggregate "
                f"({len(agg_in.cells)}).",
            ),
            "",
        ]
    else:
        lines += ["Skipped: no cell is shared by every algorithm.", ""]

    lines += ["## Gap-magnitude sweeps", ""]
    if not sweeps:
        lines += ["No sweep: the results do not vary the magnitude of a single gap key.", ""]
    for key, magnitudes in sweeps.items():
        name = rep.heatmaps[key]
        lines += [
            _figure_md(
                name,
                rep.figures[name],
                out,
                f"Mean final score vs {key} scale ({', '.join(magnitudes)}).",
            ),
            "",
        ]

    lines += [
        "## Runs: scores and compute",
        "",
        f"Every complete run: final score (mean of its last {last_k} evaluations), best "
        "single evaluation and the update it came at, wall time and updates/s from its "
        "summary (after a resume, updates/s covers the last segment only), the updates it "
        "was resumed at, and the commit its record names (runs.md).",
        "",
        (out / "runs.md").read_text(),
    ]
    lines += ["## Files", ""]
    lines += [
        f"- [{os.path.relpath(p, out)}]({os.path.relpath(p, out)})"
        for p in rep.files
        if p.name != "index.md"
    ]
    return "\n".join(lines) + "\n"
