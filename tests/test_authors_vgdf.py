"""gapbench's VGDF step against the authors' own code: Kavka1/VGDF ``agent/vgdf.py``
(``VGDF_Agent.train_ac``), imported unmodified (``gym``, which the step never uses, is a
stand-in while it imports).

Same weights on both sides (policy, optimistic policy, twin critics, target critics moved
apart from the critics, the 7-member dynamics ensemble and its input normaliser), same
batches (128 real = the authors' target buffer, 128 sim = their source buffer, pinned
indices), same policy noise (pinned draws), the filter on from the start on both sides
(their ``start_gate_src_sample`` and gapbench's ``filter_start`` at 0), the walker2d
termination rule on both (theirs: ``env/env_utils.py``). The model is not stepped (the
authors train it apart from ``train_ac``). One update, with the delayed actor steps: the
same actor and optimistic-actor gradients, the same critics, target critics and actors
afterwards. gapbench's defaults are compared with the authors' ``config/vgdf/*.yaml`` and
the constructor defaults of their ``EnsembleModel``.

Needs a local clone of https://github.com/Kavka1/VGDF (nothing is downloaded):
``GAPBENCH_VGDF_REPO=/path/to/VGDF .venv/bin/pytest tests/test_authors_vgdf.py``.
"""

from __future__ import annotations

import inspect
import os
import random
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from support.reference_code import (
    Draws,
    copy_critics,
    linear_params,
    linears,
)

from gapbench import algorithms
from gapbench.algorithms.buffer import TensorBuffer

REPO = os.environ.get("GAPBENCH_VGDF_REPO")
pytestmark = pytest.mark.skipif(
    not REPO, reason="set GAPBENCH_VGDF_REPO to a clone of Kavka1/VGDF to compare with it"
)
OBS, ACT, B = 17, 6, 128


def load_vgdf(repo: str) -> types.SimpleNamespace:
    """Their ``agent.vgdf`` and ``env.env_utils`` as the package ``VGDF`` (the name their
    imports use), with a stand-in ``gym`` while they import."""
    if not (Path(repo) / "agent" / "vgdf.py").is_file():
        raise FileNotFoundError(f"{repo!r}: no agent/vgdf.py (a Kavka1/VGDF clone?)")
    saved = {name: sys.modules.get(name) for name in ("gym", "VGDF")}
    pkg = types.ModuleType("VGDF")
    pkg.__path__ = [str(repo)]
    sys.modules.update({"gym": types.SimpleNamespace(Env=object), "VGDF": pkg})
    try:
        import importlib

        agent = importlib.import_module("VGDF.agent.vgdf")
        env_utils = importlib.import_module("VGDF.env.env_utils")
        dynamics = importlib.import_module("VGDF.model.dynamics")
    finally:
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    return types.SimpleNamespace(agent=agent, env_utils=env_utils, dynamics=dynamics)


def authors_config(repo: str, env: str = "walker") -> dict:
    config = yaml.safe_load((Path(repo) / "config" / "vgdf" / f"{env}.yaml").read_text())
    config["model_config"].update(s_dim=OBS, a_dim=ACT)
    config.update(device="cpu", exp_path="/tmp/", start_gate_src_sample=0)
    return config


def test_defaults_match_the_authors_config():
    config = authors_config(REPO)
    mc = config["model_config"]
    ours = algorithms.get("vgdf").Config()
    assert ours.batch_size == config["batch_size"]
    assert ours.actor_lr == ours.critic_lr == ours.alpha_lr == config["lr"]
    assert (ours.discount, ours.tau) == (config["gamma"], config["tau"])
    assert ours.init_alpha == config["alpha"] and not ours.auto_alpha  # a fixed alpha
    assert ours.policy_delay == config["training_delay"]
    assert ours.grad_clip == config["ac_gradient_clip"]
    assert list(ours.hidden) == mc["policy_hiddens"] == mc["value_hiddens"]
    assert (ours.log_std_min, ours.log_std_max) == (
        mc["policy_log_std_min"],
        mc["policy_log_std_max"],
    )
    assert ours.dynamics_ensemble == mc["dynamics_ensemble_size"]
    assert ours.dynamics_hidden == (mc["dynamics_hidden_size"],) * 4  # nn1..nn4
    assert ours.dynamics_batch_size == config["dynamics_batch_size"]
    assert ours.dynamics_holdout_ratio == config["dynamics_holdout_ratio"]
    assert ours.dynamics_patience == config["dynamics_max_epochs_since_update"]
    assert ours.filter_quantile == config["likelihood_gate_threshold"]
    assert (
        ours.filter_start
        == yaml.safe_load((Path(REPO) / "config" / "vgdf" / "walker.yaml").read_text())[
            "start_gate_src_sample"
        ]
    )
    ref = load_vgdf(REPO)
    model = ref.dynamics.EnsembleModel(OBS, ACT, 1, 7, 200, device="cpu")
    decays = tuple(getattr(model, f"nn{i}").weight_decay for i in range(1, 6))
    assert ours.dynamics_weight_decay == decays
    lr = inspect.signature(ref.dynamics.EnsembleModel).parameters["learning_rate"].default
    assert ours.dynamics_lr == lr


