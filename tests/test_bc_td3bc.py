"""BC and TD3+BC behave as their papers say on hand-made cases (fast; the one-step
comparisons with CORL are tests/test_authors_bc.py and tests/test_authors_td3bc.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gapbench import algorithms
from gapbench.algorithms.base import ConfigError
from gapbench.algorithms.buffer import TensorBuffer

OBS, ACT = 4, 2


def linear_policy_data(n: int = 4096, seed: int = 0):
    """States far from zero mean / unit scale, actions from a fixed policy tanh(W s~) of
    the standardised state s~ (what normalisation should hand the network)."""
    rng = np.random.default_rng(seed)
    scale, shift = np.array([0.01, 1.0, 50.0, 3.0]), np.array([100.0, -2.0, 0.0, 7.0])
    z = rng.normal(size=(n, OBS))
    obs = z * scale + shift
    w = rng.normal(size=(OBS, ACT)) * 0.7

    def policy(o):
        return np.tanh(((o - shift) / scale) @ w)

    act = policy(obs)
    next_obs = obs + 0.01 * rng.normal(size=obs.shape)
    rew = -np.square(z).sum(1)
    buf = TensorBuffer.from_arrays(obs, act, rew, next_obs, np.zeros(n), seed=seed)
    return buf, policy, (scale, shift)


def test_bc_recovers_a_linear_policy_from_badly_scaled_states():
    dataset, policy, (scale, shift) = linear_policy_data()
    cls = algorithms.get("bc")
    algo = cls(OBS, ACT, cls.make_config({"hidden": "64,64", "actor_lr": 1e-3}), seed=0)
    algo.setup(dataset)
    # the statistics are the dataset's: mean and population std + eps
    obs = dataset.obs.double()
    torch.testing.assert_close(algo.obs_norm.mean, obs.mean(0).float())
    torch.testing.assert_close(algo.obs_norm.std, (obs.std(0, correction=0) + 1e-3).float())
    test_obs = np.random.default_rng(9).normal(size=(500, OBS)) * scale + shift
    before = np.mean((algo.act(test_obs) - policy(test_obs)) ** 2)
    algo.update_many(600, dataset=dataset)
    after = np.mean((algo.act(test_obs) - policy(test_obs)) ** 2)
    assert before > 0.1 and after < 1e-3, (before, after)


def test_without_normalisation_bc_fails_on_the_same_data():
    """The normalisation is what makes the previous test pass (so that test can fail)."""
    dataset, policy, (scale, shift) = linear_policy_data()
    cls = algorithms.get("bc")
    config = cls.make_config({"hidden": "64,64", "actor_lr": 1e-3, "normalize_states": False})
    algo = cls(OBS, ACT, config, seed=0)
    algo.setup(dataset)
    algo.update_many(600, dataset=dataset)
    test_obs = np.random.default_rng(9).normal(size=(500, OBS)) * scale + shift
    assert np.mean((algo.act(test_obs) - policy(test_obs)) ** 2) > 5e-3  # ~0.02


@pytest.mark.parametrize("name", ["bc", "td3bc"])
def test_checkpoint_carries_the_state_statistics(name):
    """A fresh algorithm that loads a state acts the same without seeing the dataset."""
    dataset, _, (scale, shift) = linear_policy_data(512)
    algo = algorithms.get(name)(OBS, ACT, seed=0)
    algo.setup(dataset)
    algo.update_many(2, dataset=dataset)
    fresh = algorithms.get(name)(OBS, ACT, seed=1)
    fresh.load_state_dict(algo.state_dict())
    obs = np.random.default_rng(3).normal(size=(8, OBS)) * scale + shift
    np.testing.assert_array_equal(fresh.act(obs), algo.act(obs))
    torch.testing.assert_close(fresh.obs_norm.std, algo.obs_norm.std, rtol=0, atol=0)
    assert float(algo.obs_norm.std.max()) > 10  # not the identity


def td3bc_with_data(**overrides):
    dataset, _, _ = linear_policy_data(512)
    cls = algorithms.get("td3bc")
    algo = cls(OBS, ACT, cls.make_config(overrides), seed=0)
    algo.setup(dataset)
    return algo, dataset


def test_td3bc_lambda_is_alpha_over_mean_abs_q1_and_held_constant():
    algo, dataset = td3bc_with_data(alpha=2.0)
    with torch.no_grad():  # Q of a few units and both signs, members that differ
        algo.critic.net.layers[-1].weight.mul_(50.0)
    batch = algo.prepare(dataset.sample(64))
    out = algo.actor_loss(batch)
    pi = algo.actor(batch.obs)
    q1, q2 = algo.critic(batch.obs, pi)
    assert not torch.allclose(q1, q2) and bool((q1 < 0).any()) and bool((q1 > 0).any())
    expected = 2.0 / q1.abs().mean().detach()
    assert float(out["lmbda"]) == pytest.approx(float(expected), rel=1e-6)
    # the gradient treats lambda as a constant: that of -c Q1 + MSE with c fixed
    actor_params = list(algo.actor.parameters())
    grads = torch.autograd.grad(out["actor_loss"], actor_params)
    fixed = -expected * q1.mean() + torch.nn.functional.mse_loss(pi, batch.act)
    for g, g_fixed in zip(grads, torch.autograd.grad(fixed, actor_params), strict=True):
        torch.testing.assert_close(g, g_fixed)
    # and the actor loss leaves the critics without gradients
    algo.critic.zero_grad(set_to_none=True)
    algo.actor_loss(batch)["actor_loss"].backward()
    assert all(p.grad is None for p in algo.critic.parameters())


def test_td3bc_delays_the_actor_and_targets_and_averages_their_metrics():
    algo, dataset = td3bc_with_data(policy_delay=3)

    def moved(before, module):
        return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))

    actor0 = [p.clone() for p in algo.actor.parameters()]
    target0 = [p.clone() for p in algo.target_critic.parameters()]
    losses = []
    for step in range(1, 7):
        metrics = algo.update(dataset)
        assert moved(actor0, algo.actor) == moved(target0, algo.target_critic) == (step >= 3)
        assert ("actor_loss" in metrics) == (step % 3 == 0)
        if "actor_loss" in metrics:
            losses.append(float(metrics["actor_loss"]))
    # update_many's sums divided by n give the mean over the actor steps
    again, dataset = td3bc_with_data(policy_delay=3)
    sums = again.update_many(6, dataset=dataset)
    assert float(sums["actor_loss"]) / 6 == pytest.approx(np.mean(losses), rel=1e-5)
    assert sums["critic_loss"].dim() == 0


def test_td3bc_target_policy_noise_is_clipped():
    algo, dataset = td3bc_with_data(policy_noise=0.2, noise_clip=0.5, discount=0.5)
    batch = algo.prepare(dataset.sample(8))
    huge = torch.full_like(batch.act, 100.0)
    clipped = torch.full_like(batch.act, 2.5)  # 0.2 x 2.5 = 0.5: the clip itself
    torch.testing.assert_close(algo.td_target(batch, huge), algo.td_target(batch, clipped))
    assert not torch.allclose(algo.td_target(batch, clipped), algo.td_target(batch, clipped / 2))


def test_td3bc_policy_delay_must_be_positive():
    with pytest.raises(ConfigError, match="policy_delay"):
        algorithms.get("td3bc").make_config({"policy_delay": 0})


@pytest.mark.parametrize("name", ["bc", "td3bc"])
def test_an_offline_run_resumed_from_its_checkpoint_equals_the_uninterrupted_one(
    tmp_path, monkeypatch, name
):
    """Through the harness: setup on the dataset, evaluation on the real env with the
    normalised actor, and a checkpoint (state statistics, update count, optimisers) that
    resumes to the same numbers."""
    from support.resume import run_interrupted

    from gapbench.benchmark import datasets_build, records
    from gapbench.benchmark.harness import git_commit, run
    from gapbench.benchmark.spec import Budget, RunSpec

    data = tmp_path / "data"
    did = datasets_build.build("hopper", "random", size=400, seed=1, data_dir=data, progress=False)
    monkeypatch.setenv("GAPBENCH_DATA_DIR", str(data))
    budget = Budget(updates=30, eval_every=10, eval_episodes=2)
    s = RunSpec(task="hopper", algorithm=name, dataset=did, budget=budget,
                hparams={"batch_size": 32, "hidden": (32, 32)})  # fmt: skip
    whole = run(s, tmp_path / "whole", progress=False)
    assert whole["status"] == "ok", whole
    run_interrupted(s, tmp_path / "cut", at_step=30)
    resumed = run(s, tmp_path / "cut", progress=False)
    assert resumed["resumed"] == [{"update": 20, "exact": True, "git_commit": git_commit()}]
    run_id = s.resolved().run_id

    def curve(root):
        rows = records.read_curve(root / run_id / records.CURVE)
        return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]

    assert curve(tmp_path / "cut") == curve(tmp_path / "whole")
    assert resumed["final_return"] == whole["final_return"]
