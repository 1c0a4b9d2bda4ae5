"""PyTorch's module hooks: see (or replace) what a layer receives and returns, forward and
backward, without changing the layer.

- ``register_forward_pre_hook(hook)``: ``hook(module, args)`` before ``forward``; a value
  it returns replaces ``args`` (a non-tuple becomes a one-tuple), as in ``torch.nn``.
- ``register_forward_hook(hook)``: ``hook(module, args, output)`` after ``forward``; a
  value it returns replaces the output.
- ``register_full_backward_hook(hook)``: ``hook(module, grad_input, grad_output)`` when the
  gradient with respect to the module's input has been computed; tuples of arrays (``None``
  for an input that needs none); a value it returns replaces ``grad_input``.

Each returns a :class:`RemovableHandle`. The registries are the dicts PyTorch keeps
(``_forward_pre_hooks``, ``_forward_hooks``, ``_backward_hooks``), which the conv + max-pool
fusion pass reads to stand aside (:func:`cnnlab.nn.fusion.has_hooks`): a hooked layer always
runs as itself, so its hooks see its own output.

The backward hook is built from two identity ops around the forward: one on the output,
whose VJP keeps ``grad_output``, and one on the input, whose VJP calls the hook with both.
A module whose ``forward`` takes several Tensors that need gradients cannot be hooked this
way in this autograd (each input's gradient would arrive on its own); it gets a TypeError.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from ..autograd import Tensor

_IDS = itertools.count()


class RemovableHandle:
    """What ``register_*_hook`` returns: ``remove()`` unregisters the hook (also on leaving
    a ``with`` block)."""

    def __init__(self, registry: dict[int, Callable[..., Any]]) -> None:
        self.id = next(_IDS)
        self._registry = registry

    def remove(self) -> None:
        self._registry.pop(self.id, None)

    def __enter__(self) -> RemovableHandle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()


def register(registry: dict[int, Callable[..., Any]], hook: Any, owner: str,
             method: str) -> RemovableHandle:
    if not callable(hook):
        raise TypeError(f"{owner}.{method}: hook must be callable, got "
                        f"{type(hook).__name__} {hook!r}")
    handle = RemovableHandle(registry)
    registry[handle.id] = hook
    return handle


class CallObserver(Protocol):
    """Told of every module call on its thread (:func:`observe_calls`)."""

    def enter(self, module: Any) -> None: ...

    def exit(self, module: Any) -> None: ...


class _Calls(threading.local):
    observer: CallObserver | None = None


_CALLS = _Calls()


@contextlib.contextmanager
def observe_calls(observer: CallObserver) -> Iterator[None]:
    """Inside this block every module call on this thread runs between
    ``observer.enter(module)`` and ``observer.exit(module)``, ``exit`` also when ``forward``
    raises, hooks included (the graph capture's module paths,
    :func:`cnnlab.analysis.trace`). Other threads are not observed. While it is active the
    conv + max-pool fusion pass stands aside (:func:`calls_observed`), so every layer's
    call is seen."""
    previous, _CALLS.observer = _CALLS.observer, observer
    try:
        yield
    finally:
        _CALLS.observer = previous


def calls_observed() -> bool:
    """Whether module calls on this thread are being observed (:func:`observe_calls`)."""
    return _CALLS.observer is not None


def call_module(module: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    """``module(*args, **kwargs)``: ``forward`` with its hooks, told to an observer."""
    observer = _CALLS.observer
    if observer is None:
        return _call(module, args, kwargs)
    observer.enter(module)
    try:
        return _call(module, args, kwargs)
    finally:
        observer.exit(module)


def _call(module: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    if module._forward_pre_hooks or module._forward_hooks or module._backward_hooks:
        return call_with_hooks(module, args, kwargs)
    return module.forward(*args, **kwargs)


def call_with_hooks(module: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    """``module.forward(*args, **kwargs)`` with its pre-hooks, backward hooks and forward
    hooks, in PyTorch's order."""
    for hook in list(module._forward_pre_hooks.values()):
        result = hook(module, args)
        if result is not None:
            args = result if isinstance(result, tuple) else (result,)
    backward_hooks = list(module._backward_hooks.values())
    if backward_hooks:
        args, state = _watch_input(module, args)
    output = module.forward(*args, **kwargs)
    if backward_hooks:
        output = _watch_output(output, state, module, backward_hooks)
    for hook in list(module._forward_hooks.values()):
        result = hook(module, args, output)
        if result is not None:
            output = result
    return output


def _watch_input(module: Any, args: tuple) -> tuple[tuple, dict[str, Any]]:
    """Put an identity op on the module's one Tensor input that needs a gradient; its VJP
    calls the backward hooks once the input's gradient is known."""
    positions = [i for i, a in enumerate(args) if isinstance(a, Tensor) and a.requires_grad]
    if len(positions) > 1:
        raise TypeError(f"{type(module).__name__}: register_full_backward_hook supports "
                        f"modules with one input that needs a gradient, got {len(positions)}")
    state: dict[str, Any] = {"grad_output": None, "position": None}
    if not positions:
        return args, state
    position = positions[0]
    state["position"] = position

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        grad_input = (g,)
        for hook in state["hooks"]:
            result = hook(module, grad_input, state["grad_output"])
            if result is not None:
                grad_input = tuple(result)
        return (grad_input[0],)

    watched = Tensor.from_op(args[position].data, [args[position]], vjp, op="identity",
                             attrs={"purpose": "backward hook"})
    return (*args[:position], watched, *args[position + 1:]), state


def _watch_output(output: Any, state: dict[str, Any], module: Any,
                  hooks: list[Callable[..., Any]]) -> Any:
    """Put an identity op on the output Tensor; its VJP keeps ``grad_output`` for the input's
    identity op (which runs after it, in reverse topological order)."""
    state["hooks"] = hooks
    if not isinstance(output, Tensor) or not output.requires_grad:
        return output

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        state["grad_output"] = (g,)
        if state["position"] is None:  # no input needs a gradient: PyTorch's (None,)
            for hook in hooks:
                hook(module, (None,), state["grad_output"])
        return (g,)

    return Tensor.from_op(output.data, [output], vjp, op="identity",
                          attrs={"purpose": "backward hook"})
