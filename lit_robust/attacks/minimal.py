"""What every minimal-perturbation attack shares: per-sample success decided by re-classifying.

Libraries disagree on what a failed sample returns: advertorch's CW, EAD, DDN and FAB return the
clean image, its stAdv an all-zero image, DeepFool-style attacks their last iterate. A distance of 0
is therefore no evidence of success. :func:`keep_if_fooled` settles it the one honest way: it
classifies the output and keeps, per sample, the adversarial point if it fools the model and the
clean input otherwise (evaluation.md, "Known traps").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def keep_if_fooled(
    model: nn.Module, x: Tensor, y: Tensor, x_adv: Tensor, found: Tensor | None = None
) -> Tensor:
    """Per sample: ``x_adv`` where it is finite and ``argmax model(x_adv) != y``, else the clean ``x``.

    ``found`` (bool, per sample), where given, also requires the attack itself to report success: a
    placeholder a library returns for a failure (stAdv's zeros) may happen to be misclassified too.
    """
    with torch.no_grad():
        fooled = (model(x_adv).argmax(dim=1) != y) & torch.isfinite(x_adv).flatten(1).all(dim=1)
    if found is not None:
        fooled &= found
    return torch.where(fooled.view(-1, *[1] * (x.dim() - 1)), x_adv, x)
