"""CQL and IQL: each loss against its formula recomputed with plain torch ops, the update
order against the references' sequential steps, and a smoke run on a TensorBuffer."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal, TanhTransform, TransformedDistribution

from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.cql import CQL, CQLConfig
from gapbench.algorithms.iql import (
    IQL,
    IQLConfig,
    cosine_decay,
    expectile_loss,
    reward_scale_from_returns,
)

OBS, ACT, B = 3, 2, 4
SMALL = (16, 16)


def tiny_batch(seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(B, OBS, generator=g),
        act=torch.rand(B, ACT, generator=g) * 1.8 - 0.9,
        rew=torch.randn(B, generator=g),
        next_obs=torch.randn(B, OBS, generator=g),
        done=torch.tensor([0.0, 1.0, 0.0, 0.0]),
    )


def tiny_buffer(n: int = 60, seed: int = 0, ep_len: int = 10) -> TensorBuffer:
    rng = np.random.default_rng(seed)
    end = np.zeros(n, bool)
    end[ep_len - 1 :: ep_len] = True
    return TensorBuffer.from_arrays(
        rng.normal(size=(n, OBS)).astype(np.float32),
        rng.uniform(-1, 1, size=(n, ACT)).astype(np.float32),
        rng.normal(size=n).astype(np.float32),
        rng.normal(size=(n, OBS)).astype(np.float32),
        (rng.random(n) < 0.05).astype(np.float32),
        end,
        seed=seed,
    )


def record_actor_calls(algo) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Wrap algo.actor.forward to record (obs, action, log_pi) of every call."""
    calls = []
    original = algo.actor.forward

    def forward(obs, deterministic=False):
        act, log_pi = original(obs, deterministic)
        calls.append((obs.detach().clone(), act.detach().clone(), log_pi.detach().clone()))
        return act, log_pi

    algo.actor.forward = forward
    return calls


def find_call(calls, obs):
    hits = [c for c in calls if c[0].shape == obs.shape and torch.equal(c[0], obs)]
    assert len(hits) == 1
    return hits[0]


def params(*modules) -> list[torch.Tensor]:
    return [p.detach().clone() for m in modules for p in m.parameters()]


def assert_params_close(a, b):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


# -- CQL -----------------------------------------------------------------------------------
def fixed_cql_sample(n):
    g = torch.Generator().manual_seed(7)
    rows = B * n
    lp = lambda: torch.randn(rows, generator=g)  # noqa: E731 - any log-probs do
    return {
        "rand": torch.rand(rows, ACT, generator=g) * 2 - 1,
        "cur": torch.rand(rows, ACT, generator=g) * 2 - 1,
        "cur_log_pi": lp(),
        "next": torch.rand(rows, ACT, generator=g) * 2 - 1,
        "next_log_pi": lp(),
    }


@pytest.mark.parametrize("importance", [True, False])
def test_cql_conservative_term_and_critic_loss(importance):
    cfg = CQLConfig(hidden=SMALL, cql_importance_sample=importance, cql_n_actions=5)
    algo = CQL(OBS, ACT, cfg, seed=0)
    n = cfg.cql_n_actions
    # Non-trivial critic outputs (the 1e-2 output gain makes them ~0 at init).
    with torch.no_grad():
        for p in algo.critic.parameters():
            p.mul_(3.0)
        algo.target_critic.load_state_dict(algo.critic.state_dict())
    batch = tiny_batch()
    sample = fixed_cql_sample(n)
    algo.cql_sample = lambda obs, next_obs: sample
    calls = record_actor_calls(algo)
    out = algo.losses(batch)

    with torch.no_grad():
        # TD target from the recorded next action (no entropy backup by default).
        _, next_act, _ = find_call(calls, batch.next_obs)
        q_next_t = algo.target_critic(batch.next_obs, next_act)
        y = batch.rew + 0.99 * (1 - batch.done) * torch.minimum(q_next_t[0], q_next_t[1])
        q_data = algo.critic(batch.obs, batch.act)  # (2, B)
        cql_terms, td_terms = [], []
        for i in range(2):
            per_state = []
            for b in range(B):
                rows = slice(b * n, (b + 1) * n)
                o = batch.obs[b].expand(n, OBS)
                q_r = algo.critic(o, sample["rand"][rows])[i]
                q_c = algo.critic(o, sample["cur"][rows])[i]
                q_n = algo.critic(o, sample["next"][rows])[i]
                if importance:
                    log_unif = math.log(0.5**ACT)
                    terms = torch.cat(
                        [
                            q_r - log_unif,
                            q_n - sample["next_log_pi"][rows],
                            q_c - sample["cur_log_pi"][rows],
                        ]
                    )
                else:
                    terms = torch.cat([q_r, q_data[i, b : b + 1], q_n, q_c])
                per_state.append(torch.log(torch.exp(terms).sum()) - q_data[i, b])
            cql_terms.append(5.0 * torch.stack(per_state).mean())
            td_terms.append(((q_data[i] - y) ** 2).mean())
        expected_cql = sum(cql_terms)
        expected_critic = sum(td_terms) + expected_cql

    torch.testing.assert_close(out["cql_loss"], expected_cql, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["critic_loss"].detach(), expected_critic, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["td_loss"], sum(td_terms), rtol=1e-5, atol=1e-6)


