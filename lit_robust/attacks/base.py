"""The ``Attack`` protocol: hyperparameters at construction, the model at call time.

``attack(model, x, y) -> x_adv``. The base ``__call__`` does the bookkeeping once for every attack:

* leaves ``torch.inference_mode`` and enables grad (stand-alone ``validate``/``test`` batches are
  inference tensors, ``fit``'s validation runs under ``no_grad``);
* clones the inputs, so the caller's tensors are never modified;
* puts the model in eval mode and restores each module's previous mode afterwards, so BatchNorm
  statistics and dropout are untouched;
* freezes the parameters, so no ``.grad`` is left on (or added to) them;
* guarantees ``x_adv`` in [0, 1] and inside the threat model's ball around ``x``.

Subclasses implement :meth:`Attack.perturb`. Every attack states three things about itself, as
instance state set by ``Attack.__init__`` (see :class:`Attack`): its ``threat_model``, its
``short_name`` (the stem of its metric name) and its ``objective`` (what it maximizes, one of
:class:`Objective`).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from lit_robust.functional.projection import project_ball
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


class Objective(str, Enum):
    """What an attack maximizes: the one documented list of ``Attack.objective`` values.

    ``y`` is the label, ``z = f(x')`` the logits at the candidate ``x'``, ``p = softmax(z)``. A consumer
    that needs a particular inner maximization checks it explicitly (TRADES: ``objective == "kl"``).
    Members are strings, so ``attack.objective == "kl"`` works as well as ``is Objective.KL``.
    """

    CE = "ce"  # CE(z, y), the cross-entropy of the label: FGSM, PGD, BIM, MI-FGSM, APGD-CE, FlowPGD
    KL = "kl"  # KL(p(x) || p(x')) from the clean prediction, label-free: PGD(loss="kl"), TRADES' inner max
    DLR = "dlr"  # -(z_y - max_{i!=y} z_i) / (z_(1) - z_(3)), untargeted: APGD-DLR
    DLR_TARGETED = "dlr_targeted"  # -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2) over targets t: APGD-T
    MARGIN = "margin"  # the logit margin max_{i!=y} z_i - z_y, without gradients: Square
    MINIMAL = "minimal"  # the smallest perturbation (in the attack's norm) that changes the label:
    #                      CW-L2, EAD, DDN, DeepFool, FAB, FAB-T, ADef, stAdv
    ENSEMBLE = "ensemble"  # the per-sample worst case over components of different objectives: AutoAttack


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

    Linf, L2 and L1 balls: :func:`lit_robust.functional.projection.project_ball` (clipping after the
    projection keeps the point inside the ball). Flow and unbounded threat models are only clipped (a
    flow attack bounds its own displacement field).
    """
    if threat_model in (ThreatModel.FLOW, ThreatModel.UNBOUNDED):
        return x_adv.clamp(0.0, 1.0)  # not x + (x_adv - x): rounding could flip a boundary point
    return project_ball(x_adv, x, eps, threat_model.value)


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


E = TypeVar("E", bound=Enum)


def _stated(attack: object, key: str, given: Any) -> Any:
    """``given``, else ``attack``'s class attribute ``key``; a clear error when neither states it."""
    value = getattr(attack, key, None) if given is None else given
    if value is None:
        raise TypeError(
            f"{type(attack).__name__} does not state its {key}: pass {key}=... to Attack.__init__ or set "
            f"the class attribute {key}"
        )
    return value


def _member(enum: type[E], key: str, value: Any) -> E:
    """``enum(value)`` (a member or its value), or a ``ValueError`` naming ``key`` and the allowed values."""
    try:
        return enum(value)
    except ValueError:
        allowed = [member.value for member in enum]
        raise ValueError(f"{key} must be one of {allowed}, got {value!r}") from None


class Attack(ABC):
    """Base of every attack. ``attack(model, x, y)`` returns adversarial inputs in [0, 1].

    What an attack is, as instance state (read by metric names, reports and consumers such as TRADES):

    * ``threat_model`` (:class:`ThreatModel`): the set ``x_adv`` is kept in;
    * ``short_name`` (str): the stem of the metric name (``pgd``, ``pgd_kl``, ``deepfool_l2``);
    * ``objective`` (:class:`Objective`): what the attack maximizes; ``None`` only for a custom attack
      that does not say (then every check for a particular objective refuses it).

    All three are set once, by ``Attack.__init__``, from its keyword arguments. A class attribute of
    the same name is the default used when the keyword is not given: an attack whose three facts
    never change states them in its class body (``threat_model = ThreatModel.LINF``), an attack whose
    facts depend on its arguments (PGD's ``norm`` and ``loss``, a wrapper's inner attack) passes them
    to ``super().__init__``. Nothing is reassigned after construction.

    Args:
        eps: budget in pixel units ([0, 1] images), finite. Linf: in [0, 1]; L2 and L1: >= 0; flow:
            >= 0, in the attack's own unit. 0 is legal: the attack returns the clean input.
            Minimal-perturbation attacks (``ThreatModel.UNBOUNDED``) take none.
        name: metric name; by default ``<short_name>_<threat model>_<eps tag>`` (``pgd_linf_0.3``),
            or ``<short_name>`` for minimal-perturbation attacks (``deepfool_l2``).
        threat_model: the threat model (default: the class attribute ``threat_model``; one is required).
        short_name: the metric name's stem, a non-empty string (default: the class attribute; required).
        objective: an :class:`Objective` or its value (default: the class attribute, else ``None``).
    """

    threat_model: ThreatModel
    short_name: str
    objective: Objective | None = None

    def __init__(
        self,
        eps: float | None = None,
        name: str | None = None,
        *,
        threat_model: ThreatModel | str | None = None,
        short_name: str | None = None,
        objective: Objective | str | None = None,
    ):
        self.threat_model = _member(ThreatModel, "threat_model", _stated(self, "threat_model", threat_model))
        self.short_name = _stated(self, "short_name", short_name)
        if not isinstance(self.short_name, str) or not self.short_name:
            raise ValueError(f"short_name must be a non-empty string, got {self.short_name!r}")
        objective = getattr(self, "objective", None) if objective is None else objective
        self.objective = None if objective is None else _member(Objective, "objective", objective)
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
