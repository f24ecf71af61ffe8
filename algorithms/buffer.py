"""Transition storage held as tensors on the training device.

Batches are drawn by index with a device-side generator, so sampling never crosses
the host/device boundary and never syncs.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor


class Batch(NamedTuple):
    obs: Tensor  # (B, obs_dim)
    act: Tensor  # (B, act_dim)
    rew: Tensor  # (B,)
    next_obs: Tensor  # (B, obs_dim)
    done: Tensor  # (B,) 1.0 where the episode *terminated* (not on time-outs): no bootstrap


class TensorBuffer:
    """A ring buffer of transitions (a fixed dataset is a full buffer that is never added to).

    ``end`` marks the last transition of each episode (termination or time-out), which
    lets algorithms recover episode returns (IQL's reward scaling needs them).
    """

    def __init__(
        self,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ):
        if capacity <= 0:
            raise ValueError(f"buffer capacity must be > 0, got {capacity}")
        self.capacity, self.obs_dim, self.act_dim = int(capacity), obs_dim, act_dim
        self.device = torch.device(device)
        kw = {"device": self.device, "dtype": torch.float32}
        self.obs = torch.zeros(self.capacity, obs_dim, **kw)
        self.act = torch.zeros(self.capacity, act_dim, **kw)
        self.rew = torch.zeros(self.capacity, **kw)
        self.next_obs = torch.zeros(self.capacity, obs_dim, **kw)
        self.done = torch.zeros(self.capacity, **kw)
        self.end = torch.zeros(self.capacity, dtype=torch.bool, device=self.device)
        self.size = 0
        self.ptr = 0
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(seed)

    @classmethod
    def from_arrays(
        cls,
        obs: np.ndarray,
        act: np.ndarray,
        rew: np.ndarray,
        next_obs: np.ndarray,
        done: np.ndarray,
        end: np.ndarray | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> TensorBuffer:
        buf = cls(len(obs), obs.shape[1], act.shape[1], device=device, seed=seed)
        buf.add(obs, act, rew, next_obs, done, end)
        return buf

    def __len__(self) -> int:
        return self.size

    def add(
        self,
        obs: np.ndarray,
        act: np.ndarray,
        rew: np.ndarray,
        next_obs: np.ndarray,
        done: np.ndarray,
        end: np.ndarray | None = None,
    ) -> None:
        """Add a batch of transitions (leading axis = transitions), overwriting the oldest."""
        n = len(obs)
        if n > self.capacity:  # only the newest `capacity` survive anyway
            sl = slice(n - self.capacity, n)
            obs, act, rew, next_obs, done = obs[sl], act[sl], rew[sl], next_obs[sl], done[sl]
            end = None if end is None else end[sl]
            n = self.capacity
        idx = (self.ptr + np.arange(n)) % self.capacity
        idx_t = torch.as_tensor(idx, device=self.device)

        def put(dst: Tensor, src: np.ndarray) -> None:
            dst[idx_t] = torch.as_tensor(np.asarray(src), dtype=dst.dtype, device=self.device)

        put(self.obs, obs)
        put(self.act, act)
        put(self.rew, np.asarray(rew).reshape(n))
        put(self.next_obs, next_obs)
        put(self.done, np.asarray(done).reshape(n))
        put(self.end, np.zeros(n, bool) if end is None else np.asarray(end).reshape(n))
        self.ptr = int((self.ptr + n) % self.capacity)
        self.size = min(self.size + n, self.capacity)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        """``batch_size`` transitions drawn uniformly with replacement, by the buffer's own
        generator unless the caller brings one (H2O's classifiers draw from theirs, so
        their sampling can run on another thread without changing anyone's stream)."""
        if self.size == 0:
            raise RuntimeError("cannot sample from an empty buffer")
        idx = torch.randint(
            0, self.size, (batch_size,), device=self.device, generator=generator or self.generator
        )
        return self.index(idx)

    def index(self, idx: Tensor) -> Batch:
        return Batch(
            self.obs[idx], self.act[idx], self.rew[idx], self.next_obs[idx], self.done[idx]
        )

    def all(self) -> Batch:
        return self.index(torch.arange(self.size, device=self.device))

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of each complete episode (in storage order)."""
        rew = self.rew[: self.size].cpu().numpy().astype(np.float64)
        ends = np.flatnonzero(self.end[: self.size].cpu().numpy())
        if len(ends) == 0:
            return np.array([rew.sum()])
        cums = np.concatenate([[0.0], np.cumsum(rew)])
        starts = np.concatenate([[0], ends[:-1] + 1])
        return cums[ends + 1] - cums[starts]

    def state_dict(self) -> dict:
        n = self.size
        return {
            "capacity": self.capacity,
            "size": n,
            "ptr": self.ptr,
            "data": {
                k: getattr(self, k)[:n].cpu()
                for k in ("obs", "act", "rew", "next_obs", "done", "end")
            },
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        for k, v in state["data"].items():
            getattr(self, k)[:n] = v.to(self.device)
        self.size, self.ptr = n, state["ptr"]
        self.generator.set_state(state["generator"])
