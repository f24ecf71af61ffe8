"""Every registered algorithm (plug-ins included) honours the interface: a new one is
tested for free. The checks live in the package (gapbench.algorithms.conformance) so a plug-in
author runs the same ones against an installed gapbench: `gapbench check-algorithm NAME`."""

from __future__ import annotations

import pytest
from gapbench.algorithms import conformance

from gapbench import algorithms


@pytest.mark.parametrize("check", list(conformance.CHECKS))
@pytest.mark.parametrize("name", algorithms.names())
def test_conformance(name, check):
    conformance.CHECKS[check](name)
