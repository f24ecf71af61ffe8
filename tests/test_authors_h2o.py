"""gapbench's H2O step against the authors' own (t6-thu/H2O ``Sim2realSAC.train``), with
every default on.

Both sides start from the same weights and the same data, each set up its own way: the
authors' ``MixedReplayBuffer`` (its unmodified ``__init__``, ``normalize_states`` and
``sample``, with the D4RL file replaced by the test's arrays) computes its state std on
its zero-padded array, gapbench's ``setup`` computes its own; gapbench runs its
production path ``update_many(1, dataset, replay)`` with its default config against the
authors' ``train`` with the batch split of their ``sim2real_sac_main.py`` flags. Every
random draw is pinned but not zero (``Draws``): the same batch indices, the same
classifier input noise, the same policy sampling noise and the same perturbation of the
next states for u, served in each side's own call order, every draw checked for size
and source and all of them used. One step must then give the same losses, gradients for
the actor, both critics and both classifiers, and parameters afterwards; the defaults
the step cannot show (the penalty clip bounds are not reached) are compared with the
authors' config in ``test_defaults_are_the_authors``.

Mutations of gapbench that these tests catch (``scripts/check_mutations.py`` applies each
to a copy and checks that a test fails): state-std zero padding 10 -> 0; the padded-std
formula; classifier noise 0.1 -> 0.3; real/sim split 128/128 -> 64/192; classifier batch
256 -> 64; w, u, omega from the classifiers before their step; either penalty-clip
bound; an RL step on another sim batch than w and u; mean sim Q instead of mean real Q
in the penalty.

Needs a local clone of https://github.com/t6-thu/H2O (nothing is downloaded):
``GAPBENCH_H2O_REPO=/path/to/H2O .venv/bin/pytest tests/test_authors_h2o.py``.
"""

from __future__ import annotations

import os
import random
import types
from copy import deepcopy
from pathlib import Path

import numpy as np
import pytest
import torch
from support.reference_code import (
    Draws,
    assert_same_grads,
    assert_same_params_after_step,
    assert_same_sac_parts_after_step,
    flag_defaults,
    linears,
    load_defs,
    load_h2o,
    mirror_sac_parts,
)

from gapbench import algorithms
from gapbench.algorithms.buffer import TensorBuffer

REPO = os.environ.get("GAPBENCH_H2O_REPO")
pytestmark = pytest.mark.skipif(
    not REPO, reason="set GAPBENCH_H2O_REPO to a clone of t6-thu/H2O to compare with it"
)
OBS, ACT, N_REAL, N_SIM = 17, 6, 400, 300


def _flags() -> dict:
    return flag_defaults(Path(REPO) / "SimpleSAC" / "sim2real_sac_main.py")


def _transitions(gen: torch.Generator, n: int, shift: float) -> dict[str, np.ndarray]:
    """D4RL-like arrays: states with per-dimension offsets and scales (so the zero
    padding changes the std), actions inside (-0.99, 0.99), some terminals."""
    offset = torch.linspace(-2.0, 2.0, OBS) + shift
    scale = torch.linspace(0.5, 2.0, OBS)
    obs = torch.randn(n, OBS, generator=gen) * scale + offset
    return {
        "observations": obs.numpy(),
        "actions": ((torch.rand(n, ACT, generator=gen) * 2 - 1) * 0.99).numpy(),
        "rewards": torch.randn(n, generator=gen).numpy(),
        "next_observations": (obs + 0.3 * torch.randn(n, OBS, generator=gen)).numpy(),
        "terminals": (torch.rand(n, generator=gen) < 0.2).numpy(),
    }


class _H5File:
    """h5py.File stand-in: the test's arrays where their buffer reads the D4RL file."""

    def __init__(self, data: dict):
        self.data = data

    def __enter__(self):
        return self.data

    def __exit__(self, *exc):
        return False


class _ReplayBufferBase:
    """Their ReplayBuffer base, whose fields MixedReplayBuffer.__init__ all sets again
    (the real one imports D4RL and gym and allocates 1e6 rows)."""

    def __init__(self, *args, **kwargs):
        pass


def _their_buffer(real: dict, sim: dict, flags: dict):
    """Their MixedReplayBuffer, built as ``sim2real_sac_main.py`` builds it (flag
    defaults: reward scale/bias, action clip, buffer ratio, residual ratio), then the sim
    transitions appended through its own ``append_traj``."""
    path = Path(REPO) / "SimpleSAC" / "mixed_replay_buffer.py"
    namespace = {
        "os": os,
        "random": random,
        "np": np,
        "torch": torch,
        "h5py": types.SimpleNamespace(File=lambda *a, **k: _H5File(real)),
        "ReplayBuffer": _ReplayBufferBase,
    }
    (mixed_cls,) = load_defs(path, ["MixedReplayBuffer"], namespace)
    np.random.seed(0)  # their residual_ratio subsampling permutes the rows
    buf = mixed_cls(
        flags["reward_scale"],
        flags["reward_bias"],
        flags["clip_action"],
        OBS,
        ACT,
        device="cpu",
        buffer_ratio=flags["replaybuffer_ratio"],
        residual_ratio=flags["real_residual_ratio"],
    )
    keys = ("observations", "actions", "rewards", "next_observations", "terminals")
    buf.append_traj(*(sim[k] for k in keys))
    return buf


