"""VGDF (algorithms/vgdf.py) and its dynamics ensemble (algorithms/dynamics.py): the filter,
the model's loss and training, the update's schedule, exploration and checkpoints, on
tiny hand-made tensors (the step against the authors' code: tests/test_authors_vgdf.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gapbench import algorithms
from gapbench.algorithms.base import ConfigError
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.dynamics import EnsembleDynamics, dynamics_target
from gapbench.algorithms.vgdf import not_done, quantile_gate

OBS, ACT = 4, 2
SMALL = {
    "hidden": (16, 16),
    "dynamics_hidden": (16, 16),
    "dynamics_weight_decay": (1e-4, 1e-4, 1e-4),
    "dynamics_ensemble": 3,
    "batch_size": 32,
    "dynamics_batch_size": 32,
}


def make(**overrides):
    cls = algorithms.get("vgdf")
    return cls(OBS, ACT, cls.make_config({**SMALL, **overrides}), seed=0)


def linear_system(n: int, seed: int = 0) -> TensorBuffer:
    """s' = s + 0.1 a W (a linear real system), r = -|s|^2, a few terminations."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    act = rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32)
    w = np.arange(ACT * OBS, dtype=np.float32).reshape(ACT, OBS) / 8
    next_obs = obs + 0.1 * act @ w
    rew = -np.square(obs).sum(1)
    done = (rng.uniform(size=n) < 0.05).astype(np.float32)
    return TensorBuffer.from_arrays(obs, act, rew, next_obs, done, seed=seed)


# -- the filter ---------------------------------------------------------------------------
def test_quantile_gate_keeps_exactly_the_top_quarter():
    score = torch.randperm(128).float()  # distinct scores
    gate = quantile_gate(score, 0.75)
    assert gate.sum() == 32
    assert torch.equal(gate.bool(), score >= 96)  # the 32 largest


def test_filter_keeps_the_sim_transitions_whose_target_the_real_model_agrees_with(monkeypatch):
    """Hand-made fictitious values, the same ensemble spread for every transition: the
    likelihood then ranks by the value difference |mean_k V_k - y|, and the gate keeps
    the quarter with the smallest difference."""
    algo = make(filter_start=0, filter_score="likelihood")  # the authors' score
    b, k = 16, 3
    gap = torch.linspace(0.0, 3.0, b)[torch.randperm(b)]  # value difference per transition
    y = torch.randn(b)
    spread = torch.tensor([-1.0, 0.0, 1.0]).unsqueeze(1)  # std 1 over the 3 members
    values = (y + gap).expand(k, b) + spread
    monkeypatch.setattr(algo, "fictitious_values", lambda sim: values)
    out = algo.filter_sim(None, y)
    assert torch.allclose(out["value_gap"], gap, atol=1e-6)
    assert torch.allclose(out["fictitious_std"], torch.ones(b))
    expected = torch.exp(-0.5 * gap.pow(2)) / math.sqrt(2 * math.pi)  # N(y; y + gap, 1)
    assert torch.allclose(out["score"], expected, atol=1e-6)
    assert torch.equal(out["gate"].bool(), gap <= gap.sort().values[3])  # the 4 smallest
    # log-likelihood scores (the default) rank the same way
    algo.config.filter_score = "log_likelihood"
    assert torch.allclose(algo.filter_sim(None, y)["score"], expected.log(), atol=1e-5)
    assert torch.equal(algo.filter_sim(None, y)["gate"], out["gate"])
    # before filter_start every sim transition counts
    algo.config.filter_start = 10
    assert torch.equal(algo.filter_sim(None, y)["gate"], torch.ones(b))


def test_fictitious_values_are_one_model_step_and_the_target_critics():
    """V_k = r_k + gamma * not_done * min_i Q'_i(s'_k, mu(s'_k)), with (r_k, s'_k - s) the
    member's mean + variance (the authors' "sample")."""
    algo = make(termination="none")
    sim = linear_system(8).all()
    values = algo.fictitious_values(sim)
    with torch.no_grad():
        mean, logvar = algo.dynamics(sim.obs, sim.act)
        pred = mean + logvar.exp()
        for k in range(3):
            s_next = sim.obs + pred[k, :, 1:]
            a_next = torch.tanh(algo.actor.net(s_next)[:, :ACT])
            q = algo.target_critic(s_next, a_next).min(0).values
            assert torch.allclose(values[k], pred[k, :, 0] + 0.99 * q, atol=1e-5)


def test_termination_rules():
    s = torch.zeros(1, 5, OBS)
    s[0, :, 0] = torch.tensor([0.5, 0.75, 1.0, 2.5, 1.0])  # height
    s[0, :, 1] = torch.tensor([0.0, 0.0, 0.1, 0.0, 0.5])  # angle
    done = torch.tensor([0.0, 1.0, 0.0, 0.0, 1.0])
    assert not_done("hopper", s, done).tolist() == [[0, 1, 1, 1, 0]]
    assert not_done("walker2d", s, done).tolist() == [[0, 0, 1, 0, 1]]
    assert not_done("ant", s, done).tolist() == [[1, 1, 1, 0, 1]]
    assert not_done("none", s, done).tolist() == [[1, 1, 1, 1, 1]]
    assert not_done("sim", s, done).tolist() == [[1, 0, 1, 1, 0]]


