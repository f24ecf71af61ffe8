"""Rewrite README's reference-records block from the report of the shipped records.

    .venv/bin/gapbench report results/reference --out results/reference/report --baseline h2o \
        --order h2o,darc,sac,sac-oracle,cql,iql,bc,td3bc,vgdf,par
    .venv/bin/python scripts/reference_readme.py

Everything between the two markers in README.md is replaced by the report's own tables
(per cell, aggregates with CIs, P(H2O > X), H2O's final diagnostics, every run with its
compute) and learning curves (copied to docs/); the written reading of the results stays
outside the markers, by hand. Nothing else in README.md changes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import textwrap
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- reference-records:begin (written by scripts/reference_readme.py) -->"
END = "<!-- reference-records:end -->"


def replace_block(text: str, block: str) -> str:
    """``text`` with everything between the markers replaced by ``block``."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"README must hold each marker once, in order: {BEGIN!r}, {END!r}")
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{block.strip()}\n{END}{tail}"


def _poi_table(path: Path) -> str:
    poi = pd.read_csv(path)
    if poi.empty:
        return ""
    base = poi["baseline"].iloc[0]
    lines = [f"| X | P({base} > X) [95% CI] | cells |", "|:---|---:|---:|"]
    for r in poi.itertuples(index=False):
        lines.append(f"| {r.other} | {r.point:.2f} [{r.lower:.2f}, {r.upper:.2f}] | {r.cells} |")
    return "\n".join(lines)


def _prose(text: str) -> str:
    return textwrap.fill(text, width=90, break_on_hyphens=False)


def _cell_scopes(report: Path) -> list[tuple[str, str]]:
    """(cell as prose, its aggregates table) for each per-cell scope of the report (every
    method that ran the cell; written when some method ran on part of the grid)."""
    path = report / "aggregate_scopes.json"
    scopes = json.loads(path.read_text())[1:] if path.exists() else []
    return [("; ".join(sc["cells_text"]), _read(report / sc["file"])) for sc in scopes]


def _read(path: Path) -> str:
    return path.read_text().strip() if path.exists() else ""


def records_heading(done: int, expected: int) -> str:
    """The block's first words: how much of the matrix its records cover."""
    where = "`results/reference/`, rendered by the demo)."
    if done >= expected:
        return f"**Records** (all {expected} of the matrix's runs; {where}"
    return f"**Records so far** ({done} of the matrix's {expected}; {where}"


def build_block(report: Path, results: Path, docs: Path) -> str:
    runs = _read(report / "runs.md")
    if not runs:
        raise FileNotFoundError(f"{report / 'runs.md'}: build the report first (see --help)")
    manifest = json.loads((results / "matrix.json").read_text())
    expected = len(manifest["runs"])
    done = len(list(results.glob("*/summary.json")))
    figures = []
    for png in sorted((report / "figures").glob("learning_curves_*.png")):
        task = png.stem.removeprefix("learning_curves_")
        target = docs / f"reference_{png.name}"
        shutil.copyfile(png, target)
        figures.append(f"![Reference learning curves, {task}]({target.relative_to(docs.parent)})")
    # the hybrid methods' critic on the logged real pairs, side by side: the walker2d reading
    # (outside the block) turns on where it runs away and where it stays bounded
    for png in sorted((report / "figures").glob("diagnostics_*_q_real_mean.png")):
        task = png.stem.removeprefix("diagnostics_").removesuffix("_q_real_mean")
        target = docs / f"reference_q_real_{task}.png"
        shutil.copyfile(png, target)
        figures.append(
            f"![Mean Q of the critic on the logged real pairs, {task} (hybrid methods)]"
            f"({target.relative_to(docs.parent)})"
        )
    parts = [
        _prose(
            f"{records_heading(done, expected)} Final score = mean of the last 3 "
            "evaluations (10 real episodes each), mean ± std over the seeds (n = seeds where "
            "it differs). Every table below is the report's, rebuilt by"
        ),
        "",
        "```bash",
        ".venv/bin/gapbench report results/reference --out results/reference/report "
        "--baseline h2o \\",
        "  --order h2o,darc,sac,sac-oracle,cql,iql,bc,td3bc,vgdf,par",
        ".venv/bin/python scripts/reference_readme.py   # this block of the README",
        "```",
        "",
        _read(report / "cells.md"),
        "",
        _prose(
            "Aggregates over both cells (the methods run on both), point estimate [95% "
            "stratified-bootstrap CI]; with fewer than 5 runs per method the intervals cannot "
            "be trusted, however tight they look (a single seed per cell gives a zero-width "
            "one):"
        ),
        "",
        _read(report / "aggregates.md"),
        "",
    ]
    for cell, table in _cell_scopes(report):
        if table:
            parts += [f"Every method that ran {cell}:", "", table, ""]
    poi = _poi_table(report / "probability_of_improvement.csv")
    if poi:
        parts += [
            _prose(
                "Probability that an H2O run beats a run of X on a cell both ran (ties count "
                "½), with the cells each comparison has:"
            ),
            "",
            poi,
            "",
        ]
    diag = _read(report / "final_diagnostics.md")
    if diag:
        parts += [
            _prose(
                "H2O at the end of training (each metric's mean over a run's last 3 "
                "evaluations, mean ± std over seeds): classifier accuracies, the dynamics "
                "ratio w on simulated transitions (`dynamics_ratio_mean`), u, ω (mean, std), "
                "the penalty and the real- and simulated-data Q:"
            ),
            "",
            diag,
            "",
        ]
    parts += [
        _prose(
            "Every run, with what it cost (wall time on one core shared with the other cell's "
            "run and, for the older records, two or three more processes; updates/s of the "
            "last segment after a resume; the commit each record names):"
        ),
        "",
        runs,
        "",
        *figures,
    ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, default=ROOT / "results/reference/report")
    parser.add_argument("--results", type=Path, default=ROOT / "results/reference")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    args = parser.parse_args(argv)
    block = build_block(args.report, args.results, ROOT / "docs")
    text = replace_block(args.readme.read_text(), block)
    args.readme.write_text(text)
    print(f"{args.readme}: reference-records block rewritten from {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
