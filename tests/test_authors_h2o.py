"""gapbench's H2O step against the authors' own (t6-thu/H2O ``Sim2realSAC.train``).

Both implementations start from the same weights and see the same batches; the random
draws are pinned (policy sampling noise 0, classifier input noise 0, the same
perturbation of the next states for u), so one step of each must give the same losses,
the same gradients for the actor, both critics and both classifiers, and the same
parameters afterwards. This checks every term of the update (classifier cross-entropies,
w, u, omega, the weighted sim Bellman error, the logsumexp penalty, the actor and
temperature losses, learning rates, the target update) against the reference code
rather than against our reading of it.

Needs a local clone of https://github.com/t6-thu/H2O (nothing is downloaded):
``GAPBENCH_H2O_REPO=/path/to/H2O .venv/bin/pytest tests/test_authors_h2o.py``.
"""

from __future__ import annotations

import os
from copy import deepcopy

import pytest
import torch
from reference_code import (
    assert_same_grads,
    assert_same_params_after_step,
    assert_same_sac_parts_after_step,
    batch,
    linears,
    load_h2o,
    mirror_sac_parts,
    pinned_noise,
)

import algorithms
from algorithms.buffer import TensorBuffer

REPO = os.environ.get("GAPBENCH_H2O_REPO")
pytestmark = pytest.mark.skipif(
    not REPO, reason="set GAPBENCH_H2O_REPO to a clone of t6-thu/H2O to compare with it"
)
OBS, ACT, N_NEXT = 17, 6, 10


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


def test_one_h2o_step_equals_the_authors_code():
    qf_cls, policy_cls, disc_cls, sac_cls = load_h2o(REPO)
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
            linears(qf)[-1].weight.mul_(300.0)

    gen = torch.Generator().manual_seed(1)
    batches = {
        ("real", None): batch(128, OBS, ACT, gen),
        ("sim", None): batch(128, OBS, ACT, gen),
        ("real", "sas"): batch(256, OBS, ACT, gen),
        ("sim", "sas"): batch(256, OBS, ACT, gen),
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
    h2o_cls = algorithms.get("h2o")
    ours = h2o_cls(OBS, ACT, h2o_cls.make_config({"disc_noise_std": 0.0}), seed=0)
    real, sim = batches["real", None], batches["sim", None]
    ours.setup(TensorBuffer.from_arrays(*(x.numpy() for x in real)))
    ours.state_std = std[0].clone()
    mirror_sac_parts(sac, ours)
    for theirs_net, our_net in ((d_sa, ours.disc.d_sa), (d_sas, ours.disc.d_sas)):
        for src, dst in zip(linears(theirs_net), linears(our_net), strict=True):
            with torch.no_grad():
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)

    with pinned_noise(randn=u_noise):
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
    # of their five, each from the pre-step parameters), then the parameters after it
    # (learning rates, Adam, the target update, the temperature step).
    for their_mod, our_mod in ((d_sa, ours.disc.d_sa), (d_sas, ours.disc.d_sas)):
        assert_same_grads(their_mod, our_mod)
        assert_same_params_after_step(their_mod, our_mod)
    assert_same_sac_parts_after_step(sac, ours)