# -- the dynamics model -------------------------------------------------------------------
def test_dynamics_loss_equals_its_formula():
    torch.manual_seed(0)
    model = EnsembleDynamics(2, 1, n=2, hidden=(3,), weight_decay=(0.1, 0.2))
    model.fit_normalizer(torch.randn(10, 3) * 2 + 1)
    obs, act, target = torch.randn(2, 5, 2), torch.randn(2, 5, 1), torch.randn(2, 5, 3)
    loss, mse = model.loss(obs, act, target)

    w1, b1 = model.layers[0].weight, model.layers[0].bias
    w2, b2 = model.layers[1].weight, model.layers[1].bias
    x = (torch.cat([obs, act], -1) - model.in_mean) / model.in_std
    out = F.silu(x @ w1 + b1) @ w2 + b2
    mean, raw = out[..., :3], out[..., 3:]
    logvar = 0.5 - F.softplus(0.5 - raw)
    logvar = -10.0 + F.softplus(logvar + 10.0)
    nll = sum(
        ((mean[k] - target[k]) ** 2 * torch.exp(-logvar[k])).mean() + logvar[k].mean()
        for k in range(2)
    )
    decay = 0.1 * w1.pow(2).sum() / 2 + 0.2 * w2.pow(2).sum() / 2
    torch.testing.assert_close(loss, nll + decay)
    torch.testing.assert_close(mse, ((mean - target) ** 2).mean((1, 2)).detach())


def test_dynamics_loss_gradient_equals_autograds_through_the_formula():
    """The weight decay's gradient is written out (dynamics._WeightDecay): bit for bit the
    gradient autograd takes through d * W.pow(2).sum() / 2."""
    torch.manual_seed(0)
    model = EnsembleDynamics(OBS, ACT, n=3, hidden=(16, 16), weight_decay=(1e-4, 5e-5, 2e-3))
    obs, act, target = torch.randn(3, 8, OBS), torch.randn(3, 8, ACT), torch.randn(3, 8, 1 + OBS)
    loss, _ = model.loss(obs, act, target)
    loss.backward()
    written = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    mean, logvar = model(obs, act)
    sq = (mean - target).pow(2)
    nll = (sq * torch.exp(-logvar)).mean((1, 2)) + logvar.mean((1, 2))
    decay = sum(
        d * layer.weight.pow(2).sum() / 2.0
        for d, layer in zip(model.weight_decay, model.layers, strict=True)
    )
    assert torch.equal(loss, nll.sum() + decay)
    (nll.sum() + decay).backward()
    assert all(torch.equal(a, p.grad) for a, p in zip(written, model.parameters(), strict=True))


def test_log_variance_is_soft_bounded():
    model = EnsembleDynamics(OBS, ACT, n=2, hidden=(8,), weight_decay=(0.0, 0.0))
    with torch.no_grad():
        model.layers[-1].bias[..., 1 + OBS :] = 1e3
        _, high = model(torch.zeros(3, OBS), torch.zeros(3, ACT))
        model.layers[-1].bias[..., 1 + OBS :] = -1e3
        _, low = model(torch.zeros(3, OBS), torch.zeros(3, ACT))
    # (the lower bound's softplus adds ~3e-5 on top of the upper one)
    assert torch.all(high < 0.5 + 1e-4) and torch.all(high > 0.49)
    assert torch.all(low >= -10.0) and torch.all(low < -9.99)


def test_model_learns_the_real_system_and_stops_early():
    data = linear_system(2000)
    algo = make(dynamics_patience=1, dynamics_lr=3e-3)
    algo.setup(data)
    assert len(algo.holdout_idx) == 200 and len(algo.train_idx) == 1800
    assert not set(algo.holdout_idx.tolist()) & set(algo.train_idx.tolist())
    h = algo.holdout_idx
    target = dynamics_target(data.rew[h], data.obs[h], data.next_obs[h])
    before = algo.dynamics.mse(data.obs[h], data.act[h], target).mean()
    steps = 0
    while not algo.model_progress.stopped and steps < 20_000:
        algo.model_step(data)
        steps += 1
    after = algo.dynamics.mse(data.obs[h], data.act[h], target).mean()
    assert algo.model_progress.stopped, "the holdout check never stopped training"
    assert after < 0.5 * before
    assert steps % math.ceil(1800 / 32) == 0  # checked (and stopped) at an epoch's end
    # once stopped, updates take no model step
    params = [p.clone() for p in algo.dynamics.parameters()]
    metrics = algo.update(dataset=data, replay=linear_system(300, seed=1))
    assert "dynamics_loss" not in metrics
    assert all(torch.equal(a, b) for a, b in zip(params, algo.dynamics.parameters(), strict=True))


