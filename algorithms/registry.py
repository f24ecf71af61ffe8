"""Name -> algorithm class, including third-party plug-ins.

A package outside this repository adds an algorithm by declaring an entry point in
the group ``gapbench.algorithms`` that points at its Algorithm subclass::

    [project.entry-points."gapbench.algorithms"]
    myalgo = "my_package.myalgo:MyAlgo"

Plug-ins are imported lazily, one at a time, when asked for by name: one broken plug-in
(a missing module, an import that raises) cannot break the listing, a matrix that does not
use it, or test collection; asking for it raises :class:`PluginLoadError` naming it.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from gapbench.algorithms.base import REGIMES, Algorithm

ENTRY_POINT_GROUP = "gapbench.algorithms"
_REGISTRY: dict[str, type[Algorithm]] = {}
_PLUGINS: dict[str, EntryPoint] = {}  # discovered, not imported yet
_BROKEN: dict[str, str] = {}  # plug-in name -> why it cannot be loaded
_plugins_loaded = False  # entry points discovered


class UnknownAlgorithmError(KeyError):
    def __str__(self) -> str:  # KeyError would print the message quoted
        return str(self.args[0])


class PluginLoadError(UnknownAlgorithmError):
    """A plug-in's entry point exists but does not give a usable Algorithm class."""


def register(cls: type[Algorithm]) -> type[Algorithm]:
    """Class decorator: make ``cls`` available as ``get(cls.name)``."""
    if getattr(cls, "regime", None) not in REGIMES:
        raise ValueError(f"{cls.__name__}.regime must be one of {REGIMES}, got {cls.regime!r}")
    existing = _REGISTRY.get(cls.name)
    if existing is not None and existing is not cls:
        raise ValueError(f"algorithm name {cls.name!r} is taken by {existing.__module__}")
    _REGISTRY[cls.name] = cls
    return cls


def _discover() -> None:
    """Note the plug-ins' entry points without importing them."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    _PLUGINS.clear()
    _BROKEN.clear()
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _REGISTRY:
            _PLUGINS[ep.name] = ep


def _load(name: str) -> type[Algorithm]:
    ep = _PLUGINS[name]
    if name not in _BROKEN:
        try:
            cls = ep.load()
            if not (isinstance(cls, type) and issubclass(cls, Algorithm)):
                raise TypeError("not an Algorithm subclass")
            if getattr(cls, "name", None) != name:
                cls.name = name
            register(cls)
            del _PLUGINS[name]
            return cls
        except Exception as err:  # any import-time failure is the plug-in's, not ours
            _BROKEN[name] = f"{type(err).__name__}: {err}"
    raise PluginLoadError(
        f"algorithm plug-in {name!r} (entry point {ep.value}) failed to load: {_BROKEN[name]}"
    )


def names() -> list[str]:
    """Every algorithm name: built-ins and plug-ins (not imported until asked for)."""
    _discover()
    return sorted(_REGISTRY.keys() | _PLUGINS.keys())


def broken() -> dict[str, str]:
    """Try to load every plug-in; name -> the one-line error of each that fails."""
    _discover()
    problems = {}
    for name in sorted(_PLUGINS):
        try:
            _load(name)
        except PluginLoadError as err:
            problems[name] = str(err)
    return problems


def get(name: str) -> type[Algorithm]:
    """The class registered as ``name``; a plug-in is imported on first use."""
    _discover()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _PLUGINS:
        return _load(name)
    raise UnknownAlgorithmError(
        f"unknown algorithm {name!r}; valid algorithms: {', '.join(names())}"
    )
