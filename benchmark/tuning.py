"""Hyper-parameter tuning on top of the single-run harness (Optuna): ``gapbench tune``.

A study tunes one algorithm on one task/gap/dataset setup; each trial trains ordinary runs
through :func:`gapbench.benchmark.harness.run`. The manual (objective, the protocol warning,
pruning, search spaces, storage, records and outputs) is written once, in the CLI's help:
``gapbench tune --help`` (:data:`gapbench.benchmark.cli.tune.DOCS`).

Here: :class:`TuneConfig` (the CLI's options as fields), :func:`prepare` (validate everything
and create or load the study; nothing trained), :func:`run_prepared` / :func:`tune` (run the
trials, then :func:`export` best.yaml, plots and trials.csv), :class:`Objective` (one trial),
and the search-space helpers (:func:`declared_space`, :func:`read_space_file`,
:func:`merge_space`, :func:`parse_space`; an algorithm declares ``search_space`` next to
its ``Config``, in the YAML form of ``--space`` as a Python dict).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
import re
import shutil
import sys
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gapbench import algorithms
from gapbench.algorithms.base import ConfigError
from gapbench.benchmark import runstate
from gapbench.benchmark.spec import (
    Budget,
    RunSpec,
    SpecError,
    algorithm_config,
    device_problem,
    run_problem,
)

PARAM_TYPES = ("float", "int", "categorical")
PARAM_KEYS = {
    "float": ("type", "low", "high", "log", "step"),
    "int": ("type", "low", "high", "log", "step"),
    "categorical": ("type", "choices"),
}
SAMPLERS = ("tpe", "random", "cmaes")
PRUNERS = ("median", "hyperband", "none")
STORAGE_FORMS = "sqlite:///PATH, postgresql://USER:PASS@HOST/DB, mysql+pymysql://..., journal:PATH"
DB_NAME = "optuna.db"
BEST = "best.yaml"
TRIALS_DIR = "trials"
TRIALS_CSV = "trials.csv"
PLOTS_DIR = "plots"
LOCKS_DIR = ".locks"
INHERIT_KEY = "_inherit"
MEDIAN_STARTUP_TRIALS = 5
MIN_IMPORTANCE_TRIALS = 4
HEARTBEAT_S, GRACE_S = 60, 180


class TuningError(ValueError):
    """A tuning setup that cannot start: every problem, listed together."""

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        if len(self.problems) == 1:
            super().__init__(self.problems[0])
        else:
            lines = "\n".join(f"  - {p}" for p in self.problems)
            super().__init__(f"{len(self.problems)} problems:\n{lines}")


class TrialFailed(RuntimeError):
    """A trial's run failed (recorded with ``status: failed``); the study goes on."""


class TrialStopped(TrialFailed):
    """A trial stopped on request and enqueued again (see :class:`Objective`): FAIL to
    Optuna, no failure to report."""


