"""Tests for the domain classifiers, H2O and DARC (formulas, clipping, ablations, updates)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gapbench import algorithms
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.darc import DARC, DARCConfig
from gapbench.algorithms.discriminators import REAL, SIM, DomainClassifiers
from gapbench.algorithms.h2o import H2O, H2OConfig, padded_state_std
from gapbench.algorithms.sac import sac_policy_terms

OBS, ACT = 3, 2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: one intra-op thread is as fast, and far faster when the
    machine is busy (threads spinning on a loaded 2-core box cost this file minutes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_batch(n: int, obs_dim: int = OBS, act_dim: int = ACT, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, obs_dim, generator=g),
        act=torch.rand(n, act_dim, generator=g) * 2 - 1,
        rew=torch.randn(n, generator=g),
        next_obs=torch.randn(n, obs_dim, generator=g),
        done=(torch.rand(n, generator=g) < 0.2).float(),
    )


def random_buffer(n: int, obs_dim: int = OBS, act_dim: int = ACT, seed: int = 0) -> TensorBuffer:
    b = random_batch(n, obs_dim, act_dim, seed)
    return TensorBuffer.from_arrays(*(x.numpy() for x in b), seed=seed)


def tiny_h2o(**overrides) -> H2O:
    cfg = dict(hidden=(16, 16), disc_hidden=(16, 16), real_batch_size=8, sim_batch_size=8)
    cfg.update(overrides)
    algo = H2O(OBS, ACT, H2OConfig(**cfg), seed=0)
    algo.setup(random_buffer(64, seed=5))
    return algo


# ---------------------------------------------------------------------------------------------
# domain classifiers
# ---------------------------------------------------------------------------------------------


def gaussian_transitions(n: int, shift: float, g: torch.Generator, sigma: float = 0.1):
    obs = torch.randn(n, 2, generator=g)
    act = torch.rand(n, 2, generator=g) * 2 - 1
    next_obs = obs + act + shift + sigma * torch.randn(n, 2, generator=g)
    return Batch(obs, act, torch.zeros(n), next_obs, torch.zeros(n))


def true_log_ratio(b: Batch, shift: float, sigma: float = 0.1) -> torch.Tensor:
    """log N(s'; s + a, sigma^2) - log N(s'; s + a + shift, sigma^2), summed over dims."""
    mean = b.obs + b.act
    real = -0.5 * ((b.next_obs - mean) / sigma) ** 2
    sim = -0.5 * ((b.next_obs - mean - shift) / sigma) ** 2
    return (real - sim).sum(-1)


def test_classifier_log_ratio_tracks_true_gaussian_ratio():
    """Real s' ~ N(s + a, 0.1^2), sim s' ~ N(s + a + 0.15, 0.1^2): the learned log-ratio
    follows the true one (H2O's published classifier settings)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    shift = 0.15
    disc = DomainClassifiers(2, 2)  # 256-256, 2*tanh, noise 0.1, Adam 3e-4
    for _ in range(200):
        disc.update(gaussian_transitions(128, 0.0, g), gaussian_transitions(128, shift, g))
    test = [gaussian_transitions(1000, 0.0, g), gaussian_transitions(1000, shift, g)]
    est = torch.cat([disc.log_ratio(b.obs, b.act, b.next_obs) for b in test])
    true = torch.cat([true_log_ratio(b, shift) for b in test])
    corr = torch.corrcoef(torch.stack([est, true]))[0, 1].item()
    assert corr > 0.8, corr
    # sign agreement where the true ratio is not ambiguous
    clear = true.abs() > 1.0
    assert (torch.sign(est[clear]) == torch.sign(true[clear])).float().mean() > 0.85
    # accuracy on the noisy training inputs: the (s, a, s') task is above chance (Bayes
    # accuracy with the 0.1 input noise on s, a and s' is about 0.70), (s, a) is at chance
    metrics = disc.update(*test)
    assert metrics["disc_sas_acc"] > 0.62
    assert abs(metrics["disc_sa_acc"].item() - 0.5) < 0.1


def test_log_ratio_equals_darc_formula_and_ratio_is_clipped():
    torch.manual_seed(0)
    disc = DomainClassifiers(OBS, ACT, hidden=(16,), output_bound=None)
    with torch.no_grad():  # large logits so that the clip bounds bind
        disc.d_sas[-1].weight.mul_(200.0)
    b = random_batch(64)
    sa, sas = disc.logits(b.obs, b.act, b.next_obs)
    # raw network outputs, combined as in DARC: q(.|s,a,s') = softmax(d_sas + d_sa)
    with torch.no_grad():
        d_sa = disc.d_sa(torch.cat([b.obs, b.act], -1))
        d_sas = disc.d_sas(torch.cat([b.obs, b.act, b.next_obs], -1))
    torch.testing.assert_close(sa, d_sa)
    torch.testing.assert_close(sas, d_sas + d_sa)
    log_q_sas, log_q_sa = F.log_softmax(d_sas + d_sa, -1), F.log_softmax(d_sa, -1)
    expected = log_q_sas[:, REAL] - log_q_sas[:, SIM] - log_q_sa[:, REAL] + log_q_sa[:, SIM]
    got = disc.log_ratio(b.obs, b.act, b.next_obs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    assert not got.requires_grad
    w = disc.dynamics_ratio(b.obs, b.act, b.next_obs)
    torch.testing.assert_close(w, expected.exp().clamp(1e-5, 1.0))
    assert (w >= 1e-5).all() and (w <= 1.0).all()
    assert (w == 1e-5).any() and (w == 1.0).any()  # both bounds reached here


def test_classifier_loss_is_per_source_cross_entropy():
    torch.manual_seed(0)
    disc = DomainClassifiers(OBS, ACT, hidden=(8,), noise_std=0.0)
    real, sim = random_batch(5, seed=1), random_batch(7, seed=2)
    out = disc.loss(real, sim)
    sa_r, sas_r = disc.logits(real.obs, real.act, real.next_obs)
    sa_s, sas_s = disc.logits(sim.obs, sim.act, sim.next_obs)

    def ce(lr, ls):
        return -F.log_softmax(lr, -1)[:, REAL].mean() - F.log_softmax(ls, -1)[:, SIM].mean()

    torch.testing.assert_close(out["sa_loss"], ce(sa_r, sa_s))
    torch.testing.assert_close(out["sas_loss"], ce(sas_r, sas_s))


# ---------------------------------------------------------------------------------------------
# H2O
# ---------------------------------------------------------------------------------------------


def h2o_reference(algo: H2O, real: Batch, sim: Batch, u_noise: torch.Tensor, seed: int) -> dict:
    """H2O's losses recomputed from the networks' raw outputs, with the same random draws
    (policy on real+sim states first, then next actions on real+sim next states)."""
    c = algo.config
    torch.manual_seed(seed)
    obs = torch.cat([real.obs, sim.obs])
    actor_loss, _, _ = sac_policy_terms(
        algo.actor, algo.critic, algo.log_alpha, obs, algo.target_entropy
    )
    with torch.no_grad():
        next_obs = torch.cat([real.next_obs, sim.next_obs])
        next_act, _ = algo.actor(next_obs)
        q_next = algo.target_critic(next_obs, next_act).min(0).values
        rew, done = torch.cat([real.rew, sim.rew]), torch.cat([real.done, sim.done])
        y = rew + c.discount * (1 - done) * q_next  # no entropy term
        y_real, y_sim = y[: len(real.obs)], y[len(real.obs) :]

        def log_ratio(s, a, s2):
            d_sa = 2 * torch.tanh(algo.disc.d_sa(torch.cat([s, a], -1)))
            d_sas = 2 * torch.tanh(algo.disc.d_sas(torch.cat([s, a, s2], -1)))
            lq_sas, lq_sa = F.log_softmax(d_sas + d_sa, -1), F.log_softmax(d_sa, -1)
            return lq_sas[:, 0] - lq_sas[:, 1] - lq_sa[:, 0] + lq_sa[:, 1]

        w = log_ratio(sim.obs, sim.act, sim.next_obs).exp()
        w = w.clamp(1e-5, 1.0) if c.use_importance_weight else torch.ones_like(w)
        n = c.u_n_next_states
        u = torch.stack(
            [
                -log_ratio(sim.obs, sim.act, sim.next_obs + u_noise[:, j] * algo.state_std)
                for j in range(n)
            ],
            1,
        ).mean(1)
        u = u.clamp(1e-45, 10.0) if c.use_gap_weighted_penalty else torch.ones_like(u)
        omega = u / u.sum()
    q_real = algo.critic(real.obs, real.act)
    q_sim = algo.critic(sim.obs, sim.act)
    td_real = ((q_real - y_real) ** 2).mean(1)
    td_sim = (w * (q_sim - y_sim) ** 2).mean(1)
    penalty = (torch.logsumexp(q_sim + torch.log(omega), 1) - q_real.mean(1)).clamp(-1000, 1000)
    critic_loss = (td_real + td_sim + c.penalty_weight * penalty).sum()
    return dict(
        actor_loss=actor_loss,
        critic_loss=critic_loss,
        td_real=td_real,
        td_sim=td_sim,
        penalty=penalty,
        w=w,
        u=u,
        omega=omega,
        target_real=y_real,
        target_sim=y_sim,
    )


def test_h2o_losses_match_formula():
    algo = tiny_h2o()
    with torch.no_grad():  # make the critics, their targets and the classifiers non-trivial
        for p in [*algo.critic.parameters(), *algo.disc.parameters()]:
            p.mul_(3.0)
        algo.target_critic.load_state_dict(algo.critic.state_dict())
        for p in algo.target_critic.parameters():
            p.add_(0.05)
    real, sim = random_batch(8, seed=1), random_batch(8, seed=2)
    u_noise = torch.randn(8, 10, OBS, generator=torch.Generator().manual_seed(3))
    torch.manual_seed(7)
    out = algo.losses(real, sim, u_noise=u_noise)
    ref = h2o_reference(algo, real, sim, u_noise, seed=7)
    for key, value in ref.items():
        torch.testing.assert_close(out[key].detach(), value.detach(), rtol=1e-5, atol=1e-5)
    assert 0 < out["penalty"].abs().max() < 1000  # the penalty is active, not clipped here
    assert (out["w"] < 1).any()
    torch.testing.assert_close(out["omega"].sum(), torch.tensor(1.0))


def test_h2o_clipping_bounds():
    algo = tiny_h2o(disc_output_bound=0.0)  # raw logits so that the w / u bounds can bind
    with torch.no_grad():
        algo.disc.d_sas[-1].weight.mul_(500.0)
        algo.critic.net.layers[-1].weight.normal_(0.0, 1e4)
    real, sim = random_batch(8, seed=1), random_batch(8, seed=2)
    out = algo.losses(real, sim)
    w, u, omega = out["w"], out["u"], out["omega"]
    assert (w >= 1e-5).all() and (w <= 1.0).all() and (w == 1.0).any()
    assert (u >= 1e-45).all() and (u <= 10.0).all()
    torch.testing.assert_close(omega.sum(), torch.tensor(1.0))
    assert (out["penalty_raw"].abs() > 1000).any()  # would exceed the bound ...
    assert (out["penalty"] >= -1000).all() and (out["penalty"] <= 1000).all()  # ... is clipped
    assert torch.isfinite(out["critic_loss"])
    # the published output head (2*tanh) keeps |log w| <= 4, so only the upper clip can bind
    bounded = tiny_h2o()
    with torch.no_grad():
        bounded.disc.d_sas[-1].weight.mul_(500.0)
    lr = bounded.disc.log_ratio(sim.obs, sim.act, sim.next_obs)
    assert lr.abs().max() <= 4.0 + 1e-5


def test_h2o_ablation_switches_change_only_their_term():
    real, sim = random_batch(8, seed=1), random_batch(8, seed=2)
    u_noise = torch.randn(8, 10, OBS, generator=torch.Generator().manual_seed(3))
    base = tiny_h2o()
    with torch.no_grad():
        for p in base.disc.parameters():
            p.mul_(3.0)

    def run(**overrides):
        algo = tiny_h2o(**overrides)
        algo.load_state_dict(base.state_dict())
        algo.target_critic.load_state_dict(base.target_critic.state_dict())
        torch.manual_seed(11)
        return algo.losses(real, sim, u_noise=u_noise)

    ref = run()
    assert not torch.allclose(ref["w"], torch.ones(8))
    assert ref["omega"].std() > 0

    no_iw = run(use_importance_weight=False)
    torch.testing.assert_close(no_iw["w"], torch.ones(8))
    assert not torch.allclose(no_iw["td_sim"], ref["td_sim"])
    for key in ("td_real", "penalty", "omega", "actor_loss"):
        torch.testing.assert_close(no_iw[key], ref[key])

    uniform = run(use_gap_weighted_penalty=False)
    torch.testing.assert_close(uniform["omega"], torch.full((8,), 1 / 8))
    assert not torch.allclose(uniform["penalty"], ref["penalty"])
    for key in ("td_real", "td_sim", "w", "actor_loss"):
        torch.testing.assert_close(uniform[key], ref[key])
    # uniform omega: logsumexp(Q) - log B - mean Q_real
    expected = torch.logsumexp(uniform["q_sim"], 1) - math.log(8) - uniform["q_real"].mean(1)
    torch.testing.assert_close(uniform["penalty"], expected)

    no_penalty = run(penalty_weight=0.0)
    torch.testing.assert_close(
        no_penalty["critic_loss"], (ref["td_real"] + ref["td_sim"]).sum(), rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        ref["critic_loss"] - no_penalty["critic_loss"], 0.01 * ref["penalty"].sum()
    )


def test_padded_state_std_matches_the_authors_buffer():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4)).astype(np.float32)
    padded = np.vstack([x, np.zeros((10 * 50, 4))])  # MixedReplayBuffer before any sim data
    expected = padded.std(0) + 1e-3
    got = padded_state_std(torch.from_numpy(x), 10.0)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(
        padded_state_std(torch.from_numpy(x), 0.0).numpy(), x.std(0) + 1e-3, rtol=1e-5
    )


