"""Deformations of images by flow fields: bilinear warp, unit conversion, smoothing, image gradients.

Conventions (``papers/flow_gradient.md`` (b), the official flow-gradient and ADef code):

* An image ``x`` is ``(B, C, H, W)``; pixel ``p = (i, j)`` is (row, column).
* A flow ``f`` is ``(B, H, W, 2)`` with the horizontal component first, as in ``grid_sample``:
  ``f[..., 0]`` moves along columns (+ = right), ``f[..., 1]`` along rows (+ = down).
* The warp samples the image at the displaced positions: ``x_f(i, j) = x(i + f_row, j + f_col)``
  with bilinear interpolation. A flow of ``(1, 0)`` therefore reads each pixel's right neighbour:
  the content moves one pixel to the *left*.
* Pixel units by default. Normalized units are ``grid_sample``'s ``[-1, 1]`` coordinates with
  ``align_corners=True`` (the official code): pixel centres ``0`` and ``W - 1`` sit at ``-1`` and
  ``+1``, so ``f_norm_col = f_col * 2 / (W - 1)`` and ``f_norm_row = f_row * 2 / (H - 1)``
  (on 32 x 32, 1 normalized unit = 15.5 px and 0.01 normalized = 0.155 px).
* Padding: ``"zeros"`` (default; FlowPGD) reads 0 outside the image, ``"border"`` (ADef) the
  nearest edge pixel. With ``"zeros"`` a pixel whose sample point lies between the last column and
  the next one is blended with 0, e.g. the last column becomes 0 under a flow of ``(1, 0)``.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from lit_robust.validation import check_choice

Units = Literal["pixels", "normalized"]
Padding = Literal["zeros", "border"]
UNITS = ("pixels", "normalized")
PADDINGS = ("zeros", "border")


def check_units(units: str) -> str:
    return check_choice("units", units, UNITS)


def _per_axis(flow: Tensor, height: int, width: int) -> Tensor:
    """``((W - 1) / 2, (H - 1) / 2)``: pixels per normalized unit, in the flow's component order."""
    if height < 2 or width < 2:
        raise ValueError(f"normalized units need an image of at least 2 x 2 pixels, got {height} x {width}")
    return torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=flow.dtype, device=flow.device)


def pixels_to_normalized(flow: Tensor, height: int, width: int) -> Tensor:
    """Pixel flow ``(..., 2)`` to ``grid_sample`` units (``align_corners=True``): ``f * 2 / (size - 1)``."""
    return flow / _per_axis(flow, height, width)


def normalized_to_pixels(flow: Tensor, height: int, width: int) -> Tensor:
    """``grid_sample`` units (``align_corners=True``) to pixels: ``f * (size - 1) / 2`` per axis."""
    return flow * _per_axis(flow, height, width)


def _exact_size(size: int) -> int:
    """The smallest ``2^m + 1 >= size``: its ``align_corners`` scale ``(size - 1) / 2`` is a power of 2."""
    return 1 + 2 ** math.ceil(math.log2(max(size - 1, 1)))


