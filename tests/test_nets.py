"""Shared network pieces: the critic ensemble's thin-output path is the same function."""

from __future__ import annotations

import pytest
import torch

from gapbench.algorithms.nets import EnsembleLinear, _ThinEnsembleLinear


@pytest.mark.parametrize("shared_input", [False, True])
def test_thin_ensemble_layer_equals_the_batched_product_and_its_gradients(shared_input):
    torch.manual_seed(0)
    layer = EnsembleLinear(16, 1, n=3).double()
    shape = (40, 16) if shared_input else (3, 40, 16)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    assert layer.out_dim <= EnsembleLinear.THIN  # takes the per-member path on CPU
    expanded = x.unsqueeze(0).expand(3, -1, -1) if shared_input else x
    reference = torch.baddbmm(layer.bias, expanded, layer.weight)
    out = layer(x)
    torch.testing.assert_close(out, reference)

    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, layer.weight, layer.bias), grad)
    want = torch.autograd.grad(reference, (x, layer.weight, layer.bias), grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w)
    torch.autograd.gradcheck(
        lambda inp, w, b: _ThinEnsembleLinear.apply(inp, w, b),
        (expanded.detach().clone().requires_grad_(), layer.weight, layer.bias),
    )