def transitions(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Walker-like states: height around the 0.8 bound of the termination rule, so that
    some imagined next states end the episode and some do not."""
    obs = rng.normal(size=(n, OBS)).astype(np.float32) * 0.5
    obs[:, 0] = rng.uniform(0.6, 1.2, size=n)
    next_obs = (obs + 0.1 * rng.normal(size=(n, OBS))).astype(np.float32)
    return {
        "obs": obs,
        "act": rng.uniform(-0.9, 0.9, size=(n, ACT)).astype(np.float32),
        "rew": rng.normal(size=n).astype(np.float32),
        "next_obs": next_obs,
        "done": (rng.uniform(size=n) < 0.1).astype(np.float32),
    }


def fill(buffer, data: dict[str, np.ndarray]) -> None:
    for i in range(len(data["obs"])):
        buffer.store(
            (data["obs"][i], data["act"][i], [data["rew"][i]], [data["done"][i]],
             data["next_obs"][i])
        )  # fmt: skip


def to_buffer(data: dict[str, np.ndarray]) -> TensorBuffer:
    return TensorBuffer.from_arrays(
        data["obs"], data["act"], data["rew"], data["next_obs"], data["done"]
    )


@torch.no_grad()
def copy_dynamics(theirs, ours) -> None:
    """Their EnsembleDynamicsModel (EnsembleFC weights (n, in, out), biases (n, out), a
    Normalizer) -> gapbench's EnsembleDynamics."""
    layers = [getattr(theirs.ensemble_model, f"nn{i}") for i in range(1, 6)]
    for src, dst in zip(layers, ours.layers, strict=True):
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias.unsqueeze(1))
    ours.in_mean.copy_(theirs.scaler.mean)
    ours.in_std.copy_(theirs.scaler.std)


def assert_same_actor_grads(theirs, ours) -> None:
    """Layer by layer, to 1e-4 of each tensor's largest entry: their log-prob's tanh term
    log(1 - tanh^2 + 1e-6) differs from gapbench's exact one by ~1e-6 / (1 - tanh^2),
    which moves these gradients by a few 1e-5 of their scale (the plain-float32 bound of
    ``assert_same_grad`` is 1e-5)."""
    for a, b in zip(linear_params(theirs), linear_params(ours), strict=True):
        scale = float(a.grad.abs().max())
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-4 * scale)


def assert_same_adam_step(theirs: torch.Tensor, ours: torch.Tensor, grad: torch.Tensor) -> None:
    """A tensor after one step. Adam's first step moves a weight by about lr whatever the
    size of its gradient, so the weights whose gradient is rounding (< 1e-4 of the
    tensor's largest; a handful of ~1e-7 ones feeding nearly dead units) may step
    differently on the two sides, by up to 2 lr; every other weight agrees to 2e-5 and
    fewer than 0.1 % differ by more than 1e-6."""
    diff = (theirs - ours).detach().abs()
    rounding = grad.abs() < 1e-4 * float(grad.abs().max())
    assert float(diff[~rounding].max()) < 2e-5
    assert float(diff.max()) <= 2 * 3e-4 + 1e-6
    assert float((diff > 1e-6).float().mean()) < 1e-3


def assert_same_actor_step(theirs, ours) -> None:
    for a, b in zip(linear_params(theirs), linear_params(ours), strict=True):
        assert_same_adam_step(a, b, a.grad)


