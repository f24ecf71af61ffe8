"""N evaluation episodes stepped together, without Gymnasium's per-step overhead.

A Gymnasium MuJoCo step spends more time in Python (wrappers, info dicts, per-env
observation and reward code) than in the physics. Evaluation only needs the first
episode of each copy, so this steps every still-running copy's MuJoCo data directly and
computes observations, rewards and terminations for all copies at once in numpy, with
the Gymnasium v5 formulas and the env's own coefficients. Resets go through each copy's
Gymnasium env, so a seed gives exactly the initial states (and joint-noise stream) that
``gap_envs.make`` would; tests check step-by-step equality with Gymnasium.

Tasks without a vectorised formula here (ant: its reward needs contact forces) step
each copy through the unwrapped Gymnasium env instead: still no wrapper overhead.

MuJoCo releases the GIL while it simulates, so with ``threads > 1`` the copies' physics
is split across threads. Each copy is still stepped by one ``mj_step`` on its own data,
so results do not depend on the thread count.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from gapbench.gap_envs.envs import JointNoise, make
from gapbench.gap_envs.spec import GapSpec
from gapbench.gap_envs.tasks import get_task

# Tasks whose observation, reward and termination are vectorised below.
_VECTORISED = ("halfcheetah", "hopper", "walker2d")


def _joint_noise(env: gym.Env) -> JointNoise | None:
    while isinstance(env, gym.Wrapper):
        if isinstance(env, JointNoise):
            return env
        env = env.env
    return None


def _step_all(copies: Sequence[Any], nstep: int) -> None:
    for r in copies:
        mujoco.mj_step(r.model, r.data, nstep=nstep)


def _serve(jobs: queue.SimpleQueue, done: queue.SimpleQueue) -> None:
    while (job := jobs.get()) is not None:
        try:
            _step_all(*job)
            done.put(None)
        except BaseException as err:  # surfaced on the caller's thread
            done.put(err)


class _PhysicsThreads:
    """Steps groups of MuJoCo copies on ``threads - 1`` helper threads plus the caller's.

    Persistent threads fed through ``SimpleQueue``: a thread pool's per-call overhead
    (~100 µs) would eat most of the gain at ~60 µs of physics per copy and step. The
    threads hold no reference to this object, so dropping it (or ``close``) ends them.
    """

    def __init__(self, threads: int, nstep: int):
        self.nstep = nstep
        self._jobs: list[queue.SimpleQueue] = []
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(threads - 1):
            jobs: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=_serve, args=(jobs, self._done), daemon=True).start()
            self._jobs.append(jobs)

    def step(self, copies: Sequence[Any]) -> None:
        """``mj_step`` every copy once (``nstep`` substeps), split across the threads."""
        k = min(len(self._jobs) + 1, len(copies))
        groups = [copies[i::k] for i in range(k)]
        for jobs, group in zip(self._jobs, groups[1:], strict=False):
            jobs.put((group, self.nstep))
        try:
            _step_all(groups[0], self.nstep)
        finally:  # always collect the helpers' replies, so none is left for the next step
            errors = [self._done.get() for _ in groups[1:]]
        for err in errors:
            if err is not None:
                raise err

    def close(self) -> None:
        for jobs in self._jobs:
            jobs.put(None)
        self._jobs = []

    __del__ = close


class EvalEpisodes:
    """``num_envs`` copies of a task under ``gap``: one episode each, no autoreset.

    The interface is the subset of Gymnasium's vector API that evaluation uses:
    ``reset(seed=s)`` seeds copy i with ``s + i``; ``step(actions)`` returns batched
    (obs, reward, terminated, truncated, info). A copy whose episode ended is no longer
    simulated: its observation is repeated, its reward is 0 and its done flag stays set.
    ``threads``: how many threads simulate the copies (vectorised tasks; results are the
    same for any value).
    """

    def __init__(
        self,
        task: str,
        gap: GapSpec | str | dict | None = None,
        num_envs: int = 1,
        threads: int = 1,
    ):
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.task = get_task(task)
        self.num_envs = num_envs
        self.envs = [make(task, gap) for _ in range(num_envs)]
        self.raw = [e.unwrapped for e in self.envs]
        self.noise = [_joint_noise(e) for e in self.envs]
        first = self.raw[0]
        self.vectorised = task in _VECTORISED
        if self.vectorised and not first._exclude_current_positions_from_observation:
            raise ValueError("EvalEpisodes expects the default observation (x excluded)")
        self.frame_skip = first.frame_skip
        self.dt = first.dt
        self._low = first.action_space.low
        self._high = first.action_space.high
        self._obs = np.zeros((num_envs, self.task.obs_dim))
        self._terminated = np.zeros(num_envs, dtype=bool)
        self._truncated = np.ones(num_envs, dtype=bool)  # nothing runs before reset()
        self._steps = 0
        threads = min(threads, num_envs) if self.vectorised else 1  # ant: steps via Gymnasium
        self._physics = _PhysicsThreads(threads, self.frame_skip)

    def reset(self, *, seed: int | None = None) -> tuple[np.ndarray, dict]:
        for i, env in enumerate(self.envs):
            obs, _ = env.reset(seed=None if seed is None else seed + i)
            self._obs[i] = obs
        self._terminated[:] = False
        self._truncated[:] = False
        self._steps = 0
        return self._obs.copy(), {}

    def step(self, actions: np.ndarray):
        n, act_dim = self.num_envs, self.task.act_dim
        actions = np.asarray(actions)
        if actions.shape != (n, act_dim):
            raise ValueError(f"expected actions of shape {(n, act_dim)}, got {actions.shape}")
        live = np.flatnonzero(~(self._terminated | self._truncated))
        if any(self.noise):  # as JointNoise.step, drawing from each copy's own stream
            actions = actions.astype(np.float64)
            for i in live:
                noise = self.noise[i]
                noisy = actions[i] + noise._rng.normal(0.0, noise.std, size=act_dim)
                # unclipped under noise_ctrl_cost=noisy: the ctrl cost squares it, MuJoCo
                # clamps the control (as data.ctrl in _step_vectorised)
                actions[i] = noisy if noise.ctrl_cost_on_noisy else noise.clip(noisy)
        reward = np.zeros(n)
        if self.vectorised and live.size:
            reward[live], self._terminated[live] = self._step_vectorised(live, actions[live])
        elif not self.vectorised:
            for i in live:
                obs, reward[i], self._terminated[i], _, _ = self.raw[i].step(actions[i])
                self._obs[i] = obs
        self._steps += 1
        if self._steps >= self.task.max_episode_steps:  # Gymnasium's TimeLimit
            self._truncated[live] = ~self._terminated[live]
        return self._obs.copy(), reward, self._terminated.copy(), self._truncated.copy(), {}

    def _step_vectorised(
        self, live: np.ndarray, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        raw = [self.raw[i] for i in live]
        x_before = np.array([r.data.qpos[0] for r in raw])
        for r, a in zip(raw, actions, strict=True):
            r.data.ctrl[:] = a
        self._physics.step(raw)
        qpos = np.stack([r.data.qpos for r in raw])
        qvel = np.stack([r.data.qvel for r in raw])
        e = raw[0]
        forward = e._forward_reward_weight * (qpos[:, 0] - x_before) / self.dt
        ctrl_cost = e._ctrl_cost_weight * np.square(actions).sum(1)
        if self.task.name == "halfcheetah":
            self._obs[live] = np.concatenate([qpos[:, 1:], qvel], axis=1)
            return forward - ctrl_cost, np.zeros(len(live), dtype=bool)
        # hopper / walker2d: healthy while torso height and angle (and, for hopper, every
        # other state entry) stay inside the env's ranges.
        z, angle = qpos[:, 1], qpos[:, 2]
        (z_lo, z_hi), (a_lo, a_hi) = e._healthy_z_range, e._healthy_angle_range
        healthy = (z_lo < z) & (z < z_hi) & (a_lo < angle) & (angle < a_hi)
        if self.task.name == "hopper":
            s_lo, s_hi = e._healthy_state_range
            state = np.concatenate([qpos[:, 2:], qvel], axis=1)
            healthy &= np.all((s_lo < state) & (state < s_hi), axis=1)
        self._obs[live] = np.concatenate([qpos[:, 1:], np.clip(qvel, -10, 10)], axis=1)
        reward = forward + healthy * e._healthy_reward - ctrl_cost
        return reward, ~healthy & e._terminate_when_unhealthy

    def close(self) -> None:
        self._physics.close()
        for env in self.envs:
            env.close()

    def __enter__(self) -> EvalEpisodes:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
