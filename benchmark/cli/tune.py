"""``gapbench tune``: hyper-parameter tuning with Optuna on top of the harness; :data:`DOCS`
is the manual."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from gapbench.benchmark.cli.common import (
    Threads,
    cli_budget,
    fail,
    out_dir_problem,
    parse_pairs,
    print_json,
    unwrap_help,
)

# The tuning manual: its one copy (the module docstring of gapbench.benchmark.tuning and the
# README point here). Kept in the CLI, not imported from the library, so ``--help`` does not
# import torch. The library's TuneConfig fields are these options without the dashes.
DOCS = unwrap_help(
    """Tune an algorithm's hyper-parameters with Optuna: each trial is K ordinary runs
(--seeds K, seeds --seed-start .. --seed-start + K - 1, one after the other) recorded under
OUT/trials/, so the analysis code reads trials like any run.

Objective: the normalized score on the trials' real system, the mean over the K seeds of the
mean of each run's last --last-k evaluations (all of them when a run has fewer), maximized.

WARNING, protocol: tuning on the same real system (and seeds) that the final comparison
reports is OPTIMISTIC: it selects hyper-parameters on the test system, which a sim-to-real
user cannot do. Tune every compared method with the same budget and say so, or hold out:
--objective-gap SPEC evaluates trials on a different real gap than the comparison's (the
trials' real_gap), and --seed-start 1000 tunes on seeds the comparison never uses.

Pruning: every evaluation is reported to Optuna, so --pruner stops bad trials early (the run
is recorded with status pruned, the trial marked PRUNED). Seed i's evaluation at update u is
reported at step i * updates + u as the running mean over seeds 0..i at update u, so trials
are always compared at the same (seed, update). median starts after 5 complete trials and
never prunes before a quarter of the first seed's updates; hyperband's resources run from
eval_every to K * updates.

Search space: each algorithm declares one (gapbench algos list; the search_space attribute).
--space FILE (YAML) merges over it, optionally under the algorithm's name (one file for
several algorithms): a new name adds a parameter, a known one is replaced, null drops one,
and "_inherit: false" makes the file the whole space. --set fixes a hyper-parameter (it is
removed from the space, never tuned):

    penalty_weight: {type: float, low: 0.001, high: 1.0, log: true}
    u_n_next_states: {type: int, low: 5, high: 20, step: 5}
    disc_noise_std: {type: categorical, choices: [0.05, 0.1, 0.2]}
    hidden: [[256, 256], [64, 64]]      # a list = categorical choices
    critic_lr: null                     # not tuned

