"""Every architecture (MLP, LeNet, SmallCNN, CIFAR ResNets, PreAct, WRN, VGG, torchvision), and Normalize."""

from __future__ import annotations

import copy
import functools
import inspect
import math
import re

import jsonargparse
import pytest
import torch
import torchvision
from torch import nn

from lit_robust.cli import DATA_FACTS
from lit_robust.models import MLP, BiasFreeCNN, BiasFreeMLP, ConvNet, LeNet, Normalize, SmallCNN
from lit_robust.models.normalize import InputSpec, network_statistics
from lit_robust.models.preact_resnet import PreActResNet, PreActResNet18
from lit_robust.models.resnet_cifar import CifarResNet, ResNet20, ResNet56, ZeroPadShortcut
from lit_robust.models.taps import Taps
from lit_robust.models.torchvision_model import TorchvisionModel, disable_inplace
from lit_robust.models.vgg import VGG, VGG11, VGG13, VGG16, VGG19
from lit_robust.models.wide_resnet import WideResNet
from tests.models.test_network_family import NETWORKS

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


# ----- CIFAR and ImageNet architectures: CIFAR ResNets, PreAct ResNet, WRN, VGG, torchvision -----

ARCH_BATCH = 2
CIFAR10_STATS = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
RGB_MEAN, RGB_STD = MEANS[3], STDS[3]

# name: (builder taking num_classes, mean and std; input side in pixels)
ARCHITECTURE_BUILDERS = {
    "ResNet20": (ResNet20, 32),
    "ResNet56": (ResNet56, 32),
    "CifarResNet-8-B": (functools.partial(CifarResNet, depth=8, shortcut="B"), 32),
    "PreActResNet18": (PreActResNet18, 32),
    "WideResNet-10-2-dropout": (functools.partial(WideResNet, depth=10, widen_factor=2, dropout=0.3), 32),
    "WideResNet-34-10": (WideResNet, 32),
    "VGG11": (VGG11, 32),
    "VGG13": (VGG13, 32),
    "VGG16": (VGG16, 32),
    "VGG19": (VGG19, 32),
    "TorchvisionModel-resnet18": (functools.partial(TorchvisionModel, "resnet18"), 64),
}
# One small configuration per family: the forward-only tests run these with several settings.
LIGHT = ["ResNet20", "CifarResNet-8-B", "PreActResNet18", "WideResNet-10-2-dropout", "VGG11",
         "TorchvisionModel-resnet18"]  # fmt: skip
# The heavier variants take one training step and nothing else (WRN-34-10 once, as a whole).
TRAINED = [*LIGHT, "ResNet56", "WideResNet-34-10", "VGG19"]


def build_architecture(name: str, num_classes: int = NUM_CLASSES) -> tuple[nn.Module, int]:
    builder, size = ARCHITECTURE_BUILDERS[name]
    torch.manual_seed(0)
    return builder(num_classes=num_classes, mean=RGB_MEAN, std=RGB_STD), size


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def conv_and_linear_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


def cancelled_by_batchnorm(model: nn.Module, parameter_name: str) -> bool:
    """VGG's convolution biases: the BatchNorm after them removes them in training mode (zero gradient)."""
    module_name, _, kind = parameter_name.rpartition(".")
    is_conv = isinstance(model.get_submodule(module_name), nn.Conv2d)
    return isinstance(model, VGG) and kind == "bias" and is_conv


@pytest.mark.parametrize("name", list(ARCHITECTURE_BUILDERS))
def test_architecture_starts_with_its_normalize_and_has_no_inplace_module(name):
    model, _ = build_architecture(name)
    first = next(model.children())
    assert isinstance(first, Normalize)
    assert first.mean.flatten().tolist() == pytest.approx(RGB_MEAN)
    assert first.std.flatten().tolist() == pytest.approx(RGB_STD)
    assert sum(isinstance(module, Normalize) for module in model.modules()) == 1
    assert [n for n, m in model.named_modules() if getattr(m, "inplace", False)] == []


