"""``RobustClassifier``: the LightningModule every defense subclasses.

It owns the forward pass, the training / validation / test / predict steps, torchmetrics accuracy
and the optimizer wiring, and the one training step every defense shares (:meth:`compute_loss`):

1. the training inputs: the clean batch, or ``adversary(model, x, y)`` when an ``adversary`` is
   given (to *any* defense: "regularizer on top of adversarial training" is a config);
2. the task loss: cross-entropy at those inputs, or TRADES' clean cross-entropy plus
   ``trades_beta`` times the KL divergence to the adversarial prediction;
3. plus the defense's :meth:`regularizer` terms, each already weighted.

A regularization defense is its :meth:`regularizer` and its arguments. Two small hooks serve the
regularizers that need more: :meth:`regularizer_inputs` (make the input a leaf for an input
gradient, or deform it) and :meth:`training_forward` (a forward that records what the regularizer
reads, e.g. GFA's layer inputs). Diagnostics that are logged but not added to the loss go through
:meth:`log_diagnostics`. Metric names: ``train/loss``; ``train/ce`` (clean) or ``train/adv_ce``
(adversarial inputs), ``train/kl`` (TRADES, unweighted); ``train/<name>_reg`` for each term added
to the loss (weighted) and ``train/<name>_penalty`` for its unweighted value.
Evaluation attacks live on callbacks (``RobustnessEvaluation``), not here.

Any defense can fine-tune a trained network: ``init_from`` (a checkpoint of any lit_robust defense,
or a state-dict file) loads the network weights before training starts (:func:`load_network_state`).

What the base guarantees to every defense (README, "Reliability"):

* every file is loaded with ``weights_only=True`` (:mod:`lit_robust.loading`): ``init_from``,
  ``load_from_checkpoint`` and the Trainer's ``ckpt_path`` (the model installs
  :class:`~lit_robust.defenses.checkpoint_io.SafeCheckpointIO` on its Trainer);
* ``init_from`` is loaded after Lightning restores a checkpoint, and only when none was restored;
* a non-finite training loss stops training with :class:`~lit_robust.finite.NonFiniteError`
  naming the step and the terms; no checkpoint is written from non-finite weights and no accuracy
  is computed from non-finite logits;
* checkpoints carry the random streams (:mod:`lit_robust.rng_state`), restored when ``fit``
  resumes, so a resumed run draws what the uninterrupted one would have drawn.
"""

from __future__ import annotations

import inspect
import pickle
import re
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_robust.attacks.base import Attack, Objective
from lit_robust.defenses.checkpoint_io import SafeCheckpointIO
from lit_robust.finite import (
    NonFiniteError,
    check_finite_outputs,
    check_finite_parameters,
    describe_terms,
    non_finite_terms,
)
from lit_robust.loading import load_file, recorded_progress, refusal
from lit_robust.models.modes import eval_mode
from lit_robust.models.normalize import Normalize
from lit_robust.rng_state import capture_rng_states, restore_rng_states
from lit_robust.validation import check_int, check_optional_real

Batch = tuple[Tensor, Tensor]


