"""Containers: ``Sequential`` (a pipeline), ``ModuleList`` and ``ModuleDict`` (registries).

Children are registered under their index (``"0"``, ``"1"``, ...) or key, so state-dict keys
read ``features.0.weight`` exactly as in PyTorch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .fusion import fuse_conv_max_pool
from .module import Module


def _index(container: Module, index: Any) -> int:
    if not isinstance(index, int):
        raise TypeError(f"{type(container).__name__}: index must be an int or slice, got "
                        f"{type(index).__name__}")
    size = len(container)
    if not -size <= index < size:
        raise IndexError(f"{type(container).__name__}: index {index} is out of range for "
                         f"{size} modules")
    return index % size


class _ModuleSequence(Module):
    """Positional access shared by :class:`Sequential` and :class:`ModuleList`."""

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return self._slice(index)
        return list(self._modules.values())[_index(self, index)]

    def __setitem__(self, index: int, module: Module) -> None:
        setattr(self, list(self._modules)[_index(self, index)], module)

    def _slice(self, index: slice) -> Module:
        raise NotImplementedError

    def append(self, module: Module) -> Any:
        self.add_module(str(len(self)), module)
        return self


class Sequential(_ModuleSequence):
    """Modules applied one after another: ``forward(x) = m_k(...m_1(m_0(x)))``.

    Built from modules (``Sequential(Conv2d(...), ReLU())``, keys ``"0"``, ``"1"``, ...) or
    from one ``OrderedDict`` of named modules.

    ``forward`` runs the steps of :func:`~cnnlab.nn.fusion.fuse_conv_max_pool`, a named
    rewrite pass: a ``ConvNd`` directly followed by a ``MaxPoolNd`` whose window is its
    stride runs as one op, :func:`cnnlab.functional.conv_max_pool`, the same function
    computed as one strided convolution where the cost model says that is faster (what it
    buys and when it stands aside: :mod:`cnnlab.nn.fusion`). Set ``fuse_conv_pool = False``
    on an instance to run every module on its own.

    >>> from cnnlab.nn import Flatten, Identity
    >>> Sequential(Identity(), Flatten())
    Sequential(
      (0): Identity()
      (1): Flatten(start_dim=1, end_dim=-1)
    )
    """

    fuse_conv_pool: bool = True

    def __init__(self, *modules: Module | Mapping[str, Module]) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], Mapping):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                self.add_module(str(index), module)

    def forward(self, x: Any) -> Any:
        modules = list(self._modules.values())
        steps = fuse_conv_max_pool(modules) if self.fuse_conv_pool else modules
        for step in steps:
            x = step(x)
        return x

    def _slice(self, index: slice) -> Sequential:
        return Sequential(OrderedDict(list(self._modules.items())[index]))


class ModuleList(_ModuleSequence):
    """A list of sub-Modules, registered under ``"0"``, ``"1"``, ... (no ``forward``)."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _slice(self, index: slice) -> ModuleList:
        return ModuleList(list(self._modules.values())[index])

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        for module in modules:
            self.append(module)
        return self

    def insert(self, index: int, module: Module) -> None:
        items = list(self._modules.values())
        items.insert(index, module)
        for key in list(self._modules):
            delattr(self, key)
        self.extend(items)


class ModuleDict(Module):
    """A dict of sub-Modules, registered under their keys (no ``forward``)."""

    def __init__(self, modules: Mapping[str, Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        delattr(self, key)

    def keys(self) -> Iterable[str]:
        return self._modules.keys()

    def values(self) -> Iterable[Module]:
        return self._modules.values()

    def items(self) -> Iterable[tuple[str, Module]]:
        return self._modules.items()

    def update(self, modules: Mapping[str, Module]) -> None:
        for key, module in modules.items():
            self[key] = module

    def pop(self, key: str) -> Module:
        module = self._modules[key]
        del self[key]
        return module
