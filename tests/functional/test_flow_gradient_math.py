"""The flow gradient's closed form against autograd through the warp; units; the input-gradient norms.

The identity warp (``warp(x, 0) == x`` bit for bit, both paddings, both units) is pinned by
``tests/functional/test_flow.py::test_identity_warp_returns_the_image_bit_for_bit``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lit_robust.functional.flow import warp
from lit_robust.functional.flow_gradient import (
    flow_gradient,
    flow_gradient_by_warp,
    flow_gradient_penalty,
    flow_gradient_to_normalized,
    forward_differences,
    random_deformation,
)
from lit_robust.functional.input_gradient import gradient_norm, input_gradient

SIZES = [(7, 10), (12, 12), (9, 17)]


def tanh_cnn(channels: int, height: int, width: int, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * height * width, classes)
    ).double()  # fmt: skip


def closed_form(model: nn.Module, x: torch.Tensor, y: torch.Tensor, padding="border", create_graph=False):
    x = x.detach().requires_grad_(True)
    per_sample = F.cross_entropy(model(x), y, reduction="none")
    return flow_gradient(input_gradient(per_sample, x, create_graph=create_graph), x.detach(), padding)


def batch(size, channels=2, n=3, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, *size, dtype=torch.float64, generator=generator)
    y = torch.randint(0, 3, (n,), generator=generator)
    return x, y


@pytest.mark.parametrize("size", SIZES)
def test_closed_form_equals_autograd_through_the_zero_padded_warp_on_every_pixel(size):
    x, y = batch(size)
    model = tanh_cnn(2, *size)
    expected = flow_gradient_by_warp(model, x, y, padding_mode="zeros")
    torch.testing.assert_close(closed_form(model, x, y, padding="zeros"), expected, rtol=0, atol=1e-12)
    assert expected[..., -1, 0].abs().sum() > 0  # zeros padding: the last column differences against 0


@pytest.mark.parametrize("size", SIZES)
def test_clamped_border_convention_against_the_border_padded_warp(size):
    """Interior pixels: both border conventions equal the warp. Edges: the clamped closed form is 0 in
    the last column (G_col) / row (G_row); grid_sample's border padding clips the coordinate and
    zeroes the gradient on the first *and* last column / row."""
    x, y = batch(size)
    model = tanh_cnn(2, *size)
    clamped = closed_form(model, x, y, padding="border")
    zeros = closed_form(model, x, y, padding="zeros")
    by_warp = flow_gradient_by_warp(model, x, y, padding_mode="border")
    inner = (slice(None), slice(1, -1), slice(1, -1))
    torch.testing.assert_close(clamped[inner], by_warp[inner], rtol=0, atol=1e-12)
    torch.testing.assert_close(zeros[inner], by_warp[inner], rtol=0, atol=1e-12)
    assert torch.equal(clamped[:, :, -1, 0], torch.zeros_like(clamped[:, :, -1, 0]))
    assert torch.equal(clamped[:, -1, :, 1], torch.zeros_like(clamped[:, -1, :, 1]))
    # the same on everything but the first column of G_col and the first row of G_row
    torch.testing.assert_close(clamped[:, :, 1:, 0], by_warp[:, :, 1:, 0], rtol=0, atol=1e-12)
    torch.testing.assert_close(clamped[:, 1:, :, 1], by_warp[:, 1:, :, 1], rtol=0, atol=1e-12)
    assert by_warp[:, :, 0, 0].abs().max() == 0 and clamped[:, :, 0, 0].abs().max() > 0


def test_forward_differences_and_their_borders():
    x = torch.rand(2, 3, 5, 6, dtype=torch.float64)
    d_col, d_row = forward_differences(x)
    torch.testing.assert_close(d_col[..., :-1], x[..., 1:] - x[..., :-1], rtol=0, atol=0)
    torch.testing.assert_close(d_row[..., :-1, :], x[..., 1:, :] - x[..., :-1, :], rtol=0, atol=0)
    assert d_col[..., -1].abs().max() == 0 and d_row[..., -1, :].abs().max() == 0
    z_col, z_row = forward_differences(x, "zeros")
    assert torch.equal(z_col[..., -1], -x[..., -1]) and torch.equal(z_row[..., -1, :], -x[..., -1, :])
    with pytest.raises(ValueError, match="padding"):
        forward_differences(x, "reflect")
    g = torch.randn_like(x)  # the clamped border is also flow_gradient's default (the defense's)
    expected = torch.stack([(g * d_col).sum(1), (g * d_row).sum(1)], dim=-1)
    assert torch.equal(flow_gradient(g, x), expected)


def test_edges_only_constant_image_and_horizontal_ramp():
    model = tanh_cnn(2, 6, 7)
    y = torch.tensor([0, 2])
    constant = torch.full((2, 2, 6, 7), 0.4, dtype=torch.float64)
    grad = closed_form(model, constant, y)
    assert torch.equal(grad, torch.zeros_like(grad))
    assert flow_gradient_penalty(grad) == 0
    a = 0.1
    ramp = (a * torch.arange(7, dtype=torch.float64)).expand(2, 2, 6, 7).clone()
    x = ramp.requires_grad_(True)
    gx = input_gradient(F.cross_entropy(model(x), y, reduction="none"), x)
    grad = closed_form(model, ramp, y)
    assert grad[..., 1].abs().max() == 0
    torch.testing.assert_close(grad[:, :, :-1, 0], a * gx.sum(1)[:, :, :-1], rtol=0, atol=1e-15)
    assert grad[:, :, -1, 0].abs().max() == 0


@pytest.mark.parametrize("size", [(7, 10), (9, 9)])
def test_normalized_units_scale_by_half_the_size_minus_one_per_axis(size):
    """Independent check: autograd w.r.t. a *normalized* flow through the warp."""
    x, y = batch(size)
    model = tanh_cnn(2, *size)
    flow = x.new_zeros(x.shape[0], *size, 2).requires_grad_(True)
    F.cross_entropy(model(warp(x, flow, "normalized", "zeros")), y, reduction="sum").backward()
    converted = flow_gradient_to_normalized(closed_form(model, x, y, padding="zeros"))
    torch.testing.assert_close(converted, flow.grad, rtol=0, atol=1e-12)
    height, width = size
    pix = closed_form(model, x, y)
    torch.testing.assert_close(flow_gradient_to_normalized(pix)[..., 0], pix[..., 0] * (width - 1) / 2)
    torch.testing.assert_close(flow_gradient_to_normalized(pix)[..., 1], pix[..., 1] * (height - 1) / 2)


@pytest.mark.parametrize("n", [1, 3])
def test_official_convention_is_the_code_s_gradient_of_the_batch_mean(n):
    """R_off = ||d mean_b l_b / d f_norm||^2 / B (the official code), = (1/B^2) mean_b ||G_norm,b||^2."""
    size = (9, 9)
    x, y = batch(size, n=n)
    model = tanh_cnn(2, *size)
    flow = x.new_zeros(n, *size, 2).requires_grad_(True)
    F.cross_entropy(model(warp(x, flow, "normalized", "zeros")), y).backward()
    official = flow.grad.square().sum() / n
    pix = closed_form(model, x, y, padding="zeros")
    r_off = flow_gradient_penalty(pix, "official")
    torch.testing.assert_close(r_off, official, rtol=1e-12, atol=0)
    norm_sq = flow_gradient_to_normalized(pix).square().flatten(1).sum(1).mean()
    torch.testing.assert_close(r_off * n**2, norm_sq, rtol=1e-12, atol=0)
    torch.testing.assert_close(flow_gradient_penalty(pix, "pixel"), pix.square().flatten(1).sum(1).mean())
    # lam_pix = lam_off ((W - 1)/2)^2 / B^2 gives the same loss term (H = W)
    lam_off = 300.0
    lam_pix = lam_off * ((size[1] - 1) / 2) ** 2 / n**2
    torch.testing.assert_close(
        lam_pix * flow_gradient_penalty(pix, "pixel"), lam_off * r_off, rtol=1e-12, atol=0
    )
    with pytest.raises(ValueError, match="convention"):
        flow_gradient_penalty(pix, "pixels")


def test_lam_conversion_of_the_spec_at_32_px_batch_128():
    assert [round(lam * 15.5**2 / 128**2, 2) for lam in (100, 200, 300)] == [1.47, 2.93, 4.4]


def test_second_order_closed_form_matches_the_warp_path():
    """The parameter gradient of R: closed form (x is data) equals double backprop through the warp."""
    size = (7, 8)
    x, y = batch(size)
    model = tanh_cnn(2, *size)
    r_closed = flow_gradient_penalty(closed_form(model, x, y, padding="zeros", create_graph=True))
    closed = torch.autograd.grad(r_closed, list(model.parameters()))
    r_warp = flow_gradient_penalty(flow_gradient_by_warp(model, x, y, "zeros", create_graph=True))
    reference = torch.autograd.grad(r_warp, list(model.parameters()))
    for got, want in zip(closed, reference, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        assert want.abs().sum() > 0


def test_gradcheck_of_the_flow_gradient_penalty_in_the_weights():
    size = (4, 5)
    x, y = batch(size, channels=1, n=2)
    model = tanh_cnn(1, *size)
    names = [name for name, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def penalty(*weights):
        def functional(inp):
            return torch.func.functional_call(model, dict(zip(names, weights, strict=True)), (inp,))

        return flow_gradient_penalty(closed_form(functional, x, y, create_graph=True), "pixel")

    assert torch.autograd.gradcheck(penalty, params)


def test_input_gradient_of_a_linear_classifier_is_w_transpose_p_minus_onehot():
    torch.manual_seed(0)
    weight, bias = torch.randn(3, 8, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    x = torch.rand(5, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 0, 1])
    logits = x.flatten(1) @ weight.T + bias
    grad = input_gradient(F.cross_entropy(logits, y, reduction="none"), x)
    expected = (logits.softmax(1) - F.one_hot(y, 3)) @ weight
    torch.testing.assert_close(grad.flatten(1), expected.detach(), rtol=1e-12, atol=1e-14)
    (mean_grad,) = torch.autograd.grad(F.cross_entropy(logits, y), x)
    torch.testing.assert_close(grad, 5 * mean_grad, rtol=1e-12, atol=1e-14)  # sum = B x mean
    with pytest.raises(ValueError, match="per_sample_loss"):
        input_gradient(F.cross_entropy(logits, y), x)


def test_gradient_norms_by_hand():
    grad = torch.tensor([[[3.0, -4.0]], [[0.0, -2.0]]])  # (B, 1, 2)
    torch.testing.assert_close(gradient_norm(grad), torch.tensor([25.0, 4.0]))
    torch.testing.assert_close(gradient_norm(grad, "l2"), torch.tensor([5.0, 2.0]))
    torch.testing.assert_close(gradient_norm(grad, "l1"), torch.tensor([7.0, 2.0]))
    with pytest.raises(ValueError, match="norm"):
        gradient_norm(grad, "linf")


def test_random_deformation_is_the_seeded_zero_padded_warp():
    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(random_deformation(x, 0.0), x)
    torch.manual_seed(3)
    moved = random_deformation(x, 0.2)
    torch.manual_seed(3)
    noise = 0.2 * torch.randn(2, 8, 8, 2)
    assert torch.equal(moved, warp(x, noise, "pixels", "zeros").clamp(0, 1))
    assert not moved.requires_grad and 0 < (moved - x).abs().max() < 0.5
    with pytest.raises(ValueError, match="sigma_px"):
        random_deformation(x, -0.1)
