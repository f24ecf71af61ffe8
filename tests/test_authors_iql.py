"""gapbench's IQL step against a runnable PyTorch reference: CORL's single-file
``algorithms/offline/iql.py`` (tinkoff-ai/CORL, ``ImplicitQLearning``).

gapbench follows the IQL authors' step (ikostrikov/implicit_q_learning
``learner._update_jit``); CORL departs from it in two places inside the step, so the
comparison runs CORL's own pieces (``_update_v``, ``_update_policy``, ``_update_q`` with
its optimizers, target update and lr schedule) in the authors' order, and a second test
shows that CORL's own ``train`` equals gapbench's pieces fed what CORL feeds them. Where
CORL departs from the authors, and what gapbench does (the IQL module docstring says the
same):

- advantage weights and TD target from V *before* its step (authors: the stepped V);
  gapbench: the authors'.
- critic loss averaged over the two critics (authors: summed); gapbench: summed (under
  Adam the first step is the same, the gradients differ by 2).
- states normalised by the dataset's mean and std (``normalize=True``; authors: none);
  gapbench: none.
- rewards not normalised (``normalize_reward=False``; authors: x 1000 / (max - min
  episode return) on locomotion); gapbench: the authors' (here both use it, through
  CORL's ``modify_reward``).
- policy log-std clamped to [-20, 2] (authors: [-5, 2]); gapbench: [-5, 2].
- PyTorch's default initialisation (authors: orthogonal, scale sqrt 2); gapbench: CORL's.
- the cosine schedule, PyTorch's ``CosineAnnealingLR`` over ``max_timesteps``, rises
  again after it (optax's holds 0); gapbench: optax's, over the run's own updates.

Mutations of gapbench caught here (``scripts/check_mutations.py``): the expectile, the
inverse temperature, the advantage clip, the actor or critic lr, the value from before
its step, the actor-lr horizon.

Needs a local clone of https://github.com/tinkoff-ai/CORL (nothing is downloaded):
``GAPBENCH_CORL_REPO=/path/to/CORL .venv/bin/pytest tests/test_authors_iql.py``.
"""

from __future__ import annotations

import os
import types
from copy import deepcopy

import numpy as np
import pytest
import torch
from support.reference_code import (
    Draws,
    assert_same_grad,
    assert_same_grads,
    assert_same_params_after_step,
    assert_same_step,
    linears,
    load_corl,
)

from gapbench import algorithms
from gapbench.algorithms.buffer import TensorBuffer
from gapbench.algorithms.iql import cosine_decay

REPO = os.environ.get("GAPBENCH_CORL_REPO")
pytestmark = pytest.mark.skipif(
    not REPO, reason="set GAPBENCH_CORL_REPO to a clone of tinkoff-ai/CORL to compare with it"
)
OBS, ACT, EP_LEN, N_EPISODES = 17, 6, 50, 10
N = EP_LEN * N_EPISODES
ENV = "hopper-medium-v2"  # only its name matters: CORL's reward normalisation reads it


def load_corl_iql(repo: str) -> types.ModuleType:
    return load_corl(repo, "iql")


def _dataset(gen: torch.Generator) -> dict[str, np.ndarray]:
    """D4RL-like arrays: N_EPISODES episodes of EP_LEN steps, each ending in a terminal
    (so CORL's return ranges and gapbench's episode ends agree)."""
    terminals = np.zeros(N, np.float32)
    terminals[EP_LEN - 1 :: EP_LEN] = 1.0
    return {
        "observations": torch.randn(N, OBS, generator=gen).numpy(),
        "actions": ((torch.rand(N, ACT, generator=gen) * 2 - 1) * 0.99).numpy(),
        "rewards": (torch.randn(N, generator=gen) + 1.0).numpy(),
        "next_observations": torch.randn(N, OBS, generator=gen).numpy(),
        "terminals": terminals,
    }


