"""VGDF: Value-Guided Data Filtering (Xu et al., NeurIPS 2023, "Cross-Domain Policy
Adaptation via Value-Guided Data Filtering", arXiv:2305.17625).

SAC on the union of target-domain (real) and source-domain (sim) transitions, where each
sim transition's Bellman error counts only if its value target is *consistent* with the
real dynamics. An ensemble dynamics model P_hat_k of the real system (k = 1..K), trained
on the real transitions, turns each sim (s, a) into K fictitious one-step value targets

    V_k(s, a) = r_hat_k + gamma (1 - d_k) min_i Q'_i(s'_k, mu(s'_k)),  (r_hat_k, s'_k) ~ P_hat_k

(mu: the policy's mean action), fits a Gaussian N(m, sd^2) to the K values, and scores the
sim transition by the likelihood of its own target y = r + gamma (1 - d) min_i Q'_i(s', a'),
a' ~ pi(s'). Only the sim transitions whose likelihood lies above the batch's
``filter_quantile`` (0.75) enter the critic loss, i.e. the top 25 % (the paper's data
selection ratio xi); every real transition does:

    L(Q_i) = E_real[(Q_i - y_soft)^2] + E_sim[1{lik > q_0.75} (Q_i - y_soft)^2]

with y_soft the usual soft target (entropy term included). The actor is SAC's on the sim
and real states together; an *optimistic* second actor, trained against max_i Q_i, is the
one that explores the simulator (the paper's optimistic data collection).

Source of every default and step: the authors' code, Kavka1/VGDF ``agent/vgdf.py``
(``VGDF_Agent.train_ac``, ``_compute_value_loss``, ``_value_expansion``), ``model/``
(policy, value, dynamics) and ``config/vgdf/*.yaml`` (identical across tasks for every
default used here). ODRL (OffDynamicsRL/off-dynamics-rl, ``algo/online_online/vgdf.py``,
``config/mujoco/vgdf/*.yaml``) is a copy of the same code with the same defaults, run
online-online; it has no online-source / offline-target VGDF (its "Online-Offline"
methods are H2O, PAR_BC, SAC_BC, SAC_CQL, SAC_MCQ) and its offline-source variant
(``offline_online/bc_vgdf.py``, the authors' ``vgdf_bc.py``) adds a BC term on the
*source* data, which does not apply here. Where ODRL's VGDF departs from the authors'
(gapbench follows the authors in each):
- evaluation: ODRL's ``select_action`` takes the *optimistic* actor's mean whenever
  ``optimistic: True`` (its default), the authors evaluate the main policy's mean;
- exploration: ODRL's training loop adds N(0, 0.2^2) noise to the optimistic actor's
  sample (clipped to the action bounds), the authors use the sample as it is;
- policy delay: ODRL counts updates from 1 before its test, so its actors step on
  updates 2, 4, ...; the authors' on 1, 3, ...;
- the model's data: ODRL resamples its target buffer with replacement (``sample(size)``),
  the authors take every transition once (``sample_all``); ODRL's input normaliser uses
  the unbiased std, the authors' the population std;
- the filter's start and the model's cadence count updates in ODRL, environment steps in
  the authors' code (the same at one update per step).

Adapted to gapbench's hybrid regime (sim online, real data fixed), which neither the
authors nor ODRL run, and the one real change: the target domain is the fixed real
dataset instead of a buffer that grows by one real step per 10 sim steps. So
- the real batch and the model's data are the dataset (the authors sample both from
  their target buffer);
- the model trains on the dataset *during* the run, ``dynamics_steps_per_update``
  minibatch steps per update, with the authors' stopping rule (10 % holdout, stop once
  no member's holdout MSE has improved by more than 1 % for more than 5 epochs): with
  data that does not change, the authors' schedule (a round of epochs over the whole
  target buffer every 250 steps, restarted each round) becomes one long round, and it
  keeps the per-update cost bounded on a 1M-transition dataset (theirs: at least
  patience + 2 epochs per round, 1-3 model steps per env step from 100k steps on); their
  patience also falls by one every 150k steps (``max_epochs_since_update_decay_interval``,
  0 from 750k on), gapbench's stays ``dynamics_patience``;
- the model's minibatches are drawn with replacement from the training split (the
  authors': one permutation per member per epoch), its holdout is capped at 10k
  transitions, and the 5 "elite" members the authors rank are left out (their value
  expansion uses all 7);
- whether an imagined real next state ends the episode (the authors' hand-written
  termination rule per task) is, by default, the sim transition's own ``done``
  (``termination="sim"``; algorithms do not know the task); the authors' rules are
  options (``hopper``, ``walker2d``, ``ant``; ``none`` for halfcheetah, as theirs).

Where the code departs from the paper's evident intent it is the default and the
alternative an option: each model "sample" is mean + variance (``_value_expansion``:
``mean + ones_like(var) * var``), ``model_sample="gaussian"`` draws mean + std * N(0, 1).
Their likelihood is a float32 density, which underflows to 0 when the members agree closely
relative to the value gap (every score 0 keeps no sim transition; the quantile of mostly
zeros keeps fewer than 25 %); gapbench ranks by the log-likelihood (``filter_score``), the
same order without underflow (``"likelihood"`` is theirs). Network details that differ in
form only: gapbench's shared nets (critic output gain 1e-2, PyTorch default init elsewhere;
the authors use xavier/He init), its exact tanh log-det (the authors' log(1 - tanh^2 +
1e-6)).

Cost: an update is ~4x SAC's on a CPU, as its FLOPs say (2.35 vs 0.58 GFLOP): half of
it is the model's step (until the model stops), a fifth the fictitious values, which run on
every update as in the authors' code (before ``filter_start`` they feed the metrics only).

Read top to bottom: the model's training (``model_step``), the fictitious values and
the filter (``filter_sim``), the losses and the update (``update``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call

from gapbench.algorithms.base import Algorithm, ConfigError, accumulate
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.dynamics import EnsembleDynamics, dynamics_target
from gapbench.algorithms.nets import (
    SeededGenerator,
    StepCounter,
    TanhGaussianActor,
    adam,
    soft_update,
)
from gapbench.algorithms.registry import register
from gapbench.algorithms.sac import init_actor_critic, sac_policy_terms, sac_td_target

TERMINATIONS = ("sim", "none", "hopper", "walker2d", "ant")
MODEL_SAMPLES = ("mean_plus_var", "gaussian", "mean")
FILTER_SCORES = ("likelihood", "log_likelihood")
ACTOR_METRICS = ("actor_loss", "opt_actor_loss", "log_pi", "alpha_loss")
MODEL_METRICS = ("dynamics_loss", "dynamics_train_mse")


@dataclass
class VGDFConfig:
    """VGDF hyper-parameters; defaults from the authors' code (Kavka1/VGDF
    ``config/vgdf/{halfcheetah,hopper,walker,ant}.yaml``, the same in each, and
    ``script/train_vgdf.py``; ODRL's ``config/mujoco/vgdf/*.yaml`` are identical).

    SAC part: ``batch_size`` 128 from each source (128 sim + 128 real); one ``lr`` 3e-4
    for actor, critics and temperature; discount 0.99; tau 5e-3 every update; fixed
    temperature ``alpha: 0.2`` (``auto_alpha=False``; with it on, the authors' loss
    -E[alpha (log pi + H)], target entropy -|A|); 256-256 ReLU actor and twin critics;
    log-std clamped to [-10, 2] with no learnable affine; gradient norms clipped at 100
    (``ac_gradient_clip``); actor, optimistic actor and temperature stepped every 2nd
    update (``training_delay``), the critics every update; optimistic exploration on
    (``train_vgdf.py``: ``--no_optimistic`` off).

    Model (``model_config``, ``EnsembleDynamicsModel``): 7 members (``dynamics_ensemble_size``;
    the 5 ``elite`` members are ranked but never used by the value expansion, so they are
    left out), 4 x 200 Swish layers, Adam 1e-3, per-layer L2 decays, batch 256, holdout
    10 %, patience 5 epochs (``dynamics_max_epochs_since_update``); the holdout is capped at
    ``dynamics_holdout_max`` 10k transitions (the authors' largest: 10 % of the 100k real
    steps of a 1M-step run).

    Filter: quantile 0.75 (``likelihood_gate_threshold``, the ``--data_sharing_ratio``
    flag: keep the top 25 %), from update 100k on (``start_gate_src_sample`` 1e5, all sim
    transitions used before); Gaussian scale = ensemble std (unbiased) + 1e-8.
    """

    batch_size: int = 128  # per source
    discount: float = 0.99
    tau: float = 5e-3
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    hidden: tuple[int, ...] = (256, 256)
    n_critics: int = 2
    auto_alpha: bool = False
    init_alpha: float = 0.2
    target_entropy: float | None = None  # None: -|A|
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    policy_delay: int = 2
    grad_clip: float = 100.0
    optimistic_exploration: bool = True
    # the real-dynamics model
    dynamics_ensemble: int = 7
    dynamics_hidden: tuple[int, ...] = (200, 200, 200, 200)
    dynamics_weight_decay: tuple[float, ...] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4)
    dynamics_lr: float = 1e-3
    dynamics_batch_size: int = 256
    dynamics_holdout_ratio: float = 0.1
    dynamics_holdout_max: int = 10_000
    dynamics_patience: int = 5  # epochs without > 1 % holdout improvement before stopping
    dynamics_steps_per_update: int = 1  # gapbench's cadence (see the module docstring)
    # the filter
    filter_quantile: float = 0.75
    filter_start: int = 100_000  # updates before the filter acts (all sim data used)
    # The authors rank by the density itself ("likelihood"); its log ranks identically and
    # cannot underflow to a batch of zeros that keeps no sim data, so it is the default.
    filter_score: str = "log_likelihood"
    likelihood_eps: float = 1e-8
    model_sample: str = "mean_plus_var"  # the authors' code; "gaussian": the paper
    termination: str = "sim"

    def __post_init__(self) -> None:
        for key, valid in (
            ("termination", TERMINATIONS),
            ("model_sample", MODEL_SAMPLES),
            ("filter_score", FILTER_SCORES),
        ):
            if getattr(self, key) not in valid:
                raise ConfigError(
                    f"hyper-parameter {key!r} must be one of {valid}, got {getattr(self, key)!r}"
                )
        if not 0.0 <= self.filter_quantile < 1.0:
            raise ConfigError(
                f"hyper-parameter 'filter_quantile' must be in [0, 1), got {self.filter_quantile}"
            )
        for key in ("policy_delay", "dynamics_batch_size", "dynamics_steps_per_update"):
            if getattr(self, key) < 1:
                raise ConfigError(f"hyper-parameter {key!r} must be >= 1, got {getattr(self, key)}")
        if self.dynamics_ensemble < 2:
            raise ConfigError(
                "hyper-parameter 'dynamics_ensemble' must be >= 2 (a std over members)"
            )


def not_done(rule: str, next_obs: Tensor, sim_done: Tensor) -> Tensor:
    """1 where an imagined real next state (K, B, obs_dim) continues the episode, as (K, B).

    ``sim``: the sim transition's own flag. The task rules are the authors'
    (``env/env_utils.py``, ODRL's copy the same) on gymnasium's observation layout
    (height at 0, torso angle at 1). Their hopper rule writes ``abs(s[..., 1:] < 100)``,
    the absolute value of a boolean, which PyTorch rejects; here it is |s[1:]| < 100,
    gym's healthy-state range."""
    k, b = next_obs.shape[:2]
    if rule == "sim":
        return (1.0 - sim_done).expand(k, b)
    if rule == "none":
        return next_obs.new_ones(k, b)
    z, angle = next_obs[..., 0], next_obs[..., 1]
    finite = torch.isfinite(next_obs).all(-1)
    if rule == "hopper":
        ok = finite & (next_obs[..., 1:].abs() < 100).all(-1) & (z > 0.7) & (angle.abs() < 0.2)
    elif rule == "walker2d":
        ok = (z > 0.8) & (z < 2.0) & (angle > -1.0) & (angle < 1.0)
    else:  # ant
        ok = finite & (z >= 0.2) & (z <= 1.0)
    return ok.to(next_obs.dtype)


def quantile_gate(score: Tensor, q: float) -> Tensor:
    """1.0 where ``score`` lies strictly above its ``q``-quantile (linear interpolation, as
    ``torch.quantile``): without ties, the top ``1 - q`` of the batch."""
    return (score > torch.quantile(score, q)).to(score.dtype)


class ModelProgress(nn.Module):
    """The model's early-stopping state (saved in checkpoints): each member's best holdout
    MSE, epochs since any member improved by more than 1 %, and whether training stopped."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.register_buffer("best", torch.full((n,), 1e10))  # the authors' start value
        self.register_buffer("holdout_mse", torch.zeros(n))
        self.steps, self.epochs_since, self.stopped = 0, 0, False

    def get_extra_state(self) -> dict:
        return {"steps": self.steps, "epochs_since": self.epochs_since, "stopped": self.stopped}

    def set_extra_state(self, state: dict) -> None:
        self.steps, self.epochs_since = int(state["steps"]), int(state["epochs_since"])
        self.stopped = bool(state["stopped"])


@register
class VGDF(Algorithm):
    name = "vgdf"
    regime = "hybrid"
    Config = VGDFConfig
    # Tuning ranges (gapbench.benchmark.tuning): the filter's quantile (the paper's data
    # selection ratio xi = 1 - q, 25 % by default, from 10 % to 50 %), its start, and the
    # SAC lrs around 3e-4.
    search_space = {
        "filter_quantile": {"type": "categorical", "choices": [0.5, 0.75, 0.9]},
        "filter_start": {"type": "categorical", "choices": [10_000, 100_000]},
        "actor_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "critic_lr": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "init_alpha": {"type": "categorical", "choices": [0.1, 0.2]},
    }

    def __init__(self, obs_dim, act_dim, config=None, seed=0, device="cpu"):
        super().__init__(obs_dim, act_dim, config, seed, device)
        c = self.config
        target_entropy = -float(act_dim) if c.target_entropy is None else c.target_entropy
        init_actor_critic(self, c, target_entropy, c.alpha_lr)
        # The authors' squashed Gaussian: log-std straight from the net, clamped to
        # [-10, 2]; no learnable affine (gapbench's actor's multiplier/offset held at 1 / 0).
        self.actor, self.actor_opt = self._make_actor()
        self.optimistic_actor, self.optimistic_actor_opt = self._make_actor()
        self.dynamics = EnsembleDynamics(
            obs_dim, act_dim, c.dynamics_ensemble, c.dynamics_hidden, c.dynamics_weight_decay
        ).to(self.device)
        self.dynamics_opt = adam(self.dynamics.parameters(), c.dynamics_lr)
        self.model_progress = ModelProgress(c.dynamics_ensemble).to(self.device)
        # The model's own random stream (its holdout split and minibatches, the "gaussian"
        # model samples), apart from the RL step's.
        self.dynamics_rng = SeededGenerator(seed + 0x30, self.device)
        self.steps = StepCounter()
        self.train_idx: Tensor | None = None  # set by setup() from the real dataset
        self.holdout_idx: Tensor | None = None

    def _make_actor(self) -> tuple[TanhGaussianActor, torch.optim.Optimizer]:
        c = self.config
        actor = TanhGaussianActor(
            self.obs_dim,
            self.act_dim,
            c.hidden,
            log_std_multiplier=1.0,
            log_std_offset=0.0,
            log_std_min=c.log_std_min,
            log_std_max=c.log_std_max,
        ).to(self.device)
        actor.log_std_multiplier.requires_grad_(False)
        actor.log_std_offset.requires_grad_(False)
        params = [p for p in actor.parameters() if p.requires_grad]
        return actor, adam(params, c.actor_lr)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Evaluation (deterministic): the policy's mean action. Exploration (the harness's
        sim steps): a sample of the optimistic actor, as the authors collect source data."""
        explore = not deterministic and self.config.optimistic_exploration
        actor = self.optimistic_actor if explore else self.actor
        obs_t = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)
        single = obs_t.dim() == 1
        act = actor.act(obs_t.unsqueeze(0) if single else obs_t, deterministic).cpu().numpy()
        return act[0] if single else act

    # -- the real-dynamics model ------------------------------------------------------------
    def setup(self, dataset: TensorBuffer | None) -> None:
        """Split the real dataset into training and holdout transitions (the authors'
        10 %, at most ``dynamics_holdout_max``) and fit the model's input normaliser on the
        training part."""
        if dataset is None:
            raise ValueError("VGDF is a hybrid algorithm: it needs the real dataset")
        c, n = self.config, dataset.size
        perm = torch.randperm(n, generator=self.dynamics_rng.generator, device=self.device)
        n_hold = min(int(n * c.dynamics_holdout_ratio), c.dynamics_holdout_max)
        self.holdout_idx, self.train_idx = perm[:n_hold], perm[n_hold:]
        self.dynamics.fit_normalizer(
            torch.cat([dataset.obs[self.train_idx], dataset.act[self.train_idx]], -1)
        )

    def model_step(self, dataset: TensorBuffer) -> dict[str, Tensor]:
        """One minibatch step of the model on real transitions (each member its own batch
        of ``dynamics_batch_size``); at the end of each epoch of training data, the holdout
        check of the authors' ``_save_best`` (one host sync per epoch)."""
        c, p, g = self.config, self.model_progress, self.dynamics_rng.generator
        k, n_train = c.dynamics_ensemble, len(self.train_idx)
        pick = torch.randint(
            0, n_train, (k, c.dynamics_batch_size), generator=g, device=self.device
        )
        idx = self.train_idx[pick].flatten()

        def rows(x: Tensor) -> Tensor:  # x[idx] as (k, batch, ...); index_select gathers
            return x.index_select(0, idx).unflatten(0, pick.shape)  # whole rows, ~4x faster

        obs = rows(dataset.obs)
        target = dynamics_target(rows(dataset.rew), obs, rows(dataset.next_obs))
        loss, train_mse = self.dynamics.loss(obs, rows(dataset.act), target)
        self.dynamics_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.dynamics_opt.step()
        p.steps += 1
        epoch = max(1, math.ceil(n_train / c.dynamics_batch_size))
        if len(self.holdout_idx) and p.steps % epoch == 0:
            self.holdout_check(dataset)
        return {"dynamics_loss": loss.detach(), "dynamics_train_mse": train_mse.mean()}

    @torch.no_grad()
    def holdout_check(self, dataset: TensorBuffer) -> None:
        """The authors' early stopping: a member improves if its holdout MSE falls by more
        than 1 % of its best; training stops once none has for more than ``patience``
        epochs in a row."""
        c, p, h = self.config, self.model_progress, self.holdout_idx
        target = dynamics_target(dataset.rew[h], dataset.obs[h], dataset.next_obs[h])
        mse = self.dynamics.mse(dataset.obs[h], dataset.act[h], target)
        improved = (p.best - mse) / p.best > 0.01
        p.best.copy_(torch.where(improved, mse, p.best))
        p.holdout_mse.copy_(mse)
        p.epochs_since = 0 if bool(improved.any()) else p.epochs_since + 1
        p.stopped = p.epochs_since > c.dynamics_patience

    # -- the filter -----------------------------------------------------------------------
    @torch.no_grad()
    def fictitious_values(self, sim: Batch) -> Tensor:
        """V_k(s, a) for each model member k and sim (s, a): (K, B). One model step into the
        real dynamics, then the target critics at the policy's mean action there."""
        c = self.config
        mean, logvar = self.dynamics(sim.obs, sim.act)  # (K, B, 1 + obs_dim)
        if c.model_sample == "mean_plus_var":
            pred = mean + logvar.exp()
        elif c.model_sample == "gaussian":
            noise = torch.randn(
                mean.shape, generator=self.dynamics_rng.generator, device=mean.device
            )
            pred = mean + (0.5 * logvar).exp() * noise
        else:
            pred = mean
        k, b = pred.shape[:2]
        reward, next_obs = pred[..., 0], sim.obs + pred[..., 1:]
        flat = next_obs.reshape(k * b, -1)
        q = self.target_critic(flat, self.actor.act(flat, deterministic=True))
        bootstrap = not_done(c.termination, next_obs, sim.done)
        return reward + bootstrap * c.discount * q.min(0).values.view(k, b)

    @torch.no_grad()
    def filter_sim(self, sim: Batch, y_compare: Tensor) -> dict[str, Tensor]:
        """Score each sim transition by the likelihood of its value target (without the
        entropy term) under N(mean_k V_k, (std_k V_k + eps)^2); the gate keeps those above
        the batch's quantile, or all before ``filter_start`` updates."""
        c = self.config
        values = self.fictitious_values(sim)
        mean, std = values.mean(0), values.std(0)
        # No argument checks: each syncs a GPU, twice an update. The scale is > 0; a NaN
        # reaches the metrics, which the harness checks at each evaluation.
        dist = torch.distributions.Normal(mean, std + c.likelihood_eps, validate_args=False)
        log_lik = dist.log_prob(y_compare)
        score = log_lik.exp() if c.filter_score == "likelihood" else log_lik
        if self.steps.count >= c.filter_start:
            gate = quantile_gate(score, c.filter_quantile)
        else:
            gate = torch.ones_like(score)
        return {
            "gate": gate,
            "score": score,
            "value_gap": (mean - y_compare).abs(),
            "fictitious_std": std,
        }

    # -- losses and the update --------------------------------------------------------------
    def critic_terms(self, real: Batch, sim: Batch) -> dict[str, Tensor]:
        """The critic loss with the filter applied. Random draws, in order: the policy's
        next actions on the real, then on the sim next states (the authors' order)."""
        c = self.config
        alpha = self.log_alpha.exp().detach()
        y_real = sac_td_target(self.actor, self.target_critic, real, c.discount, alpha)
        with torch.no_grad():
            next_act, next_log_pi = self.actor(sim.next_obs)
            next_q = self.target_critic(sim.next_obs, next_act).min(0).values
            bootstrap = c.discount * (1.0 - sim.done)
            y_sim = sim.rew + bootstrap * (next_q - alpha * next_log_pi)
            y_compare = sim.rew + bootstrap * next_q  # the value the filter compares
        filt = self.filter_sim(sim, y_compare)

        q = self.critic(torch.cat([real.obs, sim.obs]), torch.cat([real.act, sim.act]))
        n_real = real.obs.shape[0]
        q_real, q_sim = q[:, :n_real], q[:, n_real:]
        # per critic: a mean over each batch (rejected sim rows count as zeros), summed
        td_real = (q_real - y_real).pow(2).mean(1)
        td_sim = (filt["gate"] * (q_sim - y_sim).pow(2)).mean(1)
        return {
            "critic_loss": (td_real + td_sim).sum(),
            "td_real": td_real.detach().mean(),
            "td_sim": td_sim.detach().mean(),
            "q_real_mean": q_real.detach().mean(),
            "q_sim_mean": q_sim.detach().mean(),
            **filt,
        }

    def optimistic_actor_loss(self, obs: Tensor) -> Tensor:
        """E[alpha log pi_opt(a|s) - max_i Q_i(s, a)], a ~ pi_opt (critics held fixed)."""
        act, log_pi = self.optimistic_actor(obs)
        params = {k: v.detach() for k, v in self.critic.named_parameters()}
        q = functional_call(self.critic, params, (obs, act)).max(0).values
        return (self.log_alpha.exp().detach() * log_pi - q).mean()

    def _step(self, loss: Tensor, params, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        opt.step()

    def update(self, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None):
        """Model step(s) first (the authors train the model before the agent in a step),
        then: the critics on 128 real + 128 sim transitions with the filter; every
        ``policy_delay``-th update the actor, the optimistic actor (both against the
        stepped critics, on the sim and real states) and the temperature; the targets."""
        c = self.config
        if self.train_idx is None:
            self.setup(dataset)
        metrics: dict[str, Tensor] = {}
        if not self.model_progress.stopped:
            for _ in range(c.dynamics_steps_per_update):
                metrics = self.model_step(dataset)

        real, sim = dataset.sample(c.batch_size), replay.sample(c.batch_size)
        crit = self.critic_terms(real, sim)
        self._step(crit["critic_loss"], self.critic.parameters(), self.critic_opt)
        gate = crit["gate"]
        metrics |= {
            "critic_loss": crit["critic_loss"].detach(),
            "td_real": crit["td_real"],
            "td_sim": crit["td_sim"],
            "q_real_mean": crit["q_real_mean"],
            "q_sim_mean": crit["q_sim_mean"],
            "accept_ratio": gate.mean(),
            "value_gap_mean": crit["value_gap"].mean(),
            "fictitious_std_mean": crit["fictitious_std"].mean(),
            "dynamics_holdout_mse": self.model_progress.holdout_mse.mean(),
            "alpha": self.log_alpha.exp().detach(),
        }

        if self.steps.count % c.policy_delay == 0:  # the authors' training_count, from 0
            obs = torch.cat([sim.obs, real.obs])
            actor_loss, _, log_pi = sac_policy_terms(
                self.actor, self.critic, self.log_alpha, obs, self.target_entropy
            )
            self._step(actor_loss, self.actor_opt.param_groups[0]["params"], self.actor_opt)
            opt_loss = self.optimistic_actor_loss(obs)
            opt_params = self.optimistic_actor_opt.param_groups[0]["params"]
            self._step(opt_loss, opt_params, self.optimistic_actor_opt)
            # the authors' temperature loss: -E[alpha (log pi + target entropy)]
            alpha_loss = -(self.log_alpha.exp() * (log_pi.detach() + self.target_entropy)).mean()
            if c.auto_alpha:
                self.alpha_opt.zero_grad(set_to_none=True)
                alpha_loss.backward()
                self.alpha_opt.step()
            metrics |= {
                "actor_loss": actor_loss.detach(),
                "opt_actor_loss": opt_loss.detach(),
                "log_pi": log_pi.detach().mean(),
                "alpha_loss": alpha_loss.detach(),
            }
        soft_update(self.target_critic, self.critic, c.tau)
        self.steps.count += 1
        return metrics

    def update_many(
        self, n: int, dataset: TensorBuffer | None = None, replay: TensorBuffer | None = None
    ) -> dict[str, Tensor]:
        """``n`` updates. The harness divides each summed metric by ``n``; the actor metrics
        (1 update in ``policy_delay``) and the model's (none once it stopped) are rescaled
        so that this gives their mean over the updates that made them."""
        sums: dict[str, Tensor] = {}
        counts = {"actor": 0, "model": 0}
        for _ in range(n):
            metrics = self.update(dataset=dataset, replay=replay)
            counts["actor"] += "actor_loss" in metrics
            counts["model"] += "dynamics_loss" in metrics
            accumulate(sums, metrics)
        for group, keys in (("actor", ACTOR_METRICS), ("model", MODEL_METRICS)):
            if counts[group]:
                for key in keys:
                    sums[key] = sums[key] * (n / counts[group])
        return sums
