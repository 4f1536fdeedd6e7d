"""Fit, validate and test a tiny model under a given number of CPU processes; rank 0 writes the metrics.

Used by ``test_ddp.py`` as a subprocess, because Lightning's ``ddp`` strategy re-launches the
running script for every extra rank::

    python -m tests.distributed.run_tiny OUT_DIR --devices 2            # fit, then validate and test
    python -m tests.distributed.run_tiny OUT_DIR --devices 1 --ckpt C   # validate and test C only

The validation and test sets have odd sizes, so a sampler that pads the last shard would count a
sample twice and change every accuracy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import torch

from lit_robust.attacks import FGSM, PGD, DeepFool
from lit_robust.callbacks import GradientFeatureAlignment, MinimalPerturbation, RobustnessEvaluation
from lit_robust.data import SyntheticDataModule
from lit_robust.defenses import StandardTraining
from tests.helpers import NUM_CLASSES, SHAPE, tiny_cnn


def callbacks() -> list[L.Callback]:
    attacks = [FGSM(0.05), PGD(0.05, steps=5, random_start="none")]  # deterministic, for exact equality
    return [
        RobustnessEvaluation(attacks, num_samples=1000, batch_size=8),
        MinimalPerturbation([DeepFool()], num_samples=1000, batch_size=8),
        GradientFeatureAlignment(num_samples=1000, batch_size=8),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--ckpt", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    data = SyntheticDataModule(
        num_classes=NUM_CLASSES, input_shape=SHAPE, num_train=128, num_val=37, num_test=41, noise=0.8,
        batch_size=8,
    )  # fmt: skip
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=1, limit_train_batches=4, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks(),
    )  # fmt: skip
    if args.ckpt is None:
        model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
        trainer.fit(model, datamodule=data)
        trainer.save_checkpoint(args.out / "model.ckpt")
    else:
        model = StandardTraining(network=tiny_cnn(), num_classes=NUM_CLASSES)
        model.load_state_dict(torch.load(args.ckpt, weights_only=True)["state_dict"])
    metrics = {"world_size": trainer.world_size}
    for stage in ("validate", "test"):
        getattr(trainer, stage)(model, datamodule=data, verbose=False)
        metrics.update({name: float(value) for name, value in trainer.callback_metrics.items()})
    if trainer.is_global_zero:
        (args.out / f"metrics_{args.devices}.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
