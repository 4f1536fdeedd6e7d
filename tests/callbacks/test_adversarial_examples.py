"""AdversarialExamples: the grid reaches TensorBoard and shows what the attack did."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from lit_robust.attacks import FGSM
from lit_robust.callbacks import AdversarialExamples
from lit_robust.callbacks.adversarial_examples import example_grid
from lit_robust.defenses import StandardTraining
from tests.helpers import NUM_CLASSES, tiny_data


def test_grid_is_logged_in_validate_and_test(tmp_path, trained_tiny):
    network, _, _ = trained_tiny
    logger = TensorBoardLogger(tmp_path, name="grid")
    callback = AdversarialExamples(FGSM(0.3), num_images=4)
    trainer = L.Trainer(
        accelerator="cpu", logger=logger, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path, callbacks=[callback],
    )  # fmt: skip
    model = StandardTraining(network=network, num_classes=NUM_CLASSES)
    trainer.validate(model, datamodule=tiny_data())
    trainer.test(model, datamodule=tiny_data())
    events = EventAccumulator(str(logger.log_dir))
    events.Reload()
    assert set(events.Tags()["images"]) == {
        "val/adversarial_examples/fgsm_linf_0.3",
        "test/adversarial_examples/fgsm_linf_0.3",
    }


def test_grid_rows_and_titles():
    x = torch.full((3, 1, 6, 6), 0.5)
    x_adv = x.clone()
    x_adv[0, 0, 0, 0] += 0.01  # a tiny change still spans the gray range in the difference row
    labels = torch.tensor([1, 2, 3])
    figure = example_grid(x, x_adv, labels, clean_pred=labels, adv_pred=torch.tensor([4, 2, 3]))
    axes = figure.axes
    assert len(axes) == 9
    assert axes[3].get_title() == "y=1 pred=4" and axes[3].title.get_color() == "red"
    assert axes[0].get_title() == "y=1 pred=1" and axes[0].title.get_color() == "black"
    difference = axes[6].get_images()[0].get_array()
    assert difference.max() == pytest.approx(1.0) and difference.min() == pytest.approx(0.5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_images"):
        AdversarialExamples(FGSM(0.1), num_images=0)
