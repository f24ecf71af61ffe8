"""Benchmark matrices: a YAML file that expands to many RunSpecs, validated up front.

The file format and its semantics (keys, regime-aware pairing over spec.REGIME_AXES,
dataset templates, exclude / include, ``OUT/matrix.json``, what is validated) are written
once, in the CLI's help: ``gapbench matrix --help`` (:data:`gapbench.benchmark.cli.matrix.DOCS`).

Here: :func:`load` reads, validates and expands a file (or a mapping) into a
:class:`Matrix` of :class:`MatrixRun` (a label and a resolved spec), raising one
:class:`MatrixError` that lists every problem; :func:`write_manifest` / :func:`read_manifest`
keep ``OUT/matrix.json``; :func:`status` reports each run's state (from
:mod:`gapbench.benchmark.runstate`). Running them is :mod:`gapbench.benchmark.executors`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import statistics
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gapbench.benchmark import records, runstate
from gapbench.benchmark.runstate import STATUSES, last_evaluation, run_status
from gapbench.benchmark.spec import (
    Budget,
    BudgetError,
    RunSpec,
    SpecError,
    algorithm_config,
    check_regime,
    device_syntax_problem,
    override_budget,
    preset_budget,
    regime_problem,
    uses_dataset,
    uses_sim_gap,
)
from gapbench.gap_envs import TASKS, GapSpec, gap_problem
from gapbench.gap_envs.tasks import task_problem

log = logging.getLogger("gapbench.matrix")

MANIFEST = "matrix.json"
MAX_RUNS = 10_000  # a matrix expands to at most this many runs unless its max_runs says more
TOP_KEYS = (
    "name",
    "out",
    "preset",
    "budget",
    "device",
    "tasks",
    "sim_gaps",
    "real_gaps",
    "datasets",
    "algorithms",
    "seeds",
    "exclude",
    "include",
    "max_runs",
)
ALGO_KEYS = ("algorithm", "regime", "hparams", "budget")
RULE_KEYS = ("task", "gap", "sim_gap", "real_gap", "dataset", "algorithm", "regime", "seed")
INCLUDE_KEYS = (
    "task",
    "algorithm",
    "label",
    "regime",
    "seed",
    "gap",
    "sim_gap",
    "real_gap",
    "dataset",
    "hparams",
    "budget",
)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][-\w.]*")
# gapbench/<task>[-<real gap slug>]/<quality>-v<N> (gapbench.benchmark.datasets_build.dataset_id)
_GAPBENCH_ID = re.compile(
    r"^gapbench/(?P<task>[A-Za-z0-9]+)(?:-(?P<gap>[-\w]+))?/(?P<name>[-\w.+]+?)-v(?P<version>\d+)$"
)


class MatrixError(ValueError):
    """Every problem found in a matrix file, listed together."""

    def __init__(self, problems: list[str], source: str = "matrix"):
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{source}: {len(self.problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class MatrixRun:
    """One expanded run: its resolved spec plus the label it has in the matrix."""

    label: str
    spec: RunSpec  # resolved
    run_id: str

    def cell(self) -> dict[str, Any]:
        """The manifest entry: the label and the fields that place the run in the grid."""
        s = self.spec
        return {
            "label": self.label,
            "algorithm": s.algorithm,
            "regime": s.regime,
            "task": s.task,
            "gap": s.gap,
            "real_gap": s.real_gap,
            "dataset": s.dataset,
            "seed": s.seed,
        }


@dataclass
class Matrix:
    name: str
    out: Path
    runs: list[MatrixRun]
    source: str = ""
    collapsed: int = 0  # duplicates removed
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.runs)

    def by_id(self) -> dict[str, MatrixRun]:
        return {r.run_id: r for r in self.runs}


# -- loading and validation ----------------------------------------------------------------
def load(
    source: str | Path | Mapping[str, Any],
    out: str | Path | None = None,
    check_datasets: bool = True,
    only: Mapping[str, Any] | None = None,
) -> Matrix:
    """Read, validate and expand a matrix (a YAML path or an already-loaded mapping).

    ``out`` overrides the file's ``out``. ``check_datasets=False`` skips the check that
    each dataset exists locally (``status`` on a machine without the data). ``only`` keeps
    the runs whose fields match it (an exclude-style rule, e.g. ``{"task": "walker2d"}``):
    a slice of a matrix runs, and its datasets are checked, without the rest.
    Raises :class:`MatrixError` listing every problem.
    """
    if isinstance(source, Mapping):
        data, where, stem = dict(source), "matrix", "matrix"
    else:
        path = Path(source)
        where, stem = str(path), path.stem
        try:
            data = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 - safe
        except OSError as err:
            raise MatrixError([f"cannot read {path}: {err.strerror or err}"], where) from None
        except UnicodeDecodeError:
            raise MatrixError(["not a UTF-8 text file; valid: a YAML file"], where) from None
        except _DuplicateKeyError as err:
            raise MatrixError([str(err)], where) from None
        except yaml.YAMLError as err:
            # the usual slip: an unquoted "{task}" inside a [flow, list]
            hint = '; quote values that hold { }, e.g. ["gapbench/{task}/medium-v{version}"]'
            hint = hint if "'{'" in str(err) else ""
            raise MatrixError([f"invalid YAML: {err}{hint}"], where) from None
        if not isinstance(data, Mapping):
            raise MatrixError(["a matrix file must be a YAML mapping"], where)
    return _Expander(dict(data), where, stem, out, check_datasets, only).expand()


class _DuplicateKeyError(yaml.YAMLError):
    pass


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping: PyYAML keeps the last one
    silently, so two ``algorithms:`` labels of one name would collapse to one."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                continue  # the SafeLoader names this problem itself
            if key in seen:
                raise _DuplicateKeyError(
                    f"duplicate key {key!r} at line {line} (first at line {seen[key]}); "
                    "valid: each key once per mapping"
                )
            seen[key] = line
        return super().construct_mapping(node, deep)


def dataset_problem(dataset: str, task: str) -> str | None:
    """Hook: why ``dataset`` cannot be loaded for ``task`` on this machine, or None if it can.

    Asks ``gapbench.gap_envs.datasets.exists(source, task=...)`` (gapbench ids, local Minari ids and
    folders, D4RL HDF5 files; it raises when the data was built for another task). Without
    that module only the form is checked: a ``gapbench/<task>[-<gap>]/<quality>-v<N>`` id
    must name a known task (this one), a file path must exist.
    """
    try:
        from gapbench.gap_envs import datasets as ds_module
    except ModuleNotFoundError as err:
        if err.name != "gapbench.gap_envs.datasets":
            raise
        ds_module = None
    match = _GAPBENCH_ID.match(dataset)
    if dataset.startswith("gapbench/"):
        if not match:
            return f"dataset {dataset!r} is not of the form gapbench/<task>/<quality>-v<N>"
        if match["task"] not in TASKS:
            return f"dataset {dataset!r} names unknown task {match['task']!r}"
        if match["task"] != task:
            return f"dataset {dataset!r} is for task {match['task']!r}, not {task!r}"
    if ds_module is not None and callable(getattr(ds_module, "exists", None)):
        try:
            if not ds_module.exists(dataset, task=task):
                hint = ""
                if match:
                    hint = f" (gapbench datasets build --task {task} --quality {match['name']}"
                    hint += " --real-gap ...)" if match["gap"] else ")"
                return f"dataset {dataset!r} is not available locally{hint}"
        except (ValueError, KeyError, OSError) as err:
            return f"dataset {dataset!r}: {err}"
        return None
    is_file = not match and dataset.endswith((".hdf5", ".h5", ".npz"))
    if is_file and not Path(dataset).expanduser().exists():
        return f"dataset file {dataset!r} does not exist"
    return None


def dataset_problems(matrix: Matrix) -> list[str]:
    """Why the matrix's datasets cannot be loaded here, one problem per (dataset, task) pair:
    for a matrix loaded with ``check_datasets=False`` (a dry run lists the runs anyway)."""
    pairs = dict.fromkeys((r.spec.dataset, r.spec.task) for r in matrix.runs if r.spec.dataset)
    return [problem for pair in pairs if (problem := dataset_problem(*pair))]


def fill_dataset(template: str, task: str, real_gap: str = "") -> str:
    """Substitute ``{task}`` (the task), ``{real}`` (the task plus the real gap's slug,
    as in gapbench dataset ids: ``halfcheetah`` or ``halfcheetah-gravity_2``) and
    ``{version}`` (the ``dataset_version`` of the task's shipped behaviour policies: the
    datasets ``gapbench datasets build`` makes now, whatever each task's version is)."""
    dataset = template.replace("{task}", task)
    if "{version}" in dataset:
        from gapbench.benchmark.policies import dataset_version

        dataset = dataset.replace("{version}", str(dataset_version(task)))
    if "{real}" in dataset:
        from gapbench.gap_envs.datasets import gap_slug

        slug = gap_slug(real_gap)
        dataset = dataset.replace("{real}", f"{task}-{slug}" if slug else task)
    return dataset


def _dataset_task(dataset: str) -> str | None:
    match = _GAPBENCH_ID.match(dataset)
    return match["task"] if match else None


def _canonical_gap(value: Any) -> str:
    return str(GapSpec.parse("" if value is None else value))


class _Expander:
    """Collects problems while reading a matrix, then expands it if there are none."""

    def __init__(self, data, where, stem, out, check_datasets, only=None):
        self.data, self.where, self.stem = data, where, stem
        self.out_override, self.check_datasets, self.only = out, check_datasets, only
        self.problems: list[str] = []
        self.max_runs = MAX_RUNS

    def problem(self, message: str) -> None:
        if message not in self.problems:
            self.problems.append(message)

    # -- field readers ------------------------------------------------------------------
    def _list(self, key: str, default: list[Any] | None = None) -> list[Any]:
        value = self.data.get(key, default)
        if value is None:
            return [] if default is None else list(default)
        if isinstance(value, str | int | float):
            return [value]
        if not isinstance(value, list):
            self.problem(f"{key}: expected a list, got {type(value).__name__}")
            return []
        return value

    def _gaps(self, key: str) -> list[str]:
        gaps = []
        for value in self._list(key, [""]):
            try:
                gaps.append(_canonical_gap(value))
            except ValueError as err:
                self.problem(f"{key}: {err}")
        return list(dict.fromkeys(gaps))

    def _budget(self, base: Budget | None, overrides: Any, where: str) -> Budget | None:
        if base is None:
            return None
        try:
            return override_budget(base, overrides)
        except BudgetError as err:
            for problem in err.problems:
                self.problem(f"{where}: {problem}")
            return None

    def _seeds(self) -> list[int]:
        value = self.data.get("seeds", 1)
        if isinstance(value, int) and not isinstance(value, bool):
            if value < 1:
                self.problem(f"seeds: an int means seeds 0..n-1 and must be >= 1, got {value}")
            if value > self.max_runs:  # before the list is built
                self.problem(self._too_many(value, "at least "))
                return []
            return list(range(value))
        seeds = []
        for s in value if isinstance(value, list) else [value]:
            if isinstance(s, bool) or not isinstance(s, int) or s < 0:
                self.problem(f"seeds: expected non-negative integers, got {s!r}")
            else:
                seeds.append(s)
        if not seeds and isinstance(value, list):
            self.problem("seeds: the list is empty")
        return list(dict.fromkeys(seeds))

    def _max_runs(self) -> int:
        value = self.data.get("max_runs", MAX_RUNS)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            self.problem(f"max_runs: expected a positive integer, got {value!r}")
            return MAX_RUNS
        return value

    def _too_many(self, runs: int, at_least: str = "") -> str:
        return (
            f"the matrix expands to {at_least}{runs:,} runs, above the limit of {self.max_runs:,}; "
            "valid: at most max_runs runs (set max_runs: N in the file to allow more)"
        )

    def _hparams(self, owner: str, algorithm: str | None, hparams: Any) -> dict[str, Any] | None:
        if hparams is None:
            return {}
        if not isinstance(hparams, Mapping):
            self.problem(f"{owner}: hparams must be a mapping, got {hparams!r}")
            return None
        if algorithm is not None:
            try:
                algorithm_config(algorithm, hparams)
            except (ValueError, TypeError) as err:
                self.problem(f"{owner}: {err}")
                return None
        return dict(hparams)

    def _algorithm(self, owner: str, name: Any, regime: Any) -> tuple[str | None, str | None]:
        """(algorithm, regime) checked against the registry; None where invalid."""
        if not isinstance(name, str):
            self.problem(f"{owner}: algorithm must be a name, got {name!r}")
            return None, None
        try:
            return name, check_regime(name, regime)
        except KeyError as err:  # unknown algorithm
            self.problem(f"{owner}: {err}")
            return None, None
        except SpecError as err:  # hparams are still checked against the algorithm
            self.problem(f"{owner}: {err}")
            return name, None

    # -- expansion ----------------------------------------------------------------------
    def expand(self) -> Matrix:
        d = self.data
        for key in d:
            if key not in TOP_KEYS:
                self.problem(f"unknown key {key!r}; valid keys: {', '.join(TOP_KEYS)}")
        name = str(d.get("name") or self.stem)
        if "name" in d and not _SAFE_NAME.fullmatch(name):
            # the default output is results/<name>: a path here would write elsewhere
            self.problem(
                f"name: {name!r} is not a plain folder name; valid: letters, digits, '-', '_' "
                "and '.' (no path separators, no leading '.')"
            )
            name = self.stem
        out = self.out_override or d.get("out") or Path("results") / name
        preset = d.get("preset", "smoke")
        try:
            base = preset_budget(preset)
        except SpecError as err:
            self.problem(str(err))
            base = None
        budget = self._budget(base, d.get("budget"), "budget")
        device = str(d.get("device", "cpu"))
        if problem := device_syntax_problem(device):
            self.problem(problem)

        tasks = []
        for t in self._list("tasks"):
            if problem := task_problem(t):
                self.problem(f"tasks: {problem}")
            else:
                tasks.append(t)
        if "tasks" not in d:
            self.problem("tasks: missing (a list of task names)")
        tasks = list(dict.fromkeys(tasks))
        sim_gaps, real_gaps = self._gaps("sim_gaps"), self._gaps("real_gaps")
        datasets = [str(x) for x in self._list("datasets")]
        self.max_runs = self._max_runs()
        seeds = self._seeds()

        labels = self._labels(budget)
        cells = self._cross(tasks, sim_gaps, real_gaps, datasets, seeds, labels)
        cells = self._apply_exclude(cells, labels)
        cells += self._includes(labels, budget)
        if self.only is not None and (rule := self._rule("--only", self.only, labels)):
            cells = [(label, kw) for label, kw in cells if self._matches(label, kw, rule)]
            if not cells:
                self.problem(f"--only {rule} matches no run of the matrix")

        runs: list[MatrixRun] = []
        seen: set[str] = set()
        collapsed = 0
        checked: dict[tuple[str, str], str | None] = {}
        bodies_ok: dict[tuple[str, str], bool] = {}
        for label, kwargs in cells:
            for key in ("gap", "real_gap"):  # mass.<body> needs the task's model to check
                pair = (kwargs["task"], kwargs[key])
                if pair not in bodies_ok:
                    msg = gap_problem(*pair) if pair[1] else None
                    bodies_ok[pair] = msg is None
                    if msg:
                        self.problem(f"{key}s: {msg}")
            if not all(bodies_ok[kwargs["task"], kwargs[k]] for k in ("gap", "real_gap")):
                continue
            if kwargs.get("dataset") and self.check_datasets:
                key = (kwargs["dataset"], kwargs["task"])
                if key not in checked:
                    checked[key] = dataset_problem(*key)
                msg = checked[key]
                if msg:
                    self.problem(msg)
                    continue
            try:
                spec = RunSpec(
                    preset=preset if isinstance(preset, str) else "smoke", device=device, **kwargs
                ).resolved()
                run_id = spec.run_id
            except (ValueError, KeyError, TypeError) as err:
                self.problem(f"{label} on {kwargs.get('task')}: {err}")
                continue
            if run_id in seen:
                collapsed += 1
                continue
            seen.add(run_id)
            runs.append(MatrixRun(label, spec, run_id))
        if not runs and not self.problems:
            self.problem("the matrix expands to no runs")
        if self.problems:
            raise MatrixError(self.problems, self.where)
        return Matrix(
            name,
            Path(out),
            runs,
            self.where,
            collapsed,
            {k: {kk: vv for kk, vv in v.items() if kk != "budget_obj"} for k, v in labels.items()},
        )

    def _labels(self, budget: Budget | None) -> dict[str, dict[str, Any]]:
        entries = self.data.get("algorithms")
        if not isinstance(entries, Mapping) or not entries:
            self.problem(
                "algorithms: missing or empty (a mapping label -> {algorithm, regime, "
                "hparams, budget})"
            )
            return {}
        labels = {}
        for label, entry in entries.items():
            label = str(label)
            owner = f"algorithms.{label}"
            entry = {} if entry is None else entry
            if not isinstance(entry, Mapping):
                self.problem(f"{owner}: expected a mapping, got {entry!r}")
                continue
            bad = [k for k in entry if k not in ALGO_KEYS]
            if bad:
                self.problem(f"{owner}: unknown key(s) {bad}; valid: {', '.join(ALGO_KEYS)}")
            algo, regime = self._algorithm(
                owner, entry.get("algorithm", label), entry.get("regime")
            )
            hparams = self._hparams(owner, algo, entry.get("hparams"))
            label_budget = self._budget(budget, entry.get("budget"), f"{owner}.budget")
            if algo and regime and hparams is not None and label_budget is not None:
                labels[label] = {
                    "algorithm": algo,
                    "regime": regime,
                    "hparams": hparams,
                    "budget_obj": label_budget,
                }
        return labels

    def _cross(self, tasks, sim_gaps, real_gaps, datasets, seeds, labels):
        needs = {r for v in labels.values() for r in [v["regime"]]}
        if any(uses_dataset(r) for r in needs) and not datasets:
            users = [k for k, v in labels.items() if uses_dataset(v["regime"])]
            self.problem(f"datasets: missing, but {', '.join(users)} (offline/hybrid) need one")
        used: set[str] = set()
        filled: dict[tuple[str, str], list[str]] = {}

        def task_datasets(task: str, real_gap: str) -> list[str]:
            """The datasets for one task and real system, templates filled in."""
            if (task, real_gap) not in filled:
                result = []
                for template in datasets:
                    try:
                        ds = fill_dataset(template, task, real_gap)
                    except (ImportError, ValueError) as err:
                        self.problem(f"datasets: cannot fill {template!r}: {err}")
                        continue
                    if _dataset_task(ds) in (None, task):
                        result.append(ds)
                        used.add(template)
                filled[task, real_gap] = list(dict.fromkeys(result))
            return filled[task, real_gap]

        def per_seed(v: dict[str, Any]) -> int:
            sims = len(sim_gaps) if uses_sim_gap(v["regime"]) else 1
            if not uses_dataset(v["regime"]):
                return sims * len(tasks) * len(real_gaps)
            return sims * sum(len(task_datasets(t, g)) for t in tasks for g in real_gaps)

        total = len(seeds) * sum(per_seed(v) for v in labels.values())
        if total > self.max_runs:  # counted before a single run is built
            self.problem(self._too_many(total))
            return []
        cells = []
        for seed in seeds:
            for task in tasks:
                for label, v in labels.items():
                    regime = v["regime"]
                    sims = sim_gaps if uses_sim_gap(regime) else [""]
                    for gap in sims:
                        for real_gap in real_gaps:
                            dsets = (
                                task_datasets(task, real_gap) if uses_dataset(regime) else [None]
                            )
                            for dataset in dsets:
                                cells.append(
                                    (
                                        label,
                                        {
                                            "task": task,
                                            "algorithm": v["algorithm"],
                                            "seed": seed,
                                            "gap": gap,
                                            "real_gap": real_gap,
                                            "dataset": dataset,
                                            "regime": v["regime"],
                                            "hparams": v["hparams"],
                                            "budget": v["budget_obj"],
                                        },
                                    )
                                )
        if tasks and any(uses_dataset(r) for r in needs):
            for template in datasets:
                if template not in used:
                    self.problem(f"datasets: {template!r} matches none of the tasks {tasks}")
        return cells

    def _rule(self, owner: str, rule: Any, labels) -> dict[str, Any] | None:
        if not isinstance(rule, Mapping) or not rule:
            self.problem(f"{owner}: expected a non-empty mapping of run fields")
            return None
        norm: dict[str, Any] = {}
        for key, value in rule.items():
            if key not in RULE_KEYS:
                self.problem(f"{owner}: unknown key {key!r}; valid: {', '.join(RULE_KEYS)}")
                return None
            key = "gap" if key == "sim_gap" else key
            if key in ("gap", "real_gap"):
                try:
                    value = _canonical_gap(value)
                except ValueError as err:
                    self.problem(f"{owner}: {err}")
                    return None
            elif key == "task" and (problem := task_problem(value)):
                self.problem(f"{owner}: {problem}")
                return None
            elif key == "algorithm" and not (isinstance(value, str) and value in labels):
                declared = ", ".join(labels) or "none"
                self.problem(
                    f"{owner}: algorithm {value!r} is not a label under algorithms: ({declared})"
                )
                return None
            elif key == "regime" and (problem := regime_problem(value)):
                self.problem(f"{owner}: {problem}")
                return None
            norm[key] = value
        return norm

    def _apply_exclude(self, cells, labels):
        rules = []
        for i, rule in enumerate(self._list("exclude")):
            rule = self._rule(f"exclude[{i}]", rule, labels)
            if rule is not None:
                rules.append(rule)

        matches = self._matches
        kept = [(label, kw) for label, kw in cells if not any(matches(label, kw, r) for r in rules)]
        for rule in rules:
            if not any(matches(label, kw, rule) for label, kw in cells):
                log.warning("exclude rule %s matches no run", rule)
        return kept

    @staticmethod
    def _matches(label: str, kw: dict[str, Any], rule: dict[str, Any]) -> bool:
        """Whether an expanded run (its label and fields) has every field of ``rule``."""
        for key, want in rule.items():
            if key == "algorithm":
                have = label
            elif key == "dataset":
                have = kw["dataset"]
                with contextlib.suppress(ImportError, ValueError):
                    want = fill_dataset(str(want), kw["task"], kw["real_gap"])
            else:
                have = kw[key]
            if have != want:
                return False
        return True

    def _includes(self, labels, budget):
        cells = []
        for i, entry in enumerate(self._list("include")):
            owner = f"include[{i}]"
            if not isinstance(entry, Mapping):
                self.problem(f"{owner}: expected a mapping of run fields")
                continue
            bad = [k for k in entry if k not in INCLUDE_KEYS]
            if bad:
                self.problem(f"{owner}: unknown key(s) {bad}; valid: {', '.join(INCLUDE_KEYS)}")
                continue
            missing = [k for k in ("task", "algorithm") if k not in entry]
            if missing:
                self.problem(f"{owner}: missing {', '.join(missing)}")
                continue
            task = entry["task"]
            if problem := task_problem(task):
                self.problem(f"{owner}: {problem}")
                continue
            name = str(entry["algorithm"])
            base = labels.get(name)
            if base is not None:
                algo, regime = base["algorithm"], entry.get("regime", base["regime"])
                hparams, run_budget = dict(base["hparams"]), base["budget_obj"]
                if "regime" in entry:
                    algo, regime = self._algorithm(owner, algo, regime)
            else:
                algo, regime = self._algorithm(owner, name, entry.get("regime"))
                hparams, run_budget = {}, budget
            extra = self._hparams(owner, algo, entry.get("hparams"))
            run_budget = self._budget(run_budget, entry.get("budget"), f"{owner}.budget")
            seed = entry.get("seed", 0)
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                self.problem(f"{owner}: seed must be a non-negative integer, got {seed!r}")
                continue
            try:
                gap = _canonical_gap(entry.get("gap", entry.get("sim_gap", "")))
                real_gap = _canonical_gap(entry.get("real_gap", ""))
            except ValueError as err:
                self.problem(f"{owner}: {err}")
                continue
            if algo is None or regime is None or extra is None or run_budget is None:
                continue
            dataset = entry.get("dataset")
            if dataset is not None:
                try:
                    dataset = fill_dataset(str(dataset), task, real_gap)
                except (ImportError, ValueError) as err:
                    self.problem(f"{owner}: cannot fill dataset {dataset!r}: {err}")
                    continue
            cells.append(
                (
                    str(entry.get("label", name)),
                    {
                        "task": task,
                        "algorithm": algo,
                        "seed": seed,
                        "gap": gap,
                        "real_gap": real_gap,
                        "dataset": dataset,
                        "regime": regime,
                        "hparams": {**hparams, **extra},
                        "budget": run_budget,
                    },
                )
            )
        return cells


# -- manifest ------------------------------------------------------------------------------
def _slot(cell: dict[str, Any]) -> tuple:
    return tuple(cell.get(k) for k in ("label", "task", "gap", "real_gap", "dataset", "seed"))


def write_manifest(matrix: Matrix, out: str | Path | None = None) -> Path:
    """Write (merge into) ``OUT/matrix.json``: run_id -> label and cell fields."""
    out = Path(out or matrix.out)
    path = out / MANIFEST
    manifest: dict[str, Any] = {"runs": {}, "matrices": {}}
    out.mkdir(parents=True, exist_ok=True)
    with runstate.exclusive(out):  # two matrices starting on one folder must not lose an update
        if path.is_file():
            try:
                old = records.read_json(path)
                manifest["runs"].update(old.get("runs", {}))
                manifest["matrices"].update(old.get("matrices", {}))
            except (OSError, ValueError):
                log.warning("%s is unreadable; rewriting it", path)
        # A slot (label, cell, seed) of this matrix that its file now gives another spec
        # (changed hparams or budget) drops its old id unless that run finished: otherwise the
        # report would expect the superseded run forever.
        current = {r.run_id for r in matrix.runs}
        slots = {_slot(r.cell()) for r in matrix.runs}
        for run_id, entry in list(manifest["runs"].items()):
            if (
                entry.get("matrix") == matrix.name
                and run_id not in current
                and _slot(entry) in slots
                and not (out / run_id / records.SUMMARY).is_file()
            ):
                del manifest["runs"][run_id]
        for r in matrix.runs:
            manifest["runs"][r.run_id] = {**r.cell(), "matrix": matrix.name}
        manifest["matrices"][matrix.name] = {
            "source": matrix.source,
            # all of its runs written so far: slices (--only) run side by side merge here
            "runs": sum(r.get("matrix") == matrix.name for r in manifest["runs"].values()),
            "labels": matrix.labels,
        }
        records.write_json(path, manifest)
    return path


def read_manifest(out: str | Path) -> dict[str, dict[str, Any]]:
    """run_id -> {label, algorithm, regime, task, gap, real_gap, dataset, seed, matrix}."""
    path = Path(out) / MANIFEST
    return records.read_json(path).get("runs", {}) if path.is_file() else {}


def status(matrix: Matrix, out: str | Path | None = None) -> dict[str, Any]:
    """Counts and run ids per status, plus one row per run (unfinished runs with the
    updates and score of their last evaluation, to follow long matrices), and the compute
    the unfinished runs still need (:func:`work_left`)."""
    out = Path(out or matrix.out)
    ids: dict[str, list[str]] = {s: [] for s in STATUSES}
    rows, summaries = [], []
    for r in matrix.runs:
        st, summary = run_status(out / r.run_id)
        ids[st].append(r.run_id)
        summaries.append(summary)
        last = last_evaluation(out / r.run_id) if st in ("running", "interrupted") else None
        rows.append(
            {
                "run_id": r.run_id,
                "label": r.label,
                "status": st,
                **{k: v for k, v in r.cell().items() if k != "label"},
                "final_normalized_score": (summary or {}).get("final_normalized_score"),
                "error": (summary or {}).get("error") if st == "failed" else None,
                "updates": r.spec.budget.updates,  # the spec is resolved
                "updates_done": last[0] if last else None,
                "last_normalized_score": last[1] if last else None,
                "updates_per_s": last[2] if last else None,  # over the last interval
            }
        )
    return {
        "name": matrix.name,
        "out": str(out),
        "total": len(matrix.runs),
        "counts": {s: len(v) for s, v in ids.items()},
        "ids": ids,
        "runs": rows,
        "grid": status_grid(rows),
        "left": work_left(rows, summaries),
    }


def status_grid(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, int]]]:
    """label -> task -> status -> runs (statuses with none left out; labels and tasks in
    matrix order): how far each method got on each task, seeds and gaps together."""
    grid: dict[str, dict[str, dict[str, int]]] = {}
    for row in rows:
        counts = grid.setdefault(row["label"], {}).setdefault(row["task"], {})
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    return grid


