"""gapbench's CQL and SAC steps against the reference code they follow (young-geng/CQL's
SimpleSAC: ``ConservativeSAC.train`` and ``SAC.train``; the code H2O builds on), with
every default on.

Same weights and the same data; the batch is drawn by each side its own way (their
``subsample_batch`` from the dataset their main script clips, gapbench's buffer sampling
and ``prepare``) at pinned indices, and every other random draw is pinned but not zero
(``Draws``): policy sampling noise (a policy whose log-std spreads across its clamp at 2
and the value 1), CQL's uniform random actions. One step must give the same losses, the
same gradients for the actor and both critics and the same parameters after it: the TD
target (with SAC's entropy term), CQL's importance-sampled logsumexp over random /
current / next-state actions and its min-Q weight, the actor and temperature losses,
the reparameterisation, learning rates and the target update. gapbench's defaults
against SimpleSAC's own; the one documented departure is CQL's policy lr (1e-4, the
CQL authors' Gym-MuJoCo setting, where SimpleSAC defaults to 3e-4), written into the
test as that number, not read from gapbench.

Mutations of gapbench that these tests catch (``scripts/check_mutations.py``): CQL's
actor or critic learning rate; the actor's log-std max 2 -> 1; reparameterisation
noise scaled by the variance instead of the std.

Needs a local clone of https://github.com/young-geng/CQL (nothing is downloaded):
``GAPBENCH_CQL_REPO=/path/to/CQL .venv/bin/pytest tests/test_authors_cql.py``.
"""

from __future__ import annotations

import os
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
from support.reference_code import (
    Draws,
    assert_same_sac_parts_after_step,
    flag_defaults,
    linears,
    load_defs,
    load_simplesac,
    mirror_sac_parts,
)

from gapbench import algorithms
from gapbench.algorithms.buffer import TensorBuffer

REPO = os.environ.get("GAPBENCH_CQL_REPO")
pytestmark = pytest.mark.skipif(
    not REPO, reason="set GAPBENCH_CQL_REPO to a clone of young-geng/CQL to compare with it"
)
OBS, ACT, N = 17, 6, 500
CQL_KEYS = ("cql_n_actions", "cql_importance_sample", "cql_lagrange", "cql_target_action_gap",
            "cql_temp", "cql_min_q_weight", "cql_max_target_backup")  # fmt: skip
CQL_AUTHORS_POLICY_LR = 1e-4  # aviralkumar2907/CQL README, Gym-MuJoCo: --policy_lr=1e-4


def _flags(script: str) -> dict:
    return flag_defaults(Path(REPO) / "SimpleSAC" / script)


def _networks(model, flags: dict, q_gain: float = 1.0):
    """SimpleSAC's policy and twin Q networks as its main scripts build them, seeded.
    ``q_gain`` scales the Q heads (Q values of several units); the policy head is scaled
    so that its log-std spreads across the clamp at 2 and past 1."""
    torch.manual_seed(0)
    policy = model.TanhGaussianPolicy(
        OBS,
        ACT,
        arch=flags["policy_arch"],
        log_std_multiplier=flags["policy_log_std_multiplier"],
        log_std_offset=flags["policy_log_std_offset"],
    )
    qf1 = model.FullyConnectedQFunction(OBS, ACT, arch=flags["qf_arch"])
    qf2 = model.FullyConnectedQFunction(OBS, ACT, arch=flags["qf_arch"])
    with torch.no_grad():
        for qf in (qf1, qf2):
            linears(qf)[-1].weight.mul_(q_gain)
        linears(policy)[-1].weight[ACT:].mul_(1000.0)  # the log-std half of the head
    return policy, qf1, qf2


