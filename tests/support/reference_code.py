"""Helpers for the tests that run one update of gapbench next to the authors' own code
(tests/test_authors_*.py): importing their modules from a local clone, copying weights
between their nn.Linear networks and gapbench's, pinning random draws, comparing steps.

Their code is imported unmodified; only imports the update never uses are faked
(ml_collections, absl, wandb), as in perf/authors_h2o.py, and where a module
would pull in gym, D4RL or h5py only the classes or functions the test runs are compiled
from its source (``load_defs``) next to stand-ins for those imports.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import importlib.util
import math
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def _authors_h2o_bench() -> types.ModuleType:
    """perf/authors_h2o.py (not a package): its importer and ConfigDict stand-in."""
    path = ROOT / "perf" / "authors_h2o.py"
    spec = importlib.util.spec_from_file_location("authors_h2o_bench", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_h2o(repo: str):
    """(FullyConnectedQFunction, TanhGaussianPolicy, ConcatDiscriminator, Sim2realSAC)
    from a t6-thu/H2O clone, through perf/authors_h2o.py's importer."""
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


def load_corl(repo: str, script: str) -> types.ModuleType:
    """CORL's ``algorithms/offline/<script>.py``, unmodified; gym, d4rl, pyrallis and wandb
    (used only by its ``train`` script and evaluation) are stand-ins while it imports."""
    path = Path(repo) / "algorithms" / "offline" / f"{script}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{repo!r}: no algorithms/offline/{script}.py (a CORL clone?)")
    fakes = {
        "gym": types.SimpleNamespace(Env=object),  # annotations evaluated at import
        "d4rl": types.ModuleType("d4rl"),
        "pyrallis": types.SimpleNamespace(wrap=lambda *a, **k: lambda f: f),
        "wandb": types.ModuleType("wandb"),
    }
    saved = {name: sys.modules.get(name) for name in fakes}
    sys.modules.update(fakes)
    try:
        spec = importlib.util.spec_from_file_location(f"corl_{script}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:  # the stand-ins must not leak into other tests
        for name, mod in saved.items():
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    return module


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


class Draws:
    """Every random draw of one step, served in call order instead of drawn.

    ``normal``: standard-normal tensors for ``torch.randn`` / ``torch.randn_like`` /
    ``Tensor.normal_()``; ``uniform``: tensors for ``Tensor.uniform_(-1, 1)``; ``indices``:
    ``(idx, population)`` for ``torch.randint`` / ``numpy.random.randint``, where ``idx``
    lies in [0, population) and the draw must range over exactly ``population`` values
    (its ``low`` is added, so a sim draw from the authors' mixed buffer lands in its sim
    part). Each served value must have the drawn number of elements and every value must
    be used: a draw too many, too few, of another size or from another population fails
    the test. So pinning the noise also checks what each side draws, and in which order.
    """

    def __init__(self, normal=(), uniform=(), indices=()):
        self.normal, self.uniform, self.indices = list(normal), list(uniform), list(indices)

    @staticmethod
    def _size(args) -> tuple[int, ...]:
        if len(args) == 1 and not isinstance(args[0], int):
            return tuple(args[0])
        return tuple(args)

    def _next_normal(self, size) -> torch.Tensor:
        assert self.normal, f"unpinned normal draw of size {tuple(size)}"
        value = self.normal.pop(0)
        assert value.numel() == math.prod(size), (
            f"normal draw {tuple(size)} got {tuple(value.shape)}"
        )
        return value.reshape(size).clone()

    def _next_index(self, low, high, n):
        assert self.indices, f"unpinned index draw of {n} from [{low}, {high})"
        idx, population = self.indices.pop(0)
        assert (high - low, n) == (population, len(idx)), (
            f"index draw of {n} from {high - low} values, pinned: {len(idx)} from {population}"
        )
        return idx + low

    @contextmanager
    def served(self) -> Iterator[None]:
        saved = (torch.randn, torch.randn_like, torch.randint, torch.Tensor.normal_,
                 torch.Tensor.uniform_, np.random.randint)  # fmt: skip

        def randn(*args, **kw):
            return self._next_normal(self._size(args))

        def randint(low, high, size, **kw):
            return torch.as_tensor(self._next_index(low, high, math.prod(size)))

        def np_randint(low, high=None, size=None):
            low, high = (0, low) if high is None else (low, high)
            return np.asarray(self._next_index(low, high, int(size)))

        def normal_(tensor, *args, **kw):
            assert not args and not kw, "only standard-normal draws are pinned"
            return tensor.copy_(self._next_normal(tensor.shape))

        def uniform_(tensor, low=0.0, high=1.0, **kw):
            assert (low, high) == (-1, 1) and self.uniform, "unpinned uniform draw"
            value = self.uniform.pop(0)
            assert value.numel() == tensor.numel(), "uniform draw of another size"
            return tensor.copy_(value.reshape(tensor.shape))

        torch.randn, torch.randint, torch.Tensor.normal_ = randn, randint, normal_
        torch.randn_like = lambda x, **kw: self._next_normal(x.shape)
        torch.Tensor.uniform_, np.random.randint = uniform_, np_randint
        try:
            yield
        finally:
            (torch.randn, torch.randn_like, torch.randint, torch.Tensor.normal_,
             torch.Tensor.uniform_, np.random.randint) = saved  # fmt: skip
        left = len(self.normal), len(self.uniform), len(self.indices)
        assert left == (0, 0, 0), f"pinned draws left unused (normal, uniform, index): {left}"


def flag_defaults(path: Path) -> dict:
    """The literal keyword defaults of a ``define_flags_with_default(...)`` call in one of
    the authors' ``*_main.py`` scripts (their batch sizes, buffer ratio, action clip ...),
    read from the source: the script itself needs gym, D4RL and MuJoCo to import."""
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and getattr(node.func, "id", "") == "define_flags_with_default"
        ):
            out = {}
            for kw in node.keywords:
                # computed defaults (their config dicts, a timestamp) are left out
                with contextlib.suppress(ValueError):
                    out[kw.arg] = ast.literal_eval(kw.value)
            return out
    raise LookupError(f"{path}: no define_flags_with_default call")


def call_keywords(path: Path, func: str) -> list[dict]:
    """The literal keyword arguments of each call to ``func`` (a name or an attribute, as
    ``torch.optim.Adam``'s ``Adam``) in a reference module's source, in source order: the
    values a script hard-codes outside its config (CORL's Adam lrs, its normalisation eps)."""
    calls = [
        node
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and func in (getattr(node.func, "id", None), getattr(node.func, "attr", None))
    ]
    out = []
    for node in sorted(calls, key=lambda n: (n.lineno, n.col_offset)):
        kws = {}
        for kw in node.keywords:
            with contextlib.suppress(ValueError):  # computed values are left out
                kws[kw.arg] = ast.literal_eval(kw.value)
        out.append(kws)
    return out


def load_defs(path: Path, names: list[str], namespace: dict) -> list:
    """Classes or functions from an authors' module, compiled from its unmodified source
    in ``namespace`` (which stands in for the module's heavy imports: gym, D4RL, h5py)."""
    tree = ast.parse(path.read_text())
    nodes = [n for n in tree.body if getattr(n, "name", None) in names]
    assert len(nodes) == len(names), f"{path}: not all of {names} found"
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), namespace)
    return [namespace[name] for name in names]


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
