"""``gapbench report RESULTS_DIR... --out DIR``: statistics, tables and figures of run records.

Mounted by ``gapbench.benchmark.cli`` as ``app.add_typer(app, name="report")``: the
sub-app has no sub-commands and runs its callback, so the command reads
``gapbench report RESULTS_DIR... --out DIR [--baseline ALGO] [--last-k K] [--reps N]
[--order A,B,...] [--tau-range LO,HI] [--json]``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gapbench.benchmark.cli.common import fail, out_dir_problem, print_json

err = Console(stderr=True)


def _tau_range(text: str | None) -> tuple[float, float] | None:
    """``"LO,HI"`` -> (LO, HI); the numbers' order is checked by build_report."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts)
    except ValueError:
        raise fail(f"--tau-range {text!r}: valid: LO,HI, two numbers, e.g. 0,60") from None
    return low, high


app = typer.Typer(
    invoke_without_command=True,
    no_args_is_help=True,
    subcommand_metavar="",
    # A group stops parsing options at its first argument; let options follow RESULTS_DIR.
    context_settings={"allow_interspersed_args": True},
    pretty_exceptions_enable=False,
)


@app.callback()
def report(
    results_dir: Annotated[
        list[Path],
        typer.Argument(
            help="Folder(s) of run records (searched recursively); several make one report "
            "of all their records, e.g. a reference matrix and an ablation beside it"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Report folder (index.md, figures/, tables)")],
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Algorithm label X in P(X > others) (default: h2o if present, else the first)"
        ),
    ] = None,
    last_k: Annotated[
        int, typer.Option("--last-k", min=1, help="Final score = mean of the last K evaluations")
    ] = 3,
    reps: Annotated[int, typer.Option(min=1, help="Stratified-bootstrap resamples")] = 10_000,
    confidence: Annotated[float, typer.Option(min=0.5, max=0.999, help="Interval coverage")] = 0.95,
    seed: Annotated[int, typer.Option(help="Bootstrap seed")] = 0,
    order: Annotated[
        str | None,
        typer.Option(
            help="Algorithm order of colours, legends and tables, e.g. h2o,darc,cql "
            "(labels left out follow, sorted)"
        ),
    ] = None,
    tau_range: Annotated[
        str | None,
        typer.Option(
            "--tau-range",
            help="Performance-profile thresholds LO,HI, e.g. 0,60 (default: the scores' range)",
        ),
    ] = None,
    title: Annotated[
        str, typer.Option(help="Heading of index.md, e.g. where the records came from")
    ] = "gapbench report",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print a JSON summary on stdout (nothing else)")
    ] = False,
) -> None:
    """Per-cell and aggregate statistics (rliable-style CIs), tables and figures of results."""
    from gapbench.analysis.report import build_report, scope_index

    taus = _tau_range(tau_range)
    labels = [name.strip() for name in order.split(",") if name.strip()] if order else None
    problem = out_dir_problem(out)
    if problem:
        raise fail(problem)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=True) as bar:
        task = bar.add_task("report", total=None)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        try:
            result = build_report(
                results_dir,
                out,
                baseline=baseline,
                last_k=last_k,
                reps=reps,
                confidence=confidence,
                seed=seed,
                progress=progress,
                order=labels,
                tau_range=taus,
                title=title,
            )
        except (FileNotFoundError, ValueError) as e:
            bar.stop()
            raise fail(str(e)) from None
    res = result.results
    n_ok = res.complete["run_id"].nunique()
    n_failed = res.failed["run_id"].nunique()
    n_missing = 0 if result.missing is None else len(result.missing)
    err.print(
        f"[green]report[/] {result.index}: {n_ok} complete runs, {n_failed} failed, "
        f"{n_missing} expected (cell, algorithm, seed) slots missing, "
        f"{len(result.figures)} figures",
        highlight=False,
    )
    if as_json:
        aggregates = result.aggregates
        print_json(
            {
                "index": str(result.index),
                "out": str(result.out),
                "complete_runs": int(n_ok),
                "failed_runs": int(n_failed),
                "missing_slots": int(n_missing),
                "figures": {
                    name: [str(p) for p in paths] for name, paths in result.figures.items()
                },
                "files": [str(p) for p in result.files],
                "aggregates": [] if aggregates is None else aggregates.to_dict("records"),
                # aggregates.md, aggregates_cell<k>.md: which algorithms over which cells
                "aggregate_scopes": [
                    {**entry, "aggregates": estimates.to_dict("records")}
                    for entry, (_, estimates) in zip(
                        scope_index(result.scopes), result.scopes, strict=True
                    )
                ],
                "notes": result.notes,
            }
        )
