"""pytest-benchmark: updates/s per algorithm at the published sizes, env steps/s, and the
vector-evaluation speed-up. Run with ``nox -s bench``; never part of the test suite.

FLOP bound per update (multiply-adds x 2 of the matrix products; halfcheetah sizes,
obs 17, act 6, 256-256 nets; one critic member = 23*256 + 256*256 + 256 = 71.7k MACs
per row, the pair 143k; the actor 17*256 + 256*256 + 256*12 = 73k MACs per row;
forward = 1x, forward + backward = 3x, forward + input-gradient only = 2x):

SAC, batch 256: actor(s) 3x + critics(s, a~pi) 2x (parameters detached) + actor(s') 1x
  + target critics(s', a') 1x + critics(s, a) 3x
  = 256 * (219k + 286k + 73k + 143k + 429k) = 294M MACs = 0.59 GFLOP.
CQL, batch 256: SAC's terms + actor on 10 x 256 states and 10 x 256 next states (no
  grad, 374M MACs) + critics on 256 + 3 * 10 * 256 = 7,936 state-actions, 3x
  (3.4G MACs) = 4.07G MACs = 8.1 GFLOP.
At the measured 33 GFLOP/s of one core's sgemm at these shapes, the bounds are 56 (SAC)
and 4.1 (CQL) updates/s per thread; README "Performance" lists the measurements.
"""

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
