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

Two modes (``papers/deep_defense.md`` (b)):

* **untargeted** (default): away from ``source`` towards the nearest of the candidate classes,
  which are the largest logits at ``x`` other than the source, ordered once at the start;
* **targeted** (``targeted_to=y``): binary, towards ``y`` from the strongest rival of ``y``
  (``s = argmax_{k != y} f_k``, i.e. the current prediction), re-evaluated at every iteration's
  linearization point as in the official Deep Defense code; a sample stops when
  ``argmax f(x + (1 + overshoot) r_tot) == y``. Deep Defense uses it for misclassified points.

**Differentiating through the loop** (``differentiable=True``, Deep Defense's "recursive network"):
the gaps ``f'``, the Jacobian rows ``w'`` (computed with ``create_graph=True``) and every earlier
step (later linearization points ``x + r_tot`` depend on earlier ``r``) stay in the graph, so
``delta`` is a differentiable function of the weights (and of ``x``). The choice ``l``, the
candidate order, the source of the targeted mode and the stopping mask are constants.
``detach_prev_r=True`` (AMM's ``--no-bp-prev-r``) linearizes at ``x + stop_grad(r_tot)``: then
``d delta / d theta = (1 + overshoot) sum_j d r_j / d theta`` with each linearization point held
fixed, i.e. the paths through earlier steps are dropped (the same value, a different gradient).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor, nn

from lit_robust.models.normalize import Normalize
from lit_robust.validation import check_choice, check_int, check_optional_int, check_real

Norm = Literal["l2", "linf"]
NORMS = ("l2", "linf")
TINY = 1e-12  # guards divisions by a zero gradient norm (a dead network); far below any real norm


class DeepFoolResult(NamedTuple):
    x_adv: Tensor  # x + delta
    delta: Tensor  # (1 + overshoot) * r_tot (after clamping, if asked)
    fooled: Tensor  # bool per sample: the goal is reached at x_adv: argmax != source (untargeted) or
    #                 == targeted_to (targeted); True where it already was at the start
    steps: Tensor  # iterations each sample took


def check_deepfool_args(norm: str, overshoot: float, max_iter: int, num_candidates: int | None) -> None:
    """Clear errors for bad hyperparameters, before any work starts."""
    check_choice("norm", norm, NORMS)
    check_real("overshoot", overshoot, low=0)
    check_int("max_iter", max_iter, low=1)
    check_optional_int("num_candidates", num_candidates, low=1)


def top_candidates(logits: Tensor, source: Tensor, num_candidates: int | None) -> Tensor:
    """The ``num_candidates`` classes with the largest logits other than ``source``, ``(B, k)``, best
    first. ``None`` (or more than there are) means every other class."""
    others = logits.shape[1] - 1
    k = others if num_candidates is None else min(num_candidates, others)
    masked = logits.detach().scatter(1, source[:, None], float("-inf"))
    return masked.topk(k, dim=1).indices


def candidate_gradients(
    model: nn.Module, x: Tensor, source: Tensor | None, candidates: Tensor, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """Gaps ``f_k(x) - f_s(x)`` ``(B, k)`` and their input gradients ``(B, k, *x.shape[1:])``.

    The batch is repeated ``k`` times, so one backward of the summed gaps gives every gradient (each
    replica's gap depends only on that replica). With ``create_graph`` the gradients stay
    differentiable (w.r.t. the weights and anything ``x`` depends on). ``source=None`` takes, per
    sample, the largest logit at ``x`` outside ``candidates`` (a constant): the current prediction
    whenever it is not a candidate (the targeted mode's moving source).
    """
    batch, k = candidates.shape
    replicas = x.repeat_interleave(k, dim=0)
    if not create_graph:
        replicas = replicas.detach()
    if not replicas.requires_grad:
        replicas.requires_grad_(True)
    logits = model(replicas).view(batch, k, -1)
    if source is None:
        source = logits.detach()[:, 0].scatter(1, candidates, float("-inf")).argmax(dim=1)
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
    targeted_to: Tensor | None = None,
    detach_prev_r: bool = False,
) -> DeepFoolResult:
    """Batched DeepFool: untargeted from ``source`` (default: the predicted labels), or targeted.

    Args:
        model: classifier returning logits; use it in eval mode (replicas and subsets of the batch
            go through it, so train-mode BatchNorm statistics would mix them).
        x: inputs ``(B, ...)``.
        norm: ``"l2"`` or ``"linf"``.
        overshoot: eta; the result is ``x + (1 + eta) r_tot`` (0.02 in the paper).
        max_iter: at most this many linearization steps per sample (50 in the paper; Deep Defense 5).
        num_candidates: untargeted: the candidate classes are the ``num_candidates`` largest logits
            at ``x`` other than the source (fixed at the start); ``None`` = every other class.
        source: ``(B,)`` labels to move away from (untargeted). Samples whose prediction already
            differs are not moved (``delta = 0``, ``fooled = True``).
        clamp: clip every iterate and the result to ``[0, 1]``. Off for the rho_2 metric and Deep
            Defense (``papers/evaluation.md`` section 5); the attack turns it on.
        norm_eps: elementwise guard inside the gradient norms (Deep Defense: 1e-5); 0 is exact.
        differentiable: keep the unrolled iterations in the autograd graph (``create_graph``);
            see the module docstring for what is a constant.
        targeted_to: ``(B,)`` target labels: binary DeepFool towards them from the current
            prediction (module docstring). Samples already classified as their target are not
            moved (``delta = 0``, ``fooled = True``). Exclusive with ``source``.
        detach_prev_r: linearize at ``x + stop_grad(r_tot)`` (only matters when ``differentiable``).
    """
    check_deepfool_args(norm, overshoot, max_iter, num_candidates)
    if targeted_to is not None and source is not None:
        raise ValueError("pass either source (untargeted) or targeted_to (targeted), not both")
    with torch.no_grad():
        logits = model(x)
    prediction = logits.argmax(dim=1)
    if targeted_to is None:
        source = prediction if source is None else source.to(prediction.device)
        candidates = top_candidates(logits, source, num_candidates)
        active = prediction == source
    else:
        target = targeted_to.to(prediction.device)
        candidates = target[:, None]
        active = prediction != target
    r_tot = torch.zeros_like(x)
    steps = torch.zeros_like(prediction)

    def at(r: Tensor, index: Tensor, factor: float) -> Tensor:
        point = x[index] + factor * r[index]
        return point.clamp(0.0, 1.0) if clamp else point

    for _ in range(max_iter):
        index = active.nonzero().squeeze(1)
        if index.numel() == 0:
            break
        point = at(r_tot.detach() if detach_prev_r else r_tot, index, 1.0)
        from_class = None if targeted_to is not None else source[index]
        gaps, grads = candidate_gradients(model, point, from_class, candidates[index], differentiable)
        r = deepfool_step(gaps, grads, norm, norm_eps)
        r_tot = r_tot.index_add(0, index, r if differentiable else r.detach())
        steps[index] += 1
        with torch.no_grad():
            now = model(at(r_tot, index, 1 + overshoot)).argmax(dim=1)
        active[index] = now == source[index] if targeted_to is None else now != target[index]
    delta = (1 + overshoot) * r_tot
    if not clamp:
        return DeepFoolResult(x + delta, delta, ~active, steps)
    x_adv = (x + delta).clamp(0.0, 1.0)
    return DeepFoolResult(x_adv, x_adv - x, ~active, steps)


def relative_size(delta: Tensor, x: Tensor) -> Tensor:
    """``rho = ||delta||_2 / ||x||_2`` per sample (dimensionless; Deep Defense's robustness measure)."""
    return delta.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(TINY)


def leading_normalize(model: nn.Module) -> nn.Module | None:
    """The first :class:`~lit_robust.models.normalize.Normalize` inside ``model`` (None if none)."""
    return next((module for module in model.modules() if isinstance(module, Normalize)), None)


class FromNormalized(nn.Module):
    """``z -> model(z * std + mean)``: ``model`` (which starts with ``normalize``) as a function of its
    normalized input ``z = normalize(x)``, so DeepFool can measure perturbations in that space (the
    preprocessed space of the Deep Defense paper, ``rho_space="normalized"``)."""

    def __init__(self, model: nn.Module, normalize: nn.Module):
        super().__init__()
        self.model = model
        self.normalize = normalize

    def to_pixels(self, z: Tensor) -> Tensor:
        return z * self.normalize.std + self.normalize.mean

    def forward(self, z: Tensor) -> Tensor:
        return self.model(self.to_pixels(z))


def deepfool_rho(
    model: nn.Module,
    x: Tensor,
    space: Literal["pixel", "normalized"] = "pixel",
    **kwargs,
) -> tuple[Tensor, DeepFoolResult]:
    """``(rho, result)``: L2 DeepFool on ``x`` (``kwargs`` as :func:`deepfool`) and ``||delta|| / ||x||``.

    ``space="normalized"`` runs DeepFool on ``z = normalize(x)`` through :class:`FromNormalized`
    (``normalize`` = the first ``Normalize`` of ``model``; none means the two spaces coincide) and
    returns ``||delta_z|| / ||z||`` with ``result`` in that space.
    """
    if space not in ("pixel", "normalized"):
        raise ValueError(f"space must be 'pixel' or 'normalized', got {space!r}")
    normalize = leading_normalize(model) if space == "normalized" else None
    if normalize is not None:
        model, x = FromNormalized(model, normalize), normalize(x)
    result = deepfool(model, x, norm="l2", **kwargs)
    return relative_size(result.delta, x), result
