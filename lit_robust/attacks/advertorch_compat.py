"""The one place lit_robust imports advertorch, with its compatibility shim.

advertorch 0.2.3 (its latest release) imports ``zero_gradients`` from ``torch.autograd.gradcheck``,
which torch removed in 1.9. ``torch.autograd.gradcheck`` as an attribute resolves to the
*function* ``gradcheck``, so the shim patches the module object in ``sys.modules``. The restored
function is the one torch used to ship. Import advertorch names from here, never directly.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

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

from advertorch.attacks import GradientSignAttack  # noqa: E402
from advertorch.attacks.iterative_projected_gradient import perturb_iterative  # noqa: E402
from advertorch.attacks.utils import rand_init_delta  # noqa: E402

__all__ = ["GradientSignAttack", "perturb_iterative", "rand_init_delta"]
