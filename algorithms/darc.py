"""DARC: Domain Adaptation with Rewards from Classifiers (Eysenbach et al., ICLR 2021,
"Off-Dynamics Reinforcement Learning: Training for Transfer with Domain Classifiers").

SAC on simulator transitions whose reward is corrected by the classifiers' estimate of the
dynamics log-ratio:

    r~(s, a, s') = r + Delta r,   Delta r = log P_real(s'|s,a) - log P_sim(s'|s,a)
                 = log q(real|s,a,s') - log q(sim|s,a,s') - log q(real|s,a) + log q(sim|s,a)

The classifiers (``algorithms/discriminators.py``) learn to tell the real transitions from
the simulated ones. Hybrid regime as H2O's paper runs this baseline: the real side is the
fixed real dataset (the DARC paper instead collects real experience online, one real step
every 10 sim steps); the policy and critics only ever see simulator transitions.

Defaults are those of the authors' code, google-research ``darc/``:
- ``train_eval.py``: batch 256, Adam 3e-4 for actor, critics, classifier and temperature,
  discount 0.99, tau 5e-3 every step, 256-256 actor and critic, ``reward_scale_factor=0.1``.
- ``README.md`` run commands: ``critic_loss.delta_r_warmup=1e5``: no correction during the
  first 100k updates (the classifiers train from the start).
- ``classifiers.py``: one hidden layer of 32 ReLU units, raw logits, Gaussian input noise
  std 1.0 (independent draws for the (s,a) and (s,a,s') inputs).
- ``darc_agent.py``: each update is SAC on the sim batch with the corrected reward, the
  correction taken from the classifiers *before* their step and without input noise; then
  one classifier step on that same sim batch and an equal-size real batch.
- the SAC underneath is TF-Agents 0.5.0 ``SacAgent`` (``darc/requirements.txt``): entropy
  term in the TD target, ``critic_loss_weight=0.5`` (0.5 x the sum of both critics'
  squared errors), target entropy -|A|/2 by default, alpha = 1 at start, and *sequential*
  steps: critics, then the actor against the updated critics (with the pre-step alpha),
  then the temperature on a fresh sample from the updated actor. The reward scale multiplies
  the corrected reward (r + Delta r).
Network details (tanh-Gaussian head with learnable log-std affine, critic output gain 1e-2)
are the shared ``algorithms/nets.py`` ones, not TF-Agents' initialisers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gapbench.algorithms.base import Algorithm
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.discriminators import DomainClassifiers
from gapbench.algorithms.nets import soft_update
from gapbench.algorithms.registry import register
from gapbench.algorithms.sac import init_actor_critic, sac_policy_terms, sac_td_target


@dataclass
class DARCConfig:
    """DARC hyper-parameters; sources in the module docstring (google-research darc/
    ``train_eval.py``, ``classifiers.py``, ``darc_agent.py``, ``README.md``; TF-Agents
    0.5.0 ``sac_agent.py`` for the SAC defaults it does not set)."""

    batch_size: int = 256  # sim batch for SAC and the classifier; real batch of the same size
    discount: float = 0.99
    tau: float = 5e-3
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    hidden: tuple[int, ...] = (256, 256)
    n_critics: int = 2
    reward_scale: float = 0.1
    critic_loss_weight: float = 0.5
    auto_alpha: bool = True
    init_alpha: float = 1.0
    target_entropy: float | None = None  # None: -|A| / 2 (TF-Agents' default)
    backup_entropy: bool = True
    # classifiers
    classifier_hidden: tuple[int, ...] = (32,)
    classifier_lr: float = 3e-4
    classifier_noise_std: float = 1.0
    classifier_output_bound: float = 0.0  # 0: raw logits (DARC); 2.0: H2O's 2*tanh
    # reward correction
    delta_r_scale: float = 1.0
    warmup_steps: int = 100_000


@register
class DARC(Algorithm):
    name = "darc"
    regime = "hybrid"
    Config = DARCConfig
    # Tuning ranges (gapbench.benchmark.tuning): SAC lrs around 3e-4, the classifier's lr and input
    # noise (the paper's 1.0 and smaller), the delta-r coefficient around 1.
    search_space = {
        "actor_lr": {"type": "float", "low": 3e-5, "high": 1e-3, "log": True},
        "critic_lr": {"type": "float", "low": 3e-5, "high": 1e-3, "log": True},
        "classifier_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "classifier_noise_std": {"type": "categorical", "choices": [0.1, 0.5, 1.0]},
        "delta_r_scale": {"type": "categorical", "choices": [0.5, 1.0, 2.0]},
    }

    def __init__(self, obs_dim, act_dim, config=None, seed=0, device="cpu"):
        super().__init__(obs_dim, act_dim, config, seed, device)
        c = self.config
        # TF-Agents' default target entropy is -|A| / 2
        target_entropy = -float(act_dim) / 2.0 if c.target_entropy is None else c.target_entropy
        init_actor_critic(self, c, target_entropy, c.alpha_lr)
        self.classifiers = DomainClassifiers(
            obs_dim,
            act_dim,
            c.classifier_hidden,
            noise_std=c.classifier_noise_std,
            lr=c.classifier_lr,
            output_bound=c.classifier_output_bound or None,
            shared_noise=False,
        ).to(self.device)
        self.classifier_opt = self.classifiers.optimizer  # so Algorithm.state_dict saves it

    # -- the reward correction ------------------------------------------------------------
    def delta_r(self, sim: Batch) -> Tensor:
        """Delta r on the sim batch, zero during warm-up (``darc_agent.critic_loss``).
        The warm-up gate is a tensor comparison on the classifiers' update counter (which
        equals the number of completed DARC updates), so it needs no host sync."""
        c = self.config
        delta_r = self.classifiers.log_ratio(sim.obs, sim.act, sim.next_obs)
        active = (self.classifiers.num_updates >= c.warmup_steps).to(delta_r.dtype)
        return c.delta_r_scale * active * delta_r

    def corrected_batch(self, sim: Batch) -> tuple[Batch, Tensor]:
        """The sim batch with reward scale * (r + Delta r), and Delta r."""
        delta_r = self.delta_r(sim)
        return sim._replace(rew=self.config.reward_scale * (sim.rew + delta_r)), delta_r

    # -- losses ---------------------------------------------------------------------------
    def critic_terms(self, sim: Batch) -> dict[str, Tensor]:
        c = self.config
        batch, delta_r = self.corrected_batch(sim)
        alpha = self.log_alpha.exp().detach()
        target = sac_td_target(
            self.actor,
            self.target_critic,
            batch,
            c.discount,
            alpha if c.backup_entropy else None,
        )
        q = self.critic(sim.obs, sim.act)  # (n_critics, B)
        # TF-Agents: critic_loss_weight * mean over the batch of the summed squared errors.
        critic_loss = c.critic_loss_weight * (q - target).pow(2).sum(0).mean()
        return {
            "critic_loss": critic_loss,
            "target": target,
            "reward": batch.rew,
            "delta_r": delta_r,
            "q": q.detach(),
        }

    def policy_terms(self, obs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """SAC's actor loss, temperature loss and log pi on the sim states (the critics
        detached)."""
        return sac_policy_terms(self.actor, self.critic, self.log_alpha, obs, self.target_entropy)

    def temperature_loss(self, obs: Tensor) -> Tensor:
        """-E[log alpha (log pi(a|s) + H_target)], a a fresh sample from the actor."""
        with torch.no_grad():
            _, log_pi = self.actor(obs)
        return -(self.log_alpha * (log_pi + self.target_entropy)).mean()

    def losses(self, sim: Batch) -> dict[str, Tensor]:
        """Every loss of one step, all from the current parameters (``update`` steps them
        in TF-Agents' sequence, so its actor and temperature losses see updated critics
        and actor)."""
        out = self.critic_terms(sim)
        actor_loss, alpha_loss, log_pi = self.policy_terms(sim.obs)
        out.update(actor_loss=actor_loss, alpha_loss=alpha_loss, log_pi=log_pi.detach())
        return out

    def update(self, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None):
        c = self.config
        sim = replay.sample(c.batch_size)
        real = dataset.sample(c.batch_size)
        # (Each loss's .sum() is a no-op here; seeds trained as a batch sum theirs, and the
        # metrics reduce over the last dims: batched seeds come first, algorithms/seeds.py.)

        # 1. Critics, with the reward corrected by the pre-step classifiers.
        crit = self.critic_terms(sim)
        self.critic_opt.zero_grad(set_to_none=True)
        crit["critic_loss"].sum().backward()
        self.critic_opt.step()

        # 2. Actor against the updated critics (alpha from before its own step).
        actor_loss, _, log_pi = self.policy_terms(sim.obs)
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_opt.step()

        # 3. Temperature on a fresh sample from the updated actor.
        alpha = self.log_alpha.detach().exp()  # the value this step's losses used
        alpha_loss = self.temperature_loss(sim.obs)
        if c.auto_alpha:
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.sum().backward()
            self.alpha_opt.step()
        soft_update(self.target_critic, self.critic, c.tau)

        # 4. Classifiers on this sim batch and a real batch of the same size.
        disc_metrics = self.classifiers.update(real, sim)
        delta_r = crit["delta_r"]
        return {
            "critic_loss": crit["critic_loss"].detach(),
            "actor_loss": actor_loss.detach(),
            "alpha_loss": alpha_loss.detach(),
            "alpha": alpha,
            "log_pi": log_pi.detach().mean(-1),
            "q_mean": crit["q"].mean((-2, -1)),
            "delta_r_mean": delta_r.mean(-1),
            "delta_r_std": delta_r.std(-1),
            **disc_metrics,
        }
