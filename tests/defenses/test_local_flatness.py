"""Local flatness regularization (Xu et al., ICIP 2020) against its formula and the official code."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lit_robust.cli import main
from lit_robust.defenses.input_gradient import InputGradientRegularization
from lit_robust.defenses.local_flatness import LocalFlatnessRegularization
from lit_robust.functional.input_gradient import cross_entropy_gradient_norms
from lit_robust.functional.local_flatness import GRADIENT_NORMS, maximize_gradient_norm
from lit_robust.models import Normalize
from tests.helpers import (
    NUM_CLASSES,
    assert_every_parameter_has_a_gradient,
    assert_same_step_as_standard_training,
    config_args,
    logged_scalars,
    tiny_cnn,
    tiny_data,
)

LFR = LocalFlatnessRegularization


def tanh_cnn(seed: int = 0, dtype=torch.float64) -> nn.Module:
    """No BatchNorm, no dropout: the loss of one sample does not depend on the rest of the batch."""
    torch.manual_seed(seed)
    return nn.Sequential(
        Normalize(0.5, 0.3),
        nn.Conv2d(1, 4, 3, padding=1),
        nn.Tanh(),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, NUM_CLASSES),
    ).to(dtype)


def batch(n: int = 16, dtype=torch.float64):
    x, y = next(iter(tiny_data().train_dataloader()))
    return x[:n].to(dtype), y[:n]


def _reference_penalty(network: nn.Module, x_tilde, y, q: int = 1):
    """The formula, one sample at a time: mean_b || d/dx CE(f(x_b), y_b) ||_q."""
    norms = []
    for b in range(len(x_tilde)):
        xb = x_tilde[b : b + 1].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(network(xb), y[b : b + 1]), xb)
        norms.append(grad.abs().sum() if q == 1 else grad.pow(2).sum().sqrt())
    return torch.stack(norms).mean()


# ----------------------------------------------------------------------------- inner maximization
@pytest.mark.parametrize("p", ["inf", "2"])
@pytest.mark.parametrize("steps", [1, 4, 15])
def test_inner_ascent_stays_in_the_ball_and_in_the_box(trained_tiny, p, steps):
    network, x, y = trained_tiny
    eps = 0.1 if p == "inf" else 1.0
    x_t = maximize_gradient_norm(
        network, x, y, eps=eps, alpha=0.05, steps=steps, p=p, q=1 if p == "inf" else 2
    )
    assert x_t.min() >= 0 and x_t.max() <= 1
    delta = (x_t - x).flatten(1)
    if p == "inf":
        assert delta.abs().max() <= eps + 1e-6
    else:
        assert delta.norm(dim=1).max() <= eps + 1e-5
    assert delta.abs().max() > 0.5 * min(eps, steps * 0.05 / (1 if p == "inf" else 12))  # it moved


@pytest.mark.parametrize(("p", "q", "eps", "alpha"), [("inf", 1, 0.1, 0.01), ("2", 2, 1.0, 0.1)])
def test_inner_ascent_raises_the_gradient_norm_it_maximizes(trained_tiny, p, q, eps, alpha):
    network, x, y = trained_tiny  # eval mode, trained to ~100%: small gradients at x
    torch.manual_seed(0)
    start = maximize_gradient_norm(network, x, y, eps, alpha, steps=0, p=p, q=q)
    torch.manual_seed(0)
    end = maximize_gradient_norm(network, x, y, eps, alpha, steps=20, p=p, q=q)
    r_start = cross_entropy_gradient_norms(network, start.requires_grad_(True), y, GRADIENT_NORMS[q])
    r_end = cross_entropy_gradient_norms(network, end.requires_grad_(True), y, GRADIENT_NORMS[q])
    assert r_end.mean() > 1.5 * r_start.mean(), (r_start.mean(), r_end.mean())
    assert (r_end >= r_start).float().mean() > 0.9


@pytest.mark.parametrize("p", ["inf", "2"])
def test_inner_ascent_on_a_linear_model_ends_at_the_closed_form_point(p):
    """Spec (h) 3. Two classes, z = Wx + b: ||grad l||_q = p_other ||w_o - w_y||_q grows along w_o - w_y,
    so sign ascent ends at the corner x + eps sign(w_o - w_y) and L2 ascent at x + eps (w_o - w_y) / ||.||_2.
    """
    torch.manual_seed(0)
    dim, n = 20, 8
    network = nn.Linear(dim, 2).double()
    x = 0.4 + 0.2 * torch.rand(n, dim, dtype=torch.float64)
    y = torch.randint(0, 2, (n,))
    w = network.weight.detach()
    direction = w[1 - y] - w[y]
    q = 1 if p == "inf" else 2
    one_step = maximize_gradient_norm(network, x, y, eps=0.3, alpha=0.01, steps=1, p=p, q=q, init_std=0.0)
    x_t = maximize_gradient_norm(network, x, y, eps=0.3, alpha=0.01, steps=40, p=p, q=q, init_std=0.0)
    if p == "inf":
        torch.testing.assert_close(one_step, x + 0.01 * direction.sign())
        torch.testing.assert_close(x_t, x + 0.3 * direction.sign())
    else:
        unit = direction / direction.norm(dim=1, keepdim=True)
        torch.testing.assert_close(one_step, x + 0.01 * unit)
        torch.testing.assert_close(x_t, x + 0.3 * unit)


def test_inner_ascent_starts_from_small_gaussian_noise(trained_tiny):
    network, x, y = trained_tiny
    start = maximize_gradient_norm(network, x, y, eps=0.1, alpha=0.01, steps=0)
    delta = (start - x)[(x > 0.01) & (x < 0.99)]  # pixels the [0, 1] clip does not touch
    assert 0.0008 < delta.std() < 0.0012 and delta.mean().abs() < 1e-4
    torch.testing.assert_close(maximize_gradient_norm(network, x, y, 0.1, 0.01, steps=0, init_std=0.0), x)


def test_inner_loop_leaves_modes_batchnorm_statistics_and_parameter_grads_alone():
    model = LFR(network=tiny_cnn(), eps=0.1, alpha=0.05, steps=3, num_classes=NUM_CLASSES)
    model.train()
    model.network[6].eval()  # a module kept in eval mode on purpose must stay so
    modes = {name: m.training for name, m in model.named_modules()}
    stats = {k: v.clone() for k, v in model.network[2].state_dict().items()}
    x, y = next(iter(tiny_data().train_dataloader()))
    x_t = model.local_flatness_point(x, y)
    assert x_t.shape == x.shape and not x_t.requires_grad
    assert {name: m.training for name, m in model.named_modules()} == modes
    for key, value in model.network[2].state_dict().items():
        torch.testing.assert_close(value, stats[key], rtol=0, atol=0, msg=key)
    for name, parameter in model.named_parameters():
        assert parameter.grad is None, name
        assert parameter.requires_grad, name


@pytest.mark.parametrize("penalty_bn_mode", ["train", "eval"])
def test_batchnorm_statistics_follow_penalty_bn_mode(penalty_bn_mode):
    """Default (official): clean and penalty forward both update BN; "eval": only the clean forward."""
    x, y = next(iter(tiny_data().train_dataloader()))
    model = LFR(network=tiny_cnn(), eps=0.1, alpha=0.05, steps=2, penalty_bn_mode=penalty_bn_mode)
    model.train()
    model.compute_loss(x, y)
    reference = tiny_cnn().train()
    reference(x)  # one clean forward's update
    bn, ref_bn = model.network[2], reference[2]
    assert bn.training and ref_bn.num_batches_tracked == 1
    assert bn.num_batches_tracked == (1 if penalty_bn_mode == "eval" else 2)
    same = torch.allclose(bn.running_mean, ref_bn.running_mean) and torch.allclose(
        bn.running_var, ref_bn.running_var
    )
    assert same == (penalty_bn_mode == "eval")


# ------------------------------------------------------------------------------------ the penalty
def test_sum_reduced_per_sample_form_equals_the_official_batch_mean_times_b():
    """Spec (h) 1: B · mean_b ||grad (mean-reduced CE)_b||_1 = mean_b ||grad l_b||_1 = lfr_reg / lam."""
    network = tanh_cnn()
    x, y = batch(5)
    model = LFR(network=network, eps=0.1, alpha=0.02, steps=3, lam=0.5, num_classes=NUM_CLASSES)
    torch.manual_seed(0)
    terms = model.compute_loss(x, y)
    torch.manual_seed(0)
    x_t = model.local_flatness_point(x, y).requires_grad_(True)
    (grad_mean,) = torch.autograd.grad(F.cross_entropy(network(x_t), y), x_t)  # official: reduction mean
    official = len(x) * grad_mean.flatten(1).abs().sum(1).mean()
    ours = cross_entropy_gradient_norms(network, x_t, y).mean()
    torch.testing.assert_close(ours, official)
    torch.testing.assert_close(terms["lfr_reg"] / 0.5, ours)
    torch.testing.assert_close(terms["lfr_penalty"], ours)
    torch.testing.assert_close(terms["loss"], terms["ce"] + terms["lfr_reg"])
    assert official / len(x) < 0.5 * ours  # the 1/B of a mean-reduced gradient is not negligible


@pytest.mark.parametrize("q", [1, 2])
def test_penalty_equals_a_per_sample_loop(q):
    network = tanh_cnn()
    x, y = batch(6)
    x_t = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    model = LFR(network=network, q=q, num_classes=NUM_CLASSES)
    torch.testing.assert_close(model.penalty(x_t, y), _reference_penalty(network, x_t, y, q))


@pytest.mark.parametrize("q", [1, 2])
def test_penalty_of_a_linear_model_has_its_closed_form(q):
    """Spec (h) 2: grad_x l_b = W^T (softmax(z_b) - e_{y_b})."""
    torch.manual_seed(0)
    network = nn.Linear(10, 3).double()
    x = torch.rand(7, 10, dtype=torch.float64)
    y = torch.randint(0, 3, (7,))
    grads = (F.softmax(network(x), 1) - F.one_hot(y, 3)) @ network.weight
    expected = grads.abs().sum(1).mean() if q == 1 else grads.norm(dim=1).mean()
    model = LFR(network=network, q=q, num_classes=3)
    torch.testing.assert_close(model.penalty(x, y), expected.detach())


def test_eps_zero_is_the_input_gradient_norm_at_the_clean_point():
    """Spec (h) 4: a zero ball and no start noise penalize mean_b ||grad l_b(x_b)||_1."""
    network = tanh_cnn()
    x, y = batch(8)
    model = LFR(network=network, eps=0.0, init_std=0.0, steps=3, lam=1.0, num_classes=NUM_CLASSES)
    terms = model.compute_loss(x, y)
    torch.testing.assert_close(terms["lfr_reg"], _reference_penalty(network, x, y, q=1))
    torch.testing.assert_close(terms["lfr_inner_gain"], torch.ones((), dtype=torch.float64))


def test_eps_zero_equals_input_gradient_regularization_with_the_l1_norm():
    """Spec (h) 4: with a zero ball LFR is InputGradientRegularization(norm="l1"), term for term."""
    x, y = batch(8)
    lfr = LFR(network=tanh_cnn(), eps=0.0, init_std=0.0, steps=2, lam=0.5, num_classes=NUM_CLASSES)
    igr = InputGradientRegularization(network=tanh_cnn(), lam=0.5, norm="l1", num_classes=NUM_CLASSES)
    torch.testing.assert_close(lfr.compute_loss(x, y)["loss"], igr.compute_loss(x, y)["loss"])


def test_the_loss_increase_in_the_ball_is_bounded_by_eps_times_the_local_flatness():
    """Spec (h) 6: l(x + d) - l(x) <= eps * LF_eps(x) for ||d||_inf <= eps (mean value theorem, L1 dual
    norm), with LF from a long inner ascent, on >= 99% of samples (the ascent is a lower bound)."""
    torch.manual_seed(0)
    x, y = (t.double() if t.is_floating_point() else t for t in tiny_data(num_train=256).train_set.tensors)
    network = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), 32), nn.Tanh(), nn.Linear(32, NUM_CLASSES))
    network = network.double()
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        F.cross_entropy(network(x), y).backward()
        optimizer.step()
    eps = 0.3  # large enough that the clean gradient norm alone breaks the bound on ~45% of samples
    x_tilde = maximize_gradient_norm(network, x, y, eps=eps, alpha=0.012, steps=200, init_std=0.0)
    flatness = cross_entropy_gradient_norms(network, x_tilde.requires_grad_(True), y).detach()
    clean = F.cross_entropy(network(x), y, reduction="none").detach()
    trials = 20
    signs = torch.randint(0, 2, (trials, *x.shape), dtype=torch.float64) * 2 - 1  # corners of the ball
    scales = torch.rand(trials, len(x), 1, 1, 1, dtype=torch.float64)  # and points inside it
    x_moved = (x + eps * scales * signs).clamp(0, 1).flatten(0, 1)
    with torch.no_grad():
        moved = F.cross_entropy(network(x_moved), y.repeat(trials), reduction="none").view(trials, -1)
    increase = (moved - clean).amax(0)
    assert (increase > 0).any()  # the bound is not met trivially
    assert (increase <= eps * flatness + 1e-12).double().mean() >= 0.99


def test_gradcheck_of_the_penalty_with_respect_to_the_weights():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x_t = torch.rand(4, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    names = [name for name, _ in network.named_parameters()]

    def penalty(*params):
        def net(inputs):
            return functional_call(network, dict(zip(names, params, strict=True)), (inputs,))

        x_leaf = x_t.clone().requires_grad_(True)
        return cross_entropy_gradient_norms(net, x_leaf, y, create_graph=True).mean()

    params = tuple(p.detach().clone().requires_grad_(True) for p in network.parameters())
    assert torch.autograd.gradcheck(penalty, params)


# ----------------------------------------------------------------------------- loss and gradients
def test_lam_zero_is_exactly_standard_training():
    x, y = next(iter(tiny_data().train_dataloader()))
    assert_same_step_as_standard_training(LFR(network=tiny_cnn(), lam=0.0, num_classes=NUM_CLASSES), x, y)


@pytest.mark.parametrize("penalty_bn_mode", ["train", "eval"])
def test_the_penalty_alone_gives_every_parameter_a_finite_nonzero_gradient(penalty_bn_mode):
    """Second-order terms reach every weight (create_graph=True), BatchNorm's included."""
    model = LFR(network=tiny_cnn(), eps=0.1, alpha=0.05, steps=2, penalty_bn_mode=penalty_bn_mode)
    model.train()
    x, y = next(iter(tiny_data().train_dataloader()))
    model.regularizer(x, y, model(x))["lfr_reg"].backward()
    assert_every_parameter_has_a_gradient(model)


