"""The README's "your own defense" pattern: subclass, override ``regularizer``, train, restore."""

from __future__ import annotations

import lightning as L
import torch

from lit_robust.defenses import StandardTraining
from tests.conftest import NUM_CLASSES, tiny_cnn, tiny_data


class LogitPenalty(StandardTraining):
    def __init__(self, network, lam: float = 0.01, **kwargs):
        super().__init__(network, **kwargs)
        self.lam = lam

    def regularizer(self, x, y, logits):
        return {"logit_penalty": self.lam * logits.pow(2).mean()}


def test_regularizer_terms_are_added_logged_and_restored(tmp_path):
    model = LogitPenalty(tiny_cnn(), lam=0.5, num_classes=NUM_CLASSES)
    x, y = next(iter(tiny_data().train_dataloader()))
    model.eval()  # deterministic forward (dropout off) for the comparison
    terms = model.compute_loss(x, y)
    torch.testing.assert_close(terms["loss"], terms["ce"] + terms["logit_penalty"])
    torch.testing.assert_close(terms["logit_penalty"], 0.5 * model(x).pow(2).mean())

    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=tiny_data())
    assert "train/logit_penalty" in trainer.callback_metrics
    restored = LogitPenalty.load_from_checkpoint(
        trainer.checkpoint_callback.best_model_path, network=tiny_cnn()
    )
    assert restored.lam == 0.5 and restored.num_classes == NUM_CLASSES
