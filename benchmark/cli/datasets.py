"""``gapbench datasets ...``: build, list and inspect the offline datasets of real transitions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gapbench.benchmark.cli.common import fail, print_json

app = typer.Typer(
    help=(
        "Offline datasets of real transitions, built the way D4RL built its MuJoCo datasets "
        "and stored as Minari datasets."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir",
        help="Dataset folder (default: $GAPBENCH_DATA_DIR, else $MINARI_DATASETS_PATH, "
        "else ~/.minari/datasets).",
    ),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print pure JSON to stdout.")]


def _errors() -> tuple[type[BaseException], ...]:
    # Every gapbench error (DatasetError, SnapshotError, UnknownTaskError, GapSpecError) is a
    # ValueError; OSError covers unreadable/unwritable folders.
    return (ValueError, OSError)


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


@app.command("build")
def build_cmd(
    task: Annotated[str, typer.Option("--task", help="Task: halfcheetah, hopper, walker2d, ant.")],
    quality: Annotated[
        str,
        typer.Option(
            "--quality",
            help="random, medium, medium-replay, expert or medium-expert (D4RL's qualities).",
        ),
    ],
    size: Annotated[
        int | None,
        typer.Option(
            "--size",
            help="Transitions to store (default 1000000, D4RL's size; --size 100000 for a "
            "quick one).",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the rollouts.")] = 0,
    real_gap: Annotated[
        str,
        typer.Option(
            "--real-gap",
            help="Gap spec of the real system the data is gathered on (default: nominal), "
            "e.g. gravity=2.0; it is encoded in the dataset id.",
        ),
    ] = "",
    data_dir: DataDir = None,
    policy_dir: Annotated[
        Path | None,
        typer.Option(
            "--policy-dir",
            help="Behaviour-policy snapshots (default: $GAPBENCH_POLICY_DIR, else the "
            "snapshots shipped in gap_envs/policies/).",
        ),
    ] = None,
    num_envs: Annotated[
        int, typer.Option("--num-envs", help="Copies of the real system stepped in a batch.")
    ] = 8,  # = datasets_build.DEFAULT_NUM_ENVS (not imported here: keeps --help fast)
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing dataset with this id.")
    ] = False,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            help="Processes rolling out the 100k-transition shards (default: every core); "
            "the data does not depend on it.",
        ),
    ] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress")] = True,
) -> None:
    """Roll a behaviour policy out on the real system and store the transitions."""
    from gapbench.benchmark.datasets_build import build
    from gapbench.gap_envs import datasets

    try:
        did = build(
            task,
            quality,
            size=size,
            seed=seed,
            real_gap=real_gap,
            data_dir=data_dir,
            policy_dir=policy_dir,
            progress=progress,
            overwrite=overwrite,
            num_envs=num_envs,
            workers=workers,
        )
        info = datasets.card(did, data_dir=data_dir)
    except _errors() as err:
        raise fail(str(err)) from None
    from rich.console import Console

    Console().print(
        f"built [bold]{did}[/] in {datasets.data_dir(data_dir)}: {info['size']} transitions, "
        f"{info['episodes']} episodes, return {_fmt(info['return_mean'])}, "
        f"normalized score {_fmt(info['normalized_score'])}",
        highlight=False,
    )


@app.command("list")
def list_cmd(as_json: AsJson = False, data_dir: DataDir = None) -> None:
    """List the local datasets (gapbench's with their cards)."""
    from gapbench.gap_envs import datasets

    try:
        rows = datasets.list_datasets(data_dir)
    except _errors() as err:
        raise fail(str(err)) from None
    if as_json:
        return print_json(rows)
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if not rows:
        console.print(f"no datasets in {datasets.data_dir(data_dir)}", highlight=False)
        return None
    table = Table()
    table.add_column("id", overflow="fold", ratio=1)
    for name in ("size", "episodes", "return", "score", "seed"):
        table.add_column(name, no_wrap=True, justify="right")
    table.add_column("real gap", overflow="fold")
    for r in rows:
        damaged = r.get("problem")  # listed, not hidden, when its metadata cannot be read
        table.add_row(
            Text(f"{r['id']} (damaged: {damaged})", style="red") if damaged else r["id"],
            _fmt(r.get("size")),
            _fmt(r.get("episodes")),
            _fmt(r.get("return_mean")),
            _fmt(r.get("normalized_score")),
            _fmt(r.get("seed")),
            (r.get("real_gap") or "nominal") if r.get("source") == "gapbench" else "-",
        )
    console.print(table)
    return None


@app.command("info")
def info_cmd(
    dataset_id: Annotated[str, typer.Argument(help="Dataset id (or a D4RL-layout HDF5 file).")],
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Show a dataset's card: size, episodes, returns, normalized score, provenance."""
    from gapbench.gap_envs import datasets

    try:
        info = datasets.card(dataset_id, data_dir=data_dir)
    except _errors() as err:
        raise fail(str(err)) from None
    if as_json:
        return print_json(info)
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table("field", "value", title=info["id"])
    for key, value in info.items():
        if key in ("id", "snapshots"):
            continue
        table.add_row(key, _fmt(value, ".4g") if key != "real_gap" else (value or "nominal"))
    console.print(table)
    if info.get("snapshots"):
        snaps = Table("behaviour", "training steps", "transitions", "seed", "snapshot score")
        for s in info["snapshots"]:
            snaps.add_row(
                s["label"],
                _fmt(s.get("steps")),
                _fmt(s.get("transitions")),
                _fmt(s.get("seed")),
                _fmt(s.get("snapshot_normalized_score")),
            )
        console.print(snaps)
    return None


@app.command("compare")
def compare_cmd(
    version: Annotated[
        int | None,
        typer.Option(help="Compare this dataset version (default: the newest of each)."),
    ] = None,
    markdown: Annotated[bool, typer.Option(help="Print a Markdown table (README).")] = False,
    as_json: AsJson = False,
    data_dir: DataDir = None,
) -> None:
    """Set each built gapbench dataset (nominal real system) beside D4RL's v2 dataset of the
    same name, and check the grades are ordered: random < medium-replay < medium <
    medium-expert <= expert in mean return. Exits 2 when an order is broken."""
    from gapbench.gap_envs import d4rl_grades, datasets

    try:
        rows = d4rl_grades.grade_table(datasets.list_datasets(data_dir), version)
    except _errors() as err:
        raise fail(str(err)) from None
    if not rows:
        raise fail(
            f"no gapbench datasets{'' if version is None else f' of version {version}'} in "
            f"{datasets.data_dir(data_dir)}; build them with `gapbench datasets build`"
        )
    problems = d4rl_grades.ordering_problems(rows)
    if as_json:
        print_json({"rows": rows, "ordering_problems": problems})
    elif markdown:
        print(d4rl_grades.markdown(rows))
    else:
        from rich.console import Console
        from rich.table import Table

        table = Table("id", "episodes", "return", "normalized", "D4RL v2 return", "D4RL v2 norm.")
        for r in rows:
            approx = "≈" if r["d4rl_derived"] else ""
            table.add_row(
                r["id"],
                _fmt(r["episodes"]),
                f"{_fmt(r['return_mean'])} ± {_fmt(r['return_std'])}",
                _fmt(r["normalized_score"]),
                approx + _fmt(r["d4rl_return_mean"]),
                approx + _fmt(r["d4rl_normalized_score"]),
            )
        Console().print(table)
    if problems:
        raise fail("grades out of order: " + "; ".join(problems))
    return None