def work_left(rows: list[dict[str, Any]], summaries: list[dict[str, Any] | None]) -> dict:
    """The compute the unfinished runs still need, in run-seconds (one worker each), at the
    pace their method showed in this matrix: a running run at its own last interval's, the
    others at the median ``updates_per_s`` of their label's done runs (evaluation and
    simulator steps included), else of its running ones, else of the last intervals its
    interrupted runs logged (perhaps on another machine: the last resort). A label with
    none of these is listed as unmeasured.
    Failed runs count for nothing: they are skipped unless ``--retry-failed``."""
    paces: dict[str, list[float]] = {}
    live: dict[str, list[float]] = {}
    logged: dict[str, list[float]] = {}
    for row, summary in zip(rows, summaries, strict=True):
        if row["status"] == "done" and (summary or {}).get("updates_per_s"):
            paces.setdefault(row["label"], []).append(float(summary["updates_per_s"]))
        elif row["status"] in ("running", "interrupted") and row["updates_per_s"]:
            kept = live if row["status"] == "running" else logged
            kept.setdefault(row["label"], []).append(row["updates_per_s"])
    median = {label: statistics.median(v) for label, v in {**logged, **live, **paces}.items()}
    seconds, runs, unmeasured = 0.0, 0, {}
    for row in rows:
        if row["status"] not in ("missing", "interrupted", "running"):
            continue
        updates = row["updates"] - (row["updates_done"] or 0)
        pace = row["updates_per_s"] if row["status"] == "running" else None
        pace = pace or median.get(row["label"])
        if pace:
            seconds += updates / pace
            runs += 1
        else:
            unmeasured[row["label"]] = unmeasured.get(row["label"], 0) + 1
    return {"run_seconds": seconds, "runs": runs, "unmeasured": unmeasured}