def test_loss_terms_and_diagnostics(trained_tiny):
    network, x, y = trained_tiny
    model = LFR(network=network, eps=0.1, alpha=0.01, steps=10, lam=0.1, num_classes=NUM_CLASSES)
    terms = model.compute_loss(x, y)
    assert set(terms) == {"loss", "ce", "lfr_reg", "lfr_penalty", "lfr_grad_norm_clean", "lfr_inner_gain"}
    assert terms["loss"].requires_grad and not terms["lfr_penalty"].requires_grad
    torch.testing.assert_close(terms["lfr_reg"].detach(), 0.1 * terms["lfr_penalty"])
    torch.testing.assert_close(terms["lfr_inner_gain"], terms["lfr_penalty"] / terms["lfr_grad_norm_clean"])
    assert terms["lfr_inner_gain"] > 1
    quiet = LFR(network=network, steps=1, log_clean_grad_norm=False, num_classes=NUM_CLASSES)
    assert set(quiet.compute_loss(x, y)) == {"loss", "ce", "lfr_reg", "lfr_penalty"}


def test_lam_warmup_ramps_linearly_by_epoch():
    model = LFR(network=tiny_cnn(), lam=0.03, lam_warmup_epochs=3, num_classes=NUM_CLASSES)
    assert model.current_lam() == 0.03  # no trainer: the full weight
    ramp = []
    for epoch in range(5):
        model._trainer = SimpleNamespace(current_epoch=epoch)  # what current_epoch reads
        ramp.append(model.current_lam())
    torch.testing.assert_close(torch.tensor(ramp), torch.tensor([0.01, 0.02, 0.03, 0.03, 0.03]))


