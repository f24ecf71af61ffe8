"""Timing helpers behind ``gapbench bench`` and ``nox -s bench``: updates/s at the
published sizes on random data, env steps/s, and the vector-evaluation speed-up."""

from __future__ import annotations

import copy
import os
import queue
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from gapbench import algorithms, gap_envs
from gapbench.algorithms.base import SOURCES
from gapbench.algorithms.buffer import TensorBuffer
from gapbench.benchmark.allocator import keep_freed_memory
from gapbench.benchmark.spec import algorithm_config


def random_buffer(n: int, obs_dim: int, act_dim: int, device="cpu", seed=0) -> TensorBuffer:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32)
    next_obs = obs + 0.05 * rng.normal(size=(n, obs_dim)).astype(np.float32)
    end = np.arange(n) % 1000 == 999
    return TensorBuffer.from_arrays(
        obs, act, rng.normal(size=n), next_obs, np.zeros(n), end, device=device, seed=seed
    )


def make_workload(name: str, task: str = "halfcheetah", device: str = "cpu", n: int = 100_000):
    """An algorithm at its published sizes and the buffers its regime samples from (in
    a process set up as the harness sets up training: freed memory kept, see allocator)."""
    keep_freed_memory()
    t = gap_envs.get_task(task)
    cls = algorithms.get(name)
    algo = cls(t.obs_dim, t.act_dim, algorithm_config(name), seed=0, device=device)
    buffers = {
        src: random_buffer(n, t.obs_dim, t.act_dim, device, seed=i)
        for i, src in enumerate(SOURCES[cls.regime])
    }
    algo.setup(buffers.get("dataset"))
    return algo, buffers


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def updates_per_second(
    name: str,
    seconds: float = 5.0,
    device: str = "cpu",
    task: str = "halfcheetah",
    warmup: int = 10,
) -> float:
    algo, buffers = make_workload(name, task, device)
    start = time.perf_counter()
    algo.update_many(warmup, **buffers)
    _sync(device)
    # Blocks of about 0.5 s (at most 100 updates): the harness calls update_many with
    # blocks of up to 1000 updates, and H2O overlaps work inside a block.
    block = max(1, min(100, int(0.5 * warmup / (time.perf_counter() - start))))
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        algo.update_many(block, **buffers)
        n += block
        _sync(device)
    return n / (time.perf_counter() - start)


def update_flops(name: str, task: str = "halfcheetah", device: str = "cpu") -> float:
    """FLOPs of one update as PyTorch's FlopCounterMode counts them (matrix products,
    forward and backward), at the published sizes."""
    from torch.utils.flop_counter import FlopCounterMode

    algo, buffers = make_workload(name, task, device, n=10_000)
    algo.update(**buffers)  # the first update may do one-off work (e.g. H2O's state std)
    with FlopCounterMode(display=False) as counter:
        algo.update(**buffers)
    return float(counter.get_total_flops())


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


@contextmanager
def _quiet_fd2() -> Iterator[None]:
    """Silence file descriptor 2: torch's profiler backend writes "USDT ... profiler_start"
    lines there from C++, past ``sys.stderr``, into the bench table."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_update(name: str, task: str = "halfcheetah", device: str = "cpu", updates: int = 20):
    """Where an update's time goes: shares of the profiled self time spent in matrix
    products, in the optimizers, and in everything else (element-wise work, sampling,
    autograd bookkeeping), over ``updates`` updates (torch profiler, host side)."""
    from torch.profiler import ProfilerActivity, profile

    algo, buffers = make_workload(name, task, device, n=10_000)
    algo.update_many(3, **buffers)
    with _quiet_fd2(), profile(activities=[ProfilerActivity.CPU]) as prof:
        algo.update_many(updates, **buffers)
    shares = {"matmul": 0.0, "optimizer": 0.0, "other": 0.0}
    for event in prof.key_averages():
        if event.key in MATMUL_OPS:
            kind = "matmul"
        elif event.key.startswith("Optimizer.") or "adam" in event.key:
            kind = "optimizer"
        else:
            kind = "other"
        shares[kind] += event.self_cpu_time_total
    total = sum(shares.values()) or 1.0
    return {kind: value / total for kind, value in shares.items()}


def matmul_flops_per_second(seconds: float = 1.0, device: str = "cpu", size: int = 256) -> float:
    """Throughput of the update's dominant product, a 256 x 256 by 256 x 256 float32
    matmul (batch x hidden by hidden x hidden), with the current torch threads."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(10):
        a @ b
    _sync(device)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            a @ b
        n += 20
        _sync(device)
    return 2 * size**3 * n / (time.perf_counter() - start)


