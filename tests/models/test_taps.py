"""Taps: live layer inputs while recording only, exact selection and de-duplication, no hooks left."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from lit_robust.models import SmallCNN
from lit_robust.models.taps import Taps
from tests.helpers import tiny_cnn

SMALL_CNN_LAYERS = ["features.2", "features.5", "features.7", "classifier.1", "classifier.4", "classifier.6"]


def hook_count(network: nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in network.modules())


class Twice(nn.Module):
    """One Linear applied twice: two taps, ``shared`` and ``shared#1``."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 5)
        self.shared = nn.Linear(5, 5)
        self.out = nn.Linear(5, 3)

    def forward(self, x):
        return self.out(torch.tanh(self.shared(torch.tanh(self.shared(torch.tanh(self.inp(x)))))))


def test_small_cnn_deep_taps_are_every_conv_and_linear_but_the_first_conv():
    network = SmallCNN(input_size=16, mean=0.5, std=0.5)
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    with Taps(network).recording(x) as record:
        network(x)
    assert list(record.module_inputs(dedup=True)) == SMALL_CNN_LAYERS
    assert list(record.module_inputs(dedup=False)) == ["features.0", *SMALL_CNN_LAYERS]


def test_identity_dedup_without_normalize():
    network = SmallCNN(input_size=16)
    network.normalize = nn.Identity()
    x = torch.rand(2, 1, 16, 16, requires_grad=True)
    with Taps(network).recording(x) as record:
        network(x)
    inputs = record.module_inputs(dedup=False)
    assert inputs["features.0"] is x
    assert list(record.module_inputs()) == SMALL_CNN_LAYERS


def test_recorded_inputs_are_the_live_layer_inputs():
    network = tiny_cnn()
    x = torch.rand(3, 1, 12, 12, requires_grad=True)
    seen = {}
    network[7].register_forward_pre_hook(lambda module, inputs: seen.setdefault("linear", inputs[0]))
    with Taps(network).recording(x) as record:
        network(x)
    tapped = record.module_inputs()
    assert list(tapped) == ["7"]  # the conv's input is Normalize(x): represented by the input tap
    assert tapped["7"] is seen["linear"]
    assert tapped["7"].requires_grad and tapped["7"].grad_fn is not None  # not detached


def test_named_selection_and_a_module_called_twice():
    network = Twice()
    x = torch.rand(2, 4, requires_grad=True)
    with Taps(network, names=["shared", "out"]).recording(x) as record:
        network(x)
    assert list(record.module_inputs()) == ["shared", "shared#1", "out"]
    with Taps(network).recording(x) as record:
        network(x)
    assert list(record.module_inputs()) == ["shared", "shared#1", "out"]  # "inp" consumes x itself
    assert list(record.module_inputs(dedup=False)) == ["inp", "shared", "shared#1", "out"]


def test_unknown_names_and_types_are_clear_errors():
    with pytest.raises(ValueError, match="no module named"):
        Taps(tiny_cnn(), names=["features.9"])
    with pytest.raises(ValueError, match="tap_types"):
        Taps(tiny_cnn(), types=["torch.nn.NoSuchLayer"])
    with pytest.raises(ValueError, match="list of module names"):
        Taps(tiny_cnn(), names="7")


def test_hooks_exist_only_while_recording_and_nothing_is_recorded_outside():
    network = tiny_cnn()
    taps = Taps(network)
    x = torch.rand(2, 1, 12, 12, requires_grad=True)
    assert hook_count(network) == 0
    with taps.recording(x) as record:
        assert hook_count(network) > 0 and taps.is_recording
        network(x)
    assert hook_count(network) == 0 and not taps.is_recording
    count = len(record.entries)
    network(x)  # outside recording
    assert len(record.entries) == count
    with pytest.raises(RuntimeError, match="boom"), taps.recording(x):
        raise RuntimeError("boom")
    assert hook_count(network) == 0 and not taps.is_recording
    with taps.recording(x), pytest.raises(RuntimeError, match="nested"), taps.recording(x):
        pass


def test_tapped_network_gives_identical_outputs_and_gradients():
    network = tiny_cnn()
    network.eval()  # dropout off: two forwards see the same network
    x = torch.rand(4, 1, 12, 12)
    plain = network(x)
    plain.square().sum().backward()
    plain_grads = [p.grad.clone() for p in network.parameters()]
    network.zero_grad()
    with Taps(network).recording(x) as record:
        tapped = network(x)
    tapped.square().sum().backward()
    assert len(record.entries) == 2
    assert torch.equal(tapped, plain)
    for before, parameter in zip(plain_grads, network.parameters(), strict=True):
        assert torch.equal(parameter.grad, before)


def test_in_place_modification_after_recording_is_reported():
    class InPlace(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = self.a(x)
            out = self.b(h)
            h.relu_()  # modifies the tapped input of b
            return out

    network = InPlace()
    x = torch.rand(2, 3, requires_grad=True)
    with Taps(network).recording(x) as record:
        network(x)
    with pytest.raises(ValueError, match="'b'.*inplace=False"):
        record.check_unmodified()


def test_copies_and_pickles_carry_no_hooks_or_records():
    network = tiny_cnn()
    taps = Taps(network)
    x = torch.rand(2, 1, 12, 12, requires_grad=True)
    with taps.recording(x):
        network(x)
    clone = copy.deepcopy(taps)
    assert not clone.is_recording and clone.network is not network and hook_count(clone.network) == 0
    restored = pickle.loads(pickle.dumps((network, taps)))
    assert hook_count(restored[0]) == 0 and restored[1].network is restored[0]
    with restored[1].recording(x) as record:
        restored[0](x)
    assert list(record.module_inputs()) == ["7"]


def test_torchvision_model():
    torchvision = pytest.importorskip("torchvision")
    network = torchvision.models.resnet18(num_classes=3)
    network.eval()
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    with Taps(network).recording(x) as record:
        network(x)
    convs_and_linears = [m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(record.module_inputs(dedup=False)) == len(convs_and_linears)
    assert len(record.module_inputs()) == len(convs_and_linears) - 1  # conv1 consumes x
    assert list(record.module_inputs())[-1] == "fc"
    assert hook_count(network) == 0
