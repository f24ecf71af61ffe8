"""Behaviour-policy training: SAC on the real system, saving actor snapshots as it goes.

The snapshots (with their evaluated returns) are what the graded datasets are rolled
out from: an early one, a *medium* one and an *expert* one per task. Training is an
ordinary oracle-regime run, so it checkpoints and resumes like any run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmark.harness import run
from benchmark.spec import Budget, RunSpec
from gap_envs import policies

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
) -> dict[str, Any]:
    """Train (or resume) and save a snapshot at every evaluation into the policy folder
    ``out_dir/<run_id>/snapshots`` (the layout of :mod:`gap_envs.policies`), each listed
    with its evaluated return. :func:`publish` picks the medium and expert ones."""
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

    return run(spec, out_dir, progress=progress, on_eval=save)


def choose_medium_expert(records: list[dict[str, Any]], low: float = 1 / 3, high: float = 1 / 2):
    """Expert: the best evaluated snapshot. Medium: the latest one scoring between ``low``
    and ``high`` of the expert's normalized score (D4RL's medium is about a third to a half
    of its expert), else the one closest to the middle of that band."""
    if not records:
        raise ValueError("no snapshots to choose from")
    expert = max(records, key=lambda r: r["normalized_score"])
    lo, hi = low * expert["normalized_score"], high * expert["normalized_score"]
    earlier = [r for r in records if r["steps"] < expert["steps"]] or records
    inside = [r for r in earlier if lo <= r["normalized_score"] <= hi]
    if inside:
        return max(inside, key=lambda r: r["steps"]), expert
    middle = 0.5 * (lo + hi)
    return min(earlier, key=lambda r: abs(r["normalized_score"] - middle)), expert


def publish(task: str, source: str | Path, dest: str | Path | None = None) -> dict[str, Any]:
    """Copy a training run's snapshots into the shipped policy folder: every snapshot up
    to the medium one (what medium-replay rolls out), plus ``medium`` and ``expert``."""
    records = policies.list_snapshots(task, source)
    medium, expert = choose_medium_expert(records)
    chosen = [r for r in records if r["steps"] <= medium["steps"]]
    for rec in chosen:
        policies.save_snapshot(
            task,
            rec["label"],
            policies.load_actor(task, rec["label"], source),
            rec,
            policy_dir=dest,
        )
    for label, rec in (("medium", medium), ("expert", expert)):
        extra = {k: v for k, v in rec.items() if k not in ("label", "file")}
        policies.save_snapshot(
            task,
            label,
            policies.load_actor(task, rec["label"], source),
            dict(extra, source_label=rec["label"]),
            policy_dir=dest,
        )
    return {"medium": medium, "expert": expert, "replay_snapshots": [r["label"] for r in chosen]}
