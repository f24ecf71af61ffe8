"""Times the H2O authors' own update step (t6-thu/H2O, ``SimpleSAC/sim2real_sac.py``,
``Sim2realSAC.train``) on this machine, for the comparison in README "Performance".

Needs a local clone of https://github.com/t6-thu/H2O (nothing is downloaded):

    .venv/bin/python perf/authors_h2o.py --repo /path/to/H2O --threads 2

Their modules (``SimpleSAC/sim2real_sac.py``, ``SimpleSAC/model.py``,
``Network/Weight_net.py``) are imported unmodified from the clone. Imports the train
step does not use are faked (ml_collections.ConfigDict, absl, wandb; ``utils_h2o``
needs gym's MuJoCo assets at import, so only its ``prefix_metrics`` is loaded from their
source), and the MixedReplayBuffer (which reads D4RL files) is replaced by an in-memory
stand-in with the same interface. Construction follows ``sim2real_sac_main.py`` with
its flag defaults (batch 256 = 128 real + 128 sim, 256-256 networks, halfcheetah sizes)
except device='cpu'. Compare with ``gapbench bench --algo h2o --threads N``.
"""

import argparse
import ast
import os
import sys
import time
import types
from copy import deepcopy

import numpy as np
import torch


# --------------------------------------------------------------------------------------
# Minimal fakes for imports that are unavailable / irrelevant to the train step
# --------------------------------------------------------------------------------------
class ConfigDict(dict):
    """Tiny stand-in for ml_collections.ConfigDict: attribute access + update/copy."""

    def __init__(self, init=None):
        super().__init__()
        if init is not None:
            for k, v in dict(init).items():
                self[k] = v

    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError as e:
            raise AttributeError(k) from e

    def __setattr__(self, k, v):
        self[k] = v

    def copy_and_resolve_references(self):
        return ConfigDict(self)


def _install_fakes(simplesac: str):
    mlc = types.ModuleType("ml_collections")
    mlc.ConfigDict = ConfigDict
    cd = types.ModuleType("ml_collections.config_dict")
    cd.config_dict = types.SimpleNamespace(placeholder=lambda t: None)
    cf = types.ModuleType("ml_collections.config_flags")
    cf.config_flags = types.SimpleNamespace(DEFINE_config_dict=lambda *a, **k: None)
    mlc.config_dict = cd
    mlc.config_flags = cf
    sys.modules.setdefault("ml_collections", mlc)
    sys.modules.setdefault("ml_collections.config_dict", cd)
    sys.modules.setdefault("ml_collections.config_flags", cf)
    for name in ("wandb", "absl", "absl.flags", "absl.app", "absl.logging"):
        sys.modules.setdefault(name, types.ModuleType(name))

    # utils_h2o imports gym and looks up mujoco xml assets at import time; the train step
    # only uses its `prefix_metrics`. Take that function verbatim from their source via ast.
    src_path = os.path.join(simplesac, "utils_h2o.py")
    with open(src_path) as f:
        tree = ast.parse(f.read(), src_path)
    fn = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "prefix_metrics"]
    assert len(fn) == 1
    uh = types.ModuleType("utils_h2o")
    exec(compile(ast.Module(body=fn, type_ignores=[]), src_path, "exec"), uh.__dict__)
    sys.modules["utils_h2o"] = uh


def _load_authors_code(repo: str):
    """Their classes, imported from the clone at ``repo``."""
    simplesac = os.path.join(repo, "SimpleSAC")
    if not os.path.isfile(os.path.join(simplesac, "sim2real_sac.py")):
        sys.exit(f"--repo {repo!r}: no SimpleSAC/sim2real_sac.py there (a t6-thu/H2O clone?)")
    _install_fakes(simplesac)
    sys.path[:0] = [simplesac, repo]
    from model import FullyConnectedQFunction, TanhGaussianPolicy
    from Network.Weight_net import ConcatDiscriminator
    from sim2real_sac import Sim2realSAC

    return FullyConnectedQFunction, TanhGaussianPolicy, ConcatDiscriminator, Sim2realSAC


