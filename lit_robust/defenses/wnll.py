"""WNLL output activation: Bao Wang, Alex T. Lin, Wei Zhu, Penghang Yin, Andrea L. Bertozzi, Stanley J. Osher,
"Adversarial Defense via Data Dependent Activation Function and Total Variation Minimization", arXiv
1809.08516 (v3: Inverse Problems & Imaging 2020, doi 10.3934/ipi.2020046); official code
``BaoWangMath/DNN-DataDependentActivation``. Spec: ``shared/papers/wnll_tvm.md``. The network and the
template bank are :mod:`lit_robust.models.wnll_network`, the chunked prediction against the templates
:mod:`lit_robust.models.wnll_head`, the graph solve :mod:`lit_robust.functional.wnll`, the attack-side
helper :class:`lit_robust.attacks.grad_mode.WithGradMode`, the stage schedule
:mod:`lit_robust.defenses.wnll_schedule`. This module keeps the defense: the two stages' losses, the
template hooks and the logging.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchmetrics.classification import MulticlassAccuracy

from lit_robust.attacks.base import Attack
from lit_robust.defenses.base import Batch, RobustClassifier
from lit_robust.defenses.wnll_schedule import Stage, StageSchedule
from lit_robust.functional.wnll import wnll_straight_through
from lit_robust.models.modes import eval_mode
from lit_robust.models.wnll_head import GRAD_MODES, WNLLClassifier, WNLLHead
from lit_robust.models.wnll_network import TemplateBank, WNLLNetwork, as_wnll_network
from lit_robust.validation import check_choice, check_int, check_optional_int

VIEWS = ("surrogate", "exact", "softmax")
LOSS_ROWS = ("all", "misclassified")

__all__ = ["WNLL", "StageSchedule", "TemplateBank", "WNLLClassifier", "WNLLHead", "WNLLNetwork"]


class WNLL(RobustClassifier):
    """Backbone + buffer + linear head, trained in alternating stages, predicting by WNLL interpolation::

        stage A:  L_A = (1/B) Σ_i CE(z(x_i'), y_i),   x_i' = adversary(softmax net, x_i, y_i)  or  x_i
        stage B:  o = z(h) + (U(h) - z(h)).detach(),  L_B = (1/|R|) Σ_{i∈R} CE(o_i, y_i)
        predict:  forward(x) = log clamp(mean over chunks of U(h(t(x))), 1e-12)

    ``U``: the WNLL scores of the queries against templates (:class:`~lit_robust.models.wnll_head.WNLLHead`,
    kept as ``wnll_head``: graph settings, template bank, chunked prediction);
    in stage B, ``stage_b_templates`` drawn afresh every step from the template bank (seeded by
    ``template_seed`` and the global step); at prediction, the bank's ``num_templates`` templates split into
    ``template_chunks`` chunks (validation: the first ``val_template_chunks``), queries in graphs of
    ``query_batch_size`` (transductive). ``R``: all rows, or those the WNLL head misclassifies. Stage B
    freezes backbone and head (eval mode, ``requires_grad=False``: no gradient, decay or momentum step).

    Templates (:class:`~lit_robust.models.wnll_network.TemplateBank`): drawn from the DataModule's
    ``clean_train_set()`` (no augmentation; any other DataModule: ``train_dataloader().dataset``) when a
    Trainer sets the model up. They are not in the checkpoint: ``num_templates`` and ``template_seed``
    are, so the same data re-draws the same templates. Outside a Trainer, :meth:`load_templates` (a
    DataModule or a Dataset) or :meth:`set_templates` (tensors) before predicting.

    Logs ``train/ce`` (``train/adv_ce``) in stage A; ``train/wnll_ce``, ``train/wnll_acc``,
    ``train/wnll_isolated`` (share of queries with no path to a template) in stage B; ``train/stage``
    (0 = A, 1 = B); ``val/acc`` (WNLL), ``val/acc_softmax`` (linear head), ``val/wnll_isolated``; same under
    ``test/``.

    Args:
        network: a :class:`~lit_robust.models.wnll_network.WNLLNetwork`, or a backbone, wrapped as
            ``WNLLNetwork(network, feature_dim, num_classes)`` (one buffer block; the feature width
            inferred from the backbone's last ``nn.Linear`` unless ``feature_dim`` is given): every
            ``configs/network`` file composes.
        stage_a_epochs, stage_b_epochs, cycles, stage_b_lr: the schedule (:class:`StageSchedule`); epochs
            are integers >= 0, not both 0; ``cycles`` >= 1; ``stage_b_lr`` finite > 0 (official 0.05) or
            ``None``.
        stage_b_templates: templates per stage-B graph, >= 1 (official 2000; the batch is the queries).
        loss_rows: ``"all"`` or ``"misclassified"``.
        k, k_sigma, weight, mu, ridge, solve_dtype, template_chunks, query_batch_size: the graph and the
            chunked prediction (:class:`WNLLHead`; spec: ``k`` 15, ``k_sigma`` 8, ``ridge`` 1e-6; official
            ``query_batch_size`` 1000).
        num_templates: inference templates, >= 1 (official 50 000; capped at the train set's size).
        val_template_chunks: in [1, template_chunks] or ``None`` (all).
        template_seed: an integer >= 0, seeding the template choice and the stage-B draws.
        grad_mode: the gradient of ``forward``, ``"surrogate"`` or ``"exact"`` (:class:`WNLLClassifier`).
        adversary: optional stage-A training attack, on the softmax network (PGD-AT: the paper's robust
            setting, ``PGD(0.031, steps=10, step_size=0.007)`` on CIFAR-10).
        input_transform: see :class:`RobustClassifier`; applied to the queries (prediction, every gradient
            view, training inputs), never to templates. TVM in front: BPDA is built into
            ``TotalVariationMinimization``; attack with EOT (``WithGradMode(..., eot_samples=20)``).
        num_classes, optimizer, lr_scheduler, init_from: see :class:`RobustClassifier` (``init_from``: a
            WNLL checkpoint or a :class:`WNLLNetwork` state dict).
        feature_dim: the backbone's feature width when ``network`` is a backbone, >= 1; needed for a
            backbone without an ``nn.Linear`` to infer it from; ``None``: inferred. With a
            :class:`WNLLNetwork` it must agree with the network's (or be ``None``).
    """

    def __init__(
        self,
        network: nn.Module,
        stage_a_epochs: int = 1,
        stage_b_epochs: int = 1,
        cycles: int = 1,
        stage_b_templates: int = 2000,
        stage_b_lr: float | None = None,
        loss_rows: Literal["all", "misclassified"] = "all",
        k: int = 15,
        k_sigma: int = 8,
        weight: Literal["paper", "code"] = "paper",
        mu: Literal["paper", "code"] | float = "paper",
        ridge: float = 1e-6,
        solve_dtype: Literal["float32", "float64"] = "float32",
        num_templates: int = 50000,
        template_chunks: int = 10,
        val_template_chunks: int | None = 1,
        query_batch_size: int = 1000,
        template_seed: int = 0,
        grad_mode: Literal["surrogate", "exact"] = "surrogate",
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        init_from: str | None = None,
        adversary: Attack | None = None,
        input_transform: nn.Module | None = None,
        feature_dim: int | None = None,
    ):
        network = as_wnll_network(network, feature_dim, num_classes)
        super().__init__(
            network,
            num_classes,
            optimizer,
            lr_scheduler,
            init_from,
            adversary,
            input_transform=input_transform,
        )
        self.schedule = StageSchedule(stage_a_epochs, stage_b_epochs, cycles, stage_b_lr)
        self.stage_b_templates = check_int("stage_b_templates", stage_b_templates, 1)
        self.loss_rows = check_choice("loss_rows", loss_rows, LOSS_ROWS)
        self.wnll_head = WNLLHead(
            num_classes, k, k_sigma, weight, mu, ridge, solve_dtype, template_chunks, query_batch_size
        )  # not a module: holds no weights, its templates are re-drawn from the seed
        self.num_templates = check_int("num_templates", num_templates, 1)
        self.val_template_chunks = check_optional_int(
            "val_template_chunks", val_template_chunks, 1, self.wnll_head.template_chunks
        )
        self.template_seed = check_int("template_seed", template_seed, 0)
        self.grad_mode = check_choice("grad_mode", grad_mode, GRAD_MODES)
        self.stage: Stage = self.schedule.stage_at(0)
        self.val_acc_softmax = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc_softmax = MulticlassAccuracy(num_classes, average="micro")

    # ------------------------------------------------------------------------------- schedule
    def set_stage(self, stage: Stage) -> None:
        """Freeze what ``stage`` does not train: stage ``"wnll"`` leaves only the buffer block trainable."""
        self.stage = stage
        for module in (self.network.backbone, self.network.head):
            module.requires_grad_(stage == "softmax")
        self.network.buffer.requires_grad_(True)

    def on_train_epoch_start(self) -> None:
        if self.trainer.optimizers:
            self.schedule.set_learning_rates(self.current_epoch, self.trainer.optimizers[0])
        self.set_stage(self.schedule.stage_at(self.current_epoch))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        super().on_train_batch_end(outputs, batch, batch_idx)
        self.wnll_head.invalidate()  # the weights changed

    def on_train_end(self) -> None:
        self.requires_grad_(True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The base's checks and random streams, plus the schedule's state (the stage-A rates to restore)."""
        super().on_save_checkpoint(checkpoint)
        checkpoint["wnll_schedule"] = self.schedule.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.schedule.load_state_dict(checkpoint.get("wnll_schedule", {}))

    # ------------------------------------------------------------------------------ templates
    @property
    def templates(self) -> TemplateBank | None:
        """The template bank predicted against (CPU; not in the state dict: re-drawn from the seed)."""
        return self.wnll_head.templates

    def set_templates(self, images: Tensor, labels: Tensor) -> None:
        """Use ``images`` (``(N, C, H, W)`` in [0, 1]) with ``labels`` as the template bank."""
        self.wnll_head.use_templates(TemplateBank.from_tensors(images, labels, self.template_seed))

    def load_templates(self, source: Any) -> None:
        """Draw the template bank (``num_templates``, ``template_seed``) from a ``Dataset``, or from a
        DataModule's ``clean_train_set()`` (any other DataModule: ``train_dataloader().dataset``)."""
        if not isinstance(source, Dataset):
            clean = getattr(source, "clean_train_set", None)
            source = clean() if callable(clean) else source.train_dataloader().dataset
        self.wnll_head.use_templates(TemplateBank(source, self.num_templates, self.template_seed))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        datamodule = getattr(self._trainer, "datamodule", None)  # None outside a Trainer
        if datamodule is not None and self.templates is None:
            self.load_templates(datamodule)

    def use_template_chunks(self, chunks: int | None) -> None:
        """Predict with the first ``chunks`` template chunks (``None``: all), from fresh template features."""
        self.wnll_head.active_chunks = chunks
        self.wnll_head.refresh(self.network, self.device)

    def on_validation_epoch_start(self) -> None:
        self.use_template_chunks(self.val_template_chunks)

    def on_validation_epoch_end(self) -> None:
        self.wnll_head.active_chunks = None

    def on_test_epoch_start(self) -> None:
        self.use_template_chunks(None)

    def on_predict_epoch_start(self) -> None:
        self.use_template_chunks(None)

    # ------------------------------------------------------------------------------ prediction
    def forward(self, x: Tensor) -> Tensor:
        """WNLL log-scores of images ``x`` in [0, 1], gradient ``grad_mode``: predicted and attacked."""
        return self.wnll_head.log_scores(self.network, x, self.input_transform, self.grad_mode)

    def softmax_view(self) -> nn.Module:
        """The linear-head classifier ``z(t(x))``: stage A's model and the transfer source."""
        if self.input_transform is None:
            return self.network
        return nn.Sequential(self.input_transform, self.network)

    def gradient_view(self, mode: Literal["surrogate", "exact", "softmax"]) -> nn.Module:
        """The model an attack differentiates (:class:`~lit_robust.attacks.grad_mode.WithGradMode`):
        :class:`WNLLClassifier` for ``"surrogate"``/``"exact"``, :meth:`softmax_view` for ``"softmax"``."""
        mode = check_choice("grad mode", mode, VIEWS)
        if mode == "softmax":
            return self.softmax_view()
        return WNLLClassifier(self.wnll_head, self.network, self.input_transform, mode)

    # -------------------------------------------------------------------------------- training
    def compute_loss(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Stage A's (adversarial) cross-entropy of the softmax network, or :meth:`wnll_stage_loss`."""
        if self.stage == "wnll":
            return self.wnll_stage_loss(x, y)
        softmax = self.softmax_view()
        if self.adversary is None:
            ce = F.cross_entropy(softmax(x), y)
            return {"loss": ce, "ce": ce, "stage": x.new_tensor(0.0)}
        adv_ce = F.cross_entropy(softmax(self.adversary(softmax, x, y).detach()), y)
        return {"loss": adv_ce, "adv_ce": adv_ce, "stage": x.new_tensor(0.0)}

    def wnll_stage_loss(
        self, x: Tensor, y: Tensor, templates: tuple[Tensor, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Stage B: straight-through WNLL cross-entropy of the queries ``t(x)`` (class docstring); the
        templates are ``templates`` or this step's draw from the bank."""
        self.network.backbone.eval()
        self.network.head.eval()
        if templates is None:
            templates = self.wnll_head.require_templates().draw(self.stage_b_templates, self.global_step)
        template_x, template_y = (tensor.to(self.device) for tensor in templates)
        with torch.no_grad():
            template_h = self.network.features(template_x)
        h = self.network.features(self.transform_inputs(x))
        with torch.no_grad():
            result = self.wnll_head.scores(template_h, template_y, h.detach())
        z = self.network.head(h)
        out = wnll_straight_through(result.scores, z)
        correct = result.scores.argmax(dim=1) == y
        rows = torch.ones_like(correct) if self.loss_rows == "all" else ~correct
        loss = F.cross_entropy(out[rows], y[rows]) if rows.any() else 0.0 * z.sum()
        return {
            "loss": loss,
            "wnll_ce": loss,
            "wnll_acc": correct.float().mean(),
            "wnll_isolated": result.isolated.float().mean(),
            "stage": x.new_tensor(1.0),
        }

    # ------------------------------------------------------------------------------ evaluation
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)
        self.log_softmax_head(batch, "val", self.val_acc_softmax)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        super().test_step(batch, batch_idx)
        self.log_softmax_head(batch, "test", self.test_acc_softmax)

    def log_softmax_head(self, batch: Batch, stage: str, accuracy: MulticlassAccuracy) -> None:
        """Log ``<stage>/acc_softmax`` (the linear head's accuracy) and ``<stage>/wnll_isolated`` (the
        share of this batch's queries isolated from the templates in some chunk, from the last forward)."""
        x, y = batch
        softmax = self.softmax_view()
        with eval_mode(softmax):
            accuracy.update(softmax(x), y)
        self.log(f"{stage}/acc_softmax", accuracy, batch_size=len(x))
        isolated = (self.wnll_head.last_isolated > 0).float().mean()
        self.log(f"{stage}/wnll_isolated", isolated, batch_size=len(x))