def env_steps_per_second(task: str = "halfcheetah", gap: str = "", steps: int = 5_000) -> float:
    env = gap_envs.make(task, gap, seed=0)
    act = env.action_space.sample()
    start = time.perf_counter()
    for _ in range(steps):
        _, _, term, trunc, _ = env.step(act)
        if term or trunc:
            env.reset()
    return steps / (time.perf_counter() - start)


def evaluation_speedup(
    task: str = "halfcheetah", episodes: int = 10, name: str = "sac"
) -> dict[str, Any]:
    """Seconds for ``episodes`` deterministic episodes as one vector env vs one by one."""
    from gapbench.benchmark.evaluation import evaluate, evaluate_sequential, make_eval_env

    t = gap_envs.get_task(task)
    algo = algorithms.get(name)(t.obs_dim, t.act_dim, seed=0)
    policy = lambda o: algo.act(o, deterministic=True)  # noqa: E731
    env = make_eval_env(task, "", episodes)
    start = time.perf_counter()
    evaluate(env, policy, seed=0)
    vector = time.perf_counter() - start
    start = time.perf_counter()
    evaluate_sequential(task, "", policy, episodes, seed=0)
    sequential = time.perf_counter() - start
    return {
        "episodes": episodes,
        "vector_s": vector,
        "sequential_s": sequential,
        "speedup": sequential / vector,
    }


