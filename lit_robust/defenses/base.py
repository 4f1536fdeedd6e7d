"""``RobustClassifier``: the LightningModule every defense subclasses.

It owns the forward pass, the training / validation / test / predict steps, torchmetrics accuracy
and the optimizer wiring. A defense overrides a small surface:

* :meth:`RobustClassifier.regularizer` — extra loss terms added to the cross-entropy (most
  regularization defenses);
* :meth:`RobustClassifier.compute_loss` — when the base loss itself changes (adversarial training,
  TRADES).

Every entry of the returned dict is logged as ``train/<key>``; ``"loss"`` is what is optimized.
Evaluation attacks live on callbacks (``RobustnessEvaluation``), not here.

Any defense can fine-tune a trained network: ``init_from`` (a checkpoint of any lit_robust defense,
or a state-dict file) loads the network weights before training starts (:func:`load_network_state`).
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from lit_robust.models.modes import eval_mode

Batch = tuple[Tensor, Tensor]


class RobustClassifier(L.LightningModule):
    """Image classifier ``f(x) = network(x)`` with inputs in [0, 1], trained on ``compute_loss``.

    The base class alone is standard training: ``loss = CE(f(x), y) + sum(regularizer(x, y, f(x)))``.

    Args:
        network: the classifier; it must start with its own ``Normalize`` (see ``lit_robust.models``)
            and return ``num_classes`` logits.
        num_classes: number of classes; under ``lit-robust`` it is linked from the data.
        optimizer: builds the optimizer from the parameters (in YAML: ``class_path`` + ``init_args``).
        lr_scheduler: optional; builds a scheduler from the optimizer, stepped every epoch.
        init_from: optional path of a checkpoint of any lit_robust defense (``.ckpt``) or of a
            state-dict file (``torch.save(network.state_dict())``, or of a module holding the
            network as ``network``): its network weights are loaded when training (or evaluation)
            starts, unless a checkpoint of this model is restored; only the network's weights are
            taken (no optimizer state, no hyperparameters). From the CLI:
            ``--model.init_args.init_from path``. Defenses with their own ``__init__`` pass it on.

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
    ):
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self._save_restorable_hyperparameters()
        self.network = network
        self.num_classes = num_classes
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.init_from = None if init_from is None else str(init_from)
        self._weights_restored = False  # set once init_from is loaded or a checkpoint restored
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
        """Logits of images ``x`` in [0, 1], shape ``(B, num_classes)``."""
        return self.network(x)

    # ------------------------------------------------------------------------- the defense's part
    def regularizer(self, x: Tensor, y: Tensor, logits: Tensor) -> dict[str, Tensor]:
        """Extra loss terms, each added to the loss as is (weights included). None by default."""
        return {}

    def compute_loss(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Training loss terms; ``"loss"`` is optimized, every entry is logged as ``train/<key>``."""
        logits = self(x)
        terms = {"ce": F.cross_entropy(logits, y), **self.regularizer(x, y, logits)}
        return {"loss": sum(terms.values()), **terms}

    # ------------------------------------------------------------------------------------- steps
    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        x, y = batch
        terms = self.compute_loss(x, y)
        if "loss" not in terms:
            raise KeyError(f"{type(self).__name__}.compute_loss must return a 'loss' entry")
        for key, value in terms.items():
            self.log(f"train/{key}", value.detach(), prog_bar=key == "loss", batch_size=len(x))
        return terms["loss"]

    def _evaluation_step(
        self, batch: Batch, stage: str, accuracy: MulticlassAccuracy, loss: MeanMetric
    ) -> None:
        x, y = batch
        logits = self(x)
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
        then load ``init_from`` (once, and not over a restored checkpoint)."""
        self._check_data(stage)
        if self.init_from and not self._weights_restored:
            self.load_network_weights(self.init_from)

    def load_network_weights(self, path: str | Path) -> None:
        """Load the network weights of ``path`` (see ``init_from``) into ``self.network``."""
        self.network.load_state_dict(load_network_state(path, self.network))
        self._weights_restored = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint's weights win: ``init_from`` is not loaded over them."""
        self._weights_restored = True

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
        with torch.no_grad(), eval_mode(self.network):
            out = self.network(probe)
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

    Accepted files: a Lightning checkpoint of any lit_robust defense (its ``state_dict`` entries under
    ``network.``), a ``torch.save`` of a defense's or of the network's ``state_dict()``. Everything that
    is not the network (metrics, optimizer state, hyperparameters) is ignored. Raises
    ``FileNotFoundError`` when the file is missing and ``ValueError`` naming the missing, unexpected or
    mis-shaped keys when it does not fit. Loading unpickles the file: only load files you trust.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"init_from: no file at {str(path)!r} (absolute: {path.resolve()}); give a checkpoint of a "
            "lit_robust defense (e.g. runs/<name>/version_0/checkpoints/last.ckpt) or a state-dict file"
        )
    stored = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(stored, Mapping) and isinstance(stored.get("state_dict"), Mapping):
        stored = stored["state_dict"]
    if not isinstance(stored, Mapping) or not all(isinstance(v, Tensor) for v in stored.values()):
        raise ValueError(f"init_from {str(path)!r} holds neither a Lightning checkpoint nor a state dict")
    prefix = "network."
    if any(key.startswith(prefix) for key in stored):
        stored = {key[len(prefix) :]: value for key, value in stored.items() if key.startswith(prefix)}
    expected = network.state_dict()
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    shapes = [
        f"{key}: {tuple(stored[key].shape)} in the file, {tuple(value.shape)} in the network"
        for key, value in expected.items()
        if key in stored and stored[key].shape != value.shape
    ]
    if missing or unexpected or shapes:
        raise ValueError(
            f"init_from {str(path)!r} does not fit the network ({type(network).__name__}): "
            f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}, "
            f"shape mismatches {shapes[:8]}; build the same architecture as the one saved"
        )
    return dict(stored)