class RobustClassifier(L.LightningModule):
    """Image classifier ``f(x) = network(t(x))`` (``t``: the optional ``input_transform``) with inputs in
    [0, 1], trained on :meth:`compute_loss`::

        loss = task(x', y) + sum(regularizer(x_t, y, f(x_t)).values())
        x'   = adversary(f, x, y) if an adversary is given, else x
        task = CE(f(x'), y)                                            (default)
             = CE(f(x), y) + trades_beta * KL(softmax f(x) || softmax f(x'))   (TRADES' objective)

    ``x_t`` is the input the cross-entropy is taken at (``x'`` for the CE objective, the clean ``x``
    for TRADES'), after :meth:`regularizer_inputs`. Without an adversary or a regularizer this is
    standard training.

    Args:
        network: the classifier; it must start with its own ``Normalize`` (see ``lit_robust.models``)
            and return ``num_classes`` logits.
        num_classes: number of classes; under ``lit-robust`` it is linked from the data.
        optimizer: builds the optimizer from the parameters (in YAML: ``class_path`` + ``init_args``).
        lr_scheduler: optional; builds a scheduler from the optimizer, stepped every epoch.
        init_from: optional path of a checkpoint of any lit_robust defense (``.ckpt``) or of a
            state-dict file (``torch.save(network.state_dict())``, or of a module holding the
            network as ``network``): its network weights are loaded when training (or evaluation)
            starts, unless a checkpoint of this model is restored (``--ckpt_path``,
            ``load_from_checkpoint``: then it is not even opened); only the network's weights are
            taken (no optimizer state, no hyperparameters), with ``weights_only=True``. From the CLI:
            ``--model.init_args.init_from path``. Defenses with their own ``__init__`` pass it on.
        adversary: optional training attack, crafted with the model in eval mode (e.g. ``PGD`` for
            PGD-AT, ``FGSM(random_start=True)`` for fast AT); any defense takes one.
        trades_beta: optional weight of TRADES' KL term, finite and >= 0 (dimensionless); needs an
            ``adversary`` that maximizes the KL divergence (``PGD(loss="kl")``). ``None``: the
            cross-entropy objective.
        input_transform: optional module ``t`` in front of the network, images in [0, 1] to images in
            [0, 1]: ``forward(x) = network(t(x))``, so predictions, evaluation and every attack (the
            training ``adversary`` included) go through it, and so does the training loss (every
            :meth:`training_forward` applies it; Deep Defense's unrolled DeepFool, though, runs on the
            network alone, without the transform). Gradients flow through
            ``t`` by autograd: a non-differentiable ``t`` (quantization, JPEG, a solver without
            autograd) is made attackable by wrapping it in ``lit_robust.models.BPDA(t)`` (identity
            backward, Athalye et al. 2018); ``TotalVariationMinimization`` has BPDA built in, and a
            random ``t`` is attacked with EOT (``lit_robust.models.EOT``). A transform without weights
            adds nothing to the checkpoint, so it can be put in front of a trained model at test time.
            From the CLI: ``--model.init_args.input_transform`` with a ``class_path`` (and ``init_args``).

    Checkpoints made by ``lit-robust`` restore with ``Defense.load_from_checkpoint(path)``; for a
    model built in code, pass the live objects again: ``load_from_checkpoint(path, network=...)``.
    """

    def __init__(
        self,
        network: nn.Module,
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        init_from: str | None = None,
        adversary: Attack | None = None,
        trades_beta: float | None = None,
        input_transform: nn.Module | None = None,
    ):
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        num_classes = check_int("num_classes", num_classes, low=2)
        if init_from is not None and not isinstance(init_from, (str, Path)):
            raise TypeError(f"init_from must be a path, got {init_from!r} ({type(init_from).__name__})")
        if adversary is not None and not isinstance(adversary, Attack):
            raise TypeError(f"adversary must be a lit_robust Attack or None, got {type(adversary).__name__}")
        trades_beta = check_optional_real("trades_beta", trades_beta, low=0)
        if input_transform is not None and not isinstance(input_transform, nn.Module):
            raise TypeError(
                f"input_transform must be a torch.nn.Module or None, got {type(input_transform).__name__} "
                "(wrap a function t in lit_robust.models.BPDA(t))"
            )
        if trades_beta is not None and not maximizes_kl(adversary):
            raise ValueError(
                "trades_beta (TRADES' objective) needs an adversary that maximizes the KL divergence, "
                f"PGD(loss='kl'); got {adversary!r}"
            )
        self._save_restorable_hyperparameters()
        self.network = network
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.init_from = None if init_from is None else str(init_from)
        self.adversary = adversary
        self.trades_beta = trades_beta
        self.input_transform = input_transform
        self._diagnostics: dict[str, Tensor] = {}
        self._weights_restored = False  # set once init_from is loaded or a checkpoint restored
        self.checkpoint_progress: dict[str, Any] | None = None  # of the restored checkpoint, if any
        self.init_from_scored = False  # init_from loaded to be scored, not trained from (report: Weights)
        self._checkpoint_restored = False  # Lightning restored a checkpoint (ckpt_path) into this model
        self.train_seconds = 0.0  # wall-clock of the training steps so far (resumed runs continue it)
        self._step_started: float | None = None
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()  # per-sample mean, exact under DDP

    def _save_restorable_hyperparameters(self) -> None:
        """Save the init arguments that ``load_from_checkpoint`` can rebuild.

        Under LightningCLI the hyperparameters are the parsed config (class paths and init args),
        which rebuild everything. In code, live objects (the network, attacks, optimizer callables)
        cannot be rebuilt from a checkpoint, so they are left out and passed again at load time.
        """
        frame = inspect.currentframe().f_back  # RobustClassifier.__init__; Lightning walks up
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is an instance of `nn.Module`.*")
            self.save_hyperparameters(frame=frame)
        if "_instantiator" in self.hparams:
            return
        live = [key for key, value in self.hparams.items() if not _is_plain(value)]
        for key in live:
            del self._hparams[key]
            self._hparams_initial.pop(key, None)

    # ----------------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        """Logits ``network(t(x))`` of images ``x`` in [0, 1], shape ``(B, num_classes)``; ``t`` is the
        ``input_transform`` (the identity when there is none)."""
        return self.network(self.transform_inputs(x))

    def transform_inputs(self, x: Tensor) -> Tensor:
        """``input_transform(x)``, or ``x`` itself when there is no input transform."""
        return x if self.input_transform is None else self.input_transform(x)

    # ------------------------------------------------------------------------- the defense's part
    def regularizer(self, x: Tensor, y: Tensor, logits: Tensor) -> dict[str, Tensor]:
        """The terms added to the loss, each already weighted (``<name>_reg``); none by default.

        ``x`` is the input the task cross-entropy is taken at (after :meth:`regularizer_inputs`) and
        ``logits`` its :meth:`training_forward`. Values to log but not to add go through
        :meth:`log_diagnostics`.
        """
        return {}

    def regularizer_inputs(self, x: Tensor) -> Tensor:
        """The input the task loss and the regularizer see: ``x`` itself by default. A regularizer that
        differentiates with respect to the input returns ``x.detach().requires_grad_(True)`` here."""
        return x

    def training_forward(self, x: Tensor) -> Tensor:
        """The forward whose logits the task loss and the regularizer share: ``self(x)`` by default."""
        return self(x)

    task_loss_name = "ce"  # the task term's metric name (``adv_<name>`` at adversarial inputs)

    def task_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The batch-mean task loss: cross-entropy (a defense whose paper trains on another, e.g.
        GFA's MSE option, overrides it and ``task_loss_name``)."""
        return F.cross_entropy(logits, y)

    def log_diagnostics(self, **values: Tensor) -> None:
        """Log ``train/<name>`` for values that are *not* added to the loss (unweighted penalties,
        accuracies, per-layer statistics); call it from :meth:`regularizer`."""
        self._diagnostics.update({name: value.detach() for name, value in values.items()})

    def compute_loss(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """The training step of every defense (class docstring): ``"loss"`` is optimized, every entry
        is logged as ``train/<key>``."""
        self._diagnostics = {}
        x_adv = None if self.adversary is None else self.adversary(self, x, y)  # detached by Attack
        trades = self.trades_beta is not None
        at_clean = x_adv is None or trades  # where the cross-entropy is taken
        x_task = self.regularizer_inputs(x if at_clean else x_adv)
        logits = self.training_forward(x_task)
        loss = self.task_loss(logits, y)
        task = {self.task_loss_name if at_clean else f"adv_{self.task_loss_name}": loss}
        if trades:
            task["kl"] = F.kl_div(
                F.log_softmax(self(x_adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean"
            )
            loss = loss + self.trades_beta * task["kl"]
        terms = self.regularizer(x_task, y, logits)
        for term in terms.values():
            loss = loss + term
        return {"loss": loss, **task, **terms, **self._diagnostics}

    # ------------------------------------------------------------------------------------- steps
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch
        terms = self.compute_loss(x, y)
        if "loss" not in terms:
            raise KeyError(f"{type(self).__name__}.compute_loss must return a 'loss' entry")
        self.check_finite_loss(terms, batch_idx)
        for key, value in terms.items():
            self.log(f"train/{key}", value.detach(), prog_bar=key == "loss", batch_size=len(x))
        return terms["loss"]

    def check_finite_loss(self, terms: Mapping[str, Tensor], batch_idx: int) -> None:
        """Stop training when the optimized ``loss`` is NaN or infinite, before it reaches the weights.

        Only ``loss`` decides (a diagnostic may be NaN by design, e.g. an average over an empty
        group); the message names every non-finite term and gives every term's value.

        Under DDP the decision is shared (one small all-reduce per step), so every process stops at
        the same step instead of waiting for the one that raised. Costs one device sync per step.

        Raises:
            NonFiniteError: naming the epoch, the step, the non-finite terms and every term's value.
        """
        diverged = not bool(torch.isfinite(terms["loss"].detach()))  # the one sync of the step
        if self._trainer is not None and self.trainer.world_size > 1:
            diverged = self.trainer.strategy.reduce_boolean_decision(diverged, all=False)
        if diverged:
            bad = non_finite_terms(terms)  # only now: one sync per term, for the message
            where = ", ".join(bad) if bad else "the loss on another process"
            raise NonFiniteError(
                f"{type(self).__name__}: the training loss is not finite at epoch {self.current_epoch}, "
                f"step {self.global_step} (batch {batch_idx}): {where} ({describe_terms(terms)}). "
                "Training stopped before the weights were updated; no checkpoint or report is written "
                "from this step. Lower the regularizer's weight or the learning rate."
            )

    def _evaluation_step(
        self, batch: Batch, stage: str, accuracy: MulticlassAccuracy, loss: MeanMetric
    ) -> None:
        x, y = batch
        logits = check_finite_outputs(self(x), f"{type(self).__name__} {stage} step")
        accuracy.update(logits, y)
        loss.update(F.cross_entropy(logits, y, reduction="none"))
        self.log(f"{stage}/loss", loss, batch_size=len(x))
        self.log(f"{stage}/acc", accuracy, prog_bar=True, batch_size=len(x))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, "val", self.val_acc, self.val_loss)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluation_step(batch, "test", self.test_acc, self.test_loss)

    def predict_step(self, batch: Batch | Tensor, batch_idx: int) -> Tensor:
        """Predicted class of each image."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).argmax(dim=1)

    # ------------------------------------------------------------------------------ setup checks
    def setup(self, stage: str) -> None:
        """Check, before any work, that the network and the data agree on the number of classes;
        make the Trainer load checkpoints safely
        (:class:`~lit_robust.defenses.checkpoint_io.SafeCheckpointIO`).

        ``init_from`` is not loaded here: Lightning calls ``setup`` *before* it restores
        ``ckpt_path``, and a restored checkpoint must win without ``init_from`` ever being opened
        (it may name a file the user never chose). It is loaded at the start of the stage instead.
        """
        self._check_data(stage)
        strategy = self._trainer.strategy if self._trainer is not None else None
        if strategy is not None and type(strategy.checkpoint_io) is TorchCheckpointIO:  # Lightning's default
            strategy.checkpoint_io = SafeCheckpointIO()

    def on_fit_start(self) -> None:
        self._load_init_from()

    def on_validation_start(self) -> None:
        self._load_init_from()

    def on_test_start(self) -> None:
        self._load_init_from()

    def on_predict_start(self) -> None:
        self._load_init_from()

    def _load_init_from(self) -> None:
        """Load ``init_from`` once, after any checkpoint restore, and never over restored weights.
        Scored rather than trained (test, validate, predict), an exported ``.safetensors`` network
        reports the training progress recorded with it, as its checkpoint would have."""
        scoring = self._trainer is not None and self.trainer.state.fn != "fit"
        if self.init_from and not self._weights_restored:
            self.load_network_weights(self.init_from)
            if scoring:
                self.checkpoint_progress = recorded_progress(self.init_from)
                self.init_from_scored = True
        elif self.init_from and scoring and self._checkpoint_restored:  # e.g. a resumed fit's config.yaml
            warnings.warn(
                f"init_from {self.init_from!r} is not loaded: a checkpoint was restored by ckpt_path (given "
                "on the command line, or as 'ckpt_path:' in a --config file such as a resumed fit's "
                "config.yaml), and its weights are scored. Pass --ckpt_path=null to score init_from.",
                stacklevel=2,
            )

    def load_network_weights(self, path: str | Path) -> None:
        """Load the network weights of ``path`` (see ``init_from``) into ``self.network``."""
        self.network.load_state_dict(load_network_state(path, self.network))
        self._weights_restored = True

    # ------------------------------------------------------------------------------ training cost
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Add the step's wall-clock (forward, attack, backward and optimizer step; seconds) to
        ``train_seconds``: the training cost the report and the leaderboard show."""
        if self._step_started is not None:
            self.train_seconds += time.perf_counter() - self._step_started
            self._step_started = None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse to write non-finite weights; store the random streams for an exact resume and how
        far training had got (``training_progress``: the report says whether training finished, and
        ``train_seconds``, the wall-clock of the training steps, what it cost)."""
        check_finite_parameters(self, f"refusing to write a checkpoint at epoch {self.current_epoch}")
        checkpoint["rng_states"] = capture_rng_states()
        checkpoint["training_progress"] = {
            "epochs_completed": self.current_epoch + 1,
            "max_epochs": self.trainer.max_epochs,
            "global_step": self.global_step,
            "train_seconds": round(self.train_seconds, 3),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint's weights win (``init_from`` is not loaded over them); when ``fit``
        resumes, the random streams continue where the checkpointed run left them."""
        self._weights_restored = self._checkpoint_restored = True
        self.checkpoint_progress = checkpoint.get("training_progress")
        self.train_seconds = float((self.checkpoint_progress or {}).get("train_seconds", 0.0))
        states = checkpoint.get("rng_states")
        if states is not None and self._trainer is not None and self.trainer.state.fn == "fit":
            restore_rng_states(states)

    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | Path,
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> RobustClassifier:
        """Lightning's ``load_from_checkpoint``, with ``weights_only=True`` unless you pass
        ``weights_only=False`` yourself (for a file you trust); ``init_from`` is not loaded.

        A model built in code stored only its plain arguments: pass its live objects again (the
        network, the attacks, ...), e.g. ``AdversarialTraining.load_from_checkpoint(path,
        network=SmallCNN(...), attack=PGD(0.3))``. A model trained through ``lit-robust`` rebuilds
        everything from its saved config.

        Raises:
            UnsafeFileError: the checkpoint needs more than tensors and plain data to load.
            TypeError: a live object was not passed again, naming it.
        """
        if weights_only is None:
            weights_only = True
        try:
            return super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only=weights_only, **kwargs
            )
        except pickle.UnpicklingError as error:
            raise refusal(checkpoint_path, "checkpoint", error) from None
        except TypeError as error:
            missing = re.findall(r"'(\w+)'", str(error)) if "required" in str(error) else []
            if not missing:
                raise
            passed = ", ".join(f"{name}=..." for name in missing)
            raise TypeError(
                f"{cls.__name__}.load_from_checkpoint({str(checkpoint_path)!r}) needs {missing}: objects "
                f"built in code (networks, attacks) are not stored in a checkpoint, pass them again: "
                f"{cls.__name__}.load_from_checkpoint(path, {passed})"
            ) from None

    def _check_data(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        data_classes = getattr(datamodule, "num_classes", None)
        if data_classes is not None and data_classes != self.num_classes:
            raise ValueError(
                f"model num_classes={self.num_classes} disagrees with the data's "
                f"num_classes={data_classes} ({type(datamodule).__name__})"
            )
        input_shape = getattr(datamodule, "input_shape", None)
        if input_shape is not None:
            self.check_network_outputs(tuple(input_shape))

    def check_network_outputs(self, input_shape: tuple[int, ...]) -> None:
        """Raise a clear error when ``network`` does not return ``num_classes`` logits."""
        probe = torch.zeros((2, *input_shape), device=self.device)
        try:
            with torch.no_grad(), eval_mode(self.network):
                out = self.network(probe)
        except RuntimeError as error:  # a network of the user's that does not name the problem itself
            raise ValueError(
                f"{type(self.network).__name__} cannot take the data's images of shape {tuple(input_shape)}: "
                f"{str(error).splitlines()[0]}"
            ) from error
        if out.dim() != 2 or out.shape[1] != self.num_classes:
            raise ValueError(
                f"network returns logits of shape {tuple(out.shape)} for inputs {tuple(probe.shape)}, "
                f"but num_classes={self.num_classes}: set the network's num_classes to match the data"
            )

    # ------------------------------------------------------------------------------- optimizers
    def optimizer_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters handed to the optimizer (all of them; a defense may leave some out)."""
        return self.parameters()

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self.optimizer_parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "epoch", "monitor": "val/acc"},
        }


def maximizes_kl(attack: Attack | None) -> bool:
    """Whether ``attack`` maximizes the KL divergence from the clean prediction (TRADES' inner step)."""
    return attack is not None and attack.objective is Objective.KL


def _is_plain(value: Any) -> bool:
    """Whether a hyperparameter is plain data that a checkpoint can store and restore."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_plain(item) for item in value)
    if isinstance(value, dict):
        return all(_is_plain(item) for item in value.values())
    return False


def load_network_state(path: str | Path, network: nn.Module) -> dict[str, Tensor]:
    """The state dict of ``network`` stored in ``path``, checked against ``network``'s own keys and shapes.

    Accepted files (``.ckpt``, ``.pt``, ``.pth`` or ``.safetensors``): a Lightning checkpoint of any
    lit_robust defense (its ``state_dict`` entries under ``network.``), a defense's or the network's own
    ``state_dict()``, or a torchvision ``.pth`` for a :class:`~lit_robust.models.TorchvisionModel`
    (:func:`key_layouts`); the network's ``Normalize`` statistics may be absent (its constructor's are
    kept). Everything that is not the network (metrics, optimizer state, hyperparameters) is ignored.
    Raises ``FileNotFoundError`` when the file is missing and ``ValueError`` naming the missing,
    unexpected or mis-shaped keys when it does not fit. The file is loaded with ``weights_only=True``
    (:func:`lit_robust.loading.load_file`): one that needs code to load raises ``UnsafeFileError``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"init_from: no file at {str(path)!r} (absolute: {path.resolve()}); give a checkpoint of a "
            "lit_robust defense (e.g. runs/<name>/version_0/checkpoints/last.ckpt) or a state-dict file"
        )
    stored = load_file(path, "init_from")
    if isinstance(stored, Mapping) and isinstance(stored.get("state_dict"), Mapping):
        stored = stored["state_dict"]
    if not isinstance(stored, Mapping) or not all(isinstance(v, Tensor) for v in stored.values()):
        raise ValueError(f"init_from {str(path)!r} holds neither a Lightning checkpoint nor a state dict")
    expected = network.state_dict()
    optional = normalize_buffers(network)
    candidates = list(key_layouts(stored, network))
    for candidate in candidates:
        if fits(candidate, expected, optional):
            return {**{key: expected[key] for key in optional - set(candidate)}, **candidate}
    prefixed = any(key.startswith("network.") for key in stored)
    closest = candidates[1] if prefixed else candidates[0]  # the layout the message compares with
    missing = sorted(set(expected) - set(closest))
    unexpected = sorted(set(closest) - set(expected))
    shapes = [
        f"{key}: {tuple(closest[key].shape)} in the file, {tuple(value.shape)} in the network"
        for key, value in expected.items()
        if key in closest and closest[key].shape != value.shape
    ]
    raise ValueError(
        f"init_from {str(path)!r} does not fit the network ({type(network).__name__}): "
        f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
        f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}, "
        f"shape mismatches {shapes[:8]}; build the same architecture as the one saved"
    )


