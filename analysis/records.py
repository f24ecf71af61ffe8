"""Load gapbench run records into tidy pandas DataFrames.

A run record is a folder ``<run_id>/`` holding ``spec.json``, ``curve.csv`` and, once the run
has ended, ``summary.json`` (see :mod:`gapbench.benchmark.records`). Records are found recursively
under a results folder, so a matrix output, a folder of matrices or a single run folder all
load. Only this module's standard-library, numpy and pandas imports are needed: reading
results does not import torch or MuJoCo.

Cells and labels
----------------
A *cell* is ``(task, gap, real_gap, dataset)``; within a cell, runs are grouped by *label*
(the algorithm name as shown in tables and plots) and differ by seed.

* The label comes from the matrix manifest when the run is listed there, otherwise it is the
  algorithm name, plus ``-oracle`` when the run's regime is ``oracle`` (``sac`` trained on the
  real system shows as ``sac-oracle``).
* Regimes that never touch the simulator (``offline``, ``oracle``) are resolved with an empty
  ``gap``, and regimes that use no dataset (``online``, ``oracle``) with no ``dataset``. Such a
  run is the same experiment for every value of the axis it ignores, so it is *shared*: it is
  placed in every cell of its task and real gap that the other runs define along that axis
  (column ``shared`` is True for those copies). When no run defines the axis the empty value
  stays (shown as "none").

Matrix manifest
---------------
When ``matrix.json`` is found in the results folder or in a folder above a record, its entries
override the labels and cell coordinates of the runs it lists and define the expected runs (for
:func:`missing_runs`). Accepted shapes, at the top level or under a ``"runs"`` key::

    {"<run_id>": {"label": "sac-oracle", "task": ..., "gap": ..., "real_gap": ...,
                  "dataset": ..., "seed": ...}, ...}
    {"<run_id>": [{...}, {...}]}                   # one run that serves several cells
    [{"run_id": "<run_id>", "label": ..., ...}, ...]

This is what ``gapbench.benchmark.matrix.write_manifest`` writes: ``{"runs": {run_id: {"label",
"algorithm", "regime", "task", "gap", "real_gap", "dataset", "seed", "matrix"}},
"matrices": {...}}``, with the gap and dataset of the resolved spec (empty for the axes a
regime ignores, which are then shared as above). Every field except the run id is optional:
missing ones come from the run's ``spec.json`` (for an expected run without a record, the
label defaults to :func:`default_label` of the entry's algorithm and regime); ``label`` may
also be spelled ``name``; a gap given as a mapping is written ``key=value,...`` with the keys
sorted. Anything else in the manifest is ignored.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

__all__ = [
    "CELL",
    "CURVE_COLUMNS",
    "MANIFEST",
    "RUN_COLUMNS",
    "Results",
    "default_label",
    "find_records",
    "load_results",
    "missing_runs",
    "read_csv",
    "read_manifest",
    "to_csv",
]

SPEC, CURVE, SUMMARY, MANIFEST = "spec.json", "curve.csv", "summary.json", "matrix.json"

#: The coordinates of a benchmark cell; a row of a per-cell table is a cell and a label.
CELL: tuple[str, ...] = ("task", "gap", "real_gap", "dataset")
#: Scalar fields of ``spec.json["spec"]`` copied into every frame (``budget`` and ``hparams``
#: are flattened: ``budget_<key>`` columns, ``hparams`` as canonical JSON text).
SPEC_FIELDS: tuple[str, ...] = (
    "task",
    "algorithm",
    "seed",
    "gap",
    "real_gap",
    "dataset",
    "regime",
    "preset",
    "sim_replay_capacity",
    "device",
)
#: The run's outcome (from summary.json), as opposed to what the run was asked to do.
OUTCOME_COLUMNS: tuple[str, ...] = (
    "status",
    "error",
    "final_normalized_score",
    "best_normalized_score",
    "updates_per_s",
    "wall_time_s",
    "resumed_at",
)
#: Columns of :attr:`Results.runs` before the flattened budget columns.
RUN_COLUMNS: tuple[str, ...] = (
    "run_id",
    "label",
    *CELL,
    "seed",
    "algorithm",
    "regime",
    "preset",
    "device",
    "sim_replay_capacity",
    "hparams",
    "shared",
    "in_manifest",
    *OUTCOME_COLUMNS,
    "gapbench_version",
    "git_commit",
    "path",
)
#: Columns every curve.csv has (training metrics after these vary by algorithm).
CURVE_COLUMNS: tuple[str, ...] = (
    "step",
    "env_steps",
    "return_mean",
    "return_std",
    "normalized_score",
    "wall_time_s",
)
GAP_FREE_REGIMES = frozenset({"offline", "oracle"})
DATA_FREE_REGIMES = frozenset({"online", "oracle"})
FAILED_STATUSES = ("failed", "pruned")
MANIFEST_COLUMNS = ["run_id", "label", "algorithm", "regime", *CELL, "seed"]


@dataclass
class Results:
    """Everything loaded from one results folder.

    Attributes:
        root: the folder that was searched (the first, if several were).
        runs: one row per record and cell (a shared run has one row per cell), every status:
            ``status`` is ``ok``, ``failed``, ``pruned`` or ``incomplete`` (no summary.json).
        curves: the tidy frame: one row per complete (``ok``) run, cell and evaluation step,
            with the run's spec columns (``run_id, label, task, gap, real_gap, dataset, seed,
            algorithm, regime, ...``) followed by every curve.csv column.
        manifest: the expected runs from ``matrix.json`` (columns ``run_id, label, task, gap,
            real_gap, dataset, seed``, after sharing), or None without a manifest.
        warnings: human-readable notes (unreadable records, duplicate seeds, ...).
    """

    root: Path
    runs: pd.DataFrame
    curves: pd.DataFrame
    manifest: pd.DataFrame | None = None
    warnings: list[str] = field(default_factory=list)
    roots: tuple[Path, ...] = ()  # every folder searched (``root`` first)

    @property
    def where(self) -> str:
        """The searched folders, for a heading: "a" or "a, b"."""
        return ", ".join(str(r) for r in (self.roots or (self.root,)))

    @property
    def complete(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "ok"]

    @property
    def failed(self) -> pd.DataFrame:
        """Runs that ended without success (``failed`` or ``pruned``), with their ``error``."""
        return self.runs[self.runs["status"].isin(FAILED_STATUSES)]

    @property
    def incomplete(self) -> pd.DataFrame:
        return self.runs[self.runs["status"] == "incomplete"]

    @property
    def labels(self) -> list[str]:
        return sorted(self.complete["label"].unique())


def default_label(algorithm: str, regime: str | None) -> str:
    """The label of a run without a manifest entry: ``sac`` run as oracle is ``sac-oracle``."""
    return f"{algorithm}-oracle" if regime == "oracle" else algorithm


def _text(value: Any) -> str:
    """Axis values as text; None/NaN (no dataset, nominal gap) become ''."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value)


