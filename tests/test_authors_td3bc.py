"""gapbench's TD3+BC step against a runnable PyTorch reference: CORL's single-file
``algorithms/offline/td3_bc.py`` (tinkoff-ai/CORL, ``TD3_BC``), a port of the authors'
sfujim/TD3_BC.

Same weights (targets moved apart from the online networks, critics scaled to Q of a few
units so that lambda = alpha / mean|Q| is away from alpha), same batches (pinned
indices), same target-policy noise (pinned draws, large enough that the clip acts), the
same dataset statistics. Two updates on each side: the first a critic step alone, the
second a critic step, the delayed actor step and the target updates. After each, the
same losses, gradients and parameters.

Where CORL departs from the authors, and what gapbench does (``algorithms/td3bc.py``
says the same): two critic modules with an Adam each (authors: one module and one Adam;
the same under Adam); an optional reward normalisation, off by default (authors and
gapbench: none). gapbench's twin critics are one batched ensemble whose first member is
the actor's Q_1.

Needs a local clone of https://github.com/tinkoff-ai/CORL (nothing is downloaded):
``GAPBENCH_CORL_REPO=/path/to/CORL .venv/bin/pytest tests/test_authors_td3bc.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from support.reference_code import (
    Draws,
    assert_same_grad,
    assert_same_params_after_step,
    assert_same_step,
    call_keywords,
    linears,
    load_corl,
)
from test_authors_bc import copy_linears, dataset_arrays, normalised_copy, to_buffer

from gapbench import algorithms

REPO = os.environ.get("GAPBENCH_CORL_REPO")
pytestmark = pytest.mark.skipif(
    not REPO, reason="set GAPBENCH_CORL_REPO to a clone of tinkoff-ai/CORL to compare with it"
)
OBS, ACT, N = 11, 3, 600
SCRIPT = "td3_bc"


@torch.no_grad()
def copy_twin(critics, ensemble) -> None:
    """CORL's two Critic modules (nn.Linear weights (out, in)) -> one gapbench ensemble."""
    for i, critic in enumerate(critics):
        for src, dst in zip(linears(critic), ensemble.net.layers, strict=True):
            dst.weight[i].copy_(src.weight.T)
            dst.bias[i, 0].copy_(src.bias)


def same_twin_grads(critics, ensemble) -> None:
    for i, critic in enumerate(critics):
        for src, dst in zip(linears(critic), ensemble.net.layers, strict=True):
            assert_same_grad(dst.weight.grad[i], src.weight.grad.T)
            assert_same_grad(dst.bias.grad[i, 0], src.bias.grad)


def same_twin_params(critics, ensemble) -> None:
    for i, critic in enumerate(critics):
        for src, dst in zip(linears(critic), ensemble.net.layers, strict=True):
            assert_same_step(dst.weight[i], src.weight.T)
            assert_same_step(dst.bias[i, 0], src.bias)


def same_actor_step(theirs: torch.nn.Module, ours: torch.nn.Module) -> None:
    """``assert_same_step`` for the actor, except where the reference gradient is ~0 (below
    1e-6 of its largest entry): Adam's first step there, g / (|g| + 1e-8), is rounding
    noise through the six layers of actor and critic (a few weights of the 256 x 256 layer,
    by up to 5e-5). The share of weights that differ at all is still bounded."""
    for lin_theirs, lin_ours in zip(linears(theirs), linears(ours), strict=True):
        for a, b in ((lin_theirs.weight, lin_ours.weight), (lin_theirs.bias, lin_ours.bias)):
            diff = (a - b).detach().abs()
            live = a.grad.abs() > 1e-6 * float(a.grad.abs().max())
            assert float(diff[live].max()) < 2e-5, f"max difference {float(diff.max()):.2e}"
            assert float((diff > 1e-6).float().mean()) < 1e-3, "more than 0.1% differ"


def setup():
    """CORL's trainer as its ``train`` builds it (TrainConfig defaults, max_action 1) on
    the normalised dataset, and gapbench's TD3+BC (defaults) mirrored to it."""
    corl = load_corl(REPO, SCRIPT)
    cfg = corl.TrainConfig
    gen = torch.Generator().manual_seed(2)
    data = dataset_arrays(gen)
    theirs_data, mean, std = normalised_copy(corl, data)
    buffer = corl.ReplayBuffer(OBS, ACT, N, "cpu")
    buffer.load_d4rl_dataset(theirs_data)

    torch.manual_seed(0)
    actor = corl.Actor(OBS, ACT, max_action=1.0)
    critics = [corl.Critic(OBS, ACT), corl.Critic(OBS, ACT)]
    lrs = [kw["lr"] for kw in call_keywords(Path(corl.__file__), "Adam")]  # actor, c1, c2
    trainer = corl.TD3_BC(
        max_action=1.0,
        actor=actor,
        actor_optimizer=torch.optim.Adam(actor.parameters(), lr=lrs[0]),
        critic_1=critics[0],
        critic_1_optimizer=torch.optim.Adam(critics[0].parameters(), lr=lrs[1]),
        critic_2=critics[1],
        critic_2_optimizer=torch.optim.Adam(critics[1].parameters(), lr=lrs[2]),
        discount=cfg.discount,
        tau=cfg.tau,
        policy_noise=cfg.policy_noise,  # x max_action = 1
        noise_clip=cfg.noise_clip,
        policy_freq=cfg.policy_freq,
        alpha=cfg.alpha,
    )
    with torch.no_grad():
        for critic in critics:  # Q of a few units: lambda away from alpha
            linears(critic)[-1].weight.mul_(30.0)
        trainer.critic_1_target.load_state_dict(critics[0].state_dict())
        trainer.critic_2_target.load_state_dict(critics[1].state_dict())
        targets = (trainer.actor_target, trainer.critic_1_target, trainer.critic_2_target)
        for net in targets:  # apart from the online networks: tau shows in one step
            for p in net.parameters():
                p.mul_(0.9)

    ours = algorithms.get("td3bc")(OBS, ACT, seed=0)
    dataset = to_buffer(data)
    ours.setup(dataset)
    torch.testing.assert_close(ours.obs_norm.mean, torch.as_tensor(mean), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.obs_norm.std, torch.as_tensor(std), rtol=1e-5, atol=1e-6)
    copy_linears(actor, ours.actor)
    copy_linears(trainer.actor_target, ours.target_actor)
    copy_twin(critics, ours.critic)
    copy_twin([trainer.critic_1_target, trainer.critic_2_target], ours.target_critic)
    idx = [torch.randint(0, N, (cfg.batch_size,), generator=gen) for _ in range(2)]
    noise = [3.0 * torch.randn(cfg.batch_size, ACT, generator=gen) for _ in range(2)]
    assert bool((noise[0].abs() * cfg.policy_noise > cfg.noise_clip).any())  # the clip acts
    return corl, trainer, buffer, ours, dataset, idx, noise


