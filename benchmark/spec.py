"""RunSpec: everything that defines one run, as plain data with a stable id."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gapbench import algorithms
from gapbench.algorithms.base import RUN_REGIMES
from gapbench.gap_envs import GapSpec, get_task


class SpecError(ValueError):
    """A run spec that cannot run (unknown task/algorithm/regime, missing dataset, ...)."""


#: The axes each run regime uses besides task, real gap and seed: a simulator gap to train
#: in, a dataset of real transitions. The one table the spec and the matrix read; analysis
#: keeps its own copy (it reads records only; a test checks the two agree).
REGIME_AXES: dict[str, frozenset[str]] = {
    "offline": frozenset({"dataset"}),
    "online": frozenset({"sim_gap"}),
    "oracle": frozenset(),
    "hybrid": frozenset({"sim_gap", "dataset"}),
}


def uses_sim_gap(regime: str) -> bool:
    """Whether runs of ``regime`` train in a (shifted) simulator."""
    return "sim_gap" in REGIME_AXES[regime]


def uses_dataset(regime: str) -> bool:
    """Whether runs of ``regime`` learn from a dataset of real transitions."""
    return "dataset" in REGIME_AXES[regime]


@dataclass(frozen=True)
class Budget:
    """How long a run trains and how often it is evaluated.

    updates: gradient updates in total.
    steps_per_update: env steps collected per update (online/oracle/hybrid), 1 as in SAC/H2O.
    collect_every: updates per collection phase: 1 interleaves a step and an update
        (SAC); 1000 collects 1000 sim steps then does 1000 updates (H2O's epochs).
        ``None`` picks the regime's published schedule (1 online, 1000 hybrid).
    warmup_steps: env steps of uniform random actions before the first update.
    eval_every: updates between evaluations on the real system.
    eval_episodes: deterministic episodes per evaluation (run as one vector env).
    checkpoint_every: evaluations between checkpoints (0: never).
    """

    updates: int
    eval_every: int
    eval_episodes: int = 5
    steps_per_update: int = 1
    collect_every: int | None = None
    warmup_steps: int = 0
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        for name in ("updates", "eval_every", "eval_episodes", "steps_per_update"):
            if getattr(self, name) <= 0:
                raise SpecError(f"budget {name} must be > 0, got {getattr(self, name)}")
        if self.warmup_steps < 0 or self.checkpoint_every < 0:
            raise SpecError("budget warmup_steps and checkpoint_every must be >= 0")
        if self.collect_every is not None and self.collect_every <= 0:
            raise SpecError(f"budget collect_every must be > 0, got {self.collect_every}")

    def schedule(self, regime: str) -> int:
        """Updates per collection phase, never longer than the evaluation period."""
        default = 1000 if regime == "hybrid" else 1
        return max(1, min(self.collect_every or default, self.eval_every))


PRESETS: dict[str, Budget] = {
    # seconds: tests and CI
    "smoke": Budget(updates=200, eval_every=100, eval_episodes=2, warmup_steps=200),
    # a real but small CPU run (minutes)
    "mini": Budget(updates=30_000, eval_every=3_000, eval_episodes=5, warmup_steps=5_000),
    # the papers' budgets: H2O's 1000 epochs x 1000 updates, evaluated every 10 epochs
    "paper": Budget(
        updates=1_000_000,
        eval_every=10_000,
        eval_episodes=5,
        warmup_steps=10_000,
        checkpoint_every=5,
    ),
}


class BudgetError(SpecError):
    """Budget overrides that cannot apply; ``problems`` lists each (one per bad key)."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = problems


def _as_int(value: Any) -> int | None:
    """``value`` as an integer when it is one (2000, 2000.0, "2000", "2e3"), else None.
    Strings are accepted because CLI pairs (``--budget updates=2000``) arrive as text."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)  # exact, where float() would round a long one
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None  # inf and nan are not integers


def override_budget(base: Budget, overrides: Any) -> Budget:
    """``base`` with the fields in ``overrides`` (a mapping field -> integer) replaced.
    The one budget parser: ``run --budget``, ``tune --budget`` and matrix files use it.
    Raises BudgetError naming every bad key or value at once."""
    if overrides is None:
        return base
    if not isinstance(overrides, Mapping):
        raise BudgetError(["expected a mapping of budget fields"])
    valid = [f.name for f in dataclasses.fields(Budget)]
    values: dict[str, int | None] = {}
    problems = []
    for key, value in overrides.items():
        if key not in valid:
            problems.append(f"unknown budget key {key!r}; valid: {', '.join(valid)}")
        elif key == "collect_every" and value is None:  # None: the regime's own schedule
            values[key] = None
        elif (number := _as_int(value)) is None:
            problems.append(f"budget {key} needs an integer, got {value!r}")
        else:
            values[key] = number
    if problems:
        raise BudgetError(problems)
    try:
        return dataclasses.replace(base, **values)
    except SpecError as err:  # Budget's own range checks
        raise BudgetError([str(err)]) from None


def preset_budget(name: Any, overrides: Mapping[str, Any] | None = None) -> Budget:
    """The budget of preset ``name`` with ``overrides`` applied (see override_budget)."""
    base = PRESETS.get(name) if isinstance(name, str) else None  # a matrix file may hold any
    if base is None:
        raise SpecError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return override_budget(base, overrides)


def device_syntax_problem(device: Any) -> str | None:
    """Why ``device`` is not a device name at all, or None (no hardware is looked at)."""
    if isinstance(device, str) and re.fullmatch(r"cpu|cuda(:\d+)?", device):
        return None
    return f"unknown device {device!r}; valid: cpu, cuda, cuda:N"


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot run here (checked before anything is written, so a missing GPU
    leaves no failed record behind), or None."""
    if problem := device_syntax_problem(device):
        return problem
    if device == "cpu":
        return None
    import torch

    if not torch.cuda.is_available():
        return f"device {device!r} requested but CUDA is not available here; valid: cpu"
    index, count = int(device.partition(":")[2] or 0), torch.cuda.device_count()
    if index >= count:
        return f"device {device!r}: this machine has {count} GPU(s); valid: cuda:0..{count - 1}"
    return None


def regime_problem(regime: Any) -> str | None:
    """Why ``regime`` is not a run regime, or None (the one wording, used by check_regime
    and the matrix's exclude rules)."""
    if isinstance(regime, str) and regime in RUN_REGIMES:
        return None
    return f"unknown regime {regime!r}; valid regimes: {', '.join(RUN_REGIMES)}"


def check_regime(algorithm: str, regime: str | None) -> str:
    """The regime ``algorithm`` runs in (its own when ``regime`` is None), checked against
    the algorithm's data regime. Raises KeyError (unknown algorithm) or SpecError."""
    algo = algorithms.get(algorithm)
    regime = regime if regime is not None else algo.regime
    if problem := regime_problem(regime):
        raise SpecError(problem)
    if RUN_REGIMES[regime] != algo.regime:
        valid = [r for r, a in RUN_REGIMES.items() if a == algo.regime]
        raise SpecError(
            f"algorithm {algorithm!r} ({algo.regime}) cannot run in regime {regime!r}; "
            f"valid: {', '.join(valid)}"
        )
    return regime


def algorithm_config(algorithm: str, hparams: Mapping[str, Any] | None = None) -> Any:
    """The algorithm's ``Config`` with ``hparams`` (CLI/YAML values, coerced to each field's
    type and range-checked) over its defaults: the one place a hyper-parameter mapping
    becomes a config. RunSpec.resolved builds a run's config with it (later code reads
    ``spec.config``); matrix files and tuning search spaces validate their hyper-parameters
    with it. Raises KeyError (unknown algorithm) or ConfigError naming the bad value."""
    return algorithms.get(algorithm).make_config(dict(hparams or {}))


def run_problem(spec: RunSpec, options: Mapping[str, str] | None = None) -> str | None:
    """Why a resolved ``spec`` cannot run here, found before anything is written (so
    ``gapbench run`` and ``gapbench tune`` refuse it cleanly instead of leaving failed
    records): a ``mass.<body>`` its task lacks, or a dataset that is missing or not for its
    task. None when it can run. ``options`` names the option a gap came from where it is
    not ``--gap`` / ``--real-gap`` (tune's real gap is ``--objective-gap``)."""
    from gapbench.benchmark.matrix import dataset_problem  # matrix imports this module
    from gapbench.gap_envs import gap_problem

    names = {"gap": "--gap", "real_gap": "--real-gap", **(options or {})}
    for key in ("gap", "real_gap"):
        problem = gap_problem(spec.task, getattr(spec, key)) if getattr(spec, key) else None
        if problem:
            return f"{names[key]}: {problem}"
    return dataset_problem(spec.dataset, spec.task) if spec.dataset else None


@dataclass(frozen=True)
class RunSpec:
    """One run: an algorithm in its data regime on a task, with a sim/real gap and a dataset.

    ``gap`` shifts the simulator the algorithm trains in (online/hybrid); ``real_gap``
    shifts the "real" system that provides the dataset, the oracle's interaction and
    every evaluation (nominal by default). ``regime`` defaults to the algorithm's own;
    an online algorithm can run as ``oracle`` (trained on the real system).
    """

    task: str
    algorithm: str
    seed: int = 0
    gap: str = ""
    real_gap: str = ""
    dataset: str | None = None
    regime: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    preset: str = "smoke"
    budget: Budget | None = None
    sim_replay_capacity: int | None = None  # None: 10 x dataset size (H2O) or the whole run
    device: str = "cpu"

    # -- resolution and validation --------------------------------------------------------
    def resolved(self) -> RunSpec:
        """Canonical form: gaps printed canonically, regime and budget filled in, hparams
        coerced to their types, the algorithm's config built (:attr:`config`). Raises
        SpecError/ValueError naming what is wrong. A resolved spec returns itself: a spec
        is resolved once and later code takes the resolved spec."""
        if self.is_resolved:
            return self
        get_task(self.task)
        regime = check_regime(self.algorithm, self.regime)
        needs_data = uses_dataset(regime)
        if needs_data and not self.dataset:
            raise SpecError(f"regime {regime!r} ({self.algorithm}) needs a dataset (--dataset)")
        config = algorithm_config(self.algorithm, self.hparams)
        gap = str(GapSpec.parse(self.gap)) if uses_sim_gap(regime) else ""
        budget = self.budget or preset_budget(self.preset)
        if problem := device_syntax_problem(self.device):
            raise SpecError(problem)
        spec = dataclasses.replace(
            self,
            gap=gap,
            real_gap=str(GapSpec.parse(self.real_gap)),
            dataset=self.dataset if needs_data else None,
            regime=regime,
            hparams={k: getattr(config, k) for k in self.hparams},
            budget=budget,
        )
        # not a field: equality, to_dict and the run id see only the plain data above, and
        # dataclasses.replace (a different spec) starts unresolved again
        object.__setattr__(spec, "_config", config)
        return spec

    @property
    def is_resolved(self) -> bool:
        """Whether this spec object came from :meth:`resolved`."""
        return "_config" in self.__dict__

    @property
    def config(self) -> Any:
        """The algorithm's ``Config`` for this spec, every hyper-parameter with defaults
        filled in, built when the spec was resolved (resolving it first if need be). A fresh
        copy each time: an algorithm may keep and change its own."""
        return dataclasses.replace(self.resolved().__dict__["_config"])

    # -- plain data ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["hparams"] = {
            k: list(v) if isinstance(v, tuple) else v for k, v in self.hparams.items()
        }
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        data = dict(data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise SpecError(f"unknown run spec key(s) {sorted(unknown)}; valid: {sorted(known)}")
        if isinstance(data.get("budget"), dict):
            data["budget"] = Budget(**data["budget"])
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls.from_dict(json.loads(text))

    @functools.cached_property
    def run_id(self) -> str:
        """Stable id: readable prefix + hash of everything that changes the numbers.
        The device is left out so a run can resume on another machine. Computed (and the
        spec resolved) once per spec object: a spec is plain data, never changed in place."""
        r = self.resolved()
        content = r.to_dict()
        content.pop("device")
        digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:10]
        return f"{r.task}-{r.algorithm}-s{r.seed}-{digest}"
