"""``Defense.load_from_checkpoint`` of a model built in code: its live objects are passed again, and
forgetting one is an error that names it (the README's snippet)."""

from __future__ import annotations

import pytest
import torch

from lit_robust.attacks import PGD
from lit_robust.defenses import AdversarialTraining
from tests.helpers import quick_trainer, tiny_cnn, tiny_data


def test_a_code_built_model_restores_with_its_live_objects_and_names_a_missing_one(tmp_path):
    model = AdversarialTraining(network=tiny_cnn(), attack=PGD(0.1, steps=1), num_classes=4)
    trainer = quick_trainer(tmp_path, inference_mode=False)
    trainer.fit(model, datamodule=tiny_data())
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    with pytest.raises(TypeError, match=r"needs \['attack'\].*load_from_checkpoint\(path, attack=\.\.\.\)"):
        AdversarialTraining.load_from_checkpoint(path, network=tiny_cnn(seed=3))
    restored = AdversarialTraining.load_from_checkpoint(path, network=tiny_cnn(seed=3), attack=PGD(0.1))
    for name, value in model.network.state_dict().items():
        assert torch.equal(restored.network.state_dict()[name], value), name