def warp(x: Tensor, flow: Tensor, units: Units = "pixels", padding_mode: Padding = "zeros") -> Tensor:
    """Bilinear warp ``x_f(p) = x(p + f(p))`` by ``F.grid_sample`` (``align_corners=True``).

    Args:
        x: images ``(B, C, H, W)``.
        flow: displacements ``(B, H, W, 2)``, (column, row) order, in ``units``.
        units: ``"pixels"`` (default) or ``"normalized"`` (see the module docstring).
        padding_mode: ``"zeros"`` (default) or ``"border"``.

    Exact on the pixel grid: the zero flow returns ``x`` bit for bit and integer flows move pixels
    exactly. A plain normalized grid ``2j / (W - 1) - 1`` cannot do that in floating point (off by
    up to 3e-5 on 224 px in float32, and some integer positions land just below the integer, so
    ``grid_sample`` takes backward instead of forward differences there). Here the image is padded
    on the bottom/right to ``2^m + 1`` pixels (zeros or edge copies, which is what either padding
    mode reads there anyway), so the normalized coordinates are dyadic and convert exactly.

    Differentiable in ``x`` and ``flow``. At ``flow = 0`` the flow gradient uses forward differences
    on every pixel with ``"zeros"`` (the last column/row differences against 0); with ``"border"``
    ``grid_sample`` zeroes it on the first and last column/row (clipped coordinates).
    """
    if x.dim() != 4 or flow.shape != (x.shape[0], *x.shape[2:], 2):
        raise ValueError(f"flow must be (B, H, W, 2) for images (B, C, H, W), got {tuple(flow.shape)} "
                         f"for {tuple(x.shape)}")  # fmt: skip
    if padding_mode not in PADDINGS:
        raise ValueError(f"padding_mode must be one of {PADDINGS}, got {padding_mode!r}")
    height, width = x.shape[-2:]
    if check_units(units) == "normalized":
        flow = normalized_to_pixels(flow, height, width)
    padded_h, padded_w = _exact_size(height), _exact_size(width)
    pad = (0, padded_w - width, 0, padded_h - height)
    x = F.pad(x, pad, mode="constant") if padding_mode == "zeros" else F.pad(x, pad, mode="replicate")
    rows = torch.arange(height, dtype=flow.dtype, device=flow.device)
    cols = torch.arange(width, dtype=flow.dtype, device=flow.device)
    base = torch.stack(torch.meshgrid(cols, rows, indexing="xy"), dim=-1)  # (H, W, 2): (col, row)
    scale = torch.tensor([(padded_w - 1) / 2, (padded_h - 1) / 2], dtype=flow.dtype, device=flow.device)
    grid = (base + flow) / scale - 1
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def image_gradient(x: Tensor) -> tuple[Tensor, Tensor]:
    """Spatial derivatives ``(d/dcol, d/drow)`` of ``(B, C, H, W)`` images, as the ADef code takes them:
    central differences inside, one-sided differences on the first and last column/row."""
    d_row, d_col = torch.gradient(x, dim=(-2, -1))
    return d_col, d_row


def gaussian_kernel(sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Normalized 1-D Gaussian of width ``sigma`` pixels, radius ``int(4 sigma + 0.5)`` (scipy, ADef)."""
    radius = int(4 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device) / sigma
    kernel = torch.exp(-0.5 * t**2)
    return kernel / kernel.sum()


def _reflect_indices(size: int, radius: int, device: torch.device) -> Tensor:
    """Indices of ``scipy.ndimage``'s ``"reflect"`` extension (``c b a | a b c | c b a``)."""
    index = torch.arange(-radius, size + radius, device=device) % (2 * size)
    return torch.where(index < size, index, 2 * size - 1 - index)


def gaussian_smooth(flow: Tensor, sigma: float, padding: Literal["reflect", "zeros"] = "reflect") -> Tensor:
    """Separable Gaussian filter (width ``sigma`` pixels) on each component of a field ``(..., H, W, 2)``.

    ``sigma = 0`` is the identity. ``padding="reflect"`` (default) is ``scipy.ndimage.gaussian_filter``
    as in foolbox's ADef: it keeps a constant field constant. ``"zeros"`` is the official ADef code
    (a zero-padded convolution): it damps the field near the border, but is self-adjoint.
    """
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 (pixels), got {sigma}")
    if padding not in ("reflect", "zeros"):
        raise ValueError(f"padding must be 'reflect' or 'zeros', got {padding!r}")
    if sigma == 0:
        return flow
    *batch, height, width, _ = flow.shape
    kernel = gaussian_kernel(sigma, flow.dtype, flow.device)
    radius = kernel.numel() // 2
    planes = flow.movedim(-1, -3).reshape(-1, 1, height, width)
    for dim, size in ((-1, width), (-2, height)):
        if padding == "reflect":
            planes = planes.index_select(dim, _reflect_indices(size, radius, flow.device))
        else:
            planes = F.pad(planes, (radius, radius) if dim == -1 else (0, 0, radius, radius))
        weight = kernel.view(1, 1, 1, -1) if dim == -1 else kernel.view(1, 1, -1, 1)
        planes = F.conv2d(planes, weight)
    return planes.reshape(*batch, 2, height, width).movedim(-3, -1)


def t_norm(flow: Tensor) -> Tensor:
    """ADef's size of fields ``(..., H, W, 2)``: the largest displacement ``max_p ||f(p)||_2`` (pixels if
    ``flow`` is), one value per field."""
    return flow.norm(dim=-1).flatten(-2).amax(dim=-1)
