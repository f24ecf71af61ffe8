"""Behaviour-policy training: SAC on the real system, saving actor snapshots as it goes.

The snapshots (with their evaluated returns) are what the graded datasets are rolled
out from: an early one, a *medium* one and an *expert* one per task. Training is an
ordinary oracle-regime run, so it checkpoints and resumes like any run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from benchmark import records
from benchmark.harness import run
from benchmark.spec import Budget, RunSpec

DEFAULT_STEPS = 200_000
SNAPSHOT_EVERY = 10_000


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
        eval_episodes=5,
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
    """Train (or resume) and save ``out_dir/<run_id>/snapshots/step-N.pt`` at every evaluation,
    listed with their evaluated returns in ``snapshots.json`` beside them."""
    spec = behavior_spec(task, real_gap, steps, seed, snapshot_every, device)
    snap_dir = Path(out_dir) / spec.run_id / "snapshots"
    index_path = snap_dir / "snapshots.json"

    def save(row: dict[str, Any], algo) -> None:
        label = f"step-{int(row['env_steps'])}"
        buf_path = snap_dir / f"{label}.pt"
        state = {
            "actor": {k: v.cpu() for k, v in algo.actor.state_dict().items()},
            "obs_dim": algo.obs_dim,
            "act_dim": algo.act_dim,
            "hidden": list(algo.config.hidden),
        }
        import io

        buf = io.BytesIO()
        torch.save(state, buf)
        records.atomic_write_bytes(buf_path, buf.getvalue())
        index = json.loads(index_path.read_text()) if index_path.exists() else []
        index = [r for r in index if r["label"] != label]
        index.append(
            {
                "label": label,
                "file": buf_path.name,
                "steps": int(row["env_steps"]),
                "updates": int(row["step"]),
                "seed": seed,
                "return_mean": row["return_mean"],
                "return_std": row["return_std"],
                "normalized_score": row["normalized_score"],
                "real_gap": spec.real_gap,
                "command": command,
            }
        )
        records.write_json(index_path, sorted(index, key=lambda r: r["steps"]))

    return run(spec, out_dir, progress=progress, on_eval=save)
