"""K seeds of one run spec trained in one process, batched across seeds.

``gapbench run ... --seeds 0,1,2`` trains the seeds of one spec together: each seed has
its own environment, replay, evaluation and record, the same ``spec.json``, ``curve.csv``
and ``summary.json`` (and run id and folder) a separate run of that seed writes, with the
numbers of that separate run to float tolerance; only the updates run as one batched
computation (:class:`gapbench.algorithms.seeds.SeedBatch`). The summary adds
``seed_group`` (the seeds trained together) and its ``updates_per_s`` is the group's: each
seed advanced at that rate while the K of them shared the process.

Checkpoints are written per seed in the single-run format, so an interrupted group
resumes as a group when its seeds' checkpoints stand at the same update (each seed
re-simulates its own action log), and otherwise each seed resumes as a separate run.
An algorithm without a batched path (:func:`gapbench.algorithms.seeds.batchable`), a
spec asking for TensorBoard logging, or a single seed left to train runs the seeds one by
one through :func:`gapbench.benchmark.harness.run`, with a log line saying so.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gapbench import algorithms, gap_envs
from gapbench.algorithms.base import RUN_REGIMES, SOURCES, accumulate
from gapbench.algorithms.buffer import TensorBuffer
from gapbench.algorithms.seeds import SeedBatch, SeedRNG, batchable
from gapbench.benchmark import harness as h
from gapbench.benchmark import records
from gapbench.benchmark.allocator import keep_freed_memory
from gapbench.benchmark.evaluation import make_eval_env
from gapbench.benchmark.runstate import RunStopped
from gapbench.benchmark.spec import RunSpec

log = logging.getLogger("gapbench.run")


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` -> [0, 1, 2]; ValueError naming a bad or repeated seed."""
    seeds = []
    for part in text.split(","):
        part = part.strip()
        if not part.lstrip("-").isdigit():
            raise ValueError(f"--seeds needs comma-separated integers, got {part!r} in {text!r}")
        if int(part) in seeds:
            raise ValueError(f"--seeds lists seed {part} twice")
        seeds.append(int(part))
    return seeds


def seed_specs(spec: RunSpec, seeds: list[int]) -> list[RunSpec]:
    """``spec`` once per seed (each resolved: its own run id)."""
    return [dataclasses.replace(spec, seed=int(s)).resolved() for s in seeds]


def group_problem(specs: list[RunSpec]) -> str | None:
    """Why ``specs`` cannot train as one seed group (None when they can)."""
    if len({s.seed for s in specs}) != len(specs):
        return "the seeds of a group must differ"
    base = [{**s.to_dict(), "seed": 0} for s in specs]
    if any(b != base[0] for b in base[1:]):
        return "a seed group's specs must differ only by seed"
    return batchable(algorithms.get(specs[0].algorithm))


def run_group(
    specs: list[RunSpec],
    out_dir: str | Path,
    progress: bool | None = None,
    tensorboard=None,
    stop=None,
) -> list[dict[str, Any]]:
    """Run the seeds ``specs`` (one spec, several seeds) and write each seed's record under
    ``out_dir/<run_id>``; return their summaries in order. Complete records are returned
    as they are; see the module docstring for when the seeds run one by one instead.
    ``stop()`` as for :func:`harness.run`, except that a group stops at its next
    evaluation (every seed's checkpoint written there), where no metric sums are pending."""
    specs = [s.resolved() for s in specs]
    out_dir = Path(out_dir)
    dirs = [out_dir / s.run_id for s in specs]
    todo = [i for i, d in enumerate(dirs) if not records.is_complete(d)]
    why = group_problem(specs)
    tensorboard = tensorboard or os.environ.get(h.TENSORBOARD_ENV) or None
    if why is None and tensorboard:
        why = "TensorBoard logging is per run"
    if why is None and len(todo) < 2:
        why = "fewer than two seeds left to train"
    if why is None:
        why = _resume_problem([dirs[i] for i in todo])
    if why is not None:
        if todo:
            log.info("training the seeds one by one: %s", why)
        return [h.run(s, out_dir, progress, tensorboard=tensorboard, stop=stop) for s in specs]
    group = [specs[i] for i in todo]
    for spec, d in zip(group, (dirs[i] for i in todo), strict=True):
        d.mkdir(parents=True, exist_ok=True)
        h.write_spec(d, spec)
    start = time.perf_counter()
    try:
        summaries = _train_group(group, [dirs[i] for i in todo], progress, start, stop)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # recorded, not raised, as a single run records it
        log.exception("seed group %s failed", ", ".join(s.run_id for s in group))
        failed = {
            "status": "failed",
            "error": f"{type(err).__name__}: {err}",
            "traceback": traceback.format_exc(),
            "wall_time_s": time.perf_counter() - start,
        }
        summaries = [dict(failed) for _ in group]
    for spec, d, summary in zip(group, (dirs[i] for i in todo), summaries, strict=True):
        summary["run_id"] = spec.run_id
        if not (d / records.SUMMARY).exists():  # a seed that failed alone wrote its own
            records.write_json(d / records.SUMMARY, summary)
            records.remove_resume_state(d)
    return [records.read_json(d / records.SUMMARY) for d in dirs]


