"""Any network on any dataset from the CLI: every ``configs/model/*.yaml`` composed with an MNIST-shaped and
a CIFAR-shaped DataModule and with every ``configs/network/*.yaml`` that takes that shape, one training
step each; a network that cannot take the data is a clear error naming the network and the data's shape.

The DataModule is ``configs/data/synthetic.yaml`` with ``input_shape`` 1x28x28 or 3x32x32 (four images,
one batch). Nothing in the model or network configs names a shape or the data's statistics: they come from
the DataModule (``lit_robust.cli.fill_network_arguments``), and the test checks that they arrived.

Kept fast (about a minute on two cores): one step of batch 4, no validation, no checkpoint, no evaluation
attacks, and each defense's inner loops cut to one iteration (``CHEAP``). The heavy networks (``HEAVY``:
ResNet-56, PreAct ResNet-18, WRN-34-10, VGG-16, torchvision's ResNet-50; one WRN-34-10 step alone costs
seconds) take one step of standard training only, batch 2, and WRN-34-10 on the CIFAR shape only: their
layers are the same under every defense, and ``tests/models/test_architectures.py`` covers their double
backprop through taps.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from lit_robust.cli import LitRobustCLI, main
from lit_robust.models import Normalize
from lit_robust.models.normalize import InputSpec
from tests.helpers import CONFIGS, config_args

SHAPES = {"mnist": (1, 28, 28), "cifar": (3, 32, 32)}
MODELS = sorted(path.stem for path in (CONFIGS / "model").glob("*.yaml"))
# Pretrained networks whose weights come from a file, not trained here: tested where they are named.
PRETRAINED = {"robustbench": "tests/models/test_robustbench_model.py"}
NETWORKS = sorted(path.stem for path in (CONFIGS / "network").glob("*.yaml") if path.stem not in PRETRAINED)

# The shapes each network config takes. The others must fail with a clear error (test below).
FITS = {
    "small_cnn": {"mnist", "cifar"},
    "small_cnn_bias_free": {"mnist", "cifar"},
    "bias_free_cnn": {"mnist", "cifar"},  # any size of at least 16 x 16
    "bias_free_mlp": {"mnist", "cifar"},  # any shape (the input layer is sized from the data)
    "lenet": {"mnist", "cifar"},
    "lenet_caffe": {"mnist", "cifar"},
    "mlp": {"mnist", "cifar"},
    "convnet": {"cifar"},  # 32 x 32 only
    "resnet20": {"mnist", "cifar"},
    "resnet56": {"mnist", "cifar"},
    "preact_resnet18": {"mnist", "cifar"},
    "wrn34_10": {"mnist", "cifar"},
    "vgg16": {"cifar"},  # at least 32 x 32
    "resnet50": {"cifar"},  # RGB only
}
# Heavy networks: one step of standard training, batch 2, on these shapes only (see the module docstring).
HEAVY = {
    "resnet56": {"mnist", "cifar"},
    "preact_resnet18": {"mnist", "cifar"},
    "wrn34_10": {"cifar"},
    "vgg16": {"cifar"},
    "resnet50": {"cifar"},
}
# One iteration of each defense's inner loop: the composition is under test, not the defense.
CHEAP = {
    "adversarial_training": ["--model.init_args.attack.init_args.steps=1"],
    "trades": ["--model.init_args.attack.init_args.steps=1"],
    "local_flatness": ["--model.init_args.steps=1"],
    "deep_defense": ["--model.init_args.df_steps_train=1", "--model.init_args.num_candidates=2"],
}
# Statistics a defense config writes on purpose (its paper's), which win over the data's.
EXPLICIT_STATISTICS = {"gfa": ([0.5], [0.5]), "gfa_paper": ([0.5], [0.5]), "local_flatness": ([0.0], [1.0])}
# WNLL composes with the network group (it wraps the network as its backbone, see the WNLL test below);
# for time, its steps (a template solve per batch) are left out of the light cases.
NETWORK_GROUP_MODELS = [model for model in MODELS if model != "wnll"]

QUIET = [
    "--trainer.max_epochs=1",
    "--trainer.limit_val_batches=0",
    "--trainer.num_sanity_val_steps=0",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--checkpoint.monitor=null",
    "--checkpoint.save_top_k=0",
    "--checkpoint.save_last=false",
    "--robustness.attacks=[]",
]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything a run writes lands in the test's folder


def composed(model: str, network: str | None, shape: str, batch: int = 4) -> list[str]:
    """``--config`` data, model and network groups, then the overrides that make it one cheap step."""
    groups = ["data/synthetic", f"model/{model}", *([f"network/{network}"] if network else [])]
    channels, height, width = SHAPES[shape]
    data = [
        f"--data.init_args.input_shape=[{channels}, {height}, {width}]",
        f"--data.init_args.num_train={batch}",
        f"--data.init_args.batch_size={batch}",
        "--data.init_args.num_val=2",
        "--data.init_args.num_test=2",
    ]
    return [*config_args(*groups), *QUIET, *data, *CHEAP.get(model, [])]


def network_of(cli: LitRobustCLI) -> torch.nn.Module:
    """The network the config chose (WNLL wraps its backbone with a buffer block and a head)."""
    return getattr(cli.model.network, "backbone", cli.model.network)


def one_training_step(model: str, network: str | None, shape: str, batch: int = 4) -> LitRobustCLI:
    """Build the composed run, check the data's facts reached the network, train one step."""
    cli = LitRobustCLI(args=composed(model, network, shape, batch), run=False)
    net, datamodule = network_of(cli), cli.datamodule
    normalize = next(module for module in net.modules() if isinstance(module, Normalize))
    mean, std = EXPLICIT_STATISTICS.get(model, (list(datamodule.mean), list(datamodule.std)))
    assert normalize.mean.flatten().tolist() == pytest.approx(mean)
    assert normalize.std.flatten().tolist() == pytest.approx(std)
    spec = getattr(net, "input_spec", None)
    assert isinstance(spec, InputSpec) and spec.accepts((batch, *SHAPES[shape]))
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 1
    loss = cli.trainer.callback_metrics["train/loss"]
    assert math.isfinite(loss.item())
    return cli


