"""Tests for PAR (algorithms/par.py): the representation deviation and the reward penalty
against their formulas, where the penalty goes (sim transitions only), the encoders'
schedule and data (real transitions, every k-th update), the BC term, learning, state."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gapbench import algorithms
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.nets import adam
from gapbench.algorithms.par import PAR, PARConfig, RepresentationEncoder, avg_l1_norm

OBS, ACT = 3, 2


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread is as fast, and far faster on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_batch(n: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(
        obs=torch.randn(n, OBS, generator=g),
        act=torch.rand(n, ACT, generator=g) * 2 - 1,
        rew=torch.randn(n, generator=g),
        next_obs=torch.randn(n, OBS, generator=g),
        done=(torch.rand(n, generator=g) < 0.2).float(),
    )


def random_buffer(n: int, seed: int = 0) -> TensorBuffer:
    return TensorBuffer.from_arrays(*(x.numpy() for x in random_batch(n, seed)), seed=seed)


def tiny_par(**overrides) -> PAR:
    cfg = dict(
        hidden=(16, 16),
        encoder_hidden=(16, 16),
        encoder_dim=8,
        sim_batch_size=8,
        real_batch_size=8,
        encoder_batch_size=4,
    )
    cfg.update(overrides)
    algo = PAR(OBS, ACT, PARConfig(**cfg), seed=0)
    algo.setup(random_buffer(64, seed=5))
    return algo


class Recording:
    """Wraps a buffer's ``sample`` to keep every batch it hands out."""

    def __init__(self, buffer: TensorBuffer):
        self.buffer, self.batches = buffer, []
        self.sample_fn = buffer.sample
        buffer.sample = self.sample

    def sample(self, n, generator=None):
        batch = self.sample_fn(n, generator)
        self.batches.append(batch)
        return batch


# -- the representation deviation and the penalty ------------------------------------------------
def test_avg_l1_norm_by_hand():
    x = torch.tensor([[2.0, -4.0], [0.0, 0.0]])
    out = avg_l1_norm(x)
    assert torch.equal(out[0], torch.tensor([2.0 / 3.0, -4.0 / 3.0]))
    assert torch.equal(out[1], torch.zeros(2))  # the eps floor: no 0/0


def test_deviation_is_its_formula_on_hand_set_weights():
    """f(s) = AvgL1Norm(W s) and g(z, a) = V [z; a] with one-layer encoders (no hidden
    layer), weights set by hand, so every number can be worked out on paper."""
    enc = RepresentationEncoder(obs_dim=2, act_dim=1, dim=2, hidden=())
    with torch.no_grad():
        (f,) = [m for m in enc.state if isinstance(m, torch.nn.Linear)]
        (g,) = [m for m in enc.state_action if isinstance(m, torch.nn.Linear)]
        f.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        f.bias.zero_()
        g.weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]))
        g.bias.zero_()
    s, a, s2 = torch.tensor([[1.0, 1.0]]), torch.tensor([[0.5]]), torch.tensor([[3.0, 0.0]])
    # f(s) = [1, 2] / 1.5 = [2/3, 4/3]; g = [2/3 + 0.5, 4/3] = [7/6, 4/3]
    # f(s') = [3, 0] / 1.5 = [2, 0]; deviation = ((7/6 - 2)^2 + (4/3)^2) / 2
    expected = ((7 / 6 - 2) ** 2 + (4 / 3) ** 2) / 2
    assert enc.deviation(s, a, s2).item() == pytest.approx(expected, rel=1e-6)
    assert enc.loss(s, a, s2).item() == pytest.approx(expected, rel=1e-6)


def test_penalty_is_beta_times_the_target_encoders_deviation():
    algo = tiny_par(beta=0.7)
    with torch.no_grad():  # the live encoder moved away: the penalty must read the target
        for p in algo.encoder.parameters():
            p.add_(1.0)
    sim = random_batch(6, seed=1)
    pen, dev = algo.penalized(sim)
    target = algo.target_encoder
    pred = target.zsa(avg_l1_norm(target.state(sim.obs)), sim.act)
    expected = (pred - avg_l1_norm(target.state(sim.next_obs))).pow(2).mean(-1)
    torch.testing.assert_close(dev, expected)
    torch.testing.assert_close(pen.rew, sim.rew - 0.7 * expected)
    for key in ("obs", "act", "next_obs", "done"):
        assert torch.equal(getattr(pen, key), getattr(sim, key))
    # the offline variant reads the live encoder
    live = tiny_par(beta=0.7, target_encoder=False)
    live.encoder.load_state_dict(algo.encoder.state_dict())
    _, dev_live = live.penalized(sim)
    torch.testing.assert_close(dev_live, algo.encoder.deviation(sim.obs, sim.act, sim.next_obs))


