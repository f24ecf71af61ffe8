"""Shifted MuJoCo environments.

Every shift is applied to the env's *own* compiled ``MjModel`` after construction,
never to the installed XML files, so parallel runs cannot race on shared files.
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.registration import load_env_creator

from gapbench.gap_envs.spec import GapSpec, GapSpecError
from gapbench.gap_envs.tasks import TASKS, get_task


def _mujoco_warning(message: str) -> None:
    # Gymnasium's half_cheetah.xml uses the deprecated `settotalmass`; MuJoCo would print
    # that to stdout at every env construction (once per vector sub-env, per run...).
    if "settotalmass" not in message:
        warnings.warn(f"MuJoCo: {message.strip()}", RuntimeWarning, stacklevel=2)


mujoco.set_mju_user_warning(_mujoco_warning)


class JointNoise(gym.Wrapper):
    """Adds N(0, std^2) noise to the action the simulator executes.

    The learner keeps seeing (and storing) its clean action, as in H2O's joint-noise
    setting. The noise stream is seeded from ``reset(seed=...)``. The env steps the noisy
    action clipped to the actuators' range, or with ``ctrl_cost_on_noisy=True`` the noisy
    action itself, as the H2O authors' sampler does: the env's reward then squares the
    unclipped action in its control cost while MuJoCo's ctrl limits clamp what the
    actuators apply, so the dynamics are the same either way.
    """

    def __init__(self, env: gym.Env, std: float, ctrl_cost_on_noisy: bool = False):
        super().__init__(env)
        self.std = float(std)
        self.ctrl_cost_on_noisy = ctrl_cost_on_noisy
        self._rng = np.random.default_rng()
        self._low = env.action_space.low
        self._high = env.action_space.high
        model = env.unwrapped.model
        if ctrl_cost_on_noisy and not np.all(model.actuator_ctrllimited):
            raise GapSpecError("noise_ctrl_cost=noisy needs ctrl-limited actuators")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            # A separate stream from the env's own reset noise, fixed by the same seed.
            self._rng = np.random.default_rng([int(seed), 0x6A6E])
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        noisy = action + self._rng.normal(0.0, self.std, size=action.shape)
        return self.env.step(noisy if self.ctrl_cost_on_noisy else self.clip(noisy))

    def clip(self, action: np.ndarray) -> np.ndarray:
        return np.clip(action, self._low, self._high)


def body_names(model: mujoco.MjModel) -> list[str]:
    return [model.body(i).name for i in range(model.nbody)]


@functools.cache
def task_bodies(task: str) -> tuple[str, ...]:
    """The body names of a task's model (world excluded), read once per process."""
    model = gym.make(get_task(task).gym_id).unwrapped.model
    return tuple(n for n in body_names(model) if n != "world")


def gap_problem(task: str, gap: GapSpec | str | dict | None) -> str | None:
    """Why ``gap`` cannot apply to ``task`` (a ``mass.<body>`` the model lacks), or None:
    checked up front, as parsing alone cannot know the task's bodies."""
    bodies = task_bodies(task)
    unknown = [b for b, _ in GapSpec.parse(gap).body_mass if b not in bodies]
    if not unknown:
        return None
    names = ", ".join(f"mass.{b}" for b in unknown)
    return f"gap {names}: no such body in task {task!r}; valid bodies: {', '.join(bodies)}"