def test_cql_sample_layout():
    """Rows b*n .. b*n+n-1 of the policy samples belong to state b (s for cur, s' for next)."""
    algo = CQL(OBS, ACT, CQLConfig(hidden=SMALL, cql_n_actions=3), seed=0)
    batch = tiny_batch()
    torch.manual_seed(0)
    s = algo.cql_sample(batch.obs, batch.next_obs)
    n = 3
    assert s["rand"].shape == (B * n, ACT) and s["rand"].abs().max() <= 1
    for key, obs in (("cur", batch.obs), ("next", batch.next_obs)):
        with torch.no_grad():
            mean, log_std = algo.actor.dist_params(obs.repeat_interleave(n, 0))
        dist = TransformedDistribution(Normal(mean, log_std.exp()), TanhTransform())
        lp = dist.log_prob(s[key]).sum(-1)
        torch.testing.assert_close(lp, s[f"{key}_log_pi"], rtol=1e-3, atol=1e-3)


def test_cql_bc_warm_start_actor_loss():
    algo = CQL(OBS, ACT, CQLConfig(hidden=SMALL, bc_steps=1), seed=0)
    batch = tiny_batch()
    calls = record_actor_calls(algo)
    out = algo.losses(batch)
    _, _, log_pi = find_call(calls, batch.obs)
    with torch.no_grad():
        mean, log_std = algo.actor.dist_params(batch.obs)
        dist = TransformedDistribution(Normal(mean, log_std.exp()), TanhTransform())
        data_lp = dist.log_prob(batch.act).sum(-1)
        expected = (1.0 * log_pi - data_lp).mean()  # alpha = 1 at init
    torch.testing.assert_close(out["actor_loss"].detach(), expected, rtol=1e-5, atol=1e-5)
    algo.steps.count = 1  # past the warm start: the SAC actor loss again
    out = algo.losses(batch)
    assert not torch.allclose(out["actor_loss"].detach(), expected)


@pytest.mark.parametrize("gap, direction", [(1e3, -1.0), (-1e3, 1.0)])
def test_cql_lagrange_alpha_prime_moves_as_the_formula_says(gap, direction):
    """alpha' maximises alpha' w (diff - gap): it grows when diff > gap, shrinks otherwise."""
    cfg = CQLConfig(hidden=SMALL, batch_size=8, cql_lagrange=True, cql_target_action_gap=gap)
    algo = CQL(OBS, ACT, cfg, seed=0)
    batch = algo.prepare(tiny_buffer().sample(8))
    torch.manual_seed(0)
    out = algo.losses(batch)
    alpha_prime = math.exp(1.0)  # SimpleSAC's initial log alpha' = 1
    torch.testing.assert_close(out["alpha_prime"], torch.tensor(alpha_prime))
    expected = -(alpha_prime * 5.0 * (out["cql_diff"] - gap))  # mean over critics of w(diff-gap)
    torch.testing.assert_close(out["alpha_prime_loss"].detach(), expected, rtol=1e-5, atol=1e-3)
    before = algo.log_alpha_prime.item()
    metrics = algo.update(dataset=tiny_buffer())
    after = algo.log_alpha_prime.item()
    assert math.copysign(1.0, after - before) == direction
    assert abs(after - before) == pytest.approx(3e-4, rel=1e-3)  # Adam's first step = lr
    assert (metrics["alpha_prime"] > 0).item()


