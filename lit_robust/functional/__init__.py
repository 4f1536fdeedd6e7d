"""Pure tensor math shared by attacks and defenses (no Lightning)."""

from lit_robust.functional.bpda import straight_through
from lit_robust.functional.deepfool import (
    DeepFoolResult,
    deepfool,
    deepfool_rho,
    deepfool_step,
    relative_size,
)
from lit_robust.functional.flow import (
    gaussian_smooth,
    image_gradient,
    normalized_to_pixels,
    pixels_to_normalized,
    t_norm,
    warp,
)
from lit_robust.functional.total_variation import total_variation, tv_inpaint, tv_inpainting_objective
from lit_robust.functional.wnll import knn_weights, wnll_scores, wnll_straight_through, wnll_system

__all__ = [
    "knn_weights",
    "total_variation",
    "tv_inpaint",
    "tv_inpainting_objective",
    "wnll_scores",
    "wnll_straight_through",
    "wnll_system",
    "DeepFoolResult",
    "deepfool",
    "deepfool_rho",
    "deepfool_step",
    "gaussian_smooth",
    "image_gradient",
    "normalized_to_pixels",
    "pixels_to_normalized",
    "relative_size",
    "straight_through",
    "t_norm",
    "warp",
]
