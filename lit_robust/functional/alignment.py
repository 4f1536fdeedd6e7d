"""Gradient-feature alignment math (GFA, Lin et al. 2025, arXiv 2511.13749): pure tensor functions.

* :func:`per_sample_cosine` — ``c = <g, h> / max(||g|| ||h||, eps)`` per sample, in [-1, 1];
* :func:`alignment_penalty` — ``phi(c)``: ``1 - |c|`` (abs), ``1 - c^2`` (sq) or ``1 - c`` (pos);
* :func:`per_sample_task_loss` — per-sample cross-entropy or the squared error of the probabilities;
* :func:`gradient_feature_cosines` — the per-sample gradients of a summed per-sample loss with
  respect to several tensors (one ``autograd.grad`` call) and their cosines with the features.

Used by the ``GFA`` defense and the ``GradientFeatureAlignment`` callback alike.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

PENALTIES = ("abs", "sq", "pos")
TASK_LOSSES = ("ce", "mse")


def per_sample_cosine(g: Tensor, h: Tensor, eps: float = 1e-12) -> Tensor:
    """``<g_b, h_b> / max(||g_b||_2 ||h_b||_2, eps)`` for every sample ``b`` (tensors flattened per sample).

    ``eps`` only guards a zero gradient or feature: then ``c = 0`` (no NaN); ``eps = 0`` is exact
    cosine (and NaN for a zero vector).
    """
    if g.shape != h.shape:
        raise ValueError(f"gradient and feature shapes differ: {tuple(g.shape)} vs {tuple(h.shape)}")
    g, h = g.flatten(1), h.flatten(1)
    dot = (g * h).sum(dim=1)
    norms = g.norm(dim=1) * h.norm(dim=1)
    return dot / norms.clamp_min(eps) if eps > 0 else dot / norms


def alignment_penalty(cos: Tensor, penalty: str = "abs") -> Tensor:
    """``phi(c)``: ``1 - |c|`` (``"abs"``), ``1 - c^2`` (``"sq"``) or ``1 - c`` (``"pos"``), elementwise."""
    if penalty == "abs":
        return 1 - cos.abs()
    if penalty == "sq":
        return 1 - cos.square()
    if penalty == "pos":
        return 1 - cos
    raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")


def per_sample_task_loss(logits: Tensor, y: Tensor, task_loss: str = "ce") -> Tensor:
    """Per-sample loss, shape ``(B,)``: ``CE(z, y)`` or ``sum_k (softmax(z)_k - 1[k = y])^2``."""
    if task_loss == "ce":
        return F.cross_entropy(logits, y, reduction="none")
    if task_loss == "mse":
        onehot = F.one_hot(y, logits.shape[1]).to(logits.dtype)
        return (logits.softmax(dim=1) - onehot).square().sum(dim=1)
    raise ValueError(f"task_loss must be one of {TASK_LOSSES}, got {task_loss!r}")


def gradient_feature_cosines(
    per_sample_loss: Tensor,
    wrt: Mapping[str, Tensor],
    features: Mapping[str, Tensor],
    eps: float = 1e-12,
    create_graph: bool = True,
) -> dict[str, Tensor]:
    """``{name: c_t}``, the per-sample cosine between ``d loss_b / d wrt[name]`` and ``features[name]``.

    The gradients come from one ``autograd.grad`` of ``per_sample_loss.sum()``: samples do not
    interact, so row ``b`` of each gradient is the gradient of ``loss_b`` alone. ``wrt`` and
    ``features`` share their keys; they differ only where the feature is a shifted copy of the
    differentiated tensor (the network input ``x`` and ``h_in = x - c_in``). ``create_graph=True``
    keeps the graph for double backprop.
    """
    names = list(wrt)
    if set(names) != set(features):
        raise ValueError(f"wrt and features must have the same keys, got {names} and {list(features)}")
    for name in names:
        if not wrt[name].requires_grad:
            raise ValueError(f"tap {name!r} does not require grad, so no gradient reaches it")
    grads = torch.autograd.grad(
        per_sample_loss.sum(), [wrt[name] for name in names], create_graph=create_graph, allow_unused=True
    )
    cosines = {}
    for name, grad in zip(names, grads, strict=True):
        if grad is None:
            raise ValueError(f"tap {name!r} does not influence the loss (its module's output is unused)")
        cosines[name] = per_sample_cosine(grad, features[name], eps)
    return cosines