# -- search spaces ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One dimension of a search space."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(
                self.name, self.low, self.high, step=self.step or 1, log=self.log
            )
        return trial.suggest_categorical(self.name, list(self.choices))

    def to_dict(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        return out


def declared_space(algorithm: str) -> dict[str, Any]:
    """The algorithm class's ``search_space`` (raw definitions; empty if it declares none)."""
    cls = algorithms.get(algorithm)
    return dict(getattr(cls, "search_space", None) or {})


def read_space_file(path: str | Path, algorithm: str) -> dict[str, Any]:
    """A YAML search-space file: ``{param: def|null, ...}``, optionally under ``algorithm``."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise TuningError(f"cannot read search space file {str(path)!r}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise TuningError(f"search space file {str(path)!r} is not valid YAML: {err}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise TuningError(f"search space file {str(path)!r} must be a YAML mapping")
    names = set(algorithms.names())
    if algorithm in data and isinstance(data[algorithm], Mapping):
        data = data[algorithm]
    elif data and all(k in names for k in data):  # only other algorithms' spaces
        raise TuningError(
            f"search space file {str(path)!r} has no entry for {algorithm!r} "
            f"(it has: {', '.join(map(str, data))})"
        )
    return dict(data)


def merge_space(base: Mapping[str, Any], override: Mapping[str, Any] | None) -> dict[str, Any]:
    """``override`` merged over ``base``: ``null`` drops a parameter; ``_inherit: false``
    replaces ``base`` entirely."""
    if override is None:
        return dict(base)
    override = dict(override)
    inherit = override.pop(INHERIT_KEY, True)
    merged = dict(base) if inherit not in (False, "false", "no", 0) else {}
    for name, definition in override.items():
        if definition is None:
            merged.pop(name, None)
        else:
            merged[name] = definition
    return merged


def _field_kind(config_cls: type, name: str) -> type | None:
    """int/float/bool/str/tuple for a Config field (Optional unwrapped), None if other."""
    hint = typing.get_type_hints(config_cls)[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = args[0] if len(args) == 1 else hint
    if typing.get_origin(hint) is tuple:
        return tuple
    return hint if hint in (int, float, bool, str) else None


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def parse_space(raw: Mapping[str, Any], algorithm: str) -> dict[str, Param]:
    """Validate raw definitions against the algorithm's Config; raise TuningError listing
    every problem."""
    cls = algorithms.get(algorithm)
    fields = [f.name for f in dataclasses.fields(cls.Config)]
    problems: list[str] = []
    space: dict[str, Param] = {}
    for name, definition in raw.items():
        where = f"search space {algorithm}.{name}"
        if name not in fields:
            problems.append(
                f"unknown hyper-parameter {name!r} in the search space of {algorithm}; "
                f"valid: {', '.join(fields)}"
            )
            continue
        if isinstance(definition, list | tuple):
            definition = {"type": "categorical", "choices": list(definition)}
        if not isinstance(definition, Mapping):
            problems.append(
                f"{where}: a definition must be a mapping with 'type' "
                f"({', '.join(PARAM_TYPES)}) or a list of choices, got {definition!r}"
            )
            continue
        kind = definition.get("type")
        if kind not in PARAM_TYPES:
            problems.append(f"{where}: unknown type {kind!r}; valid: {', '.join(PARAM_TYPES)}")
            continue
        unknown = [k for k in definition if k not in PARAM_KEYS[kind]]
        if unknown:
            problems.append(
                f"{where}: unknown key(s) {', '.join(map(repr, unknown))} for type {kind}; "
                f"valid: {', '.join(PARAM_KEYS[kind])}"
            )
            continue
        field_kind = _field_kind(cls.Config, name)
        if kind == "categorical":
            param, errs = _categorical(name, definition, algorithm, where)
        else:
            param, errs = _numeric(name, kind, definition, field_kind, where)
        problems += errs
        if param is not None and not errs:
            space[name] = param
    if problems:
        raise TuningError(problems)
    return space


def _categorical(name, definition, algorithm, where) -> tuple[Param | None, list[str]]:
    choices = definition.get("choices")
    if not isinstance(choices, list | tuple) or not choices:
        return None, [f"{where}: 'choices' must be a non-empty list, got {choices!r}"]
    problems, values = [], []
    for choice in choices:
        if isinstance(choice, list | tuple):  # e.g. hidden sizes: Optuna stores scalars only
            choice = ",".join(str(c) for c in choice)
        if choice is not None and not isinstance(choice, bool | int | float | str):
            problems.append(f"{where}: choice {choice!r} must be null, bool, number or string")
            continue
        try:
            algorithm_config(algorithm, {name: choice})
        except (ConfigError, ValueError, TypeError) as err:
            problems.append(f"{where}: choice {choice!r}: {err}")
            continue
        if choice in values:
            problems.append(f"{where}: duplicate choice {choice!r}")
            continue
        values.append(choice)
    return Param(name, "categorical", choices=tuple(values)), problems


def _numeric(name, kind, definition, field_kind, where) -> tuple[Param | None, list[str]]:
    if field_kind not in (int, float):
        hint = "categorical" if field_kind is not None else "a categorical type"
        return None, [
            f"{where}: type {kind} needs a numeric hyper-parameter, but {name!r} is "
            f"{getattr(field_kind, '__name__', 'not numeric')}; use {hint}"
        ]
    if kind == "float" and field_kind is int:
        return None, [f"{where}: {name!r} is an integer hyper-parameter; use type: int"]
    low, high = definition.get("low"), definition.get("high")
    log, step = definition.get("log", False), definition.get("step")
    problems = []
    for key, value in (("low", low), ("high", high)):
        if not _is_number(value):
            problems.append(f"{where}: '{key}' must be a finite number, got {value!r}")
        elif kind == "int" and value != int(value):
            problems.append(f"{where}: '{key}' must be an integer for type int, got {value!r}")
    if not isinstance(log, bool):
        problems.append(f"{where}: 'log' must be true or false, got {log!r}")
    if step is not None and (not _is_number(step) or step <= 0):
        problems.append(f"{where}: 'step' must be a number > 0, got {step!r}")
    if problems:
        return None, problems
    if low >= high:
        problems.append(f"{where}: low ({low}) must be < high ({high})")
    if log and low <= 0:
        problems.append(f"{where}: log scale needs low > 0, got low={low}")
    if log and step is not None and not (kind == "int" and step == 1):
        problems.append(f"{where}: 'step' cannot be combined with log scale")
    if kind == "int":
        low, high = int(low), int(high)
        step = int(step) if step is not None else None
    else:
        low, high = float(low), float(high)
        step = float(step) if step is not None else None
    return Param(name, kind, low=low, high=high, log=log, step=step), problems


# -- configuration -----------------------------------------------------------------------------
@dataclass
class TuneConfig:
    """Everything ``gapbench tune`` takes: its options as fields (see ``gapbench tune --help``)."""

    algorithm: str
    task: str
    gap: str = ""  # the simulator's gap (online / hybrid)
    dataset: str | None = None
    regime: str | None = None
    hparams: dict[str, Any] = field(default_factory=dict)  # fixed, never tuned
    preset: str = "smoke"
    budget: Budget | None = None
    seeds: int = 1
    seed_start: int = 0  # e.g. 1000: tune on seeds the final comparison never uses
    objective_gap: str = ""  # the trials' real system (held-out gap); "" = nominal
    last_k: int = 3
    trials: int = 20
    study: str | None = None
    storage: str | None = None  # None: sqlite:///OUT/optuna.db
    workers: int = 1
    threads: int = 1  # torch threads per trial process
    sampler: str = "tpe"
    sampler_seed: int | None = None
    pruner: str = "median"
    space: Mapping[str, Any] | str | Path | None = None  # overrides, or a YAML file
    out: str | Path = "results/tune"
    device: str = "cpu"
    plots: bool = True
    verbose: bool = False  # a setup line, then one progress line per finished trial, on stderr


@dataclass
class Prepared:
    """A validated setup, picklable for worker processes."""

    config: TuneConfig
    space: dict[str, Param]
    base: RunSpec  # resolved, first seed, fixed hparams only
    seeds: list[int]
    storage_url: str
    study_name: str
    setup: dict[str, Any]
    dropped: list[str] = field(default_factory=list)  # fixed by hparams, removed from the space
    # number of this invocation's first trial (earlier ones: the study's); trials enqueued
    # by a stop (WAITING) are numbered before it and run first
    first_trial: int = 0

    @property
    def out(self) -> Path:
        return Path(self.config.out)


@dataclass
class TuneResult:
    study_name: str
    storage: str
    n_trials: int  # in the study, all invocations
    states: dict[str, int]
    best_value: float | None
    best_trial: int | None
    best_hparams: dict[str, Any] | None
    files: dict[str, str]
    notes: list[str]
    dashboard: str
    stopped: bool = False  # by a Ctrl-C: the running trials resume on the next tune


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def default_storage(out: str | Path) -> str:
    return f"sqlite:///{(Path(out) / DB_NAME).resolve()}"


def open_storage(url: str) -> Any:
    """An Optuna storage for ``url`` (see STORAGE_FORMS); TuningError if it cannot be used."""
    import optuna

    def bad(reason: str) -> TuningError:
        return TuningError(f"bad storage {url!r}: {reason}; valid forms: {STORAGE_FORMS}")

    if url.startswith("journal:"):
        path = Path(url[len("journal:") :]).expanduser()
        if not str(path) or str(path) == ".":
            raise bad("journal: needs a file path")
        if path.is_dir():
            raise bad(f"{str(path)!r} is a folder, not a journal file")
        if not path.parent.exists():
            raise bad(f"folder {str(path.parent)!r} does not exist")
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        try:
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise bad(str(err)) from None
    if "://" not in url:
        raise bad("not a URL")
    import sqlalchemy.exc

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    if url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        if str(path) and str(path) != ":memory:" and not path.parent.exists():
            raise bad(f"folder {str(path.parent)!r} does not exist")
    try:
        with warnings.catch_warnings():  # heartbeat_interval is "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=HEARTBEAT_S,
                grace_period=GRACE_S,
            )
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise bad(f"{type(err).__name__}: {reason}") from None


def dashboard_command(url: str) -> str:
    target = url[len("journal:") :] if url.startswith("journal:") else url
    return f"optuna-dashboard {target}"


def _check_choice(value: str, valid: tuple[str, ...], what: str, problems: list[str]) -> None:
    if value not in valid:
        problems.append(f"unknown {what} {value!r}; valid: {', '.join(valid)}")


def prepare(config: TuneConfig) -> Prepared:
    """Validate everything (spec, search space, sampler, pruner, storage) and create or load
    the study; nothing is trained. Raises TuningError (SpecError/ConfigError for the spec)."""
    problems: list[str] = []
    _check_choice(config.sampler, SAMPLERS, "sampler", problems)
    _check_choice(config.pruner, PRUNERS, "pruner", problems)
    for name, least in (("trials", 1), ("seeds", 1), ("workers", 1), ("last_k", 1)):
        value = getattr(config, name)
        if not isinstance(value, int) or value < least:
            problems.append(f"{name} must be an integer >= {least}, got {value!r}")
    if not isinstance(config.seed_start, int) or config.seed_start < 0:
        problems.append(f"seed_start must be an integer >= 0, got {config.seed_start!r}")
    if config.sampler == "cmaes":
        try:
            import cmaes  # noqa: F401
        except ImportError:
            problems.append("sampler 'cmaes' needs the cmaes package (pip install cmaes)")
    if problems:
        raise TuningError(problems)

    seeds = [config.seed_start + i for i in range(config.seeds)]
    base = RunSpec(
        task=config.task,
        algorithm=config.algorithm,
        seed=seeds[0],
        gap=config.gap,
        real_gap=config.objective_gap or "",
        dataset=config.dataset,
        regime=config.regime,
        hparams=dict(config.hparams),
        preset=config.preset,
        budget=config.budget,
        device=config.device,
    ).resolved()  # SpecError / ConfigError / KeyError name the bad value
    # what `gapbench run` checks too: the device here, mass.<body> names, the dataset
    problem = device_problem(base.device) or run_problem(base, {"real_gap": "--objective-gap"})
    if problem:
        raise SpecError(problem)

    raw = declared_space(config.algorithm)
    override = config.space
    if isinstance(override, str | Path):
        override = read_space_file(override, config.algorithm)
    raw = merge_space(raw, override)
    space = parse_space(raw, config.algorithm)
    dropped = [n for n in space if n in base.hparams]
    space = {n: p for n, p in space.items() if n not in base.hparams}
    if not space:
        raise TuningError(
            f"the search space of {config.algorithm} is empty"
            + (f" (fixed by --set: {', '.join(dropped)})" if dropped else "")
            + "; declare search_space on the algorithm or pass --space FILE"
        )

    setup = {
        "algorithm": base.algorithm,
        "task": base.task,
        "regime": base.regime,
        "gap": base.gap,
        "objective_real_gap": base.real_gap,
        "dataset": base.dataset,
        "budget": dataclasses.asdict(base.budget),
        "seeds": seeds,
        "last_k": config.last_k,
        "hparams": _jsonable(base.hparams),
    }
    digest = hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:8]
    study_name = config.study or f"{base.algorithm}-{base.task}-{digest}"
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    url = config.storage or default_storage(out)
    prep = Prepared(config, space, base, seeds, url, study_name, setup, dropped)
    _create_study(prep)
    return prep


def _create_study(prep: Prepared) -> None:
    import optuna

    storage = open_storage(prep.storage_url)
    with _quiet_optuna():
        study = optuna.create_study(
            storage=storage,
            study_name=prep.study_name,
            direction="maximize",
            load_if_exists=True,
        )
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise TuningError(f"study {prep.study_name!r} exists and minimizes; use another --study")
    stored = study.user_attrs.get("setup")
    if stored is None:
        if study.get_trials(deepcopy=False):
            raise TuningError(
                f"study {prep.study_name!r} exists in {prep.storage_url} but was not created by "
                "gapbench tune; use another --study"
            )
        study.set_user_attr("setup", prep.setup)
        study.set_user_attr("search_space", {n: p.to_dict() for n, p in prep.space.items()})
    elif stored != json.loads(json.dumps(prep.setup)):
        diff = [
            f"{k}: {stored.get(k)!r} (study) vs {prep.setup.get(k)!r} (now)"
            for k in sorted(set(stored) | set(prep.setup))
            if stored.get(k) != json.loads(json.dumps(prep.setup.get(k)))
        ]
        raise TuningError(
            [f"study {prep.study_name!r} was created with a different setup; use another --study"]
            + diff
        )


class _DropStopped(logging.Filter):
    """Optuna warns of every FAIL trial, with a traceback; a trial stopped on request is no
    failure (the progress line and the closing message say it stopped)."""

    def __init__(self) -> None:
        super().__init__()
        self.trials: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        failed = re.match(r"Trial (\d+) failed", record.getMessage())
        if failed is None:
            return True
        if record.exc_info and isinstance(record.exc_info[1], TrialStopped):
            self.trials.add(int(failed[1]))
        return int(failed[1]) not in self.trials  # its "failed with value None" comes after


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logger, drop = logging.getLogger("optuna.study._optimize"), _DropStopped()
    logger.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        logger.removeFilter(drop)
        optuna.logging.set_verbosity(level)


def make_sampler(prep: Prepared, worker: int = 0) -> Any:
    import optuna

    seed = None if prep.config.sampler_seed is None else prep.config.sampler_seed + worker
    if prep.config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if prep.config.sampler == "cmaes":
        # CMA-ES handles float/int; categorical parameters fall back to random sampling
        return optuna.samplers.CmaEsSampler(
            seed=seed,
            warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
        )
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(prep: Prepared) -> Any:
    import optuna

    budget = prep.base.budget
    if prep.config.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=budget.updates // 4
        )
    if prep.config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=budget.eval_every, max_resource=len(prep.seeds) * budget.updates
        )
    return optuna.pruners.NopPruner()


# -- the objective ---------------------------------------------------------------------------
def _last_k_mean(curve: list[dict[str, float]], k: int) -> float:
    scores = [row["normalized_score"] for row in curve][-k:]
    return float(sum(scores) / len(scores))


class Objective:
    """The Optuna objective: train the trial's seeds one after the other and score them.

    ``stop()`` (a Ctrl-C, see :func:`optimize`): the running seed checkpoints where it
    stands, the trial is enqueued again with the same hyper-parameters (so the same run ids:
    the next ``tune`` resumes it from the checkpoint), ends as FAIL, and the study stops."""

    def __init__(self, prep: Prepared, stop: Callable[[], bool] | None = None):
        self.prep = prep
        self.stop = stop

    def __call__(self, trial: Any) -> float:
        import optuna

        from gapbench.benchmark import records
        from gapbench.benchmark.harness import RunPruned

        prep = self.prep
        _RUN_PROGRESS.trial = trial.number
        if self.stop is not None and self.stop():  # asked between two trials: start none
            trial.study.stop()
            raise TrialStopped("stopped on request before it started")
        sampled = {name: p.suggest(trial) for name, p in prep.space.items()}
        hparams = {**prep.base.hparams, **sampled}
        try:
            specs = [
                dataclasses.replace(prep.base, seed=s, hparams=hparams).resolved()
                for s in prep.seeds
            ]
        except (ConfigError, ValueError) as err:  # a combination the Config rejects
            raise TrialFailed(f"hyper-parameters rejected: {err}") from None
        run_ids = [s.run_id for s in specs]
        trial.set_user_attr("trial_number", trial.number)
        trial.set_user_attr("run_id", run_ids[0])
        trial.set_user_attr("run_ids", run_ids)
        trial.set_user_attr("hparams", _jsonable(specs[0].hparams))
        updates = prep.base.budget.updates
        trials_dir = prep.out / TRIALS_DIR
        scores: list[dict[int, float]] = []  # per seed: update -> normalized score
        reported: set[int] = set()
        finals: list[float] = []

        for index, spec in enumerate(specs):
            current: dict[int, float] = {}
            scores.append(current)

            def on_eval(
                row: dict[str, Any], _algo: Any = None, index=index, current=current, seed=spec.seed
            ) -> None:
                update = int(row["step"])
                current[update] = float(row["normalized_score"])
                step = index * updates + update
                if step in reported:
                    return
                reported.add(step)
                values = [s[update] for s in scores if update in s]
                trial.report(sum(values) / len(values), step)
                if trial.should_prune():
                    raise RunPruned(f"pruned by Optuna at update {update} of seed {seed}")

            try:
                summary = self._run(spec, trials_dir, on_eval)
            except runstate.RunStopped as stopped:
                trial.study.enqueue_trial(trial.params, user_attrs={"resumes_trial": trial.number})
                trial.set_user_attr("stopped", str(stopped))
                trial.study.stop()
                raise TrialStopped(
                    f"stopped on request ({stopped}); enqueued again: the next `gapbench tune` "
                    "of this study resumes it"
                ) from None
            status = summary.get("status")
            if status == "pruned":
                raise optuna.TrialPruned(f"run {spec.run_id} pruned")
            if status != "ok":
                raise TrialFailed(f"run {spec.run_id} {status}: {summary.get('error')}")
            curve = records.read_curve(trials_dir / spec.run_id / records.CURVE)
            finals.append(_last_k_mean(curve, prep.config.last_k))
            trial.set_user_attr("seed_scores", finals)
        return float(sum(finals) / len(finals))

    def _run(self, spec: RunSpec, trials_dir: Path, on_eval: Callable) -> dict[str, Any]:
        """Run (or reuse) one seed's record, under the run id's lock."""
        import optuna

        from gapbench.benchmark import records
        from gapbench.benchmark.harness import RunPruned, run

        run_dir = trials_dir / spec.run_id
        # waits for another trial process on the same run id, then reuses its record
        with runstate.exclusive(self.prep.out / LOCKS_DIR / f"{spec.run_id}.lock"):
            if records.is_complete(run_dir):
                summary = records.read_json(run_dir / records.SUMMARY)
                if summary.get("status") == "pruned":  # this trial may get further
                    shutil.rmtree(run_dir)
                else:  # reuse: replay the curve through the pruner
                    if summary.get("status") == "ok":
                        try:
                            for row in records.read_curve(run_dir / records.CURVE):
                                on_eval(row)
                        except RunPruned as err:
                            raise optuna.TrialPruned(str(err)) from None
                    return summary
            if (run_dir / records.CHECKPOINT).is_file():
                # a stopped trial's run resumes: its evaluations so far go to the pruner
                # first, as the trial enqueued again has none of its stopped twin's
                try:
                    for row in records.load_checkpoint(run_dir / records.CHECKPOINT)["curve"]:
                        on_eval(row)
                except RunPruned as err:
                    raise optuna.TrialPruned(str(err)) from None
            return run(spec, trials_dir, progress=False, on_eval=on_eval, stop=self.stop)


# -- running ---------------------------------------------------------------------------------
def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def trial_line(trial: Any) -> str:
    """One progress line for a finished trial: number, state, value, params (a pruned
    trial's value is its last intermediate value)."""
    value = "-" if trial.value is None else f"{trial.value:.3f}"
    if trial.value is not None and trial.state.name == "PRUNED":
        value = f"({value})"
    params = ", ".join(f"{k}={_format_value(v)}" for k, v in trial.params.items())
    state = "STOPPED" if "stopped" in trial.user_attrs else trial.state.name  # FAIL to Optuna
    return f"trial {trial.number:>4}  {state:<8} value={value:<10} {params}"


@dataclass
class _TrialProgress:
    """After each trial, one line on stderr (stdout stays free for ``--json``): trials of this
    invocation done / asked for, the trial, and the study's best so far. Workers share the
    study's storage, so every worker's count covers the others' trials too."""

    total: int
    first: int

    def __call__(self, study: Any, trial: Any) -> None:
        trials = study.get_trials(deepcopy=False)
        done = sum(t.number >= self.first and t.state.is_finished() for t in trials)
        try:
            best = f"best so far {study.best_value:.3f} (trial {study.best_trial.number})"
        except ValueError:  # no complete trial yet
            best = "no complete trial yet"
        sys.stderr.write(f"[{done}/{self.total}] {trial_line(trial)} | {best}\n")
        sys.stderr.flush()


class _DropPruned(logging.Filter):
    """The harness logs every stopped run with its traceback; a pruned run is no failure."""

    def filter(self, record: logging.LogRecord) -> bool:
        from gapbench.benchmark.harness import RunPruned

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, RunPruned)


@contextlib.contextmanager
def _quiet_pruned_runs() -> Iterator[None]:
    logger, drop = logging.getLogger("gapbench.run"), _DropPruned()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


class _RunProgress(logging.Filter):
    """A verbose tune shows each run's evaluations as they come (a trial can take hours),
    named by trial: several workers interleave their lines on one stderr."""

    trial: int | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.trial = "-" if self.trial is None else self.trial
        return True


_RUN_PROGRESS = _RunProgress()


@contextlib.contextmanager
def _run_progress_lines(enabled: bool) -> Iterator[None]:
    logger = logging.getLogger("gapbench.run")
    if not enabled:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("trial %(trial)s: %(message)s"))
    handler.addFilter(_RUN_PROGRESS)
    level, propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # a caller's root handler would print each line twice
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