NO_NORMALIZATION = ((0.0,), (1.0,))
DEFAULT_STATISTICS = [
    (MLP, NO_NORMALIZATION), (LeNet, NO_NORMALIZATION), (SmallCNN, NO_NORMALIZATION),
    (ConvNet, NO_NORMALIZATION), (BiasFreeCNN, NO_NORMALIZATION), (BiasFreeMLP, NO_NORMALIZATION),
    (CifarResNet, CIFAR10_STATS), (ResNet20, CIFAR10_STATS), (ResNet56, CIFAR10_STATS),
    (PreActResNet, CIFAR10_STATS), (PreActResNet18, CIFAR10_STATS),
    (functools.partial(WideResNet, depth=10, widen_factor=1), CIFAR10_STATS), (VGG, CIFAR10_STATS),
    (VGG11, CIFAR10_STATS), (VGG13, CIFAR10_STATS), (VGG16, CIFAR10_STATS), (VGG19, CIFAR10_STATS),
    (functools.partial(TorchvisionModel, "resnet18"), IMAGENET_STATS),
]  # fmt: skip
NETWORK_CLASSES = list(NETWORKS)  # every exported network (test_network_family.py keeps the table complete)


# the arguments of each network that the data fixes (beyond num_classes, mean and std)
SHAPE_ARGUMENTS = {MLP: {"input_shape"}, LeNet: {"in_channels", "input_size"},
                   SmallCNN: {"in_channels", "input_size"}, TorchvisionModel: set(),
                   BiasFreeCNN: {"in_channels", "input_size"}, BiasFreeMLP: {"input_shape"}}  # fmt: skip


@pytest.mark.parametrize("cls", NETWORK_CLASSES, ids=lambda cls: cls.__name__)
def test_the_data_facts_default_to_none(cls):
    """``None`` = "from the data": lit-robust fills every one left unset (``fill_network_arguments``)."""
    parameters = inspect.signature(cls).parameters
    facts = {"num_classes", "mean", "std"} | SHAPE_ARGUMENTS.get(cls, {"in_channels"})
    assert {name for name in DATA_FACTS if name in parameters} == facts  # nothing else is filled
    assert all(parameters[name].default is None for name in facts)


@pytest.mark.parametrize(("builder", "stats"), DEFAULT_STATISTICS, ids=lambda b: getattr(b, "__name__", ""))
def test_architecture_default_statistics_in_python(builder, stats):
    """Built in Python without statistics: no normalization for the MNIST-sized networks, CIFAR-10's for the
    CIFAR networks, ImageNet's for the torchvision ones."""
    normalize = next(module for module in builder().modules() if isinstance(module, Normalize))
    assert normalize.mean.flatten().tolist() == pytest.approx(stats[0])
    assert normalize.std.flatten().tolist() == pytest.approx(stats[1])


@pytest.mark.parametrize("num_classes", [10, 3])
@pytest.mark.parametrize("name", LIGHT)
def test_architecture_output_shape(name, num_classes):
    model, size = build_architecture(name, num_classes=num_classes)
    with torch.no_grad():
        logits = model.eval()(torch.rand(ARCH_BATCH, 3, size, size))
    assert logits.shape == (ARCH_BATCH, num_classes)
    assert logits.dtype == torch.float32
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", LIGHT)
def test_architecture_normalize_is_the_same_as_normalizing_by_hand(name):
    model, size = build_architecture(name)
    model.eval()  # BatchNorm in training mode would absorb much of a per-channel shift
    plain = copy.deepcopy(model)
    plain.normalize.mean.zero_()
    plain.normalize.std.fill_(1.0)
    shifted = copy.deepcopy(model)
    shifted.normalize.mean.add_(0.3)
    x = torch.rand(ARCH_BATCH, 3, size, size)
    with torch.no_grad():
        expected = plain(_reference_normalize(x, RGB_MEAN, RGB_STD))
        torch.testing.assert_close(model(x), expected)
        # the statistics change the output (VGG's default initialization makes it the least sensitive)
        for other in (plain(x), shifted(x)):
            assert (other - expected).abs().max() > 1e-3 * expected.abs().max()


