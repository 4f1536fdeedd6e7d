"""The flow gradient (Xia and Li), built from the per-sample input gradient.

Pengfei Xia, Bin Li, "Improving Resistance to Adversarial Deformations by Regularizing Gradients",
Neurocomputing 455:38-46 (2021), arXiv 2008.12997; ``papers/flow_gradient.md`` (b). Conventions
(image and flow layout, units) are those of :mod:`lit_robust.functional.flow`.

The flow gradient ``G = grad_f l(F(warp(x, f)), y)`` at ``f = 0`` has a closed form: the input
gradient times the image's forward differences, summed over channels,

    G_col = sum_c (dl/dx_c) * (x_c(i, j+1) - x_c(i, j)),
    G_row = sum_c (dl/dx_c) * (x_c(i+1, j) - x_c(i, j)).

Forward differences, because a bilinear warp is piecewise linear with kinks at integer positions and
the floor picks the left/top neighbour (its right-derivative). **Border convention.** What lies past
the last column/row is the warp's padding: ``padding="border"`` (the spec's default, clamped
indices) gives a zero difference in the last column/row; ``padding="zeros"`` differences against 0
there (``-x``), which is exactly what :func:`~lit_robust.functional.flow.warp` with zeros padding
differentiates to on *every* pixel. ``warp(..., padding_mode="border")`` agrees with the
``"border"`` closed form everywhere except the first column (``G_col``) and first row (``G_row``),
where ``grid_sample`` clips the coordinate and its gradient is 0. :func:`flow_gradient_by_warp` is
that autograd path, kept as the reference for tests.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_robust.functional.flow import Padding, normalized_to_pixels, warp

Convention = Literal["pixel", "official"]
CONVENTIONS = ("pixel", "official")


# -------------------------------------------------------------------------------- flow gradient
def forward_differences(x: Tensor, padding: Padding = "border") -> tuple[Tensor, Tensor]:
    """``(D_col x, D_row x)`` of images ``(B, C, H, W)``: ``x(i, j+1) - x(i, j)``, ``x(i+1, j) - x(i, j)``.

    ``padding="border"`` (default, the spec's clamped indices): 0 in the last column / row;
    ``"zeros"``: ``-x`` there (the neighbour past the edge reads 0).
    """
    if padding not in ("border", "zeros"):
        raise ValueError(f"padding must be 'border' or 'zeros', got {padding!r}")
    mode = "replicate" if padding == "border" else "constant"
    padded = F.pad(x, (0, 1, 0, 1), mode=mode)
    return padded[..., :-1, 1:] - x, padded[..., 1:, :-1] - x


def flow_gradient(input_grad: Tensor, x: Tensor, padding: Padding = "border") -> Tensor:
    """Closed-form flow gradient at zero flow, pixel units, ``(B, H, W, 2)`` in (column, row) order.

    ``G = (sum_c g_c * D_col x_c, sum_c g_c * D_row x_c)`` with ``g = input_grad`` (per sample, e.g.
    from ``functional.input_gradient``) and the forward differences of ``x`` (see the module docstring for
    the border). ``x`` enters as data: detach it when it does not depend on the weights.
    """
    if input_grad.shape != x.shape or x.dim() != 4:
        raise ValueError(f"input_grad and x must both be (B, C, H, W), got {tuple(input_grad.shape)} "
                         f"and {tuple(x.shape)}")  # fmt: skip
    d_col, d_row = forward_differences(x, padding)
    return torch.stack([(input_grad * d_col).sum(1), (input_grad * d_row).sum(1)], dim=-1)


def flow_gradient_to_normalized(grad_pix: Tensor) -> Tensor:
    """A flow gradient in pixel units ``(B, H, W, 2)`` to normalized units (``align_corners=True``).

    Gradients scale inversely to displacements: ``G_norm = G_pix * ((W - 1) / 2, (H - 1) / 2)``.
    """
    height, width = grad_pix.shape[1:3]
    return normalized_to_pixels(grad_pix, height, width)


def flow_gradient_penalty(grad_pix: Tensor, convention: Convention = "pixel") -> Tensor:
    """The regularizer ``R`` of a batch of pixel-unit flow gradients ``(B, H, W, 2)``, a scalar.

    * ``"pixel"`` (ours, default): ``R_pix = (1/B) sum_b ||G_pix,b||^2``; independent of batch size
      and, per pixel of displacement, of resolution.
    * ``"official"`` (the official code): the squared norm of the gradient of the *batch-mean* loss
      w.r.t. the normalized flow, averaged over the batch: ``R_off = (1/B^2) (1/B) sum_b ||G_norm,b||^2``.

    For ``H = W``: ``lam_pix R_pix = lam_off R_off`` when ``lam_pix = lam_off ((W - 1)/2)^2 / B^2``.
    """
    if convention == "pixel":
        return grad_pix.square().flatten(1).sum(1).mean()
    if convention == "official":
        batch = grad_pix.shape[0]
        return flow_gradient_to_normalized(grad_pix).square().flatten(1).sum(1).mean() / batch**2
    raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def flow_gradient_by_warp(
    model: nn.Module, x: Tensor, y: Tensor, padding_mode: Padding = "border", create_graph: bool = False
) -> Tensor:
    """Reference: ``grad_f sum_b CE(model(warp(x, f)), y)`` at ``f = 0`` by autograd, pixel units.

    Goes through :func:`~lit_robust.functional.flow.warp` (``grid_sample`` on an exact grid), twice
    differentiable with ``create_graph=True``. Equals :func:`flow_gradient` with ``padding="zeros"``
    on every pixel for ``padding_mode="zeros"``; for ``"border"`` see the module docstring.
    """
    flow = x.new_zeros(x.shape[0], *x.shape[2:], 2).requires_grad_(True)
    loss = F.cross_entropy(model(warp(x, flow, "pixels", padding_mode)), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, flow, create_graph=create_graph)
    return grad


def random_deformation(x: Tensor, sigma_px: float) -> Tensor:
    """The random start: ``clamp(warp_zeros(x, n), 0, 1)`` with ``n ~ N(0, sigma_px^2)`` i.i.d. per
    pixel and component (pixel units), detached. ``sigma_px = 0`` returns ``x`` (detached)."""
    if sigma_px < 0:
        raise ValueError(f"sigma_px must be >= 0 (pixels), got {sigma_px}")
    x = x.detach()
    if sigma_px == 0:
        return x
    noise = sigma_px * torch.randn(x.shape[0], *x.shape[2:], 2, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        return warp(x, noise, "pixels", "zeros").clamp(0.0, 1.0)
