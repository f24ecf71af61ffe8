"""Re-checks the claim that the reference-code tests catch a reviewer's mutations.

Each mutation below changes one default or one step of gapbench in a temporary copy of
the working tree; the reference tests named with it must then fail (pytest exit 1, so
a mutation that only breaks the import does not count). The unmutated copy must pass
first. Needs the local clones the tests need:

    GAPBENCH_H2O_REPO=/path/to/H2O GAPBENCH_CQL_REPO=/path/to/CQL \\
    GAPBENCH_CORL_REPO=/path/to/CORL .venv/bin/python scripts/check_mutations.py [NAME ...]

Prints one line per mutation and "N of M mutations caught"; exits 1 if any was missed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
H2O_TEST, CQL_TEST = "tests/test_authors_h2o.py", "tests/test_authors_cql.py"
IQL_TEST = "tests/test_authors_iql.py"
PACKAGES = ("algorithms", "gap_envs", "benchmark", "analysis")  # gapbench.<name> = <name>/
ENV_VARS = ("GAPBENCH_H2O_REPO", "GAPBENCH_CQL_REPO", "GAPBENCH_CORL_REPO")


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str | tuple[str, ...]  # each must occur exactly once in path
    new: str | tuple[str, ...]  # its replacement
    tests: tuple[str, ...]

    def apply(self, text: str) -> str:
        olds = (self.old,) if isinstance(self.old, str) else self.old
        news = (self.new,) if isinstance(self.new, str) else self.new
        for old, new in zip(olds, news, strict=True):
            assert text.count(old) == 1, f"{self.name}: {old!r} not once in {self.path}"
            text = text.replace(old, new)
        return text


MUTATIONS = [
    # H2O (issue 19's list)
    Mutation("h2o state-std zero padding 10 -> 0", "algorithms/h2o.py",
             "state_std_zero_padding: float = 10.0", "state_std_zero_padding: float = 0.0",
             (H2O_TEST,)),
    Mutation("h2o padded-std formula (mean not scaled)", "algorithms/h2o.py",
             "mean = x.mean(0) * scale", "mean = x.mean(0)", (H2O_TEST,)),
    Mutation("h2o classifier noise 0.1 -> 0.3", "algorithms/h2o.py",
             "disc_noise_std: float = 0.1", "disc_noise_std: float = 0.3", (H2O_TEST,)),
    Mutation("h2o real/sim split 128/128 -> 64/192", "algorithms/h2o.py",
             "real_batch_size: int = 128\n    sim_batch_size: int = 128",
             "real_batch_size: int = 64\n    sim_batch_size: int = 192", (H2O_TEST,)),
    Mutation("h2o classifier batch 256 -> 64", "algorithms/h2o.py",
             "disc_batch_size: int = 256", "disc_batch_size: int = 64", (H2O_TEST,)),
    Mutation("h2o w, u, omega before the classifier step", "algorithms/h2o.py",
             ("        disc_metrics = self.disc.update(",
              "        return disc_metrics, self.dynamics_terms(sim)"),
             ("        dyn = self.dynamics_terms(sim)\n        disc_metrics = self.disc.update(",
              "        return disc_metrics, dyn"),
             (H2O_TEST,)),
    Mutation("h2o penalty clip min -1000 -> -100", "algorithms/h2o.py",
             "penalty_clip_min: float = -1000.0", "penalty_clip_min: float = -100.0",
             (H2O_TEST,)),
    Mutation("h2o penalty clip max 1000 -> 100", "algorithms/h2o.py",
             "penalty_clip_max: float = 1000.0", "penalty_clip_max: float = 100.0",
             (H2O_TEST,)),
    Mutation("h2o RL step on another sim batch than w and u", "algorithms/h2o.py",
             "batch = real, sim", "batch = real, replay.sample(c.sim_batch_size)", (H2O_TEST,)),
    Mutation("h2o penalty minus mean sim Q instead of mean real Q", "algorithms/h2o.py",
             "penalty_raw = gap - q_real.mean(1)", "penalty_raw = gap - q_sim.mean(1)",
             (H2O_TEST,)),
    # CQL / SAC (issue 19's list)
    Mutation("cql actor lr 1e-4 -> 3e-5", "algorithms/cql.py",
             "actor_lr: float = 1e-4", "actor_lr: float = 3e-5", (CQL_TEST,)),
    Mutation("cql critic lr 3e-4 -> 1e-4", "algorithms/cql.py",
             "    critic_lr: float = 3e-4\n    alpha_lr: float | None",
             "    critic_lr: float = 1e-4\n    alpha_lr: float | None", (CQL_TEST,)),
    Mutation("actor log-std max 2 -> 1", "algorithms/nets.py",
             "log_std_min: float = -20.0,\n        log_std_max: float = 2.0,",
             "log_std_min: float = -20.0,\n        log_std_max: float = 1.0,", (CQL_TEST,)),
    Mutation("reparameterisation noise scaled by the variance", "algorithms/nets.py",
             "else mean + log_std.exp() * torch.randn_like(mean)",
             "else mean + (2 * log_std).exp() * torch.randn_like(mean)", (CQL_TEST,)),
    # IQL against CORL
    Mutation("iql expectile 0.7 -> 0.8", "algorithms/iql.py",
             "expectile: float = 0.7", "expectile: float = 0.8", (IQL_TEST,)),
    Mutation("iql inverse temperature 3 -> 1", "algorithms/iql.py",
             "temperature: float = 3.0", "temperature: float = 1.0", (IQL_TEST,)),
    Mutation("iql advantage-weight clip 100 -> 50", "algorithms/iql.py",
             "max_weight: float = 100.0", "max_weight: float = 50.0", (IQL_TEST,)),
    Mutation("iql actor lr 3e-4 -> 1e-4", "algorithms/iql.py",
             "actor_lr: float = 3e-4", "actor_lr: float = 1e-4", (IQL_TEST,)),
    Mutation("iql critic lr 3e-4 -> 1e-4", "algorithms/iql.py",
             "critic_lr: float = 3e-4", "critic_lr: float = 1e-4", (IQL_TEST,)),
    Mutation("iql advantage from V before its step", "algorithms/iql.py",
             "out = self.actor_critic_losses(batch, q_t, v, next_v)",
             "out = self.actor_critic_losses(batch, q_t, v_old.detach(), next_v)", (IQL_TEST,)),
    Mutation("iql critic losses averaged, not summed", "algorithms/iql.py",
             "critic_loss = (q - target).pow(2).mean(1).sum()",
             "critic_loss = (q - target).pow(2).mean()", (IQL_TEST,)),
    Mutation("iql actor-lr horizon fixed at 1M", "algorithms/iql.py",
             "self.decay_steps = int(n)", "self.decay_steps = DEFAULT_MAX_STEPS", (IQL_TEST,)),
]  # fmt: skip


def _copy_tree(dst: Path) -> None:
    """The working tree's tracked and untracked-but-not-ignored files (no .venv, results)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for rel in filter(None, listed):
        if rel.startswith("results/"):  # run records: large, and not what the tests read
            continue
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def _link_packages(copy: Path) -> None:
    """Lay the copy out as installed: ``gapbench/<pkg>`` links to the copy's top-level
    ``<pkg>/`` folder (pyproject's package-dir mapping), so that with the copy first on
    PYTHONPATH ``import gapbench.algorithms`` reads the mutated files."""
    for pkg in PACKAGES:
        (copy / "gapbench" / pkg).symlink_to(copy / pkg, target_is_directory=True)


