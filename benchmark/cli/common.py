"""What every ``gapbench`` sub-command shares: clear errors, JSON output, help text,
``key=value`` options."""

from __future__ import annotations

import inspect
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

out_console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print a clear error on stderr (no traceback) and return the exit-2 exception to raise.
    The message is escaped: values such as ``[1e-5, 1]`` are not rich markup."""
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


#: ``--threads`` of run, tune, bench and matrix run. One torch thread per process by
#: default: these small updates gain little from more intra-op threads, and with any other
#: process on the machine OpenMP threads spin against each other (IQL on a busy 2-core
#: machine: 33 updates/s with 1 thread, 8 with 2).
Threads = Annotated[int, typer.Option("--threads", min=1, help="torch threads per run (default 1)")]


def warn_broken_plugins() -> dict[str, str]:
    """One warning line per plug-in that fails to load; the rest of the tool works on."""
    from gapbench import algorithms

    problems = algorithms.broken()
    for message in problems.values():
        err_console.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return problems


def print_json(data: Any) -> None:
    """Pure JSON on stdout (progress and errors go to stderr)."""
    # default=str: paths and the like in summaries print as text, not a TypeError
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def unwrap_help(text: str) -> str:
    """Join the lines of prose paragraphs (the help renderer keeps line breaks); indented
    blocks stay as they are."""
    paragraphs = []
    for para in text.strip("\n").split("\n\n"):
        lines = para.split("\n")
        if any(line.startswith("    ") for line in lines):
            paragraphs.append(para)
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs) + "\n"


def format_duration(seconds: float) -> str:
    """'42 min', '3 h 05 min'."""
    minutes = int(round(seconds / 60))
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def unwrapped_doc(fn):
    """A command whose docstring's paragraphs are unwrapped (:func:`unwrap_help`): Typer
    keeps the line breaks of every paragraph after the first."""
    fn.__doc__ = unwrap_help(inspect.cleandoc(fn.__doc__ or ""))
    return fn


def parse_pairs(items: list[str] | None, option: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; a malformed item fails clearly."""
    result = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"{option} expects key=value, got {item!r}")
        result[key.strip()] = value.strip()
    return result


def cli_budget(preset: str, items: list[str] | None) -> Any:
    """The Budget of ``--preset`` with the ``--budget key=value`` overrides of run and tune,
    or None when there are none (the spec then takes the preset's own). Parsed by the same
    function as a matrix file's ``budget:``, so both accept and refuse the same values."""
    if not items:
        return None
    from gapbench.benchmark.spec import BudgetError, preset_budget  # imports torch: not at --help

    try:
        return preset_budget(preset, parse_pairs(items, "--budget"))
    except BudgetError as err:
        raise fail(f"--budget: {err}") from None


def out_dir_problem(path: Path, option: str = "--out") -> str | None:
    """Why results cannot be written under ``path`` (checked before anything runs), or None.
    A folder that does not exist yet is fine when its nearest existing parent is writable."""
    path = Path(path)
    existing = next(p for p in (path, *path.parents) if p.exists() or p == Path(p.anchor))
    if not existing.is_dir():
        return f"{option} {path}: {existing} is not a directory; valid: a writable folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{option} {path}: {existing} is not writable; valid: a writable folder"
    return None


TensorBoard = Annotated[
    Path | None,
    typer.Option(
        "--tensorboard",
        help="Also log every training metric and evaluation as TensorBoard scalars under "
        "DIR/<run_id> (needs: pip install 'gapbench[tensorboard]')",
        file_okay=False,
    ),
]


def use_tensorboard(folder: Path | None) -> None:
    """Hand the folder to every run of this command, the matrix's worker processes included."""
    if folder is not None:
        from gapbench.benchmark.harness import TENSORBOARD_ENV

        os.environ[TENSORBOARD_ENV] = str(folder.resolve())
