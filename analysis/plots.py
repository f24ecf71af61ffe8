"""Paper-ready figures of gapbench results (matplotlib / seaborn, Agg backend).

Every function returns a :class:`matplotlib.figure.Figure`; :func:`save_figure` writes it as
vector PDF and PNG (200 dpi). Figures are sized for a paper column (3.4 in per panel) or a full
page (7 in), use fonts of at least 8 pt, label every axis with its unit, lay out with
``constrained_layout`` and put legends outside the axes.

Colours come from :func:`label_palette`: seaborn's colour-blind-safe "colorblind" palette
assigned in the fixed order of :func:`gapbench.analysis.tables.label_order` (sorted labels, ``h2o``
first), so an algorithm keeps its colour in every figure of a report. Build the palette once
from all labels and pass it to every plot.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import Formatter, MaxNLocator  # noqa: E402

from gapbench.analysis import stats  # noqa: E402
from gapbench.analysis.records import CURVE_COLUMNS, RUN_COLUMNS  # noqa: E402
from gapbench.analysis.tables import (  # noqa: E402
    METRIC_NAMES,
    format_dataset,
    format_gap,
    label_order,
    varying,
)

__all__ = [
    "PAPER_RC",
    "SCORE_LABEL",
    "aggregate_interval_plot",
    "diagnostic_columns",
    "final_score_plot",
    "gap_heatmap",
    "gap_sweeps",
    "label_palette",
    "learning_curves",
    "performance_profile_plot",
    "poi_plot",
    "save_figure",
]

COLUMN_W = 3.4  # inches: one column of a two-column paper, and one panel
PAGE_W = 7.0  # inches: the full text width
SCORE_LABEL = "normalized score (D4RL, %)"
FINAL_LABEL = "final normalized score (D4RL, %)"
STEP_LABEL = "gradient updates"
PNG_DPI = 200

PAPER_RC = {
    "font.size": 8,
    "axes.titlesize": 8.5,
    "axes.labelsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "figure.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.4,
    "pdf.fonttype": 42,  # TrueType in the PDF: editable text, accepted by publishers
    "ps.fonttype": 42,
    "savefig.dpi": PNG_DPI,
}


def label_palette(
    labels: Sequence[str], order: Sequence[str] | None = None
) -> dict[str, tuple[float, float, float]]:
    """Colour per label: seaborn "colorblind" in :func:`label_order` (``order`` first, then
    ``h2o``, then sorted). Every figure draws and lists its labels in the palette's order."""
    order = label_order(labels, order)
    colors = sns.color_palette("colorblind", 10)
    return {lab: colors[i % len(colors)] for i, lab in enumerate(order)}


