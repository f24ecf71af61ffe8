"""gapbench's BC step against a runnable PyTorch reference: CORL's single-file
``algorithms/offline/any_percent_bc.py`` (tinkoff-ai/CORL, ``BC``), its trajectory
filter left out (gapbench's BC is its ``frac=1``).

Same weights, same batch (pinned indices), the same dataset statistics: the same loss,
gradients and parameters after one step, and the same action for a raw observation
(CORL normalises it in an env wrapper, gapbench in the actor). Where CORL departs from
plain BC, and what gapbench does (``algorithms/bc.py`` says the same): only the best 10%
of trajectories by discounted return (``frac=0.1``), with the state statistics taken from
them; gapbench: the whole dataset.

Needs a local clone of https://github.com/tinkoff-ai/CORL (nothing is downloaded):
``GAPBENCH_CORL_REPO=/path/to/CORL .venv/bin/pytest tests/test_authors_bc.py``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from support.reference_code import (
    Draws,
    assert_same_grads,
    assert_same_params_after_step,
    call_keywords,
    linears,
    load_corl,
)

from gapbench import algorithms
from gapbench.algorithms.buffer import TensorBuffer

REPO = os.environ.get("GAPBENCH_CORL_REPO")
pytestmark = pytest.mark.skipif(
    not REPO, reason="set GAPBENCH_CORL_REPO to a clone of tinkoff-ai/CORL to compare with it"
)
OBS, ACT, N = 11, 3, 600
SCRIPT = "any_percent_bc"


def dataset_arrays(gen: torch.Generator) -> dict[str, np.ndarray]:
    """D4RL-like arrays with states far from zero mean and unit scale, so that the
    normalisation shows in every number compared."""
    scale = torch.linspace(0.1, 20.0, OBS)
    shift = torch.linspace(-5.0, 30.0, OBS)
    terminals = np.zeros(N, np.float32)
    terminals[99::100] = 1.0
    return {
        "observations": (torch.randn(N, OBS, generator=gen) * scale + shift).numpy(),
        "actions": ((torch.rand(N, ACT, generator=gen) * 2 - 1) * 0.99).numpy(),
        "rewards": torch.randn(N, generator=gen).numpy(),
        "next_observations": (torch.randn(N, OBS, generator=gen) * scale + shift).numpy(),
        "terminals": terminals,
    }


def to_buffer(data: dict[str, np.ndarray]) -> TensorBuffer:
    keys = ("observations", "actions", "rewards", "next_observations", "terminals")
    return TensorBuffer.from_arrays(*(data[k] for k in keys), end=data["terminals"] > 0)


def normalised_copy(corl, data: dict[str, np.ndarray]):
    """The dataset as CORL's ``train`` normalises it, with the eps its ``train`` passes."""
    (kw,) = call_keywords(Path(corl.__file__), "compute_mean_std")
    mean, std = corl.compute_mean_std(data["observations"], eps=kw["eps"])
    out = dict(data)
    for key in ("observations", "next_observations"):
        out[key] = corl.normalize_states(data[key], mean, std)
    return out, mean, std


@torch.no_grad()
def copy_linears(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    for a, b in zip(linears(src), linears(dst), strict=True):
        b.weight.copy_(a.weight)
        b.bias.copy_(a.bias)


def test_one_bc_step_equals_corls():
    corl = load_corl(REPO, SCRIPT)
    cfg = corl.TrainConfig
    gen = torch.Generator().manual_seed(1)
    data = dataset_arrays(gen)
    theirs_data, mean, std = normalised_copy(corl, data)
    buffer = corl.ReplayBuffer(OBS, ACT, N, "cpu")
    buffer.load_d4rl_dataset(theirs_data)
    torch.manual_seed(0)
    actor = corl.Actor(OBS, ACT, max_action=1.0)
    (adam_kw,) = call_keywords(Path(corl.__file__), "Adam")
    trainer = corl.BC(
        max_action=1.0,
        actor=actor,
        actor_optimizer=torch.optim.Adam(actor.parameters(), **adam_kw),
        discount=cfg.discount,
    )

    ours = algorithms.get("bc")(OBS, ACT, seed=0)
    dataset = to_buffer(data)
    ours.setup(dataset)
    torch.testing.assert_close(ours.obs_norm.mean, torch.as_tensor(mean), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.obs_norm.std, torch.as_tensor(std), rtol=1e-5, atol=1e-6)
    copy_linears(actor, ours.actor)

    idx = torch.randint(0, N, (cfg.batch_size,), generator=gen)
    with Draws(indices=[(idx, N)]).served():
        log = trainer.train(buffer.sample(cfg.batch_size))
    with Draws(indices=[(idx, N)]).served():
        mine = ours.update(dataset)

    assert float(mine["actor_loss"]) == pytest.approx(log["actor_loss"], rel=1e-5, abs=1e-7)
    assert_same_grads(trainer.actor, ours.actor)
    assert_same_params_after_step(trainer.actor, ours.actor)
    # evaluation: CORL normalises the raw observation in its env wrapper, gapbench's actor
    raw = data["observations"][:5]
    theirs_act = np.stack([actor.act(corl.normalize_states(o, mean, std)) for o in raw])
    np.testing.assert_allclose(ours.act(raw), theirs_act, rtol=1e-4, atol=1e-5)


def test_defaults_are_corls():
    corl = load_corl(REPO, SCRIPT)
    cfg, ours = corl.TrainConfig, algorithms.get("bc").Config()
    path = Path(corl.__file__)
    assert ours.batch_size == cfg.batch_size
    assert [kw["lr"] for kw in call_keywords(path, "Adam")] == [ours.actor_lr]
    assert call_keywords(path, "compute_mean_std") == [{"eps": ours.state_norm_eps}]
    assert cfg.normalize and ours.normalize_states
    widths = [lin.out_features for lin in linears(corl.Actor(OBS, ACT, 1.0))][:-1]
    assert tuple(widths) == ours.hidden
    assert cfg.frac == 0.1  # the documented departure: CORL's default is 10% BC
