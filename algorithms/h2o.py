"""H2O: Dynamics-Aware Hybrid Offline-and-Online RL (Niu et al., NeurIPS 2022).

Hybrid regime: a fixed log of real transitions plus online interaction with an imperfect
simulator. SAC-style actor and temperature on the union of both batches; the critics get

    L(Q_i) = E_real[(Q_i - y)^2]                          Bellman error on real data
           + E_sim[w(s,a,s') (Q_i - y)^2]                 sim error, dynamics-ratio weighted
           + beta * (log sum_j omega_j exp Q_i(s_j,a_j)   dynamics-aware penalty on sim
                     - E_real[Q_i])                         (s, a), minus real-data Q

with w = P_real(s'|s,a) / P_sim(s'|s,a) from the domain classifiers, and
omega = u / sum u over the sim batch, u(s,a) = KL(P_sim(.|s,a) || P_real(.|s,a)) estimated
from perturbed next states. The penalty is the closed form of the paper's min-max
objective whose inner maximum over d^phi is KL-regularised towards omega.

Read top to bottom: ``dynamics_terms`` (w, u, omega from the classifiers), ``losses``
(every loss of one step from the pre-step parameters), ``update_many`` (per update: the
classifier step first, then one backward for actor, critics and temperature; with spare
CPU threads the next update's classifier step overlaps this update's RL step).

Source of every default: the authors' code, t6-thu/H2O ``SimpleSAC/sim2real_sac.py``
(``Sim2realSAC.get_default_config`` l.24-70, ``train`` l.129-345) and
``SimpleSAC/sim2real_sac_main.py`` (batch 256 split 128 real / 128 sim by ``batch_ratio``
0.5, l.43/51/185-186; target entropy -|A|, l.158-159; 256-256 nets with log-std multiplier
1.0 / offset -1.0). Where the code has a choice the paper does not spell out, or departs
from its own evident intent, the code is the default and the alternative is an option:
``backup_entropy``, ``state_std_zero_padding`` (see its comment), ``penalty_form``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from gapbench.algorithms.base import Algorithm, ConfigError, accumulate
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.discriminators import DomainClassifiers
from gapbench.algorithms.nets import SeededGenerator, gaussian_noise, soft_update
from gapbench.algorithms.overlap import Overlap
from gapbench.algorithms.registry import register
from gapbench.algorithms.sac import init_actor_critic, sac_policy_terms, sac_td_target

PENALTY_FORMS = ("logsumexp", "weighted_mean")


@dataclass
class H2OConfig:
    """H2O hyper-parameters (defaults: t6-thu/H2O code, see the module docstring).

    SAC part (``get_default_config`` l.26-40 and ``sim2real_sac_main.py``): Adam 3e-4 for
    policy, critics and temperature (the temperature uses ``policy_lr``, l.107-110);
    discount 0.99; tau 5e-3 every step; automatic entropy tuning from alpha = 1
    (``Scalar(0.0)``, l.106) with target -|A|; ``backup_entropy=False`` (l.31: no entropy
    term in the TD target, SimpleSAC's convention; ``backup_entropy=True`` gives standard
    SAC's soft backup).

    Classifiers (l.35-38, l.364-400): 256-256 -> 2 logits with 2*tanh, N(0, 0.1^2) input
    noise, trained every update on their own 256 real + 256 sim samples (``batch_size``
    256, l.26, l.365-366) *before* the RL losses, which therefore see the updated classifiers.

    Dynamics-aware parts: ratio clip [1e-5, 1] (l.64-65); u from 10 perturbed next states
    (l.52) with noise std = state std x 1.0 (l.53), u clamped to [1e-45, 10] (l.50-51);
    penalty weight 0.01 (``cql_min_q_weight`` l.59), temperature 1 (``cql_temp`` l.58),
    difference clipped to [-1000, 1000] (l.61-62); logsumexp form (``use_variant=False``
    l.43; ``weighted_mean`` is the code's ``use_variant=True``: sum_j omega_j Q_j).
    """

    real_batch_size: int = 128
    sim_batch_size: int = 128
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
    backup_entropy: bool = False
    # domain classifiers
    disc_batch_size: int = 256  # per source: 256 real + 256 sim
    disc_hidden: tuple[int, ...] = (256, 256)
    disc_lr: float = 3e-4
    disc_noise_std: float = 0.1
    disc_output_bound: float = 2.0  # logits = bound * tanh(.); 0 for raw logits
    # importance weight on the sim Bellman error
    use_importance_weight: bool = True
    dynamics_ratio_min: float = 1e-5
    dynamics_ratio_max: float = 1.0
    # dynamics-aware penalty
    use_gap_weighted_penalty: bool = True
    penalty_weight: float = 0.01
    penalty_temperature: float = 1.0
    penalty_clip_min: float = -1000.0
    penalty_clip_max: float = 1000.0
    penalty_form: str = "logsumexp"
    # gap measure u(s, a)
    u_n_next_states: int = 10
    u_noise_scale: float = 1.0
    u_min: float = 1e-45
    u_max: float = 10.0
    # Code quirk: the code's "state std" (``mixed_replay_buffer.py`` l.42-61, read once at
    # ``sim2real_sac.py`` l.82) is taken over the whole buffer array before any sim data
    # arrives: the N dataset rows followed by replaybuffer_ratio (10) x N zero rows, plus
    # 1e-3. 10 reproduces that value (about 1/sqrt(11) of the true std on zero-mean
    # dimensions); 0 gives the dataset's own state std + 1e-3, the evident intent.
    state_std_zero_padding: float = 10.0

    def __post_init__(self) -> None:
        if self.penalty_form not in PENALTY_FORMS:
            raise ConfigError(
                f"hyper-parameter 'penalty_form' must be one of {PENALTY_FORMS}, "
                f"got {self.penalty_form!r}"
            )


def padded_state_std(obs: Tensor, zero_padding: float, eps: float = 1e-3) -> Tensor:
    """Per-dimension population std of ``obs`` stacked on ``zero_padding * len(obs)`` rows
    of zeros, plus ``eps`` (computed in float64 like the authors' numpy code)."""
    x = obs.double()
    scale = 1.0 / (1.0 + zero_padding)
    mean = x.mean(0) * scale
    var = (x.pow(2).mean(0) * scale - mean.pow(2)).clamp_min(0.0)
    return (var.sqrt() + eps).to(obs.dtype)


def _cat(a: Batch, b: Batch) -> Batch:
    return Batch(*(torch.cat([x, y]) for x, y in zip(a, b, strict=True)))


@register
class H2O(Algorithm):
    name = "h2o"
    regime = "hybrid"
    Config = H2OConfig
    # Tuning ranges (gapbench.benchmark.tuning): the penalty weight (the code's cql_min_q_weight,
    # 0.01) over three decades, SAC lrs around 3e-4, the classifiers' lr and input noise.
    search_space = {
        "penalty_weight": {"type": "float", "low": 1e-3, "high": 1.0, "log": True},
        "actor_lr": {"type": "float", "low": 3e-5, "high": 1e-3, "log": True},
        "critic_lr": {"type": "float", "low": 3e-5, "high": 1e-3, "log": True},
        "disc_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "disc_noise_std": {"type": "categorical", "choices": [0.05, 0.1, 0.2]},
    }

    def __init__(self, obs_dim, act_dim, config=None, seed=0, device="cpu"):
        super().__init__(obs_dim, act_dim, config, seed, device)
        c = self.config
        target_entropy = -float(act_dim) if c.target_entropy is None else c.target_entropy
        init_actor_critic(self, c, target_entropy, c.alpha_lr)
        self.disc = DomainClassifiers(
            obs_dim,
            act_dim,
            c.disc_hidden,
            noise_std=c.disc_noise_std,
            lr=c.disc_lr,
            output_bound=c.disc_output_bound or None,
            shared_noise=True,
        ).to(self.device)
        # The classifiers' own random stream (their batches, input noise and the u
        # perturbation), so their work can run on another thread (``update_many``).
        self.disc_rng = SeededGenerator(seed + 0x20, self.device)
        self.disc.generator = self.disc_rng.generator
        self.disc_opt = self.disc.optimizer  # so Algorithm.state_dict saves it
        self.state_std: Tensor | None = None  # set by setup() from the real dataset

    def setup(self, dataset: TensorBuffer | None) -> None:
        if dataset is None:
            raise ValueError("H2O is a hybrid algorithm: it needs the real dataset")
        obs = dataset.obs[: dataset.size]
        self.state_std = padded_state_std(obs, self.config.state_std_zero_padding).to(self.device)

    # -- the dynamics-aware quantities ----------------------------------------------------
    def dynamics_terms(self, sim: Batch, u_noise: Tensor | None = None) -> dict[str, Tensor]:
        """w, u and omega on the sim batch, from one d_sas pass over the B unperturbed and
        B x N perturbed transitions (d_sa cancels from the log-ratio).

        ``u_noise``: optional standard-normal draws (B, N, obs_dim) for the perturbation
        (tests pass fixed ones); sampled when None."""
        c = self.config
        if self.state_std is None:
            raise RuntimeError("H2O.setup(dataset) must run before the first update")
        b, n = sim.obs.shape[0], c.u_n_next_states
        if u_noise is None:  # (B, N, obs_dim) draws from the classifiers' generator
            u_noise = gaussian_noise(
                sim.next_obs.unsqueeze(1).expand(b, n, -1), self.disc_rng.generator
            )
        # u(s,a) = E_{s'}[log P_sim(s'|s,a) - log P_real(s'|s,a)], s' = observed next state
        # + N(0, (scale * state_std)^2) noise, N = 10 draws (sim2real_sac.py l.422-439).
        perturbed = sim.next_obs.unsqueeze(1) + u_noise * (c.u_noise_scale * self.state_std)
        obs = torch.cat([sim.obs, sim.obs.repeat_interleave(n, 0)])
        act = torch.cat([sim.act, sim.act.repeat_interleave(n, 0)])
        next_obs = torch.cat([sim.next_obs, perturbed.reshape(b * n, -1)])
        log_ratio = self.disc.log_ratio(obs, act, next_obs)  # log P_real / P_sim, no grad
        log_w, log_ratio_perturbed = log_ratio[:b], log_ratio[b:].view(b, n)

        if c.use_importance_weight:  # l.215-218: clip w to [1e-5, 1]
            w = log_w.exp().clamp(c.dynamics_ratio_min, c.dynamics_ratio_max)
        else:
            w = torch.ones_like(log_w)
        if c.use_gap_weighted_penalty:  # l.233-236, 439: clamp u to [1e-45, 10]
            u = (-log_ratio_perturbed).mean(1).clamp(c.u_min, c.u_max)
        else:
            u = torch.ones_like(log_w)
        omega = u / u.sum()  # l.238
        # log omega as log u - log sum u: the same value, without float32 underflow to -inf
        # when u sits at its 1e-45 floor.
        log_omega = u.log() - u.sum().log()
        return {"w": w, "u": u, "omega": omega, "log_omega": log_omega}

    # -- every loss of one step -----------------------------------------------------------
    def losses(
        self,
        real: Batch,
        sim: Batch,
        u_noise: Tensor | None = None,
        dyn: dict[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Every loss of one H2O step from the current parameters (the classifier step is
        not part of it; ``update_many`` takes it first, as the authors' code does).

        ``dyn``: ``dynamics_terms(sim)`` if already computed (else computed here, with
        ``u_noise`` if given). Random draws from the global generator, in order: the
        policy's actions on real+sim states, then its next actions on real+sim next
        states; the u perturbation draws from the classifiers' own generator."""
        c = self.config
        n_real = real.obs.shape[0]
        both = _cat(real, sim)

        # Actor and temperature on the real and sim states together (l.151, 158-179).
        actor_loss, alpha_loss, log_pi = sac_policy_terms(
            self.actor, self.critic, self.log_alpha, both.obs, self.target_entropy
        )
        alpha = self.log_alpha.exp().detach()

        # TD targets: y = r + gamma (1 - d) min_i Q'_i(s', a'), a' ~ pi(s'); no entropy
        # term by default (l.188-208). One actor call for the real and sim next states.
        target = sac_td_target(
            self.actor,
            self.target_critic,
            both,
            c.discount,
            alpha if c.backup_entropy else None,
        )
        target_real, target_sim = target[:n_real], target[n_real:]

        q = self.critic(both.obs, both.act)  # (n_critics, B_real + B_sim)
        q_real, q_sim = q[:, :n_real], q[:, n_real:]

        if dyn is None:
            dyn = self.dynamics_terms(sim, u_noise)
        w, omega, log_omega = dyn["w"], dyn["omega"], dyn["log_omega"]

        # Bellman errors (l.210-223): per critic, a mean over each source, the sim one
        # weighted by w (the code's mse(sqrt(w) Q, sqrt(w) y) is exactly mean(w (Q - y)^2)).
        td_real = (q_real - target_real).pow(2).mean(1)  # (n_critics,)
        td_sim = (w * (q_sim - target_sim).pow(2)).mean(1)

        # Dynamics-aware penalty (l.225-289): soft maximum of Q over the sim (s, a) under
        # the omega-weighted distribution, minus mean Q on real data, clipped, times beta.
        if c.penalty_form == "logsumexp":
            t = c.penalty_temperature
            gap = t * torch.logsumexp((q_sim + log_omega) / t, dim=1)
        else:  # "weighted_mean": the code's use_variant=True
            gap = (omega * q_sim).sum(1)
        penalty_raw = gap - q_real.mean(1)
        penalty = penalty_raw.clamp(c.penalty_clip_min, c.penalty_clip_max)

        critic_loss = (td_real + td_sim + c.penalty_weight * penalty).sum()
        return {
            "actor_loss": actor_loss,
            "critic_loss": critic_loss,
            "alpha_loss": alpha_loss,
            "alpha": alpha,
            "log_pi": log_pi.mean().detach(),
            "td_real": td_real.detach(),
            "td_sim": td_sim.detach(),
            "penalty": penalty.detach(),
            "penalty_raw": penalty_raw.detach(),
            "target_real": target_real,
            "target_sim": target_sim,
            "q_real": q_real.detach(),
            "q_sim": q_sim.detach(),
            "w": w,
            "u": dyn["u"],
            "omega": omega,
        }

    # -- the update -------------------------------------------------------------------------
    def classifier_step(
        self, dataset: TensorBuffer, replay: TensorBuffer, sim: Batch
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """One classifier step on its own 256 real + 256 sim samples (l.155, 364-400), then
        w, u, omega on ``sim`` from the stepped classifiers. Touches only the classifiers
        and their generator, never the actor or critics."""
        c, g = self.config, self.disc_rng.generator
        disc_metrics = self.disc.update(
            dataset.sample(c.disc_batch_size, g), replay.sample(c.disc_batch_size, g)
        )
        return disc_metrics, self.dynamics_terms(sim)

    def rl_step(self, real: Batch, sim: Batch, dyn: dict[str, Tensor]) -> dict[str, Tensor]:
        """Actor, critics and temperature from one backward. The code steps alpha, policy,
        critics in turn, but every loss is computed before any step and the actor loss's
        critic gradient is zeroed before the critic backward (l.292-303), so one backward
        with the critics detached in the actor loss is the same update."""
        c = self.config
        out = self.losses(real, sim, dyn=dyn)
        loss = out["actor_loss"] + out["critic_loss"]
        if c.auto_alpha:
            loss = loss + out["alpha_loss"]
        for opt in (self.actor_opt, self.critic_opt, self.alpha_opt):
            opt.zero_grad(set_to_none=True)
        loss.sum().backward()  # a no-op sum here; seeds trained as a batch sum theirs
        self.actor_opt.step()
        self.critic_opt.step()
        if c.auto_alpha:
            self.alpha_opt.step()
        soft_update(self.target_critic, self.critic, c.tau)

        # metrics reduce over the last dims: batched seeds come first (algorithms/seeds.py)
        omega = out["omega"]
        return {
            "actor_loss": out["actor_loss"].detach(),
            "critic_loss": out["critic_loss"].detach(),
            "alpha_loss": out["alpha_loss"].detach(),
            "alpha": out["alpha"],
            "log_pi": out["log_pi"],
            "td_real": out["td_real"].mean(-1),
            "td_sim": out["td_sim"].mean(-1),
            "penalty": out["penalty"].mean(-1),
            "q_real_mean": out["q_real"].mean((-2, -1)),
            "q_sim_mean": out["q_sim"].mean((-2, -1)),
            "dynamics_ratio_mean": out["w"].mean(-1),
            "u_mean": out["u"].mean(-1),
            "omega_mean": omega.mean(-1),
            "omega_std": omega.std(-1),
        }

    def update(self, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None):
        return self.update_many(1, dataset, replay)

    def update_many(
        self, n: int, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None
    ) -> dict[str, Tensor]:
        """``n`` updates: per update, the classifier step, then the RL step on 128 real +
        128 sim transitions (l.185-186) with the w, u, omega of the stepped classifiers.

        Update t+1's classifier step depends on nothing update t's RL step changes, so
        with two or more CPU threads it runs on a second thread meanwhile (``Overlap``).
        Each chain draws from its own generators in the same order either way, so the
        numbers are those of n updates one after another. (Seeds trained as a batch,
        algorithms/seeds.py, call ``update``: the one-chain path, one update at a time.)"""
        c = self.config
        if self.state_std is None:
            self.setup(dataset)
        overlap = n > 1 and self.device.type == "cpu" and torch.get_num_threads() > 1
        sums: dict[str, Tensor] = {}
        with Overlap(overlap) as worker:
            real, sim = dataset.sample(c.real_batch_size), replay.sample(c.sim_batch_size)
            pending = worker.submit(self.classifier_step, dataset, replay, sim)
            for i in range(n):
                disc_metrics, dyn = pending.result()
                batch = real, sim
                if i + 1 < n:  # start the next update's classifier step
                    real, sim = dataset.sample(c.real_batch_size), replay.sample(c.sim_batch_size)
                    pending = worker.submit(self.classifier_step, dataset, replay, sim)
                accumulate(sums, self.rl_step(*batch, dyn) | disc_metrics)
        return sums
