"""Total variation minimization (TVM): the TV-inpainting solver, the random transform, BPDA and EOT.

The solver is pinned by independent references written from the equations (wnll_tvm.md (b), (h) 10-11):
a naive double loop for TV, Chambolle's 2004 dual projection for the unmasked problem, and Newton's method
on the smoothed objective (smoothing → 0) for the masked one.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lit_robust.attacks import PGD
from lit_robust.functional.total_variation import (
    image_gradient_adjoint,
    image_gradient_forward,
    total_variation,
    tv_inpaint,
    tv_inpainting_objective,
)
from lit_robust.models.transforms import EOT, TotalVariationMinimization
from tests.helpers import tiny_cnn


# ------------------------------------------------------------------------------------------ references
def _reference_total_variation(x: torch.Tensor) -> torch.Tensor:
    """Σ_c Σ_ij sqrt((x(i+1,j) - x(i,j))² + (x(i,j+1) - x(i,j))²), 0 beyond the last row / column."""
    batch, channels, height, width = x.shape
    out = torch.zeros(batch, dtype=x.dtype)
    for b in range(batch):
        for c in range(channels):
            for i in range(height):
                for j in range(width):
                    d_row = x[b, c, i + 1, j] - x[b, c, i, j] if i + 1 < height else 0.0
                    d_col = x[b, c, i, j + 1] - x[b, c, i, j] if j + 1 < width else 0.0
                    out[b] += math.sqrt(float(d_row) ** 2 + float(d_col) ** 2)
    return out


def _np_grad(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d_row, d_col = np.zeros_like(u), np.zeros_like(u)
    d_row[..., :-1, :] = u[..., 1:, :] - u[..., :-1, :]
    d_col[..., :, :-1] = u[..., :, 1:] - u[..., :, :-1]
    return d_row, d_col


def _np_div(p_row: np.ndarray, p_col: np.ndarray) -> np.ndarray:
    """Chambolle's discrete divergence, -∇ᵀ."""
    d = np.zeros_like(p_row)
    d[..., :-1, :] += p_row[..., :-1, :]
    d[..., 1:, :] -= p_row[..., :-1, :]
    d[..., :, :-1] += p_col[..., :, :-1]
    d[..., :, 1:] -= p_col[..., :, :-1]
    return d


def _reference_chambolle_rof(x: np.ndarray, weight: float, iterations: int) -> np.ndarray:
    """argmin_z ½||z - x||² + weight·TV(z) by Chambolle's projection (JMIV 2004, eq. 9-10, τ = 1/8)."""
    p_row, p_col, tau = np.zeros_like(x), np.zeros_like(x), 0.125
    for _ in range(iterations):
        g_row, g_col = _np_grad(_np_div(p_row, p_col) - x / weight)
        norm = 1 + tau * np.sqrt(g_row**2 + g_col**2)
        p_row, p_col = (p_row + tau * g_row) / norm, (p_col + tau * g_col) / norm
    return x - weight * _np_div(p_row, p_col)


def _reference_newton_inpaint(x: np.ndarray, mask: np.ndarray, weight: float) -> np.ndarray:
    """Damped Newton on ½ Σ m (z - x)² + weight Σ sqrt(|∇z|² + ε) with dense matrices, ε → 1e-16.

    ``∇`` is built as two dense matrices (rows and columns) by differencing the identity; the
    objective's exact Hessian is assembled from the formula; ε decreases by 10× per stage.
    """
    n = x.size
    eye = np.eye(n).reshape(n, *x.shape)
    d_row, d_col = (d.reshape(n, n).T for d in _np_grad(eye))  # (∇z)_row = d_row @ z
    m, target, z = mask.ravel(), x.ravel(), x.ravel().copy()

    def value(v: np.ndarray, eps: float) -> float:
        a, b = d_row @ v, d_col @ v
        return 0.5 * (m * (v - target) ** 2).sum() + weight * np.sqrt(a**2 + b**2 + eps).sum()

    for eps in 10.0 ** -np.arange(2, 17):
        for _ in range(100):
            a, b = d_row @ z, d_col @ z
            norm = np.sqrt(a**2 + b**2 + eps)
            gradient = m * (z - target) + weight * (d_row.T @ (a / norm) + d_col.T @ (b / norm))
            h_aa, h_bb, h_ab = (1 / norm - a**2 / norm**3), (1 / norm - b**2 / norm**3), -a * b / norm**3
            hessian = np.diag(m) + weight * (
                d_row.T @ (h_aa[:, None] * d_row)
                + d_col.T @ (h_bb[:, None] * d_col)
                + d_row.T @ (h_ab[:, None] * d_col)
                + d_col.T @ (h_ab[:, None] * d_row)
            )
            step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
            t, current = 1.0, value(z, eps)
            while value(z - t * step, eps) > current - 1e-4 * t * (gradient @ step) and t > 1e-10:
                t /= 2
            z = z - t * step
            if np.abs(t * step).max() < 1e-15:
                break
    return z.reshape(x.shape)


