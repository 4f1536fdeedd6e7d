"""Deep Defense (Yan et al., NeurIPS 2018) against its formula, its training-step decisions, ``init_from``
and, end to end, the robustness it buys a LeNet fine-tuned on the MNIST sample."""

from __future__ import annotations

import copy
import math
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_robust.callbacks.minimal_perturbation import MinimalPerturbation
from lit_robust.cli import LitRobustCLI
from lit_robust.data import MNISTSampleDataModule
from lit_robust.defenses.base import load_network_state
from lit_robust.defenses.deep_defense import DeepDefense, deep_defense_penalty
from lit_robust.defenses.standard import StandardTraining
from lit_robust.models.lenet import LeNet
from tests.helpers import (
    NUM_CLASSES,
    assert_every_parameter_has_a_gradient,
    config_args,
    quick_trainer,
    tiny_cnn,
    tiny_data,
)


# ------------------------------------------------------------------------------ naive reference
def _reference_deepfool(
    net: nn.Module,
    x0: Tensor,
    steps: int,
    overshoot: float,
    norm_eps: float,
    source: int | None = None,
    target: int | None = None,
    num_candidates: int | None = None,
) -> Tensor:
    """deep_defense.md (b) for one sample ``x0`` (no batch dimension), one class at a time."""
    x0 = x0[None]
    logits = net(x0)[0].detach()
    if target is None:
        others = [int(k) for k in logits.argsort(descending=True) if int(k) != source][:num_candidates]
    r_tot = torch.zeros_like(x0)
    for _ in range(steps):
        label = int(net(x0 + (1 + overshoot) * r_tot).argmax())
        if (target is None and label != source) or (target is not None and label == target):
            break
        point = (x0 + r_tot).detach().requires_grad_(True)
        out = net(point)[0]
        if target is None:
            s, candidates = source, others
        else:
            s = max((k for k in range(len(out)) if k != target), key=lambda k: float(out[k].detach()))
            candidates = [target]
        best = math.inf
        for k in candidates:
            (w,) = torch.autograd.grad(out[k] - out[s], point, retain_graph=True)
            size = float((w + norm_eps).norm())
            if abs(float((out[k] - out[s]).detach())) / size < best:
                best, step = abs(float((out[k] - out[s]).detach())) / size, w / size
        r_tot = r_tot + best * step
    return ((1 + overshoot) * r_tot)[0].detach()


def _reference_penalty(
    net: nn.Module,
    x: Tensor,
    y: Tensor,
    lam: float,
    c: float,
    d: float,
    steps: int,
    overshoot: float,
    norm_eps: float,
    num_candidates: int,
) -> tuple[float, float, Tensor]:
    """``lam/N (sum_T exp(-c rho) + sum_F exp(d rho))`` by a loop over the samples."""
    correct_sum, wrong_sum, groups = 0.0, 0.0, []
    for x0, y0 in zip(x, y, strict=True):
        label = int(y0)
        if int(net(x0[None]).argmax()) == label:
            delta = _reference_deepfool(
                net, x0, steps, overshoot, norm_eps, source=label, num_candidates=num_candidates
            )
            correct_sum += math.exp(-c * float(delta.norm() / x0.norm()))
            groups.append(True)
        else:
            delta = _reference_deepfool(net, x0, steps, overshoot, norm_eps, target=label)
            wrong_sum += math.exp(d * float(delta.norm() / x0.norm()))
            groups.append(False)
    return lam * correct_sum / len(x), lam * wrong_sum / len(x), torch.tensor(groups)


def double_batch() -> tuple[Tensor, Tensor]:
    x, y = next(iter(tiny_data().train_dataloader()))
    return x.double(), y