def test_two_td3bc_steps_equal_corls():
    corl, trainer, buffer, ours, dataset, idx, noise = setup()
    batch_size = corl.TrainConfig.batch_size
    critics = [trainer.critic_1, trainer.critic_2]
    targets = [trainer.critic_1_target, trainer.critic_2_target]
    close = dict(rel=1e-5, abs=1e-6)

    # update 1: the critics alone
    actor_before = [p.clone() for p in ours.actor.parameters()]
    with Draws(indices=[(idx[0], N)], normal=[noise[0]]).served():
        log = trainer.train(buffer.sample(batch_size))
    with Draws(indices=[(idx[0], N)], normal=[noise[0]]).served():
        mine = ours.update(dataset)
    assert set(log) == {"critic_loss"} and "actor_loss" not in mine
    assert float(mine["critic_loss"]) == pytest.approx(log["critic_loss"], **close)
    same_twin_grads(critics, ours.critic)
    same_twin_params(critics, ours.critic)
    same_twin_params(targets, ours.target_critic)  # not updated yet: still apart
    assert all(
        torch.equal(a, b) for a, b in zip(actor_before, ours.actor.parameters(), strict=True)
    )

    # update 2: critics, the delayed actor step, the targets
    with Draws(indices=[(idx[1], N)], normal=[noise[1]]).served():
        log = trainer.train(buffer.sample(batch_size))
    with Draws(indices=[(idx[1], N)], normal=[noise[1]]).served():
        mine = ours.update(dataset)
    assert float(mine["critic_loss"]) == pytest.approx(log["critic_loss"], **close)
    assert float(mine["actor_loss"]) == pytest.approx(log["actor_loss"], **close)
    assert abs(float(mine["lmbda"]) - corl.TrainConfig.alpha) > 0.5  # mean |Q| away from 1
    # CORL's actor loss also leaves gradients in critic_1 (zeroed before its next step);
    # gapbench's computes none, so only the actor's gradients compare here. They pass
    # through the actor and the just-stepped critic (six layers, two sums over the batch):
    # float32 rounding reaches ~2e-5 of the largest entry, not the 1e-5 of one network.
    for p_theirs, p_ours in zip(linears(trainer.actor), linears(ours.actor), strict=True):
        for theirs, mine_g in ((p_theirs.weight.grad, p_ours.weight.grad),
                               (p_theirs.bias.grad, p_ours.bias.grad)):  # fmt: skip
            scale = float(theirs.abs().max())
            torch.testing.assert_close(mine_g, theirs, rtol=1e-4, atol=5e-5 * scale)
    same_actor_step(trainer.actor, ours.actor)
    same_twin_params(critics, ours.critic)
    same_twin_params(targets, ours.target_critic)
    assert_same_params_after_step(trainer.actor_target, ours.target_actor)  # tau x that
    # evaluation: CORL normalises the raw observation in its env wrapper, gapbench's actor
    raw = buffer_raw = dataset.obs[:5].numpy()
    mean, std = ours.obs_norm.mean.numpy(), ours.obs_norm.std.numpy()
    theirs_act = np.stack([trainer.actor.act(corl.normalize_states(o, mean, std)) for o in raw])
    np.testing.assert_allclose(ours.act(buffer_raw), theirs_act, rtol=1e-4, atol=1e-5)


def test_defaults_are_corls():
    corl = load_corl(REPO, SCRIPT)
    cfg, ours = corl.TrainConfig, algorithms.get("td3bc").Config()
    path = Path(corl.__file__)
    expected = {
        "batch_size": cfg.batch_size,
        "discount": cfg.discount,
        "tau": cfg.tau,
        "alpha": cfg.alpha,
        "policy_noise": cfg.policy_noise,
        "noise_clip": cfg.noise_clip,
        "policy_delay": cfg.policy_freq,
        "normalize_states": cfg.normalize,
        "state_norm_eps": call_keywords(path, "compute_mean_std")[0]["eps"],
    }
    assert {k: getattr(ours, k) for k in expected} == expected
    lrs = [kw["lr"] for kw in call_keywords(path, "Adam")]
    assert lrs == [ours.actor_lr, ours.critic_lr, ours.critic_lr]
    for net in (corl.Actor(OBS, ACT, 1.0), corl.Critic(OBS, ACT)):
        assert tuple(lin.out_features for lin in linears(net)[:-1]) == ours.hidden
    assert ours.n_critics == 2 and not cfg.normalize_reward  # the authors' (no reward scaling)
