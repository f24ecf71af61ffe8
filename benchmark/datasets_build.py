"""Building the offline datasets of *real* transitions, the way D4RL built its MuJoCo
datasets: :func:`build` rolls behaviour policies (:mod:`gapbench.benchmark.policies`) out
on the real system and stores the episodes with
:func:`gapbench.gap_envs.datasets.write_episodes` (storage, ids and loading live there).

Qualities (D4RL's names; the behaviour policies are the snapshots of
:mod:`gapbench.benchmark.policies`)

``random``         uniform random actions.
``medium``         the ``medium`` snapshot, actions *sampled* from it (stochastic, as D4RL did).
``expert``         the ``expert`` snapshot, sampled likewise.
``medium-expert``  half ``medium`` (first), half ``expert``.
``medium-replay``  the transitions as gathered while training up to ``medium``: the snapshots
                   with ``steps`` <= medium's, each rolled out for a share proportional to its
                   step spacing (snapshot j stands for the training interval
                   (steps_{j-1}, steps_j], with steps_0 = 0); the first interval starts with a
                   uniform-random share, the trainer's warm-up (``warmup_steps`` of the first
                   record, else ``steps - updates`` when it lists ``updates``, i.e. one env
                   step per update, else half the first interval). Like a replay buffer, it is
                   one continuous rollout: episodes carry on when the policy switches.

Sizes: D4RL's datasets hold 1M transitions (medium-replay: the replay buffer), and so does
gapbench's default, :data:`DEFAULT_SIZE`; ``size=100_000`` builds a quick one (README
"Datasets" gives the build times).

Rollouts run ``num_envs`` copies of the real system in a gymnasium vector env with batched
policy inference, fully determined by ``seed`` (env resets, the action space's sampler and a
local torch generator for the policy noise). A dataset is rolled out in shards of
:data:`SHARD` transitions, each from fresh resets with its own seed, on ``workers``
processes (default: every core); the content depends on the seed, never on ``workers``.
A dataset holds exactly ``size`` transitions: when the count is reached, the episodes still
running are cut, and their last transition is flagged as a time-out (its next observation is
real; only its episode stops). Time-outs at the task's ``max_episode_steps`` keep the true
final observation as ``next_observations`` (gymnasium 1.x vector envs reset on the *next*
step; that reset step is never stored).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import shlex
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gapbench.benchmark import policies
from gapbench.gap_envs.datasets import (
    DatasetError,
    DatasetExistsError,
    Episode,
    _exists,
    _gapbench_version,
    _minari,
    _resolve_data_dir,
    check_quality,
    gap_slug,
    return_stats,
    write_episodes,
)
from gapbench.gap_envs.envs import make_vector
from gapbench.gap_envs.spec import GapSpec
from gapbench.gap_envs.tasks import get_task

DEFAULT_SIZE = 1_000_000  # D4RL's size


DEFAULT_NUM_ENVS = 8


SHARD = 100_000  # transitions per independently rolled-out shard (fixed: content never
# depends on how many processes build it)


def dataset_id(
    task: str,
    quality: str,
    real_gap: GapSpec | str | dict | None = None,
    policy_dir: str | os.PathLike | None = None,
) -> str:
    """``gapbench/<task>/<quality>-v<N>``, or ``gapbench/<task>-<gap slug>/<quality>-v<N>``;
    N is the ``dataset_version`` of the task's published behaviour policies, so new
    policies never reuse an old id."""
    get_task(task)
    check_quality(quality)
    slug = gap_slug(real_gap)
    name = f"{task}-{slug}" if slug else task
    return f"gapbench/{name}/{quality}-v{policies.dataset_version(task, policy_dir)}"


@dataclass
class Segment:
    """``transitions`` gathered by one behaviour (``label`` 'random' = uniform actions).

    Segments with the same ``rollout`` are one continuous rollout whose policy switches
    when a segment's count is reached, mid-episode, as in a replay buffer; a new rollout
    starts from fresh resets with its own seed (medium-expert's two halves).
    """

    label: str
    transitions: int
    steps: int | None = None  # the snapshot's training env steps (None for random)
    record: dict[str, Any] = field(default_factory=dict)
    rollout: int = 0


def _allocate(size: int, weights: list[float]) -> list[int]:
    """Split ``size`` in proportion to ``weights`` (largest remainder, sums exactly)."""
    w = np.asarray(weights, dtype=np.float64)
    exact = size * w / w.sum()
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: size - counts.sum()]] += 1
    return counts.tolist()


def _replay_plan(task: str, size: int, root: str | os.PathLike | None) -> list[Segment]:
    medium = policies.get_snapshot(task, "medium", root)
    top = int(medium["steps"])
    by_steps: dict[int, dict[str, Any]] = {}
    for rec in policies.list_snapshots(task, root):
        steps = int(rec.get("steps") or 0)
        if not 0 < steps <= top:
            continue
        if steps not in by_steps or rec["label"] == "medium":  # a duplicate of medium: use medium
            by_steps[steps] = rec
    if top <= 0 or not by_steps:
        raise DatasetError(
            f"medium-replay needs training snapshots with steps > 0; {task!r}'s medium snapshot "
            f"has steps={top}"
        )
    recs = [by_steps[s] for s in sorted(by_steps)]
    first = recs[0]
    s1 = int(first["steps"])
    if first.get("warmup_steps") is not None:
        warm = int(first["warmup_steps"])
    elif first.get("updates") is not None:
        warm = s1 - int(first["updates"])  # one env step per update
    else:
        warm = s1 // 2
    warm = min(max(warm, 0), s1)
    labels, weights, steps_of, rec_of = ["random"], [float(warm)], [None], [{}]
    prev = 0
    for rec in recs:
        steps = int(rec["steps"])
        weights.append(float(steps - prev - (warm if prev == 0 else 0)))
        labels.append(rec["label"])
        steps_of.append(steps)
        rec_of.append(rec)
        prev = steps
    counts = _allocate(size, weights)
    return [
        Segment(label, n, steps, rec)
        for label, n, steps, rec in zip(labels, counts, steps_of, rec_of, strict=True)
        if n > 0
    ]


def plan(
    task: str, quality: str, size: int, policy_dir: str | os.PathLike | None = None
) -> list[Segment]:
    """The behaviours of a dataset and how many transitions each gathers, in order."""
    check_quality(quality)
    if quality == "random":
        return [Segment("random", size)]
    if quality == "medium-replay":
        return _replay_plan(task, size, policy_dir)
    labels = ["medium", "expert"] if quality == "medium-expert" else [quality]
    counts = _allocate(size, [1.0] * len(labels)) if len(labels) > 1 else [size]
    segs = []
    for k, (label, n) in enumerate(zip(labels, counts, strict=True)):
        rec = policies.get_snapshot(task, label, policy_dir)
        steps = int(rec["steps"]) if rec.get("steps") is not None else None
        segs.append(Segment(label, n, steps, rec, rollout=k))
    return [s for s in segs if s.transitions > 0]


ActFn = Callable[[np.ndarray, Any, torch.Generator], np.ndarray]


def _random_act(obs: np.ndarray, env: Any, gen: torch.Generator) -> np.ndarray:
    return env.action_space.sample()


def _policy_act(actor: torch.nn.Module, low: np.ndarray, high: np.ndarray) -> ActFn:
    """Stochastic actions a = tanh(mean + std * eps) with eps from the local generator."""
    rescale = not (np.all(low == -1.0) and np.all(high == 1.0))

    @torch.no_grad()
    def act(obs: np.ndarray, env: Any, gen: torch.Generator) -> np.ndarray:
        mean, log_std = actor.dist_params(torch.as_tensor(obs, dtype=torch.float32))
        eps = torch.randn(mean.shape, generator=gen, dtype=mean.dtype)
        a = torch.tanh(mean + log_std.exp() * eps).numpy()
        if rescale:  # gapbench's tasks all act in [-1, 1]; other bounds are mapped linearly
            a = (low + (a + 1.0) * 0.5 * (high - low)).astype(np.float32)
        return a

    return act


def _rollout(
    env: Any,
    schedule: list[tuple[ActFn, int]],
    seed: int,
    advance: Callable[[int], None],
) -> list[Episode]:
    """Exactly ``sum(counts)`` transitions from the vector ``env`` (reset with ``seed``): the
    first ``counts[0]`` from ``schedule[0]``'s behaviour, the next from ``schedule[1]``'s, ...
    (switching per transition, also within a vector step and within an episode)."""
    from gymnasium.vector import AutoresetMode

    mode = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    if mode not in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP):
        raise DatasetError(f"unsupported vector-env autoreset mode {mode}")
    num = env.num_envs
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    gen = torch.Generator().manual_seed(seed)
    resetting = np.zeros(num, dtype=bool)  # NEXT_STEP: this step only resets these envs
    fns = [fn for fn, _ in schedule]
    bounds = np.cumsum([c for _, c in schedule])
    n = int(bounds[-1])
    steps: dict[str, list[np.ndarray]] = {
        k: [] for k in ("obs", "act", "rew", "fin", "te", "tr", "ok")
    }
    count = 0
    while count < n:
        valid = ~resetting
        index = count + np.cumsum(valid) - 1  # each valid env's transition number
        which = np.minimum(np.searchsorted(bounds, index, side="right"), len(fns) - 1)
        needed = np.unique(which[valid]) if valid.any() else which[:1]
        act = None
        for k in needed:
            a_k = np.asarray(fns[k](obs, env, gen), dtype=np.float32)
            act = a_k if act is None else np.where((which == k)[:, None], a_k, act)
        nxt, rew, term, trunc, info = env.step(act)
        nxt = np.array(nxt, copy=True)
        final = nxt
        done = np.logical_or(term, trunc)
        if mode == AutoresetMode.SAME_STEP:
            if done.any():
                final = nxt.copy()
                for i in np.flatnonzero(done):
                    final[i] = info["final_obs"][i]
        else:
            resetting = done
        for key, value in (
            ("obs", np.array(obs, copy=True)),
            ("act", act),
            ("rew", np.asarray(rew, dtype=np.float64)),
            ("fin", final),
            ("te", np.asarray(term, dtype=bool)),
            ("tr", np.asarray(trunc, dtype=bool)),
            ("ok", valid),
        ):
            steps[key].append(value)
        k = int(valid.sum())
        advance(min(k, n - count))
        count += k
        obs = nxt

    s = {key: np.stack(value) for key, value in steps.items()}  # (S, num, ...)
    flat = s["ok"].reshape(-1)
    keep = (flat & (np.cumsum(flat) <= n)).reshape(s["ok"].shape)  # first n in (step, env) order
    episodes: list[tuple[tuple[int, int], Episode]] = []
    for e in range(num):
        rows = np.flatnonzero(keep[:, e])
        if len(rows) == 0:
            continue
        ends = np.flatnonzero(s["te"][rows, e] | s["tr"][rows, e]).tolist()
        cut = not ends or ends[-1] != len(rows) - 1
        if cut:
            ends.append(len(rows) - 1)
        start = 0
        for j, end in enumerate(ends):
            r = rows[start : end + 1]
            obs_ep = np.concatenate([s["obs"][r, e], s["fin"][r[-1], e][None]])
            if not np.array_equal(obs_ep[1:-1], s["fin"][r[:-1], e]):  # pragma: no cover
                raise RuntimeError("internal error: an episode's observations are not contiguous")
            is_cut = cut and j == len(ends) - 1
            truncs = s["tr"][r, e].copy()
            if is_cut:
                truncs[-1] = True
            ep = Episode(
                obs_ep,
                s["act"][r, e],
                s["rew"][r, e],
                s["te"][r, e].copy(),
                truncs,
                is_cut,
            )
            episodes.append(((int(r[-1]), e), ep))
            start = end + 1
    episodes.sort(key=lambda item: item[0])  # completion order
    return [ep for _, ep in episodes]


def _segment_seed(seed: int, k: int) -> int:
    if k == 0:
        return seed
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0] >> 1)


def _shard_seed(seed: int, key: tuple[int, int]) -> int:
    """Shard j of rollout k; the first shard of each rollout keeps the rollout's own seed,
    so a dataset of up to one shard is the single rollout it always was."""
    k, j = key
    if j == 0:
        return _segment_seed(seed, k)
    return int(np.random.SeedSequence([seed, k, j]).generate_state(1)[0] >> 1)


def _shards(segments: list[Segment]) -> list[tuple[tuple[int, int], list[tuple[str, int]]]]:
    """Each rollout's schedule cut into consecutive pieces of :data:`SHARD` transitions:
    ``((rollout, j), [(label, count), ...])`` in dataset order. A shard is rolled out on
    its own from fresh resets (the episodes running at its end are cut, as at the end of
    a dataset), so shards can run in parallel processes."""
    out = []
    for k in sorted({seg.rollout for seg in segments}):
        schedule = [(seg.label, seg.transitions) for seg in segments if seg.rollout == k]
        total = sum(n for _, n in schedule)
        for j, lo in enumerate(range(0, total, SHARD)):
            hi, pos, piece = min(lo + SHARD, total), 0, []
            for label, n in schedule:
                a, b = max(lo, pos), min(hi, pos + n)
                if b > a:
                    piece.append((label, b - a))
                pos += n
            out.append(((k, j), piece))
    return out


def _roll_shard(
    task: str,
    gap: str,
    policy_dir: str | os.PathLike | None,
    num_envs: int,
    piece: list[tuple[str, int]],
    seed: int,
    advance: Callable[[int], None] = lambda k: None,
) -> list[Episode]:
    """One shard's rollout (a top-level function: it runs in worker processes too)."""
    # A batch of num_envs observations is far too small for intra-op threads: on a busy
    # machine their synchronisation made each forward pass ~100x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    env = make_vector(task, gap, num_envs=num_envs)
    low, high = env.single_action_space.low, env.single_action_space.high
    try:
        schedule = [
            (
                _random_act
                if label == "random"
                else _policy_act(policies.load_actor(task, label, policy_dir), low, high),
                n,
            )
            for label, n in piece
        ]
        return _rollout(env, schedule, seed, advance)
    finally:
        torch.set_num_threads(threads)
        env.close()


@contextlib.contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Callable[[int], None]]:
    if not enabled:
        yield lambda k: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    ) as bar:
        tid = bar.add_task(description, total=total)
        pending = [0]

        def advance(k: int) -> None:
            pending[0] += k
            if pending[0] >= 1000:
                bar.advance(tid, pending[0])
                pending[0] = 0

        yield advance
        bar.advance(tid, pending[0])


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _command(
    task: str,
    quality: str,
    size: int,
    seed: int,
    gap: GapSpec,
    num_envs: int,
    policy_root: Path | None,
) -> str:
    parts = ["gapbench", "datasets", "build", "--task", task, "--quality", quality]
    parts += ["--size", str(size), "--seed", str(seed)]
    if not gap.is_nominal:
        parts += ["--real-gap", str(gap)]
    if num_envs != DEFAULT_NUM_ENVS:
        parts += ["--num-envs", str(num_envs)]
    if policy_root is not None:
        parts += ["--policy-dir", str(policy_root)]
    return shlex.join(parts)


