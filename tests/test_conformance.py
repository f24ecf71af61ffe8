"""Every registered algorithm (plug-ins included) honours the interface: a new one is
tested for free."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import algorithms
from algorithms.base import SOURCES
from algorithms.buffer import TensorBuffer

OBS, ACT = 5, 3


def make_buffer(n=512, seed=0):
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS))
    act = rng.uniform(-1, 1, size=(n, ACT))
    next_obs = obs + 0.1 * act.sum(1, keepdims=True) + 0.01 * rng.normal(size=(n, OBS))
    rew = -np.square(obs).sum(1)
    done = (rng.uniform(size=n) < 0.01).astype(np.float32)
    end = done.astype(bool) | (np.arange(n) % 100 == 99)
    return TensorBuffer.from_arrays(obs, act, rew, next_obs, done, end, seed=seed)


def small_algo(name, seed=0):
    cls = algorithms.get(name)
    return cls(OBS, ACT, cls.make_config({}), seed=seed)


def sources_for(algo, seed=0):
    return {src: make_buffer(seed=seed + i) for i, src in enumerate(SOURCES[algo.regime])}


def do_updates(algo, n=3, seed=0):
    torch.manual_seed(seed)
    buffers = sources_for(algo, seed)
    algo.setup(buffers.get("dataset"))
    metrics = {}
    for _ in range(n):
        metrics = algo.update(**buffers)
    return metrics


@pytest.fixture(params=algorithms.names())
def name(request):
    return request.param


def test_declares_regime_and_config(name):
    cls = algorithms.get(name)
    assert cls.regime in ("offline", "online", "hybrid")
    assert cls.hparams(), "an algorithm exposes its hyper-parameters with defaults"
    assert cls.Config.__doc__, "the config's docstring names the sources of its defaults"


def test_update_gives_finite_metrics_and_changes_parameters(name):
    algo = small_algo(name)
    before = {k: v.clone() for k, v in algo.actor.state_dict().items()}
    metrics = do_updates(algo)
    assert metrics, "update returns metrics"
    for key, value in metrics.items():
        assert torch.is_tensor(value) and value.dim() == 0, f"{key} is a 0-dim tensor"
        assert np.isfinite(float(value)), f"{key} is finite"
    after = algo.actor.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "the actor learned nothing"


def test_actions_in_bounds_and_shaped(name):
    algo = small_algo(name)
    do_updates(algo, n=1)
    obs = np.random.default_rng(0).normal(size=(7, OBS)) * 10
    for deterministic in (True, False):
        act = algo.act(obs, deterministic=deterministic)
        assert act.shape == (7, ACT)
        assert np.all(act >= -1) and np.all(act <= 1)
    assert algo.act(obs[0]).shape == (ACT,)


def test_seeded_runs_are_deterministic(name):
    obs = np.random.default_rng(1).normal(size=(4, OBS))
    results = []
    for _ in range(2):
        algo = small_algo(name, seed=3)
        metrics = do_updates(algo, n=2, seed=3)
        results.append((algo.act(obs), {k: float(v) for k, v in metrics.items()}))
    np.testing.assert_array_equal(results[0][0], results[1][0])
    assert results[0][1] == results[1][1]


def test_state_dict_round_trip_gives_identical_actions(name):
    algo = small_algo(name, seed=0)
    do_updates(algo, n=2)
    other = small_algo(name, seed=1)
    other.load_state_dict(algo.state_dict())
    obs = np.random.default_rng(2).normal(size=(6, OBS))
    np.testing.assert_array_equal(algo.act(obs), other.act(obs))
    # training goes on identically from the loaded state (optimizers included)
    metrics = []
    for a in (algo, other):
        buffers = sources_for(a, 7)
        a.setup(buffers.get("dataset"))
        torch.manual_seed(5)
        metrics.append(a.update(**buffers))
    m1, m2 = metrics
    assert {k: float(v) for k, v in m1.items()} == {k: float(v) for k, v in m2.items()}


def test_unknown_hyper_parameter_is_a_clear_error(name):
    with pytest.raises(algorithms.ConfigError, match="unknown hyper-parameter.*'no_such'.*valid"):
        algorithms.get(name).make_config({"no_such": 1})
