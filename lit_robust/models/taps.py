"""Taps: expose the *inputs* of chosen modules of any network to a regularizer, while recording only.

``Taps(network)`` selects modules by qualified name (``"features.3"``) or, by default, by type
(every ``nn.Conv2d`` and ``nn.Linear``). Nothing is attached to the network until
:meth:`Taps.recording` is entered: the forward pre-hooks are registered on entry and removed on
exit (also on an exception), and each stores ``inputs[0]`` as is — the live tensor, not detached,
so a regularizer can differentiate with respect to it and through it (double backprop)::

    taps = Taps(network)                       # selection checked here, nothing registered
    with taps.recording(x) as record:          # hooks live only inside this block
        logits = network(x)
    layer_inputs = record.module_inputs()      # {"features.2": tensor, ...}, forward order

Because the hooks exist only inside the block, attacks and evaluation never see them, and a network
is pickled, deep-copied, checkpointed or wrapped in DDP exactly as if it had never been tapped; the
recorded tensors belong to the :class:`Recording` the caller holds, so nothing outlives a step.

A module called several times in one forward yields one entry per call: ``name``, ``name#1``, ...
``module_inputs(dedup=True)`` drops every entry whose tensor *is* the network input given to
``recording`` or a pass-through of it (the output of a ``Normalize``, ``nn.Identity`` or
``nn.Flatten`` applied to it, transitively): the regularizer's own input tap stands for those.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from torch import Tensor, nn

from lit_robust.models.normalize import Normalize

DEFAULT_TAP_TYPES: tuple[str, ...] = ("torch.nn.Conv2d", "torch.nn.Linear")
PASSTHROUGH_TYPES: tuple[type[nn.Module], ...] = (Normalize, nn.Identity, nn.Flatten)


def resolve_types(types: Sequence[str | type]) -> tuple[type[nn.Module], ...]:
    """Module classes from classes or dotted paths (``"torch.nn.Conv2d"``), with a clear error."""
    resolved = []
    for item in types:
        if isinstance(item, str):
            module_path, _, name = item.rpartition(".")
            try:
                item = getattr(importlib.import_module(module_path), name)
            except (ImportError, AttributeError, ValueError) as error:
                raise ValueError(f"tap_types: cannot import {item!r} ({error})") from None
        if not (isinstance(item, type) and issubclass(item, nn.Module)):
            raise ValueError(f"tap_types must be nn.Module classes or their dotted paths, got {item!r}")
        resolved.append(item)
    return tuple(resolved)


class Recording:
    """What one recording forward saw: the tapped layer inputs, in call order, and the input aliases."""

    def __init__(self, network_input: Tensor | None):
        self.entries: list[tuple[str, Tensor, int]] = []  # (tap name, live tensor, version at record time)
        self.input_aliases: list[Tensor] = [] if network_input is None else [network_input]
        self._calls: dict[str, int] = {}

    def add(self, name: str, tensor: Tensor) -> None:
        count = self._calls.get(name, 0)
        self._calls[name] = count + 1
        self.entries.append((name if count == 0 else f"{name}#{count}", tensor, tensor._version))

    def is_input(self, tensor: object) -> bool:
        return any(tensor is alias for alias in self.input_aliases)

    def module_inputs(self, dedup: bool = True) -> dict[str, Tensor]:
        """``{tap name: live input tensor}`` in forward order; ``dedup`` drops the network input's aliases."""
        return {name: t for name, t, _ in self.entries if not (dedup and self.is_input(t))}

    def check_unmodified(self) -> None:
        """Raise a ``ValueError`` naming the first tap whose tensor was modified in place after recording."""
        for name, tensor, version in self.entries:
            if tensor._version != version:
                raise ValueError(
                    f"the input of tapped module {name!r} was modified in place after it was recorded, so "
                    f"its gradient and value are no longer the layer's input: use inplace=False in the "
                    f"operation that follows it (e.g. nn.ReLU(inplace=False))"
                )


class Taps:
    """Selects modules of ``network`` whose inputs :meth:`recording` exposes (see the module docstring).

    Args:
        network: any ``nn.Module`` (our models, user networks, torchvision models).
        names: qualified module names to tap (as in ``network.named_modules()``); if given, ``types``
            is ignored. An unknown name is a ``ValueError`` listing the valid ones.
        types: module classes (or dotted paths) tapped when ``names`` is None; default Conv2d and Linear.
    """

    def __init__(
        self,
        network: nn.Module,
        names: Sequence[str] | None = None,
        types: Sequence[str | type] = DEFAULT_TAP_TYPES,
    ):
        if not isinstance(network, nn.Module):
            raise TypeError(f"network must be a torch.nn.Module, got {type(network).__name__}")
        self.network = network
        self.types = resolve_types(types)
        self.names = None if names is None else list(names)
        if self.names is not None:
            if isinstance(names, str):
                raise ValueError(f"names must be a list of module names, got the string {names!r}")
            known = dict(network.named_modules())
            unknown = [name for name in self.names if name not in known or name == ""]
            if unknown:
                raise ValueError(
                    f"taps: no module named {unknown} in {type(network).__name__}; "
                    f"valid names: {[n for n in known if n]}"
                )
        self._active: Recording | None = None

    def selected(self) -> list[tuple[str, nn.Module]]:
        """The tapped ``(name, module)`` pairs, resolved now (in ``named_modules`` order)."""
        if self.names is not None:
            modules = dict(self.network.named_modules())
            return [(name, modules[name]) for name in self.names]
        return [(n, m) for n, m in self.network.named_modules() if n and isinstance(m, self.types)]

    @property
    def is_recording(self) -> bool:
        return self._active is not None

    @contextmanager
    def recording(self, network_input: Tensor | None = None) -> Iterator[Recording]:
        """Register the hooks, yield a fresh :class:`Recording`, and remove every hook on exit.

        ``network_input`` is the tensor the network is about to be called with; its pass-throughs
        are tracked so that ``module_inputs(dedup=True)`` can drop them.
        """
        if self._active is not None:
            raise RuntimeError("Taps.recording() is already active: recordings cannot be nested")
        record = Recording(network_input)
        handles = []
        try:
            for name, module in self.selected():
                handles.append(module.register_forward_pre_hook(_StoreInput(record, name)))
            if network_input is not None:
                for module in self.network.modules():
                    if isinstance(module, PASSTHROUGH_TYPES):
                        handles.append(module.register_forward_hook(_TrackAlias(record)))
            self._active = record
            yield record
        finally:
            self._active = None
            for handle in handles:
                handle.remove()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_active"] = None  # a recording never travels
        return state


class _StoreInput:
    """Forward pre-hook: append the module's first positional input, live."""

    def __init__(self, record: Recording, name: str):
        self.record = record
        self.name = name

    def __call__(self, module: nn.Module, inputs: tuple) -> None:
        if inputs and isinstance(inputs[0], Tensor):
            self.record.add(self.name, inputs[0])


class _TrackAlias:
    """Forward hook on pass-through modules: their output of an input alias is an alias too."""

    def __init__(self, record: Recording):
        self.record = record

    def __call__(self, module: nn.Module, inputs: tuple, output: object) -> None:
        if inputs and self.record.is_input(inputs[0]) and isinstance(output, Tensor):
            self.record.input_aliases.append(output)