def test_one_update_matches_the_authors_train_ac(monkeypatch):
    ref = load_vgdf(REPO)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    agent = ref.agent.VGDF_Agent(authors_config(REPO))
    algo = algorithms.get("vgdf")(
        OBS, ACT, algorithms.get("vgdf").make_config({"filter_start": 0, "termination": "walker2d"})
    )
    real, sim = transitions(rng, B), transitions(rng, B)
    fill(agent.tar_buffer, real)
    fill(agent.src_buffer, sim)
    dataset, replay = to_buffer(real), to_buffer(sim)
    algo.setup(dataset)
    algo.model_progress.stopped = True  # the authors' train_ac does not step the model

    with torch.no_grad():  # their weights -> ours; targets apart from the critics
        inputs = np.concatenate([real["obs"], real["act"]], 1)
        agent.dynamics.scaler.fit(inputs)
        # members that disagree (freshly initialised ones agree to ~1e-3, and then every
        # likelihood but one underflows to 0 on both sides, which would test little)
        agent.dynamics.ensemble_model.nn5.bias.normal_(0.0, 0.5)
        # unsaturated actions: their He-initialised output layers put most |tanh| near 1,
        # where their log(1 - tanh^2 + 1e-6) and gapbench's exact log-det part
        for policy in (agent.policy, agent.optimistic_policy):
            linears(policy)[-1].weight.mul_(0.1)
        for p in agent.QFunction_tar.parameters():
            p.mul_(0.9)
        for src, dst in (
            (agent.policy, algo.actor),
            (agent.optimistic_policy, algo.optimistic_actor),
        ):
            for a, b in zip(linears(src), linears(dst), strict=True):
                b.weight.copy_(a.weight)
                b.bias.copy_(a.bias)
        copy_critics(list(agent.QFunction.ensemble), algo.critic)
        copy_critics(list(agent.QFunction_tar.ensemble), algo.target_critic)
        copy_dynamics(agent.dynamics, algo.dynamics)

    src_idx, tar_idx = rng.permutation(B), rng.permutation(B)
    noise = [torch.randn(B, ACT), torch.randn(B, ACT), torch.randn(2 * B, ACT),
             torch.randn(2 * B, ACT)]  # fmt: skip
    picks = iter([src_idx, tar_idx])
    monkeypatch.setattr(random, "sample", lambda data, k: [data[i] for i in next(picks)])
    with Draws(normal=noise).served():
        agent.train_ac(1, ref.env_utils.call_terminal_func("Walker"))
    with Draws(normal=noise, indices=[(tar_idx, B), (src_idx, B)]).served():
        metrics = algo.update(dataset=dataset, replay=replay)

    # the filter acted: a quarter of the sim batch kept on both sides
    assert float(metrics["accept_ratio"]) == agent.loss_log["accept_gated_ratio"] == 0.25
    for theirs, ours in (
        (agent.policy, algo.actor),
        (agent.optimistic_policy, algo.optimistic_actor),
    ):
        assert_same_actor_grads(theirs, ours)
    for theirs, ours in (
        (agent.policy, algo.actor),
        (agent.optimistic_policy, algo.optimistic_actor),
    ):
        assert_same_actor_step(theirs, ours)
    for i, (qf, qf_tar) in enumerate(
        zip(agent.QFunction.ensemble, agent.QFunction_tar.ensemble, strict=True)
    ):
        # (their critics' .grad also holds the actor losses' gradients, which their step
        # never uses; gapbench's holds the critic loss's alone)
        for src, dst in zip(linears(qf), algo.critic.net.layers, strict=True):
            assert_same_adam_step(src.weight.T, dst.weight[i], dst.weight.grad[i])
            assert_same_adam_step(src.bias, dst.bias[i, 0], dst.bias.grad[i, 0])
        for src, dst in zip(linears(qf_tar), algo.target_critic.net.layers, strict=True):
            torch.testing.assert_close(dst.weight[i], src.weight.T, rtol=0, atol=2e-6)
            torch.testing.assert_close(dst.bias[i, 0], src.bias, rtol=0, atol=2e-6)
    critic_loss = agent.loss_log["loss_value"]
    assert abs(float(metrics["critic_loss"]) - critic_loss) <= 1e-5 * max(1.0, abs(critic_loss))
    assert abs(float(metrics["actor_loss"]) - agent.loss_log["loss_policy"]) < 1e-4
    assert abs(float(metrics["opt_actor_loss"]) - agent.loss_log["loss_opt_policy"]) < 1e-4
