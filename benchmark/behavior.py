"""Behaviour-policy training: SAC on the real system, saving actor snapshots as it goes.

The snapshots (with their evaluated returns) are what the graded datasets are rolled
out from: an early one, a *medium* one and an *expert* one per task. Training is an
ordinary oracle-regime run, so it checkpoints and resumes like any run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gapbench import gap_envs
from gapbench.benchmark import policies
from gapbench.benchmark.evaluation import evaluate, make_eval_env
from gapbench.benchmark.harness import run
from gapbench.benchmark.spec import Budget, RunSpec

DEFAULT_STEPS = 1_000_000  # D4RL's SAC behaviour policies trained for 1M steps
SNAPSHOT_EVERY = 10_000
EVAL_EPISODES = 10
# Snapshot files kept: every evaluation up to DENSE_UNTIL updates (where medium and
# medium-replay's policies come from), then every SPARSE_EVERY updates, plus every new best
# (the expert candidates). ~45 actor files of 0.3 MB per 1M-step run instead of 100.
DENSE_UNTIL = 200_000
SPARSE_EVERY = 50_000


def keep_snapshot(updates: int, return_mean: float, best_so_far: float) -> bool:
    return updates <= DENSE_UNTIL or updates % SPARSE_EVERY == 0 or return_mean > best_so_far


def behavior_spec(
    task: str,
    real_gap: str = "",
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    snapshot_every: int = SNAPSHOT_EVERY,
    device: str = "cpu",
) -> RunSpec:
    budget = Budget(
        updates=steps,
        eval_every=snapshot_every,
        eval_episodes=EVAL_EPISODES,
        warmup_steps=5_000,
        checkpoint_every=1,
    )
    return RunSpec(
        task=task,
        algorithm="sac",
        regime="oracle",
        seed=seed,
        real_gap=real_gap,
        preset="paper",
        budget=budget,
        device=device,
    ).resolved()


def train_behavior(
    task: str,
    out_dir: str | Path,
    real_gap: str = "",
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    snapshot_every: int = SNAPSHOT_EVERY,
    device: str = "cpu",
    command: str = "",
    progress: bool | None = None,
    stop=None,
) -> dict[str, Any]:
    """Train (or resume) and save a snapshot at every evaluation into the policy folder
    ``out_dir/<run_id>/snapshots`` (the layout of :mod:`gapbench.benchmark.policies`), each listed
    with its evaluated return. :func:`publish` picks the medium and expert ones. ``stop()``:
    as :func:`gapbench.benchmark.harness.run`'s (checkpoint where it stands, RunStopped)."""
    spec = behavior_spec(task, real_gap, steps, seed, snapshot_every, device)
    snap_root = Path(out_dir) / spec.run_id / "snapshots"

    existing = policies.list_snapshots(task, snap_root) if snap_root.is_dir() else []
    best = [max((r["return_mean"] for r in existing), default=-float("inf"))]

    def save(row: dict[str, Any], algo) -> None:
        env_steps = int(row["env_steps"])
        if not keep_snapshot(int(row["step"]), row["return_mean"], best[0]):
            return
        best[0] = max(best[0], row["return_mean"])
        policies.save_snapshot(
            task,
            f"step-{env_steps}",
            algo.actor,
            {
                "steps": env_steps,
                "updates": int(row["step"]),
                "warmup_steps": spec.budget.warmup_steps,
                "seed": seed,
                "return_mean": row["return_mean"],
                "return_std": row["return_std"],
                "normalized_score": row["normalized_score"],
                "real_gap": spec.real_gap,
                "command": command,
            },
            policy_dir=snap_root,
        )

    return run(spec, out_dir, progress=progress, on_eval=save, stop=stop)


def choose_medium(
    records: list[dict[str, Any]], expert: dict[str, Any], low: float = 1 / 3, high: float = 1 / 2
) -> tuple[dict[str, Any], list[float]]:
    """Medium: the latest snapshot before ``expert`` scoring between ``low`` and ``high`` of
    the expert's normalized score (D4RL's medium is about a third to a half of its expert),
    else the one closest to the middle of that band. Returns it and the band."""
    band = [low * expert["normalized_score"], high * expert["normalized_score"]]
    earlier = [r for r in records if r["steps"] < expert["steps"]]
    if not earlier:
        raise ValueError(f"no snapshot before the expert ({expert['label']}) to be medium")
    inside = [r for r in earlier if band[0] <= r["normalized_score"] <= band[1]]
    if inside:
        return max(inside, key=lambda r: r["steps"]), band
    middle = sum(band) / 2
    return min(earlier, key=lambda r: abs(r["normalized_score"] - middle)), band


