"""Per-sample input gradients and their norms: the building block of the double-backprop defenses.

Input-gradient regularization, the flow gradient (Xia and Li) and local flatness (Xu et al.) all
need ``g_b = d l_b / d x_b`` for every sample of a batch at once. One backward of the *summed*
per-sample losses gives every row exactly (when sample ``b``'s loss depends only on ``x_b``: no
BatchNorm in train mode), and ``create_graph=True`` keeps it differentiable in the weights.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Norm = Literal["l2sq", "l2", "l1"]
NORMS = ("l2sq", "l2", "l1")


def input_gradient(
    per_sample_loss: Tensor, x: Tensor, create_graph: bool = True, retain_graph: bool | None = None
) -> Tensor:
    """Per-sample gradients ``d l_b / d x_b`` (shape of ``x``) from one backward of ``sum_b l_b``.

    Exact per sample when sample ``b``'s loss depends only on ``x_b`` (no BatchNorm in train mode);
    with ``create_graph=True`` the result is differentiable in the parameters (double backprop).
    ``retain_graph`` (default: ``create_graph``) keeps the forward graph for a later backward.
    """
    if per_sample_loss.dim() != 1:
        raise ValueError(
            f"per_sample_loss must be (B,), one loss per sample, got {tuple(per_sample_loss.shape)}"
        )
    (grad,) = torch.autograd.grad(
        per_sample_loss.sum(), x, create_graph=create_graph, retain_graph=retain_graph
    )
    return grad


def gradient_norm(grad: Tensor, norm: Norm = "l2sq") -> Tensor:
    """``||g_b||_p^q`` per sample (B,): ``"l2sq"`` (squared L2, default), ``"l2"`` or ``"l1"``."""
    flat = grad.flatten(1)
    if norm == "l2sq":
        return flat.square().sum(1)
    if norm == "l2":
        # sqrt has an infinite derivative at 0: a floor keeps the double backward finite
        return flat.square().sum(1).clamp_min(1e-24).sqrt()
    if norm == "l1":
        return flat.abs().sum(1)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def cross_entropy_gradient_norms(
    network: nn.Module, x: Tensor, y: Tensor, norm: Norm = "l1", create_graph: bool = False
) -> Tensor:
    """Per-sample ``||∇_x CE(network(x_b), y_b)||`` (shape ``(B,)``) in ``norm``; ``x`` must require grad.

    Runs ``network`` in whatever mode it is in. ``create_graph=True`` keeps the norms differentiable
    in the weights and in ``x`` (double backprop).
    """
    per_sample = F.cross_entropy(network(x), y, reduction="none")
    return gradient_norm(input_gradient(per_sample, x, create_graph), norm)
