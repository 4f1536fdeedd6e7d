"""``input_transform`` on every defense (``RobustClassifier``): ``forward(x) = network(t(x))``, attacks run
through it (BPDA makes a non-differentiable ``t`` attackable), it adds nothing to the checkpoint, and the CLI
builds it from a ``class_path`` in front of any defense config."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torchvision.transforms import RandomHorizontalFlip

from lit_robust.attacks import PGD
from lit_robust.cli import LitRobustCLI
from lit_robust.defenses import GFA, StandardTraining
from lit_robust.models import BPDA
from lit_robust.models.transforms import TotalVariationMinimization
from tests.helpers import CONFIGS, NUM_CLASSES, config_args, quick_trainer, tiny_cnn, tiny_data

MODELS = sorted(path.stem for path in (CONFIGS / "model").glob("*.yaml"))


class Flip(nn.Module):
    """A deterministic, differentiable stand-in for an input transform: mirror the image."""

    def forward(self, x: Tensor) -> Tensor:
        return x.flip(-1)


def quantize(x: Tensor) -> Tensor:
    """Non-differentiable: 4 grey levels (its autograd gradient is zero everywhere)."""
    return (x * 3).round() / 3


def test_forward_is_the_network_of_the_transformed_input():
    x = torch.rand(6, 1, 12, 12)
    plain = StandardTraining(tiny_cnn(), num_classes=NUM_CLASSES).eval()
    flipped = StandardTraining(tiny_cnn(), num_classes=NUM_CLASSES, input_transform=Flip()).eval()
    with torch.no_grad():
        assert torch.equal(flipped(x), plain(x.flip(-1)))
        assert not torch.allclose(flipped(x), plain(x))
    assert flipped.state_dict().keys() == plain.state_dict().keys()  # no weights: checkpoints unchanged


def test_a_transform_that_is_not_a_module_is_a_clear_error():
    with pytest.raises(TypeError, match="input_transform.*BPDA"):
        StandardTraining(tiny_cnn(), num_classes=NUM_CLASSES, input_transform=quantize)


def test_bpda_makes_a_non_differentiable_transform_attackable():
    """PGD without random start: through ``quantize`` the gradient is zero and the input does not move;
    through ``BPDA(quantize)`` (identity backward) it moves, inside the ball."""
    data = tiny_data()
    x, y = (t[:8] for t in data.test_set.tensors)
    attack = PGD(eps=0.1, steps=3, random_start="none")

    class Quantize(nn.Module):
        def forward(self, v: Tensor) -> Tensor:
            return quantize(v)

    masked = StandardTraining(tiny_cnn(), num_classes=NUM_CLASSES, input_transform=Quantize())
    assert torch.equal(attack(masked, x, y), x)
    bpda = StandardTraining(tiny_cnn(), num_classes=NUM_CLASSES, input_transform=BPDA(quantize))
    x_adv = attack(bpda, x, y)
    assert torch.isfinite(x_adv).all() and not torch.equal(x_adv, x)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6


@pytest.mark.parametrize("wrap", [False, True], ids=["tvm", "bpda_tvm"])
def test_pgd_runs_through_tvm_in_front(wrap):
    """TVM has BPDA built in; with ``backward="none"`` it masks the gradient, ``BPDA(...)`` restores it."""
    data = tiny_data()
    x, y = (t[:8] for t in data.test_set.tensors)
    tvm = TotalVariationMinimization(iterations=5, seed=0, backward="none" if wrap else "identity")
    model = StandardTraining(tiny_cnn(), num_classes=NUM_CLASSES, input_transform=BPDA(tvm) if wrap else tvm)
    x_adv = PGD(eps=0.1, steps=2, random_start="none")(model, x, y)
    assert torch.isfinite(x_adv).all() and not torch.equal(x_adv, x)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6


def test_training_and_the_training_adversary_see_the_transform(tmp_path):
    seen: list[Tensor] = []

    class Record(nn.Module):
        def forward(self, v: Tensor) -> Tensor:
            seen.append(v)
            return v

    model = StandardTraining(tiny_cnn(), num_classes=NUM_CLASSES, input_transform=Record(),
                             adversary=PGD(eps=0.1, steps=1, random_start="none"))  # fmt: skip
    quick_trainer(tmp_path, limit_train_batches=1, limit_val_batches=0).fit(model, tiny_data())
    assert len(seen) == 2  # the attack's one step at the clean batch, then the training forward at x_adv
    clean, adversarial = seen
    assert not torch.equal(clean, adversarial) and (adversarial - clean).abs().max() <= 0.1 + 1e-6


@pytest.mark.parametrize("model", MODELS)
def test_the_cli_puts_the_transform_in_front_of_every_defense_config(model):
    args = [
        *config_args("data/synthetic", f"model/{model}"),
        "--data.init_args.num_train=4", "--data.init_args.batch_size=4",
        "--model.init_args.input_transform=lit_robust.models.transforms.TotalVariationMinimization",
        "--model.init_args.input_transform.init_args.iterations=3",
        "--model.init_args.input_transform.init_args.seed=1",
    ]  # fmt: skip
    cli = LitRobustCLI(args=args, run=False)
    transform = cli.model.input_transform
    assert isinstance(transform, TotalVariationMinimization) and transform.iterations == 3
    x = torch.rand(2, *cli.datamodule.input_shape)
    expected = TotalVariationMinimization(iterations=3, seed=1).eval()(x)
    assert torch.equal(cli.model.transform_inputs(x), expected)  # what forward feeds the network


@pytest.mark.parametrize("cls", [StandardTraining, GFA])
def test_forward_of_a_cli_built_defense_uses_the_transform(cls):
    name = {StandardTraining: "standard", GFA: "gfa"}[cls]
    args = [
        *config_args("data/synthetic", f"model/{name}"),
        "--model.init_args.input_transform=torchvision.transforms.RandomHorizontalFlip",
        "--model.init_args.input_transform.init_args.p=1.0",  # always: a deterministic mirror
    ]
    model = LitRobustCLI(args=args, run=False).model.eval()
    assert type(model) is cls and isinstance(model.input_transform, RandomHorizontalFlip)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        nn.init.normal_(model.network.classifier[-1].weight)  # SmallCNN's head may start at zero
        assert torch.equal(model(x), model.network(x.flip(-1)))
        assert not torch.equal(model(x), model.network(x))


def test_gfa_trains_on_the_transformed_inputs_and_aligns_at_the_raw_ones():
    halve = BPDA(lambda v: v / 2)  # a transform the network must see; identity backward
    network = tiny_cnn().eval()
    x, y = next(iter(tiny_data().train_dataloader()))
    with_transform = GFA(network, num_classes=NUM_CLASSES, input_transform=halve).compute_loss(x, y)
    without = GFA(network, num_classes=NUM_CLASSES).compute_loss(x / 2, y)
    torch.testing.assert_close(with_transform["ce"], without["ce"])  # the task loss at t(x)
    for name in ("gfa_abs_cos/input", "gfa_reg"):
        assert torch.isfinite(with_transform[name]), name
