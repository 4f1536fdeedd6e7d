"""Backward pass differentiable approximation (BPDA; Athalye, Carlini, Wagner, ICML 2018)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor


def identity(x: Tensor) -> Tensor:
    return x


def straight_through(
    x: Tensor, transform: Callable[[Tensor], Tensor], approximation: Callable[[Tensor], Tensor] = identity
) -> Tensor:
    """``transform(x)`` in the forward pass, the gradient of ``approximation`` in the backward pass.

    ``g(x) + (t(x) - g(x)).detach()`` has the value ``t(x)`` and the Jacobian of ``g``: attacks
    see through a non-differentiable (or gradient-masking) input transform ``t`` such as
    quantization, JPEG or total-variation minimization. ``g`` is the identity by default, the
    usual choice when ``t(x) ≈ x``.
    """
    approximate = approximation(x)
    return approximate + (transform(x) - approximate).detach()
