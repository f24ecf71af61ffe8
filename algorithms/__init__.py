"""Algorithms: one file each, sharing nets, buffers and the registry."""

from gapbench.algorithms.base import RUN_REGIMES, Algorithm, ConfigError
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.registry import (
    PluginLoadError,
    UnknownAlgorithmError,
    broken,
    get,
    names,
    register,
)

# Importing an algorithm's module registers it.
from gapbench.algorithms import bc, cql, darc, h2o, iql, par, sac, td3bc, vgdf  # noqa: E402, F401  isort: skip

__all__ = [
    "RUN_REGIMES",
    "Algorithm",
    "Batch",
    "ConfigError",
    "PluginLoadError",
    "TensorBuffer",
    "UnknownAlgorithmError",
    "broken",
    "get",
    "names",
    "register",
]
