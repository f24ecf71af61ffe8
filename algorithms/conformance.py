"""The interface checks every algorithm must pass, built-in or plug-in.

Shipped with the package (not only in the test suite) so that a plug-in author can run them
against an installed gapbench: ``gapbench check-algorithm NAME``, or from Python
:func:`run_checks`. ``tests/test_conformance.py`` runs the same checks on every registered
algorithm. Each check builds its algorithm at tiny sizes on random data (seconds on a CPU).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import torch

from gapbench.algorithms import registry
from gapbench.algorithms.base import SOURCES, Algorithm, ConfigError
from gapbench.algorithms.buffer import TensorBuffer

OBS, ACT = 5, 3


class ConformanceError(AssertionError):
    """An algorithm breaks the interface; the message says how."""


def _require(condition: object, message: str) -> None:
    # not `assert`: the checks must hold under `python -O` too
    if not condition:
        raise ConformanceError(message)


def make_buffer(n: int = 512, seed: int = 0) -> TensorBuffer:
    """Random transitions with a little structure (next_obs depends on obs and act)."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS))
    act = rng.uniform(-1, 1, size=(n, ACT))
    next_obs = obs + 0.1 * act.sum(1, keepdims=True) + 0.01 * rng.normal(size=(n, OBS))
    rew = -np.square(obs).sum(1)
    done = (rng.uniform(size=n) < 0.01).astype(np.float32)
    end = done.astype(bool) | (np.arange(n) % 100 == 99)
    return TensorBuffer.from_arrays(obs, act, rew, next_obs, done, end, seed=seed)


def small_algo(name: str, seed: int = 0) -> Algorithm:
    cls = registry.get(name)
    return cls(OBS, ACT, cls.make_config({}), seed=seed)


def sources_for(algo: Algorithm, seed: int = 0) -> dict[str, TensorBuffer]:
    """One buffer per source the algorithm's regime samples from (dataset / replay)."""
    return {src: make_buffer(seed=seed + i) for i, src in enumerate(SOURCES[algo.regime])}


def do_updates(algo: Algorithm, n: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    buffers = sources_for(algo, seed)
    algo.setup(buffers.get("dataset"))
    metrics: dict[str, torch.Tensor] = {}
    for _ in range(n):
        metrics = algo.update(**buffers)
    return metrics


def declares_regime_and_config(name: str) -> None:
    cls = registry.get(name)
    _require(
        cls.regime in ("offline", "online", "hybrid"),
        f"regime must be offline, online or hybrid, got {cls.regime!r}",
    )
    _require(cls.hparams(), "an algorithm exposes its hyper-parameters with defaults (Config)")
    _require(cls.Config.__doc__, "the Config's docstring names the sources of its defaults")
    space = getattr(cls, "search_space", None)
    _require(space, "search_space (the tuning ranges `gapbench tune` needs) is missing")
    unknown = sorted(set(space) - set(cls.hparams()))
    _require(not unknown, f"search_space names unknown hyper-parameter(s): {unknown}")


def update_gives_finite_metrics_and_learns(name: str) -> None:
    algo = small_algo(name)
    before = {k: v.clone() for k, v in algo.actor.state_dict().items()}
    metrics = do_updates(algo)
    _require(metrics, "update returns a dict of metrics")
    for key, value in metrics.items():
        _require(torch.is_tensor(value) and value.dim() == 0, f"metric {key} is a 0-dim tensor")
        _require(np.isfinite(float(value)), f"metric {key} is finite, got {float(value)}")
    after = algo.actor.state_dict()
    _require(any(not torch.equal(before[k], after[k]) for k in before), "the actor learned nothing")


def actions_in_bounds_and_shaped(name: str) -> None:
    algo = small_algo(name)
    do_updates(algo, n=1)
    obs = np.random.default_rng(0).normal(size=(7, OBS)) * 10
    for deterministic in (True, False):
        act = algo.act(obs, deterministic=deterministic)
        _require(act.shape == (7, ACT), f"act on 7 observations: shape (7, {ACT}), got {act.shape}")
        _require(np.all(act >= -1) and np.all(act <= 1), "actions lie in [-1, 1]")
    single = algo.act(obs[0]).shape
    _require(single == (ACT,), f"act on one observation: shape ({ACT},), got {single}")


def seeded_runs_are_deterministic(name: str) -> None:
    obs = np.random.default_rng(1).normal(size=(4, OBS))
    results = []
    for _ in range(2):
        algo = small_algo(name, seed=3)
        metrics = do_updates(algo, n=2, seed=3)
        results.append((algo.act(obs), {k: float(v) for k, v in metrics.items()}))
    _require(np.array_equal(results[0][0], results[1][0]), "same seed, different actions")
    _require(results[0][1] == results[1][1], "same seed, different metrics")


def state_dict_round_trip(name: str) -> None:
    algo = small_algo(name, seed=0)
    do_updates(algo, n=2)
    other = small_algo(name, seed=1)
    other.load_state_dict(algo.state_dict())
    obs = np.random.default_rng(2).normal(size=(6, OBS))
    _require(np.array_equal(algo.act(obs), other.act(obs)), "loaded state acts differently")
    # training goes on identically from the loaded state (optimizers included)
    metrics = []
    for a in (algo, other):
        buffers = sources_for(a, 7)
        a.setup(buffers.get("dataset"))
        torch.manual_seed(5)
        metrics.append({k: float(v) for k, v in a.update(**buffers).items()})
    _require(metrics[0] == metrics[1], "training from the loaded state diverges (optimizers?)")


def unknown_hyper_parameter_is_a_clear_error(name: str) -> None:
    try:
        registry.get(name).make_config({"no_such": 1})
    except ConfigError as err:
        _require(
            re.search(r"unknown hyper-parameter.*'no_such'.*valid", str(err)),
            f"the error names the bad key and the valid ones, got: {err}",
        )
    else:
        raise ConformanceError("make_config({'no_such': 1}) raised no ConfigError")


#: check name -> check; each raises (ConformanceError or anything else) on failure.
CHECKS: dict[str, Callable[[str], None]] = {
    f.__name__: f
    for f in (
        declares_regime_and_config,
        update_gives_finite_metrics_and_learns,
        actions_in_bounds_and_shaped,
        seeded_runs_are_deterministic,
        state_dict_round_trip,
        unknown_hyper_parameter_is_a_clear_error,
    )
}


def run_checks(name: str) -> dict[str, str | None]:
    """Every check on algorithm ``name``: check name -> None if it passed, else why not.
    An unknown or unloadable algorithm raises :class:`registry.UnknownAlgorithmError`."""
    registry.get(name)
    results: dict[str, str | None] = {}
    for check_name, check in CHECKS.items():
        try:
            check(name)
            results[check_name] = None
        except Exception as err:  # a broken algorithm may raise anything: report it
            results[check_name] = f"{type(err).__name__}: {err}"
    return results
