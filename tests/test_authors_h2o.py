"""gapbench's H2O step against the authors' own (t6-thu/H2O ``Sim2realSAC.train``).

Both implementations start from the same weights and see the same batches; the random
draws are pinned (policy sampling noise 0, classifier input noise 0, the same
perturbation of the next states for u), so one step of each must give the same losses
and the same gradients for the actor, both critics and both classifiers. This checks
every term of the update (classifier cross-entropies, w, u, omega, the weighted sim
Bellman error, the logsumexp penalty, the actor loss) against the reference code rather
than against our reading of it.

Needs a local clone of https://github.com/t6-thu/H2O (nothing is downloaded):
``GAPBENCH_H2O_REPO=/path/to/H2O .venv/bin/pytest tests/test_authors_h2o.py``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path

import pytest
import torch

import algorithms
from algorithms.buffer import Batch, TensorBuffer

REPO = os.environ.get("GAPBENCH_H2O_REPO")
pytestmark = pytest.mark.skipif(
    not REPO, reason="set GAPBENCH_H2O_REPO to a clone of t6-thu/H2O to compare with it"
)
OBS, ACT, N_NEXT = 17, 6, 10


def _authors():
    """The authors' classes, loaded by benchmarks/authors_h2o.py's importer."""
    path = Path(__file__).parents[1] / "benchmarks" / "authors_h2o.py"
    spec = importlib.util.spec_from_file_location("authors_h2o_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path_before = list(sys.path)
    try:
        return module._load_authors_code(REPO)
    finally:  # their folders must not shadow modules for the tests that follow
        sys.path[:] = path_before


def _batch(n: int, gen: torch.Generator) -> Batch:
    return Batch(
        torch.randn(n, OBS, generator=gen),
        torch.rand(n, ACT, generator=gen) * 2 - 1,
        torch.randn(n, generator=gen),
        torch.randn(n, OBS, generator=gen),
        (torch.rand(n, generator=gen) < 0.2).float(),
    )


class _FixedBuffer:
    """Their MixedReplayBuffer's interface, returning the batches given, in their layout."""

    def __init__(self, batches: dict, std: torch.Tensor):
        self.batches, self.std = batches, std

    def sample(self, batch_size, scope=None, type=None):
        b = self.batches[scope, type]
        assert b.obs.shape[0] == batch_size
        if type == "sas":
            return {
                "observations": b.obs.clone(),
                "actions": b.act.clone(),
                "next_observations": b.next_obs.clone(),
            }
        return {
            "observations": b.obs.clone(),
            "actions": b.act.clone(),
            "rewards": b.rew[:, None].clone(),
            "next_observations": b.next_obs.clone(),
            "dones": b.done[:, None].clone(),
        }

    def get_mean_std(self):
        return torch.zeros(1, OBS), self.std.clone()


def _linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


@torch.no_grad()
def _copy_weights(theirs, ours) -> None:
    """Their initial weights into gapbench's H2O (nn.Linear weights are (out, in); the
    critic ensembles store (member, in, out))."""
    for src, dst in zip(_linears(theirs["policy"]), _linears(ours.actor), strict=True):
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)
    ours.actor.log_std_multiplier.copy_(theirs["policy"].log_std_multiplier.constant)
    ours.actor.log_std_offset.copy_(theirs["policy"].log_std_offset.constant)
    members = ((theirs["qf1"], theirs["target_qf1"]), (theirs["qf2"], theirs["target_qf2"]))
    for i, (qf, target_qf) in enumerate(members):
        for net, target in ((qf, ours.critic), (target_qf, ours.target_critic)):
            for src, dst in zip(_linears(net), target.net.layers, strict=True):
                dst.weight[i].copy_(src.weight.T)
                dst.bias[i, 0].copy_(src.bias)
    for name in ("d_sa", "d_sas"):
        for src, dst in zip(
            _linears(theirs[name]), _linears(getattr(ours.disc, name)), strict=True
        ):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)