def _worker(
    prep: Prepared, n_trials: int, index: int, threads: int, stop: Callable[[], bool]
) -> None:
    """One trial process (or the caller's process when workers == 1); ``stop()``: see
    :class:`Objective`."""
    import optuna
    import torch

    torch.set_num_threads(threads)
    storage = open_storage(prep.storage_url)
    with _quiet_optuna(), _quiet_pruned_runs(), _run_progress_lines(prep.config.verbose):
        study = optuna.load_study(
            study_name=prep.study_name,
            storage=storage,
            sampler=make_sampler(prep, index),
            pruner=make_pruner(prep),
        )
        callbacks = [lambda study, _trial: study.stop() if stop() else None]
        if prep.config.verbose:
            callbacks.insert(0, _TrialProgress(prep.config.trials, prep.first_trial))
        study.optimize(
            Objective(prep, stop), n_trials=n_trials, catch=(TrialFailed,), callbacks=callbacks
        )


def _shares(total: int, workers: int) -> list[int]:
    return [total // workers + (1 if i < total % workers else 0) for i in range(workers)]


def _pool_worker(prep: Prepared, n_trials: int, index: int, threads: int, flag: Any) -> None:
    """A trial process of several: a terminal's Ctrl-C reaches it too, but the stop is the
    parent's to decide (``flag``, set on its first signal)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker(prep, n_trials, index, threads, flag.is_set)


def optimize(prep: Prepared) -> bool:
    """Run ``config.trials`` more trials, in this process or in ``workers`` processes.

    The first Ctrl-C (or SIGTERM) is a stop request: each running trial checkpoints its run
    where it stands and is enqueued again (see :class:`Objective`), no new trial starts;
    returns True when stopped so. A second signal aborts at once (KeyboardInterrupt)."""
    workers = min(prep.config.workers, prep.config.trials)
    if workers == 1:
        with runstate.interrupts_as_stop() as stop:
            _worker(prep, prep.config.trials, 0, prep.config.threads, stop)
        return stop()
    threads = prep.config.threads
    ctx = multiprocessing.get_context("spawn")
    flag = ctx.Event()
    procs = [
        ctx.Process(
            target=_pool_worker, args=(prep, share, i, threads, flag), name=f"gapbench-tune-{i}"
        )
        for i, share in enumerate(_shares(prep.config.trials, workers))
    ]
    for p in procs:
        p.start()
    try:
        with runstate.interrupts_as_stop(flag=flag):
            for p in procs:
                p.join()
    except KeyboardInterrupt:  # the second signal: the workers ignore SIGINT, so end them
        for p in procs:
            p.terminate()
            p.join(timeout=30)
        raise
    bad = [f"{p.name} exited with {p.exitcode}" for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError("tuning worker(s) failed: " + "; ".join(bad))
    return flag.is_set()


def tune(config: TuneConfig) -> TuneResult:
    """Validate, run ``config.trials`` more trials, and export best.yaml, plots and trials.csv."""
    return run_prepared(prepare(config))


def run_prepared(prep: Prepared) -> TuneResult:
    """:func:`tune` after :func:`prepare` (the CLI reports setup errors apart)."""
    import optuna

    config = prep.config
    with _quiet_optuna():
        storage = open_storage(prep.storage_url)
        study = optuna.load_study(study_name=prep.study_name, storage=storage)
        trials = study.get_trials(deepcopy=False)
        waiting = [t.number for t in trials if t.state == optuna.trial.TrialState.WAITING]
        prep.first_trial = min(waiting, default=len(trials))
    if config.verbose:
        print(
            f"study {prep.study_name!r} in {prep.storage_url}: {config.trials} more trial(s), "
            f"{len(prep.seeds)} seed(s) each, {config.workers} worker(s)",
            file=sys.stderr,
            flush=True,
        )
        if prep.dropped:
            print(f"fixed by --set, not tuned: {', '.join(prep.dropped)}", file=sys.stderr)
    stopped = optimize(prep)
    return dataclasses.replace(export(prep), stopped=stopped)


# -- outputs ---------------------------------------------------------------------------------
def best_snippet(prep: Prepared, hparams: Mapping[str, Any]) -> dict[str, Any]:
    """``{algorithms: {label: {hparams: {...}}}}`` for a matrix file."""
    cls = algorithms.get(prep.base.algorithm)
    config = algorithm_config(prep.base.algorithm, hparams)
    values = {k: _jsonable(getattr(config, k)) for k in hparams}
    entry: dict[str, Any] = {}
    label = prep.base.algorithm
    if prep.base.regime != cls.regime:
        label = f"{prep.base.algorithm}-{prep.base.regime}"
        entry.update(algorithm=prep.base.algorithm, regime=prep.base.regime)
    entry["hparams"] = values
    return {"algorithms": {label: entry}}


class _SnippetDumper(yaml.SafeDumper):
    """Block mappings, one hyper-parameter a line; lists (``hidden``) inline."""


_SnippetDumper.add_representer(
    list, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True)
)


def _protocol(prep: Prepared) -> str:
    real = prep.base.real_gap or "nominal"
    if prep.config.objective_gap:
        return f"held-out real gap {real!r} (not the comparison's real system)"
    return (
        f"real system {real!r}, seeds {prep.seeds[0]}..{prep.seeds[-1]}: OPTIMISTIC if the "
        "comparison reports on the same system"
    )


def export(prep: Prepared) -> TuneResult:
    import optuna

    storage = open_storage(prep.storage_url)
    with _quiet_optuna():
        study = optuna.load_study(study_name=prep.study_name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    out, files, notes = prep.out, {}, []
    best = None
    with contextlib.suppress(ValueError):
        best = study.best_trial
    best_hparams = None
    if best is not None:
        best_hparams = best.user_attrs.get("hparams") or {**prep.base.hparams, **best.params}
        snippet = best_snippet(prep, best_hparams)
        header = (
            f"# gapbench tune: best of study {prep.study_name!r} ({prep.storage_url})\n"
            f"# trial {best.number}, objective {best.value:.4f} = mean over {len(prep.seeds)} "
            f"seed(s) of the mean normalized score of each run's last {prep.config.last_k} "
            "evaluation(s)\n"
            f"# protocol: {_protocol(prep)}\n"
            f"# task {prep.base.task}, sim gap {prep.base.gap or 'nominal'!r}, dataset "
            f"{prep.base.dataset}, budget {dataclasses.asdict(prep.base.budget)}\n"
            "# merge 'algorithms' into a matrix file's 'algorithms'\n"
        )
        text = header + yaml.dump(snippet, Dumper=_SnippetDumper, sort_keys=False)
        path = out / BEST
        path.write_text(text)
        files["best"] = str(path)
    else:
        notes.append("no complete trial yet: best.yaml not written")
    if trials:
        with _quiet_optuna():
            frame = study.trials_dataframe()
        path = out / TRIALS_CSV
        frame.to_csv(path, index=False)
        files["trials_csv"] = str(path)
    if prep.config.plots:
        plot_files, plot_notes = save_plots(study, out / PLOTS_DIR)
        files.update(plot_files)
        notes += plot_notes
    return TuneResult(
        study_name=prep.study_name,
        storage=prep.storage_url,
        n_trials=len(trials),
        states=states,
        best_value=None if best is None else best.value,
        best_trial=None if best is None else best.number,
        best_hparams=best_hparams,
        files=files,
        notes=notes,
        dashboard=dashboard_command(prep.storage_url),
    )


def save_plots(study: Any, folder: Path) -> tuple[dict[str, str], list[str]]:
    """Optuna's matplotlib plots as PNG; each that cannot be made is skipped with a note."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    params = sorted({p for t in complete for p in t.params})
    try:
        import matplotlib

        if "matplotlib.pyplot" not in sys.modules:
            matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from optuna.visualization import matplotlib as vis
    except ImportError as err:
        return {}, [f"plots skipped: {err}"]

    def need_complete(n: int) -> str | None:
        return (
            None if len(complete) >= n else f"needs >= {n} complete trial(s), has {len(complete)}"
        )

    has_intermediate = any(t.intermediate_values for t in study.get_trials(deepcopy=False))
    plots: list[tuple[str, str | None, Callable[[], Any]]] = [
        ("optimization_history", need_complete(1), lambda: vis.plot_optimization_history(study)),
        (
            "intermediate_values",
            None if has_intermediate else "no intermediate values reported",
            lambda: vis.plot_intermediate_values(study),
        ),
        (
            "param_importances",
            need_complete(MIN_IMPORTANCE_TRIALS)
            or (None if len(params) >= 2 else f"needs >= 2 parameters, has {len(params)}"),
            lambda: vis.plot_param_importances(study),
        ),
        ("parallel_coordinate", need_complete(2), lambda: vis.plot_parallel_coordinate(study)),
    ]
    files, notes = {}, []
    folder.mkdir(parents=True, exist_ok=True)
    for name, reason, make in plots:
        path = folder / f"{name}.png"
        if reason is not None:
            path.unlink(missing_ok=True)  # a stale plot from an earlier invocation
            notes.append(f"plot {name} skipped: {reason}")
            continue
        try:
            with _quiet_optuna(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                axes = make()
            first = axes.flat[0] if hasattr(axes, "flat") else axes
            fig = first.figure
            fig.savefig(path, dpi=120, bbox_inches="tight")
            plt.close(fig)
            files[f"plot_{name}"] = str(path)
        except Exception as err:  # noqa: BLE001 - a plot never fails the study
            notes.append(f"plot {name} skipped: {type(err).__name__}: {err}")
    return files, notes
