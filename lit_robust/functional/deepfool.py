"""Batched DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, "DeepFool: a simple and accurate method to fool
deep neural networks", CVPR 2016, arXiv 1511.04599), L2 and Linf, optionally differentiable.

From the source class ``s`` (the model's prediction by default) and candidate classes ``k``, each
iteration linearizes the gaps ``f'_k = f_k - f_s`` at ``x + r_tot`` and steps to the nearest linearized
boundary::

    l = argmin_k |f'_k| / ||w'_k||_q,   w'_k = grad_x (f_k - f_s),   q = 2 (L2) or 1 (Linf)
    r = |f'_l| / ||w'_l||_2^2 * w'_l     (L2)      r = |f'_l| / ||w'_l||_1 * sign(w'_l)     (Linf)

``r_tot += r`` until ``argmax f(x + (1 + overshoot) r_tot) != s``; the result is
``x + (1 + overshoot) r_tot``. Linearizing at ``x + r_tot`` is the paper's Algorithm 2; testing the
label at the overshot point is the LTS4 code's stopping rule (the LTS4 code also linearizes there).
One implementation serves the DeepFool attack, the rho_2 metric and Deep Defense, which unrolls it
(``differentiable=True``: the steps stay in the autograd graph, the choice ``l`` and the stopping
mask are constants; see ``papers/deep_defense.md`` (b)).

Batching: no loop over samples. The batch is replicated once per candidate class, so one forward and
one backward give every ``w'_k`` of every sample (memory ~ ``num_candidates`` x batch); only the
samples still being attacked are evaluated at each iteration.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

Norm = Literal["l2", "linf"]
NORMS = ("l2", "linf")
TINY = 1e-12  # guards divisions by a zero gradient norm (a dead network); far below any real norm


class DeepFoolResult(NamedTuple):
    x_adv: Tensor  # x + delta
    delta: Tensor  # (1 + overshoot) * r_tot (after clamping, if asked)
    fooled: Tensor  # bool per sample: argmax f(x_adv) != source (True where it already was at the start)
    steps: Tensor  # iterations each sample took


def check_deepfool_args(norm: str, overshoot: float, max_iter: int, num_candidates: int | None) -> None:
    """Clear errors for bad hyperparameters, before any work starts."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if overshoot < 0:
        raise ValueError(f"overshoot must be >= 0, got {overshoot}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if num_candidates is not None and num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1 or None (all classes), got {num_candidates}")


def top_candidates(logits: Tensor, source: Tensor, num_candidates: int | None) -> Tensor:
    """The ``num_candidates`` classes with the largest logits other than ``source``, ``(B, k)``, best
    first. ``None`` (or more than there are) means every other class."""
    others = logits.shape[1] - 1
    k = others if num_candidates is None else min(num_candidates, others)
    masked = logits.detach().scatter(1, source[:, None], float("-inf"))
    return masked.topk(k, dim=1).indices


