"""The locomotion tasks gapbench knows, and D4RL's reference returns for normalization."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Task:
    name: str
    gym_id: str  # Gymnasium MuJoCo id of the nominal ("real") system
    entry_point: str  # module:Class of the MuJoCo env, built directly so the gap wraps it
    obs_dim: int
    act_dim: int
    random_score: float  # D4RL infos.py REF_MIN_SCORE
    expert_score: float  # D4RL infos.py REF_MAX_SCORE
    max_episode_steps: int = 1000

    @property
    def gapbench_id(self) -> str:
        return f"gapbench/{self.gym_id}"


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task(
            "halfcheetah",
            "HalfCheetah-v5",
            "gymnasium.envs.mujoco.half_cheetah_v5:HalfCheetahEnv",
            17,
            6,
            -280.178953,
            12135.0,
        ),
        Task(
            "hopper",
            "Hopper-v5",
            "gymnasium.envs.mujoco.hopper_v5:HopperEnv",
            11,
            3,
            -20.272305,
            3234.3,
        ),
        Task(
            "walker2d",
            "Walker2d-v5",
            "gymnasium.envs.mujoco.walker2d_v5:Walker2dEnv",
            17,
            6,
            1.629008,
            4592.3,
        ),
        Task("ant", "Ant-v5", "gymnasium.envs.mujoco.ant_v5:AntEnv", 105, 8, -325.6, 3879.7),
    )
}


class UnknownTaskError(ValueError):
    pass


def task_problem(name: Any) -> str | None:
    """Why ``name`` is not a task, or None: the one wording (get_task, matrix files)."""
    if isinstance(name, str) and name in TASKS:
        return None
    return f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}"


def get_task(name: str) -> Task:
    if problem := task_problem(name):
        raise UnknownTaskError(problem)
    return TASKS[name]


def normalized_score(task: str, returns: float | np.ndarray) -> float | np.ndarray:
    """D4RL normalized score: 100 * (R - R_random) / (R_expert - R_random)."""
    t = get_task(task)
    score = (
        100.0
        * (np.asarray(returns, dtype=np.float64) - t.random_score)
        / (t.expert_score - t.random_score)
    )
    return float(score) if score.ndim == 0 else score