def _as_tensor_buffer(buf, rows: slice) -> TensorBuffer:
    """Rows of their buffer (after its own permutation and clipping) as a gapbench buffer."""
    arrays = (buf.state, buf.action, buf.reward, buf.next_state, buf.done)
    return TensorBuffer.from_arrays(*(a[rows].astype(np.float32) for a in arrays))


def test_one_h2o_step_equals_the_authors_code():
    qf_cls, policy_cls, disc_cls, sac_cls = load_h2o(REPO)
    flags = _flags()
    real_bs = int(flags["batch_size"] * (1 - flags["batch_ratio"]))
    sim_bs = int(flags["batch_size"] * flags["batch_ratio"])
    config = sac_cls.get_default_config()
    disc_bs, n_next = config.batch_size, config.sampling_n_next_states

    torch.manual_seed(0)
    policy = policy_cls(
        OBS,
        ACT,
        arch=flags["policy_arch"],
        log_std_multiplier=flags["policy_log_std_multiplier"],
        log_std_offset=flags["policy_log_std_offset"],
    )
    qf1, qf2 = qf_cls(OBS, ACT, arch=flags["qf_arch"]), qf_cls(OBS, ACT, arch=flags["qf_arch"])
    d_sa = disc_cls(OBS + ACT, 256, 2, "cpu", dropout=flags["dis_dropout"])
    d_sas = disc_cls(2 * OBS + ACT, 256, 2, "cpu", dropout=flags["dis_dropout"])
    # Away from the near-zero outputs of a fresh init, so that every term matters: logits
    # of a few units (w and u not trivially 1 and 0), Q values spread over several units
    # (the logsumexp penalty then differs from an omega-weighted mean) and a policy whose
    # log-std spreads around its clamp.
    with torch.no_grad():
        d_sas.fc3.weight.mul_(20.0)
        for qf in (qf1, qf2):
            linears(qf)[-1].weight.mul_(3000.0)
        linears(policy)[-1].weight.mul_(100.0)

    gen = torch.Generator().manual_seed(1)
    # sim states shifted from the real ones: real and sim Q means differ
    real, sim = _transitions(gen, N_REAL, 0.0), _transitions(gen, N_SIM, 4.0)
    buf = _their_buffer(real, sim, flags)
    config.device = "cpu"
    config.target_entropy = -float(ACT)  # their main: -|A| when the config's is >= 0
    sac = sac_cls(config, policy, qf1, qf2, deepcopy(qf1), deepcopy(qf2), d_sa, d_sas, buf)

    ours = algorithms.get("h2o")(OBS, ACT, seed=0)
    dataset = _as_tensor_buffer(buf, slice(0, N_REAL))
    replay = _as_tensor_buffer(buf, slice(N_REAL, N_REAL + N_SIM))
    ours.setup(dataset)
    # each side's own state std, from the same data
    torch.testing.assert_close(ours.state_std, torch.as_tensor(buf.state_std[0]).float())
    mirror_sac_parts(sac, ours)
    for theirs_net, our_net in ((d_sa, ours.disc.d_sa), (d_sas, ours.disc.d_sas)):
        for src, dst in zip(linears(theirs_net), linears(our_net), strict=True):
            with torch.no_grad():
                dst.weight.copy_(src.weight)
                dst.bias.copy_(src.bias)

    def idx(n: int, population: int) -> tuple[torch.Tensor, int]:
        return torch.randint(0, population, (n,), generator=gen), population

    indices = [idx(real_bs, N_REAL), idx(sim_bs, N_SIM), idx(disc_bs, N_REAL), idx(disc_bs, N_SIM)]
    # classifier input noise per source and input, policy noise (actions at s for real +
    # sim, next actions at real s', at sim s'), the perturbation of sim s' for u
    inputs = {"ro": OBS, "ra": ACT, "rn": OBS, "so": OBS, "sa": ACT, "sn": OBS}
    d_noise = {k: torch.randn(disc_bs, d, generator=gen) for k, d in inputs.items()}
    eps_pi = torch.randn(real_bs + sim_bs, ACT, generator=gen)
    eps_next_real = torch.randn(real_bs, ACT, generator=gen)
    eps_next_sim = torch.randn(sim_bs, ACT, generator=gen)
    u_noise = torch.randn(sim_bs * n_next, OBS, generator=gen)
    theirs_draws = Draws(
        normal=[*d_noise.values(), eps_pi, eps_next_real, eps_next_sim, u_noise],
        indices=indices,
    )
    our_draws = Draws(
        normal=[
            torch.cat([d_noise["ro"], d_noise["so"]]),
            torch.cat([d_noise["ra"], d_noise["sa"]]),
            torch.cat([d_noise["rn"], d_noise["sn"]]),
            u_noise,
            eps_pi,
            torch.cat([eps_next_real, eps_next_sim]),
        ],
        indices=indices,
    )
    with theirs_draws.served():
        theirs = sac.train(real_bs, sim_bs)
    with our_draws.served():
        mine = ours.update_many(1, dataset, replay)

    close = dict(rel=1e-4, abs=1e-5)
    # their sim TD weights and gap measure are far from trivial here, real and sim Q differ
    assert 0.2 < theirs["cql/sqrt_IS_ratio"] < 0.95 and theirs["cql/u_sa"] > 0.1
    assert abs(theirs["average_sim_qf1"] - theirs["average_real_qf1"]) > 1.0
    # ... and ours equal them
    assert float(mine["disc_sa_loss"]) == pytest.approx(theirs["dsa_train_loss"], **close)
    assert float(mine["disc_sas_loss"]) == pytest.approx(theirs["dsas_train_loss"], **close)
    assert float(mine["actor_loss"]) == pytest.approx(theirs["policy_loss"], **close)
    assert float(mine["alpha_loss"]) == pytest.approx(theirs["alpha_loss"], **close)
    their_critic = (
        theirs["qf1_loss"]
        + theirs["qf2_loss"]
        + theirs["cql/cql_min_qf1_loss"]
        + theirs["cql/cql_min_qf2_loss"]
    )
    assert float(mine["critic_loss"]) == pytest.approx(their_critic, **close)
    assert float(mine["u_mean"]) == pytest.approx(theirs["cql/u_sa"], **close)
    their_penalty = (theirs["cql/cql_qf1_diff"] + theirs["cql/cql_qf2_diff"]) / 2
    assert float(mine["penalty"]) == pytest.approx(their_penalty, **close)

    # Gradients of the step (both sides leave them in .grad; ours of one backward, theirs
    # of their five, each from the pre-step parameters), then the parameters after it
    # (learning rates, Adam, the target update, the temperature step).
    for their_mod, our_mod in ((d_sa, ours.disc.d_sa), (d_sas, ours.disc.d_sas)):
        assert_same_grads(their_mod, our_mod)
        assert_same_params_after_step(their_mod, our_mod)
    assert_same_sac_parts_after_step(sac, ours)


