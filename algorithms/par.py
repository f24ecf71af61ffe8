"""PAR: Policy Adaptation by Representation mismatch (Lyu, Bai, Yang, Lu & Li, ICML 2024,
"Cross-Domain Policy Adaptation by Capturing Representation Mismatch", arXiv:2405.15369).

Hybrid regime: SAC on simulator (source) and real (target) transitions together, with the
simulator's rewards penalised by how badly a representation learned on real data alone
predicts the simulated next state. Two encoders are trained on real transitions only:
a state encoder f and a state-action encoder g, such that g(f(s), a) predicts f(s'),

    L(f, g) = E_real[ (g(f(s), a) - sg(f(s')))^2 ]            (sg: no gradient)

and every simulator transition's reward becomes

    r~ = r - beta * mean_k (g(f(s), a) - f(s'))_k^2           (the representation deviation)

Where the simulator's dynamics agree with the real ones the deviation is small; where they
differ, f(s') is a next state the real system would not reach and the penalty grows. The
representations feed neither the policy nor the critics: they only shape the sim reward.

gapbench's hybrid regime is a *fixed real dataset* (offline target) plus an online
simulator (online source). The authors' repository (dmksjfl/PAR) has two variants, online
source + online target (``algo/PAR.py``) and offline source + online target
(``algo/PAR_offline.py``, which adds a TD3+BC-style behaviour-cloning term on the offline
data); it has none for an offline target. ODRL (OffDynamicsRL/off-dynamics-rl, the
benchmark by the same first author) gives exactly this setting as ``PAR_BC``
(``algo/online_offline/par_bc.py``): the authors' online PAR step with the authors'
offline-variant BC term moved onto the offline data, which here is the real dataset. That
is the default here; ``bc_weight=None`` gives the authors' online PAR step unchanged.

One update (``update``), in the code's order:

1. every ``encoder_update_every``-th update (200 in the code), one Adam step of f and g on
   ``encoder_batch_size`` (64) real transitions;
2. the deviation of the sim batch from the *target* encoder (a Polyak copy; the offline
   variant uses the live encoder, ``target_encoder=False``), and the penalised sim rewards;
3. the critics on 128 sim + 128 real transitions: y = r + gamma (1 - d) (min_i Q'_i(s', a')
   - alpha log pi(a'|s')), loss sum_i E[(Q_i - y)^2]; then the target critics *and* the
   target encoder by Polyak averaging;
4. the actor against the stepped critics, on the sim and real states together:
   lambda E[alpha log pi(a|s) - min_i Q_i(s, a)] + E_real[(a~pi(s) - a)^2] with
   lambda = nu / E|min_i Q_i(s, a)| (detached), nu = ``bc_weight`` (TD3+BC's normalisation;
   the BC action is a *sample* of the policy, as the code has it);
5. the temperature, if tuned (the code keeps it fixed at 0.2).

Where the authors' code (dmksjfl/PAR) and ODRL differ, and what gapbench does:

- setting: the authors have online source + online target (``PAR.py``) and offline source
  + online target (``PAR_offline.py``); ODRL adds online source + offline target
  (``par_bc.py``), gapbench's hybrid regime. gapbench: ODRL's.
- BC term: none in ``PAR.py``; in ``PAR_offline.py`` on the offline *source* data, in
  ``par_bc.py`` on the offline *target* data, in both with the SAC term scaled by
  nu / E|Q|. gapbench: on the real data (``bc_weight`` nu; None drops it).
- which encoder gives the penalty: a Polyak target copy in ``PAR.py`` and ``par_bc.py``,
  the live encoder in ``PAR_offline.py``. gapbench: the target (``target_encoder``).
- encoder batch: half the RL batch (64) in ``PAR.py`` and ``par_bc.py``, the full 128 in
  ``PAR_offline.py``. gapbench: 64 (``encoder_batch_size``).
- beta: ``train.py`` default 0.5 and 0.01-5.0 per task in the README (online), 1.0 in
  ``train_offline.py``; ODRL 0.1 on every MuJoCo task. nu: 2.5 in ``train_offline.py``,
  5.0 in the authors' README command and in ODRL. gapbench: ODRL's 0.1 and 5.0.
- critic LayerNorm: an option of ``PAR_offline.py`` only (``--layernorm``, in the README
  command). gapbench: none, as ``PAR.py`` and ``par_bc.py``.
- start of training: ``PAR.py`` trains once both buffers hold a batch, ODRL once both hold
  500 transitions. gapbench: the harness's warm-up of random sim steps (the real dataset
  is full from the start); the encoders' 200-update clock starts at the first update.
- owned by gapbench's harness, the same for every hybrid method: sim actions are samples
  of the policy (the codes add N(0, 0.2^2) noise on top); the budget (ODRL's
  online-offline runs are 500k updates; the ``paper`` preset is 1M).

gapbench departs from both in form only: the twin critics are one batched ensemble; the
shared tanh-Gaussian actor has its learnable log-std affine frozen at the identity, which
is the codes' plain head. ``tests/test_authors_par.py`` runs one step of each side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import functional_call

from gapbench.algorithms.base import Algorithm, ConfigError, accumulate
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.nets import (
    EnsembleQ,
    StepCounter,
    TanhGaussianActor,
    adam,
    frozen_copy,
    mlp,
    soft_update,
)
from gapbench.algorithms.registry import register
from gapbench.algorithms.sac import sac_td_target


@dataclass
class PARConfig:
    """PAR hyper-parameters.

    Sources. ODRL ``algo/online_offline/par_bc.py`` with ``config/mujoco/par_bc/*.yaml``
    (the online-source / offline-target setting, gapbench's hybrid): beta 0.1 and
    nu (``weight``) 5.0 on all four MuJoCo tasks. Everything else is the same in the
    authors' ``algo/PAR.py`` + ``config/*.yaml`` and ODRL's file: 128 sim + 128 real
    transitions per update (``batch_size`` 128 from each buffer); discount 0.99; tau 5e-3
    for critics and encoder; Adam 3e-4 for actor, critics, encoder (``actor_lr``) and
    temperature; fixed alpha 0.2 (``temperature_opt: False``); entropy in the TD target;
    256-256 ReLU actor and twin critics with PyTorch's default init and a plain log-std
    head clamped to [-20, 2] (no learnable affine, no small output gain); encoders f:
    S -> 256 -> 256 -> 256 (ELU, output divided by its mean |.|, TD7's AvgL1Norm) and
    g: 256 + A -> 256 -> 256 -> 256 (ELU); one encoder step every 200 updates on 64
    (``batch_size // 2``) real transitions; the deviation is the *mean* over the 256
    latent dimensions.

    The authors' own choices for other settings, for tuning: beta 0.5 (``train.py``
    default), 0.01-5.0 per task (README); nu 2.5 (``train_offline.py`` default) or 5.0
    (README command). ``target_encoder=False`` and ``encoder_batch_size=128`` are the
    authors' offline variant (``PAR_offline.py``). ``bc_weight=None``: no BC term and no
    Q normalisation, the authors' online ``PAR.py`` actor loss.
    """

    sim_batch_size: int = 128
    real_batch_size: int = 128
    discount: float = 0.99
    tau: float = 5e-3
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    hidden: tuple[int, ...] = (256, 256)
    n_critics: int = 2
    auto_alpha: bool = False  # the code's temperature_opt: False
    init_alpha: float = 0.2
    target_entropy: float | None = None  # None: -|A| (only used with auto_alpha)
    backup_entropy: bool = True
    # representation (encoders f and g), trained on real transitions only
    encoder_dim: int = 256
    encoder_hidden: tuple[int, ...] = (256, 256)
    encoder_lr: float = 3e-4
    encoder_update_every: int = 200
    encoder_batch_size: int = 64
    target_encoder: bool = True
    # the penalty and the BC term
    beta: float = 0.1  # reward penalty coefficient
    bc_weight: float | None = 5.0  # nu; None: no BC term (the authors' online PAR)

    def __post_init__(self) -> None:
        for key in ("encoder_update_every", "encoder_batch_size", "encoder_dim"):
            value = getattr(self, key)
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(f"hyper-parameter {key!r} must be an integer >= 1, got {value!r}")
        if not self.init_alpha > 0:
            raise ConfigError(f"hyper-parameter 'init_alpha' must be > 0, got {self.init_alpha!r}")


def avg_l1_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """x / mean_k |x_k| over the last dim (TD7's AvgL1Norm), keeping the latent's scale fixed."""
    return x / x.abs().mean(-1, keepdim=True).clamp_min(eps)


class RepresentationEncoder(nn.Module):
    """The state encoder f(s) and the state-action encoder g(z_s, a) (TD7's encoder pair,
    ELU MLPs), trained so that g(f(s), a) predicts f(s') on real transitions."""

    def __init__(self, obs_dim: int, act_dim: int, dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.state = mlp(obs_dim, dim, hidden, activation=nn.ELU)
        self.state_action = mlp(dim + act_dim, dim, hidden, activation=nn.ELU)

    def zs(self, obs: Tensor) -> Tensor:
        return avg_l1_norm(self.state(obs))

    def zsa(self, zs: Tensor, act: Tensor) -> Tensor:
        return self.state_action(torch.cat([zs, act], dim=-1))

    def prediction_and_target(self, obs: Tensor, act: Tensor, next_obs: Tensor):
        """(g(f(s), a), f(s')), the latter without gradient."""
        with torch.no_grad():
            next_zs = self.zs(next_obs)
        return self.zsa(self.zs(obs), act), next_zs

    @torch.no_grad()
    def deviation(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """mean_k (g(f(s), a) - f(s'))_k^2 per transition, (B,)."""
        pred, next_zs = self.prediction_and_target(obs, act, next_obs)
        return (pred - next_zs).pow(2).mean(-1)

    def loss(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """E[(g(f(s), a) - sg(f(s')))^2], mean over the batch and the latent dims."""
        pred, next_zs = self.prediction_and_target(obs, act, next_obs)
        return (pred - next_zs).pow(2).mean()


def _cat(a: Batch, b: Batch) -> Batch:
    return Batch(*(torch.cat([x, y]) for x, y in zip(a, b, strict=True)))


ENCODER_METRICS = ("encoder_loss",)


@register
class PAR(Algorithm):
    name = "par"
    regime = "hybrid"
    Config = PARConfig
    # Tuning ranges (gapbench.benchmark.tuning): beta over the authors' per-task range
    # (README: 0.01 to 5.0), nu around the 2.5 / 5.0 the code uses, the SAC lrs and the
    # encoder's update interval around the code's 200.
    search_space = {
        "beta": {"type": "float", "low": 0.01, "high": 5.0, "log": True},
        "bc_weight": {"type": "float", "low": 1.0, "high": 10.0, "log": True},
        "actor_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "critic_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "encoder_update_every": {"type": "categorical", "choices": [1, 10, 200]},
    }

    def __init__(self, obs_dim, act_dim, config=None, seed=0, device="cpu"):
        super().__init__(obs_dim, act_dim, config, seed, device)
        c = self.config
        # The code's Policy: a plain log-std head clamped to [-20, 2], default init. The
        # shared actor's log-std affine is held at the identity (multiplier 1, offset 0).
        self.actor = TanhGaussianActor(
            obs_dim, act_dim, c.hidden, log_std_offset=0.0, last_gain=None
        ).to(self.device)
        self.actor.log_std_multiplier.requires_grad_(False)
        self.actor.log_std_offset.requires_grad_(False)
        self.critic = EnsembleQ(obs_dim, act_dim, c.n_critics, c.hidden).to(self.device)
        self.target_critic = frozen_copy(self.critic)
        self.encoder = RepresentationEncoder(obs_dim, act_dim, c.encoder_dim, c.encoder_hidden)
        self.encoder.to(self.device)
        self.target_encoder = frozen_copy(self.encoder)
        self.log_alpha = torch.tensor(
            math.log(c.init_alpha), device=self.device, requires_grad=True
        )
        self.target_entropy = -float(act_dim) if c.target_entropy is None else c.target_entropy
        self.actor_opt = adam([p for p in self.actor.parameters() if p.requires_grad], c.actor_lr)
        self.critic_opt = adam(self.critic.parameters(), c.critic_lr)
        self.encoder_opt = adam(self.encoder.parameters(), c.encoder_lr)
        self.alpha_opt = adam([self.log_alpha], c.alpha_lr)
        self.steps = StepCounter()

    def setup(self, dataset: TensorBuffer | None) -> None:
        if dataset is None:
            raise ValueError("PAR is a hybrid algorithm: it needs the real dataset")

    # -- the representation penalty ---------------------------------------------------------
    def penalized(self, sim: Batch) -> tuple[Batch, Tensor]:
        """The sim batch with r - beta * deviation, and the deviation; real transitions are
        never penalised."""
        encoder = self.target_encoder if self.config.target_encoder else self.encoder
        deviation = encoder.deviation(sim.obs, sim.act, sim.next_obs)
        return sim._replace(rew=sim.rew - self.config.beta * deviation), deviation

    def encoder_step(self, real: Batch) -> Tensor:
        loss = self.encoder.loss(real.obs, real.act, real.next_obs)
        self.encoder_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.encoder_opt.step()
        return loss.detach()

    # -- losses ---------------------------------------------------------------------------
    def critic_loss(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """sum_i E[(Q_i(s, a) - y)^2] over the sim and real transitions together."""
        alpha = self.log_alpha.exp().detach()
        target = sac_td_target(
            self.actor,
            self.target_critic,
            batch,
            self.config.discount,
            alpha if self.config.backup_entropy else None,
        )
        q = self.critic(batch.obs, batch.act)
        return (q - target).pow(2).mean(1).sum(), q.detach()

    def actor_loss(self, obs: Tensor, real: Batch) -> dict[str, Tensor]:
        """lambda E[alpha log pi - min_i Q_i] + E_real[(a~pi(s) - a)^2], lambda = nu / E|Q|
        (with ``bc_weight=None``: the SAC loss alone); the critics' parameters detached."""
        c = self.config
        act, log_pi = self.actor(obs)
        params = {k: v.detach() for k, v in self.critic.named_parameters()}
        q = functional_call(self.critic, params, (obs, act)).min(0).values
        alpha = self.log_alpha.exp().detach()
        sac_loss = (alpha * log_pi - q).mean()
        out = {"log_pi": log_pi}
        if c.bc_weight is None:
            out["actor_loss"] = sac_loss
            return out
        lmbda = c.bc_weight / q.abs().mean().detach()
        bc_act, _ = self.actor(real.obs)  # a sample of the policy, as the code has it
        bc_loss = (bc_act - real.act).pow(2).mean()
        out.update(actor_loss=lmbda * sac_loss + bc_loss, bc_loss=bc_loss.detach(), lmbda=lmbda)
        return out

    # -- one update -------------------------------------------------------------------------
    def update(self, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None):
        c = self.config
        self.steps.count += 1  # before the test, as the code's total_it: updates 200, 400, ...
        sim = replay.sample(c.sim_batch_size)
        real = dataset.sample(c.real_batch_size)
        metrics: dict[str, Tensor] = {}

        # 1. The encoders, on real transitions only, every encoder_update_every updates.
        if self.steps.count % c.encoder_update_every == 0:
            metrics["encoder_loss"] = self.encoder_step(dataset.sample(c.encoder_batch_size))

        # 2. Penalised sim rewards, then 3. the critics on sim + real, and the targets.
        sim_pen, deviation = self.penalized(sim)
        critic_loss, q = self.critic_loss(_cat(sim_pen, real))
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        soft_update(self.target_critic, self.critic, c.tau)
        soft_update(self.target_encoder, self.encoder, c.tau)

        # 4. The actor against the stepped critics, on sim and real states together.
        out = self.actor_loss(torch.cat([sim.obs, real.obs]), real)
        self.actor_opt.zero_grad(set_to_none=True)
        out["actor_loss"].backward()
        self.actor_opt.step()

        # 5. The temperature, in the code's form -alpha (log pi + H) (off by default).
        alpha = self.log_alpha.detach().exp()
        if c.auto_alpha:
            alpha_loss = -(self.log_alpha.exp() * (out["log_pi"].detach() + self.target_entropy))
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.mean().backward()
            self.alpha_opt.step()

        n_sim = sim.obs.shape[0]
        metrics.update(
            critic_loss=critic_loss.detach(),
            actor_loss=out["actor_loss"].detach(),
            alpha=alpha,
            log_pi=out["log_pi"].detach().mean(),
            q_sim_mean=q[:, :n_sim].mean(),  # named as H2O's and VGDF's: one report figure
            q_real_mean=q[:, n_sim:].mean(),
            deviation_mean=deviation.mean(),
            deviation_max=deviation.max(),
            sim_reward_penalized=sim_pen.rew.mean(),
        )
        if c.bc_weight is not None:
            metrics.update(bc_loss=out["bc_loss"], lmbda=out["lmbda"])
        return metrics

    def update_many(
        self, n: int, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None
    ) -> dict[str, Tensor]:
        """``n`` updates. The harness divides each summed metric by ``n``: the encoder loss,
        made on 1 update in ``encoder_update_every``, is rescaled so that this gives its
        mean over the encoder steps."""
        sums: dict[str, Tensor] = {}
        encoder_steps = 0
        for _ in range(n):
            metrics = self.update(dataset=dataset, replay=replay)
            encoder_steps += "encoder_loss" in metrics
            accumulate(sums, metrics)
        if encoder_steps:
            for key in ENCODER_METRICS:
                sums[key] = sums[key] * (n / encoder_steps)
        return sums
