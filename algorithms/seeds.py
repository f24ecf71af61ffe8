"""K seeds of one algorithm trained as one batched computation.

Every benchmark cell runs several seeds of small (256-256) networks: one seed's update
leaves most of a CPU core's matrix throughput, and nearly all of a GPU, to per-operation
overhead. :class:`SeedBatch` trains K seeds of the same algorithm and config in lockstep,
every matrix product K times taller, while each seed's numbers stay those of a separate
run of it (to float tolerance; tested per algorithm in tests/test_seeds.py).

Where the seed dimension lives (the algorithm file still reads as single-seed code):

* **Parameters**: K ordinary instances are built (each seeds torch in its constructor,
  so they start exactly as K separate runs), then every parameter is stacked into one
  leaf with a leading seed dim, held by a *template* instance. Each member instance keeps
  views of its slices, so it acts, evaluates and writes its own checkpoint as a single
  run does (:meth:`SeedBatch.member_state_dict` gives the single-run checkpoint format).
* **Optimizers**: one optimizer per member optimizer, over the stacked parameters, with
  the same hyper-parameters. Adam is element-wise, so one step over stacked parameters is
  K separate steps.
* **Losses**: the template's ``losses(batch)`` runs under ``torch.func.vmap`` over the
  seed dim, with each seed's parameter slices swapped into the modules
  (``torch.func.functional_call``); the ensemble layers' custom kernel has a vmap rule
  (nets.py) that folds seeds into ensemble members. Everything else in the algorithm's
  ``update`` (sampling, backward, optimizer steps, target updates) is shape-agnostic and
  runs once for all seeds: the per-seed losses come back as a (K,) tensor whose sum's
  gradient is each seed's own gradient (the seeds share no parameters).
* **Random streams**: replay sampling uses each seed's own buffer and generator
  (:class:`StackedBuffers`). The random numbers the update's parameter code draws through
  :func:`~gapbench.algorithms.nets.gaussian_noise` (the policy's noise) or
  :func:`~gapbench.algorithms.nets.uniform_noise` (CQL's random actions), which a single
  run draws from torch's global generator, are drawn before the vmapped call for each
  seed from that seed's own copy of the global generator state (:class:`SeedRNG`), in the
  order, kinds and shapes the single-seed update draws them (found once by a probe), by
  the same :func:`~gapbench.algorithms.nets.draw`, and handed in through
  :func:`~gapbench.algorithms.nets.seed_batched`. An algorithm's own generators
  (:class:`~gapbench.algorithms.nets.SeededGenerator`, H2O's classifier stream) stay per
  seed: each member keeps its own, and the noise or replay batches the single-seed code
  draws from the template's generator are drawn from each member's instead. Any other
  draw from the global generator, or from the template's own generators, inside the update
  fails loudly (vmap's ``randomness="error"``, and a check that those generators are
  untouched after each block). A new random draw in an algorithm goes through those two
  functions (or a new kind of :class:`~gapbench.algorithms.nets.Draw`).
* **Parameter methods of parts**: a dotted name in :data:`PURE_METHODS`
  (``"classifiers.loss"``) vmaps a method of one of the algorithm's modules, so a shared
  part's own ``update`` (the domain classifiers' step) runs batched unchanged.

An algorithm joins :data:`BATCHABLE` once its equality test passes; any other falls
back to separate runs (:func:`batchable` says why).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from operator import attrgetter
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.optim.lr_scheduler import LRScheduler
from torch.utils._pytree import tree_map

from gapbench.algorithms.base import Algorithm, accumulate
from gapbench.algorithms.buffer import Batch, TensorBuffer
from gapbench.algorithms.nets import Draw, SeededGenerator, draw, seed_batched

#: Algorithms whose batched seeds are tested equal to separate runs (tests/test_seeds.py),
#: each with the methods its ``update`` calls that compute with parameters: they run under
#: vmap over seeds; the rest of ``update`` runs once for all seeds.
PURE_METHODS: dict[str, tuple[str, ...]] = {
    "sac": ("losses",),
    "iql": ("target_q", "value_loss", "v", "actor_critic_losses"),
    "darc": ("critic_terms", "policy_terms", "temperature_loss", "classifiers.loss"),
    "h2o": ("dynamics_terms", "losses", "disc.loss"),
    "cql": ("losses",),
}
# Not listed (they train seed by seed): BC, TD3+BC, PAR and VGDF, whose batched paths are
# not written or tested yet.
BATCHABLE = frozenset(PURE_METHODS)


def batchable(cls: type[Algorithm]) -> str | None:
    """Why ``cls`` cannot train seeds as a batch (None when it can)."""
    if getattr(cls, "name", None) not in BATCHABLE:
        return (
            f"{getattr(cls, 'name', cls.__name__)} has no seed-batched path yet "
            f"(batched: {', '.join(sorted(BATCHABLE))})"
        )
    return None


class SeedRNG:
    """Each seed's own copy of torch's global generator state (CPU, and the device's when
    it is a GPU): ``with rng.use(k):`` makes global draws come from seed k's stream."""

    def __init__(self, states: Sequence[Any], device: torch.device):
        self.states = list(states)
        self.device = device

    @staticmethod
    def capture(device: torch.device) -> Any:
        """The global generator state(s) now."""
        cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        return (torch.get_rng_state(), cuda)

    def _restore(self, state: Any) -> None:
        cpu, cuda = state
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, self.device)

    @contextlib.contextmanager
    def use(self, k: int) -> Iterator[None]:
        outer = self.capture(self.device)
        self._restore(self.states[k])
        try:
            yield
        finally:
            self.states[k] = self.capture(self.device)
            self._restore(outer)


