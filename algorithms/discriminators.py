"""The pair of domain classifiers shared by H2O and DARC.

Two classifiers tell real transitions from simulated ones (Eysenbach et al., ICLR 2021,
"Off-Dynamics Reinforcement Learning", the DARC paper, Sec. 4):

    q(real | s, a)          from d_sa(s, a)
    q(real | s, a, s')      from softmax(d_sas(s, a, s') + d_sa(s, a))

The second one's logits are the *sum* of both networks' logits, so d_sas only learns
what s' adds to (s, a) — the construction of DARC's ``classifiers.py`` in
google-research/darc, which H2O reuses (t6-thu/H2O ``SimpleSAC/sim2real_sac.py``,
``train_discriminator``; ``tests/test_authors_h2o.py`` checks H2O's use step for step,
DARC's own code is read, not run). By Bayes' rule the dynamics log-ratio is

    log P_real(s'|s,a) - log P_sim(s'|s,a)
        = log q(real|s,a,s') - log q(sim|s,a,s') - log q(real|s,a) + log q(sim|s,a)

(DARC's Delta r). With the summed logits the d_sa terms cancel exactly: the log-ratio is
d_sas's logit difference alone, which is how ``log_ratio`` computes it (one network call).

Label order: index 0 = real, 1 = sim, as in the H2O code (DARC's code uses the opposite
order; only the sign convention of the stored logits differs).

Published settings, exposed as arguments:
- H2O (``Network/Weight_net.py``, ``sim2real_sac_main.py`` l.129-130, ``sim2real_sac.py``
  l.35-38, l.364-400): two 256-256 ReLU MLPs -> 2 logits squashed as ``2 * tanh``;
  PyTorch default init; N(0, 0.1^2) noise added to s, a and s' (the same noisy inputs feed
  both networks); Adam 3e-4; every step on 256 real + 256 sim transitions; loss per network
  ``mean_real(-log q(real)) + mean_sim(-log q(sim))``, and since q(.|s,a,s') contains d_sa,
  d_sa receives the gradient of both losses (two ``backward`` calls accumulate into it).
  Two Adam optimizers with equal settings are one Adam over both parameter sets
  (Adam is per-parameter), which is what this class holds.
- DARC (google-research ``darc/classifiers.py``, ``darc_agent.py``): one hidden layer of
  32 units, raw logits (no tanh), Gaussian input noise std 1.0 drawn *independently* for
  the (s, a) input and the (s, a, s') input, Adam 3e-4, loss = sum of both cross-entropies.
  DARC differentiates the per-sample loss vector (gradient of the sum) where H2O uses
  means; under Adam that constant factor only interacts with epsilon.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gapbench.algorithms.buffer import Batch
from gapbench.algorithms.nets import adam, gaussian_noise, mlp

REAL, SIM = 0, 1


class DomainClassifiers(nn.Module):
    """q(real|s,a) and q(real|s,a,s') with their own Adam optimizer (``self.optimizer``).

    An algorithm that owns one should also keep ``self.<name>_opt = classifiers.optimizer``
    so that ``Algorithm.state_dict`` (which looks at the algorithm's attributes) saves the
    optimizer state too. ``num_updates`` (a buffer, so it is checkpointed) counts ``update``
    calls; DARC gates its reward correction on it without a host sync.
    """

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        hidden: Sequence[int] = (256, 256),
        noise_std: float = 0.1,
        lr: float = 3e-4,
        output_bound: float | None = 2.0,
        shared_noise: bool = True,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        self.generator = generator  # for the input noise; None: the global generator
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.noise_std = float(noise_std)
        self.output_bound = output_bound
        self.shared_noise = shared_noise
        self.d_sa = mlp(obs_dim + act_dim, 2, hidden)
        self.d_sas = mlp(2 * obs_dim + act_dim, 2, hidden)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.optimizer = adam(self.parameters(), lr)

    # -- raw network outputs -------------------------------------------------------------
    def _bound(self, x: Tensor) -> Tensor:
        return x if self.output_bound is None else self.output_bound * torch.tanh(x)

    def sa_logits(self, obs: Tensor, act: Tensor) -> Tensor:
        """d_sa(s, a): (B, 2) logits of q(.|s,a)."""
        return self._bound(self.d_sa(torch.cat([obs, act], dim=-1)))

    def adv_logits(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """d_sas(s, a, s'): (B, 2), the part of q(.|s,a,s')'s logits that s' adds."""
        return self._bound(self.d_sas(torch.cat([obs, act, next_obs], dim=-1)))

    def logits(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> tuple[Tensor, Tensor]:
        """(logits of q(.|s,a), logits of q(.|s,a,s') = d_sas + d_sa)."""
        sa = self.sa_logits(obs, act)
        return sa, self.adv_logits(obs, act, next_obs) + sa

    # -- what the algorithms use ---------------------------------------------------------
    def log_ratio(self, obs: Tensor, act: Tensor, next_obs: Tensor) -> Tensor:
        """log P_real(s'|s,a) - log P_sim(s'|s,a), (B,). Not differentiated (no_grad).

        Equals log q(real|sas) - log q(sim|sas) - log q(real|sa) + log q(sim|sa); the
        d_sa logits cancel, so only d_sas is evaluated."""
        with torch.no_grad():
            adv = self.adv_logits(obs, act, next_obs)
            return adv[..., REAL] - adv[..., SIM]

    def dynamics_ratio(
        self,
        obs: Tensor,
        act: Tensor,
        next_obs: Tensor,
        clip: tuple[float, float] | None = (1e-5, 1.0),
    ) -> Tensor:
        """H2O's importance weight w = P_real(s'|s,a) / P_sim(s'|s,a), clipped as in the
        H2O code (``clip_dynamics_ratio_min/max`` = 1e-5 / 1)."""
        w = self.log_ratio(obs, act, next_obs).exp()
        return w if clip is None else w.clamp(clip[0], clip[1])

    # -- training ------------------------------------------------------------------------
    def _noisy(self, x: Tensor) -> Tensor:
        if self.noise_std <= 0:
            return x
        return x + self.noise_std * gaussian_noise(x, self.generator)

    def loss(self, real: Batch, sim: Batch) -> dict[str, Tensor]:
        """Cross-entropy of both classifiers on noisy inputs.

        Per classifier: ``mean_real(-log q(real)) + mean_sim(-log q(sim))`` (the H2O code's
        form). The returned ``loss`` is the sum of both; its gradient reaches d_sa through
        both terms, as in both authors' code."""
        n_real = real.obs.shape[0]
        obs = torch.cat([real.obs, sim.obs])
        act = torch.cat([real.act, sim.act])
        next_obs = torch.cat([real.next_obs, sim.next_obs])
        noisy_obs, noisy_act, noisy_next = self._noisy(obs), self._noisy(act), self._noisy(next_obs)
        if self.shared_noise:  # H2O: one noisy (s, a, s') feeds both networks
            sa = self.sa_logits(noisy_obs, noisy_act)
        else:  # DARC: the (s, a) input gets its own noise draw
            sa = self.sa_logits(self._noisy(obs), self._noisy(act))
        sas = self.adv_logits(noisy_obs, noisy_act, noisy_next) + sa
        labels = torch.full((obs.shape[0],), SIM, dtype=torch.long, device=obs.device)
        labels[:n_real] = REAL

        def domain_ce(logits: Tensor) -> Tensor:
            ce = F.cross_entropy(logits, labels, reduction="none")
            return ce[:n_real].mean() + ce[n_real:].mean()

        sa_loss, sas_loss = domain_ce(sa), domain_ce(sas)
        return {
            "loss": sa_loss + sas_loss,
            "sa_loss": sa_loss,
            "sas_loss": sas_loss,
            "sa_acc": (sa.argmax(-1) == labels).float().mean(),
            "sas_acc": (sas.argmax(-1) == labels).float().mean(),
        }

    def update(self, real: Batch, sim: Batch) -> dict[str, Tensor]:
        """One Adam step on both classifiers; returns detached 0-dim metrics."""
        out = self.loss(real, sim)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].sum().backward()  # a no-op sum here; seeds trained as a batch sum theirs
        self.optimizer.step()
        self.num_updates.add_(1)
        return {
            "disc_sa_loss": out["sa_loss"].detach(),
            "disc_sas_loss": out["sas_loss"].detach(),
            "disc_sa_acc": out["sa_acc"],
            "disc_sas_acc": out["sas_acc"],
        }