@pytest.mark.parametrize("name", [name for name in LIGHT if not name.startswith("Torchvision")])
def test_cifar_architecture_logits_are_fc_of_forward_features(name):
    model, size = build_architecture(name)
    x = torch.rand(ARCH_BATCH, 3, size, size)
    with torch.no_grad():
        features = model.eval().forward_features(x)
        assert features.shape == (ARCH_BATCH, model.fc.in_features)
        torch.testing.assert_close(model(x), model.fc(features))


@pytest.mark.parametrize("name", TRAINED)
def test_architecture_training_step(name):
    model, size = build_architecture(name)
    x = torch.rand(ARCH_BATCH, 3, size, size)
    y = torch.tensor([0, NUM_CLASSES - 1])
    called = []
    handles = [
        module.register_forward_pre_hook(lambda module, args: called.append((module, args[0])))
        for module in model.modules()
        if not list(module.children())
    ]
    with Taps(model).recording(x) as record:
        logits = model.train()(x)
    for handle in handles:
        handle.remove()
    assert logits.shape == (ARCH_BATCH, NUM_CLASSES)
    assert isinstance(called[0][0], Normalize) and called[0][1] is x
    # every Conv2d and Linear ran once, and no in-place operation touched its input afterwards
    assert sorted(record.module_inputs(dedup=False)) == sorted(conv_and_linear_names(model))
    record.check_unmodified()

    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.functional.cross_entropy(logits, y).backward()
    optimizer.step()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), parameter_name
        if cancelled_by_batchnorm(model, parameter_name):  # zero up to rounding, next to its weights'
            weight = model.get_parameter(parameter_name.removesuffix("bias") + "weight")
            assert parameter.grad.abs().max() < 1e-3 * weight.grad.abs().max(), parameter_name
        else:
            assert parameter.grad.abs().sum() > 0, parameter_name
            assert not torch.equal(parameter.detach(), before[parameter_name]), parameter_name


@pytest.mark.parametrize(
    ("name", "first_conv"), [("ResNet20", "stem.0"), ("TorchvisionModel-resnet18", "network.conv1")]
)
def test_architecture_double_backprop_through_taps(name, first_conv):
    """A GFA-like penalty: squared norms of the loss gradients at the input and at every layer input."""
    model, size = build_architecture(name)
    x = torch.rand(ARCH_BATCH, 3, size, size, requires_grad=True)
    with Taps(model).recording(x) as record:
        loss = nn.functional.cross_entropy(model(x), torch.tensor([0, NUM_CLASSES - 1]))
    layer_inputs = record.module_inputs()
    assert list(layer_inputs) == [n for n in conv_and_linear_names(model) if n != first_conv]  # forward order
    record.check_unmodified()
    gradients = torch.autograd.grad(loss, [x, *layer_inputs.values()], create_graph=True)
    penalty = sum(gradient.pow(2).sum() for gradient in gradients)
    weights = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
    weight_gradients = torch.autograd.grad(penalty, weights)
    assert all(torch.isfinite(g).all() for g in weight_gradients)
    assert all(g.abs().sum() > 0 for g in weight_gradients)


# Published parameter counts, in millions, for 10 classes. The ResNet and WRN-28-10 figures are the
# papers' own; the others are the figures the adversarial-robustness literature quotes for these models.
PUBLISHED_PARAMETERS = [
    pytest.param(ResNet20, 0.27, id="ResNet20"),  # He et al. 2016, Table 6
    pytest.param(functools.partial(CifarResNet, depth=20, shortcut="B"), 0.27, id="ResNet20-B"),  # +2,752
    pytest.param(ResNet56, 0.85, id="ResNet56"),  # He et al. 2016, Table 6
    pytest.param(functools.partial(CifarResNet, depth=56, shortcut="B"), 0.85, id="ResNet56-B"),
    pytest.param(functools.partial(CifarResNet, depth=110), 1.7, id="ResNet110"),  # He et al. 2016, Table 6
    pytest.param(PreActResNet18, 11.17, id="PreActResNet18"),
    pytest.param(WideResNet, 46.16, id="WRN-34-10"),
    pytest.param(functools.partial(WideResNet, depth=28), 36.5, id="WRN-28-10"),  # Zagoruyko & Komodakis
    pytest.param(VGG16, 14.7, id="VGG16"),
]