class StackedBuffers:
    """K buffers sampled as one: ``sample(n)`` draws n transitions from each seed's buffer
    with its own generator and stacks them, (K, n, ...). ``sample(n, generator)`` with a
    generator of the batch's template draws with each seed's own copy of that generator
    (``generators``: id of the template's generator -> the seeds' generators)."""

    def __init__(
        self,
        buffers: Sequence[TensorBuffer],
        generators: dict[int, list[torch.Generator]] | None = None,
    ):
        self.buffers = list(buffers)
        self.generators = generators or {}

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> Batch:
        if generator is None:
            batches = [b.sample(batch_size) for b in self.buffers]
        elif id(generator) in self.generators:
            gens = self.generators[id(generator)]
            batches = [b.sample(batch_size, g) for b, g in zip(self.buffers, gens, strict=True)]
        else:
            raise ValueError("a stack of seed buffers samples with each seed's own generator")
        return Batch(*(torch.stack(parts) for parts in zip(*batches, strict=True)))

    def __len__(self) -> int:
        return min(len(b) for b in self.buffers)


def _dotted_set(module: nn.Module, name: str, value: Tensor, buffer: bool = False) -> None:
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    (owner._buffers if buffer else owner._parameters)[leaf] = value


class _Holder(nn.Module):
    """The template's modules under one root, so one ``functional_call`` swaps every
    seed-sliced parameter in; free tensors (SAC's log-temperature) are set as attributes."""

    def __init__(self, template: Algorithm, modules: dict[str, nn.Module]):
        super().__init__()
        self.parts = nn.ModuleDict(modules)
        object.__setattr__(self, "template", template)

    def forward(self, free: dict[str, Tensor], fn: Any, owner: Any, args: tuple, kwargs: dict):
        saved = {key: getattr(self.template, key) for key in free}
        for key, value in free.items():
            setattr(self.template, key, value)
        try:
            return fn(owner, *args, **kwargs)
        finally:
            for key, value in saved.items():
                setattr(self.template, key, value)


