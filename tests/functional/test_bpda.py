"""BPDA: the exact transform forward, the approximation's gradient backward."""

from __future__ import annotations

import torch

from lit_robust.functional.bpda import straight_through
from lit_robust.models.bpda import BPDA
from tests.helpers import tiny_cnn


def quantize(x: torch.Tensor) -> torch.Tensor:
    return (x * 4).round() / 4  # zero gradient almost everywhere: masks every gradient attack


def test_forward_is_the_transform_and_backward_the_identity():
    network = tiny_cnn().eval()
    x = torch.rand(5, 1, 12, 12)
    wrapped = torch.nn.Sequential(BPDA(quantize), network)
    torch.testing.assert_close(wrapped(x), network(quantize(x)), rtol=0, atol=0)

    x_wrapped = x.clone().requires_grad_(True)
    wrapped(x_wrapped).logsumexp(1).sum().backward()
    x_quantized = quantize(x).requires_grad_(True)  # the net's gradient at the transformed input
    network(x_quantized).logsumexp(1).sum().backward()
    torch.testing.assert_close(x_wrapped.grad, x_quantized.grad)
    assert x_wrapped.grad.abs().sum() > 0

    x_plain = x.clone().requires_grad_(True)
    network(quantize(x_plain)).logsumexp(1).sum().backward()
    assert x_plain.grad.abs().sum() == 0  # without BPDA the attack sees nothing


def test_custom_approximation_sets_the_gradient():
    x = torch.rand(3, 4, requires_grad=True)
    straight_through(x, torch.round, lambda v: 3 * v).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 3.0))
