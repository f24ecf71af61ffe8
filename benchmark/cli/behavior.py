"""``gapbench behavior train|publish``: behaviour policies for the graded datasets."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from gapbench.benchmark.cli.common import err_console, fail, out_console

app = typer.Typer(help="Behaviour policies for the graded datasets.", no_args_is_help=True)


@app.command("train")
def behavior_train(
    task: Annotated[str, typer.Option(help="Task to train on (its real system)")],
    real_gap: Annotated[str, typer.Option(help="Gap of the real system (default nominal)")] = "",
    steps: Annotated[int, typer.Option(help="SAC updates (one env step each)")] = 1_000_000,
    seed: int = 0,
    snapshot_every: Annotated[int, typer.Option(help="Env steps between snapshots")] = 10_000,
    out_dir: Annotated[Path, typer.Option("--out", help="Training folder")] = Path(
        "results/behavior"
    ),
    device: str = "cpu",
) -> None:
    """Train SAC on the real system, saving evaluated actor snapshots; resumes if killed.
    Ctrl-C (or SIGTERM) checkpoints where it stands and exits; a second aborts at once."""
    from gapbench.benchmark.behavior import train_behavior
    from gapbench.benchmark.runstate import RunStopped, interrupts_as_stop

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = "gapbench behavior train " + " ".join(sys.argv[3:])

    def stopping() -> None:
        err_console.print(
            "[yellow]interrupted[/]: checkpointing where the training stands "
            "(Ctrl-C again to abort at once)"
        )

    try:
        with interrupts_as_stop(stopping) as stop:
            summary = train_behavior(
                task, out_dir, real_gap, steps, seed, snapshot_every, device, command, stop=stop
            )
    except (ValueError, KeyError) as e:
        raise fail(str(e)) from None
    except RunStopped as stopped:
        err_console.print(f"[yellow]stopped[/]: {stopped}; the same command resumes it")
        raise typer.Exit(130) from None
    if summary["status"] != "ok":
        raise fail(f"training failed: {summary.get('error')}")
    out_console.print(
        f"[green]done[/]: best normalized score {summary['best_normalized_score']:.1f}"
    )


@app.command("publish")
def behavior_publish(
    task: Annotated[str, typer.Option(help="Task of the snapshots")],
    source: Annotated[
        Path,
        typer.Option(
            "--from", help="Policy folder of a training run (results/behavior/<run_id>/snapshots)"
        ),
    ],
    dest: Annotated[
        Path | None,
        typer.Option(help="Policy folder to publish into (default: the shipped gap_envs/policies)"),
    ] = None,
) -> None:
    """Pick the medium and expert snapshots of a training run and publish them, with every
    earlier snapshot (medium-replay's behaviour), where the dataset builder finds them."""
    from gapbench.benchmark.behavior import publish

    try:
        chosen = publish(task, source, dest)
    except (ValueError, KeyError, OSError) as e:
        raise fail(str(e)) from None
    for label in ("medium", "expert"):
        r = chosen[label]
        out_console.print(
            f"{label}: {r['label']} ({r['steps']} steps), return {r['return_mean']:.0f} "
            f"± {r['return_std']:.0f} over {r['eval_episodes']} fresh episodes, normalized "
            f"{r['normalized_score']:.1f} (training evaluation: {r['train_normalized_score']:.1f})"
        )
    medium = chosen["medium"]
    if not medium["medium_in_band"]:
        lo, hi = medium["medium_band"]
        out_console.print(
            f"[yellow]note[/]: no kept snapshot scored in medium's band ({lo:.1f}-{hi:.1f}, "
            f"1/3-1/2 of the expert); {medium['label']} is the nearest to its middle"
        )
    out_console.print(f"medium-replay snapshots: {', '.join(chosen['replay_snapshots'])}")
    out_console.print(
        f"dataset ids of {task}: gapbench/{task}/<quality>-v{chosen['dataset_version']}"
    )


__all__ = ["app"]