PUBLISH_EPISODES = 20
PUBLISH_CANDIDATES = 5
PUBLISH_EVAL_SEED = 2_000_003  # fresh initial states: not the ones training selected on


def reevaluate(
    task: str, label: str, source: str | Path, real_gap: str = "", episodes: int = PUBLISH_EPISODES
) -> dict[str, Any]:
    """The snapshot's deterministic return on ``episodes`` fresh episodes of the real system.

    Picking the best of ~100 training evaluations favours a lucky one (each is only 10
    episodes); scoring the candidates again on new initial states removes that bias."""
    actor = policies.load_actor(task, label, source)
    env = make_eval_env(task, real_gap, episodes)
    try:
        with torch.no_grad():
            returns = evaluate(
                env,
                lambda o: actor.act(torch.as_tensor(o, dtype=torch.float32)).numpy(),
                PUBLISH_EVAL_SEED,
            )
    finally:
        env.close()
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "normalized_score": float(gap_envs.normalized_score(task, returns.mean())),
        "eval_episodes": episodes,
    }


def publish(
    task: str,
    source: str | Path,
    dest: str | Path | None = None,
    episodes: int = PUBLISH_EPISODES,
    candidates: int = PUBLISH_CANDIDATES,
) -> dict[str, Any]:
    """Publish a training run's snapshots as the task's behaviour policies.

    The ``candidates`` best snapshots by training evaluation are scored again on
    ``episodes`` fresh episodes; the best of them is ``expert``. ``medium`` is chosen by
    :func:`choose_medium` against that score and re-scored likewise. Every snapshot
    up to medium (medium-replay's behaviours) is copied too. The task's folder is replaced
    as a whole (no snapshot of an earlier training is left to mix into medium-replay), and
    its ``dataset_version`` goes up by one whenever the published policies change, so a
    dataset id never silently means new data."""
    records = policies.list_snapshots(task, source)
    if not records:
        raise ValueError(f"no snapshots of task {task!r} in {source}")
    real_gap = records[0].get("real_gap") or ""
    top = sorted(records, key=lambda r: r["normalized_score"], reverse=True)[:candidates]
    rescored = {r["label"]: reevaluate(task, r["label"], source, real_gap, episodes) for r in top}
    best = max(top, key=lambda r: rescored[r["label"]]["normalized_score"])
    expert = dict(best, **rescored[best["label"]], train_normalized_score=best["normalized_score"])
    # The band is 1/3-1/2 of the expert as re-scored. A run can jump over it between two
    # kept snapshots (halfcheetah: 19 to 38 normalized from 35k to 45k steps); the
    # snapshot nearest its middle is medium then, and its record says so.
    medium, band = choose_medium(records, expert)
    if medium["label"] not in rescored:
        rescored[medium["label"]] = reevaluate(task, medium["label"], source, real_gap, episodes)
    medium = dict(
        medium,
        **rescored[medium["label"]],
        train_normalized_score=medium["normalized_score"],
        medium_band=band,
        medium_in_band=band[0] <= medium["normalized_score"] <= band[1],
    )

    old = policies.list_snapshots(task, dest)
    version = policies.dataset_version(task, dest)
    changed = {r.get("digest") for r in old if r["label"] in policies.NAMED_LABELS} != {
        policies.snapshot_digest(task, r["label"], source) for r in (medium, expert)
    }
    if old and changed:
        version += 1
    chosen = [r for r in records if r["steps"] <= medium["steps"]]
    entries = [(r["label"], r["label"], r) for r in chosen]
    entries += [("medium", medium["label"], medium), ("expert", expert["label"], expert)]
    with policies.replace_task_folder(task, dest) as staging:
        for label, src_label, rec in entries:
            extra = {k: v for k, v in rec.items() if k not in ("label", "file")}
            if label != src_label:
                extra["source_label"] = src_label
            extra["digest"] = policies.snapshot_digest(task, src_label, source)
            extra["dataset_version"] = version
            policies.save_snapshot(
                task,
                label,
                policies.load_actor(task, src_label, source),
                extra,
                policy_dir=staging,
            )
    return {
        "medium": medium,
        "expert": expert,
        "replay_snapshots": [r["label"] for r in chosen],
        "dataset_version": version,
    }
