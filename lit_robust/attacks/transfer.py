"""Transfer attacks: adversarial examples crafted on a source model, evaluated on the target.

Layering: attacks sit below defenses (every defense may hold an attack), so this module never imports
``lit_robust.defenses``, not even lazily. A ``source_checkpoint`` becomes a model through the class the
checkpoint itself names: ``lit-robust`` (LightningCLI) records it as ``hyper_parameters["_class_path"]``,
and that class's own ``load_from_checkpoint`` rebuilds it (for a ``RobustClassifier``: tensors and plain
data only). The class must already be imported, because a file never decides which code is imported
(Lightning refuses it too); ``lit-robust`` imports every defense, and in Python importing the defense you
trained (``from lit_robust.defenses import StandardTraining``) is enough.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lightning as L
from torch import Tensor, nn

from lit_robust.attacks.base import Attack
from lit_robust.loading import load_file


def load_source_checkpoint(path: str | Path) -> L.LightningModule:
    """The LightningModule a ``lit-robust`` checkpoint holds, on the CPU.

    The file is read twice: once by :func:`lit_robust.loading.load_file` (tensors and plain data only,
    clear errors), to find the class it names, and once by that class's ``load_from_checkpoint``
    (``weights_only=True``), which rebuilds it from its saved configuration.

    Raises:
        FileNotFoundError: no file at ``path``.
        UnsafeFileError: the file needs more than tensors and plain data, or is not a torch file.
        ValueError: the checkpoint names no model class (not written by ``lit-robust``), or a class that
            is not imported.
    """
    checkpoint = load_file(path, "source_checkpoint")
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    class_path = hparams.get("_class_path") if isinstance(hparams, dict) else None
    if not isinstance(class_path, str):
        raise ValueError(
            f"source_checkpoint {str(path)!r} does not name its model class (hyper_parameters"
            "['_class_path'], which lit-robust checkpoints record); build that model in Python and pass it "
            "as source="
        )
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(sys.modules.get(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
        raise ValueError(
            f"source_checkpoint {str(path)!r} holds a {class_path}, which is not an imported "
            f"LightningModule: import it first (`from {module_name} import {class_name}`; lit-robust "
            "imports every defense). Transfer never imports a module that a file names"
        )
    return cls.load_from_checkpoint(path, map_location="cpu", weights_only=True)


class Transfer(Attack):
    """``x_adv = attack(source, x, y)``, whatever the attacked (target) model.

    A gradient-masking check (evaluation.md §6.1.3): examples crafted on an undefended or a
    PGD-trained model of the same architecture must not fool a defense *more* than white-box
    attacks on the defense itself. The threat model, budget and objective are the inner attack's.

    Args:
        attack: crafts the examples on ``source``.
        source: the source model (inputs in [0, 1]); or give ``source_checkpoint``.
        source_checkpoint: a checkpoint written by ``lit-robust`` (any defense), loaded on first use by
            :func:`load_source_checkpoint` (its defense class must be imported by then: module docstring).
        source_name: names the metric, ``transfer_<source_name>_<threat model>_<eps>``.
        name: metric name; default as above.
    """

    def __init__(
        self,
        attack: Attack,
        source: nn.Module | None = None,
        source_checkpoint: str | None = None,
        source_name: str = "source",
        name: str | None = None,
    ):
        if not isinstance(attack, Attack):
            raise TypeError(f"attack must be a lit_robust Attack, got {type(attack).__name__}")
        if (source is None) == (source_checkpoint is None):
            raise ValueError("give exactly one of source (a model) and source_checkpoint (a path)")
        super().__init__(
            attack.eps, name, threat_model=attack.threat_model, short_name=f"transfer_{source_name}",
            objective=attack.objective,
        )  # fmt: skip
        self.attack = attack
        self.source = source
        self.source_checkpoint = source_checkpoint
        self.source_name = source_name

    def _source_model(self, device) -> nn.Module:
        if self.source is None:
            self.source = load_source_checkpoint(self.source_checkpoint)
        return self.source.to(device)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self.attack(self._source_model(x.device), x, y)  # the inner call restores source
