"""Implicit Q-Learning (Kostrikov et al. 2021, "Offline Reinforcement Learning with Implicit
Q-Learning", arXiv:2110.06169).

Offline regime. The step follows the authors' ``learner._update_jit``
(ikostrikov/implicit_q_learning): (1) the value V is fitted by expectile regression to
min_i Q'_i(s, a) of the target critics; (2) the policy by advantage-weighted regression
with weights exp(beta (min_i Q'_i(s, a) - V(s))), V already updated; (3) the critics to
r + gamma (1 - d) V(s'), V already updated; (4) the target critics by Polyak averaging.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor

from gapbench.algorithms.base import Algorithm
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.nets import (
    EnsembleQ,
    GaussianActor,
    StepCounter,
    adam,
    frozen_copy,
    mlp,
    soft_update,
)
from gapbench.algorithms.registry import register


@dataclass
class IQLConfig:
    """IQL hyper-parameters (Gym-MuJoCo locomotion defaults).

    Sources: ikostrikov/implicit_q_learning ``configs/mujoco_config.py`` (Adam 3e-4 for
    actor, critic and value, 256-256 networks, discount 0.99, expectile 0.7, temperature
    3.0, tau 5e-3, no dropout), ``train_offline.py`` (batch 256, 1M steps, locomotion
    rewards scaled by 1000 / (max - min episode return)), ``learner.py`` (twin critics;
    actor lr cosine-decayed to 0 over the run's ``max_steps`` updates, 1M there: here over
    the run's own number of updates, which the harness passes to ``set_total_updates``),
    ``actor.py`` (exp-advantage weights clipped at 100), ``policy.py`` (Gaussian with
    tanh mean, state-independent log-std in [-5, 2]; evaluated at its mean,
    ``temperature=0``).

    CORL's ``algorithms/offline/iql.py`` (the PyTorch port ``tests/test_authors_iql.py``
    compares one step with) shares these values but departs from the authors in: (1) the
    advantage weights and TD target from V before its step (authors and gapbench: the
    stepped V); (2) the critics' losses averaged (authors and gapbench: summed); (3)
    states normalised by the dataset's mean/std (authors and gapbench: none); (4) rewards
    not normalised by default (authors and gapbench: x 1000 / (max - min episode
    return)); (5) log-std clamped to [-20, 2] (authors and gapbench: [-5, 2]); (6) the
    cosine schedule from PyTorch's ``CosineAnnealingLR``, which rises again after
    ``max_steps`` (authors and gapbench: optax's, held at 0). gapbench follows CORL, not
    the authors, in one place: PyTorch's default initialisation (authors: orthogonal,
    scale sqrt 2).
    """

    batch_size: int = 256
    discount: float = 0.99
    tau: float = 5e-3
    expectile: float = 0.7  # the expectile tau of the value loss
    temperature: float = 3.0  # beta, the inverse temperature of the advantage weights
    max_weight: float = 100.0  # exp(beta A) clipped from above
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    value_lr: float = 3e-4
    # cosine decay of the actor lr to 0 over this many updates; 0: off; None: over the
    # run's own number of updates (the authors' max_steps), 1M if never told
    actor_lr_decay_steps: int | None = None
    hidden: tuple[int, ...] = (256, 256)
    n_critics: int = 2
    normalize_reward: bool = True  # scale rewards by 1000 / (max - min episode return)


DEFAULT_MAX_STEPS = 1_000_000  # the authors' train_offline.py max_steps


def expectile_loss(diff: Tensor, expectile: float) -> Tensor:
    """|tau - 1(u < 0)| u^2 elementwise, u = Q - V (IQL Eq. 5; the authors' ``loss``)."""
    weight = torch.where(diff > 0, expectile, 1.0 - expectile)
    return weight * diff.pow(2)


def cosine_decay(step: int, decay_steps: int) -> float:
    """optax.cosine_decay_schedule's factor: 0.5 (1 + cos(pi min(step, T) / T)); 1 if T=0."""
    if decay_steps <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, decay_steps) / decay_steps))


