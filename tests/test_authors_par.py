"""gapbench's PAR step against the reference code, imported unmodified:

- with its defaults, against ODRL's ``PARBC`` (OffDynamicsRL/off-dynamics-rl,
  ``algo/online_offline/par_bc.py``): the online-source / offline-target form that
  gapbench's hybrid regime is, with ODRL's ``config/mujoco/par_bc/halfcheetah.yaml``;
- with ``bc_weight=None``, against the authors' online ``PAR`` (dmksjfl/PAR,
  ``algo/PAR.py``) with their ``config/halfcheetah.yaml``.

Both sides start from the same weights (target critics and target encoder moved apart
from the online networks, so that tau shows in one step) and the same data (the
reference's own ``ReplayBuffer``, filled with the test's arrays); every random draw is
pinned but not zero (``Draws``): the batch indices, in each side's order (sim, real, then
the encoder's real batch) and the policy's sampling noise (next actions, actions, the BC
action). The step is update 200, where the code's encoders take their step (every 200
updates). One step must give the same gradients and parameters afterwards for the
encoders, critics and actor, and the same target critics and target encoder.

Needs local clones (nothing is downloaded):
``GAPBENCH_ODRL_REPO=/path/to/off-dynamics-rl GAPBENCH_PAR_REPO=/path/to/PAR
.venv/bin/pytest tests/test_authors_par.py``; each comparison skips without its clone.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from support.reference_code import (
    Draws,
    assert_same_critic_grads,
    assert_same_critics_after_step,
    assert_same_grads,
    assert_same_params_after_step,
    copy_critics,
    linears,
)

from gapbench import algorithms
from gapbench.algorithms.buffer import TensorBuffer

ODRL = os.environ.get("GAPBENCH_ODRL_REPO")
PAR_REPO = os.environ.get("GAPBENCH_PAR_REPO")
needs_odrl = pytest.mark.skipif(
    not ODRL, reason="set GAPBENCH_ODRL_REPO to a clone of OffDynamicsRL/off-dynamics-rl"
)
needs_par = pytest.mark.skipif(
    not PAR_REPO, reason="set GAPBENCH_PAR_REPO to a clone of dmksjfl/PAR"
)
OBS, ACT, N_REAL, N_SIM = 17, 6, 700, 600  # ODRL trains only once both hold 500


def load(path: Path, name: str):
    """A reference module (torch and numpy only) from its file, unmodified."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def arrays(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, OBS)).astype(np.float32)
    act = rng.uniform(-0.9, 0.9, size=(n, ACT)).astype(np.float32)
    next_obs = (obs + 0.3 * rng.normal(size=(n, OBS))).astype(np.float32)
    rew = rng.normal(size=n).astype(np.float32)
    done = (rng.uniform(size=n) < 0.1).astype(np.float32)
    return {"obs": obs, "act": act, "next_obs": next_obs, "rew": rew, "done": done}


def their_buffer(utils, data: dict[str, np.ndarray]):
    n = len(data["obs"])
    buf = utils.ReplayBuffer(OBS, ACT, "cpu", max_size=n)
    for i in range(n):
        buf.add(data["obs"][i], data["act"][i], data["next_obs"][i], data["rew"][i],
                data["done"][i])  # fmt: skip
    return buf


def our_buffer(data: dict[str, np.ndarray]) -> TensorBuffer:
    return TensorBuffer.from_arrays(
        data["obs"], data["act"], data["rew"], data["next_obs"], data["done"]
    )


@torch.no_grad()
def mirror(theirs, ours) -> None:
    """Their weights into gapbench's PAR; targets moved apart from the online networks."""
    for p in [*theirs.target_q_funcs.parameters(), *theirs.encoder_target.parameters()]:
        p.mul_(0.9)
    for src, dst in zip(linears(theirs.policy), linears(ours.actor), strict=True):
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)
    q, tq = theirs.q_funcs, theirs.target_q_funcs
    copy_critics([q.network1, q.network2], ours.critic)
    copy_critics([tq.network1, tq.network2], ours.target_critic)
    for enc, our_enc in (
        (theirs.encoder, ours.encoder),
        (theirs.encoder_target, ours.target_encoder),
    ):
        for src, dst in zip(linears(enc), linears(our_enc), strict=True):
            dst.weight.copy_(src.weight)
            dst.bias.copy_(src.bias)
    assert math.isclose(ours.log_alpha.item(), theirs.log_alpha.item(), rel_tol=1e-6)
    ours.log_alpha.copy_(theirs.log_alpha.reshape(()))


def draws(with_bc: bool, rng: np.random.Generator) -> Draws:
    normal = [torch.as_tensor(rng.normal(size=(256, ACT)), dtype=torch.float32) for _ in range(2)]
    if with_bc:
        normal.append(torch.as_tensor(rng.normal(size=(128, ACT)), dtype=torch.float32))
    indices = [
        (rng.integers(0, N_SIM, 128), N_SIM),
        (rng.integers(0, N_REAL, 128), N_REAL),
        (rng.integers(0, N_REAL, 64), N_REAL),
    ]
    return Draws(normal=normal, indices=indices)