class SeedBatch:
    """K instances of one algorithm (same class and config, different seeds) trained as
    one batched computation; see the module docstring.

    ``members``: freshly built (or checkpoint-restored) instances, in seed order.
    ``rng_states``: each seed's global torch generator state at the point its separate run
    would start training (:meth:`SeedRNG.capture` right after building and setting up the
    member). After construction the members' own optimizers are stale: train through
    :meth:`update_many`, checkpoint through :meth:`member_state_dict`.
    """

    def __init__(self, members: Sequence[Algorithm], rng_states: Sequence[Any]):
        if not members:
            raise ValueError("a seed batch needs at least one member")
        cls = type(members[0])
        if why := batchable(cls):
            raise ValueError(why)
        if any(type(m) is not cls or m.config != members[0].config for m in members):
            raise ValueError("the seeds of a batch must share the algorithm and its config")
        if why := _differing_state(members):
            raise ValueError(why)
        self.members = list(members)
        self.k = len(members)
        self.device = members[0].device
        self.rng = SeedRNG(rng_states, self.device)
        self.template = copy.deepcopy(members[0])
        self._shared: set[str] = set()  # parameter-free modules the template keeps for all
        self._params: dict[str, Tensor] = {}  # holder name -> stacked leaf (what vmap slices)
        self._free: dict[str, Tensor] = {}  # free tensor attribute -> stacked leaf
        # id(a template generator) -> the members' own generators, in seed order
        self._generators: dict[int, list[torch.Generator]] = {}
        self._template_generators: list[torch.Generator] = []  # never drawn from
        stacked_of: dict[int, Tensor] = {}  # id(member 0's parameter) -> its stacked leaf
        modules: dict[str, nn.Module] = {}
        comps = [m.components() for m in self.members]
        for key, value in comps[0].items():
            if isinstance(value, LRScheduler):
                raise ValueError(f"{cls.name}: learning-rate schedulers are not batched yet")
            if isinstance(value, nn.Module):
                modules[key] = getattr(self.template, key)
                self._stack_module(key, [c[key] for c in comps], stacked_of)
            elif isinstance(value, Tensor):
                leaf = torch.stack([c[key].detach() for c in comps]).requires_grad_()
                stacked_of[id(value)] = leaf
                self._free[key] = leaf
                setattr(self.template, key, leaf)
                for k, member in enumerate(self.members):
                    setattr(member, key, nn.Parameter(leaf.data[k]))
        for key, value in comps[0].items():
            if isinstance(value, torch.optim.Optimizer):
                old = getattr(self.template, key)
                opt = self._stack_optimizer(value, [c[key] for c in comps], stacked_of)
                setattr(self.template, key, opt)
                for part in modules.values():  # a part stepping its own (the classifiers')
                    for sub in part.modules():
                        for name, attr in list(vars(sub).items()):
                            if attr is old:
                                setattr(sub, name, opt)
        self._opt_keys = [k for k, v in comps[0].items() if isinstance(v, torch.optim.Optimizer)]
        self._holder = _Holder(self.template, modules)
        self._noise_shapes: dict[str, list[_Kind]] = {}
        self._inside = False  # within a vmapped method
        for name in PURE_METHODS[cls.name]:  # vmapped over seeds; update() is unchanged
            owner_name, _, method = name.rpartition(".")
            owner = attrgetter(owner_name)(self.template) if owner_name else self.template
            object.__setattr__(owner, method, self._vmapped(owner, method))

    # -- building the stack -----------------------------------------------------------------
    def _stack_module(self, key: str, mods: list[nn.Module], stacked_of: dict) -> None:
        template = getattr(self.template, key)
        if isinstance(template, SeededGenerator):  # a random stream per seed: the members'
            self._generators[id(template.generator)] = [m.generator for m in mods]
            self._template_generators.append(template.generator)
            return
        if any(type(m).get_extra_state is not nn.Module.get_extra_state for m in mods[0].modules()):
            if any(True for _ in mods[0].parameters()) or any(True for _ in mods[0].buffers()):
                raise ValueError(f"{key}: modules with parameters and extra state do not batch")
            # parameter-free state (a step counter): the template's, shared by the seeds,
            # which advance in lockstep (member_state_dict reads it)
            self._shared.add(key)
            return
        for name, p in mods[0].named_parameters():
            leaf = nn.Parameter(
                torch.stack([m.get_parameter(name).detach() for m in mods]),
                requires_grad=p.requires_grad,
            )
            stacked_of[id(p)] = leaf
            _dotted_set(template, name, leaf)
            self._params[f"parts.{key}.{name}"] = leaf
            for k, m in enumerate(mods):  # member k sees its slice, updated in place
                _dotted_set(m, name, nn.Parameter(leaf.data[k], requires_grad=p.requires_grad))
        for name, _ in mods[0].named_buffers():
            leaf = torch.stack([m.get_buffer(name) for m in mods])
            _dotted_set(template, name, leaf, buffer=True)
            self._params[f"parts.{key}.{name}"] = leaf
            for k, m in enumerate(mods):
                _dotted_set(m, name, leaf[k], buffer=True)

    def _stack_optimizer(self, opt0, opts, stacked_of: dict) -> torch.optim.Optimizer:
        groups = []
        for group in opt0.param_groups:
            groups.append(
                {
                    **{k: v for k, v in group.items() if k != "params"},
                    "params": [stacked_of[id(p)] for p in group["params"]],
                }
            )
        new = type(opt0)(groups, **opt0.defaults)
        # moments of restored members: stacked member by member (a fresh optimizer has none)
        for gi, group in enumerate(opt0.param_groups):
            for pi in range(len(group["params"])):
                states = [o.state.get(o.param_groups[gi]["params"][pi]) for o in opts]
                if not states[0]:
                    continue
                leaf = new.param_groups[gi]["params"][pi]
                new.state[leaf] = {
                    name: value.clone()
                    if name == "step"
                    else torch.stack([s[name] for s in states])
                    for name, value in states[0].items()
                }
        return new

    # -- the batched step -------------------------------------------------------------------
    def _vmapped(self, owner: Any, name: str):
        """The method ``name`` of ``owner`` (the template or one of its modules) for every
        seed at once: tensor arguments and results carry the seed dim first, e.g. SAC's
        ``losses`` gives (K,) per loss."""
        method = getattr(type(owner), name)
        key = f"{type(owner).__name__}.{name}"

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._inside:  # called by another vmapped method (IQL's value_loss calls v)
                return method(owner, *args, **kwargs)
            dims = (_tensor_dims(args), _tensor_dims(kwargs))
            if key not in self._noise_shapes:
                self._noise_shapes[key] = self._probe(method, owner, args, kwargs, dims)
            noise = self._draw_noise(self._noise_shapes[key])

            def one(params, free, noise, args, kwargs):
                supply = _Supply(noise, self._noise_shapes[key])
                with seed_batched(supply):
                    out = functional_call(self._holder, params, (free, method, owner, args, kwargs))
                supply.check_used()
                return out

            run = vmap(one, in_dims=(0, 0, 0, *dims), randomness="error")
            self._inside = True
            try:
                return run(self._params, self._free, noise, args, kwargs)
            finally:
                self._inside = False

        return call

    def _probe(self, method, owner, args: tuple, kwargs: dict, dims: tuple) -> list[_Kind]:
        """The random draws (nets.gaussian_noise, nets.uniform_noise) one seed's call makes,
        in order, each as its description without its generator and that generator's id
        (None: the global one)."""
        shapes: list[_Kind] = []

        def record(d: Draw) -> Tensor:
            if d.generator is not None and id(d.generator) not in self._generators:
                raise RuntimeError(
                    "the update draws from a generator that is not one of the algorithm's "
                    "SeededGenerator parts: its seeds cannot be batched exactly"
                )
            shapes.append(_kind(d))
            return torch.zeros(d.shape, dtype=d.dtype, device=d.device)

        def one(params, free, args, kwargs):
            with seed_batched(record):
                return functional_call(self._holder, params, (free, method, owner, args, kwargs))

        self._inside = True
        try:
            with torch.no_grad():
                vmap(one, in_dims=(0, 0, *dims), randomness="error")(
                    self._params, self._free, args, kwargs
                )
        finally:
            self._inside = False
        return shapes

    def _draw_noise(self, shapes: list[_Kind]) -> list[Tensor]:
        if not shapes:
            return []
        per_seed = []
        for k in range(self.k):
            draws = []
            with self.rng.use(k):  # as the single run draws them (nets.draw)
                for spec, gen_id in shapes:
                    gen = None if gen_id is None else self._generators[gen_id][k]
                    draws.append(draw(spec._replace(device=self.device, generator=gen)))
            per_seed.append(draws)
        return [torch.stack(draws) for draws in zip(*per_seed, strict=True)]

    def update_many(
        self,
        n: int,
        dataset: Sequence[TensorBuffer] | None = None,
        replay: Sequence[TensorBuffer] | None = None,
    ) -> dict[str, Tensor]:
        """``n`` updates of every seed, each on its own buffers; each metric summed over the
        updates, as a (K,) tensor (seed k's sum at index k)."""
        sources = {}
        if dataset is not None:
            sources["dataset"] = StackedBuffers(dataset, self._generators)
        if replay is not None:
            sources["replay"] = StackedBuffers(replay, self._generators)
        before = SeedRNG.capture(self.device)
        own = [g.get_state() for g in self._template_generators]
        sums: dict[str, Tensor] = {}
        for _ in range(n):
            accumulate(sums, self.template.update(**sources))
        after = SeedRNG.capture(self.device)
        if not all(_same(a, b) for a, b in zip(before, after, strict=True)):
            raise RuntimeError(
                f"{type(self.template).name}'s update drew from torch's global generator "
                "outside its Gaussian noise: its seeds cannot be batched exactly"
            )
        gens = zip(self._template_generators, own, strict=True)
        if not all(_same(g.get_state(), state) for g, state in gens):
            raise RuntimeError(
                f"{type(self.template).name}'s update drew from its own generator outside "
                "its Gaussian noise and replay sampling: its seeds cannot be batched exactly"
            )
        return sums

    # -- per-seed views ---------------------------------------------------------------------
    @contextlib.contextmanager
    def member_rng(self, k: int) -> Iterator[None]:
        """Seed k's own global generator, for the draws its separate run makes between
        updates (the exploration noise of ``act(obs, deterministic=False)``)."""
        with self.rng.use(k):
            yield

    def member_state_dict(self, k: int) -> dict[str, Any]:
        """Seed k's algorithm state in the format of a single run's ``state_dict``: a batched
        group's checkpoint is a separate run's checkpoint, and the other way round."""
        member = self.members[k]
        state: dict[str, Any] = {}
        for key, value in member.components().items():
            if isinstance(value, torch.optim.Optimizer):
                state[key] = _slice_optimizer(getattr(self.template, key).state_dict(), k)
            elif key in self._shared:
                state[key] = getattr(self.template, key).state_dict()
            elif isinstance(value, Tensor):
                state[key] = value.detach()
            else:
                state[key] = value.state_dict()
        return copy.deepcopy(state)


