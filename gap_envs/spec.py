"""GapSpec: a parametrized dynamics shift between a simulator and the real system.

A spec is plain data. It parses from a string (``"gravity=2.0,friction=0.3"``),
a dict (``{"gravity": 2.0, "mass": {"torso": 2.0}}``) or YAML, and prints back
to the same canonical string. The nominal spec (no shift) is the empty string.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

SCALE_KEYS = ("gravity", "mass", "friction")
NOISE_KEYS = ("joint_noise", "noise_ctrl_cost")
VALID_KEYS = (*SCALE_KEYS, *NOISE_KEYS)
_KEY_HELP = "gravity, mass, mass.<body>, friction, joint_noise, noise_ctrl_cost"
# Which action the sim's control cost sees under joint noise: "clipped", the noisy action
# clipped to the actuators' range (what they execute; the default), or "noisy", the noisy
# action before clipping (the H2O authors' simulator: they pass action + noise to a v2
# env, whose reward squares it and whose MuJoCo clamps the control). Same dynamics.
NOISE_CTRL_COSTS = ("clipped", "noisy")


class GapSpecError(ValueError):
    """A gap spec that cannot be parsed or validated."""


def _number(key: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise GapSpecError(f"gap key {key!r} needs a number, got {value!r}") from None
    if not math.isfinite(number):
        raise GapSpecError(f"gap key {key!r} must be finite, got {value!r}")
    return number


def _scale(key: str, value: Any) -> float:
    number = _number(key, value)
    if number <= 0:
        raise GapSpecError(f"gap key {key!r} is a scale and must be > 0, got {value!r}")
    return number


def _fmt(x: float) -> str:
    return repr(float(x))


@dataclass(frozen=True)
class GapSpec:
    """Multiplicative shifts of the physics plus additive action noise.

    gravity: scale of the gravity vector.
    mass: scale of every body's mass (and inertia).
    body_mass: per-body mass scale (``mass.torso=2.0``), applied on top of ``mass``.
    friction: scale of every geom's three friction coefficients, the floor included.
    joint_noise: std of N(0, std^2) noise added to the action the simulator executes.
    noise_ctrl_cost: under joint noise, the control cost of the reward is computed on the
        noisy action ``clipped`` to the actuators' range (the default) or on the ``noisy``
        action before clipping (the H2O authors' simulator: about 0.60 instead of 0.31 per
        step on halfcheetah with N(0, 1) noise). The dynamics are the same either way.
    """

    gravity: float | None = None
    mass: float | None = None
    body_mass: tuple[tuple[str, float], ...] = field(default=())
    friction: float | None = None
    joint_noise: float | None = None
    noise_ctrl_cost: str | None = None  # None: "clipped"

    def __post_init__(self) -> None:
        for key in SCALE_KEYS:
            value = getattr(self, key)
            if value is not None:
                object.__setattr__(self, key, _scale(key, value))
        if self.joint_noise is not None:
            noise = _number("joint_noise", self.joint_noise)
            if noise < 0:
                raise GapSpecError(
                    f"gap key 'joint_noise' is a std and must be >= 0, got {noise!r}"
                )
            object.__setattr__(self, "joint_noise", noise)
        if self.noise_ctrl_cost is not None:
            mode = str(self.noise_ctrl_cost).strip()
            if mode not in NOISE_CTRL_COSTS:
                raise GapSpecError(
                    f"gap key 'noise_ctrl_cost' must be one of {', '.join(NOISE_CTRL_COSTS)}, "
                    f"got {self.noise_ctrl_cost!r}"
                )
            if not self.noise_std:
                raise GapSpecError("gap key 'noise_ctrl_cost' needs joint_noise > 0")
            # the default prints as nothing, so a spec (and a run id) has one spelling
            object.__setattr__(self, "noise_ctrl_cost", None if mode == "clipped" else mode)
        bodies = tuple(
            sorted((str(b), _scale(f"mass.{b}", v)) for b, v in dict(self.body_mass).items())
        )
        object.__setattr__(self, "body_mass", bodies)

    # -- parsing -------------------------------------------------------------------------
    @classmethod
    def parse(cls, value: GapSpec | str | Mapping[str, Any] | None) -> GapSpec:
        """Parse a spec from a GapSpec, a ``k=v,k=v`` string, a YAML string, a dict or None."""
        if value is None:
            return cls()
        if isinstance(value, GapSpec):
            return value
        if isinstance(value, Mapping):
            return cls._from_mapping(value)
        if not isinstance(value, str):
            raise GapSpecError(f"cannot read a gap spec from {type(value).__name__}: {value!r}")
        text = value.strip()
        if text in ("", "nominal", "none", "{}"):
            return cls()
        if "=" not in text:  # YAML mapping such as "gravity: 2.0" or "{gravity: 2.0}"
            try:
                loaded = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise GapSpecError(f"cannot parse gap spec {value!r}: {err}") from None
            if not isinstance(loaded, Mapping):
                raise GapSpecError(
                    f"cannot parse gap spec {value!r}: "
                    f"expected 'key=value,...' with keys {_KEY_HELP}"
                )
            return cls._from_mapping(loaded)
        items: dict[str, Any] = {}
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            key, sep, raw = part.partition("=")
            if not sep:
                raise GapSpecError(f"gap spec item {part!r} is not 'key=value' (keys: {_KEY_HELP})")
            key = key.strip()
            if key in items:
                raise GapSpecError(f"gap key {key!r} given twice in {value!r}")
            items[key] = raw.strip()
        return cls._from_mapping(items)

    @classmethod
    def _from_mapping(cls, data: Mapping[str, Any]) -> GapSpec:
        kwargs: dict[str, Any] = {}
        bodies: dict[str, Any] = {}
        for key, raw in data.items():
            key = str(key)
            if key == "mass" and isinstance(raw, Mapping):
                bodies.update({str(b): v for b, v in raw.items()})
            elif key.startswith("mass."):
                bodies[key[len("mass.") :]] = raw
            elif key in VALID_KEYS:
                kwargs[key] = raw
            else:
                raise GapSpecError(f"unknown gap key {key!r}; valid keys: {_KEY_HELP}")
        return cls(**kwargs, body_mass=tuple(bodies.items()))

    # -- printing ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain dict with only the keys that shift something (nominal: {})."""
        out: dict[str, Any] = {}
        for key in VALID_KEYS:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
            if key == "mass":  # per-body scales print right after the global one
                out.update({f"mass.{body}": scale for body, scale in self.body_mass})
        return out

    def __str__(self) -> str:
        return ",".join(
            f"{k}={v if isinstance(v, str) else _fmt(v)}" for k, v in self.to_dict().items()
        )

    @property
    def is_nominal(self) -> bool:
        return not self.to_dict()

    @property
    def noise_std(self) -> float:
        return self.joint_noise or 0.0

    @property
    def ctrl_cost_on_noisy_action(self) -> bool:
        return self.noise_ctrl_cost == "noisy"
