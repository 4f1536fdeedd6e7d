"""The README's "your own defense" pattern: one ``regularizer`` method, trained alone and on top of
adversarial training, logged, restored."""

from __future__ import annotations

import lightning as L
import torch

from lit_robust.attacks import PGD
from lit_robust.defenses import StandardTraining
from lit_robust.validation import check_real
from tests.helpers import NUM_CLASSES, tiny_cnn, tiny_data


class LogitPenalty(StandardTraining):
    def __init__(self, network, lam: float = 0.01, **kwargs):
        super().__init__(network, **kwargs)
        self.lam = check_real("lam", lam, low=0)

    def regularizer(self, x, y, logits):
        penalty = logits.pow(2).mean()
        self.log_diagnostics(logit_penalty=penalty)
        return {"logit_reg": self.lam * penalty}


def test_regularizer_terms_are_added_logged_and_restored(tmp_path):
    model = LogitPenalty(tiny_cnn(), lam=0.5, num_classes=NUM_CLASSES)
    x, y = next(iter(tiny_data().train_dataloader()))
    model.eval()  # deterministic forward (dropout off) for the comparison
    terms = model.compute_loss(x, y)
    torch.testing.assert_close(terms["loss"], terms["ce"] + terms["logit_reg"])
    torch.testing.assert_close(terms["logit_reg"], 0.5 * model(x).pow(2).mean())
    torch.testing.assert_close(terms["logit_penalty"], model(x).pow(2).mean())

    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=2, limit_val_batches=1, accelerator="cpu", logger=False,
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=tiny_data())
    assert {"train/logit_reg", "train/logit_penalty"} <= set(trainer.callback_metrics)
    restored = LogitPenalty.load_from_checkpoint(
        trainer.checkpoint_callback.best_model_path, network=tiny_cnn()
    )
    assert restored.lam == 0.5 and restored.num_classes == NUM_CLASSES


def test_the_same_regularizer_on_top_of_adversarial_training():
    attack = PGD(0.2, steps=2, random_start="none")
    model = LogitPenalty(tiny_cnn(), lam=0.5, adversary=attack, num_classes=NUM_CLASSES).eval()
    x, y = next(iter(tiny_data().train_dataloader()))
    terms = model.compute_loss(x, y)
    x_adv = attack(model, x, y)
    torch.testing.assert_close(terms["adv_ce"], torch.nn.functional.cross_entropy(model(x_adv), y))
    torch.testing.assert_close(terms["logit_reg"], 0.5 * model(x_adv).pow(2).mean())