# ---------------------------------------------------------------------------------------------
# DARC
# ---------------------------------------------------------------------------------------------


def test_darc_corrected_reward_and_warmup():
    cfg = DARCConfig(hidden=(16, 16), warmup_steps=3)
    algo = DARC(OBS, ACT, cfg, seed=0)
    with torch.no_grad():
        for p in algo.classifiers.parameters():
            p.mul_(3.0)
    sim = random_batch(16, seed=4)
    reward, _ = algo.corrected_batch(sim)
    torch.testing.assert_close(reward.rew, 0.1 * sim.rew)  # warm-up: no correction

    algo.classifiers.num_updates.fill_(3)  # warm-up over
    reward, delta_r = algo.corrected_batch(sim)
    with torch.no_grad():  # by hand from the raw classifier logits (no tanh, no noise)
        d_sa = algo.classifiers.d_sa(torch.cat([sim.obs, sim.act], -1))
        d_sas = algo.classifiers.d_sas(torch.cat([sim.obs, sim.act, sim.next_obs], -1))
        log_q_sas, log_q_sa = F.log_softmax(d_sa + d_sas, -1), F.log_softmax(d_sa, -1)
        by_hand = log_q_sas[:, REAL] - log_q_sas[:, SIM] - log_q_sa[:, REAL] + log_q_sa[:, SIM]
    assert by_hand.abs().max() > 0.1
    torch.testing.assert_close(delta_r, by_hand, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(reward.rew, 0.1 * (sim.rew + by_hand), rtol=1e-5, atol=1e-5)

    # the critic target uses that reward and the entropy term
    torch.manual_seed(3)
    out = algo.critic_terms(sim)
    torch.manual_seed(3)
    with torch.no_grad():
        next_act, next_log_pi = algo.actor(sim.next_obs)
        q_next = algo.target_critic(sim.next_obs, next_act).min(0).values
        alpha = algo.log_alpha.exp()
        y = reward.rew + 0.99 * (1 - sim.done) * (q_next - alpha * next_log_pi)
    torch.testing.assert_close(out["target"], y, rtol=1e-5, atol=1e-5)
    q = algo.critic(sim.obs, sim.act)
    torch.testing.assert_close(out["critic_loss"], 0.5 * ((q - y) ** 2).sum(0).mean())


def test_darc_real_data_reaches_only_the_classifiers():
    """One update with two different real datasets: identical actor, critics and alpha
    (the correction uses the classifiers from before their step), different classifiers."""
    cfg = DARCConfig(hidden=(16, 16), warmup_steps=0)
    replay = random_buffer(300, seed=2)
    states = []
    for data_seed in (1, 6):
        algo = DARC(OBS, ACT, cfg, seed=0)
        replay.generator.manual_seed(0)
        torch.manual_seed(0)
        algo.update(dataset=random_buffer(300, seed=data_seed), replay=replay)
        states.append(algo.state_dict())
    a, b = states
    for key in ("actor", "critic", "target_critic"):
        for name, value in a[key].items():
            torch.testing.assert_close(value, b[key][name], msg=f"{key}.{name}")
    torch.testing.assert_close(a["log_alpha"], b["log_alpha"])
    assert any(not torch.equal(v, b["classifiers"][k]) for k, v in a["classifiers"].items())
    assert DARC(OBS, ACT, cfg).target_entropy == -ACT / 2


# ---------------------------------------------------------------------------------------------
# updates
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "config"),
    [
        ("h2o", H2OConfig(hidden=(32, 32), disc_hidden=(32, 32))),
        ("darc", DARCConfig(hidden=(32, 32), warmup_steps=2)),
    ],
)
def test_update_changes_parameters_and_returns_finite_tensors(name, config):
    cls = algorithms.get(name)
    assert cls.regime == "hybrid"
    algo = cls(OBS, ACT, config, seed=0)
    dataset, replay = random_buffer(500, seed=1), random_buffer(500, seed=2)
    algo.setup(dataset)
    before = {k: v.detach().clone() for k, v in algo.state_dict().items() if torch.is_tensor(v)}
    before_modules = {
        k: [p.detach().clone() for p in m.parameters()]
        for k, m in algo.components().items()
        if isinstance(m, torch.nn.Module) and k != "target_critic" and list(m.parameters())
    }
    for _ in range(4):
        metrics = algo.update(dataset=dataset, replay=replay)
    for key, value in metrics.items():
        assert isinstance(value, torch.Tensor) and value.dim() == 0, key
        assert not value.requires_grad, key
        assert torch.isfinite(value), key
    for key, params in before_modules.items():
        module = algo.components()[key]
        changed = any(
            not torch.equal(p, q) for p, q in zip(params, module.parameters(), strict=True)
        )
        assert changed, f"{key} did not change"
    assert not torch.equal(before["log_alpha"], algo.log_alpha.detach())
    state = algo.state_dict()
    assert {"disc", "disc_opt"} <= set(state) or {"classifiers", "classifier_opt"} <= set(state)
    if name == "darc":
        assert algo.classifiers.num_updates.item() == 4
        assert metrics["delta_r_std"] > 0  # correction active after the 2 warm-up updates
    # a fresh instance loads the state and gives the same losses
    clone = cls(OBS, ACT, config, seed=1)
    clone.setup(dataset)
    clone.load_state_dict(algo.state_dict())
    clone.target_critic.load_state_dict(algo.target_critic.state_dict())
    sim, real = random_batch(8, seed=9), random_batch(8, seed=8)
    torch.manual_seed(0)
    a = algo.losses(real, sim) if name == "h2o" else algo.losses(sim)
    torch.manual_seed(0)
    b = clone.losses(real, sim) if name == "h2o" else clone.losses(sim)
    torch.testing.assert_close(a["critic_loss"], b["critic_loss"])


