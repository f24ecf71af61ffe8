"""Seeds trained as one batch (algorithms/seeds.py) give each seed the numbers of its own
separate run: same losses, same parameters, same optimizer state, to float tolerance.

The batched products run as bmm over K seeds where a separate run uses mm, so the last
bits differ; Adam turns bit-level differences of near-zero gradients into steps of up to
its learning rate, so parameters are compared with a tolerance of a few learning rates
(and most of them far closer), losses with a relative one. A wrong stream (noise or replay
of another seed, a shared optimizer state) moves losses by percents from the first update.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gapbench import algorithms
from gapbench.algorithms.seeds import BATCHABLE, SeedBatch, SeedRNG, batchable
from gapbench.benchmark.speed import random_buffer

OBS, ACT = 11, 3
SMALL = {"hidden": (64, 64), "batch_size": 64}
SMALLER = {  # the hybrid methods' own batch and classifier sizes
    "darc": {**SMALL, "classifier_hidden": (32,)},
    "h2o": {
        "hidden": (64, 64),
        "real_batch_size": 32,
        "sim_batch_size": 32,
        "disc_batch_size": 64,
        "disc_hidden": (64, 64),
    },
    # CQL's critics already see B (1 + 3 n) rows per update: smaller nets and batch keep it fast
    "cql": {"hidden": (32, 32), "batch_size": 32},
}
UPDATES = 300


def _buffers(seed: int, name: str = "sac") -> dict:
    """Seed ``seed``'s buffers by source: its own replay (online, hybrid); the one dataset
    every seed learns from (offline, hybrid), sampled with the seed's own generator."""
    regime = algorithms.get(name).regime
    out = {}
    if regime in ("offline", "hybrid"):
        out["dataset"] = random_buffer(2_000, OBS, ACT, seed=100)
        out["dataset"].generator.manual_seed(1_000 + seed)
    if regime != "offline":
        out["replay"] = random_buffer(2_000, OBS, ACT, seed=(200 if out else 100) + seed)
    return out


def _build(name: str, seed: int, overrides: dict, buffers: dict | None = None):
    """As the harness builds a run's algorithm: construct (it seeds torch), set the run's
    length, set up on the dataset (an offline algorithm's reward scale, H2O's state std)."""
    cls = algorithms.get(name)
    small = SMALLER.get(name, SMALL)
    algo = cls(OBS, ACT, cls.make_config({**small, **overrides}), seed=seed)
    algo.set_total_updates(UPDATES)
    algo.setup((buffers or _buffers(seed, name)).get("dataset"))
    return algo


def _separate(name: str, seed: int, overrides: dict, updates: int):
    bufs = _buffers(seed, name)
    algo = _build(name, seed, overrides, bufs)
    metrics = [algo.update(**bufs) for _ in range(updates)]
    return algo, metrics


def _batched(name: str, seeds: list[int], overrides: dict, updates: int):
    members, states = [], []
    per_seed = [_buffers(seed, name) for seed in seeds]
    for seed, bufs in zip(seeds, per_seed, strict=True):  # each seeds torch itself
        members.append(_build(name, seed, overrides, bufs))
        states.append(SeedRNG.capture(torch.device("cpu")))
    batch = SeedBatch(members, states)
    buffers = {src: [b[src] for b in per_seed] for src in per_seed[0]}
    metrics = [batch.update_many(1, **buffers) for _ in range(updates)]
    return batch, buffers, metrics


