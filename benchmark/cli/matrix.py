"""``gapbench matrix run|status|stop``: many runs from one YAML file; :data:`DOCS` is the manual."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import ProgressColumn
from rich.table import Table
from rich.text import Text

from gapbench.benchmark.cli.common import (
    TensorBoard,
    fail,
    format_duration,
    out_dir_problem,
    print_json,
    unwrap_help,
    unwrapped_doc,
    use_tensorboard,
)

# The matrix manual: its one copy (the module docstring of gapbench.benchmark.matrix and the
# README point here). Kept in the CLI, not imported from the library, so ``--help`` does not
# import torch; tests check that its YAML parses and its pairing table is spec.REGIME_AXES.
DOCS = unwrap_help("""Run a benchmark matrix: a YAML file that expands to many runs.

Matrix file (every key but tasks and algorithms is optional):

    name: demo                 # default: the file's stem
    out: results/demo          # output folder; --out overrides
    preset: mini               # budget preset: smoke | mini | paper
    budget: {updates: 2000}    # overrides of preset budget fields
    device: cpu                # cpu | cuda | cuda:N
    tasks: [halfcheetah, hopper]
    sim_gaps: ["gravity=2.0"]  # online, hybrid; default [""]
    real_gaps: [""]            # default [""]: the nominal system
    datasets: ["gapbench/{task}/medium-replay-v0"]  # quote {task}
    algorithms:                # label: {algorithm, regime,
      h2o: {}                  #         hparams, budget}
      sac: {}                  # online in the simulator
      sac-oracle: {algorithm: sac, regime: oracle}
      cql: {hparams: {cql_min_q_weight: 5.0}}
    seeds: [0, 1, 2]           # or an int n: seeds 0..n-1
    exclude: [{task: hopper, algorithm: cql}]
    include: [{task: hopper, algorithm: sac, seed: 7}]
    max_runs: 10000            # refuse to expand to more runs

Regime-aware pairing: each label runs in its regime (the algorithm's own unless regime: says
otherwise) and is crossed only with the axes that regime uses:

    offline  tasks x datasets x real_gaps            x seeds
    online   tasks x sim_gaps x real_gaps            x seeds
    oracle   tasks x real_gaps                       x seeds
    hybrid   tasks x sim_gaps x datasets x real_gaps x seeds

Offline and oracle runs have no sim gap, online and oracle runs no dataset. A label's budget
overrides fields of the file's budget, its hparams the algorithm's defaults.