def _gap_text(value: Any) -> str:
    if isinstance(value, Mapping):
        return ",".join(f"{k}={value[k]}" for k in sorted(value))
    text = _text(value)
    return "" if text in CSV_EMPTY.values() else text


#: How the CSV files spell an empty axis value. pandas reads an empty field as NaN, and
#: ``groupby`` then silently drops every nominal row; a word survives the round trip.
CSV_EMPTY = {"gap": "nominal", "real_gap": "nominal", "dataset": "none"}


def to_csv(frame: pd.DataFrame, path: str | Path) -> None:
    """Write ``frame`` as CSV with empty gaps spelled ``nominal`` and no dataset ``none``."""
    frame = frame.copy()
    for col, word in CSV_EMPTY.items():
        if col in frame:
            frame[col] = frame[col].map(lambda v, w=word: w if _text(v) == "" else v)
    frame.to_csv(path, index=False)


def read_csv(path: str | Path) -> pd.DataFrame:
    """Read a CSV written by :func:`to_csv` (or an older one with empty fields) back into the
    in-memory form: a nominal gap (``nominal`` or empty) and no dataset (``none`` or empty)
    are ``""``, never NaN."""
    frame = pd.read_csv(path, dtype={c: str for c in CSV_EMPTY})
    for col in CSV_EMPTY.keys() & set(frame.columns):
        frame[col] = frame[col].fillna("").replace({"nominal": "", "none": ""})
    return frame