# --------------------------------------------------------------------------------------
# In-memory replay buffer stand-in (same interface as MixedReplayBuffer)
# --------------------------------------------------------------------------------------
class InMemoryMixedBuffer:
    def __init__(self, obs_dim, act_dim, n_real=100_000, n_sim=100_000, seed=0):
        g = torch.Generator().manual_seed(seed)

        def make(n):
            return dict(
                s=torch.randn(n, obs_dim, generator=g),
                a=torch.rand(n, act_dim, generator=g) * 2 - 1,
                r=torch.randn(n, 1, generator=g),
                s_=torch.randn(n, obs_dim, generator=g),
                d=(torch.rand(n, 1, generator=g) < 0.01).float(),
            )

        self.real = make(n_real)
        self.sim = make(n_sim)
        self.n = {"real": n_real, "sim": n_sim}
        # MixedReplayBuffer.normalize_states: mean/std over states, +1e-3, shape (1, obs_dim)
        self.state_mean = self.real["s"].mean(0, keepdim=True)
        self.state_std = self.real["s"].std(0, keepdim=True) + 1e-3

    def sample(self, batch_size, scope=None, type=None):
        src = self.real if scope == "real" else self.sim
        ind = torch.randint(0, self.n["real" if scope == "real" else "sim"], (batch_size,))
        # fancy indexing makes fresh tensors (their code does in-place += on them)
        if type is None:
            return {
                "observations": src["s"][ind],
                "actions": src["a"][ind],
                "rewards": src["r"][ind],
                "next_observations": src["s_"][ind],
                "dones": src["d"][ind],
            }
        elif type == "sas":
            return {
                "observations": src["s"][ind],
                "actions": src["a"][ind],
                "next_observations": src["s_"][ind],
            }
        elif type == "sa":
            return {"observations": src["s"][ind], "actions": src["a"][ind]}
        raise RuntimeError(type)

    def get_mean_std(self):
        return self.state_mean.clone(), self.state_std.clone()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repo", required=True, help="local clone of t6-thu/H2O")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=int, default=10)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    FullyConnectedQFunction, TanhGaussianPolicy, ConcatDiscriminator, Sim2realSAC = (
        _load_authors_code(args.repo)
    )

    # ---- FLAGS defaults from sim2real_sac_main.py ----
    device = "cpu"  # FLAGS.device default is 'cuda'
    seed = 42
    batch_size = 256
    batch_ratio = 0.5
    policy_arch = qf_arch = "256-256"
    orthogonal_init = False
    policy_log_std_multiplier, policy_log_std_offset = 1.0, -1.0
    dis_dropout = False
    num_state, num_action = 17, 6  # HalfCheetah

    np.random.seed(seed)
    torch.manual_seed(seed)

    replay_buffer = InMemoryMixedBuffer(num_state, num_action)

    d_sa = (
        ConcatDiscriminator(num_state + num_action, 256, 2, device, dropout=dis_dropout)
        .float()
        .to(device)
    )
    d_sas = (
        ConcatDiscriminator(2 * num_state + num_action, 256, 2, device, dropout=dis_dropout)
        .float()
        .to(device)
    )
    policy = TanhGaussianPolicy(
        num_state,
        num_action,
        arch=policy_arch,
        log_std_multiplier=policy_log_std_multiplier,
        log_std_offset=policy_log_std_offset,
        orthogonal_init=orthogonal_init,
    )
    qf1 = FullyConnectedQFunction(
        num_state, num_action, arch=qf_arch, orthogonal_init=orthogonal_init
    )
    target_qf1 = deepcopy(qf1)
    qf2 = FullyConnectedQFunction(
        num_state, num_action, arch=qf_arch, orthogonal_init=orthogonal_init
    )
    target_qf2 = deepcopy(qf2)

    cql = Sim2realSAC.get_default_config()  # FLAGS.cql default
    cql.device = device  # default 'cuda'
    if cql.target_entropy >= 0.0:
        cql.target_entropy = -float(np.prod((num_action,)).item())

    sac = Sim2realSAC(
        cql,
        policy,
        qf1,
        qf2,
        target_qf1,
        target_qf2,
        d_sa,
        d_sas,
        replay_buffer,
        dynamics_model=None,
    )
    sac.torch_to_device(device)

    real_batch_size = int(batch_size * (1 - batch_ratio))  # 128
    sim_batch_size = int(batch_size * batch_ratio)  # 128

    for _ in range(args.warmup):
        m = sac.train(real_batch_size, sim_batch_size)
    assert all(np.isfinite(v) for v in m.values()), m

    n = 0
    t0 = time.perf_counter()
    while True:
        sac.train(real_batch_size, sim_batch_size)
        n += 1
        el = time.perf_counter() - t0
        if el >= args.seconds:
            break
    print(f"threads={args.threads} calls={n} elapsed_s={el:.3f} torch={torch.__version__}")
    print(f"authors_h2o_updates_per_s={n / el:.3f}")


if __name__ == "__main__":
    main()
