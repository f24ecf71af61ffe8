"""Run one chain of work on a second CPU thread while the caller runs another.

Small-MLP updates use several cores poorly when each matrix product is split across
threads (two threads give about 1.5x one thread on this project's machine), but two
independent chains of products, one thread each, give about 1.8x. An algorithm whose
update has such a chain (H2O's classifier step) hands it to ``Overlap.submit``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch


class _Done:
    """The result of a call already made (the disabled path)."""

    def __init__(self, value: Any):
        self.value = value

    def result(self) -> Any:
        return self.value


class Overlap:
    """Context manager: ``submit(fn, *args)`` returns a handle whose ``result()`` is
    ``fn(*args)``.

    Enabled, ``fn`` runs on one worker thread, and for the duration the caller and the
    worker split the caller's torch threads (at least one each). Disabled, ``fn`` runs
    at once on the caller's thread. Either way the same operations run in the same order
    *within* each chain, so results agree as long as the chains share no state and no
    random generator.
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._pool: ThreadPoolExecutor | None = None
        self._threads = 0

    def __enter__(self) -> Overlap:
        if self.enabled:
            self._threads = torch.get_num_threads()
            mine = max(1, self._threads // 2)
            theirs = max(1, self._threads - mine)
            torch.set_num_threads(mine)
            self._pool = ThreadPoolExecutor(
                1, initializer=torch.set_num_threads, initargs=(theirs,)
            )
        return self

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future | _Done:
        if self._pool is None:
            return _Done(fn(*args))
        return self._pool.submit(fn, *args)

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
            torch.set_num_threads(self._threads)