def _digit_like(size: int = 16, seed: int = 0) -> torch.Tensor:
    """A bright stroke on a dark background with some noise: piecewise constant, like MNIST."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.zeros(2, 1, size, size)
    x[0, :, 3:-3, size // 2 - 2 : size // 2 + 1] = 1.0
    x[1, :, size // 3 : size // 3 + 3, 2:-2] = 0.8
    return (x + 0.1 * torch.rand(x.shape, generator=generator)).clamp(0, 1)


# ----------------------------------------------------------------------------------------- the math
def test_total_variation_matches_the_naive_loop():
    x = torch.rand(2, 3, 5, 4, dtype=torch.float64)
    torch.testing.assert_close(total_variation(x), _reference_total_variation(x))


def test_gradient_adjoint_is_the_transpose():
    z, p_row, p_col = torch.randn(3, 2, 7, 5, dtype=torch.float64).unbind(0)
    d_row, d_col = image_gradient_forward(z)
    lhs = (d_row * p_row).sum() + (d_col * p_col).sum()
    torch.testing.assert_close(lhs, (z * image_gradient_adjoint(p_row, p_col)).sum())


def test_constant_image_is_a_fixed_point_for_any_mask():
    x = torch.rand(4, 3, 1, 1).expand(4, 3, 10, 9).contiguous()
    for drop in (0.0, 0.5, 0.9):
        mask = (torch.rand(x.shape) >= drop).float()
        mask[..., 0, 0] = 1  # at least one kept entry per channel
        torch.testing.assert_close(tv_inpaint(x, mask, 0.03, 50), x, atol=1e-6, rtol=0)


def test_tiny_weight_keeps_the_kept_entries():
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    mask = (torch.rand(x.shape) >= 0.5).double()
    z = tv_inpaint(x, mask, 1e-6, 100)
    torch.testing.assert_close(z * mask, x * mask, atol=1e-5, rtol=0)


def test_objective_and_total_variation_decrease():
    x = torch.rand(3, 3, 12, 12)
    mask = (torch.rand(x.shape) >= 0.5).float()
    z = tv_inpaint(x, mask, 0.03)
    assert (tv_inpainting_objective(z, x, mask, 0.03) <= 0.03 * total_variation(x)).all()
    assert (total_variation(z) < total_variation(x)).all()
    assert z.min() >= 0 and z.max() <= 1 and z.dtype == x.dtype and not z.requires_grad


def test_unmasked_problem_matches_chambolles_projection():
    x = torch.rand(1, 2, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours = tv_inpaint(x, torch.ones_like(x), 0.1, 2000, dtype=torch.float64)  # the reference: ~4e-7 off
    reference = _reference_chambolle_rof(x[0].numpy(), 0.1, 10000)
    np.testing.assert_allclose(ours[0].numpy(), reference, atol=1e-6, rtol=0)


@pytest.mark.parametrize("weight", [0.03, 0.1])
def test_masked_problem_reaches_the_newton_objective(weight):
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(1, 2, 6, 6, dtype=torch.float64, generator=generator)
    mask = (torch.rand(x.shape, generator=generator) >= 0.5).double()
    z = tv_inpaint(x, mask, weight, 2000, dtype=torch.float64)
    reference = torch.from_numpy(_reference_newton_inpaint(x.numpy(), mask.numpy(), weight))
    ours, best = (tv_inpainting_objective(v, x, mask, weight) for v in (z, reference))
    torch.testing.assert_close(ours, best, rtol=1e-7, atol=0)  # measured ~2e-9


def test_default_iterations_reach_the_optimum_in_float32():
    x = _digit_like()
    mask = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) >= 0.5).float()
    converged = tv_inpaint(x.double(), mask.double(), 0.03, 3000, dtype=torch.float64)
    optimum = tv_inpainting_objective(converged, x.double(), mask.double(), 0.03)
    ours = tv_inpainting_objective(tv_inpaint(x, mask, 0.03).double(), x.double(), mask.double(), 0.03)
    assert ((ours - optimum) / optimum).max() < 2e-3  # measured ~4e-4 on MNIST digits


# ------------------------------------------------------------------------------------ the transform
def test_module_reduces_total_variation_and_stays_in_range():
    x = torch.rand(4, 3, 12, 12)
    z = TotalVariationMinimization(seed=0, iterations=100).eval()(x)
    assert z.shape == x.shape and z.dtype == x.dtype
    assert z.min() >= 0 and z.max() <= 1
    assert (total_variation(z) < total_variation(x)).all()
    z64 = TotalVariationMinimization(seed=0, iterations=20, solve_dtype="float64")(x.double())
    assert z64.dtype == torch.float64


def test_module_is_about_the_identity_without_dropout_and_tiny_weight():
    x = torch.rand(2, 3, 10, 10)
    tvm = TotalVariationMinimization(drop_prob=0.0, tv_weight=1e-6, iterations=50)
    torch.testing.assert_close(tvm(x), x, atol=1e-4, rtol=0)


def test_constant_image_unchanged_by_module():
    x = torch.full((3, 1, 8, 8), 0.3)
    torch.testing.assert_close(TotalVariationMinimization(seed=1, iterations=30)(x), x, atol=1e-6, rtol=0)


def test_seeded_masks_are_reproducible_fresh_per_call_and_differ_across_seeds():
    x = torch.rand(2, 3, 10, 10)
    first, again, other = (TotalVariationMinimization(seed=s, iterations=20) for s in (7, 7, 8))
    a1, a2 = first(x), first(x)
    torch.testing.assert_close(again(x), a1, rtol=0, atol=0)
    torch.testing.assert_close(again(x), a2, rtol=0, atol=0)
    assert not torch.equal(a1, a2)  # fresh masks call after call
    assert not torch.equal(other(x), a1)
    first.reseed()
    torch.testing.assert_close(first(x), a1, rtol=0, atol=0)
    unseeded = TotalVariationMinimization(iterations=20)  # follows torch's global generator
    torch.manual_seed(3)
    b1 = unseeded(x)
    torch.manual_seed(3)
    torch.testing.assert_close(unseeded(x), b1, rtol=0, atol=0)


def test_drop_rate_is_drop_prob():
    x = torch.zeros(8, 3, 32, 32)
    for drop in (0.5, 0.2):
        kept = TotalVariationMinimization(drop_prob=drop, seed=0).sample_mask(x).mean().item()
        std = math.sqrt(drop * (1 - drop) / x.numel())
        assert abs((1 - kept) - drop) < 3 * std


def test_bpda_gradient_is_the_network_gradient_at_the_transformed_input():
    network = tiny_cnn().eval()
    x = torch.rand(5, 1, 12, 12)
    x_grad = x.clone().requires_grad_(True)
    network(TotalVariationMinimization(seed=4, iterations=30)(x_grad)).logsumexp(1).sum().backward()
    z = TotalVariationMinimization(seed=4, iterations=30)(x).requires_grad_(True)  # same mask
    network(z).logsumexp(1).sum().backward()
    torch.testing.assert_close(x_grad.grad, z.grad, rtol=0, atol=0)
    assert x_grad.grad.abs().sum() > 0

    x_none = x.clone().requires_grad_(True)
    network(TotalVariationMinimization(seed=4, iterations=30, backward="none")(x_none)).sum().backward()
    assert torch.equal(x_none.grad, torch.zeros_like(x))


def test_as_a_defense_input_transform_forward_and_gradient_are_the_networks_at_tvm_x():
    """``RobustClassifier(network, input_transform=TVM)``: ``forward(x) = network(TVM(x))`` (same masks by
    seed), its input gradient is BPDA's (the network's at ``TVM(x)``), and the checkpoint gains no key."""
    from lit_robust.defenses import StandardTraining

    network = tiny_cnn().eval()
    model = StandardTraining(
        network, input_transform=TotalVariationMinimization(seed=2, iterations=20)
    ).eval()
    x = torch.rand(4, 1, 12, 12).requires_grad_(True)
    model(x).logsumexp(1).sum().backward()
    z = TotalVariationMinimization(seed=2, iterations=20)(x.detach()).requires_grad_(True)
    network(z).logsumexp(1).sum().backward()
    torch.testing.assert_close(x.grad, z.grad, rtol=0, atol=0)
    assert model.state_dict().keys() == StandardTraining(tiny_cnn()).state_dict().keys()


def test_training_mode_transforms_a_share_of_the_images():
    x = torch.rand(64, 1, 8, 8)
    assert TotalVariationMinimization(seed=0, iterations=10, train_probability=0.0).train()(x) is x
    everything = TotalVariationMinimization(seed=0, iterations=10).train()(x)  # default: every image
    assert (everything != x).flatten(1).any(1).all()
    half = TotalVariationMinimization(seed=0, iterations=10, train_probability=0.5).train()(x)
    changed = (half != x).flatten(1).any(1).float().mean().item()
    assert 0.25 < changed < 0.75


def test_works_under_inference_mode_and_under_an_attack():
    network = tiny_cnn().eval()
    model = nn.Sequential(TotalVariationMinimization(seed=0, iterations=20), network)
    x, y = torch.rand(6, 1, 12, 12), torch.randint(0, 4, (6,))
    with torch.inference_mode():
        assert model(x).shape == (6, 4)
        x_adv = PGD(eps=0.1, steps=3)(model, x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    assert not torch.equal(x_adv, x)  # BPDA gives the attack a gradient


def test_module_has_no_state_and_copies():
    tvm = TotalVariationMinimization(seed=2, iterations=10)
    assert tvm.state_dict() == {}
    x = torch.rand(2, 1, 6, 6)
    twin = copy.deepcopy(tvm)
    torch.testing.assert_close(twin(x), tvm(x), rtol=0, atol=0)
    assert "drop_prob=0.5" in repr(tvm)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop_prob": -0.1}, "drop_prob"),
        ({"drop_prob": 1.0}, "drop_prob"),
        ({"tv_weight": 0.0}, "tv_weight"),
        ({"tv_weight": -1.0}, "tv_weight"),
        ({"iterations": 0}, "iterations"),
        ({"iterations": 2.5}, "iterations"),
        ({"backward": "zero"}, "backward"),
        ({"train_probability": 1.5}, "train_probability"),
        ({"seed": -1}, "seed"),
        ({"solve_dtype": "float16"}, "solve_dtype"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TotalVariationMinimization(**kwargs)


# -------------------------------------------------------------------------------------------- EOT
def test_eot_gradient_is_the_mean_of_single_draw_gradients():
    network = tiny_cnn().eval()
    samples, x = 4, torch.rand(3, 1, 12, 12)
    weights = torch.randn(4)  # a loss linear in the logits: the EOT gradient is exact for it
    x_grad = x.clone().requires_grad_(True)
    eot = EOT(nn.Sequential(TotalVariationMinimization(seed=5, iterations=30), network), samples=samples)
    (eot(x_grad) @ weights).sum().backward()

    tvm = TotalVariationMinimization(seed=5, iterations=30)
    masks = tvm.sample_mask(x.repeat(samples, 1, 1, 1)).chunk(samples)  # the draws EOT made
    gradients = []
    for mask in masks:
        z = tvm.reconstruct(x, mask).requires_grad_(True)
        (network(z) @ weights).sum().backward()
        gradients.append(z.grad)
    torch.testing.assert_close(x_grad.grad, torch.stack(gradients).mean(0), rtol=1e-5, atol=1e-7)
    assert x_grad.grad.abs().sum() > 0


def test_eot_averages_logits_or_probabilities_in_passes():
    logits = torch.randn(3, 2, 5)  # 3 draws, batch of 2, 5 classes

    class Draws(nn.Module):  # a "random" model that returns the next draw at each call
        def __init__(self):
            super().__init__()
            self.rows = iter(logits.reshape(6, 5).split(2))

        def forward(self, x):
            return torch.cat([next(self.rows) for _ in range(len(x) // 2)])

    x = torch.zeros(2, 1, 2, 2)
    torch.testing.assert_close(EOT(Draws(), samples=3)(x), logits.mean(0))
    torch.testing.assert_close(EOT(Draws(), samples=3, draws_per_pass=2)(x), logits.mean(0))
    expected = logits.softmax(-1).mean(0).log()
    torch.testing.assert_close(EOT(Draws(), samples=3, average="probabilities")(x), expected)
    for bad in ({"samples": 0}, {"average": "median"}, {"draws_per_pass": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            EOT(nn.Identity(), **bad)


def test_eot_runs_under_an_attack():
    model = nn.Sequential(TotalVariationMinimization(seed=0, iterations=10), tiny_cnn().eval())
    x, y = torch.rand(4, 1, 12, 12), torch.randint(0, 4, (4,))
    x_adv = PGD(eps=0.1, steps=2)(EOT(model, samples=3), x, y)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and not torch.equal(x_adv, x)