def key_layouts(stored: Mapping[str, Tensor], network: nn.Module) -> Iterator[dict[str, Tensor]]:
    """The ways a weights file's keys may name ``network``'s, most literal first: as they are (the
    network's own ``state_dict()``); without a leading ``network.`` (a defense's checkpoint or
    ``state_dict()``); under one of the network's children (a torchvision ``.pth`` for the torchvision
    model that :class:`~lit_robust.models.TorchvisionModel` wraps as ``network``)."""
    yield dict(stored)
    prefix = "network."
    if any(key.startswith(prefix) for key in stored):
        yield {key[len(prefix) :]: value for key, value in stored.items() if key.startswith(prefix)}
    for name, _ in network.named_children():
        yield {f"{name}.{key}": value for key, value in stored.items()}


def normalize_buffers(network: nn.Module) -> set[str]:
    """The keys of ``network``'s :class:`Normalize` statistics: set by its constructor (from the data),
    so a file made elsewhere (a torchvision ``.pth``) need not hold them."""
    return {
        f"{name}.{buffer}" if name else buffer
        for name, module in network.named_modules()
        if isinstance(module, Normalize)
        for buffer, _ in module.named_buffers(recurse=False)
    }


def fits(candidate: Mapping[str, Tensor], expected: Mapping[str, Tensor], optional: set[str]) -> bool:
    """Every key of ``candidate`` is the network's, with its shape; only ``optional`` keys may be absent."""
    keys = set(candidate)
    return (
        keys <= set(expected)
        and set(expected) - keys <= optional
        and all(candidate[key].shape == expected[key].shape for key in keys)
    )