@pytest.mark.parametrize("lagrange", [False, True])
def test_cql_combined_backward_matches_sequential_steps(lagrange):
    """One backward of the summed losses == SimpleSAC's alpha', alpha, policy, critic steps."""
    cfg = CQLConfig(hidden=SMALL, batch_size=8, cql_lagrange=lagrange)
    algo = CQL(OBS, ACT, cfg, seed=0)
    ref = copy.deepcopy(algo)
    buf = tiny_buffer()
    state = buf.generator.get_state()
    torch.manual_seed(5)
    algo.update(dataset=buf)

    buf.generator.set_state(state)
    torch.manual_seed(5)
    out = ref.losses(ref.prepare(buf.sample(8)))
    steps = [("alpha_loss", ref.alpha_opt), ("actor_loss", ref.actor_opt)]
    if lagrange:
        steps.insert(0, ("alpha_prime_loss", ref.alpha_prime_opt))
    for key, opt in steps:
        opt.zero_grad()
        out[key].backward(retain_graph=True)
        opt.step()
    ref.critic_opt.zero_grad()
    out["critic_loss"].backward()
    ref.critic_opt.step()
    for p, tp in zip(ref.critic.parameters(), ref.target_critic.parameters(), strict=True):
        tp.data.mul_(1 - cfg.tau).add_(cfg.tau * p.data)

    assert_params_close(
        params(algo.actor, algo.critic, algo.target_critic),
        params(ref.actor, ref.critic, ref.target_critic),
    )
    torch.testing.assert_close(algo.log_alpha, ref.log_alpha)
    torch.testing.assert_close(algo.log_alpha_prime, ref.log_alpha_prime)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"cql_lagrange": True},
        {"cql_max_target_backup": True, "backup_entropy": True},
        {"bc_steps": 2, "cql_importance_sample": False},
        {"cql_clip_diff_min": -1.0, "cql_clip_diff_max": 1.0},
    ],
)
def test_cql_update_smoke(overrides):
    cfg = CQLConfig(hidden=SMALL, batch_size=16, **overrides)
    algo = CQL(OBS, ACT, cfg, seed=0)
    buf = tiny_buffer()
    before = params(algo.actor, algo.critic, algo.target_critic)
    for _ in range(3):
        metrics = algo.update(dataset=buf)
    after = params(algo.actor, algo.critic, algo.target_critic)
    assert all(not torch.equal(x, y) for x, y in zip(before, after, strict=True))
    for k, v in metrics.items():
        assert v.dim() == 0 and not v.requires_grad, k
        assert torch.isfinite(v), k
    assert algo.steps.count == 3
    clone = CQL(OBS, ACT, cfg, seed=1)
    clone.load_state_dict(algo.state_dict())
    assert clone.steps.count == 3
    assert_params_close(params(clone.actor, clone.critic), params(algo.actor, algo.critic))
    act = algo.act(np.zeros(OBS, np.float32))
    assert act.shape == (ACT,) and np.all(np.abs(act) <= 1)


# -- IQL -----------------------------------------------------------------------------------
def test_expectile_loss_hand_case():
    diff = torch.tensor([2.0, -2.0, 0.5, 0.0])
    torch.testing.assert_close(
        expectile_loss(diff, 0.7), torch.tensor([0.7 * 4, 0.3 * 4, 0.7 * 0.25, 0.0])
    )


def iql_with_value_bias(bias: float) -> IQL:
    algo = IQL(OBS, ACT, IQLConfig(hidden=SMALL), seed=0)
    with torch.no_grad():
        algo.value[-1].bias.fill_(bias)
    return algo


@pytest.mark.parametrize("bias, weight", [(None, None), (50.0, 0.3), (-50.0, 0.7)])
def test_iql_value_loss(bias, weight):
    """bias +50: V > Q everywhere so every term has weight 1 - tau; -50: weight tau."""
    algo = (
        IQL(OBS, ACT, IQLConfig(hidden=SMALL), seed=0)
        if bias is None
        else iql_with_value_bias(bias)
    )
    batch = tiny_batch()
    out = algo.losses(batch)
    with torch.no_grad():
        q = algo.target_critic(batch.obs, batch.act)
        q_min = torch.minimum(q[0], q[1])
        v = algo.value(batch.obs)[:, 0]
        u = q_min - v
        terms = [abs(0.7 - float(x < 0)) * x**2 for x in u]
        expected = torch.stack(terms).mean()
    torch.testing.assert_close(out["value_loss"].detach(), expected)
    if weight is not None:
        assert bool(((u > 0) if weight == 0.7 else (u < 0)).all())
        torch.testing.assert_close(out["value_loss"].detach(), weight * (u**2).mean())