# a draw without its generator, and the generator's id (None: torch's global one):
# comparable between updates, and holding no reference to the generator
_Kind = tuple[Draw, int | None]


def _kind(d: Draw) -> _Kind:
    return d._replace(generator=None), None if d.generator is None else id(d.generator)


class _Supply:
    """Hands out pre-drawn noise in order, checking each draw's kind (inside vmap: per
    seed)."""

    def __init__(self, noise: Sequence[Tensor], kinds: Sequence[_Kind]):
        self.noise, self.kinds, self.used = list(noise), list(kinds), 0

    def __call__(self, d: Draw) -> Tensor:
        if self.used >= len(self.noise) or self.kinds[self.used] != _kind(d):
            raise RuntimeError(
                "the update drew random numbers in other kinds, shapes or order than its "
                "first update did: its seeds cannot be batched exactly"
            )
        self.used += 1
        return self.noise[self.used - 1]

    def check_used(self) -> None:
        if self.used != len(self.noise):
            raise RuntimeError("the update drew fewer random numbers than its first update did")


def _differing_state(members: Sequence[Algorithm]) -> str | None:
    """The batched step runs the template's (member 0's) code with every seed's parameters:
    anything else an update reads (IQL's reward scale from its dataset) must agree."""
    first = vars(members[0])
    stateful = set(members[0].components())
    for member in members[1:]:
        for key, value in vars(member).items():
            if key in stateful or key == "seed":
                continue
            other = first.get(key)
            if isinstance(value, Tensor) or isinstance(other, Tensor):
                same = isinstance(value, Tensor) and isinstance(other, Tensor)
                same = same and value.shape == other.shape and bool(torch.equal(value, other))
            elif isinstance(value, int | float | str | bool | tuple | type(None)):
                same = value == other
            else:
                continue
            if not same:
                return f"the seeds differ in {key!r} ({other!r} vs {value!r}): not batchable"
    return None


def _tensor_dims(arg: Any) -> Any:
    """vmap in_dims for one argument: 0 for each tensor in it (they carry the seed dim)."""
    return tree_map(lambda leaf: 0 if isinstance(leaf, Tensor) else None, arg)


def _same(a: Any, b: Any) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a, b))


def _slice_optimizer(state: dict[str, Any], k: int) -> dict[str, Any]:
    """Seed k's part of a stacked optimizer's state_dict (shared step counts kept)."""
    return {
        "state": {
            idx: {
                name: value if name == "step" or value.dim() == 0 else value[k]
                for name, value in per_param.items()
            }
            for idx, per_param in state["state"].items()
        },
        "param_groups": state["param_groups"],
    }
