"""Every registered algorithm (plug-ins included) honours the interface: a new one is
tested for free. The checks live in the package (gapbench.algorithms.conformance) so a plug-in
author runs the same ones against an installed gapbench: `gapbench check-algorithm NAME`."""

from __future__ import annotations

import pytest

from gapbench import algorithms
from gapbench.algorithms import conformance


@pytest.mark.parametrize("check", list(conformance.CHECKS))
@pytest.mark.parametrize("name", algorithms.names())
def test_conformance(name, check):
    conformance.CHECKS[check](name)
