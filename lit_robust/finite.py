"""Refuse non-finite numbers where they would turn into silently wrong results.

A diverged run has NaN weights; its logits are NaN, ``argmax`` then predicts class 0 for every
input, and every "robust accuracy" equals the frequency of class 0 (9.4% on the MNIST sample, for
any attack). So a non-finite training loss stops training, a checkpoint is never written from
non-finite weights, and no accuracy is computed from non-finite logits. Each check raises
:class:`NonFiniteError` saying where and what.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn


class NonFiniteError(FloatingPointError):
    """A loss, a model output or a weight is NaN or infinite."""


def non_finite_terms(terms: Mapping[str, Tensor]) -> list[str]:
    """The names of the entries of ``terms`` that hold a NaN or an infinity."""
    return [name for name, value in terms.items() if not torch.isfinite(value.detach()).all()]


def describe_terms(terms: Mapping[str, Tensor]) -> str:
    """``loss=inf, ce=2.303, lfr_reg=inf``: every scalar term with its value."""
    return ", ".join(
        f"{name}={value.detach().float().mean().item():.4g}"
        for name, value in terms.items()
        if value.numel() == 1
    )


def check_finite_outputs(logits: Tensor, what: str) -> Tensor:
    """``logits``, or :class:`NonFiniteError` when any is NaN or infinite (``what``: which model / where)."""
    bad = ~torch.isfinite(logits.detach())
    if bad.any():
        rows = int(bad.flatten(1).any(dim=1).sum()) if logits.dim() > 1 else int(bad.sum())
        raise NonFiniteError(
            f"{what}: the model's outputs are not finite ({rows} of {len(logits)} inputs give NaN or "
            "infinite logits), so no accuracy can be measured: the weights have diverged or the "
            "network overflows; retrain with a smaller learning rate or regularizer weight"
        )
    return logits


def check_finite_parameters(module: nn.Module, what: str) -> None:
    """:class:`NonFiniteError` naming the first parameters or buffers of ``module`` that hold NaN / inf."""
    named = list(module.named_parameters()) + list(module.named_buffers())
    bad = [name for name, value in named if value.is_floating_point() and not torch.isfinite(value).all()]
    if bad:
        listed = ", ".join(bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise NonFiniteError(f"{what}: {len(bad)} weight tensors hold NaN or infinite values ({listed})")
