"""Deep Defense: Ziang Yan, Yiwen Guo, Changshui Zhang, "Deep Defense: Training DNNs with Improved
Adversarial Robustness", NeurIPS 2018 (arXiv 1803.00404); official code ``ZiangYan/deepdefense.pytorch``.

The spec is ``shared/papers/deep_defense.md``. Not to be confused with GFA ("DeepDefense", 2025,
:mod:`lit_robust.defenses.gfa`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from lit_robust.attacks.base import Attack
from lit_robust.defenses.base import RobustClassifier
from lit_robust.functional.deepfool import deepfool_rho, leading_normalize
from lit_robust.models.modes import eval_mode
from lit_robust.validation import check_choice, check_int, check_optional_real, check_real

RHO_SPACES = ("pixel", "normalized")
BLANK_NORM = 1e-6  # ||x||_2 (rho-space units) below which an image is blank: rho = ||dx|| / ||x|| undefined


def deep_defense_penalty(
    rho_correct: Tensor,
    rho_wrong: Tensor,
    batch_size: int,
    lam: float,
    c: float,
    d: float,
    exp_clip: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``(lam/N sum_{i in T} exp(-c rho_i), lam/N sum_{i in F} min(exp(d rho_i), exp_clip))``.

    ``rho_correct`` / ``rho_wrong``: the relative DeepFool sizes of the correctly (T) and wrongly (F)
    classified samples of a batch of ``N = batch_size``; an empty group gives 0. Normalization is
    always by the full batch (``papers/deep_defense.md`` (d) 5).
    """
    correct = torch.exp(-c * rho_correct).sum()
    wrong = torch.exp(d * rho_wrong)
    if exp_clip is not None:
        wrong = wrong.clamp(max=exp_clip)
    return lam * correct / batch_size, lam * wrong.sum() / batch_size


def batchnorm_modules(network: nn.Module) -> list[_BatchNorm]:
    """Every BatchNorm layer of ``network``."""
    return [module for module in network.modules() if isinstance(module, _BatchNorm)]


