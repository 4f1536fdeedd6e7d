"""``ModelCheckpoint`` whose ``last.ckpt`` always holds the last completed epoch."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn


class RunCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` (the best ``save_top_k`` by ``monitor``), plus a ``last.ckpt``
    rewritten at the end of *every* training epoch.

    Lightning 2.6 rewrites ``last.ckpt`` only on the steps where it also writes a top-k checkpoint,
    so in a run whose best epoch was an early one the final weights were in no file. Here
    ``save_last`` (on by default) always means "the last completed epoch" (written at the end of
    the epoch, after its validation and the top-k), which is what
    ``--ckpt_path last`` resumes from. ``save_last="link"`` (a link to the best checkpoint) is
    refused for that reason. Every other argument is ``ModelCheckpoint``'s.
    """

    def __init__(self, *args: Any, save_last: bool | None = True, **kwargs: Any):
        if save_last not in (True, False, None):
            raise ValueError(
                f"save_last must be True or False, got {save_last!r}: last.ckpt holds the last completed "
                "epoch here, never a link to the best one"
            )
        super().__init__(*args, save_last=save_last, **kwargs)
        self._last_written_at_step: int | None = None

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        if self.save_last:
            self._last_written_at_step = trainer.global_step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning's own saving, wherever it happened (here, or at the end of validation).
        super().on_train_epoch_end(trainer, pl_module)
        skip = trainer.fast_dev_run or trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING
        if self.save_last and not skip and self._last_written_at_step != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