def build(
    task: str,
    quality: str,
    size: int | None = None,
    seed: int = 0,
    real_gap: GapSpec | str | dict | None = None,
    data_dir: str | os.PathLike | None = None,
    policy_dir: str | os.PathLike | None = None,
    progress: bool = True,
    overwrite: bool = False,
    num_envs: int = DEFAULT_NUM_ENVS,
    workers: int | None = None,
) -> str:
    """Roll out ``quality``'s behaviour on the real system and store exactly ``size``
    transitions (default :data:`DEFAULT_SIZE` = 1_000_000, D4RL's size) as a Minari
    dataset. Returns its id. Refuses to replace an existing id unless ``overwrite``; the old
    dataset stays intact until the new one is complete."""
    t = get_task(task)
    check_quality(quality)
    gap = GapSpec.parse(real_gap)
    size = DEFAULT_SIZE if size is None else int(size)
    if size <= 0:
        raise DatasetError(f"size must be > 0, got {size}")
    if seed < 0:
        raise DatasetError(f"seed must be >= 0, got {seed}")
    if num_envs < 1:
        raise DatasetError(f"num_envs must be >= 1, got {num_envs}")
    if workers is not None and workers < 1:
        raise DatasetError(f"workers must be >= 1, got {workers}")
    did = dataset_id(task, quality, gap, policy_dir)
    root = _resolve_data_dir(data_dir)
    if _exists(root, did) and not overwrite:
        raise DatasetExistsError(
            f"dataset {did} already exists in {root}; pass overwrite=True (--overwrite) to "
            "replace it"
        )

    segments = plan(task, quality, size, policy_dir)
    policy_root = None  # named in the build command when it is not the shipped folder
    if quality != "random" and (policy_dir or os.environ.get(policies.POLICY_DIR_ENV)):
        policy_root = policies.policy_dir(policy_dir).resolve()
    for seg in segments:  # a clear error for a missing or broken snapshot, before any work
        if seg.label != "random":
            policies.load_actor(task, seg.label, policy_dir)

    shards = _shards(segments)
    workers = min(workers or os.cpu_count() or 1, len(shards))
    jobs = [
        (task, str(gap), policy_dir, num_envs, piece, _shard_seed(seed, key))
        for key, piece in shards
    ]
    episodes: list[Episode] = []
    with _progress(progress, size, f"{did}") as advance:
        if workers == 1:
            for job in jobs:
                episodes += _roll_shard(*job, advance=advance)
        else:  # shards are independent rollouts: the content never depends on `workers`
            import concurrent.futures as cf
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # no fork of a process that may hold OpenMP threads
            with cf.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
                futures = [pool.submit(_roll_shard, *job) for job in jobs]
                for fut, (_, piece) in zip(futures, shards, strict=True):
                    episodes += fut.result()  # in shard order, whatever finishes first
                    advance(sum(n for _, n in piece))

    complete = np.array([ep.rewards.sum() for ep in episodes if not ep.cut], dtype=np.float64)
    partial = np.array([ep.rewards.sum() for ep in episodes], dtype=np.float64)
    ref = (t.random_score, t.expert_score)
    snapshots = []
    for seg in segments:
        entry: dict[str, Any] = {
            "label": seg.label,
            "steps": seg.steps,
            "transitions": seg.transitions,
            "seed": _segment_seed(seed, seg.rollout),
        }
        if seg.label != "random":
            entry["snapshot_normalized_score"] = seg.record.get("normalized_score")
            entry["snapshot_return_mean"] = seg.record.get("return_mean")
            file = policies.policy_dir(policy_dir) / task / seg.record.get("file", "")
            entry["sha256"] = _sha256(file)
        snapshots.append(entry)
    minari = _minari()
    info: dict[str, Any] = {
        "id": did,
        "source": "gapbench",
        "task": task,
        "quality": quality,
        "size": int(sum(len(ep) for ep in episodes)),
        "episodes": len(episodes),
        "complete_episodes": int(len(complete)),
        **return_stats(complete, partial, ref),
        "ref_min_score": t.random_score,
        "ref_max_score": t.expert_score,
        "snapshots": snapshots,
        "seed": seed,
        "real_gap": str(gap),
        "num_envs": num_envs,
        "command": _command(task, quality, size, seed, gap, num_envs, policy_root),
        "gapbench_version": _gapbench_version(),
        "minari_version": minari.__version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    assert info["size"] == size, (info["size"], size)
    write_episodes(root, did, episodes, info, t, gap, overwrite)
    return did


__all__ = [
    "DEFAULT_NUM_ENVS",
    "DEFAULT_SIZE",
    "SHARD",
    "Segment",
    "build",
    "dataset_id",
    "plan",
]