# --------------------------------------------------------------------------------------------
# discovery and manifest
# --------------------------------------------------------------------------------------------


def find_records(root: str | Path) -> list[Path]:
    """Every folder under ``root`` (``root`` included) that holds a ``spec.json``, sorted."""
    root = Path(root)
    if (root / SPEC).is_file():
        return [root]
    return sorted(p.parent for p in root.rglob(SPEC) if p.is_file())


def _manifest_entries(data: Any) -> list[dict[str, Any]]:
    """Flatten any accepted manifest shape to a list of dicts that each carry a run_id."""
    if isinstance(data, Mapping) and "runs" in data:
        data = data["runs"]
    entries: list[dict[str, Any]] = []
    if isinstance(data, Mapping):
        for run_id, value in data.items():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Mapping):
                    entries.append({**item, "run_id": item.get("run_id", run_id)})
                elif isinstance(item, str):  # run_id -> label
                    entries.append({"run_id": run_id, "label": item})
    elif isinstance(data, list):
        entries = [dict(item) for item in data if isinstance(item, Mapping) and "run_id" in item]
    return entries


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read ``matrix.json`` into a frame with ``run_id`` and whichever of ``label, task, gap,
    real_gap, dataset, seed`` it gives (a missing value is None). See the module docstring."""
    entries = _manifest_entries(json.loads(Path(path).read_text()))
    rows = []
    for e in entries:
        label = e.get("label", e.get("name"))
        rows.append(
            {
                "run_id": str(e["run_id"]),
                "label": None if label is None else str(label),
                "algorithm": None if e.get("algorithm") is None else str(e["algorithm"]),
                "regime": None if e.get("regime") is None else str(e["regime"]),
                "task": e.get("task"),
                "gap": None if "gap" not in e else _gap_text(e["gap"]),
                "real_gap": None if "real_gap" not in e else _gap_text(e["real_gap"]),
                "dataset": None if "dataset" not in e else _text(e["dataset"]),
                "seed": None if e.get("seed") is None else int(e["seed"]),
            }
        )
    return pd.DataFrame(rows, columns=MANIFEST_COLUMNS)


def _find_manifests(root: Path) -> list[Path]:
    """matrix.json files in ``root`` or below it, and in folders above ``root`` (so pointing
    the loader at one run inside a matrix folder still finds the matrix's labels)."""
    found = {p.resolve() for p in root.rglob(MANIFEST) if p.is_file()} if root.is_dir() else set()
    for parent in [root, *root.parents][:4]:
        if (parent / MANIFEST).is_file():
            found.add((parent / MANIFEST).resolve())
    return sorted(found)


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def _read_record(path: Path) -> dict[str, Any]:
    """One record's run-level fields (no curve)."""
    meta = json.loads((path / SPEC).read_text())
    spec = meta.get("spec", meta)
    row: dict[str, Any] = {
        "run_id": str(meta.get("run_id", path.name)),
        "task": _text(spec.get("task")),
        "algorithm": _text(spec.get("algorithm")),
        "seed": int(spec.get("seed", 0)),
        "gap": _gap_text(spec.get("gap")),
        "real_gap": _gap_text(spec.get("real_gap")),
        "dataset": _text(spec.get("dataset")),
        "regime": _text(spec.get("regime")),
        "preset": _text(spec.get("preset")),
        "device": _text(spec.get("device")),
        "sim_replay_capacity": spec.get("sim_replay_capacity"),
        "hparams": json.dumps(spec.get("hparams") or {}, sort_keys=True),
        "gapbench_version": meta.get("gapbench_version"),
        "git_commit": meta.get("git_commit"),
        "path": str(path),
    }
    for key, value in (spec.get("budget") or {}).items():
        row[f"budget_{key}"] = value
    summary_path = path / SUMMARY
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        row["status"] = str(summary.get("status", "ok"))
        row["error"] = summary.get("error")
        for key in (
            "final_normalized_score",
            "best_normalized_score",
            "updates_per_s",
            "wall_time_s",
        ):
            row[key] = summary.get(key)
        # the updates a run was resumed at: its updates_per_s covers only the last segment
        resumed = summary.get("resumed") or []
        row["resumed_at"] = ",".join(str(r.get("update")) for r in resumed if isinstance(r, dict))
        row["_mtime"] = summary_path.stat().st_mtime
    else:
        row["status"] = "incomplete"
        row["_mtime"] = (path / SPEC).stat().st_mtime
    return row


def _given(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _apply_manifest(runs: pd.DataFrame, manifest: pd.DataFrame | None) -> pd.DataFrame:
    """Labels and cell coordinates: the manifest's where it lists the run, else the spec's."""
    runs = runs.copy()
    runs["label"] = [
        default_label(a, r) for a, r in zip(runs["algorithm"], runs["regime"], strict=True)
    ]
    runs["in_manifest"] = False
    if manifest is None or manifest.empty:
        return runs
    listed = runs["run_id"].isin(manifest["run_id"])
    cols = ["run_id", "label", *CELL, "seed"]
    merged = runs[listed].merge(manifest[cols], on="run_id", how="left", suffixes=("", "_m"))
    for col in ("label", *CELL, "seed"):
        given = merged.pop(f"{col}_m")
        merged[col] = [m if _given(m) else v for m, v in zip(given, merged[col], strict=True)]
    merged["seed"] = merged["seed"].astype(int)
    merged["in_manifest"] = True
    return pd.concat([runs[~listed], merged], ignore_index=True)


def _share(
    frame: pd.DataFrame, axis: str, free_regimes: frozenset[str], reference: pd.DataFrame
) -> pd.DataFrame:
    """Copy runs that ignore ``axis`` (empty value, regime in ``free_regimes``) into every
    value of ``axis`` that the other runs of the same task and real gap in ``reference``
    define."""
    frame = frame.copy()
    if "shared" not in frame:
        frame["shared"] = False
    free = frame["regime"].isin(free_regimes) & (frame[axis] == "")
    defined = reference[~reference["regime"].isin(free_regimes) & (reference[axis] != "")]
    values = defined.groupby(["task", "real_gap"])[axis].agg(lambda s: sorted(set(s))).to_dict()
    pieces = [frame[~free]]
    for key, group in frame[free].groupby(["task", "real_gap"], sort=False):
        targets = values.get(key, [])
        if not targets:
            pieces.append(group)
            continue
        for value in targets:
            pieces.append(group.assign(**{axis: value, "shared": True}))
    return pd.concat(pieces, ignore_index=True)


def _share_axes(frame: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Share runs along the axes their regime ignores; ``reference`` (runs and expected runs,
    with ``task, real_gap, gap, dataset, regime``) says which values each axis takes."""
    frame = _share(frame, "gap", GAP_FREE_REGIMES, reference)
    return _share(frame, "dataset", DATA_FREE_REGIMES, reference)


def load_results(root: str | Path | Sequence[str | Path], manifest: bool = True) -> Results:
    """Load every run record under ``root`` (searched recursively), or under each of several
    folders (e.g. a reference matrix and an ablation beside it; a record found twice counts
    once).

    Incomplete records (no summary.json) are kept in ``runs`` with status ``incomplete`` but
    never enter ``curves``; failed and pruned runs are logged as a warning listing them and are
    available as :attr:`Results.failed`. If the same (cell, label, seed) has several complete
    runs, the most recently finished one whose curve reads is kept and a warning says so.

    Raises:
        FileNotFoundError: ``root`` does not exist or holds no record at all.
        ValueError: one (cell, label) holds complete runs with different hyper-parameters,
            budgets or replay capacities (they are not seeds of one experiment).
    """
    roots = [Path(root)] if isinstance(root, str | Path) else [Path(r) for r in root]
    if not roots:
        raise FileNotFoundError("no results folder given")
    for folder in roots:
        if not folder.exists():
            raise FileNotFoundError(f"results folder {folder} does not exist")
    where = ", ".join(map(str, roots))
    paths = sorted({p.resolve(): p for r in roots for p in find_records(r)}.values())
    if not paths:
        raise FileNotFoundError(f"no run records (folders with {SPEC}) under {where}")
    notes: list[str] = []
    rows = []
    for path in paths:
        try:
            rows.append(_read_record(path))
        except (OSError, ValueError, TypeError, AttributeError) as e:
            notes.append(f"unreadable record {path}: {type(e).__name__}: {e}")
    if not rows:
        raise FileNotFoundError(f"no readable run records under {where}")
    runs = pd.DataFrame(rows)

    manifest_frame = None
    if manifest:
        frames = []
        for mpath in sorted({m for r in roots for m in _find_manifests(r)}):
            try:
                frames.append(read_manifest(mpath))
            except (OSError, ValueError, TypeError, KeyError) as e:
                notes.append(f"unreadable manifest {mpath}: {type(e).__name__}: {e}")
        if frames:
            manifest_frame = pd.concat(frames, ignore_index=True).drop_duplicates()
    runs = _apply_manifest(runs, manifest_frame)
    expected = None if manifest_frame is None else _expected_from_manifest(manifest_frame, runs)
    axes = ["task", "real_gap", "gap", "dataset", "regime"]
    reference = runs[axes] if expected is None else pd.concat([runs[axes], expected[axes]])
    runs = _share_axes(runs, reference)
    if expected is not None:
        expected = _share_axes(expected, reference).drop(columns=["regime", "algorithm", "shared"])
        expected = expected.drop_duplicates(["label", *CELL, "seed"]).reset_index(drop=True)

    # One complete run per (cell, label, seed): the newest whose curve reads wins, so a
    # damaged newer record never hides a good older one.
    ok = runs["status"] == "ok"
    curves_by_path: dict[str, pd.DataFrame | None] = {}
    runs["_readable"] = [
        bool(is_ok) and _read_curve(path, curves_by_path) is not None
        for is_ok, path in zip(ok, runs["path"], strict=True)
    ]
    _refuse_mixed_configs(runs[runs["_readable"]])
    key = ["label", *CELL, "seed"]
    dup = runs[ok].duplicated(key, keep=False)
    if dup.any():
        d = runs[ok][dup]
        notes.append(
            f"{int(dup.sum())} complete runs share a (cell, label, seed) with another run "
            f"(e.g. {', '.join(d['run_id'].head(4))}); the most recent readable one of each "
            "is used"
        )
        chosen = runs[ok].sort_values(["_readable", "_mtime"])
        chosen = chosen.drop_duplicates(key, keep="last").index
        runs = runs[~ok | runs.index.isin(chosen)]
    budget_cols = sorted(c for c in runs.columns if c.startswith("budget_"))
    for col in RUN_COLUMNS:
        if col not in runs:
            runs[col] = None
    runs = runs[[*RUN_COLUMNS, *budget_cols]].sort_values(["label", *CELL, "seed"])
    runs = runs.reset_index(drop=True)

    curves = _load_curves(runs[runs["status"] == "ok"], notes, curves_by_path)
    failed = runs[runs["status"].isin(FAILED_STATUSES)].drop_duplicates("run_id")
    if len(failed):
        listing = "; ".join(f"{r.run_id} ({r.status}: {r.error})" for r in failed.itertuples())
        notes.append(f"{len(failed)} run(s) did not succeed: {listing}")
    for note in notes:
        log.warning(note)
    return Results(
        root=roots[0],
        runs=runs,
        curves=curves,
        manifest=expected,
        warnings=notes,
        roots=tuple(roots),
    )


def _expected_from_manifest(manifest: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The manifest's runs, unspecified fields filled from the records (not yet shared)."""
    info = runs.drop_duplicates("run_id").set_index("run_id")
    rows = []
    for e in manifest.itertuples(index=False):
        rec = info.loc[e.run_id] if e.run_id in info.index else None
        row = {"run_id": e.run_id}
        for col in ("regime", "algorithm", *CELL, "seed"):
            value = getattr(e, col)
            if not _given(value):
                value = rec[col] if rec is not None else (0 if col == "seed" else "")
            row[col] = value
        label = e.label
        if not _given(label):
            label = (
                rec["label"] if rec is not None else default_label(row["algorithm"], row["regime"])
            )
        row["label"] = label
        rows.append(row)
    frame = pd.DataFrame(rows, columns=["run_id", "label", *CELL, "seed", "regime", "algorithm"])
    frame["seed"] = frame["seed"].astype(int)
    return frame


#: What makes runs of one (cell, label) comparable seeds of one experiment.
CONFIG_COLUMNS = ("hparams", "sim_replay_capacity")


def _refuse_mixed_configs(runs: pd.DataFrame) -> None:
    """Raise ValueError when one (cell, label) holds runs with different hyper-parameters or
    budgets: averaging them as seeds of one experiment would report a number nobody ran."""
    cols = [*CONFIG_COLUMNS, *sorted(c for c in runs.columns if c.startswith("budget_"))]
    config = pd.Series([repr(t) for t in runs[cols].itertuples(index=False)], index=runs.index)
    mixed = []
    for key, group in config.groupby([runs[c] for c in ("label", *CELL)], sort=True):
        if group.nunique() > 1:
            rows = runs.loc[group.index]
            differ = [c for c in cols if rows[c].map(repr).nunique() > 1]
            ids = ", ".join(rows.drop_duplicates(differ)["run_id"].head(3))
            where = ", ".join(f"{c}={v!r}" for c, v in zip(("label", *CELL), key, strict=True))
            mixed.append(f"({where}) mixes different {', '.join(differ)} (e.g. runs {ids})")
    if mixed:
        more = f" and {len(mixed) - 1} more cell(s)" if len(mixed) > 1 else ""
        raise ValueError(
            f"{mixed[0]}{more}; valid: one configuration per cell and label; give the "
            "variants distinct labels (matrix algorithms:) or report their folders separately"
        )


# Metrics older records logged under another name -> the name they have now (PAR logged
# its critic's mean Q on the sim and real pairs as q_sim / q_real until 2026-12-02), so one
# metric is one diagnostics figure across methods and commits.
METRIC_ALIASES = {"q_sim": "q_sim_mean", "q_real": "q_real_mean"}


def _read_curve(path: str, cache: dict[str, pd.DataFrame | None]) -> pd.DataFrame | None:
    """A record's curve.csv (metrics under their current names, :data:`METRIC_ALIASES`), or
    None when it is missing, unreadable or has no evaluation."""
    if path not in cache:
        try:
            curve = pd.read_csv(Path(path) / CURVE)
            steps = pd.to_numeric(curve["step"], errors="coerce")
            renames = {a: b for a, b in METRIC_ALIASES.items() if a in curve and b not in curve}
            curve = curve.rename(columns=renames)
            cache[path] = curve if steps.notna().any() else None
        except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
            cache[path] = None
    return cache[path]


def _load_curves(
    runs: pd.DataFrame, notes: list[str], cache: dict[str, pd.DataFrame | None]
) -> pd.DataFrame:
    spec_cols = [c for c in runs.columns if c not in (*OUTCOME_COLUMNS, "path")]
    pieces = []
    for run in runs.itertuples(index=False):
        curve = _read_curve(run.path, cache)
        if curve is None:
            notes.append(f"complete run {run.run_id} has no readable {CURVE}")
            continue
        meta = {c: getattr(run, c) for c in spec_cols}
        pieces.append(curve.assign(**{k: [v] * len(curve) for k, v in meta.items()}))
    if not pieces:
        return pd.DataFrame(columns=[*spec_cols, *CURVE_COLUMNS])
    frame = pd.concat(pieces, ignore_index=True)
    for col in ("step", "normalized_score"):  # a damaged curve must not poison the stats
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    frame = frame[frame["step"].notna()]
    # A diverged evaluation (inf) or a lost one (NaN) is kept in the curve but said aloud:
    # a run whose last evaluations hold one has no final score (tables.final_scores).
    bad = frame[~np.isfinite(frame["normalized_score"].astype(float))]
    for run_id, group in bad.groupby("run_id", sort=True):
        steps = ", ".join(str(int(s)) for s in sorted(set(group["step"]))[:5])
        notes.append(
            f"run {run_id} has a non-finite (NaN/inf) normalized score at step(s) {steps}; "
            "a run whose last evaluations hold one gets no final score"
        )
    metric_cols = [c for c in frame.columns if c not in spec_cols]
    ordered = [c for c in CURVE_COLUMNS if c in metric_cols]
    ordered += [c for c in metric_cols if c not in ordered]
    frame = frame[[*spec_cols, *ordered]]
    frame["step"] = frame["step"].astype(np.int64)
    return frame.sort_values(["label", *CELL, "seed", "step"]).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# expected vs present
# --------------------------------------------------------------------------------------------


def missing_runs(results: Results) -> pd.DataFrame:
    """Expected (cell, label, seed) slots without a complete, successful run.

    Expected slots are the manifest's runs when there is one (a shared run fills one slot per
    cell it serves); otherwise the full cross product of the observed cells (every record, any
    status) x labels x seeds. Returns a frame with columns ``label, task, gap, real_gap,
    dataset, seed, status, run_id``, where ``status`` is ``failed``, ``pruned``,
    ``incomplete`` (a record without summary.json) or ``not run``, and ``run_id`` is the
    record's, else the manifest's, else empty.
    """
    runs = results.runs
    key = ["label", *CELL, "seed"]
    if results.manifest is not None:
        expected = results.manifest[[*key, "run_id"]].drop_duplicates(key)
        expected = expected.rename(columns={"run_id": "_planned"})
    else:
        cells = runs[list(CELL)].drop_duplicates()
        labels = pd.DataFrame({"label": sorted(runs["label"].unique())})
        seeds = pd.DataFrame({"seed": sorted(runs["seed"].unique())})
        expected = labels.merge(cells, how="cross").merge(seeds, how="cross")
    done = runs[runs["status"] == "ok"][key].drop_duplicates()
    merged = expected.merge(done, on=key, how="left", indicator=True)
    missing = merged[merged["_merge"] == "left_only"].drop(columns="_merge")
    # Why: the status of a record for that slot (failed > pruned > incomplete), if any.
    rank = {"failed": 0, "pruned": 1, "incomplete": 2}
    others = runs[runs["status"] != "ok"].assign(_rank=lambda f: f["status"].map(rank))
    others = others.sort_values("_rank").drop_duplicates(key)[[*key, "status", "run_id"]]
    missing = missing.merge(others, on=key, how="left")
    missing["status"] = missing["status"].fillna("not run")
    if "_planned" in missing:
        missing["run_id"] = missing["run_id"].fillna(missing["_planned"])
    missing["run_id"] = missing["run_id"].fillna("")
    return missing.sort_values(key).reset_index(drop=True)[[*key, "status", "run_id"]]
