"""``gapbench bench``: each algorithm's updates/s at its published sizes."""

from __future__ import annotations

from typing import Annotated

import typer

from gapbench.benchmark.cli.common import (
    Threads,
    fail,
    out_console,
    print_json,
    warn_broken_plugins,
)


# mounted on the top-level app as ``gapbench bench``
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
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Instead: seed-updates/s of K seeds trained as one batch, for each K listed "
            "(e.g. 1,2,4,8), beside one seed's ordinary update (algorithms with a batched path)"
        ),
    ] = None,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            help="With --seeds: run the timing in this many processes at once (--threads "
            "each) and sum their rates, e.g. 2 on 2 cores: 2 separate runs side by side "
            "against 2 processes of K batched seeds",
        ),
    ] = 1,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Time each algorithm's update at its published sizes on random data (updates/s),
    so you can plan budgets on your own hardware. Also prints each update's FLOPs and the
    bound they imply at this machine's measured matmul throughput."""
    import torch

    from gapbench import algorithms
    from gapbench.benchmark.spec import device_problem
    from gapbench.benchmark.speed import bench_rows, matmul_flops_per_second
    from gapbench.gap_envs import UnknownTaskError, get_task

    torch.set_num_threads(threads)
    names = algo or [n for n in algorithms.names() if n not in warn_broken_plugins()]
    try:
        get_task(task)
        for name in names:
            algorithms.get(name)
    except (KeyError, UnknownTaskError) as e:
        raise fail(str(e)) from None
    if problem := device_problem(device):
        raise fail(problem)
    if seeds is not None:
        _bench_seeds(names, seeds, seconds, device, task, as_json, processes, threads)
        return
    if processes != 1:
        raise fail(f"bench --processes {processes} needs --seeds (it times seed batches)")
    matmul = matmul_flops_per_second(device=device)
    if not as_json:
        out_console.print(
            f"matmul throughput (256x256x256, {torch.get_num_threads()} threads): "
            f"{matmul / 1e9:.1f} GFLOP/s"
        )
        head = f"{'algo':>6} {'updates/s':>10} {'GFLOP/update':>13} {'bound':>10} {'of bound':>9}"
        out_console.print(head + ("   time in matmul / optimizer / other" if profile else ""))
    rows = []
    for row in bench_rows(names, seconds, device, task, matmul, profile):
        rows.append(row)
        if not as_json:
            text = (
                f"{row['algo']:>6} {row['updates_per_s']:10.1f} {row['gflop_per_update']:13.2f} "
                f"{row['flop_bound_updates_per_s']:10.1f} {row['fraction_of_bound']:9.0%}"
            )
            if shares := row.get("time_shares"):
                text += "   {matmul:.0%} / {optimizer:.0%} / {other:.0%}".format(**shares)
            out_console.print(text)
    if as_json:
        print_json(rows)


def _bench_seeds(
    names: list[str], seeds: str, seconds: float, device, task, as_json, processes, threads
) -> None:
    from gapbench import algorithms
    from gapbench.algorithms.seeds import batchable
    from gapbench.benchmark.seedgroup import parse_seeds
    from gapbench.benchmark.speed import parallel_seed_batch_rows, seed_batch_rows

    try:
        ks = parse_seeds(seeds)
    except ValueError as e:
        raise fail(str(e).replace("--seeds", "bench --seeds")) from None
    if any(k < 1 for k in ks):
        raise fail(f"bench --seeds needs seed counts >= 1, got {seeds!r}")
    rows = []
    if not as_json:
        if processes > 1:
            out_console.print(
                f"{processes} processes at once, {threads} thread(s) each: rates summed; "
                f"'1 seed upd/s' is {processes} separate runs side by side"
            )
        out_console.print(
            f"{'algo':>6} {'seeds':>5} {'seed-upd/s':>11} {'1 seed upd/s':>13} {'speed-up':>9} "
            f"{'bound':>8} {'of bound':>9}"
        )
    for name in names:
        if why := batchable(algorithms.get(name)):
            if not as_json:
                out_console.print(f"{name:>6} skipped: {why}")
            continue
        if processes > 1:
            timed = parallel_seed_batch_rows(name, ks, seconds, processes, threads, device, task)
        else:
            timed = seed_batch_rows(name, ks, seconds, device, task)
        for row in timed:
            rows.append(row)
            if not as_json:
                out_console.print(
                    f"{name:>6} {row['seeds']:5d} {row['seed_updates_per_s']:11.1f} "
                    f"{row['single_updates_per_s']:13.1f} {row['speedup']:8.2f}x "
                    f"{row['flop_bound_updates_per_s']:8.1f} {row['fraction_of_bound']:9.0%}"
                )
    if as_json:
        print_json(rows)


__all__ = ["bench"]