float and int take low, high and optionally log and step; categorical takes choices (null,
bool, number or string; a list choice such as [64, 64] is passed as "64,64" and coerced to
the field's type).

Storage: default sqlite:///OUT/optuna.db; any SQLAlchemy URL (postgresql://..., mysql://...)
to share a study between machines (SQL storages keep a heartbeat: a trial whose process died
is marked FAIL when a later worker starts); journal:PATH for Optuna's journal file storage,
safest for many processes on one machine or a shared file system. Re-running with the same --study
(default: ALGO-TASK-HASH of the setup) and storage continues the study with --trials more
trials; a study remembers its setup (task, gaps, dataset, budget, seeds, --last-k, --set) and
refuses to continue with a different one. --workers N runs N trial processes on this machine
against the shared storage, each with --threads torch threads.

Ctrl-C (or SIGTERM): the running trials' runs checkpoint where they stand, each such trial
is enqueued again with the same hyper-parameters (it ends FAIL, with a "stopped" user
attribute), no new trial starts, the outputs are written, and tune exits 130. The same
command then resumes the enqueued trials from their checkpoints first (same run ids). A
second Ctrl-C aborts at once, losing the updates since the runs' last periodic checkpoint.

Records: a run id depends only on its spec, so a trial that samples hyper-parameters already
run reuses their record (a pruned one is run again); a lock in OUT/.locks/ stops two workers
training the same run. Each trial's user attributes hold its run ids, its hyper-parameters
(fixed and sampled, resolved) and its per-seed scores.

Each run's evaluations show on stderr as they come ("trial N: ALGO TASK update U/UPDATES
...", several workers interleaved), and after each trial one line shows the trials done of
--trials, the trial's state, value and parameters, and the study's best so far.

Outputs in OUT (default results/tune/ALGO-TASK; one OUT per study, as best.yaml, plots/ and
trials.csv are rewritten by every invocation; storage and trials/ can be shared): best.yaml,
the best hyper-parameters as a matrix snippet {algorithms: {ALGO: {hparams: {...}}}} to merge
into a matrix file (another regime than the algorithm's adds algorithm and regime, under the
label ALGO-REGIME), with the study, objective and protocol in comments; plots/*.png
(optimization history, intermediate values, parameter importances, parallel coordinates; a
plot that cannot be made yet is skipped with a note); trials.csv; trials/RUN_ID/ run records.
Open the study with optuna-dashboard STORAGE (pip install optuna-dashboard).

Bad search spaces, storages, samplers, pruners, tasks, gaps, datasets or hyper-parameters are
reported (exit 2) before any trial starts.
"""
)

_HELP = DOCS.replace("[", r"\[")  # rich markup would eat [0.05, ...]
app = typer.Typer(help=_HELP, pretty_exceptions_enable=False, subcommand_metavar="")
out_console = Console(soft_wrap=True)  # paths and commands stay copy-pasteable
err_console = Console(stderr=True)


@app.callback(invoke_without_command=True, help=_HELP)
def tune(
    algo: Annotated[str, typer.Option(help="Algorithm to tune (gapbench algos list)")],
    task: Annotated[str, typer.Option(help="halfcheetah, hopper, walker2d or ant")],
    gap: Annotated[str, typer.Option(help="Sim gap spec (online/hybrid), e.g. gravity=2.0")] = "",
    dataset: Annotated[str | None, typer.Option(help="Dataset id or D4RL HDF5 path")] = None,
    regime: Annotated[
        str | None, typer.Option(help="offline|online|oracle|hybrid (default: the algorithm's)")
    ] = None,
    trials: Annotated[int, typer.Option(help="Trials to add to the study", min=1)] = 20,
    seeds: Annotated[int, typer.Option(help="Seeds (runs) per trial", min=1)] = 1,
    seed_start: Annotated[
        int, typer.Option(help="First seed; e.g. 1000 for seeds the comparison never uses", min=0)
    ] = 0,
    preset: Annotated[str, typer.Option(help="Budget preset: smoke, mini or paper")] = "smoke",
    budget: Annotated[
        list[str] | None, typer.Option(help="Budget override key=value, e.g. updates=5000")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Fixed hyper-parameter key=value (removed from the space)"),
    ] = None,
    space: Annotated[
        Path | None,
        typer.Option(help="YAML search space merged over the algorithm's", dir_okay=False),
    ] = None,
    study: Annotated[
        str | None, typer.Option(help="Study name (default: ALGO-TASK-HASH of the setup)")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            help="sqlite:///PATH, an SQLAlchemy URL, or journal:PATH (default OUT/optuna.db)"
        ),
    ] = None,
    workers: Annotated[int, typer.Option(help="Parallel trial processes", min=1)] = 1,
    threads: Threads = 1,
    sampler: Annotated[str, typer.Option(help="tpe, random or cmaes")] = "tpe",
    sampler_seed: Annotated[int | None, typer.Option(help="Sampler seed (worker i: +i)")] = None,
    pruner: Annotated[str, typer.Option(help="median, hyperband or none")] = "median",
    objective_gap: Annotated[
        str,
        typer.Option(
            help="Held-out real gap the trials are evaluated on (default: nominal = the "
            "comparison's real system, optimistic)"
        ),
    ] = "",
    last_k: Annotated[
        int, typer.Option(help="Evaluations averaged at the end of each run", min=1)
    ] = 3,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default results/tune/ALGO-TASK)")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    plots: Annotated[bool, typer.Option(help="Save Optuna's plots in OUT/plots")] = True,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the study's outcome as JSON on stdout (only it)")
    ] = False,
) -> None:
    from gapbench.benchmark.tuning import TuneConfig, TuningError, prepare, run_prepared

    out_dir = out_dir or Path("results/tune") / f"{algo}-{task}"
    if problem := out_dir_problem(out_dir):
        raise fail(problem)
    try:
        config = TuneConfig(
            algorithm=algo,
            task=task,
            gap=gap,
            dataset=dataset,
            regime=regime,
            hparams=parse_pairs(set_ or [], "--set"),
            preset=preset,
            budget=cli_budget(preset, budget),
            seeds=seeds,
            seed_start=seed_start,
            objective_gap=objective_gap,
            last_k=last_k,
            trials=trials,
            study=study,
            storage=storage,
            workers=workers,
            threads=threads,
            sampler=sampler,
            sampler_seed=sampler_seed,
            pruner=pruner,
            space=space,
            out=out_dir,
            device=device,
            plots=plots,
            verbose=True,
        )
        prepared = prepare(config)
    except (TuningError, ValueError, KeyError) as e:
        raise fail(str(e)) from None
    try:
        result = run_prepared(prepared)
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]: re-run the same command to continue the study")
        raise typer.Exit(130) from None

    if as_json:
        print_json(dataclasses.asdict(result))
    # the human summary; on stderr when stdout carries the JSON
    console = Console(soft_wrap=True, stderr=True) if as_json else out_console
    states = ", ".join(f"{k.lower()} {v}" for k, v in sorted(result.states.items()))
    console.print(
        f"[green]study[/] {result.study_name}: {result.n_trials} trial(s) ({states})",
        highlight=False,
    )
    if result.best_value is not None:
        console.print(
            f"best: trial {result.best_trial}, objective {result.best_value:.3f}, "
            f"hparams {result.best_hparams}",
            highlight=False,
            markup=False,
        )
    for note in result.notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    for name, path in result.files.items():
        label = {"best": "best.yaml", "trials_csv": "trials.csv"}.get(name, name.replace("_", " "))
        console.print(f"{label}: {path}", highlight=False, markup=False)
    console.print(
        f"open the study: {result.dashboard}  (pip install optuna-dashboard)",
        highlight=False,
        markup=False,
    )
    if result.stopped:
        err_console.print(
            "[yellow]stopped on request[/]: the running trials checkpointed and are enqueued "
            "again; re-run the same command to resume them",
            soft_wrap=True,
        )
        raise typer.Exit(130)
    if result.best_value is None:
        raise typer.Exit(1)