@pytest.mark.parametrize(("builder", "millions"), PUBLISHED_PARAMETERS)
def test_parameter_counts_match_the_published_figures(builder, millions):
    assert count_parameters(builder(num_classes=10)) / 1e6 == pytest.approx(millions, rel=0.02)


@pytest.mark.parametrize("depth", [11, 13, 16, 19])
def test_vgg_convolutions_are_torchvision_vgg_bn_features(depth):
    model = VGG(depth=depth, num_classes=NUM_CLASSES)
    with torch.device("meta"):
        reference = getattr(torchvision.models, f"vgg{depth}_bn")().features
    ours = [(type(m), getattr(m, "weight", torch.empty(0)).shape) for m in model.features]
    theirs = [(type(m), getattr(m, "weight", torch.empty(0)).shape) for m in reference]
    assert ours == theirs
    assert count_parameters(model.features) == count_parameters(reference)  # conv biases included
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == depth - 3  # the name counts 3 FC layers
    assert [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)] == [
        (512, NUM_CLASSES)
    ]


def test_torchvision_model_parameter_count_is_torchvisions():
    model = TorchvisionModel("resnet18")
    published = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.meta["num_params"]  # no download
    assert count_parameters(model) == published
    assert model.network.fc.out_features == 1000


@pytest.mark.parametrize(("depth", "blocks"), [(8, 1), (20, 3), (56, 9)])
def test_cifar_resnet_layers(depth, blocks):
    model = CifarResNet(depth=depth, num_classes=NUM_CLASSES)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) + 1 == depth  # option A: every weighted layer is a 3x3 conv or the Linear
    assert all(m.kernel_size == (3, 3) and m.bias is None for m in convs)
    assert [len(stage) for stage in (model.stage1, model.stage2, model.stage3)] == [blocks] * 3
    assert [m.out_channels for m in convs].count(16) == 1 + 2 * blocks
    assert [m.stride for m in convs].count((2, 2)) == 2
    assert sum(isinstance(m, ZeroPadShortcut) for m in model.modules()) == 2
    model_b = CifarResNet(depth=depth, num_classes=NUM_CLASSES, shortcut="B")
    one_by_one = [m for m in model_b.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [(m.in_channels, m.out_channels, m.stride) for m in one_by_one] == [
        (16, 32, (2, 2)),
        (32, 64, (2, 2)),
    ]


def test_zero_pad_shortcut_is_subsampling_and_zero_channels():
    x = torch.rand(2, 4, 6, 6)
    out = ZeroPadShortcut(4, 8, 2)(x)
    assert out.shape == (2, 8, 3, 3)
    torch.testing.assert_close(out[:, 2:6], x[:, :, ::2, ::2])
    assert not out[:, :2].any() and not out[:, 6:].any()


def test_preact_shortcut_reads_the_raw_block_input():
    model = PreActResNet(num_blocks=(1, 1, 1, 1), num_classes=NUM_CLASSES).eval()
    block = model.stage2[0]
    seen = {}
    block.register_forward_pre_hook(lambda module, args: seen.setdefault("block", args[0]))
    block.shortcut.register_forward_pre_hook(lambda module, args: seen.setdefault("shortcut", args[0]))
    with torch.no_grad():
        model(torch.rand(ARCH_BATCH, 3, 16, 16))
    assert seen["shortcut"] is seen["block"]
    assert isinstance(model.stage1[0].shortcut, nn.Identity)
    assert [len(stage) for stage in (model.stage1, model.stage2, model.stage3, model.stage4)] == [1, 1, 1, 1]


def test_wide_resnet_shortcut_reads_the_preactivated_input():
    model = WideResNet(depth=10, widen_factor=1, num_classes=NUM_CLASSES).eval()
    assert model.stage1[0].shortcut is None  # 16 -> 16 channels, stride 1: identity
    block = model.stage2[0]
    seen = {}
    block.register_forward_pre_hook(lambda module, args: seen.setdefault("block", args[0]))
    block.shortcut.register_forward_pre_hook(lambda module, args: seen.setdefault("shortcut", args[0]))
    with torch.no_grad():
        model(torch.rand(ARCH_BATCH, 3, 16, 16))
        torch.testing.assert_close(seen["shortcut"], nn.functional.relu(block.bn1(seen["block"])))


@pytest.mark.parametrize(("depth", "widen_factor"), [(10, 1), (16, 4), (28, 2)])
def test_wide_resnet_widths(depth, widen_factor):
    model = WideResNet(depth, widen_factor, NUM_CLASSES)
    blocks = (depth - 4) // 6
    widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
    for stage, width in zip((model.stage1, model.stage2, model.stage3), widths, strict=True):
        assert len(stage) == blocks
        assert {block.conv2.out_channels for block in stage} == {width}
    three_by_three = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(three_by_three) == 6 * blocks + 1
    assert model.fc.in_features == widths[-1]


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_wide_resnet_dropout(dropout):
    model = WideResNet(depth=10, widen_factor=1, dropout=dropout)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [dropout] * (3 if dropout else 0)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: CifarResNet(depth=21), r"depth must be 6n \+ 2.*got 21"),
        (lambda: CifarResNet(depth=2), "depth must be 6n"),
        (lambda: CifarResNet(depth=20.0), "depth must be 6n"),
        (lambda: CifarResNet(shortcut="C"), "shortcut must be one of"),
        (lambda: WideResNet(depth=33), r"depth must be 6n \+ 4.*got 33"),
        (lambda: WideResNet(depth=4), "depth must be 6n"),
        (lambda: WideResNet(depth=16, widen_factor=0), "widen_factor must be an integer >= 1, got 0"),
        (lambda: WideResNet(depth=16, dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (lambda: VGG(depth=12), r"depth must be one of \[11, 13, 16, 19\], got 12"),
        (lambda: PreActResNet(num_blocks=(2, 2, 2)), "num_blocks must be four integers"),
        (lambda: PreActResNet(num_blocks=(2, 0, 2, 2)), "num_blocks must be four integers"),
    ],
)
def test_architecture_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_torchvision_model_unknown_name_lists_close_and_available_names():
    with pytest.raises(ValueError, match="resnet5O") as error:
        TorchvisionModel("resnet5O")
    message = str(error.value)
    closest = message[message.index("closest:") : message.index("available:")]
    assert "resnet50" in closest
    assert "vit_b_16" in message[message.index("available:") :]


