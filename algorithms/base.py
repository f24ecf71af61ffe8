"""The interface every gapbench algorithm implements.

An algorithm owns only its networks and its math; the harness owns envs, buffers,
evaluation and records. A new algorithm is one file with

    @register
    class MyAlgo(Algorithm):
        name = "myalgo"
        regime = "offline"            # offline | online | hybrid
        Config = MyAlgoConfig         # a dataclass: every hyper-parameter with its default

        def __init__(self, obs_dim, act_dim, config=None, seed=0, device="cpu"):
            super().__init__(obs_dim, act_dim, config, seed, device)
            self.actor = ...          # anything with .act(obs_tensor, deterministic)

        def update(self, dataset=None, replay=None) -> dict[str, Tensor]: ...

``update`` receives the sources its regime provides, as buffers it samples from
itself (so it decides its published batch sizes): ``dataset`` (the fixed log of real
transitions) for offline and hybrid, ``replay`` (transitions collected online, in the
simulator, or in the real system for the oracle regime) for online and hybrid. It
returns a dict of scalar metrics as 0-dim tensors, *not* Python floats: reading them
would force a host sync every step; the harness averages them and reads them once
per evaluation.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
import typing
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LRScheduler

from gapbench.algorithms.buffer import TensorBuffer

REGIMES = ("offline", "online", "hybrid")
# Regimes a run can ask for, and which algorithm regime serves each.
RUN_REGIMES = {"offline": "offline", "online": "online", "oracle": "online", "hybrid": "hybrid"}
SOURCES = {"offline": ("dataset",), "online": ("replay",), "hybrid": ("dataset", "replay")}


def accumulate(sums: dict[str, Tensor], metrics: dict[str, Tensor]) -> None:
    """Add ``metrics`` into ``sums`` in place, on the device (no host sync)."""
    for key, value in metrics.items():
        sums[key] = sums[key] + value if key in sums else value


class ConfigError(ValueError):
    """An unknown or ill-typed hyper-parameter."""


class Algorithm:
    name: ClassVar[str]
    regime: ClassVar[str]
    Config: ClassVar[type]

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        config: Any = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ):
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.config = config if config is not None else self.Config()
        self.seed = seed
        self.device = torch.device(device)
        torch.manual_seed(seed)  # network initialisation is part of the seed's contract
        self.actor: nn.Module

    # -- to implement --------------------------------------------------------------------
    def update(
        self, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None
    ) -> dict[str, Tensor]:
        raise NotImplementedError  # abstract: each algorithm file defines its update

    def update_many(
        self, n: int, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None
    ) -> dict[str, Tensor]:
        """``n`` updates on buffers that do not change meanwhile; returns each metric summed
        over them (the harness averages). An algorithm may override it to overlap work of
        consecutive updates (H2O does) as long as the numbers stay those of ``n`` updates."""
        sums: dict[str, Tensor] = {}
        for _ in range(n):
            accumulate(sums, self.update(dataset=dataset, replay=replay))
        return sums

    def setup(self, dataset: TensorBuffer | None) -> None:  # noqa: B027 - optional hook
        """Called once before training with the fixed dataset (if the regime has one)."""

    def set_total_updates(self, n: int) -> None:  # noqa: B027 - optional hook
        """Called once, right after construction, with the number of updates the run will
        make (its budget), for schedules that span the run (IQL's actor-lr decay)."""

    # -- shared --------------------------------------------------------------------------
    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions in [-1, 1] for a batch of observations (obs_dim,) or (B, obs_dim)."""
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        single = obs_t.dim() == 1
        act = self.actor.act(obs_t.unsqueeze(0) if single else obs_t, deterministic)
        act = act.cpu().numpy()
        return act[0] if single else act

    def components(self) -> dict[str, Any]:
        """Everything with state: modules, optimizers, LR schedulers and free parameters
        (found by attribute, so an algorithm file needs no bookkeeping)."""
        out: dict[str, Any] = {}
        for key, value in vars(self).items():
            stateful = isinstance(value, nn.Module | torch.optim.Optimizer | LRScheduler)
            free_param = isinstance(value, Tensor) and value.is_leaf and value.requires_grad
            if stateful or free_param:
                out[key] = value
        return out

    def state_dict(self) -> dict[str, Any]:
        """A snapshot that shares no tensors with the live algorithm (an optimizer's own
        state_dict holds references to its moment buffers, which later steps mutate)."""
        state: dict[str, Any] = {}
        for key, value in self.components().items():
            state[key] = value.detach() if isinstance(value, Tensor) else value.state_dict()
        return copy.deepcopy(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        comps = self.components()
        missing = set(comps) - set(state)
        if missing:
            raise KeyError(f"state_dict lacks {sorted(missing)} for {self.name}")
        for key, value in comps.items():
            if isinstance(value, Tensor):
                with torch.no_grad():
                    value.copy_(state[key])
            else:
                value.load_state_dict(state[key])

    # -- hyper-parameters ----------------------------------------------------------------
    @classmethod
    def hparams(cls) -> dict[str, Any]:
        return dataclasses.asdict(cls.Config())

    @classmethod
    def make_config(cls, overrides: dict[str, Any] | None = None) -> Any:
        return make_config(cls.Config, overrides or {}, cls.name)


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Turn a CLI/YAML value into the field's type (``"3e-4"`` -> 0.0003, ``"true"`` -> True)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        annotation = args[0]
        origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"hyper-parameter {key!r} needs true/false, got {value!r}")
    if annotation in (int, float):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"hyper-parameter {key!r} needs a number, got {value!r}") from None
        if annotation is int:
            if not math.isfinite(number) or number != int(number):
                raise ConfigError(f"hyper-parameter {key!r} needs an integer, got {value!r}")
            return int(number)
        return number
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.strip("()[] ").split(",") if v.strip()]
        inner = typing.get_args(annotation)[0]
        return tuple(_coerce(v, inner, key) for v in value)
    if annotation is str:
        return str(value)
    return value


def make_config(config_cls: type, overrides: dict[str, Any], owner: str = "") -> Any:
    """Build ``config_cls`` with string/YAML overrides coerced to each field's type."""
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    unknown = [k for k in overrides if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown hyper-parameter(s) {', '.join(map(repr, unknown))} for "
            f"{owner or config_cls.__name__}; valid: {', '.join(fields)}"
        )
    hints = typing.get_type_hints(config_cls)
    values = {k: _coerce(v, hints[k], k) for k, v in overrides.items()}
    for key, value in values.items():
        _check_range(key, value)
    return config_cls(**values)


# Ranges of the hyper-parameters every algorithm shares, by name, checked when a run is
# specified: a value outside one would crash inside the run (batch_size=0, hidden=0) or,
# worse, finish "ok" with meaningless numbers (discount=-3).
def _range(key: str) -> tuple[str, Callable[[float], bool]] | None:
    if key in ("batch_size", "n_critics") or key.endswith("_n_actions"):
        return "an integer >= 1", lambda v: v >= 1
    if key == "hidden" or key.endswith("_hidden"):
        return "a list of layer widths, each >= 1", lambda v: v >= 1
    if key == "lr" or key.endswith("_lr"):
        return "a finite number > 0", lambda v: 0 < v < math.inf
    if key in ("discount", "tau"):
        return "a number in (0, 1]", lambda v: 0 < v <= 1
    if key == "expectile":
        return "a number in (0, 1)", lambda v: 0 < v < 1
    return None


def _check_range(key: str, value: Any) -> None:
    rule = _range(key)
    if rule is None or value is None:  # None: the algorithm's documented default rule
        return
    valid, ok = rule
    items = value if isinstance(value, tuple) else (value,)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and ok(v) for v in items):
        raise ConfigError(f"hyper-parameter {key!r} must be {valid}, got {value!r}")
