"""A probabilistic ensemble dynamics model (Chua et al. 2018, PETS; the MBPO form).

``n`` MLPs, evaluated as one batched module (``nets.EnsembleLinear``), each predicting a
diagonal Gaussian over ``[reward, next_obs - obs]`` from normalised ``(obs, act)``:

    mean_k, log var_k = f_k((s, a) - mu) / sigma)
    L = sum_k [ mean_{batch, dim} (mean_k - y)^2 exp(-log var_k) + mean_{batch, dim} log var_k ]
        + sum_layers decay_l * ||W_l||^2 / 2

The log-variance is soft-bounded to [min_logvar, max_logvar] (fixed bounds -10 and 0.5).
Swish activations, truncated-normal weights (std 1 / (2 sqrt(fan_in))), zero biases,
and per-layer L2 weight decays are those of the MBPO PyTorch port that VGDF's authors use
(Kavka1/VGDF ``model/dynamics.py``, ``EnsembleModel``). Their loss also adds
0.01 * (sum max_logvar - sum min_logvar), but their bounds do not train
(``requires_grad=False``), so that term is a constant and is left out here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gapbench.algorithms.nets import EnsembleLinear


class EnsembleDynamics(nn.Module):
    """``n`` Gaussian models of (reward, obs change) given (obs, act), with the input
    normaliser kept as buffers (so checkpoints carry it)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        n: int = 7,
        hidden: Sequence[int] = (200, 200, 200, 200),
        weight_decay: Sequence[float] = (2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4),
        max_logvar: float = 0.5,
        min_logvar: float = -10.0,
    ):
        super().__init__()
        dims = [obs_dim + act_dim, *hidden, 2 * (1 + obs_dim)]
        if len(weight_decay) != len(dims) - 1:
            raise ValueError(
                f"weight_decay needs one value per layer ({len(dims) - 1}), got {len(weight_decay)}"
            )
        self.n, self.out_dim = n, 1 + obs_dim
        self.layers = nn.ModuleList(
            EnsembleLinear(a, b, n) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.weight_decay = tuple(float(d) for d in weight_decay)
        self.max_logvar, self.min_logvar = max_logvar, min_logvar
        self.register_buffer("in_mean", torch.zeros(obs_dim + act_dim))
        self.register_buffer("in_std", torch.ones(obs_dim + act_dim))
        with torch.no_grad():
            for layer in self.layers:
                std = 1.0 / (2.0 * math.sqrt(layer.in_dim))
                nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
                nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def fit_normalizer(self, inputs: Tensor) -> None:
        """Mean and population std of the (obs, act) inputs; a constant dimension gets std 1
        (the authors' ``Normalizer.fit``)."""
        x = inputs.double()
        std = x.std(0, correction=0)
        self.in_mean.copy_(x.mean(0))
        self.in_std.copy_(torch.where(std < 1e-12, torch.ones_like(std), std))

    def forward(self, obs: Tensor, act: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and soft-bounded log-variance, each (n, B, 1 + obs_dim). ``obs``/``act``
        are (B, .) (every member sees the same batch) or (n, B, .) (one batch each)."""
        x = (torch.cat([obs, act], -1) - self.in_mean) / self.in_std
        for layer in self.layers[:-1]:
            x = F.silu(layer(x))
        mean, logvar = self.layers[-1](x).chunk(2, dim=-1)
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def loss(self, obs: Tensor, act: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """The Gaussian negative log-likelihood (up to constants) summed over members, plus
        the weight decays; and each member's MSE of the mean (n,). ``target`` is
        [reward, next_obs - obs], shaped like the inputs' batch."""
        mean, logvar = self(obs, act)
        if target.dim() == 2:
            target = target.expand(self.n, -1, -1)
        sq = (mean - target).pow(2)
        nll = (sq * torch.exp(-logvar)).mean((1, 2)) + logvar.mean((1, 2))
        decay = _WeightDecay.apply(self.weight_decay, *(layer.weight for layer in self.layers))
        return nll.sum() + decay, sq.detach().mean((1, 2))

    @torch.no_grad()
    def mse(self, obs: Tensor, act: Tensor, target: Tensor) -> Tensor:
        """Each member's MSE of its mean on (obs, act, target): the holdout measure (n,)."""
        mean, _ = self(obs, act)
        return (mean - target).pow(2).mean((1, 2))


class _WeightDecay(torch.autograd.Function):
    """sum_l d_l ||W_l||^2 / 2 and its gradient d_l W_l, written out: the same numbers as
    autograd through ``d * W.pow(2).sum() / 2`` (that chain's factors 1/2 and 2 are exact),
    one product per weight instead of the chain's copy of W and two products over the ~0.9M
    weights, ~4 ms less per model step on one CPU core (of ~45 ms)."""

    @staticmethod
    def forward(ctx, decays: tuple[float, ...], *weights: Tensor) -> Tensor:
        ctx.decays = decays
        ctx.save_for_backward(*weights)
        return sum(d * w.pow(2).sum() / 2.0 for d, w in zip(decays, weights, strict=True))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:
        weights = ctx.saved_tensors
        return None, *(w * (grad * d) for d, w in zip(ctx.decays, weights, strict=True))


def dynamics_target(rew: Tensor, obs: Tensor, next_obs: Tensor) -> Tensor:
    """The model's regression target [r, s' - s], (B, 1 + obs_dim)."""
    return torch.cat([rew.unsqueeze(-1), next_obs - obs], -1)
