"""The binding of ``ops`` kernels to autograd: the one place where arrays and Tensors meet.

A public functional op takes NumPy arrays or :class:`cnnlab.Tensor`s. These helpers read
their data and dtype (:func:`_float_arrays`), add and drop the batch axis of unbatched
inputs (:func:`_batched`), and return the kernel's output as an array, or as a Tensor that
records the kernel's VJP for autograd (:func:`_wrap`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..autograd import Tensor

ArrayOrTensor = np.ndarray | Tensor
IntOrTuple = int | Sequence[int]


def _data(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    return value.data if isinstance(value, Tensor) else np.asarray(value)


def _float_arrays(fn: str, required: tuple[str, ...] = ("input",), **arrays: Any
                  ) -> dict[str, np.ndarray]:
    """Check the named arrays share one float dtype (ints, alone, become float64). Those
    not ``required`` may be None (and are then left out)."""
    for name in required:
        if arrays.get(name) is None:
            raise TypeError(f"{fn}: {name} must be an array or Tensor, got None")
    out = {name: _data(a) for name, a in arrays.items() if a is not None}
    kinds = {a.dtype for a in out.values()}
    if all(a.dtype.kind in "iub" for a in out.values()):
        return {name: a.astype(np.float64) for name, a in out.items()}
    for name, a in out.items():
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{fn}: {name} must be float32 or float64, got dtype {a.dtype}")
    if len(kinds) > 1:
        detail = ", ".join(f"{name} {a.dtype}" for name, a in out.items())
        raise TypeError(f"{fn}: all inputs must have the same dtype, got {detail}")
    return out


def _float_input(x: Any, fn: str, name: str = "input") -> np.ndarray:
    """One array's data as float32/float64 (ints become float64, as in ``_float_arrays``)."""
    array = x.data if isinstance(x, Tensor) else np.asarray(x)
    if array.dtype == np.float32 or array.dtype == np.float64:
        return array
    if array.dtype.kind in "iub":
        return array.astype(np.float64)
    raise TypeError(f"{fn}: {name} must be float32 or float64, got dtype {array.dtype}")


def _wrap(out: np.ndarray, inputs: Sequence[Any], vjp: Callable[[np.ndarray], Sequence[Any]],
          unbatched: bool, op: str = "op", attrs: dict[str, Any] | None = None
          ) -> ArrayOrTensor:
    """Return ``out`` as an array, or as a Tensor whose VJP is ``vjp`` if any input is one.

    ``op`` and ``attrs`` name the op and its settings for the graph capture
    (:meth:`cnnlab.Tensor.from_op`); the tape itself keeps only parents and VJPs."""
    if unbatched:
        out = out[0]
    tensors = [t for t in inputs if isinstance(t, Tensor)]
    if not tensors:
        return out
    parents = [t if isinstance(t, Tensor) else Tensor(np.asarray(t)) for t in inputs
               if t is not None]

    def batched_vjp(g: np.ndarray) -> Sequence[Any]:
        if not unbatched:
            return vjp(g)
        # The op ran on x[None]: its gradient comes back batched; drop that axis again.
        grads = list(vjp(g[None]))
        if grads[0] is not None:
            grads[0] = grads[0][0]
        return grads

    return Tensor.from_op(out, parents, batched_vjp, op=op, attrs=attrs)


def _needs(value: Any) -> bool:
    return isinstance(value, Tensor) and value.requires_grad


def _batched(x: np.ndarray, spatial_dims: int, fn: str) -> tuple[np.ndarray, bool]:
    """(C, *spatial) -> (1, C, *spatial); checks the input's rank."""
    if x.ndim == spatial_dims + 1:
        return x[None], True
    if x.ndim == spatial_dims + 2:
        return x, False
    raise ValueError(
        f"{fn}: input must be {spatial_dims + 1}-D (C, *spatial) or {spatial_dims + 2}-D "
        f"(N, C, *spatial), got {x.ndim}-D with shape {x.shape}"
    )


def _unary_op(out: np.ndarray, x: Any, unbatched: bool,
              backward: Callable[[np.ndarray], np.ndarray], op: str = "op",
              attrs: dict[str, Any] | None = None) -> ArrayOrTensor:
    """Bind a one-input kernel's output to its VJP ``backward`` (batched grad -> grad)."""
    return _wrap(out, [x], lambda g: (backward(g),), unbatched, op, attrs)


def _like_input(x: Any, indices: np.ndarray) -> np.ndarray | Tensor:
    """Indices come back as the input's kind: an int64 array, or a Tensor for a Tensor."""
    return Tensor(indices) if isinstance(x, Tensor) else indices
