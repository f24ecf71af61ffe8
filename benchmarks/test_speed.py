"""pytest-benchmark: updates/s per algorithm at the published sizes, env steps/s, and the
vector-evaluation speed-up. Run with ``nox -s bench``; never part of the test suite."""

from __future__ import annotations

import pytest

import algorithms
from benchmark.speed import env_steps_per_second, evaluation_speedup, make_workload


@pytest.mark.parametrize("name", algorithms.names())
def test_update(benchmark, name):
    algo, buffers = make_workload(name)
    for _ in range(5):
        algo.update(**buffers)
    benchmark.pedantic(lambda: algo.update(**buffers), rounds=30, warmup_rounds=3)
    benchmark.extra_info["updates_per_s"] = 1.0 / benchmark.stats.stats.mean
    print(f"\n{name}: {1.0 / benchmark.stats.stats.mean:.1f} updates/s")


@pytest.mark.parametrize("task", ["halfcheetah", "hopper", "walker2d"])
def test_env_steps(benchmark, task):
    rate = benchmark.pedantic(lambda: env_steps_per_second(task, steps=2000), rounds=3)
    print(f"\n{task}: {rate:.0f} env steps/s")


def test_vector_evaluation(benchmark):
    result = benchmark.pedantic(lambda: evaluation_speedup(episodes=10), rounds=1)
    benchmark.extra_info.update(result)
    print(
        f"\nevaluation of 10 episodes: vector {result['vector_s']:.2f}s, "
        f"sequential {result['sequential_s']:.2f}s, speed-up {result['speedup']:.1f}x"
    )