def test_holdout_is_capped():
    algo = make(dynamics_holdout_max=50)
    algo.setup(linear_system(2000))
    assert len(algo.holdout_idx) == 50 and len(algo.train_idx) == 1950


# -- the update ---------------------------------------------------------------------------
def snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_updates_change_every_part_with_the_policy_delay():
    # log-likelihood scores: a fresh model's members agree so closely that every
    # likelihood underflows to 0 in float32 (and the authors' score would keep none)
    algo = make(filter_start=0, filter_score="log_likelihood")
    data, replay = linear_system(400), linear_system(400, seed=1)
    parts = ("critic", "actor", "optimistic_actor", "dynamics", "target_critic")
    before = {name: snapshot(getattr(algo, name)) for name in parts}
    m1 = algo.update(dataset=data, replay=replay)
    assert all(changed(before[name], getattr(algo, name)) for name in parts)
    assert {"actor_loss", "opt_actor_loss", "dynamics_loss"} <= set(m1)
    assert float(m1["accept_ratio"]) == 0.25  # 8 of 32 sim transitions
    # the second update steps the critics and the model, not the actors (delay 2)
    actors = {name: snapshot(getattr(algo, name)) for name in ("actor", "optimistic_actor")}
    critic = snapshot(algo.critic)
    m2 = algo.update(dataset=data, replay=replay)
    assert "actor_loss" not in m2 and changed(critic, algo.critic)
    assert not any(changed(actors[n], getattr(algo, n)) for n in actors)
    assert algo.log_alpha.exp().item() == pytest.approx(0.2)  # a fixed temperature
    assert all(torch.isfinite(v) for v in m2.values())


def test_update_many_averages_actor_metrics_over_actor_steps():
    data, replay = linear_system(400), linear_system(400, seed=1)
    one = make()
    torch.manual_seed(0)
    first = one.update(dataset=data, replay=replay)
    second = one.update(dataset=data, replay=replay)
    data, replay = linear_system(400), linear_system(400, seed=1)  # fresh sampling streams
    many = make()
    torch.manual_seed(0)
    sums = many.update_many(2, dataset=data, replay=replay)
    torch.testing.assert_close(sums["actor_loss"] / 2, first["actor_loss"])
    torch.testing.assert_close(sums["critic_loss"], first["critic_loss"] + second["critic_loss"])


def test_automatic_temperature_uses_the_authors_loss():
    algo = make(auto_alpha=True)
    data, replay = linear_system(400), linear_system(400, seed=1)
    before = algo.log_alpha.item()
    metrics = algo.update(dataset=data, replay=replay)
    # -E[alpha (log pi + H)]: its gradient in log alpha is the loss itself; Adam's first
    # step moves log alpha by lr against it
    step = algo.log_alpha.item() - before
    assert abs(step) == pytest.approx(3e-4, rel=1e-3)
    assert math.copysign(1.0, step) == -math.copysign(1.0, float(metrics["alpha_loss"]))


def test_exploration_uses_the_optimistic_actor():
    algo = make()
    with torch.no_grad():
        algo.optimistic_actor.net[-1].bias[:ACT] = 10.0  # its actions sit at +1
    obs = np.random.default_rng(0).normal(size=(5, OBS))
    assert np.all(algo.act(obs, deterministic=False) > 0.99)
    assert not np.all(algo.act(obs, deterministic=True) > 0.99)  # evaluation: the policy
    algo.config.optimistic_exploration = False
    assert not np.all(algo.act(obs, deterministic=False) > 0.99)


def test_checkpoint_carries_the_model_and_its_stopping_state():
    algo = make()
    data, replay = linear_system(400), linear_system(400, seed=1)
    algo.setup(data)
    algo.update(dataset=data, replay=replay)
    algo.model_progress.epochs_since, algo.model_progress.stopped = 3, True
    other = make()
    other.load_state_dict(algo.state_dict())
    assert (other.model_progress.epochs_since, other.model_progress.stopped) == (3, True)
    assert other.steps.count == 1
    torch.testing.assert_close(other.dynamics.in_std, algo.dynamics.in_std)
    batch = Batch(*(t[:6] for t in replay.all()))
    torch.testing.assert_close(other.fictitious_values(batch), algo.fictitious_values(batch))


@pytest.mark.parametrize(
    "key, value",
    [("termination", "hopperr"), ("model_sample", "median"), ("filter_quantile", 1.0)],
)
def test_bad_choices_are_clear_errors(key, value):
    with pytest.raises(ConfigError, match=key):
        algorithms.get("vgdf").make_config({key: value})


def test_the_real_dataset_is_required():
    with pytest.raises(ValueError, match="real dataset"):
        make().setup(None)


def test_search_space_is_valid():
    from gapbench.benchmark.tuning import declared_space, parse_space

    space = parse_space(declared_space("vgdf"), "vgdf")
    assert {"filter_quantile", "actor_lr", "critic_lr"} <= set(space)