@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn", "quantized_resnet18", ""])
def test_torchvision_model_rejects_non_classification_names(name):
    with pytest.raises(ValueError, match="torchvision classification model"):
        TorchvisionModel(name)


@pytest.mark.parametrize("model_kwargs", [{"weights": "DEFAULT"}, {"num_classes": 5}])
def test_torchvision_model_never_downloads_weights(model_kwargs):
    with pytest.raises(ValueError, match="model_kwargs must not set"):
        TorchvisionModel("resnet18", model_kwargs=model_kwargs)


def test_torchvision_model_builds_by_name_with_builder_arguments():
    model = TorchvisionModel("ResNet18", num_classes=5, model_kwargs={"zero_init_residual": True})
    assert model.name == "resnet18"
    assert isinstance(model.network, torchvision.models.ResNet)
    assert model.network.fc.out_features == 5
    assert not model.network.layer1[0].bn2.weight.any()  # the builder argument arrived
    inception = TorchvisionModel("inception_v3", num_classes=5)
    assert inception.network.AuxLogits is None  # a single logits tensor, also in training mode


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_torchvision_model_switches_inplace_off(name):
    raw = torchvision.models.get_model(name, weights=None)
    inplace = [n for n, m in raw.named_modules() if getattr(m, "inplace", False)]
    assert inplace  # torchvision builds them in place: the switch has work to do
    model = TorchvisionModel(name)
    assert model.inplace_disabled == inplace
    assert [n for n, m in model.named_modules() if getattr(m, "inplace", False)] == []
    assert {type(model.network.get_submodule(n)) for n in inplace} <= {nn.ReLU, nn.ReLU6}