class DeepDefense(RobustClassifier):
    """Cross-entropy plus an exponential penalty on the relative size of each training point's DeepFool
    perturbation, differentiated through the unrolled DeepFool iterations::

        J = (1/N) sum_i CE(f(x_i), y_i) + (lam/N) [ sum_{i in T} exp(-c rho_i) + sum_{i in F} exp(d rho_i) ]
        rho_i = ||dx_i||_2 / ||x_i||_2,     T = {argmax f(x_i) = y_i},  F = the others (N = batch size)

    T and F leave out blank images (below).

    ``dx_i`` is L2 DeepFool (:func:`lit_robust.functional.deepfool.deepfool` with
    ``differentiable=True``) unrolled for ``df_steps_train`` iterations with overshoot ``eta``:
    untargeted from ``y_i`` towards the ``num_candidates - 1`` other classes with the largest logits
    for ``i in T`` (pushes the boundary away: ``exp(-c rho)`` is largest, with the steepest slope,
    for the most vulnerable points); targeted at ``y_i`` from the current prediction for ``i in F``
    (pulls the boundary towards them, so accuracy does not suffer). The whole loop is
    differentiated (gaps, Jacobian rows, earlier steps); the class choices, stopping masks and the
    T/F split are constants. Points not fooled within the iterations contribute their partial
    ``dx``. ``rho`` is measured on the [0, 1] pixels given to the module (``rho_space="pixel"``),
    without clamping ``x + dx`` to the box.

    Blank images (ours; the paper and the official code never meet one): ``rho`` is undefined for an
    image with ``||x||_2 = 0`` (all zeros in pixel space; equal to the ``Normalize`` mean in the
    normalized space), where the formula divides by zero and the loss is infinite at the first step.
    An image whose ``||x||_2`` in the rho space is below ``BLANK_NORM = 1e-6`` (L2 norm in rho-space
    units, i.e. pixel intensities for ``"pixel"``: far below one 8-bit step, 1/255 = 3.9e-3, so only
    images that are zero up to rounding) is left out of ``T`` and ``F``: DeepFool does not run on it,
    it adds 0 to both sums, and it still counts in ``N`` and in the cross-entropy. Every other image
    keeps the paper's ``rho``; a near-black one above the floor has a large ``rho``, so if it is
    misclassified ``exp(d rho)`` can overflow: ``exp_clip`` bounds that term.

    Training step (spec (d) 2): BatchNorm layers run in eval mode during the whole step (the CE
    forward included) and their parameters are left out of the optimizer (they still receive
    gradients, which nothing applies); DeepFool's forwards run the network in eval mode (no
    dropout), the CE forward keeps dropout (a simplification of the official mask sharing).
    Cost: about ``df_steps_train x num_candidates`` double-backprop forward/backward pairs of the
    batch on top of a standard step (the ``K``-replicated batch, ``K = num_candidates - 1``); fp32.
    The paper *fine-tunes* a trained reference model: give ``init_from`` (see
    :class:`RobustClassifier`), with SGD (momentum 0.9, lr 5e-4, weight decay 5e-4), batch 100,
    5 epochs, lr halved at epoch 4 (``configs/model/deep_defense.yaml``).

    Logs ``train/ce``, ``train/deep_defense_reg`` (``lam/N (...)``, as it enters the loss),
    ``train/deep_defense_penalty`` (the same without ``lam``) and its two weighted parts
    ``train/df_reg_correct`` and ``train/df_reg_wrong``, ``train/rho_mean`` (over T and F),
    ``train/rho_correct`` and ``train/rho_wrong`` (over T and F; NaN when the group is empty),
    ``train/frac_not_fooled`` (share of T that DeepFool did not fool within the iterations; NaN if
    T is empty), ``train/n_correct`` and ``train/n_wrong`` (correctly and wrongly classified images,
    blank ones included) and ``train/n_blank`` (blank images, left out of the penalty). With
    ``lam = 0`` (the vanilla fine-tuning baseline) no DeepFool runs and the rho entries are NaN.

    Args:
        network: the classifier (starts with ``Normalize``; inputs in [0, 1]).
        lam: weight of the penalty (dimensionless), finite, >= 0. 15 (official README: the MNIST LeNet
            value; the values for the other models are **unknown**).
        c: slope of the correct-sample term, per unit of rho (dimensionless), finite, > 0. 25 (same
            source).
        d: slope of the wrong-sample term, per unit of rho, finite, > 0. 5 (same source).
        df_steps_train: unrolled DeepFool iterations ``u``, an integer >= 1 (official ``--max-iter`` 5).
        overshoot: eta, dimensionless, finite, >= 0: ``dx = (1 + eta) r_tot`` (0.02; 0 is exact
            DeepFool).
        num_candidates: classes DeepFool considers, the source included: the top classes by
            logit (official 10 = all classes on 10-class data; our default ``min(10, K)``); lower
            it (e.g. 5) for big models, memory grows with it. An integer >= 2.
        norm_eps: ``eps_n``, added elementwise to each Jacobian row before its L2 norm (logit per
            pixel units), finite, >= 0 (official 5e-6 MNIST, 1e-5 CIFAR; ours 1e-5; 0 is exact).
        detach_prev_r: linearize each iteration at ``x + stop_grad(r_tot)`` (AMM's
            ``--no-bp-prev-r``): the same rho, a different gradient (the paths through earlier
            steps are dropped). Default False (official). AMM offers it to save memory; in
            ``benchmarks/step_cost.py`` (SmallCNN, CPU) it saves neither time nor memory, since each
            step's double-backprop graph is kept for its own ``r_j`` anyway.
        exp_clip: if set (finite, > 0), the wrong-sample term is ``min(exp(d rho), exp_clip)`` (AMM
            uses 50). Default ``None``: unclipped, as the official code (``exp(d rho)`` overflows fp32 only
            for ``rho > 88 / d``, a perturbation 17 times the image at d = 5).
        rho_space: ``"pixel"`` (default: rho on the [0, 1] input) or ``"normalized"`` (DeepFool and
            rho on the output of the network's leading ``Normalize``, closer to the paper's
            MatConvNet-preprocessed space; ``c`` and ``d`` then mean something else).
        freeze_batchnorm: BatchNorm in eval mode with its parameters out of the optimizer (official;
            default True).
        adversary, trades_beta: see :class:`RobustClassifier` (the penalty is then on the adversarial
            inputs, or on the clean ones for TRADES' objective; not in the paper).
        num_classes, optimizer, lr_scheduler, init_from, input_transform: see :class:`RobustClassifier`.
    """

    def __init__(
        self,
        network: nn.Module,
        lam: float = 15.0,
        c: float = 25.0,
        d: float = 5.0,
        df_steps_train: int = 5,
        overshoot: float = 0.02,
        num_candidates: int = 10,
        norm_eps: float = 1e-5,
        detach_prev_r: bool = False,
        exp_clip: float | None = None,
        rho_space: Literal["pixel", "normalized"] = "pixel",
        freeze_batchnorm: bool = True,
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
        self.lam = check_real("lam", lam, 0)
        self.c = check_real("c", c, 0, low_open=True)
        self.d = check_real("d", d, 0, low_open=True)
        self.df_steps_train = check_int("df_steps_train", df_steps_train, 1)
        self.overshoot = check_real("overshoot", overshoot, 0)
        self.num_candidates = check_int("num_candidates", num_candidates, 2)  # the source and one other
        self.norm_eps = check_real("norm_eps", norm_eps, 0)
        self.detach_prev_r = bool(detach_prev_r)
        self.exp_clip = check_optional_real("exp_clip", exp_clip, 0, low_open=True)
        self.rho_space = check_choice("rho_space", rho_space, RHO_SPACES)
        self.freeze_batchnorm = bool(freeze_batchnorm)

    # --------------------------------------------------------------------------- the penalty
    def image_norms(self, x: Tensor) -> Tensor:
        """``||x_i||_2`` of each image in the rho space (pixels, or the leading ``Normalize``'s output)."""
        x = x.detach()
        normalize = leading_normalize(self.network) if self.rho_space == "normalized" else None
        with torch.no_grad():
            return (x if normalize is None else normalize(x)).flatten(1).norm(dim=1)

    def unrolled_rho(
        self, x: Tensor, y: Tensor, correct: Tensor, wrong: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(rho over T, rho over F, not fooled over T)`` from the differentiable DeepFool.

        ``correct`` and ``wrong`` are the masks of T and F (``wrong`` defaults to ``~correct``). The
        network runs in eval mode (modes restored afterwards); ``x`` is treated as a constant.
        """
        wrong = ~correct if wrong is None else wrong
        x = x.detach()
        common = dict(
            space=self.rho_space, overshoot=self.overshoot, max_iter=self.df_steps_train,
            norm_eps=self.norm_eps, differentiable=True, detach_prev_r=self.detach_prev_r,
        )  # fmt: skip
        empty = x.new_zeros(0)
        rho_t, rho_f, not_fooled = empty, empty, empty.bool()
        others = min(self.num_candidates, self.num_classes) - 1
        with eval_mode(self.network):
            if correct.any():
                rho_t, result = deepfool_rho(
                    self.network, x[correct], source=y[correct], num_candidates=others, **common
                )
                not_fooled = ~result.fooled
            if wrong.any():
                rho_f, _ = deepfool_rho(self.network, x[wrong], targeted_to=y[wrong], **common)
        return rho_t, rho_f, not_fooled

    def penalty_terms(self, x: Tensor, y: Tensor, logits: Tensor) -> dict[str, Tensor]:
        """``deep_defense_reg`` (differentiable, weighted by ``lam``) and the detached diagnostics."""
        correct = logits.detach().argmax(dim=1) == y
        blank = self.image_norms(x) < BLANK_NORM  # no relative size: out of T and F (class docstring)
        nan = logits.new_tensor(float("nan"))
        sizes = {
            "n_correct": correct.sum().float(),
            "n_wrong": (~correct).sum().float(),
            "n_blank": blank.sum().float(),
        }
        if self.lam == 0:
            zero = logits.new_zeros(())
            diagnostics = {"rho_mean": nan, "rho_correct": nan, "rho_wrong": nan, "frac_not_fooled": nan}
            return {
                "deep_defense_reg": zero,
                "deep_defense_penalty": zero,
                "df_reg_correct": zero,
                "df_reg_wrong": zero,
                **diagnostics,
                **sizes,
            }
        rho_t, rho_f, not_fooled = self.unrolled_rho(x, y, correct & ~blank, ~correct & ~blank)
        reg_t, reg_f = deep_defense_penalty(rho_t, rho_f, len(y), self.lam, self.c, self.d, self.exp_clip)

        def mean(values: Tensor) -> Tensor:
            return values.detach().float().mean() if values.numel() else nan

        return {
            "deep_defense_reg": reg_t + reg_f,
            "deep_defense_penalty": (reg_t + reg_f).detach() / self.lam,
            "df_reg_correct": reg_t.detach(),
            "df_reg_wrong": reg_f.detach(),
            "rho_mean": mean(torch.cat([rho_t, rho_f])),
            "rho_correct": mean(rho_t),
            "rho_wrong": mean(rho_f),
            "frac_not_fooled": mean(not_fooled),
            **sizes,
        }

    def regularizer(self, x: Tensor, y: Tensor, logits: Tensor) -> dict[str, Tensor]:
        terms = self.penalty_terms(x, y, logits)
        reg = terms.pop("deep_defense_reg")
        self.log_diagnostics(**terms)
        return {"deep_defense_reg": reg}

    def training_forward(self, x: Tensor) -> Tensor:
        """BatchNorm in eval mode for the whole step (CE forward included) when ``freeze_batchnorm``."""
        if self.freeze_batchnorm:
            for module in batchnorm_modules(self.network):
                module.eval()
        return super().training_forward(x)

    # ------------------------------------------------------------------------------ optimizer
    def optimizer_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter except BatchNorm's when ``freeze_batchnorm`` (weight decay then applies to
        all non-BN parameters, as the official code of January 2019)."""
        if not self.freeze_batchnorm:
            return self.parameters()
        frozen = {id(p) for module in batchnorm_modules(self.network) for p in module.parameters()}
        return (p for p in self.parameters() if id(p) not in frozen)
