"""Containers: ``Sequential`` (a pipeline), ``ModuleList`` and ``ModuleDict`` (registries).

Children are registered under their index (``"0"``, ``"1"``, ...) or key, so state-dict keys
read ``features.0.weight`` exactly as in PyTorch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .. import functional as F
from ..ops._args import _is_int
from .conv import Conv1d, Conv2d, Conv3d
from .module import Module
from .pooling import MaxPool1d, MaxPool2d, MaxPool3d


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

    A ``ConvNd`` (stride 1, no dilation, zero padding) directly followed by a ``MaxPoolNd``
    whose window is its stride (no padding, floor mode, no indices) runs as one op,
    :func:`cnnlab.functional.conv_max_pool`: the same function, computed as one strided
    convolution over the pooled positions where the cost model says that is faster
    (layers with few input channels; a LeNet-5 step: 7.5-7.9 -> 6.1 ms). Set
    ``fuse_conv_pool = False`` on an instance to run every module on its own.

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
        index = 0
        while index < len(modules):
            module = modules[index]
            pool = _fused_pool_size(module, modules[index + 1]) if (
                self.fuse_conv_pool and index + 1 < len(modules)) else None
            if pool is None:
                x = module(x)
                index += 1
            else:
                n = module.spatial_dims
                x = F._conv_max_pool(x, module.weight, module.bias, module.padding,
                                     module.groups, pool, n, (f"conv{n}d", f"max_pool{n}d"))
                index += 2
        return x

    def _slice(self, index: slice) -> Sequential:
        return Sequential(OrderedDict(list(self._modules.items())[index]))


_FUSABLE = {Conv1d: MaxPool1d, Conv2d: MaxPool2d, Conv3d: MaxPool3d}


def _fused_pool_size(conv: Module, pool: Module) -> tuple[int, ...] | None:
    """The pooling window when ``pool(conv(x))`` is :func:`F.conv_max_pool` (see
    :class:`Sequential`), else None. Only the library's own layer classes fuse, with no
    ``forward`` set on the instance: a subclass or a patched layer runs its own code."""
    if (_FUSABLE.get(type(conv)) is not type(pool)
            or "forward" in vars(conv) or "forward" in vars(pool)):
        return None
    n = conv.spatial_dims
    kernel, stride = _int_tuple(pool.kernel_size, n), _int_tuple(pool.stride, n)
    plain_conv = (conv.stride == (1,) * n and conv.dilation == (1,) * n
                  and conv.padding_mode == "zeros")
    plain_pool = (kernel is not None and kernel == stride and min(kernel) >= 1
                  and _int_tuple(pool.padding, n) == (0,) * n
                  and _int_tuple(pool.dilation, n) == (1,) * n
                  and pool.ceil_mode is False and pool.return_indices is False)
    return kernel if plain_conv and plain_pool else None


def _int_tuple(value: Any, n: int) -> tuple[int, ...] | None:
    """``value`` as n ints (an int repeated, or a sequence of n ints), else None."""
    if _is_int(value):
        return (int(value),) * n
    if isinstance(value, (tuple, list)) and len(value) == n and all(map(_is_int, value)):
        return tuple(int(v) for v in value)
    return None


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