def test_unknown_penalty_form_fails_loudly():
    with pytest.raises(algorithms.ConfigError, match="penalty_form"):
        H2O.make_config({"penalty_form": "max"})


def test_overlapped_update_many_gives_the_numbers_of_sequential_updates():
    """With two torch threads, update_many runs update t+1's classifier step on a second
    thread during update t's RL step; each chain keeps its own random stream, so the
    parameters and metrics equal those of one update at a time on one thread."""

    def trained(threads: int, blocks: list[int]):
        algo = tiny_h2o(hidden=(32, 32), disc_hidden=(32, 32))
        dataset, replay = random_buffer(300, seed=1), random_buffer(300, seed=2)
        torch.set_num_threads(threads)
        try:
            sums = [algo.update_many(n, dataset=dataset, replay=replay) for n in blocks]
        finally:
            torch.set_num_threads(1)
        return algo, sums

    overlapped, (sums,) = trained(2, [6])
    sequential, singles = trained(1, [1] * 6)
    for key, module in overlapped.components().items():
        if isinstance(module, torch.nn.Module):
            other = sequential.components()[key]
            for p, q in zip(module.parameters(), other.parameters(), strict=True):
                torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=key)
    assert torch.equal(
        overlapped.disc_rng.generator.get_state(), sequential.disc_rng.generator.get_state()
    )
    for key, total in sums.items():
        torch.testing.assert_close(total, sum(s[key] for s in singles), rtol=1e-5, atol=1e-6)
    assert torch.get_num_threads() == 1  # Overlap gave the caller its threads back
