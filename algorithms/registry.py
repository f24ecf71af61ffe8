"""Name -> algorithm class, including third-party plug-ins.

A package outside this repository adds an algorithm by declaring an entry point in
the group ``gapbench.algorithms`` that points at its Algorithm subclass::

    [project.entry-points."gapbench.algorithms"]
    myalgo = "my_package.myalgo:MyAlgo"
"""

from __future__ import annotations

from importlib.metadata import entry_points

from algorithms.base import REGIMES, Algorithm

ENTRY_POINT_GROUP = "gapbench.algorithms"
_REGISTRY: dict[str, type[Algorithm]] = {}
_plugins_loaded = False


class UnknownAlgorithmError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: make ``cls`` available as ``get(cls.name)``."""
    if getattr(cls, "regime", None) not in REGIMES:
        raise ValueError(f"{cls.__name__}.regime must be one of {REGIMES}, got {cls.regime!r}")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"algorithm name {cls.name!r} is taken by {existing.__module__}")
    _REGISTRY[cls.name] = cls
    return cls


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
            raise TypeError(f"entry point {ep.name!r} ({ep.value}) is not an Algorithm subclass")
        if getattr(cls, "name", None) != ep.name:
            cls.name = ep.name
        register(cls)


def names() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def get(name: str) -> type[Algorithm]:
    _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownAlgorithmError(
            f"unknown algorithm {name!r}; valid algorithms: {', '.join(sorted(_REGISTRY))}"
        ) from None
