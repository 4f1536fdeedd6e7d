"""Local flatness regularization: Xu, Li, Jiang, Xia, "Adversarial Defense via Local Flatness
Regularization", ICIP 2020, pp. 2196-2200 (arXiv 1910.12165). Official code:
``Uooga/Local-Flatness-Regularization``. Spec: ``shared/papers/local_flatness.md``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lit_robust.attacks.base import Attack
from lit_robust.defenses.base import RobustClassifier
from lit_robust.functional.input_gradient import (
    cross_entropy_gradient_norms,
    gradient_norm,
    input_gradient,
)
from lit_robust.functional.local_flatness import (
    GRADIENT_NORMS,
    INIT_STD,
    check_inner_maximization,
    maximize_gradient_norm,
)
from lit_robust.validation import check_choice, check_int, check_real


@contextmanager
def batchnorm_eval(network: nn.Module) -> Iterator[nn.Module]:
    """BatchNorm layers in eval mode (running statistics used, not updated); each layer's mode restored."""
    layers = [(m, m.training) for m in network.modules() if isinstance(m, _BatchNorm)]
    for module, _ in layers:
        module.training = False
    try:
        yield network
    finally:
        for module, training in layers:
            module.training = training


class LocalFlatnessRegularization(RobustClassifier):
    """Penalize the largest input-gradient norm in the eps-ball (the "local flatness") of each point::

        L = (1/B) Σ_b CE(f(x_b), y_b) + lam · (1/B) Σ_b ||∇_x CE(f(x̃_b), y_b)||_q ,
        x̃_b ≈ argmax_{x' ∈ B_p(x_b, eps) ∩ [0,1]^D} ||∇_{x'} CE(f(x'), y_b)||_q

    ``x̃`` comes from :func:`maximize_gradient_norm` (``steps`` sign-ascent steps of size ``alpha`` on
    the gradient norm, double backprop, from ``x + init_std·N(0, I)``), run with the network in eval
    mode and frozen parameters. It is then detached (Danskin-style, as the official code) and the
    gradient norm there is penalized by a second double backprop, with the network in train mode as
    the official code (the clean and the penalty forward both update BatchNorm statistics; set
    ``penalty_bn_mode="eval"`` to freeze them in the penalty forward).

    Per-sample convention: gradients of the *summed* CE, averaged over the batch. This equals the
    official code's ``B · mean_b ||∇_x (batch-mean CE)||_1``. With ``p = "inf"``, ``q = 1`` and an
    exact inner max, ``max_{||δ||∞ ≤ eps} ℓ(x+δ) ≤ ℓ(x) + eps·LF_eps(x)`` (our derivation, in the spec).

    Args:
        network: the classifier (starts with ``Normalize``; inputs in [0, 1]). The official MNIST
            model is :class:`~lit_robust.models.SmallCNN` without dropout.
        eps: radius of the ball, pixel units (official: 0.3 on MNIST, 0.031 on CIFAR-10). Linf: in
            [0, 1]; L2: finite, >= 0. 0 penalizes the gradient norm at the (noisy) clean point.
        alpha: inner step size, pixel units per step (official: 0.01 MNIST, 0.007 CIFAR-10), > 0.
        steps: inner ascent steps K (official: 40 MNIST, 10 CIFAR-10), an integer >= 0 (0: the penalty
            at the random start); a step costs one double backprop, so a training step costs about
            K + 1 double backprops.
        lam: weight of the penalty (official: 0.02 MNIST, 0.03 CIFAR-10; not tied to eps), finite, >= 0.
            Units: loss per unit of (pixel-space) gradient norm. ``lam = 0`` skips the inner loop and
            is exactly standard training.
        p: the ball, ``"inf"`` (official) or ``"2"`` (ours, not in the official code: L2 steepest
            ascent ``alpha·s/||s||_2`` and L2 projection; use it with ``q = 2``, the dual norm).
        q: the gradient norm, 1 (official, dual of Linf) or 2.
        init_std: std of the Gaussian start noise, pixel units, >= 0 (official 0.001); 0 starts at ``x``.
        penalty_bn_mode: ``"train"`` (official) or ``"eval"``: BatchNorm mode of the penalty forward.
        lam_warmup_epochs: an integer >= 0; ours, off by default (0), untested against the paper:
            ``lam`` ramps linearly as ``lam·min(1, (epoch + 1) / lam_warmup_epochs)``, for the instability the
            official CIFAR run shows (collapse to 10% after ~210 epochs).
        log_clean_grad_norm: also log the gradient norm at the clean point (``train/lfr_grad_norm_clean``)
            and ``train/lfr_inner_gain``; costs one plain backward through the clean graph per step
            (under 1% of a step at K = 40).
        adversary, trades_beta: see :class:`RobustClassifier`: local flatness on top of adversarial
            training (the ball is then around the adversarial inputs) or of TRADES (around the clean
            ones). Not in the paper.
        num_classes, optimizer, lr_scheduler, init_from, input_transform: see :class:`RobustClassifier`.

    Unknowns: the paper's text and tables were not retrieved. Everything above is the official code
    (``p="inf"``, ``q=1``, N(0, 0.001²) start, train-mode penalty, no adversarial training mixed in);
    ``p="2"``, ``penalty_bn_mode="eval"`` and ``lam_warmup_epochs`` are our options, off by default.

    Logs ``train/ce``, ``train/lfr_reg`` (with ``lam``), ``train/lfr_penalty`` (mean
    ``||∇ℓ(x̃)||_q``, the estimated local flatness, without ``lam``) and, if ``log_clean_grad_norm``,
    ``train/lfr_grad_norm_clean`` and ``train/lfr_inner_gain`` (their ratio, >= 1 when the inner loop
    works). Do not ``torch.compile`` the training step (double backprop); fp32 or bf16, not fp16.
    """

    def __init__(
        self,
        network: nn.Module,
        eps: float = 0.3,
        alpha: float = 0.01,
        steps: int = 40,
        lam: float = 0.02,
        p: Literal["inf", "2"] = "inf",
        q: Literal[1, 2] = 1,
        init_std: float = INIT_STD,
        penalty_bn_mode: Literal["train", "eval"] = "train",
        lam_warmup_epochs: int = 0,
        log_clean_grad_norm: bool = True,
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        init_from: str | None = None,
        adversary: Attack | None = None,
        trades_beta: float | None = None,
        input_transform: nn.Module | None = None,
    ):
        super().__init__(
            network,
            num_classes,
            optimizer,
            lr_scheduler,
            init_from,
            adversary,
            trades_beta,
            input_transform=input_transform,
        )
        eps, alpha, steps, p, q, init_std = check_inner_maximization(eps, alpha, steps, str(p), q, init_std)
        self.eps, self.alpha, self.steps, self.lam = eps, alpha, steps, check_real("lam", lam, 0)
        self.p, self.q, self.init_std = p, q, init_std
        self.norm = GRADIENT_NORMS[q]
        self.penalty_bn_mode = check_choice("penalty_bn_mode", penalty_bn_mode, ("train", "eval"))
        self.lam_warmup_epochs = check_int("lam_warmup_epochs", lam_warmup_epochs, 0)
        self.log_clean_grad_norm = log_clean_grad_norm

    def current_lam(self) -> float:
        """``lam``, ramped over the first ``lam_warmup_epochs`` epochs when that is > 0."""
        if self.lam_warmup_epochs == 0 or self._trainer is None:
            return self.lam
        return self.lam * min(1.0, (self.current_epoch + 1) / self.lam_warmup_epochs)

    def local_flatness_point(self, x: Tensor, y: Tensor) -> Tensor:
        """``x̃``: the inner maximization of the network's input-gradient norm (detached)."""
        return maximize_gradient_norm(
            self.network, x, y, self.eps, self.alpha, self.steps, self.p, self.q, self.init_std
        )

    def penalty(self, x_tilde: Tensor, y: Tensor) -> Tensor:
        """``mean_b ||∇ℓ_b(x̃_b)||_q`` at a fixed ``x̃``, differentiable w.r.t. the weights (no ``lam``)."""
        x_tilde = x_tilde.detach().requires_grad_(True)
        frozen_statistics = batchnorm_eval(self.network) if self.penalty_bn_mode == "eval" else nullcontext()
        with frozen_statistics:
            norms = cross_entropy_gradient_norms(self.network, x_tilde, y, self.norm, create_graph=True)
        return norms.mean()

    def regularizer_inputs(self, x: Tensor) -> Tensor:
        """A leaf, when the clean gradient norm is logged (it is differentiated at ``x``)."""
        return x.detach().requires_grad_(True) if self.lam > 0 and self.log_clean_grad_norm else x

    def regularizer(self, x: Tensor, y: Tensor, logits: Tensor) -> dict[str, Tensor]:
        if self.lam == 0:
            return {"lfr_reg": logits.new_zeros(())}
        grad_norm = self.penalty(self.local_flatness_point(x, y), y)
        self.log_diagnostics(lfr_penalty=grad_norm)
        if x.requires_grad:  # regularizer_inputs made x a leaf for the clean gradient norm
            per_sample = F.cross_entropy(logits, y, reduction="none")
            clean_grad = input_gradient(per_sample, x, create_graph=False, retain_graph=True)
            clean = gradient_norm(clean_grad, self.norm).mean()
            gain = torch.where(clean > 0, grad_norm.detach() / clean.clamp_min(1e-30), torch.ones_like(clean))
            self.log_diagnostics(lfr_grad_norm_clean=clean, lfr_inner_gain=gain)
        return {"lfr_reg": self.current_lam() * grad_norm}
