"""``gapbench envs list|describe|transfer``: the tasks and their shifted simulators."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from gapbench.benchmark.cli.common import fail, out_console, print_json

app = typer.Typer(help="Tasks and their shifted simulators.", no_args_is_help=True)


@app.command("list")
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
    out_console.print(table)


@app.command("describe")
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
    out_console.print(
        f"[bold]{task}[/] ({info['gym_id']})  gap: [cyan]{info['gap'] or 'nominal'}[/]"
    )
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
    out_console.print(table)


@app.command("transfer")
def envs_transfer(
    task: str,
    gap: Annotated[
        list[str],
        typer.Option(help="Gap spec of a simulator, e.g. friction=0.3; repeat to compare several"),
    ],
    policy: Annotated[
        str, typer.Option(help="Shipped behaviour snapshot: expert, medium, or a step label")
    ] = "expert",
    episodes: Annotated[int, typer.Option(min=1, help="Deterministic episodes per system")] = 10,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The gap's size, measured: a shipped behaviour policy (trained on the real system)
    run on the real system and in each shifted simulator, from the same initial states."""
    from gapbench.benchmark import policies
    from gapbench.benchmark.behavior import reevaluate
    from gapbench.gap_envs import describe

    if not all(gap):
        raise fail("--gap is empty: give the simulator's shift, e.g. --gap friction=0.3")
    try:
        for g in gap:  # the task and every gap spec, checked before any episode
            describe(task, g)
        rows = [
            {"system": "real" if not g else "simulator", "gap": g,
             **reevaluate(task, policy, None, g, episodes)}
            for g in ["", *gap]
        ]  # fmt: skip
    except (ValueError, policies.SnapshotError) as e:
        raise fail(str(e)) from None
    real = rows[0]["return_mean"]
    for r in rows:
        r["change"] = (r["return_mean"] - real) / abs(real) if real else None
    if as_json:
        return print_json({"task": task, "policy": policy, "systems": rows})
    out_console.print(
        f"[bold]{task}[/]: behaviour snapshot [cyan]{policy}[/], {episodes} deterministic "
        "episodes on each system, the same initial states"
    )
    table = Table("system", "gap", "return", "normalized", "vs real")
    for r in rows:
        table.add_row(
            r["system"],
            r["gap"] or "nominal",
            f"{r['return_mean']:.0f} ± {r['return_std']:.0f}",
            f"{r['normalized_score']:.1f}",
            "" if r["change"] is None or not r["gap"] else f"{100 * r['change']:+.0f}%",
        )
    out_console.print(table)


__all__ = ["app"]
