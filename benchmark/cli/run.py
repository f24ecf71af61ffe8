"""``gapbench run``: one run, trained and evaluated in its data regime."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from gapbench.benchmark.cli.common import (
    TensorBoard,
    Threads,
    cli_budget,
    err_console,
    fail,
    out_console,
    out_dir_problem,
    parse_pairs,
    print_json,
    use_tensorboard,
)


# mounted on the top-level app as ``gapbench run``
def run(
    task: Annotated[str, typer.Option(help="halfcheetah, hopper, walker2d or ant")],
    algo: Annotated[str, typer.Option(help="Algorithm name (gapbench algos list)")],
    gap: Annotated[str, typer.Option(help="Sim gap spec (online/hybrid), e.g. gravity=2.0")] = "",
    real_gap: Annotated[str, typer.Option(help="Gap of the 'real' system (default nominal)")] = "",
    dataset: Annotated[str | None, typer.Option(help="Dataset id or D4RL HDF5 path")] = None,
    regime: Annotated[
        str | None, typer.Option(help="offline|online|oracle|hybrid (default: the algorithm's)")
    ] = None,
    seed: int = 0,
    seeds: Annotated[
        str | None,
        typer.Option(help="Several seeds (e.g. 0,1,2) trained as one batch in one process"),
    ] = None,
    preset: Annotated[str, typer.Option(help="Budget preset: smoke, mini or paper")] = "smoke",
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Hyper-parameter override key=value")
    ] = None,
    budget: Annotated[
        list[str] | None, typer.Option(help="Budget override key=value, e.g. updates=5000")
    ] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Output folder")] = Path("results/runs"),
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    threads: Threads = 1,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Re-run a failed run (its old summary is kept aside)"),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the run's summary as JSON on stdout (only it)")
    ] = False,
    tensorboard: TensorBoard = None,
) -> None:
    """Train one algorithm in its data regime and evaluate it on the real system.
    A complete record of the same run id is returned as is; an interrupted one resumes.
    Ctrl-C (or SIGTERM) checkpoints the run where it stands and exits; a second one aborts
    at once, losing the updates since the last periodic checkpoint."""
    from gapbench.benchmark.runstate import RunBusy, RunStopped, interrupts_as_stop, run_locked
    from gapbench.benchmark.spec import RunSpec, device_problem, run_problem

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        spec = RunSpec(
            task=task,
            algorithm=algo,
            seed=seed,
            gap=gap,
            real_gap=real_gap,
            dataset=dataset,
            regime=regime,
            hparams=parse_pairs(set_, "--set"),
            preset=preset,
            device=device,
            budget=cli_budget(preset, budget),
        ).resolved()
    except (ValueError, KeyError) as e:
        raise fail(str(e)) from None
    problem = device_problem(spec.device) or run_problem(spec) or out_dir_problem(out_dir)
    if problem:
        raise fail(problem)
    use_tensorboard(tensorboard)
    import torch

    torch.set_num_threads(threads)

    def stopping() -> None:
        err_console.print(
            "[yellow]interrupted[/]: checkpointing where the run stands "
            f"({'at its next evaluation' if seeds else 'within seconds'}; "
            "Ctrl-C again to abort at once)"
        )

    try:  # under the run's lock, as in `matrix run`: one id is never trained twice at once
        with interrupts_as_stop(stopping) as stop:
            if seeds is None:
                results = [(spec, *run_locked(spec, out_dir, retry_failed, None, stop))]
            else:  # every seed under its own lock, trained as one batch (seedgroup.py)
                from gapbench.benchmark.seedgroup import parse_seeds, run_group_locked, seed_specs

                try:
                    specs = seed_specs(spec, parse_seeds(seeds))
                except ValueError as e:
                    raise fail(str(e)) from None
                results = [
                    (s, *result)
                    for s, result in zip(
                        specs,
                        run_group_locked(specs, out_dir, retry_failed, stop=stop),
                        strict=True,
                    )
                ]
    except RunBusy as busy:
        raise fail(f"run {spec.run_id} is being trained by another process ({busy})") from None
    except RunStopped as stopped:
        err_console.print(f"[yellow]stopped[/]: {stopped}; the same command resumes it")
        raise typer.Exit(130) from None
    shown = []
    for spec, summary, recorded in results:
        path = out_dir / spec.run_id
        shown.append({"run_id": spec.run_id, "path": str(path), "recorded": recorded, **summary})
        if summary["status"] != "ok":
            hint = " (recorded earlier: --retry-failed runs it again)" if recorded else ""
            err_console.print(
                f"[bold red]run {spec.run_id} {summary['status']}:[/] "
                f"{escape(str(summary.get('error')))}{hint}",
                soft_wrap=True,
            )
            continue
        (err_console if as_json else out_console).print(
            f"[green]done[/] {spec.run_id}: final normalized score "
            f"{summary['final_normalized_score']:.1f} (return {summary['final_return']:.1f}), "
            f"{summary['updates_per_s']:.1f} updates/s -> {path}"
        )
    if as_json:  # failed runs too: a script reads the status and error from it
        print_json(shown if seeds is not None else shown[0])
    if any(summary["status"] != "ok" for _, summary, _ in results):
        raise typer.Exit(1)


__all__ = ["run"]
