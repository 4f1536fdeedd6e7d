"""The GFA value of any model: per-layer mean |cos(loss gradient, layer input)| on a seeded subset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lit_robust.callbacks.subset_evaluation import SubsetEvaluation
from lit_robust.functional.alignment import (
    TASK_LOSSES,
    build_taps,
    l1_over_l2,
    measure_alignment,
    per_sample_task_loss,
    summarize_cosines,
)
from lit_robust.models.modes import eval_mode
from lit_robust.models.taps import DEFAULT_TAP_TYPES
from lit_robust.validation import check_choice, check_real

RATIO_KEY = "grad_l1_over_l2/input"  # the input gradient's l1 / l2 ratio, beside the tap cosines


class GradientFeatureAlignment(SubsetEvaluation):
    """Measure gradient-feature alignment (Lin et al. 2025, arXiv 2511.13749) for ANY ``RobustClassifier``.

    For each tap ``t`` (the network input ``h_in = x - input_center``, then the inputs of the tapped
    modules, exactly as the ``GFA`` defense picks them), the per-sample cosine
    ``c_t = <d l / d h_t, h_t> / max(||d l / d h_t|| ||h_t||, eps_cos)`` of the task loss ``l``, on a
    fixed seeded subset of the validation (or test) data, with the model in eval mode (modes restored).
    Logs ``val/gfa_abs_cos/<tap>`` (mean ``|c_t|``, the paper's "GFA value") and ``val/gfa_cos/<tap>``
    (mean signed ``c_t``), under ``test/`` in ``test``, and ``val/grad_l1_over_l2/input``: the mean
    ``||d l / d x||_1 / ||d l / d x||_2`` of the input gradient (between 1 and ``sqrt(d)``; see
    :func:`~lit_robust.functional.alignment.l1_over_l2`), which an Linf attacker's gain grows with.
    The paper compares these across training methods, so attach it to the baselines too. The math is
    shared with the defense (``lit_robust.functional.alignment``); grads are enabled and inference
    mode left as needed, and no parameter ``.grad`` is touched.

    Taps are taken on ``model.network`` (the module itself if it has no ``network``), so tap names
    match ``GFA``'s ``train/gfa_abs_cos/<tap>``.

    Args:
        taps: ``"deep"`` (default), ``"first"`` or a list of module names, as in ``GFA``.
        tap_types: module classes (dotted paths) tapped by ``"deep"``; default Conv2d and Linear.
        task_loss: ``"ce"`` (default), ``"mse"`` or ``"mse_logits"``, as in ``GFA``.
        input_center: ``c_in`` in pixel units, in [0, 1] (default 0.5, the paper's [-1, 1] geometry;
            0 aligns with the raw pixels).
        eps_cos: floor of the norm product in the cosine, >= 0 (0: the exact cosine, NaN for a zero
            gradient).
        num_samples, every_n_epochs, seed, batch_size: see :class:`SubsetEvaluation`.
    """

    def __init__(
        self,
        taps: str | list[str] = "deep",
        tap_types: Sequence[str] = DEFAULT_TAP_TYPES,
        task_loss: str = "ce",
        input_center: float = 0.5,
        eps_cos: float = 1e-12,
        num_samples: int = 1000,
        every_n_epochs: int = 1,
        seed: int = 0,
        batch_size: int = 250,
    ):
        super().__init__(num_samples, every_n_epochs, seed, batch_size)
        if isinstance(taps, str) and taps.lower() not in ("first", "deep"):
            raise ValueError(f"taps must be 'first', 'deep' or a list of module names, got {taps!r}")
        self.taps = taps
        self.tap_types = tuple(tap_types)
        self.task_loss = check_choice("task_loss", task_loss, TASK_LOSSES)
        self.input_center = check_real("input_center", input_center, 0, 1)
        self.eps_cos = check_real("eps_cos", eps_cos, 0)

    def per_sample(self, model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        network = getattr(model, "network", model)
        taps = build_taps(network, self.taps, self.tap_types)
        with torch.inference_mode(False), torch.enable_grad(), eval_mode(network):
            x = x.detach().clone().requires_grad_(True)
            y = y.detach().clone()
            _, _, cosines = measure_alignment(
                network, taps, x, y, self.task_loss, self.input_center, self.eps_cos, create_graph=False
            )
            loss = per_sample_task_loss(network(x), y, self.task_loss)
            (input_gradient,) = torch.autograd.grad(loss.sum(), x)
        return {name: c.detach() for name, c in cosines.items()} | {RATIO_KEY: l1_over_l2(input_gradient)}

    def summarize(self, stage: str, values: Mapping[str, Tensor]) -> dict[str, Tensor]:
        cosines = {name: value for name, value in values.items() if name != RATIO_KEY}
        return summarize_cosines(stage, cosines) | {f"{stage}/{RATIO_KEY}": values[RATIO_KEY].nanmean()}