def _max_param_gap(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(
        (p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


@pytest.mark.parametrize(
    "overrides", [{}, {"backup_entropy": False, "auto_alpha": False, "n_critics": 3}]
)
def test_batched_sac_equals_separate_runs(overrides):
    seeds = [0, 1, 5]
    separate = [_separate("sac", s, overrides, UPDATES) for s in seeds]
    batch, _, batched = _batched("sac", seeds, overrides, UPDATES)
    lr = 3e-4
    for k, (algo, metrics) in enumerate(separate):
        first = {key: v.item() for key, v in metrics[0].items()}
        for key, value in first.items():  # the first update: every stream is the seed's own
            assert batched[0][key][k].item() == pytest.approx(value, rel=1e-5, abs=1e-6), key
        for t in range(UPDATES):
            for key, value in metrics[t].items():
                got = batched[t][key][k].item()
                assert got == pytest.approx(value.item(), rel=1e-3, abs=1e-4), (key, t)
        member = batch.members[k]
        for part in ("actor", "critic", "target_critic"):
            gap = _max_param_gap(getattr(algo, part), getattr(member, part))
            assert gap < 10 * lr, (part, gap)
        assert member.log_alpha.item() == pytest.approx(algo.log_alpha.item(), abs=10 * lr)
        # the seeds differ from each other far more than from their separate runs
        if k:
            assert _max_param_gap(member.actor, batch.members[0].actor) > 100 * lr


def test_batched_iql_equals_separate_runs():
    """IQL (offline): four vmapped methods per update, the value step before the others,
    the actor's cosine learning-rate decay and the step counter shared by the seeds."""
    seeds, n = [0, 2], 200
    separate = [_separate("iql", s, {}, n) for s in seeds]
    batch, _, batched = _batched("iql", seeds, {}, n)
    for k, (algo, metrics) in enumerate(separate):
        for key, value in metrics[0].items():
            assert batched[0][key][k].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6)
        for t in range(n):
            for key, value in metrics[t].items():
                got = batched[t][key][k].item()
                assert got == pytest.approx(value.item(), rel=1e-3, abs=1e-4), (key, t)
        member = batch.members[k]
        for part in ("actor", "critic", "target_critic", "value"):
            gap = _max_param_gap(getattr(algo, part), getattr(member, part))
            assert gap < 10 * 3e-4, (part, gap)
        state = batch.member_state_dict(k)
        assert state["steps"] == algo.state_dict()["steps"]
        lr = batch.template.actor_opt.param_groups[0]["lr"]
        assert lr == algo.actor_opt.param_groups[0]["lr"] < 3e-4
    # seeds that would need different non-parameter state (reward scales of different
    # datasets) are refused, not silently given seed 0's
    members = [
        _build("iql", s, {}, {"dataset": random_buffer(2_000, OBS, ACT, seed=s)}) for s in seeds
    ]
    with pytest.raises(ValueError, match="reward_scale"):
        SeedBatch(members, [SeedRNG.capture(torch.device("cpu"))] * 2)


def test_member_checkpoint_is_a_separate_runs_checkpoint():
    """A seed's state from the batch has the single-run format and values: a batch can be
    resumed from separate runs' checkpoints and the other way round."""
    seeds, n = [2, 3], 40
    separate = [_separate("sac", s, {}, n) for s in seeds]
    batch, buffers, _ = _batched("sac", seeds, {}, n)
    buffers = buffers["replay"]
    for k, (algo, _) in enumerate(separate):
        mine, theirs = batch.member_state_dict(k), algo.state_dict()
        assert mine.keys() == theirs.keys()
        for key in ("actor_opt", "critic_opt", "alpha_opt"):
            a, b = mine[key], theirs[key]
            assert a["param_groups"] == b["param_groups"]
            for idx, state in b["state"].items():
                for name, value in state.items():
                    torch.testing.assert_close(a["state"][idx][name], value, atol=1e-5, rtol=1e-3)
        for key in ("actor", "critic", "target_critic"):
            for name, value in theirs[key].items():
                torch.testing.assert_close(mine[key][name], value, atol=1e-4, rtol=1e-3)
    # resume: fresh members loaded from the batch's checkpoints, re-stacked, go on exactly
    # as the batch itself goes on
    states = [batch.member_state_dict(k) for k in range(len(seeds))]
    rng = list(batch.rng.states)
    resumed = []
    for k, seed in enumerate(seeds):
        member = _build("sac", seed, {})
        member.load_state_dict(states[k])
        resumed.append(member)
    again = SeedBatch(resumed, rng)
    replay_rng = [b.generator.get_state() for b in buffers]
    going = [batch.update_many(1, replay=buffers) for _ in range(5)]
    for b, state in zip(buffers, replay_rng, strict=True):
        b.generator.set_state(state)
    back = [again.update_many(1, replay=buffers) for _ in range(5)]
    for a, b in zip(going, back, strict=True):
        for key in a:
            torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)


def test_exploration_noise_comes_from_each_seeds_stream():
    """Between updates a run draws exploration noise from torch's global generator:
    member_rng(k) gives seed k exactly the draws its separate run makes."""
    seeds = [0, 4]
    obs = np.zeros(OBS, dtype=np.float32)
    expected = []
    for seed in seeds:
        algo = _build("sac", seed, {})
        expected.append([algo.act(obs, deterministic=False) for _ in range(3)])
    batch, _, _ = _batched("sac", seeds, {}, 0)
    torch.manual_seed(999)  # the group's own global stream is nobody's
    for k in range(len(seeds)):
        for want in expected[k]:
            with batch.member_rng(k):
                got = batch.members[k].act(obs, deterministic=False)
            np.testing.assert_array_equal(got, want)


def test_only_tested_algorithms_batch():
    assert batchable(algorithms.get("sac")) is batchable(algorithms.get("cql")) is None
    for name in algorithms.names():
        if name not in BATCHABLE:
            assert "no seed-batched path" in batchable(algorithms.get(name))
    with pytest.raises(ValueError, match="no seed-batched path"):
        SeedBatch([algorithms.get("td3bc")(OBS, ACT)], [SeedRNG.capture(torch.device("cpu"))])


def test_an_update_that_draws_from_the_global_generator_fails_loudly(monkeypatch):
    batch, buffers, _ = _batched("sac", [0, 1], {}, 0)
    buffers = buffers["replay"]
    update = type(batch.template).update

    def leaky(self, dataset=None, replay=None):
        torch.rand(1)  # a draw the batch cannot give each seed
        return update(self, dataset, replay)

    monkeypatch.setattr(type(batch.template), "update", leaky)
    with pytest.raises(RuntimeError, match="global generator"):
        batch.update_many(1, replay=buffers)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batched_sac_equals_separate_runs_on_cuda():
    """The same path on a GPU: parameters, buffers and each seed's noise stream (the CUDA
    generator's state, swapped per seed) on the device."""
    dev, seeds, n = torch.device("cuda"), [0, 1, 2], 100
    cls = algorithms.get("sac")
    config = cls.make_config(SMALL)

    def buf(seed):
        return random_buffer(2_000, OBS, ACT, device=dev, seed=100 + seed)

    separate = []
    for seed in seeds:
        algo, b = cls(OBS, ACT, config, seed=seed, device=dev), buf(seed)
        separate.append((algo, [algo.update(replay=b) for _ in range(n)]))
    members, states = [], []
    for seed in seeds:
        members.append(cls(OBS, ACT, config, seed=seed, device=dev))
        states.append(SeedRNG.capture(dev))
    batch = SeedBatch(members, states)
    buffers = [buf(seed) for seed in seeds]
    batched = [batch.update_many(1, replay=buffers) for _ in range(n)]
    for k, (algo, metrics) in enumerate(separate):
        for t in range(n):
            for key, value in metrics[t].items():
                got = batched[t][key][k].item()
                assert got == pytest.approx(value.item(), rel=1e-3, abs=1e-4), (key, t)
        assert _max_param_gap(algo.actor, batch.members[k].actor) < 10 * 3e-4


def _assert_batched_equals_separate(name, seeds, overrides, n, parts):
    separate = [_separate(name, s, overrides, n) for s in seeds]
    batch, _, batched = _batched(name, seeds, overrides, n)
    for k, (algo, metrics) in enumerate(separate):
        for key, value in metrics[0].items():  # the first update: every stream is the seed's own
            got = batched[0][key][k].item()
            assert got == pytest.approx(value.item(), rel=1e-5, abs=1e-6), key
        for t in range(n):
            for key, value in metrics[t].items():
                got = batched[t][key][k].item()
                assert got == pytest.approx(value.item(), rel=1e-3, abs=1e-4), (key, t)
        member = batch.members[k]
        for part in parts:
            gap = _max_param_gap(getattr(algo, part), getattr(member, part))
            assert gap < 10 * 3e-4, (part, gap)
        assert member.log_alpha.item() == pytest.approx(algo.log_alpha.item(), abs=3e-3)
        mine, theirs = batch.member_state_dict(k), algo.state_dict()
        assert mine.keys() == theirs.keys()
        if k:  # the seeds differ from each other far more than from their separate runs
            assert _max_param_gap(member.actor, batch.members[0].actor) > 100 * 3e-4
    return separate, batch


def test_batched_darc_equals_separate_runs():
    """DARC: four sequential steps per update (critics, actor against the stepped critics,
    temperature on a fresh sample, classifiers), each a vmapped method; the classifiers'
    input noise from each seed's global stream; the warm-up gate on each seed's counter."""
    _, batch = _assert_batched_equals_separate(
        "darc",
        [0, 3],
        {"warmup_steps": 60},
        150,
        ("actor", "critic", "target_critic", "classifiers"),
    )
    assert batch.members[1].classifiers.num_updates.item() == 150
    assert batch.member_state_dict(1)["classifiers"]["num_updates"].item() == 150


def test_batched_h2o_equals_separate_runs():
    """H2O: the classifiers' own generator (their batches, input noise and the u
    perturbation) is each seed's own; the one-chain update path; w, u and omega per seed."""
    separate, batch = _assert_batched_equals_separate(
        "h2o", [0, 3], {}, 150, ("actor", "critic", "target_critic", "disc")
    )
    for k, (algo, _) in enumerate(separate):  # each seed's classifier stream where its run's is
        mine = batch.member_state_dict(k)["disc_rng"]
        assert torch.equal(mine["_extra_state"]["state"], algo.disc_rng.generator.get_state())


CQL_VARIANTS = {
    "default": ({}, 200),
    # every other path of the step: the Lagrange dual on alpha' (its own free parameter
    # and optimizer), the max-target backup (n policy actions at s'), the BC warm start
    # gated on the shared step counter, clipping, no importance sampling, 3 critics
    "options": (
        {
            "cql_lagrange": True,
            "cql_max_target_backup": True,
            "bc_steps": 30,
            "cql_clip_diff_min": -2.0,
            "cql_clip_diff_max": 50.0,
            "cql_importance_sample": False,
            "backup_entropy": True,
            "auto_alpha": False,
            "n_critics": 3,
        },
        100,
    ),
}


@pytest.mark.parametrize("variant", sorted(CQL_VARIANTS))
def test_batched_cql_equals_separate_runs(variant):
    """CQL (offline): the uniform random actions of the conservative term come from each
    seed's global stream (nets.uniform_noise), interleaved with the policy's Gaussian noise
    in the order a separate run draws them."""
    overrides, n = CQL_VARIANTS[variant]
    separate, batch = _assert_batched_equals_separate(
        "cql", [0, 3], overrides, n, ("actor", "critic", "target_critic")
    )
    for k, (algo, _) in enumerate(separate):
        member = batch.members[k]
        got, want = member.log_alpha_prime.item(), algo.log_alpha_prime.item()
        assert got == pytest.approx(want, abs=3e-3)
        if overrides.get("cql_lagrange"):  # alpha' moved, seed by seed
            assert abs(want - 1.0) > 1e-3
        assert batch.member_state_dict(k)["steps"] == algo.state_dict()["steps"]


def test_the_draw_hooks_draw_as_plain_torch_does():
    """Outside a batch, nets.gaussian_noise and nets.uniform_noise are the plain torch draws
    (a single run's numbers do not depend on going through them)."""
    from gapbench.algorithms.nets import gaussian_noise, uniform_noise

    like = torch.zeros(4, 2)
    torch.manual_seed(7)
    want = [torch.empty(5, 3).uniform_(-1.0, 1.0), torch.randn_like(like)]
    torch.manual_seed(7)
    got = [uniform_noise((5, 3), -1.0, 1.0, like=like), gaussian_noise(like)]
    for a, b in zip(got, want, strict=True):
        assert torch.equal(a, b)
