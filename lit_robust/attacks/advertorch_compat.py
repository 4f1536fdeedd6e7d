"""The one place lit_robust imports advertorch, with its compatibility shim.

advertorch 0.2.3 (its latest release) imports ``zero_gradients`` from ``torch.autograd.gradcheck``,
which torch removed in 1.9. ``torch.autograd.gradcheck`` as an attribute resolves to the
*function* ``gradcheck``, so the shim patches the module object in ``sys.modules``. The restored
function is the one torch used to ship. Import advertorch names from here, never directly.

:func:`quiet_advertorch` silences the known, harmless warnings advertorch 0.2.3 raises on current
torch and scipy (deprecated call forms; no change in the numbers), and nothing else.
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.autograd.gradcheck  # noqa: F401  # make sure the submodule is in sys.modules


def _zero_gradients(x: torch.Tensor | Iterable[torch.Tensor]) -> None:
    """Zero ``x.grad`` in place (what ``torch.autograd.gradcheck.zero_gradients`` did before 1.9)."""
    if isinstance(x, torch.Tensor):
        if x.grad is not None:
            x.grad.detach_()
            x.grad.zero_()
    else:
        for element in x:
            _zero_gradients(element)


_gradcheck_module = sys.modules["torch.autograd.gradcheck"]
if not hasattr(_gradcheck_module, "zero_gradients"):
    _gradcheck_module.zero_gradients = _zero_gradients

from advertorch.attacks import (  # noqa: E402
    CarliniWagnerL2Attack,
    DDNL2Attack,
    ElasticNetL1Attack,
    FABAttack,
    GradientSignAttack,
    LinfBasicIterativeAttack,
    MomentumIterativeAttack,
    SparseL1DescentAttack,
    SpatialTransformAttack,
)
from advertorch.attacks.iterative_projected_gradient import perturb_iterative  # noqa: E402
from advertorch.attacks.utils import rand_init_delta  # noqa: E402
from advertorch.utils import clamp_by_pnorm, normalize_by_pnorm  # noqa: E402

_KNOWN_WARNINGS = (
    "This overload of add_ is deprecated",  # EAD: yy_k.data.add_(-lr, grad)
    "Detected call of `lr_scheduler.step()` before `optimizer.step()`",  # DDN (schedule shifted by one)
    "Default grid_sample and affine_grid behavior has changed",  # stAdv: align_corners left unset
    "scipy.optimize: The `disp` and `iprint` options",  # stAdv: iprint=0 (scipy >= 1.15; gone in 1.18)
)


@contextmanager
def quiet_advertorch() -> Iterator[None]:
    """Ignore the warnings listed in ``_KNOWN_WARNINGS`` while an advertorch attack runs."""
    with warnings.catch_warnings():
        for message in _KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=re.escape(message))
        yield


__all__ = [
    "CarliniWagnerL2Attack",
    "DDNL2Attack",
    "ElasticNetL1Attack",
    "FABAttack",
    "GradientSignAttack",
    "LinfBasicIterativeAttack",
    "MomentumIterativeAttack",
    "SparseL1DescentAttack",
    "SpatialTransformAttack",
    "clamp_by_pnorm",
    "normalize_by_pnorm",
    "perturb_iterative",
    "quiet_advertorch",
    "rand_init_delta",
]
