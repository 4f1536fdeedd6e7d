"""What a user sees while an evaluation runs: one line naming the running attack, with the
attack-samples done of the total and the time elapsed, updated as each attack starts on a batch."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from tqdm import tqdm  # plain: no ipywidgets needed in notebooks


class EvaluationProgress:
    """The progress line of one evaluation: ``num_samples`` samples, ``attacks_per_sample`` attacks each.

    It counts attack-samples (an attack run on a batch of 250 images advances it by 250), so an
    evaluation of one batch and five attacks moves 0% → 20% → … → 100% as its attacks finish, instead
    of sitting at ``0/1`` until the end; the postfix names the attack running (``attack 2/5:
    apgd_t_linf_0.3``). Disabled (prints nothing) unless ``enabled``: only rank zero shows it.
    """

    def __init__(self, description: str, num_samples: int, attacks_per_sample: int, enabled: bool):
        self.attacks_per_sample = max(1, attacks_per_sample)
        total = num_samples * self.attacks_per_sample
        self.bar = tqdm(total=total, desc=description, disable=not enabled, leave=False, unit="sample")
        self._batch_start = self._batch_size = self._attack = 0

    def start_batch(self, start: int, size: int) -> None:
        """A batch of ``size`` samples begins; ``start`` samples came before it."""
        self._batch_start, self._batch_size, self._attack = start, size, 0

    def start_attack(self, name: str) -> None:
        """The next attack starts on the current batch: count the attacks before it as done."""
        self._attack += 1
        self._move_to(self._batch_start * self.attacks_per_sample + (self._attack - 1) * self._batch_size)
        self.bar.set_postfix_str(f"attack {self._attack}/{self.attacks_per_sample}: {name}", refresh=True)

    def end_batch(self) -> None:
        """Every attack is done on the current batch."""
        self._move_to((self._batch_start + self._batch_size) * self.attacks_per_sample)

    def close(self) -> None:
        self.bar.close()

    def _move_to(self, done: int) -> None:
        self.bar.update(min(done, self.bar.total) - self.bar.n)


def close_finished_bar(trainer: L.Trainer, stage: str) -> None:
    """Close Lightning's bar of the ``stage``'s batches (``"val"`` or ``"test"``): every batch has run
    when the evaluation callbacks start, and a bar at 100% while attacks run for minutes looks like a
    finished run. Lightning closes it again at the stage's end, which is harmless; other progress bars
    are left alone."""
    callback = trainer.progress_bar_callback
    if not isinstance(callback, TQDMProgressBar):
        return
    try:
        bar = callback.test_progress_bar if stage == "test" else callback.val_progress_bar
    except TypeError:  # no bar of that stage was made (e.g. the bar is disabled)
        return
    bar.close()
