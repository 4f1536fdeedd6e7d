"""Bias-free networks (issue 14 / gfa.md §(i)): positive homogeneity about the input center, no bias
parameter, orthogonal initialization, and clear errors for unknown activations or initializations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lit_robust.models import BiasFreeCNN, BiasFreeMLP, SmallCNN

CENTER = 0.5
SCALES = (0.5, 2.0, 3.0)


def small_cnn_bias_free() -> nn.Module:
    return SmallCNN(in_channels=1, input_size=28, mean=CENTER, std=0.5, zero_init_head=False, bias=False)


# name -> (factory of a network whose Normalize mean is CENTER, one image's shape)
HOMOGENEOUS = {
    "SmallCNN-bias-free": (small_cnn_bias_free, (1, 28, 28)),
    "BiasFreeCNN-leaky_relu": (
        lambda: BiasFreeCNN(num_classes=5, in_channels=3, input_size=32, mean=CENTER, std=0.5),
        (3, 32, 32),
    ),
    "BiasFreeCNN-relu": (
        lambda: BiasFreeCNN(in_channels=1, input_size=28, mean=CENTER, std=0.25, activation="relu"),
        (1, 28, 28),
    ),
    "BiasFreeMLP-leaky_relu": (lambda: BiasFreeMLP(mean=CENTER, std=0.5), (1, 28, 28)),
    "BiasFreeMLP-relu-default-init": (
        lambda: BiasFreeMLP(input_shape=(3, 8, 8), mean=CENTER, std=0.5, activation="relu", init="default"),
        (3, 8, 8),
    ),
}
NOT_HOMOGENEOUS = {
    "SmallCNN-with-bias": (
        lambda: SmallCNN(in_channels=1, input_size=28, mean=CENTER, std=0.5, zero_init_head=False),
        (1, 28, 28),
    ),
    "BiasFreeCNN-tanh": (
        lambda: BiasFreeCNN(in_channels=1, input_size=28, mean=CENTER, std=0.5, activation="tanh"),
        (1, 28, 28),
    ),
    "BiasFreeMLP-tanh": (lambda: BiasFreeMLP(mean=CENTER, std=0.5, activation="tanh"), (1, 28, 28)),
}


def scaled_logits(factory, shape) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    """``f(x)`` and ``{a: f(c + a (x - c))}`` in float64, eval mode, for a seeded network and batch."""
    torch.manual_seed(0)
    network = factory().double().eval()
    x = torch.rand(3, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = network(x)
        scaled = {a: network(CENTER + a * (x - CENTER)) for a in SCALES}
    return base, scaled


@pytest.mark.parametrize("name", HOMOGENEOUS)
def test_logits_are_positively_homogeneous_about_the_input_center(name):
    base, scaled = scaled_logits(*HOMOGENEOUS[name])
    assert base.abs().max() > 1e-3  # not a trivially zero network
    for a, logits in scaled.items():
        torch.testing.assert_close(logits, a * base, rtol=1e-10, atol=1e-12, msg=f"a = {a}")


@pytest.mark.parametrize("name", NOT_HOMOGENEOUS)
def test_homogeneity_fails_with_a_bias_or_tanh(name):
    """The check above can fail: biases (SmallCNN's default) or tanh break ``f(c + a (x - c)) = a f(x)``."""
    base, scaled = scaled_logits(*NOT_HOMOGENEOUS[name])
    for a, logits in scaled.items():
        assert (logits - a * base).abs().max() > 1e-4 * base.abs().max(), f"a = {a}"


@pytest.mark.parametrize("name", HOMOGENEOUS)
def test_no_bias_parameter_and_no_batchnorm(name):
    torch.manual_seed(0)
    network = HOMOGENEOUS[name][0]()
    assert [n for n, _ in network.named_parameters() if n.endswith("bias")] == []
    layers = [m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert layers and all(layer.bias is None for layer in layers)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules())


def test_small_cnn_keeps_its_biases_and_state_dict_keys_by_default():
    torch.manual_seed(0)
    default = SmallCNN()
    torch.manual_seed(0)
    explicit = SmallCNN(bias=True)
    assert [n for n, _ in default.named_parameters() if n.endswith("bias")] != []
    assert list(default.state_dict()) == list(explicit.state_dict())
    for key, value in default.state_dict().items():
        assert torch.equal(value, explicit.state_dict()[key]), key
    bias_free = SmallCNN(bias=False)
    assert set(bias_free.state_dict()) == {k for k in default.state_dict() if not k.endswith("bias")}


def test_leaky_relu_slope_and_default_activation():
    network = BiasFreeCNN()
    slopes = {m.negative_slope for m in network.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.1}
    assert not any(isinstance(m, (nn.ReLU, nn.Tanh)) for m in network.modules())


@pytest.mark.parametrize(
    ("factory", "layer"),
    [
        (lambda: BiasFreeMLP(hidden=(300, 200)), lambda net: net.layers[4]),  # 300 -> 200: wide, W W^T = I
        (lambda: BiasFreeMLP(hidden=(100, 300)), lambda net: net.layers[4]),  # 100 -> 300: tall, W^T W = I
        (lambda: BiasFreeCNN(), lambda net: net.features[2]),  # conv 32 -> 32 3x3: (32, 288), wide
    ],
    ids=["wide-linear", "tall-linear", "conv"],
)
def test_orthogonal_initialization(factory, layer):
    torch.manual_seed(0)
    weight = layer(factory()).weight.detach().flatten(1).double()
    rows, cols = weight.shape
    gram = weight @ weight.T if rows <= cols else weight.T @ weight
    torch.testing.assert_close(gram, torch.eye(min(rows, cols), dtype=torch.float64), rtol=0, atol=1e-5)


def test_default_initialization_is_pytorchs_and_not_orthogonal():
    """``init="default"`` keeps PyTorch's initialization: the orthogonality above is not an accident."""
    torch.manual_seed(0)
    weight = BiasFreeMLP(hidden=(300, 200), init="default").layers[4].weight.detach().double()
    gram = weight @ weight.T
    assert (gram - torch.eye(200, dtype=torch.float64)).abs().max() > 0.5


@pytest.mark.parametrize("cls", [BiasFreeCNN, BiasFreeMLP])
@pytest.mark.parametrize(
    ("argument", "value"), [("activation", "gelu"), ("init", "xavier"), ("activation", None)]
)
def test_unknown_activation_or_init_is_a_clear_error(cls, argument, value):
    with pytest.raises(ValueError, match=rf"^{argument} must be one of"):
        cls(**{argument: value})


def test_small_cnn_bias_must_be_a_bool():
    with pytest.raises(TypeError, match="bias"):
        SmallCNN(bias=1)