@register
class IQL(Algorithm):
    name = "iql"
    regime = "offline"
    Config = IQLConfig
    # Tuning ranges (gapbench.benchmark.tuning): the IQL paper's expectile 0.7 (locomotion) / 0.9
    # (AntMaze) and inverse temperature 3 / 10 (0.5 Kitchen/Adroit), lrs around 3e-4.
    search_space = {
        "expectile": {"type": "categorical", "choices": [0.5, 0.6, 0.7, 0.8, 0.9]},
        "temperature": {"type": "categorical", "choices": [0.5, 1.0, 3.0, 10.0]},
        "actor_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "critic_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
    }

    def __init__(self, obs_dim, act_dim, config=None, seed=0, device="cpu"):
        super().__init__(obs_dim, act_dim, config, seed, device)
        c = self.config
        self.actor = GaussianActor(obs_dim, act_dim, c.hidden).to(self.device)
        self.critic = EnsembleQ(obs_dim, act_dim, c.n_critics, c.hidden).to(self.device)
        self.target_critic = frozen_copy(self.critic)
        self.value = mlp(obs_dim, 1, c.hidden).to(self.device)
        self.actor_opt = adam(self.actor.parameters(), c.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), c.critic_lr)
        self.value_opt = adam(self.value.parameters(), c.value_lr)
        self.steps = StepCounter()
        self.reward_scale = 1.0
        self.decay_steps = (
            DEFAULT_MAX_STEPS if c.actor_lr_decay_steps is None else c.actor_lr_decay_steps
        )

    def set_total_updates(self, n: int) -> None:
        """The run's number of updates: the actor-lr schedule's horizon unless the config
        fixes one (the authors decay over their run's max_steps)."""
        if self.config.actor_lr_decay_steps is None:
            self.decay_steps = int(n)

    # -- data --------------------------------------------------------------------------
    def setup(self, dataset: TensorBuffer | None) -> None:
        """Locomotion reward scaling (train_offline.normalize): 1000 / (max - min) of the
        dataset's episode returns, applied to sampled rewards (the dataset is untouched)."""
        self.reward_scale = 1.0
        if dataset is None or not self.config.normalize_reward:
            return
        self.reward_scale = reward_scale_from_returns(dataset.episode_returns())

    def prepare(self, batch: Batch) -> Batch:
        if self.reward_scale == 1.0:
            return batch
        return batch._replace(rew=batch.rew * self.reward_scale)

    # -- losses ------------------------------------------------------------------------
    def v(self, obs: Tensor) -> Tensor:
        return self.value(obs).squeeze(-1)

    @torch.no_grad()
    def target_q(self, batch: Batch) -> Tensor:
        """min_i Q'_i(s, a) of the target critics at the data actions."""
        return self.target_critic(batch.obs, batch.act).min(0).values

    def value_loss(self, batch: Batch, q_t: Tensor) -> tuple[Tensor, Tensor]:
        v = self.v(batch.obs)
        return expectile_loss(q_t - v, self.config.expectile).mean(), v

    def actor_critic_losses(
        self, batch: Batch, q_t: Tensor, v: Tensor, next_v: Tensor
    ) -> dict[str, Tensor]:
        """The advantage-weighted actor loss -E[min(exp(beta (Q' - V)), 100) log pi(a|s)]
        and the critic loss sum_i E[(Q_i(s, a) - r - gamma (1 - d) V(s'))^2] (the
        authors' ``update_q``: no 1/2, summed over the critics), for given V(s), V(s')."""
        c = self.config
        adv = q_t - v
        weight = torch.exp(adv * c.temperature).clamp(max=c.max_weight)
        actor_loss = -(weight * self.actor.log_prob(batch.obs, batch.act)).mean()
        target = batch.rew + c.discount * (1.0 - batch.done) * next_v
        q = self.critic(batch.obs, batch.act)
        critic_loss = (q - target).pow(2).mean(1).sum()
        return {
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "adv_mean": adv.mean(),
            "weight_mean": weight.mean(),
            "q_mean": q.mean().detach(),
        }

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """Every loss of one IQL step on ``batch`` from the current parameters. (``update``
        forms the actor and critic losses after the value step, as the authors' learner
        does; ``tests/test_authors_iql.py``.)"""
        q_t = self.target_q(batch)
        value_loss, v = self.value_loss(batch, q_t)
        with torch.no_grad():
            next_v = self.v(batch.next_obs)
        out = self.actor_critic_losses(batch, q_t, v.detach(), next_v)
        return {"value_loss": value_loss, **out, "v_mean": v.mean().detach()}

    def update(self, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None):
        """The reference's sequential step. The value step must come first (actor and
        critic losses read the updated V); the actor and critic losses then touch
        disjoint parameters, so one backward pass of their sum is exact."""
        c = self.config
        batch = self.prepare(dataset.sample(c.batch_size))
        q_t = self.target_q(batch)

        value_loss, v_old = self.value_loss(batch, q_t)
        self.value_opt.zero_grad(set_to_none=True)
        value_loss.sum().backward()  # a no-op sum here; seeds trained as a batch sum theirs
        self.value_opt.step()

        with torch.no_grad():  # dims counted from the end: batched seeds come first (seeds.py)
            obs_pair = torch.cat([batch.obs, batch.next_obs], dim=-2)
            v, next_v = self.v(obs_pair).split(batch.obs.shape[-2], dim=-1)
        out = self.actor_critic_losses(batch, q_t, v, next_v)
        for group in self.actor_opt.param_groups:
            group["lr"] = c.actor_lr * cosine_decay(self.steps.count, self.decay_steps)
        self.actor_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        (out["actor_loss"] + out["critic_loss"]).sum().backward()
        self.actor_opt.step()
        self.critic_opt.step()
        soft_update(self.target_critic, self.critic, c.tau)
        self.steps.count += 1
        metrics = {"value_loss": value_loss, **out, "v_mean": v_old.mean(-1)}
        return {k: t.detach() for k, t in metrics.items()}


def reward_scale_from_returns(returns) -> float:
    """1000 / (max - min episode return); 1.0 (with a warning) if that range is 0."""
    returns = [float(r) for r in returns]
    spread = max(returns) - min(returns) if returns else 0.0
    if not spread > 0:
        warnings.warn(
            "IQL reward normalisation needs episodes with different returns; rewards left unscaled",
            stacklevel=2,
        )
        return 1.0
    return 1000.0 / spread
