"""The single-run harness: one loop for every data regime.

offline  sample the dataset                      -> update
online   collect in the shifted simulator        -> replay -> update
oracle   collect in the real system              -> replay -> update
hybrid   collect in the simulator + the dataset  -> update

Every ``eval_every`` updates the deterministic policy is evaluated on the real system,
a curve row is written, and (by default) a checkpoint that a killed run resumes from.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import platform
import random
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gapbench import algorithms, gap_envs
from gapbench.algorithms.base import RUN_REGIMES, SOURCES, accumulate
from gapbench.algorithms.buffer import TensorBuffer
from gapbench.benchmark import records
from gapbench.benchmark.allocator import keep_freed_memory
from gapbench.benchmark.evaluation import evaluate, make_eval_env
from gapbench.benchmark.runstate import RunStopped
from gapbench.benchmark.spec import RunSpec

log = logging.getLogger("gapbench.run")
# Where runs log TensorBoard scalars when run() is not told: set by `--tensorboard` of
# `run` and `matrix run`, so the matrix's worker processes inherit it.
TENSORBOARD_ENV = "GAPBENCH_TENSORBOARD"
EVAL_SEED_OFFSET = 1_000_003  # evaluation episodes never share seeds with training
#: summary.json's final_normalized_score: the mean of this many last evaluations (as the report)
FINAL_LAST_K = 3


class RunFailed(RuntimeError):
    pass


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _read_git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# Read once, when the code is imported: a matrix process runs for hours while the
# checkout's HEAD moves on, and its records must name the code it runs.
_GIT_COMMIT = _read_git_commit()


def git_commit() -> str | None:
    """The commit of the code this process runs (its checkout's HEAD when imported)."""
    return _GIT_COMMIT


def resolved_record(spec: RunSpec) -> dict[str, Any]:
    """spec.json: the resolved spec, every hyper-parameter (its config), versions, commit."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg_version = version("gapbench")
    except PackageNotFoundError:
        pkg_version = "unknown"
    config = spec.config
    return {
        "run_id": spec.run_id,
        "spec": spec.to_dict(),
        "config": {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
        },
        # the content of the data it learns from (a replaced dataset makes the record stale)
        "dataset_sha256": records.dataset_sha256(spec.dataset) if spec.dataset else None,
        "gapbench_version": pkg_version,
        "git_commit": git_commit(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
    }


def write_spec(run_dir: Path, spec: RunSpec) -> None:
    """spec.json. A run resuming from its checkpoint keeps the commit it started at; the
    commit of each resume goes in the summary's ``resumed`` list (:func:`resume_entry`)."""
    record = resolved_record(spec)
    path = run_dir / records.SPEC
    if (run_dir / records.CHECKPOINT).exists() and path.exists():
        with contextlib.suppress(OSError, ValueError, AttributeError):  # unreadable: keep ours
            record["git_commit"] = records.read_json(path).get("git_commit")
    records.write_json(path, record)


def resume_entry(update: int, exact: bool) -> dict[str, Any]:
    """One entry of a summary's ``resumed`` list: where, whether exactly, with which code."""
    return {"update": update, "exact": exact, "git_commit": git_commit()}


def dataset_buffer(data, device: str | torch.device = "cpu", seed: int = 0) -> TensorBuffer:
    """A full buffer of a loaded dataset (:class:`gapbench.gap_envs.datasets.Transitions`):
    done = terminals, end = terminals | timeouts."""
    return TensorBuffer.from_arrays(
        data.observations,
        data.actions,
        data.rewards,
        data.next_observations,
        data.terminals.astype(np.float32),
        data.ends,
        device=device,
        seed=seed,
    )


class _Collector:
    """Steps one env with the current policy (uniform random during warm-up) into a buffer.

    Every action taken is kept until ``flush`` writes it to the run's action log, so a
    resume can ``resimulate`` the run's interaction instead of storing its replay."""

    def __init__(self, env, buffer: TensorBuffer, seed: int):
        self.env, self.buffer = env, buffer
        self.obs, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        self.steps, self.episodes = 0, 0
        self.flushed = 0  # env steps whose actions are in the log
        self._pending: list[np.ndarray] = []
        self.logging = True  # off for runs that never checkpoint: nothing to flush to

    def collect(self, n: int, policy: Callable[[np.ndarray], np.ndarray] | None) -> None:
        if policy is None:
            sample = self.env.action_space.sample
            self._step(n, lambda i, obs: sample())
        else:
            self._step(n, lambda i, obs: policy(obs))

    def _step(self, n: int, action: Callable[[int, np.ndarray], np.ndarray]) -> None:
        obs_l, act_l, rew_l, next_l, done_l, end_l = [], [], [], [], [], []
        for i in range(n):
            act = np.asarray(action(i, self.obs), dtype=np.float32)
            next_obs, rew, term, trunc, _ = self.env.step(act)
            obs_l.append(self.obs)
            act_l.append(act)
            rew_l.append(rew)
            next_l.append(next_obs)
            done_l.append(term)
            end_l.append(term or trunc)
            self.steps += 1
            if term or trunc:
                self.obs, _ = self.env.reset()
                self.episodes += 1
            else:
                self.obs = next_obs
        if self.logging:
            self._pending += act_l
        self.buffer.add(
            np.asarray(obs_l),
            np.asarray(act_l),
            np.asarray(rew_l),
            np.asarray(next_l),
            np.asarray(done_l, dtype=np.float32),
            np.asarray(end_l),
        )

    def flush(self, run_dir: Path) -> None:
        """Write the actions taken since the last flush as one chunk of the action log."""
        if self._pending:
            records.save_actions(run_dir, self.flushed, np.stack(self._pending))
        self.flushed, self._pending = self.steps, []

    def resimulate(self, actions: np.ndarray, chunk: int = 10_000) -> None:
        """Replay logged actions from the seeded reset: the buffer, the env and its random
        streams end exactly where the logged run's were."""
        for start in range(0, len(actions), chunk):
            part = actions[start : start + chunk]
            self._step(len(part), lambda i, obs, part=part: part[i])
        self.flushed, self._pending = self.steps, []


def run(
    spec: RunSpec,
    out_dir: str | Path,
    progress: bool | None = None,
    on_eval: Callable[[dict[str, Any], Any], None] | None = None,
    tensorboard: str | Path | None = None,
    stop: Callable[[], bool] | None = None,
) -> dict[str, Any]:
    """Run ``spec`` and write its record under ``out_dir/<run_id>``; return the summary.

    ``spec`` is normally resolved already (the CLI, the matrix and tuning resolve it once,
    when they validate it); an unresolved one is resolved here.
    A complete record is returned as is. A run with a checkpoint resumes from it.
    Failures (including non-finite losses) are recorded with ``status: failed``.
    ``on_eval(row, algo)`` sees each curve row and the algorithm (snapshots, Optuna pruning);
    raising ``RunPruned`` from it stops the run. ``tensorboard``: a folder where the run
    also logs every training metric and evaluation as TensorBoard scalars
    (``<folder>/<run_id>``; default ``$GAPBENCH_TENSORBOARD``; needs the ``tensorboard``
    extra). It never changes the numbers. ``stop()``, asked between collection/update
    steps (e.g. :func:`gapbench.benchmark.runstate.stop_poller`): once True, the run
    checkpoints where it stands and raises :class:`RunStopped`; resumed, it goes on
    exactly as if never stopped.
    """
    spec = spec.resolved()
    run_dir = Path(out_dir) / spec.run_id
    if records.is_complete(run_dir):
        return records.read_json(run_dir / records.SUMMARY)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_spec(run_dir, spec)
    start = time.perf_counter()
    try:
        board = tensorboard or os.environ.get(TENSORBOARD_ENV) or None
        summary = _train(spec, run_dir, progress, on_eval, start, board, stop)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # recorded, not raised: a matrix goes on with its other runs
        if not isinstance(err, RunPruned):
            log.exception("run %s failed", spec.run_id)
        summary = {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
            "wall_time_s": time.perf_counter() - start,
        }
        if isinstance(err, RunPruned):
            summary["status"] = "pruned"
    summary["run_id"] = spec.run_id
    records.write_json(run_dir / records.SUMMARY, summary)
    records.remove_resume_state(run_dir)
    return summary


class RunPruned(RuntimeError):
    """Raised by an ``on_eval`` hook to stop a run early (e.g. an Optuna pruner)."""


def _train(
    spec, run_dir: Path, progress, on_eval, start: float, tensorboard=None, stop=None
) -> dict[str, Any]:
    budget = spec.budget
    task = gap_envs.get_task(spec.task)
    device = torch.device(spec.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunFailed("device 'cuda' requested but torch.cuda.is_available() is False")
    seed_everything(spec.seed)
    keep_freed_memory()  # large activations reuse freed memory: no page faults per update
    algo = algorithms.get(spec.algorithm)(
        task.obs_dim, task.act_dim, spec.config, spec.seed, device
    )
    algo.set_total_updates(budget.updates)  # schedules over the run (IQL's actor lr)
    sources = SOURCES[RUN_REGIMES[spec.regime]]

    dataset = None
    if "dataset" in sources:
        from gapbench.gap_envs.datasets import load

        dataset = dataset_buffer(load(spec.dataset, task=spec.task), device, seed=spec.seed + 1)
    algo.setup(dataset)

    replay = collector = None
    if "replay" in sources:
        steps = budget.updates * budget.steps_per_update + budget.warmup_steps
        # The default (H2O's 10 x dataset, or the whole run) never allocates more than the run
        # collects: a ring that never wraps draws the same batches whatever its size, and 10 x
        # 1M would be 1.7 GB of zeros for a run that gathers ~1M transitions.
        capacity = spec.sim_replay_capacity or min(
            10 * len(dataset) if dataset is not None else steps, steps
        )
        replay = TensorBuffer(capacity, task.obs_dim, task.act_dim, device, seed=spec.seed + 2)
        env_gap = spec.real_gap if spec.regime == "oracle" else spec.gap
        collector = _Collector(gap_envs.make(spec.task, env_gap), replay, seed=spec.seed)
    eval_env = make_eval_env(spec.task, spec.real_gap, budget.eval_episodes)

    curve: list[dict[str, Any]] = []
    done_updates = 0
    # training metrics summed since the last evaluation (a stop between two keeps them)
    sums: dict[str, torch.Tensor] = {}
    n_sum = 0
    resumes: list[dict[str, Any]] = []
    exact = True  # whether a resume reproduced the interrupted run's state exactly
    ckpt_path = run_dir / records.CHECKPOINT
    if collector is not None:
        collector.logging = budget.checkpoint_every > 0
    if ckpt_path.exists():
        state = records.load_checkpoint(ckpt_path)
        algo.load_state_dict(state["algo"])
        if collector is not None:
            t0 = time.perf_counter()
            collector.resimulate(records.load_actions(run_dir, state["env_steps"]))
            replay.generator.set_state(state["replay_rng"])
            exact = bool(torch.equal(torch.as_tensor(collector.obs), state["collector_obs"]))
            if not exact:  # e.g. another MuJoCo build: the run goes on, its record says so
                log.warning(
                    "%s: re-simulating the logged actions did not reproduce the environment "
                    "state exactly; the resumed run differs from an uninterrupted one",
                    spec.run_id,
                )
            log.info(
                "%s: replay rebuilt from %d logged actions in %.0f s",
                spec.run_id,
                collector.steps,
                time.perf_counter() - t0,
            )
        if dataset is not None:
            dataset.generator.set_state(state["dataset_rng"])
        torch.set_rng_state(state["torch_rng"])
        records.set_numpy_rng_state(state["numpy_rng"])
        curve, done_updates = state["curve"], state["updates"]
        sums, n_sum = state.get("sums") or {}, state.get("n_sum", 0)
        resumes = state.get("resumes", [])
        resumes.append(resume_entry(done_updates, exact))
        start -= state["wall_time_s"]
        log.info("resumed %s at update %d", spec.run_id, done_updates)

    def policy(obs: np.ndarray) -> np.ndarray:
        return algo.act(obs, deterministic=False)

    def save_checkpoint() -> None:
        if collector is not None:
            collector.flush(run_dir)  # the log first: a checkpoint never outruns it
        records.save_checkpoint(
            ckpt_path,
            {
                "algo": algo.state_dict(),
                "env_steps": collector.steps if collector is not None else 0,
                "replay_rng": replay.generator.get_state() if replay is not None else None,
                "collector_obs": torch.as_tensor(collector.obs) if collector is not None else None,
                "dataset_rng": dataset.generator.get_state() if dataset is not None else None,
                "torch_rng": torch.get_rng_state(),
                "numpy_rng": records.numpy_rng_state(),
                "curve": curve,
                "updates": done_updates,
                "sums": sums,
                "n_sum": n_sum,
                "resumes": resumes,
                "wall_time_s": time.perf_counter() - start,
            },
        )

    chunk = budget.schedule(spec.regime)
    update_time = 0.0
    bar = _progress(progress, spec, budget.updates, done_updates)
    with bar, _board(tensorboard, spec.run_id) as board:
        while done_updates < budget.updates:
            n = min(
                chunk,
                budget.updates - done_updates,
                budget.eval_every - done_updates % budget.eval_every,
            )
            if collector is not None:
                missing = budget.warmup_steps - collector.steps
                if missing > 0:
                    collector.collect(missing, None)
                collector.collect(n * budget.steps_per_update, policy)
            t0 = time.perf_counter()
            metrics = algo.update_many(n, dataset=dataset, replay=replay)
            accumulate(sums, metrics)
            n_sum += n
            done_updates += n
            if board is not None:
                board.add(metrics, n, done_updates)
            update_time += time.perf_counter() - t0
            bar.advance(n)
            if done_updates % budget.eval_every == 0 or done_updates == budget.updates:
                row = _evaluate_row(
                    spec, algo, eval_env, done_updates, sums, n_sum, start, collector
                )
                sums, n_sum = {}, 0
                if board is not None:
                    board.evaluation(row)
                curve.append(row)
                records.write_curve(run_dir / records.CURVE, curve)
                bar.show_eval(row, update_time)
                bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
                if bad:
                    raise RunFailed(f"non-finite values at update {done_updates}: {', '.join(bad)}")
                if on_eval is not None:
                    on_eval(row, algo)
                n_evals = len(curve)
                if (
                    budget.checkpoint_every
                    and n_evals % budget.checkpoint_every == 0
                    and done_updates < budget.updates
                ):
                    save_checkpoint()
            if stop is not None and done_updates < budget.updates and stop():
                save_checkpoint()
                log.info("%s: stopped on request at update %d", spec.run_id, done_updates)
                raise RunStopped(f"{spec.run_id} stopped at update {done_updates}")
    eval_env.close()
    env_steps = collector.steps if collector is not None else 0
    return summary_record(curve, done_updates, env_steps, update_time, start, resumes)


def summary_record(
    curve: list[dict[str, Any]],
    updates: int,
    env_steps: int,
    update_time: float,
    start: float,
    resumes: list[dict[str, Any]],
) -> dict[str, Any]:
    """A finished run's summary.json from its evaluation rows (one definition, also for
    seeds trained as a group)."""
    scores = [r["normalized_score"] for r in curve]
    tail = curve[-FINAL_LAST_K:]
    return {
        "status": "ok",
        # the report's definition: the mean of the last FINAL_LAST_K evaluations
        "final_normalized_score": sum(r["normalized_score"] for r in tail) / len(tail),
        "final_return": sum(r["return_mean"] for r in tail) / len(tail),
        "final_last_k": len(tail),
        "last_normalized_score": scores[-1],
        "best_normalized_score": max(scores),
        "updates": updates,
        "env_steps": env_steps,
        # update_time counts this process's updates only: those since the last resume
        "updates_per_s": (updates - (resumes[-1]["update"] if resumes else 0))
        / max(update_time, 1e-9),
        "wall_time_s": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(),  # updates_per_s depends on it
        # where it was resumed and whether each resume reproduced the run exactly
        **({"resumed": resumes} if resumes else {}),
    }


def _evaluate_row(spec, algo, eval_env, updates, sums, n_sum, start, collector) -> dict[str, Any]:
    returns = evaluate(
        eval_env, lambda o: algo.act(o, deterministic=True), spec.seed + EVAL_SEED_OFFSET
    )
    row: dict[str, Any] = {
        "step": updates,
        "env_steps": collector.steps if collector is not None else 0,
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "normalized_score": float(gap_envs.normalized_score(spec.task, returns.mean())),
        "wall_time_s": time.perf_counter() - start,
    }
    if sums:  # one host sync per evaluation for all training metrics
        keys = list(sums)
        values = torch.stack([sums[k].float() for k in keys]).cpu().tolist()
        row.update({k: v / n_sum for k, v in zip(keys, values, strict=True)})
    return row


class _Board:
    """Training metrics averaged over about every ``every`` updates, and each evaluation, as
    TensorBoard scalars: finer than curve.csv's rows at one host sync per write."""

    def __init__(self, log_dir: Path, every: int = 1000):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise RunFailed(
                "TensorBoard logging needs the tensorboard package: "
                "pip install 'gapbench[tensorboard]'"
            ) from None
        self.writer = SummaryWriter(str(log_dir))
        self.every, self.sums, self.n, self.last = every, {}, 0, 0

    def add(self, metrics: dict[str, torch.Tensor], n: int, step: int) -> None:
        accumulate(self.sums, metrics)
        self.n += n
        if step - self.last >= self.every:
            self._write_training(step)

    def _write_training(self, step: int) -> None:
        if self.n:
            keys = list(self.sums)
            values = torch.stack([self.sums[k].float() for k in keys]).cpu().tolist()
            for key, value in zip(keys, values, strict=True):
                self.writer.add_scalar(f"train/{key}", value / self.n, step)
        self.sums, self.n, self.last = {}, 0, step

    def evaluation(self, row: dict[str, Any]) -> None:
        self._write_training(row["step"])  # the metrics since the last write end here
        for key in ("return_mean", "return_std", "normalized_score"):
            self.writer.add_scalar(f"eval/{key}", row[key], row["step"])
        self.writer.flush()


@contextlib.contextmanager
def _board(folder: str | Path | None, run_id: str) -> Iterator[_Board | None]:
    if folder is None:
        yield None
        return
    board = _Board(Path(folder) / run_id)
    try:
        yield board
    finally:
        board.writer.close()


class _Bar:
    """A rich progress bar with updates/s and the last evaluation, or periodic log lines."""

    def __init__(self, enabled: bool, spec: RunSpec, total: int, done: int):
        self.enabled, self.total, self.done = enabled, total, done
        self.spec = spec
        self.progress = None
        if enabled:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[ups]}"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[last]}"),
            )
            self.task = self.progress.add_task(
                f"{spec.algorithm} {spec.task}", total=total, completed=done, ups="", last=""
            )

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def advance(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress.update(self.task, advance=n)

    def show_eval(self, row: dict[str, Any], update_time: float) -> None:
        ups = f"{row['step'] / max(row['wall_time_s'], 1e-9):.1f} upd/s"
        last = f"eval {row['return_mean']:.0f} ({row['normalized_score']:.1f} norm)"
        if self.progress is not None:
            self.progress.update(self.task, ups=ups, last=last)
        else:
            log.info(
                "%s %s update %d/%d %s, %s",
                self.spec.algorithm,
                self.spec.task,
                row["step"],
                self.total,
                ups,
                last,
            )


def _progress(progress: bool | None, spec: RunSpec, total: int, done: int) -> _Bar:
    if progress is None:
        import sys

        progress = sys.stderr.isatty()
    return _Bar(progress, spec, total, done)
