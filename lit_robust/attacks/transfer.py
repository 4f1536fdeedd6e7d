"""Transfer attacks: adversarial examples crafted on a source model, evaluated on the target."""

from __future__ import annotations

from torch import Tensor, nn

from lit_robust.attacks.base import Attack


class Transfer(Attack):
    """``x_adv = attack(source, x, y)``, whatever the attacked (target) model.

    A gradient-masking check (evaluation.md §6.1.3): examples crafted on an undefended or a
    PGD-trained model of the same architecture must not fool a defense *more* than white-box
    attacks on the defense itself. The threat model and budget are the inner attack's.

    Args:
        attack: crafts the examples on ``source``.
        source: the source model (inputs in [0, 1]); or give ``source_checkpoint``.
        source_checkpoint: a checkpoint written by ``lit-robust`` (any defense), loaded on first use.
        source_name: names the metric, ``transfer_<source_name>_<threat model>_<eps>``.
    """

    short_name = "transfer"

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
        self.threat_model = attack.threat_model  # type: ignore[misc]  # the inner attack's
        super().__init__(attack.eps, name)
        self.attack = attack
        self.source = source
        self.source_checkpoint = source_checkpoint
        self.source_name = source_name
        self.short_name = f"transfer_{source_name}"  # type: ignore[misc]

    def _source_model(self, device) -> nn.Module:
        if self.source is None:
            from lit_robust.defenses.base import RobustClassifier  # defenses import attacks

            self.source = RobustClassifier.load_from_checkpoint(self.source_checkpoint, map_location="cpu")
        return self.source.to(device)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return self.attack(self._source_model(x.device), x, y)  # the inner call restores source
