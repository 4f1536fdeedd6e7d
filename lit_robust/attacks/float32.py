"""Float32-only library code (advertorch, pyautoattack) on a model of another dtype (float64).

advertorch 0.2.3 builds its bookkeeping in float32 (``torch.FloatTensor`` distances in CW and EAD,
``.float()`` masks in FAB, a ``.float()`` sampling grid in stAdv) and pyautoattack 0.2.0 casts the
inputs with ``x.float()`` (APGD, FAB-T): on a float64 model and float64 images they raise dtype errors.
:func:`float32_view` gives them what they were written for, float32 inputs and a model that takes and
returns float32, while the model itself still runs in the caller's dtype. The library's own
arithmetic is float32, as it is for every user; the attack's output is cast back to the caller's
dtype and judged on the model itself (``keep_if_fooled``, the projection in ``Attack.__call__``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Float32View(nn.Module):
    """``model`` as a float32 function: ``model(x.to(dtype)).float()``; gradients flow through both casts."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model
        self.input_dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.to(self.input_dtype)).float()


def float32_view(model: nn.Module, x: Tensor) -> tuple[nn.Module, Tensor]:
    """``(model, x)`` for a float32-only library: unchanged for float32 ``x``, else a
    :class:`Float32View` of ``model`` and ``x.float()``. Cast the library's output back with
    ``.to(x.dtype)``."""
    if x.dtype == torch.float32:
        return model, x
    return Float32View(model, x.dtype), x.float()
