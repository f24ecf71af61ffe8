"""The ``gapbench`` command line."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gapbench.benchmark.cli_common import Threads, fail, out_dir_problem, parse_pairs, print_json

app = typer.Typer(
    help="gapbench: sim-to-real gap benchmarks for RL (H2O, DARC, CQL, SAC, IQL).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
envs_app = typer.Typer(help="Tasks and their shifted simulators.", no_args_is_help=True)
algos_app = typer.Typer(help="Registered algorithms.", no_args_is_help=True)
app.add_typer(envs_app, name="envs")
app.add_typer(algos_app, name="algos")

out = Console()
err = Console(stderr=True)


# -- envs ------------------------------------------------------------------------------
@envs_app.command("list")
def envs_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the tasks."""
    from gapbench.gap_envs import TASKS

    rows = [
        {
            "task": t.name,
            "gym_id": t.gym_id,
            "gapbench_id": t.gapbench_id,
            "obs_dim": t.obs_dim,
            "act_dim": t.act_dim,
            "random_score": t.random_score,
            "expert_score": t.expert_score,
        }
        for t in TASKS.values()
    ]
    if as_json:
        return print_json(rows)
    table = Table("task", "gymnasium id", "obs", "act", "D4RL random / expert return")
    for r in rows:
        table.add_row(
            r["task"],
            r["gapbench_id"],
            str(r["obs_dim"]),
            str(r["act_dim"]),
            f"{r['random_score']:.1f} / {r['expert_score']:.1f}",
        )
    out.print(table)