def _log_std_spread(policy, obs: torch.Tensor) -> None:
    """The pre-clamp log-std (their policy's formula) crosses both 1 and the clamp at 2."""
    with torch.no_grad():
        _, log_std = torch.split(policy.base_network(obs), ACT, dim=-1)
        log_std = policy.log_std_multiplier() * log_std + policy.log_std_offset()
    assert float(((log_std > 1) & (log_std < 2)).float().mean()) > 0.02
    assert float((log_std > 2).float().mean()) > 0.02


def _dataset(gen: torch.Generator) -> dict[str, np.ndarray]:
    """D4RL-like arrays; a few actions beyond their action clip (0.999)."""
    act = torch.rand(N, ACT, generator=gen) * 2 - 1
    act[:: N // 20] = 0.9999 * torch.sign(act[:: N // 20])
    return {
        "observations": torch.randn(N, OBS, generator=gen).numpy(),
        "actions": act.numpy(),
        "next_observations": torch.randn(N, OBS, generator=gen).numpy(),
        "rewards": torch.randn(N, generator=gen).numpy(),
        "dones": (torch.rand(N, generator=gen) < 0.2).float().numpy(),
    }


def _their_batch(data: dict, flags: dict) -> dict[str, torch.Tensor]:
    """One batch the way conservative_sac_main.py / sac_main.py draw it: the dataset's
    rewards scaled and actions clipped by the flags (CQL), then ``subsample_batch`` and
    ``batch_to_torch`` from their source."""
    path = Path(REPO) / "SimpleSAC" / "replay_buffer.py"
    names = ["index_batch", "subsample_batch", "batch_to_torch"]
    # index_batch: used by subsample_batch
    _, subsample_batch, batch_to_torch = load_defs(path, names, {"np": np, "torch": torch})
    data = dict(data)
    if "reward_scale" in flags:  # conservative_sac_main.py (sac_main.py has neither)
        data["rewards"] = data["rewards"] * flags["reward_scale"] + flags["reward_bias"]
        data["actions"] = np.clip(data["actions"], -flags["clip_action"], flags["clip_action"])
    return batch_to_torch(subsample_batch(data, flags["batch_size"]), "cpu")


def _our_buffer(data: dict) -> TensorBuffer:
    keys = ("observations", "actions", "rewards", "next_observations", "dones")
    return TensorBuffer.from_arrays(*(data[k] for k in keys))


@pytest.mark.parametrize("lagrange", [False, True])
def test_one_cql_step_equals_simplesac(lagrange):
    pkg = load_simplesac(REPO)
    flags = _flags("conservative_sac_main.py")
    # Q values of several units, so the logsumexp over sampled actions is not flat
    policy, qf1, qf2 = _networks(pkg.model, flags, q_gain=3000.0)
    ours = algorithms.get("cql")(OBS, ACT, seed=0)  # gapbench's defaults
    ours.config.cql_lagrange = lagrange  # read at each step; nothing else depends on it
    # conservative_sac_main.py's set-up: SimpleSAC's defaults, target entropy -|A|; the
    # policy lr is the one documented departure (see the module docstring).
    config = pkg.conservative_sac.ConservativeSAC.get_default_config()
    config.policy_lr = CQL_AUTHORS_POLICY_LR
    config.target_entropy = -float(ACT)
    config.cql_lagrange = lagrange
    sac = pkg.conservative_sac.ConservativeSAC(
        config, policy, qf1, qf2, deepcopy(qf1), deepcopy(qf2)
    )
    mirror_sac_parts(sac, ours)

    gen = torch.Generator().manual_seed(1)
    data = _dataset(gen)
    b, n = flags["batch_size"], config.cql_n_actions
    idx = torch.randint(0, N, (b,), generator=gen)
    eps = [torch.randn(rows, ACT, generator=gen) for rows in (b, b, b * n, b * n)]
    uniform = torch.rand(b * n * ACT, generator=gen) * 2 - 1
    _log_std_spread(policy, torch.as_tensor(data["observations"][idx]))
    # their draws: actions at s, next actions at s', uniform actions, n actions at s and
    # at s'; ours the same, the last two from one actor call
    with Draws(normal=eps, uniform=[uniform], indices=[(idx, N)]).served():
        theirs = sac.train(_their_batch(data, flags))
    our_eps = [eps[0], eps[1], torch.cat(eps[2:])]
    with Draws(normal=our_eps, uniform=[uniform], indices=[(idx, N)]).served():
        mine = ours.update_many(1, dataset=_our_buffer(data))

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
    flags = _flags("sac_main.py")
    policy, qf1, qf2 = _networks(pkg.model, flags)
    ours = algorithms.get("sac")(OBS, ACT, seed=0)
    config = pkg.sac.SAC.get_default_config()
    config.target_entropy = -float(ACT)
    sac = pkg.sac.SAC(config, policy, qf1, qf2, deepcopy(qf1), deepcopy(qf2))
    mirror_sac_parts(sac, ours)

    gen = torch.Generator().manual_seed(1)
    data = _dataset(gen)
    b = flags["batch_size"]
    idx = torch.randint(0, N, (b,), generator=gen)
    eps = [torch.randn(b, ACT, generator=gen) for _ in range(2)]
    _log_std_spread(policy, torch.as_tensor(data["observations"][idx]))
    # sac_main.py samples its replay buffer with the same np.random.randint draw
    with Draws(normal=eps, indices=[(idx, N)]).served():
        theirs = sac.train(_their_batch(data, flags))
    with Draws(normal=eps, indices=[(idx, N)]).served():
        mine = ours.update_many(1, replay=_our_buffer(data))

    close = dict(rel=1e-4, abs=1e-5)
    assert float(mine["actor_loss"]) == pytest.approx(theirs["policy_loss"], **close)
    assert float(mine["alpha_loss"]) == pytest.approx(theirs["alpha_loss"], **close)
    their_critic = theirs["qf1_loss"] + theirs["qf2_loss"]
    assert float(mine["critic_loss"]) == pytest.approx(their_critic, **close)
    assert_same_sac_parts_after_step(sac, ours)


def test_defaults_are_simplesacs():
    """CQL's and SAC's defaults against SimpleSAC's config and main-script flags, read
    from their code (CQL's policy lr: the documented departure)."""
    pkg = load_simplesac(REPO)
    for ours_cls, theirs, flags in (
        (algorithms.get("cql"), pkg.conservative_sac.ConservativeSAC.get_default_config(),
         _flags("conservative_sac_main.py")),
        (algorithms.get("sac"), pkg.sac.SAC.get_default_config(), _flags("sac_main.py")),
    ):  # fmt: skip
        ours = ours_cls.Config()
        assert theirs.target_update_period == 1 and theirs.use_automatic_entropy_tuning
        assert theirs.optimizer_type == "adam" and ours.init_alpha == 1.0
        expected = {
            "batch_size": flags["batch_size"],
            "discount": theirs.discount,
            "tau": theirs.soft_target_update_rate,
            "critic_lr": theirs.qf_lr,
            "hidden": tuple(int(h) for h in flags["qf_arch"].split("-")),
            "backup_entropy": theirs.backup_entropy,
        }
        if ours_cls.name == "cql":
            assert theirs.policy_lr == 3e-4 and ours.alpha_lr is None  # alpha: policy lr
            expected |= {
                "actor_lr": CQL_AUTHORS_POLICY_LR,
                "clip_action": flags["clip_action"],
                "bc_steps": flags["bc_epochs"],
                **{k: theirs[k] for k in CQL_KEYS},
            }
            assert theirs.cql_clip_diff_min == -np.inf and ours.cql_clip_diff_min is None
            assert theirs.cql_clip_diff_max == np.inf and ours.cql_clip_diff_max is None
        else:
            expected |= {"actor_lr": theirs.policy_lr, "alpha_lr": theirs.policy_lr}
        assert {k: getattr(ours, k) for k in expected} == expected
