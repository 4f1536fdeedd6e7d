"""Lightning's checkpoint plugin, loading through :func:`lit_robust.loading.load_file` (weights only).

Here, not in :mod:`lit_robust.loading`, so that the networks (which load weights files) never import
Lightning.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lightning.pytorch.plugins.io import TorchCheckpointIO

from lit_robust.loading import load_file


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint plugin, loading through :func:`load_file` unless the caller passed
    ``weights_only=False`` itself (the explicit "I trust this file")."""

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if weights_only is False:
            return super().load_checkpoint(path, map_location=map_location, weights_only=False)
        return load_file(path, "checkpoint", map_location)