def same_step(theirs, ours) -> None:
    assert_same_grads(theirs.encoder, ours.encoder)
    assert_same_params_after_step(theirs.encoder, ours.encoder)
    assert_same_params_after_step(theirs.encoder_target, ours.target_encoder)
    q, tq = theirs.q_funcs, theirs.target_q_funcs
    assert_same_critic_grads([q.network1, q.network2], ours.critic)
    assert_same_critics_after_step([q.network1, q.network2], ours.critic)
    assert_same_critics_after_step([tq.network1, tq.network2], ours.target_critic)
    assert_same_grads(theirs.policy, ours.actor)
    assert_same_params_after_step(theirs.policy, ours.actor)


def one_step(module, utils, config: dict, cls_name: str, overrides: dict) -> None:
    """Update 200 of both sides on the same weights, data and draws."""
    config = {**config, "state_dim": OBS, "action_dim": ACT, "max_action": 1.0}
    torch.manual_seed(0)
    theirs = getattr(module, cls_name)(config, "cpu")
    cls = algorithms.get("par")
    ours = cls(OBS, ACT, cls.make_config(overrides), seed=0)
    mirror(theirs, ours)
    sim, real = arrays(N_SIM, 1), arrays(N_REAL, 2)
    src_buf, tar_buf = their_buffer(utils, sim), their_buffer(utils, real)
    replay, dataset = our_buffer(sim), our_buffer(real)
    ours.setup(dataset)
    theirs.total_it, ours.steps.count = 199, 199

    rng = np.random.default_rng(3)
    with_bc = overrides.get("bc_weight", 0) is not None
    with draws(with_bc, rng).served():
        theirs.train(src_buf, tar_buf, config["batch_size"])
    with draws(with_bc, np.random.default_rng(3)).served():
        metrics = ours.update_many(1, dataset=dataset, replay=replay)
    assert "encoder_loss" in metrics
    same_step(theirs, ours)


@needs_odrl
def test_default_step_is_odrl_par_bc():
    repo = Path(ODRL)
    module = load(repo / "algo" / "online_offline" / "par_bc.py", "odrl_par_bc")
    utils = load(repo / "algo" / "utils.py", "odrl_utils")
    config = yaml.safe_load((repo / "config/mujoco/par_bc/halfcheetah.yaml").read_text())
    one_step(module, utils, config, "PARBC", {})


@needs_par
def test_without_bc_is_the_authors_online_par():
    repo = Path(PAR_REPO)
    module = load(repo / "algo" / "PAR.py", "authors_par")
    utils = load(repo / "algo" / "utils.py", "authors_par_utils")
    config = yaml.safe_load((repo / "config" / "halfcheetah.yaml").read_text())
    config["beta"] = algorithms.get("par").Config().beta  # train.py passes --beta
    one_step(module, utils, config, "PAR", {"bc_weight": None})


@needs_odrl
def test_defaults_are_odrl_par_bc():
    """The defaults one step cannot show, against ODRL's configs and the code's literals."""
    repo = Path(ODRL)
    c = algorithms.get("par").Config()
    for task in ("halfcheetah", "hopper", "walker2d", "ant"):
        cfg = yaml.safe_load((repo / f"config/mujoco/par_bc/{task}.yaml").read_text())
        assert (cfg["beta"], cfg["weight"]) == (c.beta, c.bc_weight), task
        assert cfg["batch_size"] == c.sim_batch_size == c.real_batch_size
        assert (cfg["gamma"], cfg["tau"]) == (c.discount, c.tau)
        assert cfg["actor_lr"] == c.actor_lr == c.encoder_lr == c.alpha_lr
        assert cfg["critic_lr"] == c.critic_lr
        assert cfg["temperature_opt"] is c.auto_alpha is False
        assert cfg["hidden_sizes"] == c.hidden[0] == c.hidden[1]
    source = (repo / "algo" / "online_offline" / "par_bc.py").read_text()
    assert f"self.total_it % {c.encoder_update_every} == 0" in source
    assert "tar_replay_buffer.sample(batch_size // 2)" in source
    assert c.encoder_batch_size == c.real_batch_size // 2
    assert "torch.FloatTensor([0.2])" in source and c.init_alpha == 0.2
    module = load(repo / "algo" / "online_offline" / "par_bc.py", "odrl_par_bc")
    sig = inspect.signature(module.Encoder.__init__).parameters
    assert sig["zs_dim"].default == c.encoder_dim and sig["hdim"].default == c.encoder_hidden[0]
    assert len(c.encoder_hidden) == 2 and c.target_encoder and c.backup_entropy