# ------------------------------------------------------------------------------ the formula
@pytest.mark.parametrize("num_candidates", [10, 2])
def test_penalty_equals_a_per_sample_loop_of_the_formula(num_candidates):
    x, y = double_batch()
    network = tiny_cnn().double().eval()
    model = DeepDefense(
        network, lam=15.0, c=25.0, d=5.0, num_candidates=num_candidates, num_classes=NUM_CLASSES
    )
    model.eval()  # no dropout in the CE forward: the reference sees the same network

    terms = model.compute_loss(x, y)

    others = min(num_candidates, NUM_CLASSES) - 1
    correct, wrong, groups = _reference_penalty(network, x, y, 15.0, 25.0, 5.0, 5, 0.02, 1e-5, others)
    assert 0 < groups.sum() < len(groups)  # both terms are exercised
    assert terms["n_correct"] == groups.sum() and terms["n_wrong"] == (~groups).sum()
    torch.testing.assert_close(terms["df_reg_correct"].item(), correct, rtol=1e-9, atol=0)
    torch.testing.assert_close(terms["df_reg_wrong"].item(), wrong, rtol=1e-9, atol=0)
    torch.testing.assert_close(terms["deep_defense_reg"].item(), correct + wrong, rtol=1e-9, atol=0)
    torch.testing.assert_close(terms["loss"], F.cross_entropy(network(x), y) + terms["deep_defense_reg"])


def test_hand_set_rho_go_to_their_terms_and_empty_groups_give_zero():
    rho_t, rho_f = torch.tensor([0.1, 0.3]), torch.tensor([0.05])
    correct, wrong = deep_defense_penalty(rho_t, rho_f, 4, lam=2.0, c=10.0, d=3.0)
    torch.testing.assert_close(correct, 2.0 * (math.exp(-1.0) + math.exp(-3.0)) / 4 * torch.ones(()))
    torch.testing.assert_close(wrong, 2.0 * math.exp(0.15) / 4 * torch.ones(()))
    empty = torch.zeros(0)
    assert deep_defense_penalty(empty, rho_f, 4, 2.0, 10.0, 3.0)[0] == 0
    assert deep_defense_penalty(rho_t, empty, 4, 2.0, 10.0, 3.0)[1] == 0
    clipped = deep_defense_penalty(rho_t, torch.tensor([2.0]), 4, 2.0, 10.0, 3.0, exp_clip=50.0)[1]
    torch.testing.assert_close(clipped, 2.0 * 50.0 / 4 * torch.ones(()))


def test_lam_zero_gives_exactly_the_cross_entropy_gradients_with_frozen_batchnorm():
    x, y = next(iter(tiny_data().train_dataloader()))
    model = DeepDefense(tiny_cnn(), lam=0.0, num_classes=NUM_CLASSES)
    reference = tiny_cnn()
    model.train()
    reference.train()
    for module in reference.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()
    torch.manual_seed(0)
    terms = model.compute_loss(x, y)
    terms["loss"].backward()
    torch.manual_seed(0)
    F.cross_entropy(reference(x), y).backward()
    assert torch.equal(terms["loss"], terms["ce"]) and terms["deep_defense_reg"] == 0
    for ours, theirs in zip(model.network.parameters(), reference.parameters(), strict=True):
        assert torch.equal(ours.grad, theirs.grad)
    for ours, theirs in zip(model.network.buffers(), reference.buffers(), strict=True):
        assert torch.equal(ours, theirs)


def test_the_penalty_pushes_linear_boundaries_away_from_correct_points():
    """Descending the correct-sample term alone raises the closed-form rho at every step (the sign of
    the gradient that flows through the unrolled loop)."""
    torch.manual_seed(0)
    network = nn.Sequential(nn.Flatten(), nn.Linear(6, 3)).double()
    x = torch.rand(20, 6, dtype=torch.float64)
    y = network(x).argmax(1)  # every sample correct: only the T term
    model = DeepDefense(network, lam=1.0, c=5.0, df_steps_train=3, norm_eps=0.0, num_classes=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)

    def closed_form_objective() -> float:
        weight, bias = network[1].weight.detach(), network[1].bias.detach()
        logits = x @ weight.T + bias
        assert torch.equal(logits.argmax(1), y)
        gaps = (logits - logits.gather(1, y[:, None])).abs()
        distance = (gaps / (weight[None] - weight[y][:, None]).norm(dim=2)).scatter(1, y[:, None], math.inf)
        rho = 1.02 * distance.amin(1) / x.norm(dim=1)
        return float(torch.exp(-5.0 * rho).sum())

    values = [closed_form_objective()]
    for _ in range(5):
        optimizer.zero_grad()
        model.penalty_terms(x, y, network(x))["deep_defense_reg"].backward()
        optimizer.step()
        values.append(closed_form_objective())
    assert all(after < before for before, after in zip(values, values[1:], strict=False))


