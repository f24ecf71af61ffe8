"""TD3+BC (Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning",
arXiv:2106.06860).

Offline regime. TD3 (Fujimoto et al. 2018) with a behaviour-cloning term in the actor
loss and states normalised by the dataset's statistics. The step follows the authors'
``TD3_BC.train`` (sfujim/TD3_BC):

1. critics: y = r + gamma (1 - d) min_i Q'_i(s', clip(pi'(s') + eps, -1, 1)), with
   target-policy smoothing eps = clip(N(0, sigma^2), -c, c); loss sum_i E[(Q_i(s, a) - y)^2];
2. every ``policy_delay``-th update, the actor (Eq. 3): maximise
   lambda E[Q_1(s, pi(s))] - E[(pi(s) - a)^2] with lambda = alpha / E|Q_1(s, pi(s))|
   (Eq. 4), lambda held constant (detached) in the gradient, Q_1 from the stepped critic;
   then the target actor and critics by Polyak averaging.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gapbench.algorithms.base import Algorithm, ConfigError, accumulate
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.nets import (
    DeterministicActor,
    EnsembleQ,
    ObsNormalizer,
    StepCounter,
    adam,
    frozen_copy,
    soft_update,
)
from gapbench.algorithms.registry import register


@dataclass
class TD3BCConfig:
    """TD3+BC hyper-parameters (D4RL Gym-MuJoCo defaults).

    Sources: sfujim/TD3_BC ``main.py`` (alpha 2.5, states normalised, policy noise 0.2 and
    noise clip 0.5 times the action bound 1, policy delay ``policy_freq`` 2, discount 0.99,
    tau 5e-3, batch 256, 1M updates), ``TD3_BC.py`` (256-256 ReLU actor with tanh output,
    twin 256-256 critics, Adam 3e-4 for both), ``utils.normalize_states`` (per-dimension
    mean and population std + 1e-3 of the dataset's states, applied to s and s' in
    training and to the observation at evaluation).

    CORL's ``algorithms/offline/td3_bc.py`` (the PyTorch port ``tests/test_authors_td3bc.py``
    compares one step with) has the same defaults and step. It departs from the authors
    only in form: (1) two critic modules with an Adam each (authors: one module holding
    both, one Adam; per-parameter Adam makes these the same); (2) an optional reward
    normalisation, off by default (authors: none; gapbench: none). gapbench departs from
    both in form only: (a) the twin critics are one batched ensemble, and the actor's Q_1
    is its first member; (b) state statistics in float64 (equal to float32 rounding).
    """

    batch_size: int = 256
    discount: float = 0.99
    tau: float = 5e-3
    alpha: float = 2.5  # lambda = alpha / mean |Q|: the weight of Q against the BC term
    policy_noise: float = 0.2  # sigma of the target-policy smoothing noise
    noise_clip: float = 0.5  # c: the smoothing noise clipped to [-c, c]
    policy_delay: int = 2  # actor and targets updated every this many critic updates
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    hidden: tuple[int, ...] = (256, 256)
    n_critics: int = 2
    normalize_states: bool = True
    state_norm_eps: float = 1e-3  # added to the per-dimension std

    def __post_init__(self) -> None:
        if self.policy_delay < 1:
            raise ConfigError(
                f"hyper-parameter 'policy_delay' must be an integer >= 1, got {self.policy_delay}"
            )


ACTOR_METRICS = ("actor_loss", "bc_loss", "lmbda")


@register
class TD3BC(Algorithm):
    name = "td3bc"
    regime = "offline"
    Config = TD3BCConfig
    # Tuning ranges (gapbench.benchmark.tuning): the paper's sweep of alpha (Fig. 3 / Table
    # 5: 1 to 4) around its 2.5, lrs around the authors' 3e-4.
    search_space = {
        "alpha": {"type": "float", "low": 1.0, "high": 5.0},
        "actor_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "critic_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
    }

    def __init__(self, obs_dim, act_dim, config=None, seed=0, device="cpu"):
        super().__init__(obs_dim, act_dim, config, seed, device)
        c = self.config
        self.obs_norm = ObsNormalizer(obs_dim).to(self.device)  # identity until setup()
        self.actor = DeterministicActor(obs_dim, act_dim, c.hidden, self.obs_norm).to(self.device)
        # its copy of obs_norm is never read: forward takes states already normalised
        self.target_actor = frozen_copy(self.actor)
        self.critic = EnsembleQ(obs_dim, act_dim, c.n_critics, c.hidden).to(self.device)
        self.target_critic = frozen_copy(self.critic)
        self.actor_opt = adam(self.actor.parameters(), c.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), c.critic_lr)
        self.steps = StepCounter()

    # -- data --------------------------------------------------------------------------
    def setup(self, dataset: TensorBuffer | None) -> None:
        """The dataset's state statistics; they live in the actor (and its checkpoints)."""
        if dataset is None:
            raise ValueError("TD3+BC is an offline algorithm: it needs the dataset")
        if self.config.normalize_states:
            self.obs_norm.fit(dataset.obs[: dataset.size], self.config.state_norm_eps)

    def prepare(self, batch: Batch) -> Batch:
        """s and s' normalised with the dataset's statistics (``normalize_states``)."""
        return batch._replace(obs=self.obs_norm(batch.obs), next_obs=self.obs_norm(batch.next_obs))

    # -- losses ------------------------------------------------------------------------
    @torch.no_grad()
    def td_target(self, batch: Batch, noise: Tensor | None = None) -> Tensor:
        """y = r + gamma (1 - d) min_i Q'_i(s', a'), a' = clip(pi'(s') + eps, -1, 1) with
        eps = clip(sigma z, -c, c), z ~ N(0, I) (TD3's target-policy smoothing)."""
        c = self.config
        if noise is None:
            noise = torch.randn_like(batch.act)
        eps = (noise * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)
        next_act = (self.target_actor(batch.next_obs) + eps).clamp(-1.0, 1.0)
        next_q = self.target_critic(batch.next_obs, next_act).min(0).values
        return batch.rew + c.discount * (1.0 - batch.done) * next_q

    def critic_loss(self, batch: Batch, target: Tensor) -> tuple[Tensor, Tensor]:
        """sum_i E[(Q_i(s, a) - y)^2] (the authors sum their two critics' MSEs)."""
        q = self.critic(batch.obs, batch.act)
        return (q - target).pow(2).mean(1).sum(), q

    def q1_frozen(self, obs: Tensor, act: Tensor) -> Tensor:
        """Q_1(s, a), the ensemble's first member alone (the authors' ``Critic.Q1``), with
        its parameters detached: the actor's backward pass computes no critic gradients
        (the authors' leaves them to be zeroed) and no pass through Q_2."""
        x = torch.cat([obs, act], dim=-1)
        layers = self.critic.net.layers
        for i, layer in enumerate(layers):
            x = torch.addmm(layer.bias[0].detach(), x, layer.weight[0].detach())
            if i < len(layers) - 1:
                x = torch.relu(x)
        return x.squeeze(-1)

    def actor_loss(self, batch: Batch) -> dict[str, Tensor]:
        """-lambda E[Q_1(s, pi(s))] + E[(pi(s) - a)^2], lambda = alpha / E|Q_1(s, pi(s))|
        detached (Eqs. 3-4)."""
        pi = self.actor(batch.obs)
        q = self.q1_frozen(batch.obs, pi)
        lmbda = self.config.alpha / q.abs().mean().detach()
        bc_loss = F.mse_loss(pi, batch.act)
        return {"actor_loss": -lmbda * q.mean() + bc_loss, "bc_loss": bc_loss, "lmbda": lmbda}

    # -- one update --------------------------------------------------------------------
    def update(self, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None):
        """A critic step; every ``policy_delay``-th update also an actor step (on the same
        batch, with the stepped critic) and the target updates. Actor metrics come only
        from the updates that make an actor step."""
        c = self.config
        batch = self.prepare(dataset.sample(c.batch_size))
        critic_loss, q = self.critic_loss(batch, self.td_target(batch))
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.steps.count += 1  # before the test, as the authors' total_it: updates 2, 4, ...
        metrics = {"critic_loss": critic_loss.detach(), "q_mean": q.mean().detach()}
        if self.steps.count % c.policy_delay:
            return metrics

        out = self.actor_loss(batch)
        self.actor_opt.zero_grad(set_to_none=True)
        out["actor_loss"].backward()
        self.actor_opt.step()
        soft_update(self.target_critic, self.critic, c.tau)
        soft_update(self.target_actor, self.actor, c.tau)
        return metrics | {k: v.detach() for k, v in out.items()}

    def update_many(
        self, n: int, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None
    ) -> dict[str, Tensor]:
        """``n`` updates. The harness divides each summed metric by ``n``: the actor
        metrics, made on 1 update in ``policy_delay``, are rescaled so that this gives
        their mean over the actor steps."""
        sums: dict[str, Tensor] = {}
        actor_steps = 0
        for _ in range(n):
            metrics = self.update(dataset=dataset)
            actor_steps += "actor_loss" in metrics
            accumulate(sums, metrics)
        if actor_steps:
            for key in ACTOR_METRICS:
                sums[key] = sums[key] * (n / actor_steps)
        return sums