def _pytest(copy: Path, tests: tuple[str, ...]) -> int:
    # PYTHONPATH puts the copy ahead of the editable install of /work/main
    env = os.environ | {"PYTHONPATH": str(copy), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:xdist", "-p", "no:cacheprovider",
           *tests]  # fmt: skip
    return subprocess.run(cmd, cwd=copy, env=env, capture_output=True).returncode


def main(names: list[str]) -> int:
    missing = [v for v in ENV_VARS if not os.environ.get(v)]
    if missing:
        print(f"set {', '.join(missing)}: without the clones the tests skip and catch nothing")
        return 2
    chosen = [m for m in MUTATIONS if not names or m.name in names]
    if names and len(chosen) != len(names):
        print(f"unknown mutation name(s); valid: {[m.name for m in MUTATIONS]}")
        return 2
    with tempfile.TemporaryDirectory(prefix="gapbench-mutants-") as tmp:
        copy = Path(tmp)
        _copy_tree(copy)
        _link_packages(copy)
        where = subprocess.run(
            [sys.executable, "-c", "import gapbench.algorithms as a; print(a.__file__)"],
            cwd=copy, env=os.environ | {"PYTHONPATH": str(copy)}, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        assert where.startswith(str(copy)), f"the copy is not what gets imported: {where}"
        all_tests = tuple(sorted({t for m in chosen for t in m.tests}))
        if _pytest(copy, all_tests) != 0:
            print(f"the unmutated copy fails {all_tests}: fix that first")
            return 1
        caught = 0
        for m in chosen:
            target = copy / m.path
            original = target.read_text()
            target.write_text(m.apply(original))
            t0 = time.perf_counter()
            rc = _pytest(copy, m.tests)
            target.write_text(original)
            caught += rc == 1
            verdict = "caught" if rc == 1 else f"MISSED (pytest exit {rc})"
            print(f"{verdict:>8}  {m.name}  [{time.perf_counter() - t0:.0f} s]", flush=True)
    print(f"{caught} of {len(chosen)} mutations caught")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