def bench_rows(
    names: list[str],
    seconds: float,
    device: str,
    task: str,
    matmul: float,
    profile: bool = False,
) -> Iterator[dict[str, Any]]:
    """``gapbench bench``'s table, one row per algorithm as it is timed: updates/s, the
    update's FLOPs and the bound they imply at ``matmul`` FLOP/s (and, with ``profile``,
    where the update's time goes). A generator, so a caller can print each row at once."""
    for name in names:
        rate = updates_per_second(name, seconds, device, task)
        flops = update_flops(name, task, device)
        bound = matmul / flops
        shares = profile_update(name, task, device) if profile else None
        yield {
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


def make_seed_batch(
    name: str, k: int, task: str = "halfcheetah", device: str = "cpu", n: int = 100_000
):
    """K seeds (0..K-1) of an algorithm at its published sizes as one batch
    (:class:`gapbench.algorithms.seeds.SeedBatch`), and each seed's buffers by source."""
    from gapbench.algorithms.seeds import SeedBatch, SeedRNG

    keep_freed_memory()
    t = gap_envs.get_task(task)
    cls = algorithms.get(name)
    sources = SOURCES[cls.regime]
    buffers = {
        src: [random_buffer(n, t.obs_dim, t.act_dim, device, seed=10 * s + i) for s in range(k)]
        for i, src in enumerate(sources)
    }
    if "dataset" in buffers:  # one dataset for every seed (as a group run), own generators
        first = buffers["dataset"][0]
        buffers["dataset"] = [first, *(copy.copy(first) for _ in range(k - 1))]
        for s, buf in enumerate(buffers["dataset"]):
            buf.generator = torch.Generator(device=device)
            buf.generator.manual_seed(10 * s)
    members, states = [], []
    for seed in range(k):
        algo = cls(t.obs_dim, t.act_dim, algorithm_config(name), seed=seed, device=device)
        algo.setup(buffers["dataset"][seed] if "dataset" in buffers else None)
        members.append(algo)
        states.append(SeedRNG.capture(torch.device(device)))
    return SeedBatch(members, states), buffers


def seed_batch_rows(
    name: str,
    ks: list[int],
    seconds: float,
    device: str = "cpu",
    task: str = "halfcheetah",
    rounds: int = 3,
    ready: Any = None,
) -> list[dict[str, Any]]:
    """Seed-updates/s of K seeds trained as one batch, for each K in ``ks``, side by side
    with one seed's ordinary update and the matmul throughput: ``rounds`` rounds, each
    timing every configuration for ``seconds / rounds``, medians reported, so that all
    figures see the same load (on a shared machine the load changes from minute to
    minute). The FLOP bound per seed-update is the single update's (the batch does the
    same products, K times taller). ``ready`` (if given) is called once the workloads are
    built, before any timing: processes timed side by side wait there for each other."""
    plain, plain_buffers = make_workload(name, task, device, n=10_000)
    batches = {k: make_seed_batch(name, k, task, device, n=10_000) for k in ks}
    slot = seconds / rounds
    if ready is not None:
        ready()

    def timed(run: Any, seeds: int) -> float:
        """Seed-updates/s of ``run(n)`` (n updates of ``seeds`` seeds) over one slot, in
        blocks of up to 10 updates sized to about a tenth of the slot: CQL's batch of 8
        seeds takes seconds per update, SAC's milliseconds."""
        start = time.perf_counter()
        run(1)  # warm (and the batch's first call probes its noise shapes)
        _sync(device)
        block = max(1, min(10, int(0.1 * slot / (time.perf_counter() - start))))
        updates, start = 0, time.perf_counter()
        while time.perf_counter() - start < slot:
            run(block)
            updates += block
            _sync(device)
        return updates * seeds / (time.perf_counter() - start)

    samples: dict[Any, list[float]] = {"plain": [], "matmul": [], **{k: [] for k in ks}}
    for _ in range(rounds):
        samples["matmul"].append(matmul_flops_per_second(slot / 2, device))
        samples["plain"].append(timed(lambda n: plain.update_many(n, **plain_buffers), 1))
        for k, (batch, buffers) in batches.items():
            samples[k].append(timed(lambda n, b=batch, f=buffers: b.update_many(n, **f), k))
    median = {key: float(np.median(values)) for key, values in samples.items()}
    bound = median["matmul"] / update_flops(name, task, device)
    return [
        {
            "algo": name,
            "seeds": k,
            "seed_updates_per_s": median[k],
            "single_updates_per_s": median["plain"],
            "speedup": median[k] / median["plain"],
            "flop_bound_updates_per_s": bound,
            "fraction_of_bound": median[k] / bound,
            "single_fraction_of_bound": median["plain"] / bound,
            "matmul_gflop_per_s": median["matmul"] / 1e9,
            "task": task,
            "device": device,
            "threads": torch.get_num_threads(),
        }
        for k in ks
    ]


def _seed_batch_process(args: tuple, barrier: Any, results: Any) -> None:
    name, ks, seconds, device, task, threads = args
    torch.set_num_threads(threads)
    # a sibling that dies while building breaks the barrier instead of hanging the rest
    rows = seed_batch_rows(name, ks, seconds, device, task, ready=lambda: barrier.wait(600))
    results.put(rows)


def parallel_seed_batch_rows(
    name: str,
    ks: list[int],
    seconds: float,
    processes: int,
    threads: int = 1,
    device: str = "cpu",
    task: str = "halfcheetah",
) -> list[dict[str, Any]]:
    """:func:`seed_batch_rows` in ``processes`` processes at once (``threads`` torch threads
    each), started together, with their rates summed: what the machine delivers when its
    cores are shared out that way. The single-seed column is then ``processes`` separate
    runs side by side (more separate runs than cores only share them out further), and the
    bound is the summed matmul throughput over the update's FLOPs."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    args = (name, ks, seconds, device, task, threads)
    procs = [
        ctx.Process(target=_seed_batch_process, args=(args, barrier, results))
        for _ in range(processes)
    ]
    for p in procs:
        p.start()
    per_process: list[list[dict[str, Any]]] = []
    while len(per_process) < processes:
        try:
            per_process.append(results.get(timeout=5))
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                for p in procs:
                    p.kill()
                raise RuntimeError(
                    f"a timing process for {name} failed (see its error above)"
                ) from None
    for p in procs:
        p.join()
    flops = update_flops(name, task, device)
    rows = []
    for parts in zip(*per_process, strict=True):
        seed_rate = sum(r["seed_updates_per_s"] for r in parts)
        single_rate = sum(r["single_updates_per_s"] for r in parts)
        matmul = sum(r["matmul_gflop_per_s"] for r in parts) * 1e9
        bound = matmul / flops
        rows.append(
            {
                **parts[0],
                "seed_updates_per_s": seed_rate,
                "single_updates_per_s": single_rate,
                "speedup": seed_rate / single_rate,
                "flop_bound_updates_per_s": bound,
                "fraction_of_bound": seed_rate / bound,
                "single_fraction_of_bound": single_rate / bound,
                "matmul_gflop_per_s": matmul / 1e9,
                "threads": threads,
                "processes": processes,
                "per_process_seed_updates_per_s": [r["seed_updates_per_s"] for r in parts],
            }
        )
    return rows