Datasets: "{task}" is replaced by each task, "{real}" by the task plus the real gap's
slug, as gapbench names data gathered on a shifted real system (gapbench/{real}/medium-v1 is
gapbench/hopper-mass_1p5/medium-v1 for real gap mass=1.5, gapbench/hopper/medium-v1 for the
nominal one), and "{version}" by the dataset version of the task's shipped behaviour
policies (gapbench/{task}/medium-v{version}: the data `gapbench datasets build` makes now,
whatever each task's version). A gapbench/TASK... dataset pairs only with its own task, so
a list can also name one dataset per task.

exclude drops every expanded run whose fields all match a rule; a rule's keys are any of
task, gap (or sim_gap), real_gap, dataset, algorithm (the label, i.e. the key under
algorithms:), regime, seed; gaps compare canonically. include adds explicit runs, not
subject to exclude: task and algorithm (a label or a registered name) required; seed
(default 0), gap, real_gap, dataset, regime, hparams (merged over the label's), budget and
label optional. Runs with the same run id collapse to one (the first label wins).
--only KEY=VALUE (run, status; repeatable, all must match) keeps a slice of the
matrix, e.g. one cell whose dataset is not built yet: --only task=walker2d.

OUT/matrix.json, written before anything runs and merged with what earlier matrices wrote
there, maps every run id to its label and cell (task, gap, real_gap, dataset, algorithm,
regime, seed, matrix) for analysis.

Everything is validated before anything is written: one error lists every unknown key, task,
algorithm, regime, gap key, mass.BODY body (against every task it is crossed with), preset,
budget key or value, hyper-parameter name, type or range, device name and missing dataset,
and a malformed entry. The runs are counted before they are built: a matrix that would
expand to more than max_runs (default 10000) is refused, so a typo such as
seeds: 100000000 is one clear error.

Seed groups (local executor; by default for runs on a GPU only): the seeds of one spec
whose algorithm has a seed-batched path (sac, iql, cql, darc, h2o) train as one batched group in
one worker, each seed writing the record its separate run writes (plus seed_group); seeds
with partial state at different updates run separately. On one CPU thread batching broke
even at about 4 seeds and cost 10-20% at 2, and a 6-run matrix on 2 workers took 5% longer
as seed groups (README, Performance): --seed-groups groups CPU runs too, --no-seed-groups
none.

Re-running skips complete runs, resumes interrupted ones from their checkpoint (before it
starts new runs, so compute already spent finishes first), and skips failed ones unless
--retry-failed or they failed on another device (the old summary is kept as
summary.failed-N.json); a done run whose dataset's content changed since runs again (kept
as summary.stale-N.json). A per-run lock, OUT/RUN_ID/.lock, stops two processes running the
same id.

The progress bar counts the runs with a record (ok or failed) and names the stopped ones
beside it; its ETA is the compute `matrix status` says is left (each unfinished run at its
method's pace in the output folder, a running run at its own) spread over the workers,
re-read every 30 s, "unmeasured" for a method with no timed evaluation yet.

`gapbench matrix stop FILE` asks the runs of the output folder to stop: each running run
checkpoints where it stands (between two training steps; a seed group at its next
evaluation) and exits, no new run starts, and `matrix run` says how many stopped and
exits 3 (not 0, so that a script running several matrices in a row stops there too).
The same `matrix run` resumes them exactly, as if never stopped; it clears the request
when it starts. Use it to end a sitting or an allocation without losing the
updates since the last periodic checkpoint. The first Ctrl-C or SIGTERM to `matrix run`
does the same for its own runs only, the folder's other matrices going on (Ray: the tasks
on every node see it through a request file of this matrix's own in the output folder,
removed once they have stopped), and exits 130; a second aborts at once, as a kill does.
""")

EXIT_STOPPED = 3  # `matrix run` after `matrix stop`: runs checkpointed, resumable
_HELP = DOCS.replace("[", r"\[")  # rich markup would eat [tasks]
app = typer.Typer(help=_HELP, no_args_is_help=True, pretty_exceptions_enable=False)
out_console = Console()
err_console = Console(stderr=True)


MatrixFile = Annotated[Path, typer.Argument(help="Matrix YAML file", exists=True, dir_okay=False)]
OutDir = Annotated[Path | None, typer.Option("--out", help="Output folder (overrides out:)")]
Only = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        help="Keep only the runs with this field, KEY=VALUE (repeat for several: all must "
        "match), e.g. --only task=walker2d; keys as in exclude rules",
    ),
]


def _only_rule(only: list[str] | None) -> dict[str, object] | None:
    """``--only task=walker2d --only seed=1`` -> {"task": "walker2d", "seed": 1}."""
    from gapbench.benchmark.matrix import RULE_KEYS

    if not only:
        return None
    rule: dict[str, object] = {}
    for item in only:
        key, sep, value = item.partition("=")
        if not sep or key not in RULE_KEYS:
            valid = ", ".join(RULE_KEYS)
            raise fail(f"--only {item!r}: expected KEY=VALUE with KEY one of {valid}")
        if key == "seed":
            if not value.lstrip("-").isdigit():
                raise fail(f"--only {item!r}: a seed is an integer")
            rule[key] = int(value)
        else:
            rule[key] = value
    return rule


def _load(file: Path, out: Path | None, check_datasets: bool = True, only=None):
    from gapbench.benchmark.matrix import MatrixError, load

    try:
        return load(file, out=out, check_datasets=check_datasets, only=_only_rule(only))
    except MatrixError as e:
        raise fail(str(e)) from None  # fail() escapes rich markup itself


def _setup_logging(console: Console, verbose: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(
        console=console, show_path=False, show_level=False, log_time_format="[%X]", markup=False
    )
    logger = logging.getLogger("gapbench")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    logger.propagate = False


def _score(value: Any) -> str:
    return "" if value is None else f"{value:.1f}"


OK_STATUSES = ("ok", "running", "stopped")  # not failures: the last resumes on the next run

STYLE = {
    "ok": "green",
    "done": "green",
    "failed": "red",
    "crashed": "red",
    "pruned": "yellow",
    "running": "cyan",
    "interrupted": "yellow",
    "stopped": "yellow",
    "missing": "dim",
}


def time_left_text(left: dict[str, Any], parallel: int) -> str:
    """The ETA beside ``matrix run``'s bar, from :func:`~gapbench.benchmark.matrix.work_left`
    (each unfinished run at its method's pace in this matrix), spread over ``parallel``
    workers: a count of runs means nothing when one method's run costs 20 times another's."""
    if not left["runs"] and not left["unmeasured"]:
        return ""
    unmeasured = sum(left["unmeasured"].values())
    if not left["runs"]:
        return f"ETA unknown ({unmeasured} run(s) of unmeasured pace)"
    seconds = left["run_seconds"] / min(parallel, left["runs"])
    eta = f"ETA ~{format_duration(seconds)}" if seconds >= 60 else "ETA <1 min"
    return eta + (f" + {unmeasured} run(s) of unmeasured pace" if unmeasured else "")


class _TimeLeft(ProgressColumn):
    """The column showing :func:`time_left_text`, re-read from the run folders at most every
    ``every`` seconds (a running run's pace is in its curve, one line per evaluation) and
    whenever the plan or a result comes in (:meth:`refresh`)."""

    def __init__(self, matrix, out: Path, every: float = 30.0) -> None:
        super().__init__()
        self.matrix, self.out, self.every, self.parallel = matrix, out, every, 1
        self._text, self._at = "", -float("inf")

    def refresh(self) -> None:
        self._at = -float("inf")

    def render(self, task) -> Text:
        from gapbench.benchmark.matrix import status as matrix_status

        if time.monotonic() - self._at >= self.every:
            self._at = time.monotonic()
            try:
                left = matrix_status(self.matrix, self.out)["left"]
                self._text = time_left_text(left, self.parallel)
            except (OSError, ValueError):  # a file caught half-written: keep the last text
                pass
        return Text(self._text, style="cyan")


@app.command("run", help="Run every run of FILE that has no complete record.\n\n" + _HELP)
def run(
    file: MatrixFile,
    executor: Annotated[str, typer.Option(help="local (process pool) or ray")] = "local",
    workers: Annotated[
        int | None, typer.Option(help="Parallel runs (default: min(#runs, #cpus))", min=1)
    ] = None,
    ray_address: Annotated[
        str | None, typer.Option(help="Join this Ray cluster (default: start a local Ray instance)")
    ] = None,
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            "--cpus-per-run",  # its old name
            help="Torch threads per run (default 1); ray: also the CPUs each task reserves",
            min=1,
        ),
    ] = 1,
    out: OutDir = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs; run nothing")] = False,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Re-run failed runs (their old summary is kept aside)"),
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No per-evaluation log lines")
    ] = False,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print the runs and their status as JSON on stdout (only it)"),
    ] = False,
    tensorboard: TensorBoard = None,
    only: Only = None,
    seed_groups: Annotated[
        bool | None,
        typer.Option(
            "--seed-groups/--no-seed-groups",
            help="local: train the seeds of one spec as one batched seed group in one worker "
            "(algorithms with a seed-batched path; records as separate runs write them, plus "
            "seed_group). Default: runs on a GPU only; --seed-groups: CPU runs too; "
            "--no-seed-groups: every seed a separate run",
            show_default=False,
        ),
    ] = None,
) -> None:
    from gapbench.benchmark.executors import EXECUTORS, RAY_MISSING, import_ray, run_matrix
    from gapbench.benchmark.matrix import status as matrix_status

    if executor not in EXECUTORS:
        raise fail(f"unknown executor {executor!r}; valid: {', '.join(EXECUTORS)}")
    matrix = _load(file, out, check_datasets=not dry_run, only=only)
    out_dir = Path(out or matrix.out)
    if not dry_run and (problem := out_dir_problem(out_dir)):
        raise fail(problem)
    use_tensorboard(tensorboard)
    if dry_run:
        from gapbench.benchmark.matrix import dataset_problems

        for problem in dataset_problems(matrix):
            err_console.print(
                f"[yellow]warning:[/] {problem} (a real run stops here)",
                highlight=False,
                soft_wrap=True,
            )
        report = matrix_status(matrix, out_dir)
        if as_json:
            head = {"matrix": matrix.name, "out": str(out_dir), "dry_run": True}
            return print_json({**head, **report})
        columns = ["label", "gap", "real_gap", "dataset", "seed"]
        if not any(r["real_gap"] for r in report["runs"]):
            columns.remove("real_gap")
        table = Table(title=f"{matrix.name}: {len(matrix)} runs -> {out_dir}")
        table.add_column("run id", no_wrap=True)
        for column in columns:
            table.add_column(column.replace("_", " "))
        table.add_column("status")
        for r in report["runs"]:
            cells = [str(r[c]) if r[c] not in ("", None) else "-" for c in columns]
            table.add_row(r["run_id"], *cells, f"[{STYLE[r['status']]}]{r['status']}[/]")
        out_console.print(table)
        counts = ", ".join(f"{k} {v}" for k, v in report["counts"].items())
        out_console.print(f"{counts}; {matrix.collapsed} duplicate(s) collapsed; nothing run")
        return
    if executor == "ray":
        try:
            import_ray()
        except RuntimeError:
            raise fail(RAY_MISSING) from None

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    _setup_logging(err_console, verbose=not quiet)
    time_left = _TimeLeft(matrix, out_dir)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failures]} failed[/]"),
        TextColumn("[yellow]{task.fields[left]}[/]"),
        TimeElapsedColumn(),
        time_left,
        console=err_console,
    )
    bar = progress.add_task(f"matrix {matrix.name}", total=len(matrix), failures=0, left="")
    # The bar counts runs with a record (ok or failed) only: a run stopped on request, or
    # running in another process, is named beside it, not counted as done.
    failures = 0
    unfinished = Counter()

    def left() -> str:
        return ", ".join(f"{n} {k}" for k, n in unfinished.items() if n)

    def on_plan(todo, known) -> None:
        nonlocal failures
        failures = sum(r["status"] not in OK_STATUSES for r in known.values())
        unfinished["running elsewhere"] = sum(r["status"] == "running" for r in known.values())
        time_left.parallel = workers or min(len(todo), os.cpu_count() or 1) or 1
        time_left.refresh()
        done = len(known) - unfinished["running elsewhere"]
        progress.update(bar, completed=done, failures=failures, left=left())
        logging.getLogger("gapbench.matrix").info(
            "%s: %d runs, %d to run, %d already recorded -> %s",
            matrix.name,
            len(matrix),
            len(todo),
            len(known),
            out_dir,
        )

    def on_result(result) -> None:
        nonlocal failures
        failures += result["status"] not in OK_STATUSES
        unfinished["stopped"] += result["status"] == "stopped"
        finished = result["status"] not in ("stopped", "running")
        time_left.refresh()
        progress.update(bar, advance=int(finished), failures=failures, left=left())

    start = time.perf_counter()
    try:
        with progress:
            results = run_matrix(
                matrix,
                out_dir,
                executor,
                workers,
                retry_failed,
                ray_address,
                threads,
                on_result=on_result,
                on_plan=on_plan,
                seed_groups=seed_groups,
            )
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: re-run the same command to resume")
        raise typer.Exit(130) from None
    except (ValueError, RuntimeError) as e:
        raise fail(str(e)) from None

    labels = {r.run_id: r.label for r in matrix.runs}
    if as_json:
        runs = [{"run_id": k, "label": labels[k], **v} for k, v in results.items()]
        print_json(
            {
                "matrix": matrix.name,
                "out": str(out_dir),
                "seconds": round(time.perf_counter() - start, 1),
                "counts": dict(Counter(r["status"] for r in runs)),
                "runs": runs,
            }
        )
    table = Table(title=f"{matrix.name} ({time.perf_counter() - start:.0f} s) -> {out_dir}")
    table.add_column("run id", no_wrap=True)
    table.add_column("label")
    table.add_column("status")
    table.add_column("final normalized score", justify="right")
    for run_id, result in results.items():
        st = result["status"]
        note = " (recorded)" if result.get("skipped") and st not in ("running", "stopped") else ""
        table.add_row(
            run_id,
            escape(labels[run_id]),  # a label is the user's text, not rich markup
            f"[{STYLE.get(st, 'white')}]{st}[/]{note}",
            _score(result.get("final_normalized_score")),
        )
    (err_console if as_json else out_console).print(table)
    stopped = sum(r["status"] == "stopped" for r in results.values())
    if stopped:
        err_console.print(
            f"[yellow]stopped on request[/]: {stopped} run(s) checkpointed or not started; "
            "re-run the same command to resume",
            soft_wrap=True,
        )
    bad = [r for r in results.values() if r["status"] not in OK_STATUSES]
    if bad:
        # a crashed run has no record yet: the same command resumes it, no flag needed
        crashed = sum(r["status"] == "crashed" for r in bad)
        hints = []
        if len(bad) > crashed:
            hints.append("failed: see OUT/RUN_ID/summary.json, or re-run with --retry-failed")
        if crashed:
            hints.append("crashed: re-run the same command to resume")
        err_console.print(
            f"[bold red]{len(bad)} run(s) did not finish ok[/]; {'; '.join(hints)}",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if stopped:  # not 0: a script running matrices in a row must stop here too
        raise typer.Exit(EXIT_STOPPED)


@app.command("status")
@unwrapped_doc
def status(
    file: MatrixFile,
    out: OutDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
    only: Only = None,
) -> None:
    """Done / failed / running / interrupted / missing runs of a matrix, and which ids;
    runs done per method and task; for each unfinished run, the updates and score of its
    last evaluation; the run-hours the unfinished runs still need, each at the median pace
    of its method's done runs (a running run at its own; a method with none done or
    running, at the pace its interrupted runs logged last).

    running: started, no summary yet, and its lock's process is alive (or on another
    host). interrupted: started, no summary, no live process (the next run resumes it)."""
    from gapbench.benchmark.matrix import status as matrix_status
    from gapbench.benchmark.runstate import stop_requested

    matrix = _load(file, out, check_datasets=False, only=only)
    out_dir = Path(out or matrix.out)
    report = matrix_status(matrix, out_dir)
    report["stop_requested"] = stop_requested(out_dir)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    if report["stop_requested"]:
        out_console.print(
            f"[yellow]stop requested[/] ({out_dir}/STOP): running runs checkpoint and exit; "
            "`matrix run` clears it",
            highlight=False,
        )
    table = Table(
        "status",
        "runs",
        "run ids",
        title=f"{matrix.name}: {report['total']} runs -> {report['out']}",
    )
    for st, ids in report["ids"].items():
        shown = ", ".join(ids[:6]) + (f", ... (+{len(ids) - 6})" if len(ids) > 6 else "")
        table.add_row(f"[{STYLE[st]}]{st}[/]", str(len(ids)), shown if st != "done" else "")
    out_console.print(table)
    out_console.print(_grid_table(report["grid"]))
    left = report["left"]
    if left["runs"] or left["unmeasured"]:
        unmeasured = ", ".join(f"{label} ({n})" for label, n in left["unmeasured"].items())
        out_console.print(
            f"left: ~{left['run_seconds'] / 3600:.1f} run-hours for {left['runs']} unfinished "
            "runs (one worker each; each method at its pace in this matrix)"
            + (f"; not yet measured: {unmeasured}" if unmeasured else ""),
            highlight=False,
        )
    for row in report["runs"]:
        if row["status"] in ("running", "interrupted"):
            progress = (
                "no evaluation yet"
                if row["updates_done"] is None
                else f"{row['updates_done']:,} / {row['updates']:,} updates, last score "
                f"{row['last_normalized_score']:.1f}"
            )
            if row["status"] == "running" and row["updates_per_s"]:
                left = (row["updates"] - row["updates_done"]) / row["updates_per_s"]
                progress += f", {row['updates_per_s']:.1f} updates/s, ~{format_duration(left)} left"
            out_console.print(
                f"[{STYLE[row['status']]}]{row['status']}[/] {row['run_id']} "
                f"({row['label']}): {progress}",
                highlight=False,
            )
        if row["status"] == "failed":
            out_console.print(
                f"[red]failed[/] {row['run_id']} ({row['label']}): {row['error']}",
                highlight=False,
                markup=True,
            )


STYLE_BUSY = ("failed", "running", "interrupted")  # what the grid names beside done / runs


def _grid_table(grid: dict[str, dict[str, dict[str, int]]]) -> Table:
    """Runs done of each method's runs per task ("2/3"), and what the others are doing."""
    tasks = list(dict.fromkeys(task for by_task in grid.values() for task in by_task))
    table = Table("label", *tasks, title="done / runs, per method and task")
    for label, by_task in grid.items():
        cells = []
        for task in tasks:
            counts = by_task.get(task)
            if counts is None:
                cells.append("")
                continue
            busy = [f"[{STYLE[st]}]{n} {st}[/]" for st, n in counts.items() if st in STYLE_BUSY]
            text = f"{counts.get('done', 0)}/{sum(counts.values())}"
            cells.append(text + (f" ({', '.join(busy)})" if busy else ""))
        table.add_row(escape(label), *cells)
    return table


@app.command("stop")
@unwrapped_doc
def stop(
    file: MatrixFile,
    out: OutDir = None,
) -> None:
    """Ask the matrix's running runs to checkpoint where they stand and exit, and its
    `matrix run` to start no new run; the same `matrix run` resumes them exactly.

    Writes OUT/STOP; every process running runs into OUT sees it within seconds and stops
    after its current training step (a hybrid run's step is one collection phase, up to
    1,000 updates; a seed group stops at its next evaluation)."""
    from gapbench.benchmark.runstate import request_stop

    matrix = _load(file, out, check_datasets=False)
    path = request_stop(Path(out or matrix.out))
    out_console.print(
        f"stop requested: {path}. Running runs checkpoint and exit; "
        f"`gapbench matrix run {file}` resumes them (and clears the request).",
        highlight=False,
    )
