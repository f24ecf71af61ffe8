"""Behaviour cloning: the offline anchor of every offline-RL table.

Offline regime. A deterministic policy a = tanh(f(s)) regresses the dataset's actions,
min_pi E_(s, a)~D [(pi(s) - a)^2] (mean squared error over the batch and the action
dimensions) -- TD3+BC's actor loss without its Q term (Fujimoto & Gu 2021, Eq. 3 with
lambda = 0). States are normalised by the dataset's mean and std, as TD3+BC does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from gapbench.algorithms.base import Algorithm
from gapbench.algorithms.buffer import TensorBuffer
from gapbench.algorithms.nets import DeterministicActor, ObsNormalizer, StepCounter, adam
from gapbench.algorithms.registry import register


@dataclass
class BCConfig:
    """BC hyper-parameters.

    Sources: CORL's ``algorithms/offline/any_percent_bc.py`` (tinkoff-ai/CORL, the BC
    baseline of its D4RL tables): 256-256 ReLU actor with a tanh output, Adam 3e-4, batch
    256, states normalised by the dataset's mean and population std + 1e-3, 1M updates.
    The same network, optimiser, batch and normalisation as the TD3+BC authors' actor
    (sfujim/TD3_BC ``TD3_BC.py``, ``utils.normalize_states``).

    Where CORL's script departs, and what gapbench does (``tests/test_authors_bc.py``):
    (1) it keeps only the best ``frac`` = 10% of trajectories by discounted return before
    training ("10% BC"; with ``frac=1`` it is plain BC); gapbench: plain BC on the whole
    dataset, the "BC" column of the TD3+BC and IQL papers' tables. (2) its state statistics
    come from the kept trajectories; gapbench: from the whole dataset. (3) statistics in
    float32; gapbench: float64 (equal to float32 rounding).
    """

    batch_size: int = 256
    actor_lr: float = 3e-4
    hidden: tuple[int, ...] = (256, 256)
    normalize_states: bool = True
    state_norm_eps: float = 1e-3  # added to the per-dimension std


@register
class BC(Algorithm):
    name = "bc"
    regime = "offline"
    Config = BCConfig
    # Tuning ranges (gapbench.benchmark.tuning): around CORL's / the TD3+BC authors' Adam
    # 3e-4 and batch 256.
    search_space = {
        "actor_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "batch_size": {"type": "categorical", "choices": [128, 256, 512]},
    }

    def __init__(self, obs_dim, act_dim, config=None, seed=0, device="cpu"):
        super().__init__(obs_dim, act_dim, config, seed, device)
        c = self.config
        self.obs_norm = ObsNormalizer(obs_dim).to(self.device)  # identity until setup()
        self.actor = DeterministicActor(obs_dim, act_dim, c.hidden, self.obs_norm).to(self.device)
        self.actor_opt = adam(self.actor.parameters(), c.actor_lr)
        self.steps = StepCounter()

    def setup(self, dataset: TensorBuffer | None) -> None:
        """The dataset's state statistics; they live in the actor (and its checkpoints)."""
        if dataset is None:
            raise ValueError("BC is an offline algorithm: it needs the dataset")
        if self.config.normalize_states:
            self.obs_norm.fit(dataset.obs[: dataset.size], self.config.state_norm_eps)

    def loss(self, obs: Tensor, act: Tensor) -> Tensor:
        """E[(pi(s) - a)^2] on normalised states."""
        return F.mse_loss(self.actor(self.obs_norm(obs)), act)

    def update(self, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None):
        batch = dataset.sample(self.config.batch_size)
        loss = self.loss(batch.obs, batch.act)
        self.actor_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.actor_opt.step()
        self.steps.count += 1
        return {"actor_loss": loss.detach()}
