"""gapbench.benchmark.allocator: freed tensor memory is reused without page faults (Linux/glibc)."""

import os
import subprocess
import sys

import pytest

# CQL's update allocates and frees 16 MiB activations (2 x 7,936 x 256 floats) every
# step; prints the minor page faults of six updates after four warm-up updates (the heap
# grows to its peak over the first few, and now and then by one more block later).
SCRIPT = """
import resource, sys, torch
torch.set_num_threads(1)
from gapbench import algorithms
from gapbench.benchmark.allocator import keep_freed_memory
from gapbench.benchmark.speed import random_buffer
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
algo = algorithms.get("cql")(17, 6, seed=0)
data = random_buffer(2_000, 17, 6)
algo.setup(data)
for _ in range(4):
    algo.update(dataset=data)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
losses = [float(algo.update(dataset=data)["critic_loss"]) for _ in range(6)]
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, *losses)
"""


def _faults(mode: str, env: dict[str, str] | None = None) -> tuple[bool, int, list[float]]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    return out[0] == "True", int(out[1]), [float(x) for x in out[2:]]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_freed_memory_is_reused_without_page_faults():
    default_applied, default_faults, default_losses = _faults("default")
    applied, faults, losses = _faults("keep")
    if not applied:
        pytest.skip("this C library has no glibc mallopt")
    assert not default_applied
    # glibc's defaults fault thousands of 4 KiB pages in again per update (~5k each here);
    # kept, the freed memory is reused (0 in most updates, ~4k when the heap grows by one
    # 16 MiB block). The numbers do not change.
    assert default_faults > 15_000
    assert faults < default_faults / 4
    assert losses == default_losses


def test_user_malloc_settings_are_left_alone():
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "131072"}
    applied, _, _ = _faults("keep", env)
    assert not applied