@pytest.mark.parametrize("bias, clipped", [(None, False), (-50.0, True)])
def test_iql_actor_loss(bias, clipped):
    algo = (
        IQL(OBS, ACT, IQLConfig(hidden=SMALL), seed=0)
        if bias is None
        else iql_with_value_bias(bias)
    )
    with torch.no_grad():
        algo.actor.log_std.copy_(torch.tensor([-0.5, 0.3]))
    batch = tiny_batch()
    out = algo.losses(batch)
    with torch.no_grad():
        q = algo.target_critic(batch.obs, batch.act)
        adv = torch.minimum(q[0], q[1]) - algo.value(batch.obs)[:, 0]
        w = torch.exp(3.0 * adv)
        w = torch.where(w > 100.0, torch.full_like(w, 100.0), w)
        mean = torch.tanh(algo.actor.net(batch.obs))
        lp = Normal(mean, algo.actor.log_std.exp()).log_prob(batch.act).sum(-1)
        expected = -(w * lp).mean()
    assert bool((w == 100.0).all()) == clipped
    torch.testing.assert_close(out["actor_loss"].detach(), expected)


def test_iql_critic_loss():
    algo = IQL(OBS, ACT, IQLConfig(hidden=SMALL), seed=0)
    batch = tiny_batch()
    out = algo.losses(batch)
    with torch.no_grad():
        y = batch.rew + 0.99 * (1.0 - batch.done) * algo.value(batch.next_obs)[:, 0]
        q = algo.critic(batch.obs, batch.act)
        expected = ((q[0] - y) ** 2).mean() + ((q[1] - y) ** 2).mean()
    torch.testing.assert_close(out["critic_loss"].detach(), expected)


def test_iql_update_follows_reference_order():
    """value step; actor and critic from the *updated* V; target polyak (learner._update_jit)."""
    cfg = IQLConfig(hidden=SMALL, batch_size=8)
    algo = IQL(OBS, ACT, cfg, seed=0)
    buf = tiny_buffer()
    algo.setup(buf)
    ref = copy.deepcopy(algo)
    state = buf.generator.get_state()
    algo.update(dataset=buf)

    buf.generator.set_state(state)
    b = buf.sample(8)
    rew = b.rew * ref.reward_scale
    with torch.no_grad():
        q = ref.target_critic(b.obs, b.act)
        q_min = torch.minimum(q[0], q[1])
    u = q_min - ref.value(b.obs)[:, 0]
    v_loss = (torch.where(u > 0, 0.7, 0.3) * u**2).mean()
    ref.value_opt.zero_grad()
    v_loss.backward()
    ref.value_opt.step()
    with torch.no_grad():
        v_new, next_v_new = ref.value(b.obs)[:, 0], ref.value(b.next_obs)[:, 0]
    w = torch.exp(3.0 * (q_min - v_new)).clamp(max=100.0)
    a_loss = -(w * ref.actor.log_prob(b.obs, b.act)).mean()
    ref.actor_opt.zero_grad()
    a_loss.backward()
    ref.actor_opt.step()
    y = rew + 0.99 * (1 - b.done) * next_v_new
    qs = ref.critic(b.obs, b.act)
    c_loss = ((qs[0] - y) ** 2).mean() + ((qs[1] - y) ** 2).mean()
    ref.critic_opt.zero_grad()
    c_loss.backward()
    ref.critic_opt.step()
    for p, tp in zip(ref.critic.parameters(), ref.target_critic.parameters(), strict=True):
        tp.data.mul_(1 - cfg.tau).add_(cfg.tau * p.data)

    assert_params_close(
        params(algo.value, algo.actor, algo.critic, algo.target_critic),
        params(ref.value, ref.actor, ref.critic, ref.target_critic),
    )


def test_iql_reward_scale_from_episode_returns():
    # Three episodes of lengths 2, 3, 1 with returns 3, -3, 7 (and a trailing partial one).
    rew = np.array([1.0, 2.0, -1.0, -1.0, -1.0, 7.0, 100.0], np.float32)
    end = np.array([0, 1, 0, 0, 1, 1, 0], bool)
    n = len(rew)
    z = np.zeros((n, OBS), np.float32)
    buf = TensorBuffer.from_arrays(z, np.zeros((n, ACT), np.float32), rew, z, np.zeros(n), end)
    np.testing.assert_allclose(buf.episode_returns(), [3.0, -3.0, 7.0])
    algo = IQL(OBS, ACT, IQLConfig(hidden=SMALL), seed=0)
    algo.setup(buf)
    assert algo.reward_scale == pytest.approx(1000.0 / (7.0 - (-3.0)))
    batch = buf.sample(5)
    torch.testing.assert_close(algo.prepare(batch).rew, batch.rew * 100.0)
    algo.update(dataset=buf)
    np.testing.assert_array_equal(buf.rew.numpy(), rew)  # the dataset is not mutated
    off = IQL(OBS, ACT, IQLConfig(hidden=SMALL, normalize_reward=False), seed=0)
    off.setup(buf)
    assert off.reward_scale == 1.0
    with pytest.warns(UserWarning):
        assert reward_scale_from_returns([5.0, 5.0]) == 1.0