@contextmanager
def _pinned_noise(u_noise: torch.Tensor):
    """Policy sampling noise 0 (ours: randn_like; theirs: Normal.rsample's normal_) and
    the u perturbation (their torch.randn of shape (B * N, obs_dim)) = ``u_noise``."""
    randn, randn_like, normal_ = torch.randn, torch.randn_like, torch.Tensor.normal_

    def fake_randn(*shape, **kw):
        size = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        assert size == tuple(u_noise.shape), f"unexpected random draw of shape {size}"
        return u_noise.clone()

    torch.randn, torch.randn_like = fake_randn, lambda x, **kw: torch.zeros_like(x)
    torch.Tensor.normal_ = lambda self, *a, **kw: self.zero_()
    try:
        yield
    finally:
        torch.randn, torch.randn_like, torch.Tensor.normal_ = randn, randn_like, normal_


def test_one_h2o_step_equals_the_authors_code():
    qf_cls, policy_cls, disc_cls, sac_cls = _authors()
    torch.manual_seed(0)
    policy = policy_cls(OBS, ACT, arch="256-256", log_std_multiplier=1.0, log_std_offset=-1.0)
    qf1, qf2 = qf_cls(OBS, ACT, arch="256-256"), qf_cls(OBS, ACT, arch="256-256")
    d_sa = disc_cls(OBS + ACT, 256, 2, "cpu")
    d_sas = disc_cls(2 * OBS + ACT, 256, 2, "cpu")
    # Away from the near-zero outputs of a fresh init, so that every term matters: logits
    # of a few units (w and u not trivially 1 and 0) and Q values spread over several
    # units (the logsumexp penalty then differs from an omega-weighted mean).
    with torch.no_grad():
        d_sas.fc3.weight.mul_(20.0)
        for qf in (qf1, qf2):
            _linears(qf)[-1].weight.mul_(300.0)

    gen = torch.Generator().manual_seed(1)
    batches = {
        ("real", None): _batch(128, gen),
        ("sim", None): _batch(128, gen),
        ("real", "sas"): _batch(256, gen),
        ("sim", "sas"): _batch(256, gen),
    }
    std = torch.rand(1, OBS, generator=gen) + 0.5
    u_noise = torch.randn(128 * N_NEXT, OBS, generator=gen)

    config = sac_cls.get_default_config()
    config.device = "cpu"
    config.target_entropy = -float(ACT)
    config.noise_std_discriminator = 0.0
    sac = sac_cls(
        config,
        policy,
        qf1,
        qf2,
        deepcopy(qf1),
        deepcopy(qf2),
        d_sa,
        d_sas,
        _FixedBuffer(batches, std),
    )
    with torch.no_grad():  # targets apart from the critics, so that tau shows in one step
        for p in [*sac.target_qf1.parameters(), *sac.target_qf2.parameters()]:
            p.mul_(0.9)

    h2o_cls = algorithms.get("h2o")
    ours = h2o_cls(OBS, ACT, h2o_cls.make_config({"disc_noise_std": 0.0}), seed=0)
    real, sim = batches["real", None], batches["sim", None]
    ours.setup(TensorBuffer.from_arrays(*(x.numpy() for x in real)))
    ours.state_std = std[0].clone()
    _copy_weights(
        {
            "policy": policy,
            "qf1": qf1,
            "qf2": qf2,
            "target_qf1": sac.target_qf1,
            "target_qf2": sac.target_qf2,
            "d_sa": d_sa,
            "d_sas": d_sas,
        },
        ours,
    )

    with _pinned_noise(u_noise):
        theirs = sac.train(128, 128)
        disc = ours.disc.update(batches["real", "sas"], batches["sim", "sas"])
        dyn = ours.dynamics_terms(sim, u_noise.view(128, N_NEXT, OBS))
        mine = ours.rl_step(real, sim, dyn)

    close = dict(rel=1e-4, abs=1e-5)
    # their sim TD weights and gap measure are far from trivial here ...
    assert 0.2 < theirs["cql/sqrt_IS_ratio"] < 0.95 and theirs["cql/u_sa"] > 0.1
    assert theirs["average_sim_qf1"] ** 2 + theirs["average_real_qf1"] ** 2 > 1.0
    # ... and ours equal them
    their_sqrt_w = theirs["cql/sqrt_IS_ratio"]
    assert float(dyn["w"].sqrt().mean()) == pytest.approx(their_sqrt_w, rel=1e-4, abs=1e-5)
    assert float(disc["disc_sa_loss"]) == pytest.approx(theirs["dsa_train_loss"], **close)
    assert float(disc["disc_sas_loss"]) == pytest.approx(theirs["dsas_train_loss"], **close)
    assert float(mine["actor_loss"]) == pytest.approx(theirs["policy_loss"], **close)
    assert float(mine["alpha_loss"]) == pytest.approx(theirs["alpha_loss"], **close)
    their_critic = (
        theirs["qf1_loss"]
        + theirs["qf2_loss"]
        + theirs["cql/cql_min_qf1_loss"]
        + theirs["cql/cql_min_qf2_loss"]
    )
    assert float(mine["critic_loss"]) == pytest.approx(their_critic, **close)
    assert float(mine["u_mean"]) == pytest.approx(theirs["cql/u_sa"], **close)
    their_penalty = (theirs["cql/cql_qf1_diff"] + theirs["cql/cql_qf2_diff"]) / 2
    assert float(mine["penalty"]) == pytest.approx(their_penalty, **close)

    # Gradients of the step (both sides leave them in .grad; ours of one backward, theirs
    # of their five, each from the pre-step parameters).
    def grads(module):
        return [p.grad for p in _linears_params(module)]

    pairs = [(policy, ours.actor), (d_sa, ours.disc.d_sa), (d_sas, ours.disc.d_sas)]
    for their_mod, our_mod in pairs:
        for g_theirs, g_ours in zip(grads(their_mod), grads(our_mod), strict=True):
            torch.testing.assert_close(g_ours, g_theirs, rtol=1e-4, atol=1e-6)
    for i, qf in enumerate((qf1, qf2)):
        for src, dst in zip(_linears(qf), ours.critic.net.layers, strict=True):
            torch.testing.assert_close(dst.weight.grad[i], src.weight.grad.T, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(dst.bias.grad[i, 0], src.bias.grad, rtol=1e-4, atol=1e-6)

    # After the step (learning rates, Adam, the target update, the temperature step):
    for their_mod, our_mod in pairs:
        for p_theirs, p_ours in zip(
            _linears_params(their_mod), _linears_params(our_mod), strict=True
        ):
            _same_step(p_ours, p_theirs)
    for i, (qf, tqf) in enumerate(((qf1, sac.target_qf1), (qf2, sac.target_qf2))):
        for net, theirs_net in ((ours.critic, qf), (ours.target_critic, tqf)):
            for src, dst in zip(_linears(theirs_net), net.net.layers, strict=True):
                _same_step(dst.weight[i], src.weight.T)
                _same_step(dst.bias[i, 0], src.bias)
    assert float(ours.log_alpha) == pytest.approx(float(sac.log_alpha.constant), abs=1e-7)


def _same_step(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Parameters after one step agree. Adam's first step moves every weight by about
    lr = 3e-4, so a wrong learning rate or target rate moves them all by 1e-5 or more;
    the few weights whose gradient is ~0 (inside the gradient tolerance) may legitimately
    step differently, by a few 1e-6."""
    diff = (ours.detach() - theirs.detach()).abs()
    assert float(diff.max()) < 2e-5, f"max difference {float(diff.max()):.2e}"
    assert float((diff > 1e-6).float().mean()) < 1e-3, "more than 0.1% of the weights differ"


def _linears_params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for lin in _linears(module) for p in (lin.weight, lin.bias)]