def apply_gap(model: mujoco.MjModel, data: mujoco.MjData, gap: GapSpec) -> None:
    """Scale the physics of ``model`` in place (gravity, masses/inertias, friction)."""
    if gap.gravity is not None:
        model.opt.gravity[:] = model.opt.gravity * gap.gravity
    scales = np.ones(model.nbody)
    if gap.mass is not None:
        scales[1:] *= gap.mass  # body 0 is the static world
    names = body_names(model)
    for body, scale in gap.body_mass:
        if body not in names:
            valid = ", ".join(n for n in names if n != "world")
            raise GapSpecError(f"unknown body {body!r} in 'mass.{body}'; valid bodies: {valid}")
        scales[names.index(body)] *= scale
    if np.any(scales != 1.0):
        # A uniform density change scales mass and inertia by the same factor.
        model.body_mass[:] = model.body_mass * scales
        model.body_inertia[:] = model.body_inertia * scales[:, None]
    if gap.friction is not None:
        # MuJoCo mixes a contact's friction as the max over its two geoms, so scaling
        # every geom (the floor included) scales the effective friction exactly.
        model.geom_friction[:] = model.geom_friction * gap.friction
    if not gap.is_nominal:
        mujoco.mj_setConst(model, data)  # recompute derived constants (subtree masses, ...)


def _create(task: str, gap: GapSpec | str | dict | None = None, **kwargs: Any) -> gym.Env:
    """Gymnasium entry point for ``gapbench/<Task>-v5``: the MuJoCo env with its gap applied."""
    spec = GapSpec.parse(gap)
    env = load_env_creator(get_task(task).entry_point)(**kwargs)
    apply_gap(env.unwrapped.model, env.unwrapped.data, spec)
    env.unwrapped.gap = spec
    if spec.noise_std > 0:
        env = JointNoise(env, spec.noise_std, spec.ctrl_cost_on_noisy_action)
    return env


def register_envs() -> None:
    for name, task in TASKS.items():
        if task.gapbench_id not in gym.registry:
            gym.register(
                task.gapbench_id,
                entry_point="gapbench.gap_envs.envs:_create",
                max_episode_steps=task.max_episode_steps,
                kwargs={"task": name},
            )


def make(
    task: str, gap: GapSpec | str | dict | None = None, seed: int | None = None, **kwargs: Any
) -> gym.Env:
    """The task with ``gap`` applied to its simulator (nominal when None).

    With ``seed``, the env (its reset noise, joint noise and action space) is seeded once
    here, so later ``reset()`` calls without a seed continue a reproducible stream.
    """
    t = get_task(task)
    register_envs()
    env = gym.make(t.gapbench_id, gap=GapSpec.parse(gap), **kwargs)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def make_vector(
    task: str, gap: GapSpec | str | dict | None = None, num_envs: int = 1, seed: int | None = None
) -> gym.vector.VectorEnv:
    """A synchronous vector env of ``num_envs`` copies (seeds seed, seed+1, ...)."""
    t = get_task(task)
    register_envs()
    env = gym.make_vec(
        t.gapbench_id, num_envs=num_envs, vectorization_mode="sync", gap=GapSpec.parse(gap)
    )
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env


def describe(task: str, gap: GapSpec | str | dict | None = None) -> dict[str, Any]:
    """Nominal and shifted values of everything a gap can touch, as plain JSON data."""
    spec = GapSpec.parse(gap)
    t = get_task(task)
    nominal = gym.make(t.gym_id).unwrapped.model
    shifted_env = make(task, spec)
    shifted = shifted_env.unwrapped.model
    names = body_names(shifted)
    geoms = [shifted.geom(i).name or f"geom{i}" for i in range(shifted.ngeom)]
    info = {
        "task": task,
        "gym_id": t.gym_id,
        "gap": str(spec),
        "gravity": shifted.opt.gravity.tolist(),
        "nominal_gravity": nominal.opt.gravity.tolist(),
        "total_mass": float(shifted.body_mass.sum()),
        "nominal_total_mass": float(nominal.body_mass.sum()),
        "body_mass": dict(zip(names, shifted.body_mass.tolist(), strict=True)),
        "nominal_body_mass": dict(zip(names, nominal.body_mass.tolist(), strict=True)),
        "geoms": geoms,
        "friction": shifted.geom_friction.tolist(),
        "nominal_friction": nominal.geom_friction.tolist(),
        "joint_noise": spec.noise_std,
        "noise_ctrl_cost": spec.noise_ctrl_cost or "clipped",
        "obs_dim": t.obs_dim,
        "act_dim": t.act_dim,
    }
    shifted_env.close()
    return info