class ReusesItsInput(nn.Module):
    """``fc(x) + act(x)``: ``act`` runs after ``fc`` recorded ``x``; in place, it overwrites that record."""

    def __init__(self, inplace: bool):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.ReLU(inplace=inplace)

    def forward(self, x):
        hidden = x * 2.0
        return self.fc(hidden) + self.act(hidden)


def test_disable_inplace_keeps_recorded_layer_inputs_valid():
    network = ReusesItsInput(inplace=True)
    x = torch.randn(3, 4, requires_grad=True)
    with Taps(network).recording(x) as record:
        network(x)
    with pytest.raises(ValueError, match="modified in place"):
        record.check_unmodified()
    assert disable_inplace(network) == ["act"]
    assert disable_inplace(network) == []
    with Taps(network).recording(x) as record:
        network(x)
    record.check_unmodified()


@pytest.mark.parametrize(
    ("class_path", "init_args", "expected"),
    [
        ("lit_robust.models.resnet_cifar.ResNet20", {"num_classes": 7}, ResNet20),
        ("lit_robust.models.resnet_cifar.CifarResNet", {"depth": 8, "shortcut": "B"}, CifarResNet),
        ("lit_robust.models.preact_resnet.PreActResNet18", {"mean": [0.5, 0.5, 0.5]}, PreActResNet18),
        ("lit_robust.models.wide_resnet.WideResNet", {"depth": 10, "widen_factor": 1}, WideResNet),
        ("lit_robust.models.vgg.VGG13", {"num_classes": 7}, VGG13),
        ("lit_robust.models.vgg.VGG", {"depth": 11}, VGG),
        (
            "lit_robust.models.torchvision_model.TorchvisionModel",
            {"name": "resnet18", "num_classes": 7, "model_kwargs": {"zero_init_residual": True}},
            TorchvisionModel,
        ),
    ],
)
def test_architecture_builds_from_a_config(class_path, init_args, expected):
    parser = jsonargparse.ArgumentParser()
    parser.add_argument("--network", type=nn.Module)
    config = parser.parse_object({"network": {"class_path": class_path, "init_args": init_args}})
    network = parser.instantiate(config).network
    assert type(network) is expected
    assert isinstance(network.normalize, Normalize)


# ----- any network on any data: channels, size and statistics as arguments; clear errors otherwise -----

MNIST_FACTS = {"num_classes": NUM_CLASSES, "mean": [0.2], "std": [0.4]}
# every network that takes 1 x 28 x 28 images, built as lit-robust builds it from MNIST-shaped data
ONE_CHANNEL_28 = {
    "MLP": lambda: MLP(input_shape=[1, 28, 28], hidden=(8,), **MNIST_FACTS),
    "LeNet": lambda: LeNet(in_channels=1, input_size=28, **MNIST_FACTS),
    "SmallCNN": lambda: SmallCNN(in_channels=1, input_size=28, **MNIST_FACTS),
    "CifarResNet-8-B": lambda: CifarResNet(depth=8, shortcut="B", in_channels=1, **MNIST_FACTS),
    "ResNet20": lambda: ResNet20(in_channels=1, **MNIST_FACTS),
    "PreActResNet": lambda: PreActResNet((1, 1, 1, 1), in_channels=1, **MNIST_FACTS),
    "WideResNet-10-1": lambda: WideResNet(depth=10, widen_factor=1, in_channels=1, **MNIST_FACTS),
}