def test_bad_arguments_are_clear_errors():
    network = tiny_cnn()
    for kwargs, match in [
        ({"p": "1"}, "p .*'inf' or '2'"),
        ({"q": 3}, "q .*1 or 2"),
        ({"eps": 8}, "eps must be in \\[0, 1\\].*got 8"),
        ({"p": "2", "eps": -1.0}, "eps must be >= 0"),
        ({"alpha": 0}, "alpha"),
        ({"steps": -1}, "steps"),
        ({"lam": -0.1}, "lam"),
        ({"init_std": -1}, "init_std"),
        ({"penalty_bn_mode": "frozen"}, "penalty_bn_mode"),
        ({"lam_warmup_epochs": -2}, "lam_warmup_epochs"),
    ]:
        with pytest.raises(ValueError, match=match):
            LFR(network=network, **kwargs)


# ------------------------------------------------------------------------------------ end to end
def test_cli_fit_logs_the_regularizer(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # runs/ and checkpoints land in the test's folder
    main(
        [
            "fit",
            *config_args("data/mnist_sample", "model/local_flatness", "trainer/debug", "eval/smoke"),
            "--model.init_args.steps=2",
            "--data.init_args.batch_size=32",
            "--robustness.num_samples=16",
        ]
    )
    logged = logged_scalars(tmp_path / "runs")
    for key in (
        "train/ce",
        "train/lfr_reg",
        "train/lfr_penalty",
        "train/lfr_grad_norm_clean",
        "train/lfr_inner_gain",
    ):
        assert len(logged.get(key, [])) == 3, (key, sorted(logged))  # debug.yaml: 3 steps, logged each
    assert all(math.isfinite(v) for key in logged for v in logged[key])
    assert "val/robust_acc/pgd_linf_0.1" in logged
