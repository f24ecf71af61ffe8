"""Conservative Q-Learning (Kumar et al. 2020, "Conservative Q-Learning for Offline
Reinforcement Learning", arXiv:2006.04779), the CQL(H) variant on top of SAC.

Offline regime: learns from the fixed dataset only. The step follows SimpleSAC's
``ConservativeSAC.train`` (young-geng/CQL; ``tests/test_authors_cql.py`` checks one step
against it): every loss is formed from the pre-step parameters, then temperature, policy
and critics are stepped in turn, which one combined backward pass reproduces exactly (see
``update``). CORL's ``cql.py`` is a port of the same code, not compared here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from gapbench.algorithms.base import Algorithm
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.nets import (
    StepCounter,
    TanhGaussianActor,
    adam,
    soft_update,
    tanh_gaussian_log_prob,
    uniform_noise,
)
from gapbench.algorithms.registry import register
from gapbench.algorithms.sac import init_actor_critic, sac_policy_terms, sac_td_target


@dataclass
class CQLConfig:
    """CQL hyper-parameters (Gym-MuJoCo locomotion defaults).

    Sources: the CQL step and its defaults follow young-geng/CQL
    ``SimpleSAC/conservative_sac.py`` (``get_default_config``) and
    ``conservative_sac_main.py``: qf lr 3e-4, batch 256, discount 0.99, tau 5e-3
    (target update every step), 256-256 networks, target entropy -|A|, auto-tuned alpha
    starting at 1 with its optimizer at the policy lr, ``backup_entropy`` off,
    ``cql_n_actions`` 10, ``cql_importance_sample`` on, ``cql_temp`` 1,
    ``cql_min_q_weight`` 5, ``cql_lagrange`` off with ``cql_target_action_gap`` 1 and
    log alpha' starting at 1 (its optimizer at the qf lr), no max-target backup, no
    clipping of the CQL difference, no BC warm start (``bc_epochs=0``), dataset actions
    clipped to +-0.999 (``clip_action``).

    ``actor_lr`` 1e-4 is the authors' Gym-MuJoCo recommendation (aviralkumar2907/CQL
    README: ``--policy_lr=1e-4 --min_q_weight=5.0 --lagrange_thresh=-1.0``); SimpleSAC's
    default is 3e-4 and the paper/CORL's locomotion configs use 3e-5. The authors' rlkit
    code also defaults to a 40k-step BC warm start (``policy_eval_start``), which they
    note makes little difference and SimpleSAC/CORL leave off: ``bc_steps`` 0.
    """

    batch_size: int = 256
    discount: float = 0.99
    tau: float = 5e-3
    actor_lr: float = 1e-4
    critic_lr: float = 3e-4
    alpha_lr: float | None = None  # None: actor_lr, as SimpleSAC
    hidden: tuple[int, ...] = (256, 256)
    n_critics: int = 2
    auto_alpha: bool = True
    init_alpha: float = 1.0
    target_entropy: float | None = None  # None: -|A|
    backup_entropy: bool = False
    clip_action: float = 0.999  # dataset actions clipped to this (SimpleSAC); 0 disables
    bc_steps: int = 0  # policy trained by behaviour cloning for the first bc_steps updates
    cql_n_actions: int = 10
    cql_importance_sample: bool = True
    cql_temp: float = 1.0
    cql_min_q_weight: float = 5.0
    cql_lagrange: bool = False
    cql_target_action_gap: float = 1.0
    cql_init_log_alpha_prime: float = 1.0
    alpha_prime_lr: float | None = None  # None: critic_lr, as SimpleSAC
    cql_max_target_backup: bool = False
    cql_clip_diff_min: float | None = None  # None: no clipping (SimpleSAC's -inf)
    cql_clip_diff_max: float | None = None  # None: no clipping (SimpleSAC's +inf)


ALPHA_PRIME_MAX = 1e6  # SimpleSAC clamps exp(log alpha') to [0, 1e6]


def tanh_gaussian_data_log_prob(actor: TanhGaussianActor, obs: Tensor, act: Tensor) -> Tensor:
    """log pi(a|s) of given actions in (-1, 1) under the tanh-Gaussian policy (for BC)."""
    mean, log_std = actor.dist_params(obs)
    return tanh_gaussian_log_prob(torch.atanh(act), mean, log_std)


@register
class CQL(Algorithm):
    name = "cql"
    regime = "offline"
    Config = CQLConfig
    # Tuning ranges (gapbench.benchmark.tuning): the CQL paper's alpha (min-Q weight) values 1/5/10
    # (and 2, as CORL sweeps), its policy lr 1e-4 vs 3e-5 and critic lr 3e-4.
    search_space = {
        "cql_min_q_weight": {"type": "categorical", "choices": [1.0, 2.0, 5.0, 10.0]},
        "actor_lr": {"type": "float", "low": 1e-5, "high": 3e-4, "log": True},
        "critic_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "cql_temp": {"type": "categorical", "choices": [0.5, 1.0, 2.0]},
    }

    def __init__(self, obs_dim, act_dim, config=None, seed=0, device="cpu"):
        super().__init__(obs_dim, act_dim, config, seed, device)
        c = self.config
        target_entropy = -float(act_dim) if c.target_entropy is None else c.target_entropy
        alpha_lr = c.actor_lr if c.alpha_lr is None else c.alpha_lr  # SimpleSAC: policy lr
        init_actor_critic(self, c, target_entropy, alpha_lr)
        self.log_alpha_prime = torch.tensor(
            float(c.cql_init_log_alpha_prime), device=self.device, requires_grad=True
        )
        alpha_prime_lr = c.critic_lr if c.alpha_prime_lr is None else c.alpha_prime_lr
        self.alpha_prime_opt = adam([self.log_alpha_prime], alpha_prime_lr)
        self.steps = StepCounter()
        # log of the uniform density on [-1, 1]^|A|: log(0.5^|A|)
        self.random_log_density = act_dim * math.log(0.5)

    # -- pieces ------------------------------------------------------------------------
    def prepare(self, batch: Batch) -> Batch:
        """SimpleSAC clips dataset actions to +-clip_action (keeps atanh finite for BC)."""
        c = self.config
        if c.clip_action <= 0:
            return batch
        return batch._replace(act=batch.act.clamp(-c.clip_action, c.clip_action))

    @torch.no_grad()
    def cql_sample(self, obs: Tensor, next_obs: Tensor) -> dict[str, Tensor]:
        """The actions the conservative term integrates over, ``n`` per state, laid out as
        (B * n, ·) with rows b*n .. b*n+n-1 belonging to state b: uniform random actions,
        policy actions at s and policy actions at s' (all evaluated later at s), with
        their log-probabilities. One actor call serves both policy sets."""
        n = self.config.cql_n_actions
        rows = obs.shape[0] * n
        rand = uniform_noise((rows, self.act_dim), -1.0, 1.0, like=obs)
        both = torch.cat([obs.repeat_interleave(n, 0), next_obs.repeat_interleave(n, 0)])
        act, log_pi = self.actor(both)
        cur, nxt = act.split(rows)
        cur_log_pi, next_log_pi = log_pi.split(rows)
        return {
            "rand": rand,
            "cur": cur,
            "cur_log_pi": cur_log_pi,
            "next": nxt,
            "next_log_pi": next_log_pi,
        }

    @torch.no_grad()
    def max_backup_target(self, batch: Batch, alpha: Tensor | None) -> Tensor:
        """y = r + gamma (1 - d) max_j min_i Q'_i(s', a'_j), a'_j ~ pi(s'), j < n
        (SimpleSAC's cql_max_target_backup), minus alpha log pi(a'_j*) if alpha is given."""
        n = self.config.cql_n_actions
        b = batch.next_obs.shape[0]
        next_act, next_log_pi = self.actor(batch.next_obs.repeat_interleave(n, 0))
        q = self.target_critic(batch.next_obs.repeat_interleave(n, 0), next_act)
        q = q.min(0).values.view(b, n)
        next_q, idx = q.max(1)
        if alpha is not None:
            next_q = next_q - alpha * next_log_pi.view(b, n).gather(1, idx[:, None]).squeeze(1)
        return batch.rew + self.config.discount * (1.0 - batch.done) * next_q

    def alpha_prime(self) -> Tensor:
        return self.log_alpha_prime.exp().clamp(0.0, ALPHA_PRIME_MAX)

    # -- losses ------------------------------------------------------------------------
    def losses(self, batch: Batch) -> dict[str, Tensor]:
        """Every loss of one CQL step on ``batch`` (all from the pre-step parameters)."""
        c = self.config
        b, n = batch.obs.shape[0], c.cql_n_actions

        # Policy and temperature: SAC's (critic detached), or BC during the warm start.
        actor_loss, alpha_loss, log_pi = sac_policy_terms(
            self.actor, self.critic, self.log_alpha, batch.obs, self.target_entropy
        )
        alpha = self.log_alpha.exp().detach()
        if self.steps.count < c.bc_steps:
            data_log_pi = tanh_gaussian_data_log_prob(self.actor, batch.obs, batch.act)
            actor_loss = (alpha * log_pi - data_log_pi).mean()

        # TD target (no entropy in the backup by default).
        backup_alpha = alpha if c.backup_entropy else None
        if c.cql_max_target_backup:
            target = self.max_backup_target(batch, backup_alpha)
        else:
            target = sac_td_target(self.actor, self.target_critic, batch, c.discount, backup_alpha)

        # Q at the data actions and at the 3n sampled actions per state, in one batched call.
        s = self.cql_sample(batch.obs, batch.next_obs)
        obs_rep = batch.obs.repeat_interleave(n, 0)
        q_all = self.critic(
            torch.cat([batch.obs, obs_rep, obs_rep, obs_rep]),
            torch.cat([batch.act, s["rand"], s["cur"], s["next"]]),
        )  # (n_critics, B + 3 B n)
        q_data = q_all[:, :b]
        q_rand, q_cur, q_next = q_all[:, b:].view(-1, 3, b, n).unbind(1)  # each (n_critics, B, n)

        if c.cql_importance_sample:
            cat_q = torch.cat(
                [
                    q_rand - self.random_log_density,
                    q_next - s["next_log_pi"].view(b, n),
                    q_cur - s["cur_log_pi"].view(b, n),
                ],
                dim=-1,
            )
        else:
            cat_q = torch.cat([q_rand, q_data.unsqueeze(-1), q_next, q_cur], dim=-1)
        q_ood = torch.logsumexp(cat_q / c.cql_temp, dim=-1) * c.cql_temp  # (n_critics, B)
        diff = q_ood - q_data
        if c.cql_clip_diff_min is not None or c.cql_clip_diff_max is not None:
            diff = diff.clamp(c.cql_clip_diff_min, c.cql_clip_diff_max)
        cql_diff = diff.mean(1)  # (n_critics,)

        if c.cql_lagrange:
            alpha_prime = self.alpha_prime()
            gap = cql_diff - c.cql_target_action_gap
            cql_loss = alpha_prime.detach() * c.cql_min_q_weight * gap
            # Dual ascent on alpha': maximise alpha' w (diff - gap), averaged over critics
            # as SimpleSAC does for its two (critics detached here).
            alpha_prime_loss = -(alpha_prime * c.cql_min_q_weight * gap.detach()).mean()
        else:
            alpha_prime = torch.zeros((), device=q_data.device)
            cql_loss = c.cql_min_q_weight * cql_diff
            alpha_prime_loss = torch.zeros((), device=q_data.device)

        td_loss = (q_data - target).pow(2).mean(1)  # MSE per critic, as F.mse_loss
        critic_loss = td_loss.sum() + cql_loss.sum()
        return {
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "alpha_loss": alpha_loss,
            "alpha_prime_loss": alpha_prime_loss,
            "td_loss": td_loss.sum().detach(),
            "cql_loss": cql_loss.sum().detach(),
            "cql_diff": cql_diff.mean().detach(),
            "alpha": alpha,
            "alpha_prime": alpha_prime.detach(),
            "q_mean": q_data.mean().detach(),
            "q_rand_mean": q_rand.mean().detach(),
            "q_cur_mean": q_cur.mean().detach(),
            "target_mean": target.mean(),
            "log_pi": log_pi.mean().detach(),
        }

    def update(self, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None):
        """One step. SimpleSAC steps alpha', alpha, the policy and the critics in turn,
        each from a loss built before any step; the losses touch disjoint parameters
        (critics detached in the policy loss, alpha detached in the policy loss, alpha'
        detached in the critic loss and the critics in the alpha' loss), so one
        backward pass of their sum gives each optimizer exactly its own gradient."""
        c = self.config
        batch = self.prepare(dataset.sample(c.batch_size))
        out = self.losses(batch)
        loss = out["actor_loss"] + out["critic_loss"]
        if c.auto_alpha:
            loss = loss + out["alpha_loss"]
        if c.cql_lagrange:
            loss = loss + out["alpha_prime_loss"]
        for opt in (self.actor_opt, self.critic_opt, self.alpha_opt, self.alpha_prime_opt):
            opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # a no-op sum here; seeds trained as a batch sum theirs (seeds.py)
        if c.auto_alpha:
            self.alpha_opt.step()
        self.actor_opt.step()
        self.critic_opt.step()
        if c.cql_lagrange:
            self.alpha_prime_opt.step()
        soft_update(self.target_critic, self.critic, c.tau)
        self.steps.count += 1
        return {k: v.detach() for k, v in out.items()}