def _resume_problem(dirs: list[Path]) -> str | None:
    """Checkpoints at different updates cannot resume as one group."""
    steps = set()
    for d in dirs:
        path = d / records.CHECKPOINT
        steps.add(records.load_checkpoint(path)["updates"] if path.exists() else 0)
    return None if len(steps) == 1 else "their checkpoints stand at different updates"


class _Seed:
    """One seed's side of the group: its spec, folder, buffers, envs, curve and clock."""

    def __init__(self, spec: RunSpec, run_dir: Path):
        self.spec, self.run_dir = spec, run_dir
        self.dataset: TensorBuffer | None = None
        self.replay: TensorBuffer | None = None
        self.collector: h._Collector | None = None
        self.curve: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.start = 0.0
        self.failed: str | None = None
        self.eval_env: Any = None


def _dataset(spec: RunSpec, shared: dict[str, TensorBuffer]) -> TensorBuffer:
    """The seed's dataset buffer: the group's one copy of the data (the seeds learn from the
    same dataset) with the seed's own sampling generator, as its separate run seeds it."""
    if "dataset" not in shared:
        from gapbench.gap_envs.datasets import load

        data = load(spec.dataset, task=spec.task)
        shared["dataset"] = h.dataset_buffer(data, spec.device, seed=spec.seed + 1)
        return shared["dataset"]
    buffer = copy.copy(shared["dataset"])  # the same tensors, a generator of its own
    buffer.generator = torch.Generator(device=buffer.device)
    buffer.generator.manual_seed(spec.seed + 1)
    return buffer


def _build(spec: RunSpec, run_dir: Path, start: float, shared: dict[str, TensorBuffer]):
    """Seed ``spec``'s algorithm, buffers and envs, built in the order its separate run
    builds them (so every random stream starts where that run's does), restored from its
    checkpoint if it has one; returns (seed, algorithm, global torch generator state)."""
    task = gap_envs.get_task(spec.task)
    budget = spec.budget
    h.seed_everything(spec.seed)
    algo = algorithms.get(spec.algorithm)(
        task.obs_dim, task.act_dim, spec.config, spec.seed, spec.device
    )
    algo.set_total_updates(budget.updates)
    seed = _Seed(spec, run_dir)
    seed.start = start
    sources = SOURCES[RUN_REGIMES[spec.regime]]
    if "dataset" in sources:
        seed.dataset = _dataset(spec, shared)
    algo.setup(seed.dataset)
    if "replay" in sources:
        steps = budget.updates * budget.steps_per_update + budget.warmup_steps
        capacity = spec.sim_replay_capacity or min(
            10 * len(seed.dataset) if seed.dataset is not None else steps, steps
        )
        seed.replay = TensorBuffer(
            capacity, task.obs_dim, task.act_dim, spec.device, seed=spec.seed + 2
        )
        env_gap = spec.real_gap if spec.regime == "oracle" else spec.gap
        env = gap_envs.make(spec.task, env_gap)
        seed.collector = h._Collector(env, seed.replay, seed=spec.seed)
        seed.collector.logging = budget.checkpoint_every > 0
    seed.eval_env = make_eval_env(spec.task, spec.real_gap, budget.eval_episodes)
    rng = SeedRNG.capture(torch.device(spec.device))
    ckpt = run_dir / records.CHECKPOINT
    updates = 0
    if ckpt.exists():
        state = records.load_checkpoint(ckpt)
        algo.load_state_dict(state["algo"])
        exact = True
        if seed.collector is not None:
            seed.collector.resimulate(records.load_actions(run_dir, state["env_steps"]))
            seed.replay.generator.set_state(state["replay_rng"])
            obs = torch.as_tensor(seed.collector.obs)
            exact = bool(torch.equal(obs, state["collector_obs"]))
        if seed.dataset is not None:
            seed.dataset.generator.set_state(state["dataset_rng"])
        rng = (state["torch_rng"], rng[1])
        seed.curve, updates = state["curve"], state["updates"]
        seed.resumes = [*state.get("resumes", []), h.resume_entry(updates, exact)]
        seed.start -= state["wall_time_s"]
        log.info("resumed %s at update %d (in a seed group)", spec.run_id, updates)
    return seed, algo, rng, updates


