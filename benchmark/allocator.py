"""Keep freed tensor memory in the process instead of handing it back to the OS.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves blocks above its
mmap threshold (128 KiB, raised on the fly up to 32 MiB) with fresh ``mmap`` pages and
trims the heap's free top back to the OS, so an update that allocates and frees large
activations every step pays a page fault for each 4 KiB page it touches again. CQL's
critic pass allocates tensors of 2 x 7,936 x 256 floats (16 MiB): ~10,000 page faults
per update on this project's machine, 15-20% of its time. Setting the mmap threshold to
glibc's maximum (32 MiB) and the trim threshold to 2 GiB makes later allocations reuse
the freed memory: no faults, the same numbers (only where the bytes live changes). The
process's resident memory stays at its peak instead of shrinking between updates.

:func:`keep_freed_memory` is called where training and timing start (the harness, the
benchmarks). It does nothing off Linux/glibc, or when the user set glibc's own
``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers
MMAP_THRESHOLD = 32 * 2**20  # glibc refuses more than HEAP_MAX_SIZE / 2 = 32 MiB (64-bit)
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")

_applied: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; True if they are in force."""
    global _applied
    if _applied is None:
        _applied = _set_thresholds()
    return _applied


def _set_thresholds() -> bool:
    if not sys.platform.startswith("linux") or any(v in os.environ for v in USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # musl and other C libraries export a mallopt that accepts nothing and returns 0.
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