@pytest.mark.parametrize("name", ONE_CHANNEL_28)
def test_network_on_one_channel_28_pixel_images(name):
    model = ONE_CHANNEL_28[name]()
    first_layer = next(m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert first_layer.weight.shape[1] == (784 if name == "MLP" else 1)
    assert model.input_spec.accepts((ARCH_BATCH, 1, 28, 28))
    logits = model.eval()(torch.rand(ARCH_BATCH, 1, 28, 28))
    assert logits.shape == (ARCH_BATCH, NUM_CLASSES) and torch.isfinite(logits).all()
    normalize = next(m for m in model.modules() if isinstance(m, Normalize))
    assert normalize.mean.flatten().tolist() == pytest.approx([0.2])
    assert normalize.std.flatten().tolist() == pytest.approx([0.4])


@pytest.mark.parametrize("depth", [11, 16])
def test_vgg_with_other_channels(depth):
    model = VGG(depth=depth, num_classes=NUM_CLASSES, in_channels=1, mean=0.5, std=0.25)
    assert model.features[0].in_channels == 1
    assert model.eval()(torch.rand(ARCH_BATCH, 1, 32, 32)).shape == (ARCH_BATCH, NUM_CLASSES)


def test_convnet_with_other_channels():
    model = ConvNet(num_classes=NUM_CLASSES, in_channels=1)
    assert model(torch.rand(ARCH_BATCH, 1, 32, 32)).shape == (ARCH_BATCH, NUM_CLASSES)


FROM_THE_DATA = "Leave {} unset (null) under lit-robust, which takes them from the data, or set them to match"
# (network, the images it cannot take, its name in the message, what it takes, the hint)
MISFITS = {
    "SmallCNN-channels": (
        lambda: SmallCNN(),
        (3, 32, 32),
        "SmallCNN(in_channels=1, input_size=28)",
        "(1, 28, 28)",
        FROM_THE_DATA.format("in_channels and input_size"),
    ),
    "SmallCNN-size": (
        lambda: SmallCNN(in_channels=3, input_size=32),
        (3, 28, 28),
        "SmallCNN(in_channels=3, input_size=32)",
        "(3, 32, 32)",
        FROM_THE_DATA.format("in_channels and input_size"),
    ),
    "LeNet": (
        lambda: LeNet(),
        (1, 32, 32),
        "LeNet(in_channels=1, input_size=28)",
        "(1, 28, 28)",
        FROM_THE_DATA.format("in_channels and input_size"),
    ),
    "MLP": (
        lambda: MLP(),
        (3, 32, 32),
        "MLP(input_shape=[1, 28, 28])",
        "(1, 28, 28)",
        FROM_THE_DATA.format("input_shape"),
    ),
    "ConvNet-size": (
        lambda: ConvNet(),
        (3, 28, 28),
        "ConvNet(in_channels=3)",
        "(3, 32, 32)",
        "ConvNet takes 32 x 32 images only",
    ),
    "ConvNet-channels": (
        lambda: ConvNet(),
        (1, 32, 32),
        "ConvNet(in_channels=3)",
        "(3, 32, 32)",
        FROM_THE_DATA.format("in_channels"),
    ),
    "ResNet20": (
        lambda: ResNet20(),
        (1, 28, 28),
        "ResNet20(in_channels=3)",
        "(3, H, W)",
        FROM_THE_DATA.format("in_channels"),
    ),
    "CifarResNet": (
        lambda: CifarResNet(depth=8),
        (1, 32, 32),
        "CifarResNet(in_channels=3)",
        "(3, H, W)",
        FROM_THE_DATA.format("in_channels"),
    ),
    "PreActResNet18": (
        lambda: PreActResNet18(),
        (1, 28, 28),
        "PreActResNet18(in_channels=3)",
        "(3, H, W)",
        FROM_THE_DATA.format("in_channels"),
    ),
    "WideResNet": (
        lambda: WideResNet(depth=10, widen_factor=1),
        (1, 28, 28),
        "WideResNet(depth=10, widen_factor=1, in_channels=3)",
        "(3, H, W)",
        FROM_THE_DATA.format("in_channels"),
    ),
    "VGG11-size": (
        lambda: VGG11(),
        (3, 28, 28),
        "VGG11(depth=11, in_channels=3)",
        "(3, H, W) with H, W >= 32",
        "Its five 2 x 2 poolings need at least 32 x 32 pixels",
    ),
    "VGG11-channels": (
        lambda: VGG11(),
        (1, 32, 32),
        "VGG11(depth=11, in_channels=3)",
        "(3, H, W) with H, W >= 32",
        FROM_THE_DATA.format("in_channels"),
    ),
    "TorchvisionModel": (
        lambda: TorchvisionModel("resnet18"),
        (1, 64, 64),
        "TorchvisionModel('resnet18')",
        "(3, H, W)",
        "Torchvision's classification models take RGB images",
    ),
}


@pytest.mark.parametrize("case", MISFITS)
def test_a_network_that_cannot_take_the_images_says_so(case):
    build, shape, name, takes, hint = MISFITS[case]
    got = f"images of shape {shape} (a batch of shape {(2, *shape)})"
    message = f"{name} cannot take {got}; it takes {takes}. {hint}"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        build()(torch.rand(2, *shape))


@pytest.mark.parametrize("shape", [(2, 784), (2, 1, 28, 28, 1), (28, 28)])
def test_inputs_that_are_not_a_batch_of_images_say_so(shape):
    with pytest.raises(ValueError, match=r"SmallCNN.*cannot take inputs of shape .*not a batch of images"):
        SmallCNN()(torch.rand(*shape))


STATISTICS_MISFITS = [
    (lambda: SmallCNN(mean=[0.1, 0.2, 0.3], std=0.3),
     "SmallCNN takes 1-channel images, but mean=[0.1, 0.2, 0.3] has 3 values: give mean as one value, or one "
     "per channel"),
    (lambda: LeNet(in_channels=3, mean=0.5, std=[0.2, 0.3]),
     "LeNet takes 3-channel images, but std=[0.2, 0.3]"),
    (lambda: ResNet20(in_channels=1),
     "ResNet20 takes 1-channel images, but the default mean [0.4914, 0.4822, 0.4465] has 3 values"),
    (lambda: VGG16(in_channels=1, mean=0.5), "VGG16 takes 1-channel images, but the default std"),
]  # fmt: skip


@pytest.mark.parametrize(("build", "message"), STATISTICS_MISFITS)
def test_statistics_that_do_not_fit_the_channels_are_refused_at_construction(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_network_statistics():
    assert network_statistics("Net", None, None, 3) == ([0.0], [1.0])
    assert network_statistics("Net", None, None, 3, CIFAR10_STATS) == (
        list(CIFAR10_STATS[0]),
        list(CIFAR10_STATS[1]),
    )
    assert network_statistics("Net", 0.5, [0.1, 0.2, 0.3], 3) == ([0.5], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match=r"std\[1\] must be > 0"):
        network_statistics("Net", 0.5, [0.1, 0.0, 0.3], 3)


def test_input_spec_accepts():
    exact = InputSpec("Net", 3, (32, 32))
    assert (
        exact.accepts((5, 3, 32, 32))
        and not exact.accepts((5, 3, 32, 31))
        and not exact.accepts((5, 1, 32, 32))
    )
    assert not exact.accepts((3, 32, 32))
    at_least = InputSpec("Net", 1, min_size=16)
    assert at_least.accepts((2, 1, 16, 40)) and not at_least.accepts((2, 1, 15, 40))
    assert (exact.expected(), at_least.expected()) == ("(3, 32, 32)", "(1, H, W) with H, W >= 16")