# -------------------------------------------------------------------------- training step
def fit_trainer(tmp_path: Path, **kwargs) -> L.Trainer:
    return quick_trainer(tmp_path, **{"inference_mode": False, **kwargs})


def test_batchnorm_statistics_and_parameters_stay_frozen_in_training(tmp_path):
    model = DeepDefense(tiny_cnn(), num_classes=NUM_CLASSES, optimizer=partial(torch.optim.SGD, lr=0.1))
    bn = model.network[2]
    before = {k: v.clone() for k, v in bn.state_dict().items()}
    conv = model.network[1].weight.detach().clone()
    trainer = fit_trainer(tmp_path, enable_checkpointing=False)
    trainer.fit(model, datamodule=tiny_data())
    for key, value in bn.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not torch.equal(model.network[1].weight, conv)
    names = {
        name for name, p in model.named_parameters() if any(p is q for q in model.optimizer_parameters())
    }
    assert names == {name for name in dict(model.named_parameters()) if not name.startswith("network.2.")}
    metrics = trainer.callback_metrics
    expected = {"ce", "deep_defense_reg", "df_reg_correct", "df_reg_wrong", "rho_mean", "frac_not_fooled"}
    assert {f"train/{key}" for key in expected | {"n_correct", "n_wrong", "loss"}} <= set(metrics)
    assert math.isfinite(metrics["train/loss"]) and metrics["train/rho_mean"] > 0


def test_every_parameter_gets_a_gradient_and_detaching_keeps_the_value():
    x, y = next(iter(tiny_data().train_dataloader()))
    grads, losses = [], []
    for detach in (False, True):
        model = DeepDefense(tiny_cnn(), detach_prev_r=detach, num_classes=NUM_CLASSES).eval()
        terms = model.compute_loss(x, y)
        terms["deep_defense_reg"].backward()
        assert_every_parameter_has_a_gradient(model)
        grads.append(model.network[1].weight.grad.clone())
        losses.append(terms["deep_defense_reg"].detach())
    torch.testing.assert_close(losses[0], losses[1])
    assert not torch.allclose(grads[0], grads[1])


def test_normalized_rho_space_measures_after_normalize():
    x, y = next(iter(tiny_data().train_dataloader()))
    pixel = DeepDefense(tiny_cnn(), num_classes=NUM_CLASSES).eval().compute_loss(x, y)
    normalized = (
        DeepDefense(tiny_cnn(), rho_space="normalized", num_classes=NUM_CLASSES).eval().compute_loss(x, y)
    )
    # tiny_cnn's Normalize(0.5, 0.3): ||dz|| = ||dx|| / 0.3 while ||z|| = ||x - 0.5|| / 0.3 (pixel ||x||)
    assert normalized["rho_mean"] != pixel["rho_mean"] and math.isfinite(normalized["rho_mean"])


def with_blank_images(x: Tensor, y: Tensor, blanks: int = NUM_CLASSES) -> tuple[Tensor, Tensor]:
    """``x`` followed by ``blanks`` all-zero images labelled 0, 1, ... (most of them misclassified)."""
    zeros = torch.zeros(blanks, *x.shape[1:], dtype=x.dtype)
    return torch.cat([x, zeros]), torch.cat([y, torch.arange(blanks) % NUM_CLASSES])


def test_a_training_step_on_all_zero_images_has_a_finite_loss_and_gradients():
    """rho = ||dx|| / ||x|| is undefined at x = 0: such images are left out of the penalty, not an
    infinite exp(d rho) that ends training at step 1."""
    x, y = next(iter(tiny_data().train_dataloader()))
    x, y = with_blank_images(x[:8], y[:8])
    model = DeepDefense(tiny_cnn(), num_classes=NUM_CLASSES)
    model.train()
    terms = model.compute_loss(x, y)
    terms["loss"].backward()
    assert math.isfinite(terms["loss"].item()) and math.isfinite(terms["rho_mean"])
    assert terms["n_blank"] == NUM_CLASSES and terms["df_reg_wrong"] > 0  # real images still penalized
    assert_every_parameter_has_a_gradient(model)


