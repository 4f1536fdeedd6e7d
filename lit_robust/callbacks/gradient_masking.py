"""The gradient-masking sanity checks of evaluation.md §6.1, as logged flags and warnings."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_robust.attacks.base import Attack, GradientMaskingWarning, ThreatModel
from lit_robust.callbacks.robustness_evaluation import predict_labels, robust_flags
from lit_robust.callbacks.subset_evaluation import SubsetEvaluation, check_distinct_names
from lit_robust.metrics import MASKING, ROBUST_ACC, metric
from lit_robust.models.modes import eval_mode, frozen_parameters
from lit_robust.validation import check_real


def zero_gradient(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Per sample: the input gradient of the cross-entropy is all zero or not finite."""
    with torch.inference_mode(False), torch.enable_grad(), eval_mode(model), frozen_parameters(model):
        x, y = x.detach().clone().requires_grad_(True), y.clone()  # normal tensors, even from inference mode
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    flat = grad.flatten(1)
    return (flat == 0).all(dim=1) | ~flat.isfinite().all(dim=1)


def uniform_noise(x: Tensor, eps: float) -> Tensor:
    """``clip(x + U[-eps, eps], 0, 1)`` per pixel."""
    return (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)


def check_threshold(name: str, value: float) -> float:
    """A threshold on a share of the subset or an accuracy gap, in [0, 1): nothing exceeds 1, so a
    check with that threshold could never fail."""
    return check_real(name, value, 0, 1, high_open=True)


