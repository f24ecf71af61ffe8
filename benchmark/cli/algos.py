"""``gapbench algos list`` and ``gapbench check-algorithm``: the registered algorithms."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from gapbench.benchmark.cli.common import (
    err_console,
    fail,
    out_console,
    print_json,
    warn_broken_plugins,
)

app = typer.Typer(help="Registered algorithms.", no_args_is_help=True)


@app.command("list")
def algos_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List algorithms with their regime and hyper-parameter defaults."""
    from gapbench import algorithms

    problems = warn_broken_plugins()
    rows = []
    for name in algorithms.names():
        if name in problems:
            continue
        cls = algorithms.get(name)
        hp = {k: list(v) if isinstance(v, tuple) else v for k, v in cls.hparams().items()}
        rows.append({"name": name, "regime": cls.regime, "module": cls.__module__, "hparams": hp})
    if as_json:
        return print_json(rows)
    table = Table("name", "regime", "hyper-parameters (defaults)")
    for r in rows:
        table.add_row(
            r["name"], r["regime"], ", ".join(f"{k}={v}" for k, v in r["hparams"].items())
        )
    out_console.print(table)


# mounted on the top-level app as ``gapbench check-algorithm``
def check_algorithm(name: Annotated[str, typer.Argument(help="Algorithm name")]) -> None:
    """Run the conformance checks (those of tests/test_conformance.py) on one algorithm,
    e.g. your plug-in after `pip install -e .`: tiny sizes, random data, seconds on a CPU."""
    from gapbench import algorithms
    from gapbench.algorithms.conformance import run_checks

    try:
        results = run_checks(name)
    except KeyError as e:
        raise fail(str(e)) from None
    for check, problem in results.items():
        mark = "[green]ok[/]    " if problem is None else "[red]FAILED[/]"
        out_console.print(
            f"{mark} {check}" + (f": {escape(problem)}" if problem else ""), soft_wrap=True
        )
    failed = sum(p is not None for p in results.values())
    if failed:
        err_console.print(f"[bold red]{name}: {failed} of {len(results)} checks failed[/]")
        raise typer.Exit(1)
    out_console.print(f"[green]{name} ({algorithms.get(name).__module__}) passes all checks[/]")


__all__ = ["app", "check_algorithm"]