def test_iql_actor_lr_cosine_decay():
    assert cosine_decay(0, 4) == 1.0
    assert cosine_decay(2, 4) == pytest.approx(0.5)
    assert cosine_decay(4, 4) == pytest.approx(0.0)
    assert cosine_decay(9, 4) == pytest.approx(0.0)  # optax holds the end value
    assert cosine_decay(123, 0) == 1.0
    algo = IQL(OBS, ACT, IQLConfig(hidden=SMALL, batch_size=8, actor_lr_decay_steps=4), seed=0)
    _assert_cosine_over_4_updates(algo)
    assert algo.critic_opt.param_groups[0]["lr"] == 3e-4


def _assert_cosine_over_4_updates(algo):
    """The actor's lr over 5 updates follows 3e-4 * cos-decay to 0 at update 4."""
    buf = tiny_buffer()
    lrs = []
    for _ in range(5):
        algo.update(dataset=buf)
        lrs.append(algo.actor_opt.param_groups[0]["lr"])
    expected = [3e-4 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]
    np.testing.assert_allclose(lrs, expected, atol=1e-12)


def test_iql_actor_lr_decays_over_the_runs_own_updates():
    """By default the schedule's horizon is the run's number of updates (the authors'
    max_steps), told by the harness through set_total_updates; 1M if never told; a
    configured horizon (or 0: off) wins."""
    algo = IQL(OBS, ACT, IQLConfig(hidden=SMALL, batch_size=8), seed=0)
    assert algo.decay_steps == 1_000_000  # the authors' max_steps default
    algo.set_total_updates(4)
    _assert_cosine_over_4_updates(algo)
    for fixed in (10, 0):
        algo = IQL(OBS, ACT, IQLConfig(hidden=SMALL, actor_lr_decay_steps=fixed), seed=0)
        algo.set_total_updates(4)
        assert algo.decay_steps == fixed


def test_the_harness_tells_the_algorithm_its_number_of_updates(tmp_path, monkeypatch):
    from gapbench.benchmark.harness import run
    from gapbench.benchmark.spec import Budget, RunSpec
    from gapbench.gap_envs.datasets import Transitions, save_d4rl_hdf5

    rng = np.random.default_rng(0)
    n = 200
    obs = rng.normal(size=(n + 1, 11)).astype(np.float32)
    data = Transitions(obs[:-1], rng.uniform(-1, 1, (n, 3)), rng.normal(size=n), obs[1:],
                       np.zeros(n, bool), np.arange(n) % 50 == 49)  # fmt: skip
    path = save_d4rl_hdf5(data, tmp_path / "d.hdf5")
    told = []
    original = IQL.set_total_updates
    monkeypatch.setattr(
        IQL, "set_total_updates", lambda self, k: told.append(k) or original(self, k)
    )
    budget = Budget(updates=20, eval_every=10, eval_episodes=1)
    spec = RunSpec(task="hopper", algorithm="iql", dataset=str(path), budget=budget,
                   hparams={"hidden": (32, 32), "batch_size": 32})  # fmt: skip
    assert run(spec, tmp_path / "runs", progress=False)["status"] == "ok"
    assert told == [20]


def test_iql_update_smoke():
    algo = IQL(OBS, ACT, IQLConfig(hidden=SMALL, batch_size=16), seed=0)
    buf = tiny_buffer()
    algo.setup(buf)
    before = params(algo.actor, algo.critic, algo.value, algo.target_critic)
    for _ in range(3):
        metrics = algo.update(dataset=buf)
    after = params(algo.actor, algo.critic, algo.value, algo.target_critic)
    assert all(not torch.equal(x, y) for x, y in zip(before, after, strict=True))
    for k, v in metrics.items():
        assert v.dim() == 0 and not v.requires_grad, k
        assert torch.isfinite(v), k
    clone = IQL(OBS, ACT, IQLConfig(hidden=SMALL, batch_size=16), seed=1)
    clone.load_state_dict(algo.state_dict())
    assert clone.steps.count == 3
    obs = np.zeros((2, OBS), np.float32)
    np.testing.assert_array_equal(algo.act(obs), clone.act(obs))  # deterministic: the mean