def test_penalty_applies_to_sim_transitions_only():
    """The critics' batch: penalised sim rewards first, then the real rewards untouched."""
    algo = tiny_par(beta=2.0)
    dataset, replay = random_buffer(64, seed=5), random_buffer(64, seed=6)
    real_rec, sim_rec = Recording(dataset), Recording(replay)
    seen = []
    critic_loss = algo.critic_loss
    algo.critic_loss = lambda batch: seen.append(batch) or critic_loss(batch)
    dev = algo.target_encoder.deviation  # the penalty is read before the target update
    algo.update(dataset=dataset, replay=replay)
    (sim,), (real,) = sim_rec.batches, real_rec.batches
    (batch,) = seen
    n = sim.obs.shape[0]
    assert dev(sim.obs, sim.act, sim.next_obs).min() > 0
    # the target encoder has since moved by tau towards the live one, which has not
    # stepped (update 1 of 200), so it is unchanged: the same deviation as during the step
    torch.testing.assert_close(batch.rew[:n], sim.rew - 2.0 * dev(sim.obs, sim.act, sim.next_obs))
    assert torch.equal(batch.rew[n:], real.rew)
    assert torch.equal(batch.obs, torch.cat([sim.obs, real.obs]))


# -- the encoders: real data only, every k-th update ---------------------------------------------
def test_encoders_step_every_k_updates_on_real_data_only():
    algo = tiny_par(encoder_update_every=3)
    dataset, replay = random_buffer(64, seed=5), random_buffer(64, seed=6)
    real_rec, sim_rec = Recording(dataset), Recording(replay)
    stepped = []
    for _ in range(6):
        before = [p.clone() for p in algo.encoder.parameters()]
        metrics = algo.update(dataset=dataset, replay=replay)
        changed = any(
            not torch.equal(b, p) for b, p in zip(before, algo.encoder.parameters(), strict=True)
        )
        stepped.append(changed)
        assert changed == ("encoder_loss" in metrics)
    assert stepped == [False, False, True, False, False, True]
    # sim: one batch per update; real: one per update plus the encoder's, of its own size
    assert [len(b.obs) for b in sim_rec.batches] == [8] * 6
    assert [len(b.obs) for b in real_rec.batches] == [8, 8, 8, 4, 8, 8, 8, 4]


