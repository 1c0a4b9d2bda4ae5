"""``Parameter`` and ``Module``: the bookkeeping behind every layer, as in ``torch.nn``.

A Module registers, through ``__setattr__``, every :class:`Parameter` (trainable), every
sub-Module and every buffer (a NumPy array of state, e.g. BatchNorm's running mean)
assigned to it. Registered objects also stay ordinary instance attributes, so reading
``self.weight`` in ``forward`` costs nothing extra. ``state_dict`` walks the tree in
PyTorch's order (own parameters, own buffers, then each child under ``name.``), so its keys
and array layouts are those of the same ``torch.nn`` architecture.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from ..autograd import Tensor
from . import hooks

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Parameter(Tensor):
    """A Tensor that a :class:`Module` registers as trainable; ``requires_grad`` is True.

    ``data`` is kept without copying when it already is a float array, as in PyTorch.

    >>> Parameter(np.zeros(2)).requires_grad
    True
    """

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True, dtype: Any = None) -> None:
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self) -> str:
        return "Parameter containing:\n" + super().__repr__()


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` returns (with ``strict=False``, possibly non-empty)."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def check_dtype(dtype: Any, owner: str) -> np.dtype:
    """``dtype`` as a NumPy float dtype (float32 or float64), else a TypeError."""
    resolved = np.dtype(dtype)
    if resolved not in FLOAT_DTYPES:
        raise TypeError(f"{owner}: dtype must be float32 or float64, got {resolved}")
    return resolved


def _add_indent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


class Module:
    """Base class of every layer: registration, traversal, train/eval, state dicts.

    Subclasses call ``super().__init__()`` first, assign Parameters, sub-Modules and
    buffers (:meth:`register_buffer`) as attributes, and define :meth:`forward`; calling
    the module calls ``forward``.

    >>> class Scale(Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.gain = Parameter(np.ones(1))
    ...     def forward(self, x):
    ...         return x * self.gain
    >>> list(Scale().state_dict())
    ['gain']
    """

    training: bool
    # In training, each sample's output depends on that sample alone and on no shared
    # random draws, so a batch may be split into shards whose gradients add up to the
    # batch's (the trainer's threads). BatchNorm (batch statistics) and Dropout (one
    # generator) say False.
    batch_independent: bool = True

    def __init__(self) -> None:
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", {})
        # PyTorch's hook registries (cnnlab.nn.hooks), by handle id in registration order.
        object.__setattr__(self, "_forward_pre_hooks", {})
        object.__setattr__(self, "_forward_hooks", {})
        object.__setattr__(self, "_backward_hooks", {})

    # -- calling ----------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__}: forward() is not defined")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return hooks.call_module(self, args, kwargs)

    # -- hooks (cnnlab.nn.hooks) -------------------------------------------------------------
    def register_forward_pre_hook(self, hook: Callable[..., Any]) -> hooks.RemovableHandle:
        """``hook(module, args)`` before each ``forward``; a return value replaces ``args``.

        >>> from cnnlab.nn import ReLU
        >>> layer = ReLU()
        >>> handle = layer.register_forward_pre_hook(lambda module, args: (args[0] * 2,))
        >>> layer(np.array([-1.0, 3.0])).tolist()
        [0.0, 6.0]
        >>> handle.remove()
        """
        return hooks.register(self._forward_pre_hooks, hook, type(self).__name__,
                              "register_forward_pre_hook")

    def register_forward_hook(self, hook: Callable[..., Any]) -> hooks.RemovableHandle:
        """``hook(module, args, output)`` after each ``forward``; a return value replaces the
        output.

        >>> from cnnlab.nn import ReLU
        >>> seen = []
        >>> with ReLU().register_forward_hook(lambda m, args, out: seen.append(out.shape)):
        ...     pass
        >>> seen
        []
        """
        return hooks.register(self._forward_hooks, hook, type(self).__name__,
                              "register_forward_hook")

    def register_full_backward_hook(self, hook: Callable[..., Any]) -> hooks.RemovableHandle:
        """``hook(module, grad_input, grad_output)`` once the gradient with respect to the
        module's input is known (tuples of arrays); a return value replaces ``grad_input``.
        """
        return hooks.register(self._backward_hooks, hook, type(self).__name__,
                              "register_full_backward_hook")

    # -- registration -----------------------------------------------------------------------
    def _registries(self) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        try:
            return self._parameters, self._buffers, self._modules
        except AttributeError:
            raise AttributeError(
                f"{type(self).__name__}: call super().__init__() before assigning "
                f"parameters, buffers or sub-modules"
            ) from None

    def _forget(self, name: str) -> None:
        for registry in self._registries():
            registry.pop(name, None)
        self._non_persistent.discard(name)

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, (Parameter, Module)):
            params, _, modules = self._registries()
            registry = params if isinstance(value, Parameter) else modules
            if name not in registry:  # re-assigning keeps the registration order
                self._forget(name)
            registry[name] = value
        elif "_parameters" in self.__dict__:
            for registry, kind, allowed in (
                (self._parameters, "parameter", Parameter),
                (self._modules, "sub-module", Module),
                (self._buffers, "buffer", np.ndarray),
            ):
                if name in registry:
                    if value is not None and not isinstance(value, allowed):
                        raise TypeError(
                            f"{type(self).__name__}: cannot assign {type(value).__name__} to "
                            f"{kind} '{name}' ({allowed.__name__} or None expected)"
                        )
                    registry[name] = value
                    break
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        if "_parameters" in self.__dict__:
            self._forget(name)
        object.__delattr__(self, name)

    def _check_new_name(self, name: Any, what: str) -> None:
        if not isinstance(name, str):
            raise TypeError(f"{type(self).__name__}: {what} name must be a str, got "
                            f"{type(name).__name__}")
        if not name or "." in name:
            raise ValueError(f"{type(self).__name__}: {what} name must be non-empty and "
                             f"contain no '.', got {name!r}")
        registered = any(name in registry for registry in self._registries())
        if hasattr(self, name) and not registered:
            raise ValueError(f"{type(self).__name__}: attribute '{name}' already exists")

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Add a Parameter (or None: a declared but absent one, e.g. ``bias=False``)."""
        self._check_new_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"{type(self).__name__}: parameter '{name}' must be a Parameter "
                            f"or None, got {type(param).__name__}")
        self._forget(name)
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def register_buffer(self, name: str, array: np.ndarray | None, persistent: bool = True
                        ) -> None:
        """Add a buffer: a NumPy array of state saved in ``state_dict`` (if ``persistent``)
        and updated in place, not trained."""
        self._check_new_name(name, "buffer")
        if array is not None and not isinstance(array, np.ndarray):
            raise TypeError(f"{type(self).__name__}: buffer '{name}' must be a numpy array "
                            f"or None, got {type(array).__name__}")
        self._forget(name)
        self._buffers[name] = array
        if not persistent:
            self._non_persistent.add(name)
        object.__setattr__(self, name, array)

    def add_module(self, name: str, module: Module | None) -> None:
        """Add a sub-Module under ``name`` (its keys are prefixed ``name.``)."""
        self._check_new_name(name, "module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(self).__name__}: module '{name}' must be a Module or "
                            f"None, got {type(module).__name__}")
        self._forget(name)
        self._modules[name] = module
        object.__setattr__(self, name, module)

    register_module = add_module

    # -- traversal --------------------------------------------------------------------------
    def named_modules(self, prefix: str = "", memo: set[int] | None = None
                      ) -> Iterator[tuple[str, Module]]:
        """This module and all below it, each once, depth-first, as (dotted name, module)."""
        memo = set() if memo is None else memo
        if id(self) in memo:
            return
        memo.add(id(self))
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(f"{prefix}.{name}" if prefix else name, memo)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        seen: set[int] = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self) -> Iterator[Module]:
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry: str, prefix: str, recurse: bool
                       ) -> Iterator[tuple[str, Any]]:
        seen: set[int] = set()
        owners = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for owner_name, owner in owners:
            for name, value in getattr(owner, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{owner_name}.{name}" if owner_name else name), value

    def named_parameters(self, prefix: str = "", recurse: bool = True
                         ) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) for each distinct parameter, in registration order."""
        return self._named_members("_parameters", prefix, recurse)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True
                      ) -> Iterator[tuple[str, np.ndarray]]:
        return self._named_members("_buffers", prefix, recurse)

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def apply(self, fn: Callable[[Module], Any]) -> Module:
        """Call ``fn`` on every sub-module (children first), then on ``self``."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # -- modes and gradients ------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode (Dropout drops, BatchNorm uses batch statistics) recursively."""
        if not isinstance(mode, bool):
            raise TypeError(f"{type(self).__name__}.train: mode must be a bool, got "
                            f"{type(mode).__name__}")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Reset every parameter's ``.grad`` to None (PyTorch's ``set_to_none=True``)."""
        for param in self.parameters():
            param.grad = None

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        for param in self.parameters():
            param.requires_grad = requires_grad
        return self

    def to(self, dtype: Any) -> Module:
        """Cast every float parameter and float buffer to ``dtype`` (float32 or float64)."""
        target = check_dtype(dtype, f"{type(self).__name__}.to")
        for module in self.modules():
            for param in module._parameters.values():
                if param is not None and param.dtype != target:
                    param.data = param.data.astype(target)
                    param.grad = None
            for name, buffer in list(module._buffers.items()):
                if buffer is not None and buffer.dtype.kind == "f" and buffer.dtype != target:
                    setattr(module, name, buffer.astype(target))
        return self

    # -- state dicts ------------------------------------------------------------------------
    def _state_items(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        """(key, live array) in PyTorch's ``state_dict`` order; shared entries repeat."""
        for name, param in self._parameters.items():
            if param is not None:
                yield prefix + name, param.data
        for name, buffer in self._buffers.items():
            if buffer is not None and name not in self._non_persistent:
                yield prefix + name, buffer
        for name, module in self._modules.items():
            if module is not None:
                yield from module._state_items(f"{prefix}{name}.")

    def state_dict(self, prefix: str = "") -> OrderedDict[str, np.ndarray]:
        """Copies of every parameter and persistent buffer, keyed as in PyTorch.

        Keys are dotted paths (``features.0.weight``, ``bn.running_mean``,
        ``bn.num_batches_tracked``) and arrays have PyTorch's layouts. Unlike PyTorch the
        arrays are copies, so a saved "best" state is not changed by further training.
        """
        return OrderedDict((key, np.array(value, copy=True))
                           for key, value in self._state_items(prefix))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True
                        ) -> IncompatibleKeys:
        """Copy arrays from ``state_dict`` into this module's parameters and buffers.

        Values are copied into the existing arrays (keeping their dtype), so references to
        the parameters (e.g. held by an optimizer) stay valid. With ``strict``, a missing
        or unexpected key is a ValueError; a shape mismatch always is. Nothing is copied
        unless every check passes.

        Returns
        -------
        IncompatibleKeys(missing_keys, unexpected_keys)
        """
        fn = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{fn}: state_dict must be a mapping of str to arrays, got "
                            f"{type(state_dict).__name__}")
        targets = list(self._state_items())
        expected = {key for key, _ in targets}
        missing = [key for key, _ in targets if key not in state_dict]
        unexpected = [key for key in state_dict if key not in expected]
        if strict and (missing or unexpected):
            raise ValueError(f"{fn}: missing keys {missing}, unexpected keys {unexpected}")
        updates = []
        for key, target in targets:
            if key not in state_dict:
                continue
            value = np.asarray(state_dict[key])
            if value.dtype.kind not in "biuf":
                raise TypeError(f"{fn}: value for '{key}' must be numeric, got dtype "
                                f"{value.dtype}")
            if value.shape != target.shape:
                raise ValueError(f"{fn}: shape mismatch for '{key}': state_dict has "
                                 f"{value.shape}, model has {target.shape}")
            updates.append((target, value))
        for target, value in updates:
            np.copyto(target, value, casting="unsafe")
        return IncompatibleKeys(missing, unexpected)

    # -- printing ---------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """Settings shown inside ``Name(...)``; layers override it."""
        return ""

    def __repr__(self) -> str:
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        children = [f"({name}): {_add_indent(repr(module), 2)}"
                    for name, module in self._modules.items()]
        if not children and len(lines) <= 1:
            return f"{type(self).__name__}({extra})"
        body = "\n  ".join(lines + children)
        return f"{type(self).__name__}(\n  {body}\n)"