@envs_app.command("describe")
def envs_describe(
    task: str,
    gap: Annotated[str, typer.Option(help="Gap spec, e.g. gravity=2.0,friction=0.3")] = "",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Show the nominal and shifted physics that a gap spec touches."""
    from gapbench.gap_envs import describe

    try:
        info = describe(task, gap)
    except ValueError as e:
        raise fail(str(e)) from None
    if as_json:
        return print_json(info)
    out.print(f"[bold]{task}[/] ({info['gym_id']})  gap: [cyan]{info['gap'] or 'nominal'}[/]")
    table = Table("quantity", "nominal", "shifted")
    fmt = lambda v: "[" + ", ".join(f"{x:.4g}" for x in v) + "]"  # noqa: E731
    table.add_row("gravity", fmt(info["nominal_gravity"]), fmt(info["gravity"]))
    table.add_row("total mass", f"{info['nominal_total_mass']:.4g}", f"{info['total_mass']:.4g}")
    for body, mass in info["body_mass"].items():
        if body != "world":
            table.add_row(f"  mass {body}", f"{info['nominal_body_mass'][body]:.4g}", f"{mass:.4g}")
    for geom, nom, new in zip(
        info["geoms"], info["nominal_friction"], info["friction"], strict=True
    ):
        table.add_row(f"  friction {geom}", fmt(nom), fmt(new))
    table.add_row("joint noise std", "0", f"{info['joint_noise']:g}")
    out.print(table)


# -- algos -----------------------------------------------------------------------------
def _warn_broken_plugins() -> dict[str, str]:
    """One warning line per plug-in that fails to load; the rest of the tool works on."""
    from gapbench import algorithms

    problems = algorithms.broken()
    for message in problems.values():
        err.print(f"[yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return problems


@algos_app.command("list")
def algos_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List algorithms with their regime and hyper-parameter defaults."""
    from gapbench import algorithms

    problems = _warn_broken_plugins()
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
    out.print(table)


@app.command("check-algorithm")
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
        out.print(f"{mark} {check}" + (f": {escape(problem)}" if problem else ""), soft_wrap=True)
    failed = sum(p is not None for p in results.values())
    if failed:
        err.print(f"[bold red]{name}: {failed} of {len(results)} checks failed[/]")
        raise typer.Exit(1)
    out.print(f"[green]{name} ({algorithms.get(name).__module__}) passes all checks[/]")


# -- run -------------------------------------------------------------------------------


@app.command()
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
) -> None:
    """Train one algorithm in its data regime and evaluate it on the real system.
    A complete record of the same run id is returned as is; an interrupted one resumes."""
    from gapbench.benchmark.runstate import RunBusy, run_locked
    from gapbench.benchmark.spec import RunSpec, device_problem, preset_budget, run_problem

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
            budget=preset_budget(
                preset, **{k: int(v) for k, v in parse_pairs(budget, "--budget").items()}
            )
            if budget
            else None,
        ).resolved()
    except (ValueError, KeyError) as e:
        raise fail(str(e)) from None
    problem = device_problem(spec.device) or run_problem(spec) or out_dir_problem(out_dir)
    if problem:
        raise fail(problem)
    import torch

    torch.set_num_threads(threads)
    try:  # under the run's lock, as in `matrix run`: one id is never trained twice at once
        summary, recorded = run_locked(spec, out_dir, retry_failed, progress=None)
    except RunBusy as busy:
        raise fail(f"run {spec.run_id} is being trained by another process ({busy})") from None
    path = out_dir / spec.run_id
    if as_json:  # failed runs too: a script reads the status and error from it
        print_json({"run_id": spec.run_id, "path": str(path), "recorded": recorded, **summary})
    if summary["status"] != "ok":
        hint = " (recorded earlier: --retry-failed runs it again)" if recorded else ""
        err.print(
            f"[bold red]run {spec.run_id} {summary['status']}:[/] "
            f"{escape(str(summary.get('error')))}{hint}",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    (err if as_json else out).print(
        f"[green]done[/] {spec.run_id}: final normalized score "
        f"{summary['final_normalized_score']:.1f} (return {summary['final_return']:.1f}), "
        f"{summary['updates_per_s']:.1f} updates/s -> {path}"
    )


@app.command()
def bench(
    algo: Annotated[
        list[str] | None, typer.Option(help="Algorithm(s) to time (default: all)")
    ] = None,
    seconds: Annotated[float, typer.Option(help="Seconds of timing per algorithm")] = 5.0,
    task: Annotated[str, typer.Option(help="Task whose sizes to use")] = "halfcheetah",
    device: str = "cpu",
    threads: Threads = 1,
    profile: Annotated[
        bool, typer.Option(help="Also profile where each update's time goes")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Time each algorithm's update at its published sizes on random data (updates/s),
    so you can plan budgets on your own hardware. Also prints each update's FLOPs and the
    bound they imply at this machine's measured matmul throughput."""
    import torch

    from gapbench import algorithms
    from gapbench.benchmark.spec import device_problem
    from gapbench.benchmark.speed import (
        matmul_flops_per_second,
        profile_update,
        update_flops,
        updates_per_second,
    )
    from gapbench.gap_envs import UnknownTaskError, get_task

    torch.set_num_threads(threads)
    names = algo or [n for n in algorithms.names() if n not in _warn_broken_plugins()]
    try:
        get_task(task)
        for name in names:
            algorithms.get(name)
    except (KeyError, UnknownTaskError) as e:
        raise fail(str(e)) from None
    if problem := device_problem(device):
        raise fail(problem)
    matmul = matmul_flops_per_second(device=device)
    if not as_json:
        out.print(
            f"matmul throughput (256x256x256, {torch.get_num_threads()} threads): "
            f"{matmul / 1e9:.1f} GFLOP/s"
        )
        head = f"{'algo':>6} {'updates/s':>10} {'GFLOP/update':>13} {'bound':>10} {'of bound':>9}"
        out.print(head + ("   time in matmul / optimizer / other" if profile else ""))
    rows = []
    for name in names:
        rate = updates_per_second(name, seconds, device, task)
        flops = update_flops(name, task, device)
        bound = matmul / flops
        shares = profile_update(name, task, device) if profile else None
        rows.append(
            {
                "algo": name,
                "updates_per_s": rate,
                "gflop_per_update": flops / 1e9,
                "matmul_gflop_per_s": matmul / 1e9,
                "flop_bound_updates_per_s": bound,
                "fraction_of_bound": rate / bound,
                **({"time_shares": shares} if shares else {}),
                "task": task,
                "device": device,
                "threads": torch.get_num_threads(),
            }
        )
        if not as_json:
            text = f"{name:>6} {rate:10.1f} {flops / 1e9:13.2f} {bound:10.1f} {rate / bound:9.0%}"
            if shares:
                text += "   {matmul:.0%} / {optimizer:.0%} / {other:.0%}".format(**shares)
            out.print(text)
    if as_json:
        print_json(rows)


behavior_app = typer.Typer(help="Behaviour policies for the graded datasets.", no_args_is_help=True)
app.add_typer(behavior_app, name="behavior")


@behavior_app.command("train")
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
    """Train SAC on the real system, saving evaluated actor snapshots; resumes if killed."""
    from gapbench.benchmark.behavior import train_behavior

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    command = "gapbench behavior train " + " ".join(sys.argv[3:])
    try:
        summary = train_behavior(
            task, out_dir, real_gap, steps, seed, snapshot_every, device, command=command
        )
    except (ValueError, KeyError) as e:
        raise fail(str(e)) from None
    if summary["status"] != "ok":
        raise fail(f"training failed: {summary.get('error')}")
    out.print(f"[green]done[/]: best normalized score {summary['best_normalized_score']:.1f}")


@behavior_app.command("publish")
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
        out.print(
            f"{label}: {r['label']} ({r['steps']} steps), return {r['return_mean']:.0f} "
            f"± {r['return_std']:.0f} over {r['eval_episodes']} fresh episodes, normalized "
            f"{r['normalized_score']:.1f} (training evaluation: {r['train_normalized_score']:.1f})"
        )
    out.print(f"medium-replay snapshots: {', '.join(chosen['replay_snapshots'])}")
    out.print(f"dataset ids of {task}: gapbench/{task}/<quality>-v{chosen['dataset_version']}")


def _mount_optional() -> None:
    """Sub-commands that live in their own modules."""
    import importlib

    for module, name in (
        ("gapbench.benchmark.cli_datasets", "datasets"),
        ("gapbench.benchmark.cli_matrix", "matrix"),
        ("gapbench.benchmark.cli_tune", "tune"),
        ("gapbench.benchmark.cli_report", "report"),
    ):
        try:
            sub = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        app.add_typer(sub.app, name=name)


_mount_optional()


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    # SIGTERM (a scheduler's stop, `kill`) takes the Ctrl-C path: workers are stopped,
    # checkpoints kept, and the command says how to resume, instead of dying mid-write.
    signal.signal(signal.SIGTERM, _interrupt)
    app()


if __name__ == "__main__":
    main()
