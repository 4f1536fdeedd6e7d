"""GFA's options from issue 14 / gfa.md §(i): the signed penalties (``pos``, ``neg``), the logit MSE
(``mse_logits``) and the tiny-gradient guard (``min_grad_norm``), against hand computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.defenses.gfa import GFA
from lit_robust.functional.alignment import (
    alignment_penalty,
    guarded_mean,
    per_sample_cosine,
    per_sample_task_loss,
)
from tests.helpers import NUM_CLASSES, assert_same_step_as_standard_training, tiny_cnn, tiny_data

ROOT_HALF = 1 / math.sqrt(2)


# ------------------------------------------------------------------------------------ penalties
def test_signed_penalties_on_hand_made_vectors():
    """g = (1, 0), h = (1, 1): c = 1/sqrt2; g = (-1, 0): c = -1/sqrt2, which tells abs from pos."""
    h = torch.tensor([[1.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    g = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], dtype=torch.float64)
    c = per_sample_cosine(g, h)
    torch.testing.assert_close(c, torch.tensor([ROOT_HALF, -ROOT_HALF], dtype=torch.float64))
    expected = {
        "abs": [1 - ROOT_HALF, 1 - ROOT_HALF],
        "sq": [0.5, 0.5],
        "pos": [1 - ROOT_HALF, 1 + ROOT_HALF],
        "neg": [1 + ROOT_HALF, 1 - ROOT_HALF],
    }
    for penalty, values in expected.items():
        torch.testing.assert_close(
            alignment_penalty(c, penalty), torch.tensor(values, dtype=torch.float64), msg=penalty
        )


def test_neg_is_two_minus_pos_on_a_network():
    """``R_neg = 2 - R_pos`` on the same batch: the two signed targets are mirror images."""
    network = tiny_cnn().eval()
    x, y = next(iter(tiny_data().train_dataloader()))
    penalties = {
        name: GFA(network, penalty=name, num_classes=NUM_CLASSES).compute_loss(x, y)["gfa_penalty"]
        for name in ("pos", "neg")
    }
    torch.testing.assert_close(penalties["neg"], 2 - penalties["pos"])
    assert not torch.allclose(penalties["neg"], penalties["pos"])


# ----------------------------------------------------------------------------------- mse_logits
def _reference_mse_logits(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``sum_k (z_k - 1[k = y])^2`` one sample and one class at a time."""
    rows = []
    for b in range(len(y)):
        rows.append(sum((logits[b, k] - float(k == y[b])) ** 2 for k in range(logits.shape[1])))
    return torch.stack(rows)


def test_mse_logits_equals_the_per_sample_formula():
    logits = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    y = torch.tensor([0, 3, 1, 1, 2])
    got = per_sample_task_loss(logits, y, "mse_logits")
    assert got.shape == (5,)
    torch.testing.assert_close(got, _reference_mse_logits(logits, y), rtol=1e-12, atol=0)
    # the sum over classes, not torch's mean (MSELoss divides by K)
    torch.testing.assert_close(got.mean(), 4 * F.mse_loss(logits, F.one_hot(y, 4).double()))


def test_mse_logits_in_gfa_is_logged_under_its_name():
    network = tiny_cnn().eval()
    x, y = next(iter(tiny_data().train_dataloader()))
    model = GFA(network, task_loss="mse_logits", num_classes=NUM_CLASSES)
    assert model.task_loss_name == "mse_logits"
    terms = model.compute_loss(x, y)
    assert "ce" not in terms and "mse" not in terms
    expected = _reference_mse_logits(network(x), y).mean()
    torch.testing.assert_close(terms["mse_logits"], expected)
    torch.testing.assert_close(terms["loss"], expected + terms["gfa_reg"])


def test_mse_logits_input_gradient_on_a_bias_free_linear_model():
    """``z = W x``: ``g_in = 2 W^T (W x - e_y)``, so ``c_in = cos(2 W^T (W x - e_y), x - c_in)``."""
    torch.manual_seed(0)
    linear = nn.Linear(6, 3, bias=False).double()
    x = torch.rand(4, 6, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 1])
    model = GFA(linear, taps="first", task_loss="mse_logits", input_center=0.5, num_classes=3)
    _, _, cosines = model.alignment(x, y)
    w = linear.weight.detach()
    g = 2 * (x @ w.T - F.one_hot(y, 3).double()) @ w
    torch.testing.assert_close(
        cosines["input"], F.cosine_similarity(g, x - 0.5, dim=1), rtol=1e-10, atol=1e-12
    )


