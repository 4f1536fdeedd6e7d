"""The flow warp, its units, the image gradient and the Gaussian smoothing of vector fields."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lit_robust.functional.flow import (
    gaussian_smooth,
    image_gradient,
    normalized_to_pixels,
    pixels_to_normalized,
    t_norm,
    warp,
)

SIZES = [(12, 12), (7, 10), (28, 28), (32, 32), (9, 17)]


def constant_flow(x: torch.Tensor, col: float, row: float) -> torch.Tensor:
    flow = x.new_zeros(x.shape[0], *x.shape[2:], 2)
    flow[..., 0], flow[..., 1] = col, row
    return flow


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding_mode", ["zeros", "border"])
def test_identity_warp_returns_the_image_bit_for_bit(size, dtype, padding_mode):
    x = torch.rand(2, 3, *size, dtype=dtype)
    for units in ("pixels", "normalized"):
        assert torch.equal(warp(x, constant_flow(x, 0, 0), units, padding_mode), x)


@pytest.mark.parametrize("size", SIZES)
def test_integer_flow_moves_pixels_exactly_with_the_documented_border(size):
    x = torch.rand(2, 3, *size)
    right = warp(x, constant_flow(x, 1, 0))  # reads the right neighbour: content moves left
    assert torch.equal(right[..., :-1], x[..., 1:])
    assert torch.equal(right[..., -1], torch.zeros_like(x[..., -1]))  # zeros padding
    assert torch.equal(warp(x, constant_flow(x, 1, 0), padding_mode="border")[..., -1], x[..., -1])
    up = warp(x, constant_flow(x, 0, -1))  # reads the pixel above: content moves down
    assert torch.equal(up[..., 1:, :], x[..., :-1, :])
    assert torch.equal(up[..., 0, :], torch.zeros_like(x[..., 0, :]))
    diagonal = warp(x, constant_flow(x, -2, 1))
    assert torch.equal(diagonal[..., :-1, 2:], x[..., 1:, :-2])


def test_fractional_flow_interpolates_bilinearly():
    x = torch.rand(2, 1, 7, 10, dtype=torch.float64)
    out = warp(x, constant_flow(x, 0.25, 0.5))
    rows = 0.5 * (x[..., :-1, :] + x[..., 1:, :])
    expected = 0.75 * rows[..., :-1] + 0.25 * rows[..., 1:]
    torch.testing.assert_close(out[..., :-1, :-1], expected)


@pytest.mark.parametrize("size", SIZES)
def test_normalized_units_are_the_official_align_corners_grid(size):
    height, width = size
    x = torch.rand(2, 3, height, width, dtype=torch.float64)
    flow_px = 2 * torch.rand(2, height, width, 2, dtype=torch.float64) - 1
    flow_norm = pixels_to_normalized(flow_px, height, width)
    torch.testing.assert_close(flow_norm[..., 0], flow_px[..., 0] * 2 / (width - 1))
    torch.testing.assert_close(flow_norm[..., 1], flow_px[..., 1] * 2 / (height - 1))
    torch.testing.assert_close(normalized_to_pixels(flow_norm, height, width), flow_px)
    # the official code: grid = 2 p / (size - 1) - 1 + f_norm, grid_sample(align_corners=True)
    rows, cols = torch.meshgrid(*(torch.arange(n, dtype=torch.float64) for n in size), indexing="ij")
    base = torch.stack([2 * cols / (width - 1), 2 * rows / (height - 1)], dim=-1) - 1
    official = F.grid_sample(x, base + flow_norm, padding_mode="zeros", align_corners=True)
    torch.testing.assert_close(warp(x, flow_norm, units="normalized"), official)
    torch.testing.assert_close(warp(x, flow_px, units="pixels"), official)


def test_unit_conversion_values():
    one_pixel = torch.ones(2)
    assert pixels_to_normalized(one_pixel, 9, 17).tolist() == [0.125, 0.25]
    assert normalized_to_pixels(torch.full((2,), 0.01), 32, 32).tolist() == pytest.approx([0.155, 0.155])
    with pytest.raises(ValueError, match="at least 2 x 2"):
        pixels_to_normalized(one_pixel, 1, 17)


def test_bad_arguments_are_clear_errors():
    x = torch.rand(2, 1, 6, 6)
    with pytest.raises(ValueError, match="flow must be"):
        warp(x, torch.zeros(2, 6, 6))
    with pytest.raises(ValueError, match="padding_mode"):
        warp(x, constant_flow(x, 0, 0), padding_mode="reflection")
    with pytest.raises(ValueError, match="units"):
        warp(x, constant_flow(x, 0, 0), units="px")
    with pytest.raises(ValueError, match="sigma"):
        gaussian_smooth(constant_flow(x, 0, 0), -1.0)


@pytest.mark.parametrize("size", [(7, 10), (12, 12)])
def test_flow_gradient_at_zero_is_the_forward_difference_on_every_pixel(size):
    x = torch.rand(2, 3, *size, dtype=torch.float64)
    upstream = torch.randn_like(x)
    flow = constant_flow(x, 0, 0).requires_grad_(True)
    (warp(x, flow) * upstream).sum().backward()
    padded = F.pad(x, (0, 1, 0, 1))  # zeros padding reads 0 past the last row and column
    d_col = padded[..., :-1, 1:] - x
    d_row = padded[..., 1:, :-1] - x
    expected = torch.stack([(upstream * d_col).sum(1), (upstream * d_row).sum(1)], dim=-1)
    torch.testing.assert_close(flow.grad, expected, rtol=0, atol=1e-14)


def test_image_gradient_central_inside_one_sided_at_the_edges():
    x = torch.rand(2, 3, 6, 7, dtype=torch.float64)
    d_col, d_row = image_gradient(x)
    torch.testing.assert_close(d_col[..., 1:-1], (x[..., 2:] - x[..., :-2]) / 2)
    torch.testing.assert_close(d_col[..., 0], x[..., 1] - x[..., 0])
    torch.testing.assert_close(d_col[..., -1], x[..., -1] - x[..., -2])
    torch.testing.assert_close(d_row[..., 1:-1, :], (x[..., 2:, :] - x[..., :-2, :]) / 2)
    ramp = torch.arange(7.0).expand(1, 1, 6, 7) * 0.1
    d_col, d_row = image_gradient(ramp)
    torch.testing.assert_close(d_col, torch.full_like(ramp, 0.1))
    assert torch.equal(d_row, torch.zeros_like(ramp))


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_gaussian_smoothing_preserves_a_constant_field(sigma):
    field = torch.ones(3, 12, 9, 2) * torch.tensor([0.7, -1.3])
    torch.testing.assert_close(gaussian_smooth(field, sigma), field)
    damped = gaussian_smooth(field, sigma, padding="zeros")  # the official code: damps the border
    torch.testing.assert_close(
        damped[:, 5:7, 4:5], field[:, 5:7, 4:5], rtol=0, atol=1e-3 if sigma < 2 else 0.2
    )
    assert (damped[:, 0, 0].abs() < field[:, 0, 0].abs()).all()


def test_gaussian_smoothing_is_scipy_gaussian_filter():
    ndimage = pytest.importorskip("scipy.ndimage")
    field = torch.randn(2, 11, 8, 2, dtype=torch.float64)
    for sigma in (0.7, 1.0, 3.0):
        for padding, mode in (("reflect", "reflect"), ("zeros", "constant")):
            ours = gaussian_smooth(field, sigma, padding=padding)
            for b in range(2):
                for c in range(2):
                    theirs = ndimage.gaussian_filter(field[b, ..., c].numpy(), sigma, mode=mode, truncate=4.0)
                    torch.testing.assert_close(ours[b, ..., c], torch.from_numpy(theirs))
    assert torch.equal(gaussian_smooth(field, 0.0), field)


def test_zero_padded_smoothing_is_self_adjoint():
    a, b = torch.randn(2, 1, 10, 9, 2, dtype=torch.float64)
    smooth_a, smooth_b = gaussian_smooth(a, 1.0, "zeros"), gaussian_smooth(b, 1.0, "zeros")
    torch.testing.assert_close((smooth_a * b).sum(), (a * smooth_b).sum())


def test_t_norm_is_the_largest_displacement():
    flow = torch.zeros(2, 3, 5, 4, 2)
    flow[0, 0, 1, 2] = torch.tensor([3.0, 4.0])
    flow[1, 1, 4, 0] = torch.tensor([0.0, -2.0])
    assert t_norm(flow).tolist() == [[5.0, 0.0, 0.0], [0.0, 2.0, 0.0]]
