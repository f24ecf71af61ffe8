"""gapbench's CQL and SAC steps against the reference code they follow (young-geng/CQL's
SimpleSAC: ``ConservativeSAC.train`` and ``SAC.train``; the code H2O builds on).

Same weights, the same batch and pinned random draws (policy sampling noise 0, the same
uniform random actions) must give the same losses, the same gradients for the actor and
both critics and the same parameters after one step: the TD target (with SAC's entropy
term), CQL's importance-sampled logsumexp over random / current / next-state actions
and its min-Q weight, the actor and temperature losses, learning rates and the target
update.

Needs a local clone of https://github.com/young-geng/CQL (nothing is downloaded):
``GAPBENCH_CQL_REPO=/path/to/CQL .venv/bin/pytest tests/test_authors_cql.py``.
"""

from __future__ import annotations

import os
from copy import deepcopy

import pytest
import torch
from reference_code import (
    assert_same_sac_parts_after_step,
    batch,
    linears,
    load_simplesac,
    mirror_sac_parts,
    pinned_noise,
)

import algorithms
from algorithms.buffer import Batch, TensorBuffer

REPO = os.environ.get("GAPBENCH_CQL_REPO")
pytestmark = pytest.mark.skipif(
    not REPO, reason="set GAPBENCH_CQL_REPO to a clone of young-geng/CQL to compare with it"
)
OBS, ACT, B = 17, 6, 256


def _networks(model, q_gain: float = 1.0):
    """SimpleSAC's policy and twin Q networks, seeded; ``q_gain`` scales the Q heads."""
    torch.manual_seed(0)
    policy = model.TanhGaussianPolicy(OBS, ACT, arch="256-256", log_std_offset=-1.0)
    qf1 = model.FullyConnectedQFunction(OBS, ACT, arch="256-256")
    qf2 = model.FullyConnectedQFunction(OBS, ACT, arch="256-256")
    with torch.no_grad():
        for qf in (qf1, qf2):
            linears(qf)[-1].weight.mul_(q_gain)
    return policy, qf1, qf2


def _one_batch(data: Batch) -> tuple[dict, TensorBuffer]:
    """The batch in SimpleSAC's dict layout, and a gapbench buffer that samples exactly it."""
    theirs = {
        "observations": data.obs.clone(),
        "actions": data.act.clone(),
        "rewards": data.rew.clone(),
        "next_observations": data.next_obs.clone(),
        "dones": data.done.clone(),
    }
    buffer = TensorBuffer.from_arrays(*(x.numpy() for x in data))
    buffer.sample = lambda n, generator=None: data
    return theirs, buffer


@pytest.mark.parametrize("lagrange", [False, True])
def test_one_cql_step_equals_simplesac(lagrange):
    pkg = load_simplesac(REPO)
    # Q values of several units, so the logsumexp over sampled actions is not flat
    policy, qf1, qf2 = _networks(pkg.model, q_gain=3000.0)
    ours_cls = algorithms.get("cql")
    ours = ours_cls(OBS, ACT, ours_cls.make_config({"cql_lagrange": lagrange}), seed=0)
    c = ours.config
    # conservative_sac_main.py's set-up with gapbench's defaults: the CQL authors' policy
    # lr 1e-4 (SimpleSAC's flag default is 3e-4), target entropy -|A|.
    config = pkg.conservative_sac.ConservativeSAC.get_default_config()
    config.policy_lr, config.qf_lr = c.actor_lr, c.critic_lr
    config.target_entropy = -float(ACT)
    config.cql_lagrange = lagrange
    sac = pkg.conservative_sac.ConservativeSAC(
        config, policy, qf1, qf2, deepcopy(qf1), deepcopy(qf2)
    )
    mirror_sac_parts(sac, ours)

    gen = torch.Generator().manual_seed(1)
    theirs_batch, buffer = _one_batch(batch(B, OBS, ACT, gen))
    uniform = torch.rand(B * c.cql_n_actions * ACT, generator=gen) * 2 - 1
    with pinned_noise(uniform=uniform):
        theirs = sac.train(theirs_batch)
        mine = ours.update(dataset=buffer)

    close = dict(rel=1e-4, abs=1e-5)
    assert theirs["cql/cql_std_q1"] > 0.5 and theirs["cql/cql_std_q2"] > 0.5
    assert float(mine["actor_loss"]) == pytest.approx(theirs["policy_loss"], **close)
    assert float(mine["alpha_loss"]) == pytest.approx(theirs["alpha_loss"], **close)
    assert float(mine["td_loss"]) == pytest.approx(theirs["qf1_loss"] + theirs["qf2_loss"], **close)
    their_cql = theirs["cql/cql_min_qf1_loss"] + theirs["cql/cql_min_qf2_loss"]
    assert float(mine["cql_loss"]) == pytest.approx(their_cql, **close)
    their_diff = (theirs["cql/cql_qf1_diff"] + theirs["cql/cql_qf2_diff"]) / 2
    assert float(mine["cql_diff"]) == pytest.approx(their_diff, **close)
    if lagrange:
        assert float(mine["alpha_prime"]) == pytest.approx(theirs["cql/alpha_prime"], **close)
        assert float(mine["alpha_prime_loss"]) == pytest.approx(
            theirs["cql/alpha_prime_loss"], **close
        )
    assert_same_sac_parts_after_step(sac, ours)
    if lagrange:
        their_prime = sac.log_alpha_prime.constant.item()
        assert ours.log_alpha_prime.item() == pytest.approx(their_prime, abs=1e-7)


def test_one_sac_step_equals_simplesac():
    pkg = load_simplesac(REPO)
    policy, qf1, qf2 = _networks(pkg.model)
    ours = algorithms.get("sac")(OBS, ACT, seed=0)
    assert ours.config.backup_entropy  # the SAC paper's soft backup, SimpleSAC's default too
    config = pkg.sac.SAC.get_default_config()
    config.target_entropy = -float(ACT)
    sac = pkg.sac.SAC(config, policy, qf1, qf2, deepcopy(qf1), deepcopy(qf2))
    mirror_sac_parts(sac, ours)

    theirs_batch, buffer = _one_batch(batch(B, OBS, ACT, torch.Generator().manual_seed(1)))
    with pinned_noise():
        theirs = sac.train(theirs_batch)
        mine = ours.update(replay=buffer)

    close = dict(rel=1e-4, abs=1e-5)
    assert float(mine["actor_loss"]) == pytest.approx(theirs["policy_loss"], **close)
    assert float(mine["alpha_loss"]) == pytest.approx(theirs["alpha_loss"], **close)
    their_critic = theirs["qf1_loss"] + theirs["qf2_loss"]
    assert float(mine["critic_loss"]) == pytest.approx(their_critic, **close)
    assert_same_sac_parts_after_step(sac, ours)
