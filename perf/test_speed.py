"""pytest-benchmark: updates/s per algorithm at the published sizes, env steps/s, and the
vector-evaluation speed-up. Run with ``nox -s bench``; never part of the test suite.

FLOP bound per update = FLOPs of one update / the machine's matmul throughput.
FLOPs: PyTorch's FlopCounterMode on one update (``gapbench.benchmark.speed.update_flops``); it
equals the hand count of the method's matrix products (tests/test_speed.py), e.g. SAC,
batch 256, halfcheetah sizes (one critic member 23*256 + 256*256 + 256 = 71.7k MACs per
row, the actor 17*256 + 256*256 + 256*12 = 73k): actor(s) forward + backward, critics
on (s, pi(s)) forward + input gradient, actor(s') and target critics forward, critics on
(s, a) forward + backward = 1.14M MACs per row = 0.58 GFLOP per update. H2O adds both
classifiers' step on 512 rows and one d_sas pass over 128 x 11 rows: 1.24 GFLOP. CQL
pushes 256 + 3 x 10 x 256 state-actions through both critics: 7.75 GFLOP.
Throughput: a 256 x 256 x 256 float32 matmul (the hidden layer's product) with the same
torch threads (``gapbench.benchmark.speed.matmul_flops_per_second``). Each update's bound and the
fraction reached are printed and stored in extra_info.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gapbench import algorithms
from gapbench.algorithms.seeds import BATCHABLE
from gapbench.benchmark.speed import (
    env_steps_per_second,
    evaluation_speedup,
    make_seed_batch,
    make_workload,
    matmul_flops_per_second,
    parallel_seed_batch_rows,
    update_flops,
)


@pytest.fixture(scope="module")
def matmul_rate():
    rate = matmul_flops_per_second(seconds=2.0)
    print(f"\nmatmul throughput: {rate / 1e9:.1f} GFLOP/s")
    return rate


@pytest.mark.parametrize("name", algorithms.names())
def test_update(benchmark, name, matmul_rate):
    algo, buffers = make_workload(name)
    for _ in range(5):
        algo.update(**buffers)
    # blocks of updates, as the harness calls them (H2O overlaps work within a block)
    block = 10 if name == "cql" else 50
    benchmark.pedantic(lambda: algo.update_many(block, **buffers), rounds=5, warmup_rounds=1)
    rate = block / benchmark.stats.stats.mean
    bound = matmul_rate / update_flops(name)
    benchmark.extra_info.update(updates_per_s=rate, flop_bound_updates_per_s=bound)
    print(f"\n{name}: {rate:.1f} updates/s, FLOP bound {bound:.1f} ({rate / bound:.0%})")


@pytest.fixture(params=[1, 2], ids=lambda t: f"{t}thread")
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.mark.parametrize("k", [1, 2, 4, 8])
@pytest.mark.parametrize("name", sorted(BATCHABLE))
def test_seed_batch(benchmark, name, k, threads):
    """K seeds trained as one batch (algorithms/seeds.py) on 1 and 2 threads: seed-updates/s
    and the fraction of the single update's FLOP bound (at that thread count) per
    seed-update. ``gapbench bench --seeds 1,2,4,8`` times the same beside one seed's
    ordinary update, interleaved (fairer on a busy box)."""
    batch, buffers = make_seed_batch(name, k, n=10_000)
    batch.update_many(5, **buffers)
    block = 2 if name == "cql" else 10  # CQL's update is ~13x SAC's FLOPs
    benchmark.pedantic(lambda: batch.update_many(block, **buffers), rounds=5, warmup_rounds=1)
    rate = block * k / benchmark.stats.stats.mean
    bound = matmul_flops_per_second(seconds=1.0) / update_flops(name)
    benchmark.extra_info.update(seed_updates_per_s=rate, flop_bound_updates_per_s=bound)
    share = rate / bound
    print(
        f"\n{name} x{k} seeds, {threads} thread(s): {rate:.1f} seed-updates/s, "
        f"FLOP bound {bound:.1f} ({share:.0%})"
    )


@pytest.mark.parametrize("name", ["sac", "h2o"])
def test_seed_batch_against_separate_processes(benchmark, name):
    """Two processes of one thread at once (``gapbench bench --seeds 1,4 --processes 2``):
    two separate runs side by side against two processes of 4 batched seeds each, rates
    summed: K separate runs and K batched seeds on the same cores."""
    rows = benchmark.pedantic(
        lambda: parallel_seed_batch_rows(name, [4], seconds=6.0, processes=2), rounds=1
    )
    (row,) = rows
    benchmark.extra_info.update(row)
    print(
        f"\n{name}, 2 processes: separate runs {row['single_updates_per_s']:.1f} updates/s, "
        f"4 batched seeds each {row['seed_updates_per_s']:.1f} seed-updates/s "
        f"({row['speedup']:.2f}x, {row['fraction_of_bound']:.0%} of the 2-core bound)"
    )


@pytest.mark.parametrize("task", ["halfcheetah", "hopper", "walker2d"])
def test_env_steps(benchmark, task):
    rate = benchmark.pedantic(lambda: env_steps_per_second(task, steps=2000), rounds=3)
    print(f"\n{task}: {rate:.0f} env steps/s")


def test_vector_evaluation(benchmark):
    # one warm-up round: the first evaluation also starts the physics threads
    result = benchmark.pedantic(lambda: evaluation_speedup(episodes=10), rounds=1, warmup_rounds=1)
    benchmark.extra_info.update(result)
    print(
        f"\nevaluation of 10 episodes: vector {result['vector_s']:.2f}s, "
        f"sequential {result['sequential_s']:.2f}s, speed-up {result['speedup']:.1f}x"
    )


def test_h2o_against_the_authors_code(benchmark):
    """H2O's update against the authors' own (t6-thu/H2O) in the same run, same threads.
    Needs a local clone (nothing is downloaded): GAPBENCH_H2O_REPO=/path/to/H2O."""
    repo = os.environ.get("GAPBENCH_H2O_REPO")
    if not repo:
        pytest.skip("set GAPBENCH_H2O_REPO to a clone of t6-thu/H2O to compare with it")
    threads = str(torch.get_num_threads())
    script = Path(__file__).with_name("authors_h2o.py")
    cmd = [sys.executable, str(script), "--repo", repo, "--threads", threads, "--seconds", "8"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    authors = float(re.search(r"authors_h2o_updates_per_s=([\d.]+)", out).group(1))
    algo, buffers = make_workload("h2o")
    algo.update_many(5, **buffers)
    benchmark.pedantic(lambda: algo.update_many(50, **buffers), rounds=5, warmup_rounds=1)
    ours = 50 / benchmark.stats.stats.mean
    benchmark.extra_info.update(updates_per_s=ours, authors_updates_per_s=authors)
    print(
        f"\nh2o on {threads} threads: gapbench {ours:.1f} updates/s, authors' code "
        f"{authors:.1f} -> {ours / authors:.2f}x"
    )
