"""gapbench: a benchmark suite for sim-to-real dynamics-gap studies in reinforcement learning.

The installed package is one name, ``gapbench``, with four sub-packages that live in the
repository's top-level folders (``pyproject.toml`` maps them in, so a user's environment
gets no generic top-level ``algorithms`` or ``benchmark`` module):

- :mod:`gapbench.algorithms`: one file per algorithm, nets, buffers, the registry;
- :mod:`gapbench.gap_envs`: gap specs, shifted MuJoCo envs, dataset storage and loading;
- :mod:`gapbench.benchmark`: run specs, the harness, matrices, executors, tuning, the CLI;
- :mod:`gapbench.analysis`: run records to statistics, plots and tables.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gapbench")
except PackageNotFoundError:  # pragma: no cover - imported from a tree that is not installed
    __version__ = "unknown"

__all__ = ["__version__"]