# ------------------------------------------------------------------------------ min_grad_norm
class NearTarget(nn.Module):
    """``net(x) + offset``, with ``offset`` (a per-batch buffer) set so that chosen samples' logits sit
    ``tiny * d`` from their one-hot target: there ``z - e_y`` is tiny, so ``g = 2 J^T (z - e_y)`` is
    tiny, while ``dz / dtheta`` stays of order 1. That is the ``1 / ||g||`` blow-up of the cosine's
    gradient that cross-entropy produces on confident samples."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
        self.offset: torch.Tensor | None = None

    def aim(self, x, y, tiny_rows, tiny: float = 1e-8):
        with torch.no_grad():
            z = self.net(x)
            offset = torch.zeros_like(z)
            d = torch.randn(len(tiny_rows), 3, dtype=z.dtype, generator=torch.Generator().manual_seed(2))
            offset[tiny_rows] = F.one_hot(y[tiny_rows], 3).to(z.dtype) - z[tiny_rows] + tiny * d
        self.offset = offset

    def forward(self, x):
        return self.net(x) + self.offset


def guard_case():
    x = torch.rand(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    return NearTarget(), x, y, [1, 4]


def reg_gradient(network, x, y, **options) -> tuple[dict, torch.Tensor]:
    model = GFA(network, task_loss="mse_logits", num_classes=3, **options)
    terms = model.compute_loss(x, y)
    grads = torch.autograd.grad(terms["gfa_reg"], list(network.parameters()))
    return terms, torch.cat([g.flatten() for g in grads])


def test_the_guard_removes_the_blow_up_of_tiny_gradients():
    network, x, y, tiny = guard_case()
    keep = [b for b in range(len(y)) if b not in tiny]
    network.aim(x, y, tiny)
    _, off = reg_gradient(network, x, y)
    terms, on = reg_gradient(network, x, y, min_grad_norm=1e-5)
    assert torch.isfinite(off).all() and torch.isfinite(on).all()
    # the guarded gradient is the unguarded one of the well-conditioned samples alone
    network.aim(x[keep], y[keep], [])
    reference_terms, reference = reg_gradient(network, x[keep], y[keep])
    torch.testing.assert_close(on, reference, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(terms["gfa_penalty"], reference_terms["gfa_penalty"], rtol=1e-9, atol=0)
    assert off.norm() > 1e4 * on.norm()  # without the guard the tiny samples dominate by orders of magnitude
    # every tap dropped exactly the two tiny samples, and says so
    assert sorted(key for key in terms if key.startswith("gfa_dropped/")) == [
        "gfa_dropped/input",
        "gfa_dropped/net.2",
    ]
    for key in ("gfa_dropped", "gfa_dropped/input", "gfa_dropped/net.2"):
        torch.testing.assert_close(terms[key], torch.tensor(2 / 6, dtype=torch.float64), msg=key)


def test_a_threshold_below_every_norm_changes_nothing_bit_for_bit():
    """Loss, terms and every parameter gradient are ``torch.equal`` to the guard off."""
    x, y = next(iter(tiny_data().train_dataloader()))
    results = []
    for min_grad_norm in (0.0, 1e-30):
        network = tiny_cnn()
        model = GFA(network, num_classes=NUM_CLASSES, min_grad_norm=min_grad_norm).train()
        torch.manual_seed(0)
        terms = model.compute_loss(x, y)
        terms["loss"].backward()
        results.append((terms, [p.grad.clone() for p in network.parameters()]))
    (terms_off, grads_off), (terms_on, grads_on) = results
    assert "gfa_dropped" not in terms_off  # only logged when the guard is on
    assert terms_on["gfa_dropped"].item() == 0.0
    for key, value in terms_off.items():
        assert torch.equal(value, terms_on[key]), key
    for off, on in zip(grads_off, grads_on, strict=True):
        assert torch.equal(off, on)


def test_when_every_sample_is_dropped_the_penalty_is_zero_with_zero_gradient():
    network, x, y, _ = guard_case()
    network.aim(x, y, [])
    terms, grad = reg_gradient(network, x, y, min_grad_norm=1e10)
    assert terms["gfa_penalty"].item() == 0.0 and terms["gfa_reg"].item() == 0.0
    assert torch.isfinite(terms["loss"]) and torch.equal(grad, torch.zeros_like(grad))
    assert terms["gfa_dropped"].item() == 1.0


def test_guarded_mean_directly():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
    norms = torch.tensor([1.0, 1e-9, 1.0, 1e-9])
    mean, dropped = guarded_mean(values, norms, 1e-6)
    assert mean.item() == 2.0 and dropped.item() == 0.5
    mean.backward()
    assert values.grad.tolist() == [0.5, 0.0, 0.5, 0.0]
    off, none_dropped = guarded_mean(values, norms, 0.0)
    assert torch.equal(off, values.mean()) and none_dropped.item() == 0.0


@pytest.mark.parametrize("value", [-1e-6, math.nan, math.inf])
def test_bad_min_grad_norm_is_a_clear_error(value):
    with pytest.raises(ValueError, match="min_grad_norm"):
        GFA(tiny_cnn(), num_classes=NUM_CLASSES, min_grad_norm=value)


@pytest.mark.parametrize("option", ["penalty", "task_loss"])
def test_unknown_options_are_clear_errors(option):
    with pytest.raises(ValueError, match=option):
        GFA(tiny_cnn(), num_classes=NUM_CLASSES, **{option: "cubic"})


# --------------------------------------------------------------------------------------- lam = 0
@pytest.mark.parametrize("options", [{}, {"min_grad_norm": 1e-6}, {"penalty": "neg"}], ids=str)
def test_lam_zero_is_standard_training_to_float_rounding(options):
    # not bit for bit: GFA's forward takes the input gradient, and on some CPUs (AMD EPYC, torch 2.14.1)
    # the convolution then runs another kernel whose loss differs in the last bit (1.83626568 vs ...556)
    x, y = next(iter(tiny_data().train_dataloader()))
    model = GFA(tiny_cnn(), lam=0.0, num_classes=NUM_CLASSES, **options)
    assert_same_step_as_standard_training(model, x, y, exact=False)
