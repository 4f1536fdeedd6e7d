"""MLP, LeNet, SmallCNN and the Normalize layer they all start with."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lit_robust.models import MLP, LeNet, Normalize, SmallCNN

BATCH = 3
NUM_CLASSES = 7  # not 10, so a hard-coded head size shows up
MEANS = {1: (0.3,), 3: (0.2, 0.4, 0.6)}
STDS = {1: (0.5,), 3: (0.25, 0.5, 2.0)}


def build(name: str, channels: int, size: int, **kwargs) -> nn.Module:
    kwargs = {"num_classes": NUM_CLASSES, "mean": MEANS[channels], "std": STDS[channels], **kwargs}
    torch.manual_seed(0)
    if name == "MLP":
        return MLP(input_shape=(channels, size, size), hidden=(16, 8), **kwargs)
    if name == "LeNet":
        return LeNet(in_channels=channels, input_size=size, **kwargs)
    return SmallCNN(in_channels=channels, input_size=size, **kwargs)


def nonzero_head(model: nn.Module) -> nn.Module:
    """A copy whose zero-initialized Linear layers (SmallCNN's head) get random weights."""
    model = copy.deepcopy(model)
    torch.manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.Linear) and not module.weight.any():
            nn.init.normal_(module.weight, std=0.1)
            nn.init.normal_(module.bias, std=0.1)
    return model


ARCHITECTURES = pytest.mark.parametrize(
    ("name", "channels", "size"),
    [(name, c, s) for name in ("MLP", "LeNet", "SmallCNN") for c, s in ((1, 28), (3, 32))],
)


@ARCHITECTURES
def test_output_shape(name, channels, size):
    model = build(name, channels, size)
    logits = model(torch.rand(BATCH, channels, size, size))
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@ARCHITECTURES
def test_first_layer_applied_is_normalize(name, channels, size):
    model = build(name, channels, size)
    calls = []
    handles = [
        module.register_forward_pre_hook(lambda module, args: calls.append((module, args[0])))
        for module in model.modules()
        if not list(module.children())  # leaves: the layers that compute something
    ]
    x = torch.rand(BATCH, channels, size, size)
    model(x)
    for handle in handles:
        handle.remove()
    first, first_input = calls[0]
    assert isinstance(first, Normalize)
    assert first_input is x
    assert sum(isinstance(module, Normalize) for module, _ in calls) == 1


@ARCHITECTURES
def test_normalize_is_the_same_as_normalizing_by_hand(name, channels, size):
    model = nonzero_head(build(name, channels, size))
    plain = copy.deepcopy(model)
    normalize = next(m for m in plain.modules() if isinstance(m, Normalize))
    normalize.mean.zero_()
    normalize.std.fill_(1.0)
    x = torch.rand(BATCH, channels, size, size)
    mean = torch.tensor(MEANS[channels]).view(1, -1, 1, 1)
    std = torch.tensor(STDS[channels]).view(1, -1, 1, 1)
    expected = plain((x - mean) / std)
    torch.testing.assert_close(model(x), expected)
    assert not torch.allclose(plain(x), expected)  # the statistics do change the output


@ARCHITECTURES
def test_every_parameter_gets_a_gradient(name, channels, size):
    model = build(name, channels, size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.rand(BATCH, channels, size, size)
    y = torch.arange(BATCH) % NUM_CLASSES
    # SmallCNN's zero head blocks gradients to earlier layers until one step has moved it.
    for _ in range(2 if name == "SmallCNN" else 1):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_small_cnn_layers_in_order(channels, size):
    model = build("SmallCNN", channels, size)
    called = []
    handles = [
        module.register_forward_hook(lambda module, args, out: called.append(module))
        for module in model.modules()
        if isinstance(module, (nn.Conv2d, nn.Linear))
    ]
    model(torch.rand(1, channels, size, size))
    for handle in handles:
        handle.remove()
    convs = [m for m in called if isinstance(m, nn.Conv2d)]
    linears = [m for m in called if isinstance(m, nn.Linear)]
    assert called == convs + linears
    assert [(m.in_channels, m.out_channels, m.kernel_size) for m in convs] == [
        (channels, 32, (3, 3)),
        (32, 32, (3, 3)),
        (32, 64, (3, 3)),
        (64, 64, (3, 3)),
    ]
    side = 4 if size == 28 else 5
    assert [(m.in_features, m.out_features) for m in linears] == [
        (64 * side * side, 200),
        (200, 200),
        (200, NUM_CLASSES),
    ]
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 4
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 3
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 2
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_small_cnn_leaf_sequence():
    model = build("SmallCNN", 1, 28)
    called = []
    handles = [
        module.register_forward_pre_hook(lambda module, args: called.append(type(module)))
        for module in model.modules()
        if not list(module.children())
    ]
    model(torch.rand(1, 1, 28, 28))
    for handle in handles:
        handle.remove()
    conv_block = [nn.Conv2d, nn.ReLU, nn.Conv2d, nn.ReLU, nn.MaxPool2d]
    head = [nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Linear]
    assert called == [Normalize, *conv_block, *conv_block, *head]


@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_small_cnn_head_starts_at_zero(channels, size):
    model = build("SmallCNN", channels, size)
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    assert not head.weight.any() and not head.bias.any()
    logits = model(torch.rand(4, channels, size, size))
    assert torch.equal(logits, torch.zeros_like(logits))  # all classes equally likely
    nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long)).backward()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert not first_conv.weight.grad.any()
    assert head.weight.grad.any() and head.bias.grad.any()


