"""One loader for every file lit_robust reads: tensors and plain data, never code.

``torch.load`` unpickles, and a pickle can run any code it names. Every file the project opens —
``init_from`` weights, ``--ckpt_path`` checkpoints, ``load_from_checkpoint``, ``Transfer``'s source —
goes through :func:`load_file`, which always passes ``weights_only=True`` (whatever torch's own
default is: before torch 2.6 it unpickles anything). Tensors, dicts, lists, tuples, strings and
numbers load; a file that needs anything more is refused with :class:`UnsafeFileError`, naming the
file and the object it asked for. ``.safetensors`` files (tensors only, by construction) load too:
:func:`save_safetensors` writes the network weights the benchmark commits, with the training
progress of the checkpoint they came from in the file's metadata (:func:`recorded_progress`).

:class:`lit_robust.defenses.checkpoint_io.SafeCheckpointIO` is the same loader as a Lightning
checkpoint plugin; every ``RobustClassifier`` installs it on its Trainer (replacing only Lightning's
default plugin), so ``trainer.fit(..., ckpt_path=...)`` is safe in code and from ``lit-robust``. A
user who trusts a file and wants it unpickled says so explicitly: ``trainer.fit(..., weights_only=False)``.
"""

from __future__ import annotations

import json
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from torch import Tensor


class UnsafeFileError(ValueError):
    """A file was refused: loading it would need to run code (or it is not a torch file at all)."""


def refusal(path: str | Path, what: str, error: Exception) -> UnsafeFileError:
    """The error for a file ``torch.load(weights_only=True)`` failed on with ``error``."""
    text = str(error)
    if not isinstance(error, pickle.UnpicklingError) or "Weights only load failed" not in text:
        first_line = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
        return UnsafeFileError(
            f"{what} {str(path)!r} is not a file torch.save wrote, or is damaged ({first_line})"
        )
    asked = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    reason = f"it asks for {asked.group(1)}" if asked else text.splitlines()[0]
    return UnsafeFileError(
        f"refused to load {what} {str(path)!r}: {reason}, and lit_robust loads only tensors and plain data "
        "(torch.load(weights_only=True)), because unpickling anything else can run code. If you trust "
        "this file, re-save its weights once: torch.save(torch.load(path, weights_only=False)"
        ".state_dict(), 'weights.pt')"
    )


def load_file(path: str | Path, what: str = "file", map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)``, with clear errors; a ``.safetensors`` file (a format
    that holds only tensors, so it cannot run code) is read by :func:`load_safetensors`.

    Args:
        path: the file.
        what: what the file is, for the messages (``"init_from"``, ``"checkpoint"``).
        map_location: as in ``torch.load``; CPU by default.

    Raises:
        FileNotFoundError: no file at ``path`` (the message gives the absolute path).
        UnsafeFileError: the file needs more than tensors and plain data, or is not a torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no file at {str(path)!r} (absolute: {path.resolve()})")
    if path.suffix == ".safetensors":
        return load_safetensors(path, what)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # a damaged or foreign file raises KeyError, EOFError, RuntimeError ...
        raise refusal(path, what, error) from None


def load_safetensors(path: Path, what: str = "file") -> dict[str, Tensor]:
    """The tensors of a ``.safetensors`` file, on the CPU (``{name: tensor}``, a state dict)."""
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as error:  # safetensors raises its own SafetensorError for a damaged file
        raise ValueError(f"{what}: {str(path)!r} is not a readable .safetensors file ({error})") from None


PROGRESS_KEY = "training_progress"  # the .safetensors metadata entry: JSON of a checkpoint's progress


def save_safetensors(
    state: Mapping[str, Tensor], path: str | Path, progress: Mapping[str, Any] | None = None
) -> Path:
    """Write the state dict ``state`` as ``path`` (``.safetensors``): contiguous CPU copies, shared
    storage cloned (the format refuses aliased tensors). ``progress``, a checkpoint's
    ``training_progress`` (epochs, steps, training seconds), is stored as JSON in the metadata."""
    path = Path(path)
    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in state.items()}
    metadata = None if progress is None else {PROGRESS_KEY: json.dumps(dict(progress), sort_keys=True)}
    safetensors.torch.save_file(tensors, str(path), metadata=metadata)
    return path


def recorded_progress(path: str | Path) -> dict[str, Any] | None:
    """The training progress :func:`save_safetensors` stored in the ``.safetensors`` file ``path``
    (``None`` for another format or a file without it), read from the header alone."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return None
    with safetensors.safe_open(str(path), framework="pt") as handle:
        text = (handle.metadata() or {}).get(PROGRESS_KEY)
    return None if text is None else json.loads(text)
