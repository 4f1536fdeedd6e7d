"""The ``Attack`` protocol: hyperparameters at construction, the model at call time.

``attack(model, x, y) -> x_adv``. The base ``__call__`` does the bookkeeping once for every attack:

* leaves ``torch.inference_mode`` and enables grad (stand-alone ``validate``/``test`` batches are
  inference tensors, ``fit``'s validation runs under ``no_grad``);
* clones the inputs, so the caller's tensors are never modified;
* puts the model in eval mode and restores each module's previous mode afterwards, so BatchNorm
  statistics and dropout are untouched;
* freezes the parameters, so no ``.grad`` is left on (or added to) them;
* guarantees ``x_adv`` in [0, 1] and inside the threat model's ball around ``x``.

Subclasses implement :meth:`Attack.perturb` and set ``threat_model`` and ``short_name``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import ClassVar

import torch
from torch import Tensor, nn

from lit_robust.models.modes import eval_mode, frozen_parameters
from lit_robust.validation import check_real


class GradientMaskingWarning(UserWarning):
    """A sanity check suggests masked gradients: measured robustness may be overestimated."""


class ThreatModel(str, Enum):
    """The set of allowed perturbations around a clean input ``x`` (pixel units)."""

    LINF = "linf"  # ||x_adv - x||_inf <= eps
    L2 = "l2"  # ||x_adv - x||_2 <= eps, per sample
    L1 = "l1"  # ||x_adv - x||_1 <= eps, per sample
    FLOW = "flow"  # a deformation; bounded by the attack itself, not in pixel space
    UNBOUNDED = "unbounded"  # minimal-perturbation attacks: only [0, 1] is enforced


def eps_tag(eps: float) -> str:
    """Readable, unambiguous text for ``eps`` in a metric name.

    Short decimals stay decimals (``0.3``, ``0.031``); other fractions of 255 are written ``8_255``,
    so the standard 8/255 and the 0.031 of several papers' code stay distinct.
    """
    if math.isclose(eps, round(eps, 3), abs_tol=1e-9):
        return f"{round(eps, 3):g}"
    levels = eps * 255
    if math.isclose(levels, round(levels), abs_tol=1e-3):
        return f"{round(levels)}_255"
    return f"{eps:.4g}"


def project(x_adv: Tensor, x: Tensor, eps: float | None, threat_model: ThreatModel) -> Tensor:
    """Project ``x_adv`` onto the ``eps``-ball of ``threat_model`` around ``x``, then clip to [0, 1].

    Clipping after the projection keeps the point inside the ball: ``x`` lies in [0, 1], so
    clipping only shrinks each coordinate of ``x_adv - x``. Flow and unbounded threat models are
    only clipped (a flow attack bounds its own displacement field).
    """
    if threat_model in (ThreatModel.FLOW, ThreatModel.UNBOUNDED):
        return x_adv.clamp(0.0, 1.0)  # not x + (x_adv - x): rounding could flip a boundary point
    delta = x_adv - x
    if threat_model is ThreatModel.LINF:
        delta = delta.clamp(-eps, eps)
    else:
        order = 2 if threat_model is ThreatModel.L2 else 1
        norms = delta.flatten(1).norm(p=order, dim=1).clamp_min(1e-12)
        scale = (eps / norms).clamp(max=1.0).view(-1, *([1] * (delta.dim() - 1)))
        delta = delta * scale
    return (x + delta).clamp(0.0, 1.0)


@contextmanager
def attacking(model: nn.Module, x: Tensor, y: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
    """The bookkeeping around every attack (module docstring); yields clones of ``x`` and ``y``.

    Outputs computed inside are normal tensors even when the caller is in inference mode.
    """
    with torch.inference_mode(False), torch.enable_grad():
        x, y = x.detach().clone(), y.detach().clone()
        with eval_mode(model), frozen_parameters(model):
            yield x, y


def count_classes(model: nn.Module, x: Tensor, minimum: int = 1, needed_by: str = "this attack") -> int:
    """The number of logits ``model`` returns (one forward on one sample); a clear error when
    ``needed_by`` needs at least ``minimum`` classes."""
    with torch.no_grad():
        classes = model(x[:1]).shape[-1]
    if classes < minimum:
        raise ValueError(f"{needed_by} needs a model with at least {minimum} classes, got {classes}")
    return classes


class Attack(ABC):
    """Base of every attack. ``attack(model, x, y)`` returns adversarial inputs in [0, 1].

    Args:
        eps: budget in pixel units ([0, 1] images), finite. Linf: in [0, 1]; L2 and L1: >= 0; flow:
            >= 0, in the attack's own unit. 0 is legal: the attack returns the clean input.
            Minimal-perturbation attacks (``ThreatModel.UNBOUNDED``) take none.
        name: metric name; by default ``<short_name>_<threat model>_<eps tag>`` (``pgd_linf_0.3``),
            or ``<short_name>`` for minimal-perturbation attacks (``deepfool_l2``).
    """

    threat_model: ClassVar[ThreatModel]
    short_name: ClassVar[str]

    def __init__(self, eps: float | None = None, name: str | None = None):
        self._name = name
        if self.threat_model is ThreatModel.UNBOUNDED:
            if eps is not None:
                raise ValueError(
                    f"{type(self).__name__} finds minimal perturbations and takes no eps, got {eps}"
                )
            self.eps = None
            return
        if eps is None:
            raise ValueError(
                f"eps is required for {type(self).__name__} ({self.threat_model.value} threat model)"
            )
        eps = check_real("eps", eps)  # a finite real number: NaN, inf and strings are refused here
        if self.threat_model is ThreatModel.LINF and not 0 <= eps <= 1:
            raise ValueError(
                f"eps must be in [0, 1] for {type(self).__name__} (Linf, pixel units of [0, 1] "
                f"images; write 8/255 as 0.0313725), got {eps:g}"
            )
        self.eps = check_real("eps", eps, low=0)

    @property
    def name(self) -> str:
        """Stable metric name, e.g. ``pgd_linf_0.3``, ``fgsm_linf_8_255`` or ``deepfool_l2``."""
        if self._name:
            return self._name
        if self.eps is None:
            return self.short_name
        return f"{self.short_name}_{self.threat_model.value}_{eps_tag(self.eps)}"

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Attack ``model`` at the clean inputs ``x`` (in [0, 1]) with labels ``y``."""
        with attacking(model, x, y) as (x, y):
            if self.eps == 0:
                return x
            return project(self.perturb(model, x, y).detach(), x, self.eps, self.threat_model)

    @abstractmethod
    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Return adversarial inputs. ``model`` is in eval mode with frozen parameters."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