def _setup(max_steps: int):
    """CORL's trainer as its ``train`` builds it (TrainConfig defaults) on the dataset
    with the authors' reward normalisation, and gapbench's IQL (defaults) mirrored to it."""
    corl = load_corl_iql(REPO)
    cfg = corl.TrainConfig
    gen = torch.Generator().manual_seed(1)
    data = _dataset(gen)
    theirs_data = {k: v.copy() for k, v in data.items()}
    corl.modify_reward(theirs_data, ENV)  # the authors' normalisation, CORL's code
    buffer = corl.ReplayBuffer(OBS, ACT, N, "cpu")
    buffer.load_d4rl_dataset(theirs_data)

    torch.manual_seed(0)
    actor = corl.GaussianPolicy(OBS, ACT, max_action=1.0)
    qf, vf = corl.TwinQ(OBS, ACT), corl.ValueFunction(OBS)
    trainer = corl.ImplicitQLearning(
        max_action=1.0,
        actor=actor,
        actor_optimizer=torch.optim.Adam(actor.parameters(), lr=cfg.actor_lr),
        q_network=qf,
        q_optimizer=torch.optim.Adam(qf.parameters(), lr=cfg.qf_lr),
        v_network=vf,
        v_optimizer=torch.optim.Adam(vf.parameters(), lr=cfg.vf_lr),
        iql_tau=cfg.iql_tau,
        beta=cfg.beta,
        max_steps=max_steps,
        discount=cfg.discount,
        tau=cfg.tau,
    )
    # Away from a fresh init: Q and V of a few units (advantages of either sign, some
    # weights at the clip of 100), a log-std away from 0, targets apart from the critics.
    with torch.no_grad():
        for net in (qf.q1, qf.q2):
            linears(net)[-1].weight.mul_(30.0)
        linears(vf)[-1].weight.mul_(30.0)
        actor.log_std.copy_(torch.linspace(-1.0, 0.5, ACT))
        trainer.q_target = deepcopy(qf).requires_grad_(False)
        for p in trainer.q_target.parameters():
            p.mul_(0.9)

    ours = algorithms.get("iql")(OBS, ACT, seed=0)
    ours.set_total_updates(max_steps)
    keys = ("observations", "actions", "rewards", "next_observations", "terminals")
    dataset = TensorBuffer.from_arrays(*(data[k] for k in keys), end=data["terminals"] > 0)
    ours.setup(dataset)
    with torch.no_grad():
        for src, dst in zip(linears(actor), linears(ours.actor), strict=True):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        ours.actor.log_std.copy_(actor.log_std)
        for src, dst in zip(linears(vf), linears(ours.value), strict=True):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
        for ensemble, twin in ((ours.critic, qf), (ours.target_critic, trainer.q_target)):
            for i, net in enumerate((twin.q1, twin.q2)):
                for src, dst in zip(linears(net), ensemble.net.layers, strict=True):
                    dst.weight[i].copy_(src.weight.T)
                    dst.bias[i, 0].copy_(src.bias)
    idx = torch.randint(0, N, (cfg.batch_size,), generator=gen)
    return corl, trainer, buffer, ours, dataset, idx


def _critic_grads(twin, ensemble, factor: float) -> None:
    for i, net in enumerate((twin.q1, twin.q2)):
        for src, dst in zip(linears(net), ensemble.net.layers, strict=True):
            assert_same_grad(dst.weight.grad[i], factor * src.weight.grad.T)
            assert_same_grad(dst.bias.grad[i, 0], factor * src.bias.grad)


def _critic_params(twin, ensemble) -> None:
    for i, net in enumerate((twin.q1, twin.q2)):
        for src, dst in zip(linears(net), ensemble.net.layers, strict=True):
            assert_same_step(dst.weight[i], src.weight.T)
            assert_same_step(dst.bias[i, 0], src.bias)


