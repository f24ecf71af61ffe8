"""Shifted MuJoCo locomotion tasks: the simulator side of a sim-to-real gap."""

from gapbench.gap_envs.envs import (
    JointNoise,
    apply_gap,
    describe,
    gap_problem,
    make,
    make_vector,
    register_envs,
)
from gapbench.gap_envs.spec import GapSpec, GapSpecError
from gapbench.gap_envs.tasks import TASKS, Task, UnknownTaskError, get_task, normalized_score

register_envs()

__all__ = [
    "TASKS",
    "GapSpec",
    "GapSpecError",
    "JointNoise",
    "Task",
    "UnknownTaskError",
    "apply_gap",
    "describe",
    "gap_problem",
    "get_task",
    "make",
    "make_vector",
    "normalized_score",
    "register_envs",
]
