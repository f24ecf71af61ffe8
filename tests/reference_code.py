"""Helpers for the tests that run one update of gapbench next to the authors' own code
(tests/test_authors_*.py): importing their modules from a local clone, copying weights
between their nn.Linear networks and gapbench's, pinning random draws, comparing steps.

Their code is imported unmodified; only imports the update never uses are faked
(ml_collections, absl, wandb), as in benchmarks/authors_h2o.py.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from algorithms.buffer import Batch

ROOT = Path(__file__).resolve().parents[1]


def batch(n: int, obs_dim: int, act_dim: int, gen: torch.Generator) -> Batch:
    """Random transitions; actions inside (-0.99, 0.99) so that no clipping applies."""
    return Batch(
        torch.randn(n, obs_dim, generator=gen),
        (torch.rand(n, act_dim, generator=gen) * 2 - 1) * 0.99,
        torch.randn(n, generator=gen),
        torch.randn(n, obs_dim, generator=gen),
        (torch.rand(n, generator=gen) < 0.2).float(),
    )


@functools.cache
def _authors_h2o_bench() -> types.ModuleType:
    """benchmarks/authors_h2o.py (not a package): its importer and ConfigDict stand-in."""
    path = ROOT / "benchmarks" / "authors_h2o.py"
    spec = importlib.util.spec_from_file_location("authors_h2o_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_h2o(repo: str):
    """(FullyConnectedQFunction, TanhGaussianPolicy, ConcatDiscriminator, Sim2realSAC)
    from a t6-thu/H2O clone, through benchmarks/authors_h2o.py's importer."""
    path_before = list(sys.path)
    try:
        return _authors_h2o_bench()._load_authors_code(repo)
    finally:  # their folders must not shadow modules for the tests that follow
        sys.path[:] = path_before


@functools.cache
def load_simplesac(repo: str) -> types.ModuleType:
    """young-geng/CQL's ``SimpleSAC`` package (model, sac, conservative_sac) under the name
    ``cql_simplesac``; its ``utils`` (absl, wandb, ml_collections flags) is replaced by
    the one function the update uses, ``prefix_metrics``, taken from their source."""
    pkg_dir = Path(repo) / "SimpleSAC"
    if not (pkg_dir / "conservative_sac.py").is_file():
        raise FileNotFoundError(f"{repo!r}: no SimpleSAC/conservative_sac.py (a CQL clone?)")
    if "ml_collections" not in sys.modules:
        sys.modules["ml_collections"] = types.ModuleType("ml_collections")
        sys.modules["ml_collections"].ConfigDict = _authors_h2o_bench().ConfigDict
    name = "cql_simplesac"
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(pkg_dir)]
    sys.modules[name] = pkg
    utils = types.ModuleType(f"{name}.utils")
    source = (pkg_dir / "utils.py").read_text()
    tree = ast.parse(source)
    fn = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "prefix_metrics"]
    exec(compile(ast.Module(body=fn, type_ignores=[]), str(pkg_dir / "utils.py"), "exec"),
         utils.__dict__)  # fmt: skip
    sys.modules[utils.__name__] = utils
    for sub in ("model", "sac", "conservative_sac"):
        importlib.import_module(f"{name}.{sub}")
    return pkg


def linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


def linear_params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p for lin in linears(module) for p in (lin.weight, lin.bias)]


@torch.no_grad()
def copy_actor(policy: torch.nn.Module, actor: torch.nn.Module) -> None:
    """SimpleSAC's TanhGaussianPolicy -> gapbench's TanhGaussianActor."""
    for src, dst in zip(linears(policy), linears(actor), strict=True):
        dst.weight.copy_(src.weight)
        dst.bias.copy_(src.bias)
    actor.log_std_multiplier.copy_(policy.log_std_multiplier.constant)
    actor.log_std_offset.copy_(policy.log_std_offset.constant)


@torch.no_grad()
def set_log_alpha(theirs: torch.nn.Module, ours: torch.Tensor, value: float = -0.5) -> None:
    """Both temperatures to the same value away from 0, where the temperature loss
    log(alpha) * (log pi + target entropy) would vanish whatever the target entropy.
    They must start equal (alpha = 1 on both sides)."""
    assert theirs.constant.item() == ours.item() == 0.0, "initial temperatures differ"
    theirs.constant.fill_(value)
    ours.fill_(value)


@torch.no_grad()
def copy_critics(qfs: list[torch.nn.Module], ensemble: torch.nn.Module) -> None:
    """SimpleSAC's Q networks (nn.Linear weights (out, in)) -> one gapbench ensemble
    (weights (member, in, out))."""
    for i, qf in enumerate(qfs):
        for src, dst in zip(linears(qf), ensemble.net.layers, strict=True):
            dst.weight[i].copy_(src.weight.T)
            dst.bias[i, 0].copy_(src.bias)