def test_one_iql_step_equals_corls_pieces_in_the_authors_order():
    max_steps = 4  # a short run: the actor lr decays over it
    corl, trainer, buffer, ours, dataset, idx = _setup(max_steps)
    log: dict = {}
    with Draws(indices=[(idx, N)]).served():
        obs, act, rew, next_obs, done = buffer.sample(corl.TrainConfig.batch_size)
    with torch.no_grad():
        q_t = trainer.q_target(obs, act)
    trainer._update_v(obs, act, log)
    with torch.no_grad():  # the authors' step: the stepped V for the actor and the critics
        adv, next_v = q_t - trainer.vf(obs), trainer.vf(next_obs)
    trainer._update_policy(adv, obs, act, log)
    trainer._update_q(next_v, obs, act, rew.squeeze(-1), done.squeeze(-1), log)
    with Draws(indices=[(idx, N)]).served():
        mine = ours.update_many(1, dataset)

    close = dict(rel=1e-4, abs=1e-5)
    weight = torch.exp(corl.TrainConfig.beta * adv)
    assert bool((weight > corl.EXP_ADV_MAX).any()) and bool((adv < 0).any())
    assert float(mine["value_loss"]) == pytest.approx(log["value_loss"], **close)
    assert float(mine["actor_loss"]) == pytest.approx(log["actor_loss"], **close)
    # CORL averages the two critics' losses, the authors (and gapbench) sum them
    assert float(mine["critic_loss"]) == pytest.approx(2 * log["q_loss"], **close)
    for theirs_net, our_net in ((trainer.vf, ours.value), (trainer.actor, ours.actor)):
        assert_same_grads(theirs_net, our_net)
        assert_same_params_after_step(theirs_net, our_net)
    assert_same_grad(ours.actor.log_std.grad, trainer.actor.log_std.grad)
    assert_same_step(ours.actor.log_std, trainer.actor.log_std)
    _critic_grads(trainer.qf, ours.critic, factor=2.0)
    _critic_params(trainer.qf, ours.critic)  # Adam's first step: the factor 2 cancels
    _critic_params(trainer.q_target, ours.target_critic)
    # the actor lr for the next update: cosine over the run's max_steps on both sides
    their_lr = trainer.actor_optimizer.param_groups[0]["lr"]
    our_next = ours.config.actor_lr * cosine_decay(ours.steps.count, ours.decay_steps)
    assert our_next == pytest.approx(their_lr, rel=1e-9) and their_lr < 0.9 * 3e-4


def test_corls_own_step_is_gapbenchs_pieces_fed_the_value_before_its_step():
    """CORL's ``train`` as it is: gapbench's value step, and gapbench's actor and critic
    losses given V before the value step (critic loss halved), equal it; gapbench's
    own step (V after it) does not."""
    corl, trainer, buffer, ours, dataset, idx = _setup(corl_max_steps := 1_000_000)
    assert ours.decay_steps == corl_max_steps
    with Draws(indices=[(idx, N)]).served():
        log = trainer.train(buffer.sample(corl.TrainConfig.batch_size))
    batch = ours.prepare(dataset.index(idx))
    q_t = ours.target_q(batch)
    with torch.no_grad():
        v_before, next_v_before = ours.v(batch.obs), ours.v(batch.next_obs)
    fed_before = ours.actor_critic_losses(batch, q_t, v_before, next_v_before)
    fed_before = {k: v.detach() for k, v in fed_before.items()}
    value_loss = ours.value_loss(batch, q_t)[0].detach()
    close = dict(rel=1e-4, abs=1e-5)
    assert float(value_loss) == pytest.approx(log["value_loss"], **close)
    assert float(fed_before["actor_loss"]) == pytest.approx(log["actor_loss"], **close)
    assert float(fed_before["critic_loss"]) / 2 == pytest.approx(log["q_loss"], **close)
    with Draws(indices=[(idx, N)]).served():
        mine = ours.update_many(1, dataset)
    assert float(mine["actor_loss"]) != pytest.approx(log["actor_loss"], rel=1e-3)


def test_defaults_are_corls_where_it_follows_the_authors():
    corl = load_corl_iql(REPO)
    cfg, ours = corl.TrainConfig, algorithms.get("iql").Config()
    expected = {
        "batch_size": cfg.batch_size,
        "discount": cfg.discount,
        "tau": cfg.tau,
        "expectile": cfg.iql_tau,
        "temperature": cfg.beta,
        "max_weight": corl.EXP_ADV_MAX,
        "actor_lr": cfg.actor_lr,
        "critic_lr": cfg.qf_lr,
        "value_lr": cfg.vf_lr,
        "n_critics": 2,  # TwinQ
    }
    assert {k: getattr(ours, k) for k in expected} == expected
    assert cfg.actor_dropout is None and not cfg.iql_deterministic
    # the documented departures
    assert cfg.normalize and not cfg.normalize_reward and ours.normalize_reward
    assert corl.LOG_STD_MIN == -20.0 and corl.LOG_STD_MAX == 2.0
    actor = algorithms.get("iql")(OBS, ACT).actor
    assert (actor.log_std_min, actor.log_std_max) == (-5.0, 2.0)  # the authors' clamp
    assert ours.hidden == (256, 256) and cfg.max_timesteps == 1_000_000
