"""The WNLL defense's alternating training stages (Wang et al., arXiv 1809.08516 §3; spec
``shared/papers/wnll_tvm.md``): stage A trains the softmax head, stage B the WNLL interpolation, with
stage B's learning rate saved as state so a resumed run continues the right stage at the right rate.
"""

from __future__ import annotations

from typing import Any, Literal

from torch.optim import Optimizer

from lit_robust.validation import check_int, check_optional_real

Stage = Literal["softmax", "wnll"]

__all__ = ["Stage", "StageSchedule"]


class StageSchedule:
    """``cycles`` rounds of ``stage_a_epochs`` epochs of stage A then ``stage_b_epochs`` of stage B (0-based
    epochs; later epochs repeat the last stage). With ``stage_b_lr``, stage B of round ``r`` (1-based) runs
    at ``stage_b_lr / r`` and the stage-A rates come back with stage A; the rates to restore are state,
    saved in the checkpoint (:meth:`state_dict`), so a run resumed inside stage B continues stage B at its
    rate and returns to the right stage-A rates. ``None``: the optimizer's rates throughout.
    """

    def __init__(self, stage_a_epochs: int, stage_b_epochs: int, cycles: int, stage_b_lr: float | None):
        self.stage_a_epochs = check_int("stage_a_epochs", stage_a_epochs, 0)
        self.stage_b_epochs = check_int("stage_b_epochs", stage_b_epochs, 0)
        if self.stage_a_epochs + self.stage_b_epochs == 0:
            raise ValueError("stage_a_epochs and stage_b_epochs must not both be 0")
        self.cycles = check_int("cycles", cycles, 1)
        self.stage_b_lr = check_optional_real("stage_b_lr", stage_b_lr, 0, low_open=True)
        self.stage_a_lrs: list[float] | None = None  # set while a stage-B round has replaced them

    @property
    def period(self) -> int:
        return self.stage_a_epochs + self.stage_b_epochs

    def stage_at(self, epoch: int) -> Stage:
        """The stage of epoch ``epoch`` (0-based)."""
        if epoch >= self.cycles * self.period:
            return "wnll" if self.stage_b_epochs else "softmax"
        return "softmax" if epoch % self.period < self.stage_a_epochs else "wnll"

    def round_at(self, epoch: int) -> int:
        """The round (1-based) of epoch ``epoch``; epochs past the schedule belong to the last."""
        return min(epoch // self.period, self.cycles - 1) + 1

    def set_learning_rates(self, epoch: int, optimizer: Optimizer) -> None:
        """Entering epoch ``epoch``: switch ``optimizer``'s rates to stage B's, or back to stage A's."""
        if self.stage_b_lr is None:
            return
        groups = optimizer.param_groups
        if self.stage_at(epoch) == "wnll" and self.stage_a_lrs is None:
            self.stage_a_lrs = [group["lr"] for group in groups]
            for group in groups:
                group["lr"] = self.stage_b_lr / self.round_at(epoch)
        elif self.stage_at(epoch) == "softmax" and self.stage_a_lrs is not None:
            for group, lr in zip(groups, self.stage_a_lrs, strict=True):
                group["lr"] = lr
            self.stage_a_lrs = None

    def state_dict(self) -> dict[str, Any]:
        return {"stage_a_lrs": self.stage_a_lrs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        lrs = state.get("stage_a_lrs")
        self.stage_a_lrs = None if lrs is None else [float(lr) for lr in lrs]
