"""Algorithms: one file each, sharing nets, buffers and the registry."""

from algorithms.base import RUN_REGIMES, Algorithm, ConfigError
from algorithms.buffer import Batch, TensorBuffer
from algorithms.registry import UnknownAlgorithmError, get, names, register

# Importing a module registers its algorithm.
from algorithms import sac  # noqa: E402, F401  isort: skip

for _optional in ("cql", "iql", "h2o", "darc"):
    try:
        __import__(f"algorithms.{_optional}")
    except ModuleNotFoundError as _err:  # not written yet on this branch
        if _err.name != f"algorithms.{_optional}":
            raise

__all__ = [
    "RUN_REGIMES",
    "Algorithm",
    "Batch",
    "ConfigError",
    "TensorBuffer",
    "UnknownAlgorithmError",
    "get",
    "names",
    "register",
]