def test_blank_images_add_nothing_to_the_penalty_and_count_in_the_batch_size():
    x, y = double_batch()
    x, y = x[:12], y[:12]
    network = tiny_cnn().double()
    model = DeepDefense(network, num_classes=NUM_CLASSES).eval()
    plain = model.compute_loss(x, y)
    padded = model.compute_loss(*with_blank_images(x, y))
    assert plain["n_blank"] == 0 and padded["n_blank"] == NUM_CLASSES
    for key in ("df_reg_correct", "df_reg_wrong"):  # lam / N with N = all 16 images, blank ones included
        torch.testing.assert_close(padded[key] * (12 + NUM_CLASSES), plain[key] * 12, rtol=1e-12, atol=0)
    for key in ("rho_correct", "rho_wrong", "frac_not_fooled"):
        torch.testing.assert_close(padded[key], plain[key], rtol=1e-12, atol=0)
    # in the normalized space the blank image is the Normalize mean (tiny_cnn: 0.5), not the zero image
    normalized = DeepDefense(network, rho_space="normalized", num_classes=NUM_CLASSES).eval()
    gray = torch.full((2, *x.shape[1:]), 0.5, dtype=x.dtype)
    assert normalized.compute_loss(torch.cat([x, gray]), torch.cat([y, y[:2]]))["n_blank"] == 2
    assert normalized.compute_loss(*with_blank_images(x, y))["n_blank"] == 0


def test_bad_arguments_are_clear_errors():
    for kwargs, name in [
        ({"lam": -1.0}, "lam"), ({"c": 0.0}, "^c must be > 0"), ({"d": -1.0}, "^d must be > 0"),
        ({"df_steps_train": 0}, "df_steps_train"),
        ({"overshoot": -0.1}, "overshoot"), ({"num_candidates": 1}, "num_candidates"),
        ({"norm_eps": -1.0}, "norm_eps"), ({"exp_clip": 0.0}, "exp_clip"),
        ({"rho_space": "zca"}, "rho_space"),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=name):
            DeepDefense(tiny_cnn(), **kwargs)


# ------------------------------------------------------------------------------- init_from
def states_equal(first: nn.Module, second: nn.Module) -> bool:
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_init_from_a_checkpoint_of_another_defense(tmp_path):
    source = StandardTraining(
        tiny_cnn(seed=3), num_classes=NUM_CLASSES, optimizer=partial(torch.optim.SGD, lr=0.1)
    )
    trainer = fit_trainer(tmp_path / "reference")
    trainer.fit(source, datamodule=tiny_data())
    reference = trainer.checkpoint_callback.best_model_path

    model = DeepDefense(tiny_cnn(seed=0), init_from=reference, num_classes=NUM_CLASSES)
    assert not states_equal(model.network, source.network)
    model.on_fit_start()
    assert states_equal(model.network, source.network)

    tuned = DeepDefense(
        tiny_cnn(seed=0),
        init_from=reference,
        num_classes=NUM_CLASSES,
        optimizer=partial(torch.optim.SGD, lr=0.1),
    )
    trainer = fit_trainer(tmp_path / "tuned")
    trainer.fit(tuned, datamodule=tiny_data())
    assert not states_equal(tuned.network, source.network)  # trained from the reference, then moved
    restored = DeepDefense.load_from_checkpoint(
        trainer.checkpoint_callback.best_model_path, network=tiny_cnn(seed=1), init_from=reference
    )
    restored.on_test_start()  # the checkpoint's weights win over init_from
    assert states_equal(restored.network, tuned.network)


def test_init_from_plain_state_dicts(tmp_path):
    donor = tiny_cnn(seed=5)
    torch.save(donor.state_dict(), tmp_path / "network.pt")
    torch.save(StandardTraining(donor, num_classes=NUM_CLASSES).state_dict(), tmp_path / "module.pt")
    for name in ("network.pt", "module.pt"):
        model = StandardTraining(tiny_cnn(seed=0), num_classes=NUM_CLASSES, init_from=str(tmp_path / name))
        model.on_fit_start()
        assert states_equal(model.network, donor)


