"""Kill-and-resume for the resume tests: a run stopped the way a killed process stops the
loop, so that the next ``run`` of the same spec and folder resumes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gapbench.benchmark.harness import run


def run_interrupted(spec: Any, out: Path, at_step: int) -> None:
    """Run ``spec`` into ``out`` and interrupt it right after its evaluation at ``at_step``
    (before that evaluation's checkpoint is written)."""

    def kill(row: dict[str, Any], algo: Any) -> None:
        if row["step"] == at_step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(spec, out, on_eval=kill, progress=False)