def test_small_cnn_convolutions_are_kaiming_normal_fan_out():
    model = build("SmallCNN", 1, 28)
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d)):
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / fan_out), rel=0.2)
        assert not conv.bias.any()


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_small_cnn_dropout(dropout):
    model = build("SmallCNN", 1, 28, dropout=dropout)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    assert [m.p for m in dropouts] == [dropout]
    model = nonzero_head(model).eval()
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(model(x), model(x))


def test_lenet_layers():
    model = build("LeNet", 1, 28)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [(m.out_channels, m.kernel_size, m.padding) for m in convs] == [
        (6, (5, 5), (2, 2)),
        (16, (5, 5), (0, 0)),
    ]
    assert [(m.in_features, m.out_features) for m in linears] == [(400, 120), (120, 84), (84, NUM_CLASSES)]


@pytest.mark.parametrize("hidden", [(), (5,), (9, 6, 4)])
def test_mlp_hidden_widths(hidden):
    model = MLP(num_classes=3, input_shape=(2, 4, 4), hidden=hidden)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    widths = [32, *hidden, 3]
    assert [(m.in_features, m.out_features) for m in linears] == list(
        zip(widths[:-1], widths[1:], strict=True)
    )
    assert model(torch.rand(2, 2, 4, 4)).shape == (2, 3)


# ----- Normalize -----


def _reference_normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    out = torch.empty_like(x)
    for channel in range(x.shape[1]):
        out[:, channel] = (x[:, channel] - mean[channel]) / std[channel]
    return out


def test_normalize_per_channel():
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    x = torch.rand(2, 3, 4, 5)
    torch.testing.assert_close(Normalize(mean, std)(x), _reference_normalize(x, mean, std))


def test_normalize_broadcasts_a_single_value():
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(Normalize(0.5, 0.25)(x), (x - 0.5) / 0.25)
    torch.testing.assert_close(Normalize((0.5,), (0.25,))(x), (x - 0.5) / 0.25)


def test_normalize_defaults_to_identity():
    x = torch.rand(2, 3, 4, 4)
    assert torch.equal(Normalize()(x), x)


def test_normalize_flat_input_with_scalar_statistics():
    x = torch.rand(4, 784)
    torch.testing.assert_close(Normalize(0.1307, 0.3081)(x), (x - 0.1307) / 0.3081)


@pytest.mark.parametrize("std", [0.0, -1.0, (1.0, 0.0, 1.0), (0.5, -0.1, 0.5)])
def test_normalize_rejects_non_positive_std(std):
    with pytest.raises(ValueError, match="std"):
        Normalize(0.0, std)


def test_normalize_statistics_are_buffers():
    layer = Normalize((0.1, 0.2, 0.3), (0.5, 0.25, 2.0))
    assert list(layer.parameters()) == []
    state = layer.state_dict()
    assert set(state) == {"mean", "std"}
    assert state["mean"].flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert state["std"].flatten().tolist() == pytest.approx([0.5, 0.25, 2.0])

    other = Normalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    other.load_state_dict(state)
    x = torch.rand(2, 3, 4, 4)
    torch.testing.assert_close(other(x), layer(x))
    assert layer.double().mean.dtype == torch.float64  # buffers follow the module


def test_normalize_gradient():
    layer = Normalize((0.1, 0.2, 0.3), (0.5, 0.25, 2.0)).double()
    x = torch.rand(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
    layer(x).sum().backward()
    expected = (1 / torch.tensor([0.5, 0.25, 2.0], dtype=torch.float64)).view(1, 3, 1, 1).expand_as(x)
    torch.testing.assert_close(x.grad, expected)