def test_init_from_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="init_from: no file at"):
        load_network_state(tmp_path / "missing.ckpt", tiny_cnn())
    torch.save(LeNet().state_dict(), tmp_path / "lenet.pt")
    with pytest.raises(ValueError, match="missing keys"):
        load_network_state(tmp_path / "lenet.pt", tiny_cnn())
    torch.save(tiny_cnn(num_classes=7).state_dict(), tmp_path / "seven.pt")
    with pytest.raises(ValueError, match="shape mismatches"):
        load_network_state(tmp_path / "seven.pt", tiny_cnn())


def test_init_from_on_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    network = LeNet(mean=[0.1307], std=[0.3081], conv_channels=(20, 50), hidden=(500,), first_padding=0,
                    conv_activation=False)  # fmt: skip
    torch.save(StandardTraining(network).state_dict(), tmp_path / "reference.pt")
    args = config_args("data/synthetic", "model/deep_defense")
    args += ["--trainer.limit_val_batches=1", "--trainer.logger=false"]
    cli = LitRobustCLI(args=[*args, "--model.init_args.init_from", str(tmp_path / "reference.pt")], run=False)
    assert isinstance(cli.model, DeepDefense) and cli.model.lam == 15.0
    cli.trainer.validate(cli.model, datamodule=cli.datamodule)
    assert states_equal(cli.model.network, network)
    cli = LitRobustCLI(args=[*args, "--model.init_args.init_from", "nowhere.ckpt"], run=False)
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        cli.trainer.validate(cli.model, datamodule=cli.datamodule)


# ------------------------------------------------------------------ end to end on the sample
@pytest.fixture(scope="module")
def fine_tuned_lenets() -> dict[str, dict[str, float]]:
    """A LeNet-5 trained 3 epochs on the MNIST sample, then fine-tuned 20 steps (batch 50, SGD lr 0.005,
    momentum 0.9) with Deep Defense's defaults (lam 15, c 25, d 5, u 5, all classes) and with lam 0 on the
    same batches; test accuracy (1,000 digits) and rho_2 (DeepFool-50, 500 digits) of each. One thread:
    on two shared cores, two threads are many times slower."""
    datamodule = MNISTSampleDataModule(batch_size=50)
    datamodule.setup()
    images, labels = datamodule.train_set.tensors
    L.seed_everything(0)
    network = LeNet(mean=0.1307, std=0.3081)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9)
    for _ in range(3):
        for batch in torch.randperm(len(images)).split(50):
            optimizer.zero_grad()
            F.cross_entropy(network(images[batch]), labels[batch]).backward()
            optimizer.step()

    def evaluate(model: L.LightningModule) -> dict[str, float]:
        rho2 = MinimalPerturbation(rho2_steps=[50], num_samples=500)
        trainer = L.Trainer(
            accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
            inference_mode=False, callbacks=[rho2],
        )  # fmt: skip
        trainer.test(model, datamodule=datamodule, verbose=False)
        return {key: float(trainer.callback_metrics[f"test/{key}"]) for key in ("acc", "deepfool_rho2")}

    results = {"reference": evaluate(StandardTraining(copy.deepcopy(network)))}
    for lam in (15.0, 0.0):
        model = DeepDefense(
            copy.deepcopy(network), lam=lam, optimizer=partial(torch.optim.SGD, lr=0.005, momentum=0.9)
        )
        trainer = L.Trainer(
            max_steps=20, limit_val_batches=0, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False,
        )  # fmt: skip
        L.seed_everything(1)  # the same batches for both
        trainer.fit(model, datamodule=datamodule)
        results[f"lam={lam:g}"] = evaluate(model)
    print(f"\nLeNet on the MNIST sample, 20 fine-tuning steps: {results}")
    return results


def test_fine_tuning_raises_rho2_over_lam_zero_at_the_same_accuracy(fine_tuned_lenets):
    defended, vanilla = fine_tuned_lenets["lam=15"], fine_tuned_lenets["lam=0"]
    assert defended["deepfool_rho2"] > 1.15 * vanilla["deepfool_rho2"]
    assert abs(defended["acc"] - vanilla["acc"]) <= 0.01
    assert vanilla["acc"] > 0.9