def candidate_gradients(
    model: nn.Module, x: Tensor, source: Tensor, candidates: Tensor, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """Gaps ``f_k(x) - f_s(x)`` ``(B, k)`` and their input gradients ``(B, k, *x.shape[1:])``.

    The batch is repeated ``k`` times, so one backward of the summed gaps gives every gradient (each
    replica's gap depends only on that replica). With ``create_graph`` the gradients stay
    differentiable (w.r.t. the weights and anything ``x`` depends on).
    """
    batch, k = candidates.shape
    replicas = x.repeat_interleave(k, dim=0)
    if not create_graph:
        replicas = replicas.detach()
    if not replicas.requires_grad:
        replicas.requires_grad_(True)
    logits = model(replicas).view(batch, k, -1)
    gaps = logits.gather(2, candidates[..., None]) - logits.gather(
        2, source[:, None, None].expand(batch, k, 1)
    )
    gaps = gaps.squeeze(2)
    (grads,) = torch.autograd.grad(gaps.sum(), replicas, create_graph=create_graph)
    return (gaps if create_graph else gaps.detach()), grads.view(batch, k, *x.shape[1:])


def deepfool_step(gaps: Tensor, grads: Tensor, norm: Norm = "l2", norm_eps: float = 0.0) -> Tensor:
    """One DeepFool step ``r`` ``(B, *)`` to the nearest linearized boundary (pure tensor math).

    Args:
        gaps: ``f_k - f_s`` at the current point, ``(B, k)``.
        grads: ``grad_x (f_k - f_s)``, ``(B, k, *)``.
        norm: ``"l2"`` or ``"linf"`` (the dual norm ``||.||_1`` measures the gradients).
        norm_eps: added elementwise to ``w'`` inside the norms (Deep Defense's guard; 0 = exact).
    """
    flat = grads.flatten(2)
    dual = (flat + norm_eps).norm(p=2 if norm == "l2" else 1, dim=2).clamp_min(TINY)  # (B, k)
    distance = gaps.abs() / dual
    best = distance.detach().argmin(dim=1, keepdim=True)  # the choice is a constant
    w = flat.gather(1, best[..., None].expand(-1, -1, flat.shape[2])).squeeze(1)
    size = distance.gather(1, best)
    direction = w / dual.gather(1, best) if norm == "l2" else w.sign()
    return (size * direction).view(grads.shape[0], *grads.shape[2:])


def deepfool(
    model: nn.Module,
    x: Tensor,
    norm: Norm = "l2",
    overshoot: float = 0.02,
    max_iter: int = 50,
    num_candidates: int | None = None,
    source: Tensor | None = None,
    clamp: bool = False,
    norm_eps: float = 0.0,
    differentiable: bool = False,
) -> DeepFoolResult:
    """Untargeted DeepFool from ``source`` (default: the model's predicted labels).

    Args:
        model: classifier returning logits; use it in eval mode (replicas and subsets of the batch
            go through it, so train-mode BatchNorm statistics would mix them).
        x: inputs ``(B, ...)``.
        norm: ``"l2"`` or ``"linf"``.
        overshoot: eta; the result is ``x + (1 + eta) r_tot`` (0.02 in the paper).
        max_iter: at most this many linearization steps per sample (50 in the paper; Deep Defense 5).
        num_candidates: the candidate classes are the ``num_candidates`` largest logits at ``x``
            other than the source (fixed at the start); ``None`` = every other class.
        source: ``(B,)`` labels to move away from. Samples whose prediction already differs are
            not moved (``delta = 0``, ``fooled = True``).
        clamp: clip every iterate and the result to ``[0, 1]``. Off for the rho_2 metric and Deep
            Defense (``papers/evaluation.md`` section 5); the attack turns it on.
        norm_eps: elementwise guard inside the gradient norms (Deep Defense: 1e-5); 0 is exact.
        differentiable: keep the unrolled iterations in the autograd graph (``create_graph``).
    """
    check_deepfool_args(norm, overshoot, max_iter, num_candidates)
    with torch.no_grad():
        logits = model(x)
    prediction = logits.argmax(dim=1)
    source = prediction if source is None else source.to(prediction.device)
    candidates = top_candidates(logits, source, num_candidates)
    active = prediction == source
    r_tot = torch.zeros_like(x)
    steps = torch.zeros_like(source)

    def at(r: Tensor, index: Tensor, factor: float) -> Tensor:
        point = x[index] + factor * r[index]
        return point.clamp(0.0, 1.0) if clamp else point

    for _ in range(max_iter):
        index = active.nonzero().squeeze(1)
        if index.numel() == 0:
            break
        point = at(r_tot, index, 1.0)
        gaps, grads = candidate_gradients(model, point, source[index], candidates[index], differentiable)
        r = deepfool_step(gaps, grads, norm, norm_eps)
        r_tot = r_tot.index_add(0, index, r if differentiable else r.detach())
        steps[index] += 1
        with torch.no_grad():
            active[index] = model(at(r_tot, index, 1 + overshoot)).argmax(dim=1) == source[index]
    delta = (1 + overshoot) * r_tot
    if not clamp:
        return DeepFoolResult(x + delta, delta, ~active, steps)
    x_adv = (x + delta).clamp(0.0, 1.0)
    return DeepFoolResult(x_adv, x_adv - x, ~active, steps)
