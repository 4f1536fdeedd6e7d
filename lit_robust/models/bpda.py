"""An input transform that attacks differentiate through by an approximation (BPDA)."""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from lit_robust.functional.bpda import identity, straight_through


class BPDA(nn.Module):
    """Wrap a non-differentiable input transform ``t`` so that its backward pass is that of ``g``.

    Put it in front of a network, ``nn.Sequential(BPDA(quantize), network)``: predictions use
    ``t(x)`` exactly, while gradient attacks use ``d g / d x`` (identity by default), as in
    Athalye, Carlini, Wagner, "Obfuscated Gradients Give a False Sense of Security", ICML 2018.

    Args:
        transform: the input transform ``t`` (any callable on image batches in [0, 1]).
        approximation: a differentiable ``g`` with ``g(x) ≈ t(x)``; the identity by default.
    """

    def __init__(
        self, transform: Callable[[Tensor], Tensor], approximation: Callable[[Tensor], Tensor] = identity
    ):
        super().__init__()
        self.transform = transform
        self.approximation = approximation

    def forward(self, x: Tensor) -> Tensor:
        return straight_through(x, self.transform, self.approximation)