def test_every_network_config_is_classified():
    assert set(NETWORKS) == set(FITS)
    assert set(HEAVY) <= set(FITS) and all(HEAVY[name] <= FITS[name] for name in HEAVY)
    assert set(CHEAP) | set(EXPLICIT_STATISTICS) <= set(MODELS)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("model", MODELS)
def test_defense_config_alone_takes_the_data(model, shape):
    """``--config data --config model`` with the model config's default network, on both shapes."""
    one_training_step(model, None, shape)


LIGHT_CASES = [
    pytest.param(model, network, shape, id=f"{model}-{network}-{shape}")
    for model in NETWORK_GROUP_MODELS
    for network in NETWORKS
    if network not in HEAVY
    for shape in SHAPES
    if shape in FITS[network]
]


@pytest.mark.parametrize(("model", "network", "shape"), LIGHT_CASES)
def test_defense_config_with_network_config(model, network, shape):
    one_training_step(model, network, shape)


HEAVY_CASES = [
    pytest.param(network, shape, id=f"{network}-{shape}") for network in HEAVY for shape in HEAVY[network]
]


@pytest.mark.parametrize(("network", "shape"), HEAVY_CASES)
def test_heavy_network_config_takes_one_standard_step(network, shape):
    one_training_step("standard", network, shape, batch=2)


def test_wnll_with_a_network_config():
    """WNLL wraps the network group's network as its backbone, the feature width read from the network."""
    cli = LitRobustCLI(args=composed("wnll", "resnet20", "cifar"), run=False)
    assert type(network_of(cli)).__name__ == "ResNet20" and cli.model.network.feature_dim == 64


MISFITS = [
    pytest.param(network, shape, id=f"{network}-{shape}")
    for network in NETWORKS
    for shape in SHAPES
    if shape not in FITS[network]
]
NAMES = {"convnet": "ConvNet", "vgg16": "VGG16", "resnet50": r"TorchvisionModel\('resnet50'\)"}


@pytest.mark.parametrize(("network", "shape"), MISFITS)
def test_a_network_that_cannot_take_the_data_is_a_clear_error(network, shape, capsys):
    shape_text = str(SHAPES[shape]).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(SystemExit):
        main(["fit", *composed("standard", network, shape)])
    message = rf"lit-robust: error: {NAMES[network]}.* cannot take images of shape {shape_text}"
    assert re.search(message, capsys.readouterr().err)
    assert not Path("runs").exists()  # it failed at setup, before any training: no folder is left


def test_an_explicit_shape_that_does_not_fit_the_data_is_a_clear_error():
    args = [*composed("standard", "small_cnn", "cifar"), "--model.init_args.network.init_args.in_channels=1"]
    cli = LitRobustCLI(args=args, run=False)
    assert cli.model.network.input_spec.channels == 1  # the written value won over the data's
    message = r"SmallCNN\(in_channels=1, input_size=32\) cannot take images of shape \(3, 32, 32\)"
    with pytest.raises(ValueError, match=message):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
