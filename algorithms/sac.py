"""Soft Actor-Critic (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications").

Online regime: learns from the replay of its own interaction, with the simulator
(``online``) or with the real system itself (``oracle``, the upper reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call

from gapbench.algorithms.base import Algorithm, ConfigError
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.nets import EnsembleQ, TanhGaussianActor, adam, frozen_copy, soft_update
from gapbench.algorithms.registry import register


@dataclass
class SACConfig:
    """SAC hyper-parameters.

    Defaults: Haarnoja et al. 2018 (arXiv:1812.05905), Table 1 — Adam 3e-4, batch 256,
    discount 0.99, tau 5e-3, 256-256 networks, target entropy -|A|, entropy in the
    TD target. Network details (learnable log-std affine, output gain 1e-2) follow
    rail-berkeley/SimpleSAC, the code H2O builds on.
    """

    batch_size: int = 256
    discount: float = 0.99
    tau: float = 5e-3
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    hidden: tuple[int, ...] = (256, 256)
    n_critics: int = 2
    auto_alpha: bool = True
    init_alpha: float = 1.0
    target_entropy: float | None = None  # None: -|A|
    backup_entropy: bool = True  # the paper's soft TD target; SimpleSAC/H2O turn it off


def sac_policy_terms(
    actor: TanhGaussianActor,
    critic: EnsembleQ,
    log_alpha: Tensor,
    obs: Tensor,
    target_entropy: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """Actor loss E[alpha log pi(a|s) - min_i Q_i(s, a)], a ~ pi (Eq. 7), and the
    temperature loss -E[log alpha (log pi + H_target)] (Eq. 18). Critic parameters are
    detached here so one backward pass can serve every loss without the actor loss
    leaking gradient into the critics."""
    new_act, log_pi = actor(obs)
    params = {k: v.detach() for k, v in critic.named_parameters()}
    q_new = functional_call(critic, params, (obs, new_act)).min(0).values
    alpha = log_alpha.exp().detach()
    actor_loss = (alpha * log_pi - q_new).mean()
    alpha_loss = -(log_alpha * (log_pi.detach() + target_entropy)).mean()
    return actor_loss, alpha_loss, log_pi


@torch.no_grad()
def sac_td_target(
    actor: TanhGaussianActor,
    target_critic: EnsembleQ,
    batch: Batch,
    discount: float,
    alpha: Tensor | None,
) -> Tensor:
    """y = r + gamma (1 - d) (min_i Q'_i(s', a') - alpha log pi(a'|s')), a' ~ pi(s') (Eq. 3).
    ``alpha=None`` drops the entropy term (SimpleSAC's backup_entropy=False)."""
    next_act, next_log_pi = actor(batch.next_obs)
    next_q = target_critic(batch.next_obs, next_act).min(0).values
    if alpha is not None:
        next_q = next_q - alpha * next_log_pi
    return batch.rew + discount * (1.0 - batch.done) * next_q


def init_actor_critic(algo: Algorithm, c, target_entropy: float, alpha_lr: float) -> None:
    """The SAC parts that SAC, CQL, H2O and DARC share, set on ``algo``: the tanh-Gaussian
    actor, twin critics as one batched ensemble (output gain 1e-2) with a frozen target
    copy, the learnable log-temperature, and an Adam optimizer for each."""
    if not c.init_alpha > 0:
        raise ConfigError(f"hyper-parameter 'init_alpha' must be > 0, got {c.init_alpha!r}")
    device = algo.device
    algo.actor = TanhGaussianActor(algo.obs_dim, algo.act_dim, c.hidden).to(device)
    algo.critic = EnsembleQ(algo.obs_dim, algo.act_dim, c.n_critics, c.hidden, last_gain=1e-2)
    algo.critic.to(device)
    algo.target_critic = frozen_copy(algo.critic)
    algo.log_alpha = torch.tensor(math.log(c.init_alpha), device=device, requires_grad=True)
    algo.target_entropy = target_entropy
    algo.actor_opt = adam(algo.actor.parameters(), c.actor_lr)
    algo.critic_opt = adam(algo.critic.parameters(), c.critic_lr)
    algo.alpha_opt = adam([algo.log_alpha], alpha_lr)


@register
class SAC(Algorithm):
    name = "sac"
    regime = "online"
    Config = SACConfig
    # Tuning ranges (gapbench.benchmark.tuning): around the SAC paper's 3e-4 / tau 5e-3 /
    # gamma 0.99 / batch 256, spanning the rl-baselines3-zoo SAC sweep.
    search_space = {
        "actor_lr": {"type": "float", "low": 3e-5, "high": 1e-3, "log": True},
        "critic_lr": {"type": "float", "low": 3e-5, "high": 1e-3, "log": True},
        "tau": {"type": "categorical", "choices": [0.001, 0.005, 0.01, 0.02]},
        "discount": {"type": "categorical", "choices": [0.98, 0.99, 0.995]},
        "batch_size": {"type": "categorical", "choices": [128, 256, 512]},
    }

    def __init__(self, obs_dim, act_dim, config=None, seed=0, device="cpu"):
        super().__init__(obs_dim, act_dim, config, seed, device)
        c = self.config
        target_entropy = -float(act_dim) if c.target_entropy is None else c.target_entropy
        init_actor_critic(self, c, target_entropy, c.alpha_lr)

    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """Every loss of one SAC step on ``batch`` (all from the pre-step parameters)."""
        c = self.config
        actor_loss, alpha_loss, log_pi = sac_policy_terms(
            self.actor, self.critic, self.log_alpha, batch.obs, self.target_entropy
        )
        alpha = self.log_alpha.exp().detach()
        target = sac_td_target(
            self.actor, self.target_critic, batch, c.discount, alpha if c.backup_entropy else None
        )
        q = self.critic(batch.obs, batch.act)  # (n_critics, B)
        # Eq. 5 as the reference code writes it: MSE per critic (no 1/2), summed over critics.
        critic_loss = (q - target).pow(2).mean(1).sum()
        return {
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "alpha_loss": alpha_loss,
            "alpha": alpha,
            "q_mean": q.mean().detach(),
            "log_pi": log_pi.mean().detach(),
        }

    def update(self, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None):
        batch = replay.sample(self.config.batch_size)
        out = self.losses(batch)
        loss = out["actor_loss"] + out["critic_loss"]
        if self.config.auto_alpha:
            loss = loss + out["alpha_loss"]
        for opt in (self.actor_opt, self.critic_opt, self.alpha_opt):
            opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # a no-op sum here; seeds trained as a batch sum theirs (seeds.py)
        self.actor_opt.step()
        self.critic_opt.step()
        if self.config.auto_alpha:
            self.alpha_opt.step()
        soft_update(self.target_critic, self.critic, self.config.tau)
        return {k: v.detach() for k, v in out.items()}