def _linestyle(palette: Mapping[str, object], label: str) -> str:
    """Beyond 10 labels colours repeat: vary the dash pattern too."""
    order = list(palette)
    i = order.index(label) if label in order else 0
    return ["-", "--", ":", "-."][(i // 10) % 4]


def _color(palette: Mapping[str, tuple], label: str):
    return palette.get(label, (0.3, 0.3, 0.3))


class _StepFormatter(Formatter):
    """Step counts in one unit per axis, chosen from its range: 250k, 500k, ... or 0.5M, 1M."""

    def __call__(self, x: float, pos=None) -> str:
        top = max(abs(v) for v in self.axis.get_view_interval()) if self.axis else abs(x)
        if top >= 1e6:
            return f"{x / 1e6:g}M"
        if top >= 1e4:
            return f"{x / 1e3:g}k"
        return f"{x:g}"


def _legend_below(
    fig: Figure, palette: Mapping[str, tuple], labels: Sequence[str], kind: str = "line"
) -> None:
    """One legend for the whole figure, outside the axes, under them."""
    from matplotlib.lines import Line2D

    order = [lab for lab in palette if lab in set(labels)]
    if kind == "line":
        handles = [
            Line2D([], [], color=_color(palette, lab), ls=_linestyle(palette, lab), lw=1.6)
            for lab in order
        ]
    else:
        handles = [
            Line2D([], [], color=_color(palette, lab), marker="o", ls="-", lw=1.2) for lab in order
        ]
    # As many columns as fit the width (~1.1 in each); matplotlib fills column by column, so
    # reorder to read row by row in palette order.
    ncol = max(1, min(len(order), int(fig.get_figwidth() / 1.1)))
    sizes = [len(part) for part in np.array_split(np.arange(len(order)), ncol)]
    grid = {}
    k = 0
    for r in range(max(sizes, default=0)):
        for c in range(ncol):
            if r < sizes[c]:
                grid[c, r] = k
                k += 1
    idx = [grid[c, r] for c in range(ncol) for r in range(sizes[c])]
    fig.legend(
        [handles[i] for i in idx],
        [order[i] for i in idx],
        loc="outside lower center",
        ncol=ncol,
        frameon=False,
        handlelength=1.8,
        columnspacing=1.2,
    )


def save_figure(fig: Figure, folder: str | Path, stem: str) -> list[Path]:
    """Write ``folder/stem.pdf`` (vector) and ``folder/stem.png`` (200 dpi); close ``fig``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}.pdf", folder / f"{stem}.png"]
    with plt.rc_context(PAPER_RC):
        fig.savefig(paths[0])
        fig.savefig(paths[1], dpi=PNG_DPI)
    plt.close(fig)
    return paths


@functools.lru_cache(maxsize=256)
def _t_quantile(confidence: float, df: int) -> float:
    return stats.student_t_ppf(0.5 + confidence / 2.0, df)


def _t_band(values: pd.Series, confidence: float) -> tuple[float, float, float]:
    """Mean and Student-t interval over seeds, as :func:`gapbench.analysis.stats.seed_stats` (whose
    quantile is cached here: a learning curve asks for it at every evaluation step)."""
    arr = values.to_numpy(float)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, mean, mean
    half = _t_quantile(confidence, arr.size - 1) * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return mean, mean - half, mean + half


def _wrap(lines: Sequence[Sequence[str]], width_in: float, fontsize: float = 8.5) -> str:
    """A title that fits ``width_in`` inches (DejaVu Sans ~0.6 em a char). Each entry of
    ``lines`` starts a new line and lists its phrases; phrases are packed greedily and a
    line breaks only between them, so a title never splits mid-phrase (as "95% CI over /
    seeds"). A phrase wider than the line keeps its own line, unbroken."""
    chars = max(12, int(width_in * 72 / (0.58 * fontsize)))
    out: list[str] = []
    for phrases in lines:
        line = ""
        for phrase in phrases:
            if line and len(line) + 1 + len(phrase) > chars:
                out.append(line)
                line = "  " + phrase  # continuation lines are indented
            else:
                line = f"{line} {phrase}" if line else phrase
        out.append(line)
    return "\n".join(out)


def _key_phrases(name: str, gap: str) -> list[str]:
    """``sim gap: gravity=2.0,friction=0.3`` as phrases that break after each comma."""
    parts = gap.split(",")
    return [f"{name}:", *[p + "," for p in parts[:-1]], parts[-1]]


def _panel_title(gap: str, real_gap: str, dataset: str, show_real: bool) -> str:
    """Sim gap, real gap (when it varies) and dataset on their own lines, wrapped to a panel.
    Multi-key gaps break after their commas."""
    lines = [_key_phrases("sim gap", format_gap(gap))]
    if show_real:
        lines.append(_key_phrases("real gap", real_gap or "nominal"))
    lines.append(["dataset:", format_dataset(dataset)])
    return _wrap(lines, COLUMN_W - 0.6)


# --------------------------------------------------------------------------------------------
# per-cell grids: learning curves and final scores
# --------------------------------------------------------------------------------------------


def _cell_panels(data: pd.DataFrame, panel_h: float, extra_h: float):
    """The grid both per-cell figures use: rows = (sim gap, real gap), columns = dataset.
    Returns the figure, its number of rows and, per panel, (row, column, axes,
    (gap, real gap, dataset), that panel's rows of ``data``)."""
    rows = sorted(map(tuple, data[["gap", "real_gap"]].drop_duplicates().to_numpy().tolist()))
    cols = sorted(data["dataset"].unique())
    nr, nc = max(len(rows), 1), max(len(cols), 1)
    fig, axes = plt.subplots(
        nr,
        nc,
        figsize=(COLUMN_W * nc, panel_h * nr + extra_h),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    panels = [
        (
            i,
            j,
            axes[i, j],
            (gap, real, dataset),
            data[(data["gap"] == gap) & (data["real_gap"] == real) & (data["dataset"] == dataset)],
        )
        for i, (gap, real) in enumerate(rows)
        for j, dataset in enumerate(cols)
    ]
    return fig, nr, panels


def _no_runs(ax) -> None:
    ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes, color="0.5")


def diagnostic_columns(curves: pd.DataFrame) -> list[str]:
    """The training metrics the runs logged next to the score (losses, Q values, H2O's
    dynamics ratio and penalty, DARC's reward correction...): every numeric curve column
    beyond the ones all curves share that has at least one value."""
    skip = {*CURVE_COLUMNS, *RUN_COLUMNS}
    return sorted(
        c
        for c in curves.columns
        if c not in skip
        and not c.startswith("budget_")
        and pd.api.types.is_numeric_dtype(curves[c])
        and curves[c].notna().any()
    )


def learning_curves(
    curves: pd.DataFrame,
    task: str,
    palette: Mapping[str, tuple],
    confidence: float = 0.95,
    x: str = "step",
    y: str = "normalized_score",
) -> Figure:
    """Mean of ``y`` (the normalized score, or a logged training metric) with a
    ``confidence`` Student-t band over seeds vs training step.

    One figure for ``task``: a grid of panels, rows = sim gap (and real gap when it varies),
    columns = dataset; one colour per label (labels that never logged ``y`` are left out).
    """
    data = curves[curves["task"] == task]
    data = data[data[y].notna()]
    show_real = varying(curves, "real_gap")
    with plt.rc_context(PAPER_RC):
        fig, nr, panels = _cell_panels(data, panel_h=2.3, extra_h=0.55)
        for i, j, ax, (gap, real, dataset), panel in panels:
            for lab in [lab for lab in palette if lab in set(panel["label"])]:
                sub = panel[panel["label"] == lab]
                g = sub.groupby(x)[y]
                band = pd.DataFrame(
                    [(step, *_t_band(v, confidence)) for step, v in g],
                    columns=[x, "mean", "lo", "hi"],
                )
                color = _color(palette, lab)
                ax.plot(band[x], band["mean"], color=color, ls=_linestyle(palette, lab), label=lab)
                ax.fill_between(band[x], band["lo"], band["hi"], color=color, alpha=0.2, lw=0)
            if panel.empty:
                _no_runs(ax)
            ax.set_title(_panel_title(gap, real, dataset, show_real), loc="left")
            ax.xaxis.set_major_formatter(_StepFormatter())
            ax.xaxis.set_major_locator(MaxNLocator(5))
            if i == nr - 1:
                ax.set_xlabel(STEP_LABEL)
            if j == 0:
                ax.set_ylabel(SCORE_LABEL if y == "normalized_score" else y)
        what = "learning curves" if y == "normalized_score" else y
        fig.suptitle(
            _wrap(
                [[f"{task}: {what}", f"(mean, {confidence:.0%} CI over seeds)"]],
                fig.get_figwidth() - 0.2,
                9,
            )
        )
        _legend_below(fig, palette, data["label"].unique())
    return fig


# --------------------------------------------------------------------------------------------
# final scores per cell
# --------------------------------------------------------------------------------------------


def final_score_plot(
    cells: pd.DataFrame, task: str, palette: Mapping[str, tuple], confidence: float = 0.95
) -> Figure:
    """Final score per cell for ``task``: mean over seeds with its Student-t CI.

    The same grid as :func:`learning_curves` (rows = sim gap, columns = dataset); in each
    panel one horizontal interval per label, labels on the y axis in the palette order.
    """
    data = cells[cells["task"] == task]
    show_real = varying(cells, "real_gap")
    labels = [lab for lab in palette if lab in set(data["label"])]
    with plt.rc_context(PAPER_RC):
        fig, nr, panels = _cell_panels(data, panel_h=0.2 * len(labels) + 0.75, extra_h=0.45)
        for i, _, ax, (gap, real, dataset), panel in panels:
            panel = panel.set_index("label")
            for y, lab in enumerate(labels):
                if lab not in panel.index:
                    continue
                r = panel.loc[lab]
                ax.errorbar(
                    r["mean"],
                    y,
                    xerr=[[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]],
                    fmt="o",
                    ms=3.5,
                    lw=1.2,
                    capsize=2,
                    color=_color(palette, lab),
                )
            ax.set_yticks(range(len(labels)), labels)
            ax.set_ylim(len(labels) - 0.5, -0.5)
            ax.grid(axis="y", visible=False)
            ax.xaxis.set_major_locator(MaxNLocator(6))
            ax.set_title(_panel_title(gap, real, dataset, show_real), loc="left")
            if panel.empty:
                _no_runs(ax)
            if i == nr - 1:
                ax.set_xlabel(FINAL_LABEL)
        fig.suptitle(
            _wrap(
                [[f"{task}: final score", f"(mean, {confidence:.0%} CI over seeds)"]],
                fig.get_figwidth() - 0.2,
                9,
            )
        )
    return fig


# --------------------------------------------------------------------------------------------
# aggregates (Agarwal et al. 2021)
# --------------------------------------------------------------------------------------------


def aggregate_interval_plot(
    agg: pd.DataFrame, palette: Mapping[str, tuple], n_cells: int | None = None
) -> Figure:
    """One panel per metric (IQM, mean, median, optimality gap), a horizontal CI bar per
    algorithm with a tick at the point estimate (as rliable's plot_interval_estimates)."""
    metrics = [m for m in METRIC_NAMES if m in set(agg["metric"])]
    labels = [lab for lab in palette if lab in set(agg["algorithm"])][::-1]
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(
            1,
            len(metrics),
            figsize=(PAGE_W, 0.28 * len(labels) + 1.0),
            squeeze=False,
            layout="constrained",
        )
        for ax, metric in zip(axes[0], metrics, strict=True):
            sub = agg[agg["metric"] == metric].set_index("algorithm")
            for y, lab in enumerate(labels):
                if lab not in sub.index:
                    continue
                r = sub.loc[lab]
                color = _color(palette, lab)
                ax.barh(
                    y, r["upper"] - r["lower"], left=r["lower"], height=0.6, color=color, alpha=0.75
                )
                ax.vlines(r["point"], y - 0.3, y + 0.3, color="k", lw=1.2)
            ax.set_yticks(range(len(labels)), labels if ax is axes[0, 0] else [])
            ax.set_ylim(-0.6, len(labels) - 0.4)
            ax.set_title(
                METRIC_NAMES[metric]
                + ("\n(lower is better)" if metric == "optimality_gap" else "\n ")
            )
            ax.grid(axis="y", visible=False)
            ax.xaxis.set_major_locator(MaxNLocator(4))
        where = f" over {n_cells} cell{'s' if n_cells != 1 else ''}" if n_cells else ""
        fig.supxlabel(
            f"{SCORE_LABEL}{where}: point estimate and 95% stratified-bootstrap CI", fontsize=8
        )
    return fig


def poi_plot(poi: pd.DataFrame, palette: Mapping[str, tuple]) -> Figure:
    """P(baseline > X) for every other algorithm X: horizontal bars with 95% CIs."""
    rows = poi.set_index("other")
    others = [lab for lab in palette if lab in rows.index][::-1]
    baseline = poi["baseline"].iloc[0] if len(poi) else "?"
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(COLUMN_W, 0.3 * len(others) + 1.0), layout="constrained")
        for y, other in enumerate(others):
            r = rows.loc[other]
            ax.barh(y, r["point"], height=0.6, color=_color(palette, other), alpha=0.85)
            ax.errorbar(
                r["point"],
                y,
                xerr=[[r["point"] - r["lower"]], [r["upper"] - r["point"]]],
                fmt="none",
                ecolor="k",
                capsize=3,
                lw=1,
            )
        ax.axvline(0.5, color="0.3", ls="--", lw=0.8)
        ax.set_yticks(range(len(others)), [f"P({baseline} > {o})" for o in others])
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.6, len(others) - 0.4)
        ax.grid(axis="y", visible=False)
        ax.set_xlabel("probability of improvement")
        ax.set_title(f"P({baseline} > X), 95% bootstrap CI", loc="left")
    return fig


def performance_profile_plot(profiles: pd.DataFrame, palette: Mapping[str, tuple]) -> Figure:
    """Fraction of runs with final score above tau, with pointwise 95% bootstrap bands."""
    with plt.rc_context(PAPER_RC):
        fig, ax = plt.subplots(figsize=(COLUMN_W, 2.8), layout="constrained")
        for lab in [lab for lab in palette if lab in set(profiles["label"])]:
            sub = profiles[profiles["label"] == lab]
            color = _color(palette, lab)
            ax.plot(sub["tau"], sub["point"], color=color, ls=_linestyle(palette, lab), label=lab)
            ax.fill_between(sub["tau"], sub["lower"], sub["upper"], color=color, alpha=0.2, lw=0)
        ax.set_xlabel("normalized score threshold τ (D4RL, %)")
        ax.set_ylabel("fraction of runs with score > τ")
        ax.set_ylim(-0.02, 1.02)
        _legend_below(fig, palette, profiles["label"].unique())
    return fig


# --------------------------------------------------------------------------------------------
# gap-magnitude sweeps
# --------------------------------------------------------------------------------------------


_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")


def _single_key(gap: str) -> tuple[str, str] | None:
    """``gravity=2.0`` -> ("gravity", "2.0"); None for nominal or multi-key gaps."""
    parts = [p for p in gap.split(",") if p.strip()]
    if len(parts) != 1 or "=" not in parts[0]:
        return None
    key, _, value = parts[0].partition("=")
    return key.strip(), value.strip()


def gap_sweeps(cells: pd.DataFrame) -> dict[str, list[str]]:
    """Gap keys that the results sweep: key -> its magnitudes (>= 2), sorted numerically.

    Only single-key gaps count (``gravity=1.5`` and ``gravity=2.0`` sweep gravity;
    ``gravity=2.0,friction=0.5`` is a combination, not a magnitude).
    """
    found: dict[str, set[str]] = {}
    for gap in cells["gap"].unique():
        kv = _single_key(str(gap))
        if kv:
            found.setdefault(kv[0], set()).add(kv[1])

    def order(v: str):
        return (0, float(v), v) if _NUMBER.match(v) else (1, 0.0, v)

    return {k: sorted(v, key=order) for k, v in sorted(found.items()) if len(v) >= 2}


def gap_heatmap(
    cells: pd.DataFrame, key: str, magnitudes: Sequence[str], palette: Mapping[str, tuple]
) -> Figure:
    """Mean final score vs gap magnitude: rows = algorithm, columns = magnitude of ``key``.

    One panel per (task, dataset[, real gap]), a shared colour scale (viridis, readable in
    grey and by colour-blind readers) and the value written in every square.
    """
    rows = []
    for r in cells.itertuples():
        kv = _single_key(str(r.gap))
        if kv and kv[0] == key:
            rows.append({**r._asdict(), "magnitude": kv[1]})
    data = pd.DataFrame(rows)
    panels = sorted(
        map(tuple, data[["task", "dataset", "real_gap"]].drop_duplicates().to_numpy().tolist())
    )
    show_real = varying(data, "real_gap")
    labels = [lab for lab in palette if lab in set(data["label"])]
    ncols = min(len(panels), 2)
    nrows = math.ceil(len(panels) / ncols)
    vmin, vmax = float(data["mean"].min()), float(data["mean"].max())
    panel_w = max(COLUMN_W, 0.55 * len(magnitudes) + 1.3)
    with plt.rc_context(PAPER_RC):
        fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(panel_w * ncols + 0.6, (0.3 * len(labels) + 1.1) * nrows),
            squeeze=False,
            layout="constrained",
        )
        mesh = None
        for ax, (task, dataset, real) in zip(axes.flat, panels, strict=False):
            sub = data[
                (data["task"] == task) & (data["dataset"] == dataset) & (data["real_gap"] == real)
            ]
            grid = sub.pivot_table(index="label", columns="magnitude", values="mean").reindex(
                index=labels, columns=list(magnitudes)
            )
            values = grid.to_numpy(float)
            # pcolormesh, not imshow: the squares stay vector shapes in the PDF.
            mesh = ax.pcolormesh(
                np.arange(values.shape[1] + 1) - 0.5,
                np.arange(values.shape[0] + 1) - 0.5,
                np.ma.masked_invalid(values),
                cmap="viridis",
                vmin=vmin,
                vmax=vmax,
            )
            ax.set_xlim(-0.5, values.shape[1] - 0.5)
            ax.set_ylim(values.shape[0] - 0.5, -0.5)
            for (i, j), v in np.ndenumerate(grid.to_numpy(float)):
                if np.isfinite(v):
                    frac = (v - vmin) / (vmax - vmin) if vmax > vmin else 0.5
                    ax.text(
                        j,
                        i,
                        f"{v:.0f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="k" if frac > 0.55 else "w",
                    )
            ax.set_xticks(range(len(magnitudes)), list(magnitudes))
            ax.set_yticks(range(len(labels)), labels)
            ax.set_xlabel(f"sim gap: {key} (scale)")
            ax.grid(False)
            title = [[task], ["dataset:", format_dataset(dataset)]]
            if show_real:
                title.append(_key_phrases("real gap", real or "nominal"))
            ax.set_title(_wrap(title, panel_w - 0.8), loc="left")
            for side in ("top", "right"):
                ax.spines[side].set_visible(True)
        for ax in list(axes.flat)[len(panels) :]:
            ax.set_visible(False)
        if mesh is not None:
            fig.colorbar(
                mesh,
                ax=axes,
                label=FINAL_LABEL,
                location="bottom",
                shrink=0.6,
                aspect=40,
                pad=0.12 / nrows,
            )
    return fig
