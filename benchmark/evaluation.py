"""Evaluation on the real system: N deterministic episodes stepped together."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from gapbench import gap_envs
from gapbench.gap_envs.batched import EvalEpisodes


def make_eval_env(task: str, real_gap: str, episodes: int) -> EvalEpisodes:
    """The episodes' physics runs on as many threads as torch may use here (the executor
    sets that to the worker's share of the cores); results do not depend on it."""
    return EvalEpisodes(task, real_gap, num_envs=episodes, threads=torch.get_num_threads())


def evaluate(env, policy: Callable[[np.ndarray], np.ndarray], seed: int) -> np.ndarray:
    """Return of the first episode of each sub-env, all stepped together with one batched
    policy call per step (``env``: an ``EvalEpisodes`` or any Gymnasium vector env). The
    same ``seed`` gives the same initial states every time, so successive evaluations of
    a run are comparable."""
    obs, _ = env.reset(seed=seed)
    n = env.num_envs
    returns = np.zeros(n)
    running = np.ones(n, dtype=bool)
    # A policy call on a few rows gains nothing from intra-op threads, and idle OpenMP
    # threads keep spinning on the cores that the physics threads need.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        while running.any():
            obs, rew, term, trunc, _ = env.step(policy(obs))
            returns += np.where(running, rew, 0.0)
            running &= ~(term | trunc)
    finally:
        torch.set_num_threads(threads)
    return returns


def evaluate_sequential(
    task: str, real_gap: str, policy: Callable[[np.ndarray], np.ndarray], episodes: int, seed: int
) -> np.ndarray:
    """The same episodes one after another with unbatched policy calls: the baseline that
    the vector evaluation is benchmarked against."""
    env = gap_envs.make(task, real_gap)
    returns = np.zeros(episodes)
    for i in range(episodes):
        obs, _ = env.reset(seed=seed + i)
        done = False
        while not done:
            obs, rew, term, trunc, _ = env.step(policy(obs[None])[0])
            returns[i] += rew
            done = term or trunc
    env.close()
    return returns