@contextmanager
def pinned_noise(randn: torch.Tensor | None = None, uniform: torch.Tensor | None = None
                 ) -> Iterator[None]:  # fmt: skip
    """Policy sampling noise 0 on both sides (gapbench: ``randn_like``; SimpleSAC:
    ``Normal.rsample``'s ``normal_``); any ``torch.randn`` call returns ``randn`` (it must
    have that shape) and any ``uniform_`` fills its tensor with ``uniform`` (same number
    of elements, row-major)."""
    saved = torch.randn, torch.randn_like, torch.Tensor.normal_, torch.Tensor.uniform_

    def fake_randn(*shape, **kw):
        size = tuple(shape[0]) if len(shape) == 1 and not isinstance(shape[0], int) else shape
        assert randn is not None and size == tuple(randn.shape), f"unpinned randn {size}"
        return randn.clone()

    def fake_uniform(self, *args, **kw):
        assert uniform is not None and uniform.numel() == self.numel(), "unpinned uniform_"
        return self.copy_(uniform.reshape(self.shape))

    torch.randn, torch.randn_like = fake_randn, lambda x, **kw: torch.zeros_like(x)
    torch.Tensor.normal_ = lambda self, *a, **kw: self.zero_()
    torch.Tensor.uniform_ = fake_uniform
    try:
        yield
    finally:
        torch.randn, torch.randn_like, torch.Tensor.normal_, torch.Tensor.uniform_ = saved


def assert_same_step(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Parameters after one step agree. Adam's first step moves every weight by about
    lr, so a wrong learning rate or target rate moves them all by 1e-5 or more; the few
    weights whose gradient is ~0 (inside the gradient tolerance) may legitimately step
    differently, by a few 1e-6."""
    diff = (ours.detach() - theirs.detach()).abs()
    assert float(diff.max()) < 2e-5, f"max difference {float(diff.max()):.2e}"
    assert float((diff > 1e-6).float().mean()) < 1e-3, "more than 0.1% of the weights differ"


def assert_same_grad(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """float32 gradients of the same loss summed in a different order: equal to 1e-4
    relative, or to 1e-5 of the tensor's largest entry (entries near 0 carry the rounding
    of the large ones)."""
    scale = float(theirs.abs().max())
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=max(1e-5 * scale, 1e-7))


def assert_same_grads(theirs: torch.nn.Module, ours: torch.nn.Module) -> None:
    """Gradients left in ``.grad`` by one step, layer by layer (plain MLPs)."""
    for p_theirs, p_ours in zip(linear_params(theirs), linear_params(ours), strict=True):
        assert_same_grad(p_ours.grad, p_theirs.grad)


def assert_same_critic_grads(qfs: list[torch.nn.Module], ensemble: torch.nn.Module) -> None:
    for i, qf in enumerate(qfs):
        for src, dst in zip(linears(qf), ensemble.net.layers, strict=True):
            assert_same_grad(dst.weight.grad[i], src.weight.grad.T)
            assert_same_grad(dst.bias.grad[i, 0], src.bias.grad)


def assert_same_params_after_step(theirs: torch.nn.Module, ours: torch.nn.Module) -> None:
    for p_theirs, p_ours in zip(linear_params(theirs), linear_params(ours), strict=True):
        assert_same_step(p_ours, p_theirs)


def assert_same_critics_after_step(qfs: list[torch.nn.Module], ensemble: torch.nn.Module):
    for i, qf in enumerate(qfs):
        for src, dst in zip(linears(qf), ensemble.net.layers, strict=True):
            assert_same_step(dst.weight[i], src.weight.T)
            assert_same_step(dst.bias[i, 0], src.bias)


@torch.no_grad()
def mirror_sac_parts(sac, ours) -> None:
    """Give gapbench's SAC parts (actor, critics, target critics, temperature) the
    reference's weights. The reference targets are first moved apart from its critics
    (x 0.9) so that the target update rate shows in one step."""
    for p in [*sac.target_qf1.parameters(), *sac.target_qf2.parameters()]:
        p.mul_(0.9)
    copy_actor(sac.policy, ours.actor)
    set_log_alpha(sac.log_alpha, ours.log_alpha)
    copy_critics([sac.qf1, sac.qf2], ours.critic)
    copy_critics([sac.target_qf1, sac.target_qf2], ours.target_critic)


def assert_same_sac_parts_after_step(sac, ours) -> None:
    """After one step of each: the same actor and critic gradients, and the same actor,
    critics, target critics and temperature."""
    assert_same_grads(sac.policy, ours.actor)
    assert_same_critic_grads([sac.qf1, sac.qf2], ours.critic)
    assert_same_params_after_step(sac.policy, ours.actor)
    assert_same_critics_after_step([sac.qf1, sac.qf2], ours.critic)
    assert_same_critics_after_step([sac.target_qf1, sac.target_qf2], ours.target_critic)
    assert abs(ours.log_alpha.item() - sac.log_alpha.constant.item()) < 1e-7
