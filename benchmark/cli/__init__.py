"""The ``gapbench`` command line: a thin layer that parses options, calls one library
function and prints. One module per command group; this one mounts them."""

from __future__ import annotations

import signal

import typer

from gapbench.benchmark.cli import (
    algos,
    behavior,
    bench,
    datasets,
    envs,
    matrix,
    report,
    run,
    tune,
)

app = typer.Typer(
    help="gapbench: sim-to-real gap benchmarks for RL (H2O, DARC, CQL, SAC, IQL).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# the order of the help listing
app.add_typer(envs.app, name="envs")
app.add_typer(algos.app, name="algos")
app.command("check-algorithm")(algos.check_algorithm)
app.command()(run.run)
app.command()(bench.bench)
app.add_typer(behavior.app, name="behavior")
app.add_typer(datasets.app, name="datasets")
app.add_typer(matrix.app, name="matrix")
app.add_typer(tune.app, name="tune")
app.add_typer(report.app, name="report")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # SIGTERM (a scheduler's stop, `kill`) takes the Ctrl-C path: workers are stopped,
    # checkpoints kept, and the command says how to resume, instead of dying mid-write.
    signal.signal(signal.SIGTERM, _interrupt)
    app()


__all__ = ["app", "main"]