class GradientMaskingChecks(SubsetEvaluation):
    """Run the masking checks on a seeded subset; log each value, a 0/1 flag, and warn when flagged.

    Under ``val/masking/`` or ``test/masking/`` (evaluation.md §6.1; a flag is 1 when the check fails):

    * ``zero_grad_frac`` — share of points whose input gradient of CE is all zero or not finite;
    * ``<single_step>_beats_<white_box>_frac`` — broken by the single-step attack but not by the
      iterative one (iterative attacks must be at least as strong);
    * ``<black_box>_only_frac`` — broken by a black-box or transfer attack but not by the white-box
      one (gradients that lie);
    * ``noise_beats_attack_frac`` — broken by uniform noise of the white-box budget (Linf) but not
      by the attack;
    * ``convergence_gap`` — accuracy change when the white-box attack gets more steps/restarts;
    * ``loss_gap`` — accuracy difference between the white-box attack and ``other_loss`` (e.g.
      APGD-CE vs APGD-T); more than ``max_loss_gap`` is a masking symptom;
    * ``eps_sweep_ok`` — accuracy along ``eps_sweep`` never rises and ends at most
      ``max_final_sweep_acc`` (flag when it is 0).

    ``flags`` counts the raised flags, and ``robust_acc/<attack>`` holds each attack's accuracy.
    A clean bill is necessary, not sufficient: adaptive attacks remain the final word.

    Every share is of the whole subset and only clean-correct points can be robust, so on a subset
    with no clean-correct point (a model wrong everywhere) every share and gap is 0 and no flag is
    raised: there was nothing to check, and a warning says so. When every attack breaks every
    point, the ``_frac`` checks are 0 too (nothing survives the white-box attack to be broken).

    Args:
        white_box: the reference attack, e.g. PGD-50 or APGD-CE at the headline eps.
        single_step: e.g. FGSM at the same eps; None skips the check.
        black_box: e.g. Square and transfer attacks at the same eps.
        stronger: the white-box attack with more steps or restarts; None skips the check.
        other_loss: the white-box attack with another loss (APGD-T, APGD-DLR); None skips the check.
        eps_sweep: one attack family at growing eps (the largest should break everything).
        tolerance: largest acceptable share for the ``_frac`` checks and the convergence gap
            (evaluation.md: 0.5 points), in [0, 1): 0 flags any single point.
        max_final_sweep_acc: accuracy allowed at the largest sweep eps (evaluation.md: 1%), in [0, 1).
        max_loss_gap: largest acceptable ``loss_gap`` (evaluation.md: 5 points), in [0, 1).
        num_samples, every_n_epochs, seed, batch_size: see :class:`SubsetEvaluation`.
    """

    def __init__(
        self,
        white_box: Attack,
        single_step: Attack | None = None,
        black_box: list[Attack] | None = None,
        stronger: Attack | None = None,
        other_loss: Attack | None = None,
        eps_sweep: list[Attack] | None = None,
        tolerance: float = 0.005,
        max_final_sweep_acc: float = 0.01,
        max_loss_gap: float = 0.05,
        num_samples: int = 1000,
        every_n_epochs: int = 1,
        seed: int = 0,
        batch_size: int = 250,
    ):
        super().__init__(num_samples, every_n_epochs, seed, batch_size)
        self.tolerance = check_threshold("tolerance", tolerance)
        self.max_final_sweep_acc = check_threshold("max_final_sweep_acc", max_final_sweep_acc)
        self.max_loss_gap = check_threshold("max_loss_gap", max_loss_gap)
        unbounded = [attack.name for attack in eps_sweep or [] if attack.eps is None]
        if unbounded:
            raise ValueError(f"eps_sweep must be attacks with an eps (a budget to sweep), got {unbounded}")
        self.white_box = white_box
        self.single_step = single_step
        self.black_box = list(black_box or [])
        self.stronger = stronger
        self.other_loss = other_loss
        self.eps_sweep = sorted(eps_sweep or [], key=lambda attack: attack.eps)
        check_distinct_names(self._attacks())
        self.flagged: list[str] = []  # set by summarize, warned about by log_extras
        self.nothing_to_check = False

    def _attacks(self) -> list[Attack]:
        optional = [self.single_step, self.stronger, self.other_loss]
        return [self.white_box, *[a for a in optional if a is not None], *self.black_box, *self.eps_sweep]

    def attacks_per_sample(self) -> int:
        return len(self._attacks())

    def per_sample(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        values = robust_flags(model, x, y, self._attacks(), trainer=self.trainer, on_attack=self.show_attack)
        values["zero_grad"] = zero_gradient(model, x, y)
        if self.white_box.threat_model is ThreatModel.LINF:
            values["noise"] = values["clean"] & (
                predict_labels(model, uniform_noise(x, self.white_box.eps)) == y
            )
        return values

    def summarize(self, stage: str, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        white = values[self.white_box.name].bool()
        checks: dict[str, tuple[Tensor, bool]] = {}  # name -> (value, flagged)

        def only_broken_by(key: str) -> Tensor:
            return (~values[key].bool() & white & values["clean"].bool()).float().mean()

        zero = values["zero_grad"].float().mean()
        checks["zero_grad_frac"] = (zero, bool(zero > self.tolerance))
        if self.single_step is not None:
            share = only_broken_by(self.single_step.name)
            checks[f"{self.single_step.name}_beats_{self.white_box.name}_frac"] = (
                share,
                bool(share > self.tolerance),
            )
        for attack in self.black_box:
            share = only_broken_by(attack.name)
            checks[f"{attack.name}_only_frac"] = (share, bool(share > self.tolerance))
        if "noise" in values:
            share = only_broken_by("noise")
            checks["noise_beats_attack_frac"] = (share, bool(share > self.tolerance))
        if self.stronger is not None:
            gap = (values[self.stronger.name].mean() - white.float().mean()).abs()
            checks["convergence_gap"] = (gap, bool(gap > self.tolerance))
        if self.other_loss is not None:
            gap = (values[self.other_loss.name].mean() - white.float().mean()).abs()
            checks["loss_gap"] = (gap, bool(gap > self.max_loss_gap))
        if self.eps_sweep:
            curve = torch.stack([values[attack.name].mean() for attack in self.eps_sweep])
            monotone = bool((curve[1:] <= curve[:-1] + 1e-12).all())
            ok = monotone and bool(curve[-1] <= self.max_final_sweep_acc)
            checks["eps_sweep_ok"] = (torch.tensor(float(ok)), not ok)

        metrics = {metric(stage, MASKING, name): value for name, (value, _) in checks.items()}
        metrics |= {
            metric(stage, MASKING, f"{name}_flag"): torch.tensor(float(flag))
            for name, (_, flag) in checks.items()
        }
        metrics[metric(stage, MASKING, "flags")] = torch.tensor(
            float(sum(flag for _, flag in checks.values()))
        )
        for attack in self._attacks():  # under masking/: RobustnessEvaluation may log the same attack
            metrics[metric(stage, MASKING, f"{ROBUST_ACC}/{attack.name}")] = values[attack.name].mean()
        self.flagged = [f"{name} = {float(value):.4f}" for name, (value, flag) in checks.items() if flag]
        self.nothing_to_check = not bool(values["clean"].bool().any())
        return metrics

    def log_extras(self, trainer, stage: str, metrics: Mapping[str, Tensor]) -> None:
        if self.nothing_to_check:
            warnings.warn(
                f"gradient-masking checks on the {stage} subset: no point is classified correctly, so no "
                "check had anything to test (every share is 0 and no flag is raised)",
                UserWarning,
                stacklevel=2,
            )
        for message in self.flagged:
            warnings.warn(
                f"gradient-masking check failed on the {stage} subset: {message} "
                f"(tolerance {self.tolerance}); robust accuracy from gradient attacks may be overestimated",
                GradientMaskingWarning,
                stacklevel=2,
            )
