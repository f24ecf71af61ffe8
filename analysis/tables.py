"""Per-cell and aggregate statistics of loaded results, and their Markdown / LaTeX tables.

Input is the tidy curve frame of :func:`gapbench.analysis.records.load_results`. The final
score of a run is the mean normalized score of its last ``k`` evaluations (default 3), which
damps the evaluation noise of a single checkpoint. Per-cell statistics are across seeds
(Student-t intervals, :func:`gapbench.analysis.stats.seed_stats`); aggregates across cells
follow Agarwal et al. (2021) with every cell treated as one task (:mod:`gapbench.analysis.stats`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from gapbench.analysis import stats
from gapbench.analysis.records import CELL

__all__ = [
    "METRIC_NAMES",
    "AggregateInput",
    "aggregate_estimates",
    "aggregate_scopes",
    "aggregate_table_latex",
    "aggregate_table_markdown",
    "cell_stats",
    "cell_table_latex",
    "cell_table_markdown",
    "final_metrics",
    "final_metrics_markdown",
    "final_scores",
    "format_cell",
    "label_order",
    "poi_estimates",
    "profile_estimates",
    "run_table",
    "run_table_markdown",
    "score_matrices",
]

KEY = ["label", *CELL]
METRIC_NAMES = {
    "iqm": "IQM",
    "mean": "Mean",
    "median": "Median",
    "optimality_gap": "Optimality gap",
}
#: Metrics for which lower is better.
LOWER_IS_BETTER = frozenset({"optimality_gap"})
FIRST_LABEL = "h2o"


#: Fewer runs (seeds x cells) per algorithm than this and the report warns that the
#: bootstrap CIs of the aggregates cannot be trusted (Agarwal et al. use 5-10 and more).
MIN_AGGREGATE_RUNS = 5


def label_order(labels: Iterable[str], order: Sequence[str] | None = None) -> list[str]:
    """The fixed order of colours, columns and legends: the labels named in ``order`` (the
    report's ``--order``) as given, then the others sorted with ``h2o`` first."""
    uniq = sorted(set(labels))
    rank = {lab: i for i, lab in enumerate(order or ())}
    return sorted(uniq, key=lambda s: (rank.get(s, len(rank)), s != FIRST_LABEL, s))


def format_gap(gap: str) -> str:
    return gap or "none"


def format_dataset(dataset: str) -> str:
    """A dataset id as is; a path to a Minari dataset folder by its id (the last three
    parts, e.g. the demo's results/demo/data/gapbench/halfcheetah/medium-v0)."""
    if not dataset:
        return "none"
    parts = dataset.rstrip("/").split("/")
    return "…/" + "/".join(parts[-3:]) if len(parts) > 3 else dataset


def varying(frame: pd.DataFrame, col: str) -> bool:
    return frame[col].nunique(dropna=False) > 1


def format_cell(row, show_task: bool = True, show_real: bool = False) -> str:
    """A short name for a cell: ``hopper | gravity=2.0 | hopper-medium [| real: ...]``."""
    parts = [row["task"]] if show_task else []
    parts += [format_gap(row["gap"]), format_dataset(row["dataset"])]
    if show_real:
        parts.append(f"real: {format_gap(row['real_gap']) if row['real_gap'] else 'nominal'}")
    return " | ".join(parts)


# --------------------------------------------------------------------------------------------
# per-run and per-cell statistics
# --------------------------------------------------------------------------------------------


def final_scores(curves: pd.DataFrame, last_k: int = 3) -> pd.DataFrame:
    """One row per run and cell: the mean normalized score of its last ``last_k`` evaluations.

    Returns columns ``label, task, gap, real_gap, dataset, seed, run_id,
    final_normalized_score, n_evals, last_step`` (runs with fewer evaluations than
    ``last_k`` average all of them).
    """
    if int(last_k) != last_k or last_k < 1:
        raise ValueError(f"last_k must be a positive integer, got {last_k}")
    cols = [*KEY, "seed", "run_id", "final_normalized_score", "n_evals", "last_step"]
    if curves.empty:
        return pd.DataFrame(columns=cols)
    ordered = curves.sort_values([*KEY, "seed", "step"])
    grouped = ordered.groupby([*KEY, "seed", "run_id"], sort=True, dropna=False)
    tail = grouped.tail(int(last_k)).groupby([*KEY, "seed", "run_id"], sort=True, dropna=False)
    # skipna=False: a NaN among the last evaluations must not be skipped silently; like an
    # inf it leaves the run without a final score (records.load_results warns about it)
    last = tail["normalized_score"]
    out = last.apply(lambda s: s.mean(skipna=False)).rename("final_normalized_score").to_frame()
    out["n_evals"] = grouped.size()
    out["last_step"] = grouped["step"].max()
    out = out.reset_index()
    out = out[np.isfinite(out["final_normalized_score"].astype(float))]
    return out[cols].reset_index(drop=True)


def run_table(runs: pd.DataFrame, curves: pd.DataFrame, last_k: int = 3) -> pd.DataFrame:
    """One row per complete run: its scores and what it cost (a run shared by several cells
    appears once).

    Returns columns ``run_id, label, task, gap, dataset, seed, final, best, best_step,
    last_step, wall_time_s, updates_per_s, resumed_at, git_commit``: ``final`` is the mean
    of the last ``last_k`` evaluations (as :func:`final_scores`), ``best`` the best single
    evaluation and ``best_step`` its update; ``updates_per_s`` is the run's own figure,
    which covers only the segment after its last resume (``resumed_at`` lists them).
    """
    cols = [
        "run_id", "label", "task", "gap", "dataset", "seed", "final", "best", "best_step",
        "last_step", "wall_time_s", "updates_per_s", "resumed_at", "git_commit",
    ]  # fmt: skip
    if curves.empty:
        return pd.DataFrame(columns=cols)
    per_run = curves.drop_duplicates(["run_id", "step"]).sort_values(["run_id", "step"])
    finals = final_scores(per_run, last_k).set_index("run_id")["final_normalized_score"]
    grouped = per_run.groupby("run_id")["normalized_score"]
    best_at = per_run.loc[grouped.idxmax(), ["run_id", "normalized_score", "step"]]
    best_at = best_at.set_index("run_id")
    ok = runs[runs["run_id"].isin(finals.index)].drop_duplicates("run_id").copy()
    ok["final"] = ok["run_id"].map(finals)
    ok["best"] = ok["run_id"].map(best_at["normalized_score"])
    ok["best_step"] = ok["run_id"].map(best_at["step"])
    ok["last_step"] = ok["run_id"].map(per_run.groupby("run_id")["step"].max())
    return _by_cell_and_label(ok[cols])


def _by_cell_and_label(frame: pd.DataFrame, order: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows grouped by cell, then labels in the report's order, then seeds."""
    rank = {lab: i for i, lab in enumerate(label_order(frame["label"], order))}
    keyed = frame.assign(_rank=frame["label"].map(rank))
    keyed = keyed.sort_values(["task", "gap", "dataset", "_rank", "seed"])
    return keyed.drop(columns="_rank").reset_index(drop=True)


def _steps(n: float) -> str:
    return f"{n / 1000:g}k" if n >= 1000 else f"{n:g}"


def _duration(seconds: float) -> str:
    if not np.isfinite(seconds):
        return "–"
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def _number(value: object) -> str:
    x = pd.to_numeric(value, errors="coerce")
    return f"{x:.1f}" if np.isfinite(x) else "–"


def run_table_markdown(table: pd.DataFrame, order: Sequence[str] | None = None) -> str:
    """:func:`run_table` as Markdown, grouped by cell, labels in ``order`` (as the other
    tables), and a last line with the total compute."""
    if table.empty:
        return "No complete run.\n"
    table = _by_cell_and_label(table, order)
    head = [
        "task", "sim gap", "dataset", "label", "seed", "final", "best (at update)", "updates",
        "wall time", "updates/s", "resumed at", "commit",
    ]  # fmt: skip
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join([":---"] * 5 + ["---:"] * 5 + [":---"] * 2) + "|",
    ]
    for r in table.itertuples(index=False):
        resumed = ", ".join(_steps(float(u)) for u in str(r.resumed_at or "").split(",") if u)
        lines.append(
            "| "
            + " | ".join(
                [
                    _md_escape(r.task),
                    _md_escape(format_gap(r.gap)),
                    _md_escape(format_dataset(r.dataset)),
                    _md_escape(r.label),
                    str(r.seed),
                    f"{r.final:.1f}",
                    f"{r.best:.1f} ({_steps(r.best_step)})",
                    _steps(r.last_step),
                    _duration(float(pd.to_numeric(r.wall_time_s, errors="coerce"))),
                    _number(r.updates_per_s),
                    resumed or "–",
                    f"`{str(r.git_commit or '–')[:7]}`",
                ]
            )
            + " |"
        )
    hours = float(pd.to_numeric(table["wall_time_s"], errors="coerce").sum()) / 3600
    lines += ["", f"{len(table)} runs, {hours:.1f} hours of wall time in all."]
    return "\n".join(lines) + "\n"


def final_metrics(
    curves: pd.DataFrame, label: str, metrics: Sequence[str], last_k: int = 3
) -> pd.DataFrame:
    """A label's logged training metrics at the end of its runs, like its final score: each
    run's mean over its last ``last_k`` evaluations, then mean and std over seeds per cell.

    Returns columns ``task, gap, real_gap, dataset, metric, mean, std, n`` (metrics the
    label never logged are left out).
    """
    cols = [*CELL, "metric", "mean", "std", "n"]
    sub = curves[curves["label"] == label]
    metrics = [m for m in metrics if m in sub.columns and sub[m].notna().any()]
    if sub.empty or not metrics:
        return pd.DataFrame(columns=cols)
    run_key = [*CELL, "seed", "run_id"]
    tail = sub.sort_values([*run_key, "step"]).groupby(run_key, dropna=False).tail(int(last_k))
    per_run = tail.groupby(run_key, dropna=False)[metrics].mean().reset_index()
    rows = []
    for cell, group in per_run.groupby(list(CELL), sort=True, dropna=False):
        for m in metrics:
            values = group[m].dropna().to_numpy(float)
            if values.size:
                std = float(values.std(ddof=1)) if values.size > 1 else float("nan")
                rows.append((*cell, m, float(values.mean()), std, int(values.size)))
    return pd.DataFrame(rows, columns=cols)


def _sig(x: float) -> str:
    """Three significant digits, plain for the magnitudes training metrics take."""
    return "–" if not np.isfinite(x) else f"{x:.3g}" if abs(x) < 1e5 else f"{x:.2e}"


def final_metrics_markdown(frame: pd.DataFrame) -> str:
    """:func:`final_metrics` as Markdown: one row per metric, one column per cell, entries
    'mean ± std' over seeds (a single seed without ± std, n where seeds differ)."""
    if frame.empty:
        return "No logged metric.\n"
    cells = frame[list(CELL)].drop_duplicates().sort_values(list(CELL))
    keys = [tuple(c) for c in cells.to_numpy().tolist()]
    counts = frame["n"].unique()

    def head(cell: tuple) -> str:
        task, gap, _real, dataset = cell
        return f"{task}, {format_gap(gap)}, {format_dataset(dataset)}"

    def entry(r) -> str:
        text = _sig(r["mean"]) if r["n"] == 1 else f"{_sig(r['mean'])} ± {_sig(r['std'])}"
        return text + (f" (n={r['n']})" if len(counts) > 1 else "")

    lines = [
        "| metric | " + " | ".join(_md_escape(head(c)) for c in keys) + " |",
        "|:---|" + "---:|" * len(keys),
    ]
    by_key = {(tuple(r[c] for c in CELL), r["metric"]): r for _, r in frame.iterrows()}
    for m in dict.fromkeys(frame["metric"]):
        cells_text = [entry(by_key[(c, m)]) if (c, m) in by_key else "–" for c in keys]
        lines.append(f"| {_md_escape(m)} | " + " | ".join(cells_text) + " |")
    return "\n".join(lines) + "\n"


def cell_stats(finals: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """Across-seed statistics of the final score per cell and label.

    Returns columns ``label, task, gap, real_gap, dataset, n, mean, std, sem, ci_low, ci_high``
    (Student-t interval at ``confidence``; see :func:`gapbench.analysis.stats.seed_stats`).
    """
    rows = []
    for key, group in finals.groupby(KEY, sort=True, dropna=False):
        s = stats.seed_stats(group["final_normalized_score"].to_numpy(float), confidence)
        rows.append({**dict(zip(KEY, key, strict=True)), **s})
    cols = [*KEY, "n", "mean", "std", "sem", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------------------------
# aggregates across cells (Agarwal et al. 2021)
# --------------------------------------------------------------------------------------------


@dataclass
class AggregateInput:
    """Score matrices ``(n_runs, n_cells)`` per label over the cells common to all labels.

    Attributes:
        scores: label -> matrix, columns in the order of ``cells``.
        cells: the common cells (tuples of task, gap, real_gap, dataset).
        all_cells: every cell of any label.
        notes: what was left out to make the matrices comparable and rectangular.
    """

    scores: dict[str, np.ndarray]
    cells: list[tuple[str, ...]]
    all_cells: list[tuple[str, ...]]
    notes: list[str] = field(default_factory=list)


def _cells_of(finals: pd.DataFrame, labels: Sequence[str]) -> dict[str, set[tuple]]:
    return {
        lab: set(map(tuple, finals.loc[finals["label"] == lab, list(CELL)].to_numpy().tolist()))
        for lab in labels
    }


def score_matrices(finals: pd.DataFrame, labels: Sequence[str] | None = None) -> AggregateInput:
    """Matrices of final scores for the interval estimates.

    The bootstrap compares algorithms on the same tasks, so only the cells that every label
    has are used. Within a label every cell must have the same number of runs: a cell with more
    seeds than the label's smallest cell keeps its lowest seeds (the stratified bootstrap
    resamples each cell independently, so seeds need not line up across cells).
    """
    labels = label_order(finals["label"]) if labels is None else list(labels)
    cells_of = _cells_of(finals, labels)
    all_cells = sorted(set().union(*cells_of.values())) if cells_of else []
    common = sorted(set.intersection(*cells_of.values())) if cells_of else []
    notes = []
    left_out: dict[tuple[int, int], list[str]] = {}  # (extra, of) -> labels, one note each
    for lab in labels:
        extra = len(cells_of[lab]) - len(common)
        if extra:
            left_out.setdefault((extra, len(cells_of[lab])), []).append(lab)
    for (extra, of), labs in left_out.items():
        notes.append(
            f"{', '.join(labs)}: {extra} of {'its' if len(labs) == 1 else 'their'} {of} cells "
            "are not shared by every algorithm and are left out of the aggregates"
        )
    scores: dict[str, np.ndarray] = {}
    if not common:
        return AggregateInput(scores, common, all_cells, notes)
    for lab in labels:
        sub = finals[finals["label"] == lab]
        columns = []
        for cell in common:
            mask = np.logical_and.reduce([sub[c] == v for c, v in zip(CELL, cell, strict=True)])
            columns.append(sub[mask].sort_values("seed")["final_normalized_score"].to_numpy(float))
        n = min(len(c) for c in columns)
        if any(len(c) != n for c in columns):
            notes.append(
                f"{lab}: cells have {min(len(c) for c in columns)} to "
                f"{max(len(c) for c in columns)} complete seeds; the aggregates use the first "
                f"{n} seeds of each cell"
            )
        scores[lab] = np.stack([c[:n] for c in columns], axis=1)
    few = {lab: x.size for lab, x in scores.items() if x.size < MIN_AGGREGATE_RUNS}
    if few:
        counts = ", ".join(f"{lab} {n}" for lab, n in few.items())
        notes.append(
            f"few runs behind the aggregates ({counts}; fewer than {MIN_AGGREGATE_RUNS} per "
            "algorithm): their bootstrap CIs cannot be trusted, however tight they look"
        )
    return AggregateInput(scores, common, all_cells, notes)


def aggregate_scopes(
    finals: pd.DataFrame, labels: Sequence[str] | None = None
) -> list[AggregateInput]:
    """The score matrices the aggregates are computed over: one scope, or one plus one per cell.

    Restricting every algorithm to the cells common to all of them lets a method run on part
    of the grid only (e.g. extra methods on one cell) drop the rest of the grid for everyone,
    and two such methods on different cells leave no cell at all. So when at least two
    algorithms cover every cell and others do not, the first scope is every cell with those
    algorithms, and then each cell is a scope of its own with every algorithm that ran it
    (its per-cell IQM and CIs; every cell, not only those a partial algorithm ran, so that
    no cell loses its table when a partial algorithm reaches the rest of the grid).
    Otherwise there is one scope, the common cells.
    """
    labels = label_order(finals["label"]) if labels is None else list(labels)
    cells_of = _cells_of(finals, labels)
    all_cells = set().union(*cells_of.values()) if cells_of else set()
    full = [lab for lab in labels if cells_of[lab] == all_cells]
    if len(full) < 2 or len(full) == len(labels):
        return [score_matrices(finals, labels)]
    first = score_matrices(finals, full)
    partial = ", ".join(f"{lab} ({len(cells_of[lab])})" for lab in labels if lab not in full)
    first.notes.insert(
        0,
        f"left out as they do not cover all {len(all_cells)} cells (cells they have): {partial}",
    )
    scopes = [first]
    row_cells = list(map(tuple, finals[list(CELL)].to_numpy().tolist()))
    for cell in sorted(all_cells):
        here = [lab for lab in labels if cell in cells_of[lab]]
        rows = [c == cell for c in row_cells]
        scopes.append(score_matrices(finals[rows], here))
    return scopes


def aggregate_estimates(
    agg: AggregateInput, reps: int = 10_000, confidence: float = 0.95, seed: int = 0
) -> pd.DataFrame:
    """Mean, median, IQM and optimality gap with stratified-bootstrap CIs per label."""
    if not agg.scores:
        return pd.DataFrame(columns=["algorithm", "metric", "point", "lower", "upper"])
    return stats.interval_estimates(agg.scores, reps=reps, confidence=confidence, seed=seed)


def poi_estimates(
    finals: pd.DataFrame,
    baseline: str,
    labels: Sequence[str],
    reps: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """P(baseline > X) with a bootstrap CI for every other label X, each over the cells the
    two share (a comparison needs only its own pair on the same cells).

    Returns columns ``baseline, other, point, lower, upper, cells``; a label sharing no cell
    with the baseline has no row.
    """
    rows = []
    for other in labels:
        if other == baseline or baseline not in labels:
            continue
        pair = score_matrices(finals, [baseline, other])
        if not pair.cells:
            continue
        point, lo, hi = stats.probability_of_improvement_ci(
            pair.scores[baseline], pair.scores[other], reps=reps, confidence=confidence, seed=seed
        )
        rows.append((baseline, other, point, lo, hi, len(pair.cells)))
    return pd.DataFrame(rows, columns=["baseline", "other", "point", "lower", "upper", "cells"])


def profile_taus(agg: AggregateInput, n: int = 101) -> np.ndarray:
    """Thresholds spanning the scores (worst to best, 5% margin each side): a fixed 0-100
    squeezes low-scoring curves against the left edge, where they hide each other."""
    if not agg.scores:
        return np.linspace(0.0, 100.0, n)
    low = min(float(x.min()) for x in agg.scores.values())
    top = max(float(x.max()) for x in agg.scores.values())
    margin = 0.05 * (top - low) or 1.0
    return np.linspace(low - margin, top + margin, n)


def profile_estimates(
    agg: AggregateInput,
    taus: np.ndarray | None = None,
    reps: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Performance profiles (fraction of runs with score > tau) with pointwise CIs.

    Returns columns ``label, tau, point, lower, upper``.
    """
    taus = profile_taus(agg) if taus is None else np.asarray(taus, dtype=float)
    pieces = []
    for lab, x in agg.scores.items():
        point, lo, hi = stats.performance_profile_ci(
            x, taus, reps=reps, confidence=confidence, seed=seed
        )
        pieces.append(
            pd.DataFrame({"label": lab, "tau": taus, "point": point, "lower": lo, "upper": hi})
        )
    if not pieces:
        return pd.DataFrame(columns=["label", "tau", "point", "lower", "upper"])
    return pd.concat(pieces, ignore_index=True)


# --------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------


def _cell_grid(
    cells: pd.DataFrame, decimals: int, order: Sequence[str] | None = None
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Rows = cells, columns = labels; entries 'mean ± std' text, the best-mean label per row.

    Returns (row frame with cell columns, labels, best label per row) and stores the entries
    in columns named after the labels.
    """
    labels = label_order(cells["label"], order)
    index_cols = ["task", "gap", "dataset"] + (["real_gap"] if varying(cells, "real_gap") else [])
    modal_n = int(cells["n"].mode().max()) if len(cells) else 0
    rows, best = [], []
    for key, group in cells.groupby(index_cols, sort=True, dropna=False):
        row = dict(zip(index_cols, key, strict=True))
        by_label = group.set_index("label")
        for lab in labels:
            if lab in by_label.index:
                r = by_label.loc[lab]
                n = int(r["n"])
                # one seed has no spread to show: "± 0.0" would read as a measured one
                text = f"{r['mean']:.{decimals}f}" + (
                    f" ± {r['std']:.{decimals}f}" if n > 1 else ""
                )
                if n != modal_n or n == 1:
                    text += f" (n={n})"
                row[lab] = text
            else:
                row[lab] = None
        # Exactly one best per row (the first label in the fixed order wins a tie).
        means = by_label["mean"].reindex(labels)
        best.append(str(means.idxmax()) if means.notna().any() else "")
        rows.append(row)
    return pd.DataFrame(rows), labels, best


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _header_names(index_cols: list[str]) -> list[str]:
    names = {"task": "task", "gap": "sim gap", "dataset": "dataset", "real_gap": "real gap"}
    return [names[c] for c in index_cols]


def _display(col: str, value: str) -> str:
    if col == "gap":
        return format_gap(value)
    if col == "real_gap":
        return value or "nominal"
    if col == "dataset":
        return format_dataset(value)
    return str(value)


def cell_table_markdown(
    cells: pd.DataFrame, decimals: int = 1, order: Sequence[str] | None = None
) -> str:
    """Per-cell final normalized score, mean ± std over seeds, best per row in bold."""
    grid, labels, best = _cell_grid(cells, decimals, order)
    index_cols = [c for c in grid.columns if c not in labels]
    head = [*_header_names(index_cols), *labels]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join([":---"] * len(index_cols) + ["---:"] * len(labels)) + "|",
    ]
    for (_, row), b in zip(grid.iterrows(), best, strict=True):
        entries = [_md_escape(_display(c, row[c])) for c in index_cols]
        for lab in labels:
            v = row[lab]
            entries.append("–" if pd.isna(v) else (f"**{v}**" if lab == b else v))
        lines.append("| " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


_TEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in str(text))


def _tex_value(text: str) -> str:
    return tex_escape(text).replace("±", r"$\pm$")


def cell_table_latex(
    cells: pd.DataFrame,
    decimals: int = 1,
    caption: str = "Final normalized score (D4RL, \\%), mean $\\pm$ std over seeds; "
    "best per row in bold.",
    label: str = "tab:cells",
    order: Sequence[str] | None = None,
) -> str:
    """The per-cell table as a booktabs LaTeX table (needs ``\\usepackage{booktabs}``)."""
    grid, labels, best = _cell_grid(cells, decimals, order)
    index_cols = [c for c in grid.columns if c not in labels]
    head = [*_header_names(index_cols), *labels]
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{" + "l" * len(index_cols) + "r" * len(labels) + "}",
        r"\toprule",
        " & ".join(tex_escape(h) for h in head) + r" \\",
        r"\midrule",
    ]
    for (_, row), b in zip(grid.iterrows(), best, strict=True):
        entries = [tex_escape(_display(c, row[c])) for c in index_cols]
        for lab in labels:
            v = row[lab]
            if pd.isna(v):
                entries.append("--")
            else:
                entries.append(rf"\textbf{{{_tex_value(v)}}}" if lab == b else _tex_value(v))
        lines.append(" & ".join(entries) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _aggregate_grid(
    agg: pd.DataFrame, decimals: int, order: Sequence[str] | None = None
) -> tuple[list[str], list[str], dict, dict]:
    labels = label_order(agg["algorithm"], order)
    metrics = [m for m in METRIC_NAMES if m in set(agg["metric"])]
    text, best = {}, {}
    for metric in metrics:
        sub = agg[agg["metric"] == metric].set_index("algorithm")
        for lab in labels:
            if lab in sub.index:
                r = sub.loc[lab]
                text[lab, metric] = (
                    f"{r['point']:.{decimals}f} [{r['lower']:.{decimals}f}, "
                    f"{r['upper']:.{decimals}f}]"
                )
        pts = sub["point"].reindex(labels)
        best[metric] = pts.idxmin() if metric in LOWER_IS_BETTER else pts.idxmax()
    return labels, metrics, text, best


def aggregate_table_markdown(
    agg: pd.DataFrame, decimals: int = 1, order: Sequence[str] | None = None
) -> str:
    """Aggregate metrics per algorithm: point [95% CI]; the best point per metric in bold."""
    labels, metrics, text, best = _aggregate_grid(agg, decimals, order)
    names = [METRIC_NAMES[m] + (" ↓" if m in LOWER_IS_BETTER else " ↑") for m in metrics]
    lines = [
        "| algorithm | " + " | ".join(names) + " |",
        "|:---|" + "|".join(["---:"] * len(metrics)) + "|",
    ]
    for lab in labels:
        cells = []
        for m in metrics:
            v = text.get((lab, m), "–")
            cells.append(f"**{v}**" if best.get(m) == lab else v)
        lines.append(f"| {_md_escape(lab)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def aggregate_table_latex(
    agg: pd.DataFrame,
    decimals: int = 1,
    caption: str = "Aggregate final normalized score (D4RL, \\%) across cells: point estimate "
    "[95\\% stratified-bootstrap CI]; best in bold (optimality gap: lower is better).",
    label: str = "tab:aggregates",
    order: Sequence[str] | None = None,
) -> str:
    """The aggregate table as a booktabs LaTeX table."""
    labels, metrics, text, best = _aggregate_grid(agg, decimals, order)
    arrows = {m: (r" $\downarrow$" if m in LOWER_IS_BETTER else r" $\uparrow$") for m in metrics}
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        rf"\caption{{{caption}}}",
        rf"\label{{{label}}}",
        r"\begin{tabular}{l" + "r" * len(metrics) + "}",
        r"\toprule",
        "algorithm & " + " & ".join(METRIC_NAMES[m] + arrows[m] for m in metrics) + r" \\",
        r"\midrule",
    ]
    for lab in labels:
        cells = []
        for m in metrics:
            v = tex_escape(text.get((lab, m), "--"))
            cells.append(rf"\textbf{{{v}}}" if best.get(m) == lab else v)
        lines.append(tex_escape(lab) + " & " + " & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"