def _train_group(specs: list[RunSpec], dirs: list[Path], progress, start: float, stop=None):
    device = torch.device(specs[0].device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise h.RunFailed("device 'cuda' requested but torch.cuda.is_available() is False")
    keep_freed_memory()
    shared: dict[str, TensorBuffer] = {}
    built = [_build(s, d, start, shared) for s, d in zip(specs, dirs, strict=True)]
    seeds = [b[0] for b in built]
    done_updates = built[0][3]
    batch = SeedBatch([b[1] for b in built], [b[2] for b in built])
    budget, regime = specs[0].budget, specs[0].regime
    group = [s.seed for s in specs]
    log.info("training seeds %s of %s as one batch", group, specs[0].algorithm)

    def policy(k: int):
        member = batch.members[k]

        def act(obs: np.ndarray) -> np.ndarray:
            with batch.member_rng(k):  # the exploration noise of seed k's own stream
                return member.act(obs, deterministic=False)

        return act

    policies = [policy(k) for k in range(len(seeds))]
    replay = [s.replay for s in seeds] if seeds[0].replay is not None else None
    dataset = [s.dataset for s in seeds] if seeds[0].dataset is not None else None
    chunk = budget.schedule(regime)
    sums: dict[str, torch.Tensor] = {}
    n_sum = 0
    update_time = 0.0
    bar = h._progress(progress, specs[0], budget.updates, done_updates)
    with bar:
        while done_updates < budget.updates:
            n = min(
                chunk,
                budget.updates - done_updates,
                budget.eval_every - done_updates % budget.eval_every,
            )
            for k, seed in enumerate(seeds):
                if seed.collector is not None:
                    missing = budget.warmup_steps - seed.collector.steps
                    if missing > 0:
                        seed.collector.collect(missing, None)
                    act = policies[k] if seed.failed is None else None  # NaN: act at random
                    seed.collector.collect(n * budget.steps_per_update, act)
            t0 = time.perf_counter()
            accumulate(sums, batch.update_many(n, dataset=dataset, replay=replay))
            n_sum += n
            done_updates += n
            update_time += time.perf_counter() - t0
            bar.advance(n)
            if done_updates % budget.eval_every == 0 or done_updates == budget.updates:
                for k, seed in enumerate(seeds):
                    if seed.failed is None:
                        member = batch.members[k]
                        _evaluate(seed, member, done_updates, sums, k, n_sum, bar, update_time)
                sums, n_sum = {}, 0
                n_evals = len(seeds[0].curve)
                stopping = stop is not None and done_updates < budget.updates and stop()
                if (
                    budget.checkpoint_every
                    and n_evals % budget.checkpoint_every == 0
                    and done_updates < budget.updates
                ) or stopping:
                    for k, seed in enumerate(seeds):
                        if seed.failed is None:
                            _checkpoint(seed, batch, k, done_updates)
                if all(s.failed is not None for s in seeds):
                    break
                if stopping:
                    log.info("seeds %s stopped on request at update %d", group, done_updates)
                    raise RunStopped(f"seeds {group} stopped at update {done_updates}")
    summaries = []
    for seed in seeds:
        seed.eval_env.close()
        summaries.append(_summary(seed, done_updates, update_time, group))
    return summaries


def _evaluate(seed: _Seed, algo, updates: int, sums, k: int, n_sum: int, bar, update_time):
    mine = {key: value[k] for key, value in sums.items()}
    row = h._evaluate_row(
        seed.spec, algo, seed.eval_env, updates, mine, n_sum, seed.start, seed.collector
    )
    seed.curve.append(row)
    records.write_curve(seed.run_dir / records.CURVE, seed.curve)
    bar.show_eval(row, update_time)
    bad = [key for key, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:  # this seed fails as its separate run would; the others go on
        seed.failed = f"RunFailed: non-finite values at update {updates}: {', '.join(bad)}"
        log.error("run %s failed: %s", seed.spec.run_id, seed.failed)
        records.write_json(
            seed.run_dir / records.SUMMARY,
            {
                "status": "failed",
                "error": seed.failed,
                "wall_time_s": time.perf_counter() - seed.start,
                "run_id": seed.spec.run_id,
            },
        )
        records.remove_resume_state(seed.run_dir)


def _checkpoint(seed: _Seed, batch: SeedBatch, k: int, updates: int) -> None:
    """Seed k's checkpoint, in the single-run format (harness._train writes the same)."""
    collector = seed.collector
    if collector is not None:
        collector.flush(seed.run_dir)  # the log first: a checkpoint never outruns it
    records.save_checkpoint(
        seed.run_dir / records.CHECKPOINT,
        {
            "algo": batch.member_state_dict(k),
            "env_steps": collector.steps if collector is not None else 0,
            "replay_rng": seed.replay.generator.get_state() if seed.replay is not None else None,
            "collector_obs": torch.as_tensor(collector.obs) if collector is not None else None,
            "dataset_rng": seed.dataset.generator.get_state() if seed.dataset is not None else None,
            "torch_rng": batch.rng.states[k][0],
            "numpy_rng": records.numpy_rng_state(),
            "curve": seed.curve,
            "updates": updates,
            "resumes": seed.resumes,
            "wall_time_s": time.perf_counter() - seed.start,
        },
    )


def _summary(seed: _Seed, updates: int, update_time: float, group: list[int]) -> dict[str, Any]:
    env_steps = seed.collector.steps if seed.collector is not None else 0
    record = h.summary_record(seed.curve, updates, env_steps, update_time, seed.start, seed.resumes)
    return {**record, "seed_group": group}


def run_group_locked(
    specs: list[RunSpec], out: str | Path, retry_failed: bool = False, progress=None, stop=None
) -> list[tuple[dict[str, Any], bool]]:
    """(summary, recorded) per seed: :func:`run_group` under every seed's run lock, with
    complete records returned as they are unless :func:`runstate.rerun_reason` says
    otherwise (as :func:`runstate.run_locked` does for one run). Raises RunBusy when a
    live process holds one of the seeds."""
    from gapbench.benchmark import runstate

    out = Path(out)
    locks: list[runstate.RunLock] = []
    try:
        for spec in specs:
            lock = runstate.RunLock.acquire(out / spec.run_id)
            if lock is None:
                raise runstate.RunBusy(f"{spec.run_id} {runstate.holder(out / spec.run_id)}")
            locks.append(lock)
        recorded = []
        for spec in specs:
            run_dir = out / spec.run_id
            done = runstate.read_summary(run_dir) is not None
            why = runstate.rerun_reason(run_dir, spec, retry_failed) if done else None
            if why is not None:
                n = runstate._set_aside(run_dir, why[0])
                log.info(
                    "%s: running again (%s); old record kept as summary.%s-%d.json",
                    spec.run_id,
                    why[1],
                    why[0],
                    n,
                )
            recorded.append(done and why is None)
        summaries = run_group(specs, out, progress, stop=stop)
        return list(zip(summaries, recorded, strict=True))
    finally:
        for lock in locks:
            lock.release()