def test_target_encoder_follows_by_polyak_every_update():
    algo = tiny_par(encoder_update_every=1, tau=0.1)
    dataset, replay = random_buffer(64, seed=5), random_buffer(64, seed=6)
    target_before = [p.clone() for p in algo.target_encoder.parameters()]
    algo.update(dataset=dataset, replay=replay)
    for t0, t1, p in zip(
        target_before, algo.target_encoder.parameters(), algo.encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(t1, 0.9 * t0 + 0.1 * p)


def test_encoder_trained_on_real_dynamics_flags_sim_dynamics():
    """The point of PAR: trained on real transitions (s' = s + a), the deviation is larger
    on transitions of other dynamics (s' = s - a) than on held-out real ones."""
    torch.manual_seed(0)
    enc = RepresentationEncoder(obs_dim=2, act_dim=2, dim=8, hidden=(32, 32))
    opt = adam(enc.parameters(), 3e-3)

    def transitions(n, sign):
        s, a = torch.randn(n, 2), torch.rand(n, 2) * 2 - 1
        return s, a, s + sign * a

    for _ in range(400):
        loss = enc.loss(*transitions(128, +1.0))
        opt.zero_grad()
        loss.backward()
        opt.step()
    real_dev = enc.deviation(*transitions(512, +1.0)).mean()
    sim_dev = enc.deviation(*transitions(512, -1.0)).mean()
    assert sim_dev > 3 * real_dev


# -- the actor: BC on real data ------------------------------------------------------------------
def test_actor_loss_with_and_without_bc():
    algo = tiny_par(bc_weight=2.5)
    real = random_batch(8, seed=2)
    obs = torch.cat([random_batch(8, seed=1).obs, real.obs])
    torch.manual_seed(4)
    out = algo.actor_loss(obs, real)
    torch.manual_seed(4)
    act, log_pi = algo.actor(obs)
    q = algo.critic(obs, act).min(0).values
    alpha = algo.log_alpha.exp()
    lmbda = 2.5 / q.abs().mean()
    bc_act, _ = algo.actor(real.obs)
    expected = lmbda * (alpha * log_pi - q).mean() + F.mse_loss(bc_act, real.act)
    torch.testing.assert_close(out["actor_loss"], expected)
    torch.testing.assert_close(out["lmbda"], lmbda.detach())
    # the critics get no gradient from the actor loss
    out["actor_loss"].backward()
    assert all(p.grad is None for p in algo.critic.parameters())

    plain = tiny_par(bc_weight=None)
    torch.manual_seed(4)
    out = plain.actor_loss(obs, real)
    torch.manual_seed(4)
    act, log_pi = plain.actor(obs)
    q = plain.critic(obs, act).min(0).values
    torch.testing.assert_close(out["actor_loss"], (plain.log_alpha.exp() * log_pi - q).mean())
    assert "bc_loss" not in out


def test_fixed_temperature_and_frozen_log_std_affine():
    algo = tiny_par()
    dataset, replay = random_buffer(64, seed=5), random_buffer(64, seed=6)
    for _ in range(3):
        metrics = algo.update(dataset=dataset, replay=replay)
    assert metrics["alpha"].item() == pytest.approx(0.2)
    assert algo.actor.log_std_multiplier.item() == 1.0
    assert algo.actor.log_std_offset.item() == 0.0
    tuned = tiny_par(auto_alpha=True)
    for _ in range(3):
        tuned.update(dataset=dataset, replay=replay)
    assert tuned.log_alpha.exp().item() != pytest.approx(0.2, abs=1e-6)


# -- learning, metrics, state -------------------------------------------------------------------
def test_updates_change_every_trained_network():
    algo = tiny_par(encoder_update_every=1)
    nets = {
        "actor": algo.actor,
        "critic": algo.critic,
        "target_critic": algo.target_critic,
        "encoder": algo.encoder,
        "target_encoder": algo.target_encoder,
    }
    before = {k: [p.clone() for p in m.parameters()] for k, m in nets.items()}
    dataset, replay = random_buffer(64, seed=5), random_buffer(64, seed=6)
    for _ in range(3):
        metrics = algo.update(dataset=dataset, replay=replay)
    for key, module in nets.items():
        assert any(
            not torch.equal(b, p) for b, p in zip(before[key], module.parameters(), strict=True)
        ), key
    for key in ("critic_loss", "actor_loss", "bc_loss", "deviation_mean", "encoder_loss"):
        assert torch.isfinite(metrics[key]), key


def test_update_many_averages_the_encoder_loss_over_its_steps():
    algo = tiny_par(encoder_update_every=2)
    twin = tiny_par(encoder_update_every=2)
    twin.load_state_dict(algo.state_dict())
    d1, r1 = random_buffer(64, seed=5), random_buffer(64, seed=6)
    d2, r2 = random_buffer(64, seed=5), random_buffer(64, seed=6)
    torch.manual_seed(1)
    sums = algo.update_many(4, dataset=d1, replay=r1)
    torch.manual_seed(1)
    losses = [twin.update(dataset=d2, replay=r2).get("encoder_loss") for _ in range(4)]
    steps = [x for x in losses if x is not None]
    assert len(steps) == 2
    torch.testing.assert_close(sums["encoder_loss"] / 4, sum(steps) / 2)


def test_state_round_trip_keeps_the_encoder_schedule():
    algo = tiny_par(encoder_update_every=3)
    dataset, replay = random_buffer(64, seed=5), random_buffer(64, seed=6)
    for _ in range(2):
        algo.update(dataset=dataset, replay=replay)
    other = tiny_par(encoder_update_every=3)
    other.load_state_dict(algo.state_dict())
    assert other.steps.count == 2
    for a, b in zip(
        algo.target_encoder.parameters(), other.target_encoder.parameters(), strict=True
    ):
        assert torch.equal(a, b)
    out = []
    for x in (algo, other):
        torch.manual_seed(9)
        d, r = random_buffer(64, seed=7), random_buffer(64, seed=8)
        out.append({k: float(v) for k, v in x.update(dataset=d, replay=r).items()})
    assert out[0] == out[1] and "encoder_loss" in out[0]


def test_registered_with_its_regime_and_bad_values_are_clear_errors():
    cls = algorithms.get("par")
    assert cls is PAR and cls.regime == "hybrid"
    assert cls.make_config({"bc_weight": "none"}).bc_weight is None
    with pytest.raises(algorithms.ConfigError, match="encoder_update_every"):
        cls.make_config({"encoder_update_every": 0})
    with pytest.raises(ValueError, match="hybrid"):
        PAR(OBS, ACT, PARConfig()).setup(None)
