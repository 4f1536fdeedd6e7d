"""``init_from`` takes the weights files users have: a defense's checkpoint or state dict, the network's
own ``state_dict()``, ``.safetensors``, and a torchvision ``.pth`` for ``TorchvisionModel``."""

from __future__ import annotations

import pytest
import torch
import torchvision

from lit_robust.defenses import StandardTraining
from lit_robust.defenses.base import load_network_state
from lit_robust.loading import save_safetensors
from lit_robust.models import SmallCNN, TorchvisionModel


def torchvision_net(seed: int) -> TorchvisionModel:
    torch.manual_seed(seed)
    return TorchvisionModel("resnet18", num_classes=10, mean=[0.4, 0.5, 0.6], std=[0.2, 0.2, 0.2])


def assert_same_weights(loaded: dict[str, torch.Tensor], source: dict[str, torch.Tensor]) -> None:
    assert loaded.keys() == source.keys()
    for key, value in source.items():
        assert torch.equal(loaded[key], value), key


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_a_torchvision_models_own_state_dict_loads(tmp_path, suffix):
    """The keys start with ``network.`` (TorchvisionModel's child), which must not be stripped."""
    source = torchvision_net(0).state_dict()
    path = tmp_path / f"weights{suffix}"
    torch.save(source, path) if suffix == ".pt" else save_safetensors(source, path)
    assert_same_weights(load_network_state(path, torchvision_net(1)), source)


def test_a_torchvision_pth_loads_into_torchvision_model_keeping_its_statistics(tmp_path):
    torch.manual_seed(0)
    plain = torchvision.models.resnet18(num_classes=10)
    torch.save(plain.state_dict(), tmp_path / "resnet18.pth")
    target = torchvision_net(1)
    loaded = load_network_state(tmp_path / "resnet18.pth", target)
    for key, value in plain.state_dict().items():
        assert torch.equal(loaded[f"network.{key}"], value), key
    assert torch.equal(loaded["normalize.mean"], target.state_dict()["normalize.mean"])  # the constructor's


def test_a_defense_checkpoint_and_state_dict_still_load(tmp_path):
    defense = StandardTraining(network=SmallCNN(mean=0.1307, std=0.3081), num_classes=10)
    torch.save({"state_dict": defense.state_dict()}, tmp_path / "run.ckpt")
    torch.save(defense.state_dict(), tmp_path / "defense.pt")
    for name in ("run.ckpt", "defense.pt"):
        loaded = load_network_state(tmp_path / name, SmallCNN(mean=0.1307, std=0.3081))
        assert_same_weights(loaded, defense.network.state_dict())


def test_weights_of_another_architecture_are_refused_with_the_keys(tmp_path):
    torch.save(torchvision_net(0).state_dict(), tmp_path / "resnet.pt")
    with pytest.raises(ValueError, match=r"does not fit the network \(SmallCNN\): missing keys"):
        load_network_state(tmp_path / "resnet.pt", SmallCNN())