def test_defaults_are_the_authors():
    """Every H2O default against the authors' config and main-script flags, read from
    their code (the numerical test covers most of them again; this one also covers the
    ones a single step does not reach, such as the penalty clip bounds)."""
    _, _, _, sac_cls = load_h2o(REPO)
    theirs, flags = sac_cls.get_default_config(), _flags()
    ours = algorithms.get("h2o").Config()
    arch = tuple(int(h) for h in flags["qf_arch"].split("-"))
    assert flags["policy_arch"] == flags["qf_arch"]
    assert theirs.target_update_period == 1 and theirs.use_cql
    assert theirs.use_automatic_entropy_tuning == ours.auto_alpha and ours.init_alpha == 1.0
    expected = {
        "real_batch_size": int(flags["batch_size"] * (1 - flags["batch_ratio"])),
        "sim_batch_size": int(flags["batch_size"] * flags["batch_ratio"]),
        "discount": theirs.discount,
        "tau": theirs.soft_target_update_rate,
        "actor_lr": theirs.policy_lr,
        "critic_lr": theirs.qf_lr,
        "alpha_lr": theirs.policy_lr,  # their temperature optimizer uses the policy lr
        "hidden": arch,
        "backup_entropy": theirs.backup_entropy,
        "disc_batch_size": theirs.batch_size,
        "disc_lr": theirs.d_sa_lr,
        "disc_noise_std": theirs.noise_std_discriminator,
        "use_importance_weight": theirs.use_td_target_ratio,
        "dynamics_ratio_min": theirs.clip_dynamics_ratio_min,
        "dynamics_ratio_max": theirs.clip_dynamics_ratio_max,
        "use_gap_weighted_penalty": theirs.use_sim_q_coeff,
        "penalty_weight": theirs.cql_min_q_weight,
        "penalty_temperature": theirs.cql_temp,
        "penalty_clip_min": theirs.cql_clip_diff_min,
        "penalty_clip_max": theirs.cql_clip_diff_max,
        "penalty_form": "weighted_mean" if theirs.use_variant else "logsumexp",
        "u_n_next_states": theirs.sampling_n_next_states,
        "u_noise_scale": theirs.s_prime_std_ratio,
        "u_min": theirs.sim_q_coeff_min,
        "u_max": theirs.sim_q_coeff_max,
        "state_std_zero_padding": flags["replaybuffer_ratio"],
    }
    assert theirs.d_sas_lr == theirs.d_sa_lr
    assert {k: getattr(ours, k) for k in expected} == expected
