"""A small reverse-mode autograd on NumPy arrays.

Every differentiable op builds its output with :meth:`Tensor.from_op`, giving the parents
and one closure that maps the output's gradient to the parents' gradients (micrograd's
shape, HIPS/autograd's VJPs). :meth:`Tensor.backward` sorts the graph topologically and runs
the closures in reverse, accumulating (``+=``) into each parent's ``.grad``. Broadcasting is
undone in one place, :func:`unbroadcast`.

``relu``, ``tanh``, ``sigmoid`` and ``flatten`` (and the Tensor methods of those names) are
the functional layer's ops, one implementation each: :mod:`cnnlab.functional` imports this
module, so they import it at call time, the one place this module looks upward.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np


class _GradMode(threading.local):
    """Whether ops record a graph: per thread, as PyTorch's grad mode, so one thread's
    ``no_grad()`` (an evaluation) never stops another thread's graph (a training shard)."""

    enabled = True


_GRAD_MODE = _GradMode()
ArrayLike = Any
VJP = Callable[[np.ndarray], Sequence[np.ndarray | None]]


@contextlib.contextmanager
def no_grad() -> Iterator[None]:
    """Inside this block ops record no graph (evaluation, optimizer updates); this
    thread only."""
    previous, _GRAD_MODE.enabled = _GRAD_MODE.enabled, False
    try:
        yield
    finally:
        _GRAD_MODE.enabled = previous


@contextlib.contextmanager
def enable_grad() -> Iterator[None]:
    """Inside this block ops record a graph, even within :func:`no_grad`; this thread only."""
    previous, _GRAD_MODE.enabled = _GRAD_MODE.enabled, True
    try:
        yield
    finally:
        _GRAD_MODE.enabled = previous


def is_grad_enabled() -> bool:
    return _GRAD_MODE.enabled


OpObserver = Callable[["Tensor", tuple["Tensor", ...], str, dict[str, Any]], None]


class _Observer(threading.local):
    """The callback shown every op the tape records, on this thread (None: no one)."""

    callback: OpObserver | None = None


_OBSERVER = _Observer()


@contextlib.contextmanager
def observe_ops(callback: OpObserver) -> Iterator[None]:
    """Inside this block every op recorded on the tape (an output whose parents need a
    grad) is also passed to ``callback(output, parents, op, attrs)``, in execution order;
    this thread only. Outside, recording costs one attribute read per op."""
    previous, _OBSERVER.callback = _OBSERVER.callback, callback
    try:
        yield
    finally:
        _OBSERVER.callback = previous


def unbroadcast(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes NumPy broadcasting added or stretched to reach its shape."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def _as_array(data: ArrayLike, dtype: Any = None) -> np.ndarray:
    if isinstance(data, Tensor):
        data = data.data
    array = np.asarray(data, dtype=dtype)
    if dtype is None and array.dtype.kind in "iub" and array.ndim > 0:
        return array
    if dtype is None and array.dtype == np.float16:
        return array.astype(np.float32)
    return array


class Tensor:
    """An n-dimensional array that can record the ops applied to it.

    Parameters
    ----------
    data : array_like
        Values; kept as a NumPy array (float32 stays float32, float64 stays float64).
    requires_grad : bool
        Whether :meth:`backward` should fill ``.grad`` for this tensor.

    >>> x = Tensor([1.0, 2.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([2., 4.])
    """

    __slots__ = ("_backward", "_parents", "data", "grad", "name", "requires_grad")
    __array_priority__ = 1000  # numpy_array * tensor -> Tensor.__rmul__

    def __init__(self, data: ArrayLike, requires_grad: bool = False, dtype: Any = None) -> None:
        self.data: np.ndarray = _as_array(data, dtype)
        self.grad: np.ndarray | None = None
        self.requires_grad = bool(requires_grad)
        self._parents: tuple[Tensor, ...] = ()
        self._backward: VJP | None = None
        self.name: str | None = None

    # -- graph construction -------------------------------------------------------------
    @classmethod
    def from_op(cls, data: np.ndarray, parents: Sequence[Tensor], vjp: VJP, *,
                op: str = "op", attrs: Mapping[str, Any] | None = None) -> Tensor:
        """Output of an op: records ``parents`` and ``vjp`` when some parent needs a grad.

        ``op`` names the op and ``attrs`` holds its settings (stride, padding, axis...):
        the tape keeps neither, but an observer installed by :func:`observe_ops` (the
        graph capture :func:`cnnlab.analysis.trace`) is shown every recorded op with them.
        """
        out = cls(data)
        if _GRAD_MODE.enabled and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = tuple(parents)
            out._backward = vjp
            observer = _OBSERVER.callback
            if observer is not None:
                observer(out, out._parents, op, dict(attrs) if attrs else {})
        return out

    def backward(self, gradient: ArrayLike | None = None) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` that requires grad.

        ``gradient`` defaults to 1 for a single-element tensor, as in PyTorch.
        """
        for leaf, grad in self._leaf_gradients(gradient, "backward"):
            leaf.grad = grad.copy() if leaf.grad is None else leaf.grad + grad

    def _leaf_gradients(self, gradient: ArrayLike | None, fn: str
                        ) -> Iterator[tuple[Tensor, np.ndarray]]:
        """(leaf, d(self)/d(leaf) scaled by ``gradient``) for each leaf that requires grad,
        each leaf once. The arrays may alias ones the graph holds: copy before mutating."""
        if not self.requires_grad:
            raise RuntimeError(f"{fn}: tensor does not require grad and has no grad_fn")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(
                    f"{fn}: gradient can be implicitly created only for scalar outputs, "
                    f"got shape {self.shape}"
                )
            seed = np.ones_like(self.data)
        else:
            seed = np.asarray(gradient.data if isinstance(gradient, Tensor) else gradient,
                              dtype=self.data.dtype)
            if seed.shape != self.shape:
                raise ValueError(
                    f"{fn}: gradient shape {seed.shape} must match tensor shape {self.shape}"
                )
        order = self._topological_order()
        grads: dict[int, np.ndarray] = {id(self): seed}
        for node in reversed(order):
            grad = grads.pop(id(node), None)
            if grad is None:
                continue
            if node._backward is None:
                yield node, grad
                continue
            for parent, parent_grad in zip(node._parents, node._backward(grad)):
                if parent_grad is None or not parent.requires_grad:
                    continue
                key = id(parent)
                grads[key] = parent_grad if key not in grads else grads[key] + parent_grad

    def _topological_order(self) -> list[Tensor]:
        order: list[Tensor] = []
        seen: set[int] = set()
        stack: list[tuple[Tensor, bool]] = [(self, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
                continue
            if id(node) in seen:
                continue
            seen.add(id(node))
            stack.append((node, True))
            stack.extend((p, False) for p in node._parents if id(p) not in seen)
        return order

    # -- array-like surface ---------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    def __len__(self) -> int:
        return len(self.data)

    def numpy(self) -> np.ndarray:
        return self.data

    def item(self) -> float:
        return self.data.item()

    def detach(self) -> Tensor:
        return Tensor(self.data)

    def zero_grad(self) -> None:
        self.grad = None

    def requires_grad_(self, flag: bool = True) -> Tensor:
        self.requires_grad = flag
        return self

    def __repr__(self) -> str:
        flag = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({np.array2string(self.data, precision=4, threshold=20)}{flag})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.data if dtype is None else self.data.astype(dtype)

    # -- arithmetic (broadcasting) ----------------------------------------------------------
    def __add__(self, other: ArrayLike) -> Tensor:
        return add(self, other)

    __radd__ = __add__

    def __sub__(self, other: ArrayLike) -> Tensor:
        return add(self, neg(tensor_like(other, self)))

    def __rsub__(self, other: ArrayLike) -> Tensor:
        return add(tensor_like(other, self), neg(self))

    def __mul__(self, other: ArrayLike) -> Tensor:
        return mul(self, other)

    __rmul__ = __mul__

    def __truediv__(self, other: ArrayLike) -> Tensor:
        return mul(self, reciprocal(tensor_like(other, self)))

    def __rtruediv__(self, other: ArrayLike) -> Tensor:
        return mul(tensor_like(other, self), reciprocal(self))

    def __neg__(self) -> Tensor:
        return neg(self)

    def __pow__(self, exponent: ArrayLike) -> Tensor:
        return power(self, exponent)

    def __rpow__(self, base: ArrayLike) -> Tensor:
        return power(tensor_like(base, self), self)

    def __matmul__(self, other: ArrayLike) -> Tensor:
        return matmul(self, tensor_like(other, self))

    def __rmatmul__(self, other: ArrayLike) -> Tensor:
        return matmul(tensor_like(other, self), self)

    def __getitem__(self, index: Any) -> Tensor:
        return getitem(self, index)

    # comparisons give plain boolean arrays (no gradient)
    def __lt__(self, other: ArrayLike) -> np.ndarray:
        return self.data < _as_array(other)

    def __gt__(self, other: ArrayLike) -> np.ndarray:
        return self.data > _as_array(other)

    def __le__(self, other: ArrayLike) -> np.ndarray:
        return self.data <= _as_array(other)

    def __ge__(self, other: ArrayLike) -> np.ndarray:
        return self.data >= _as_array(other)

    # -- method forms ---------------------------------------------------------------------
    def sum(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return sum_(self, axis, keepdims)

    def mean(self, axis: int | tuple[int, ...] | None = None, keepdims: bool = False) -> Tensor:
        return mean(self, axis, keepdims)

    def max(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        return amax(self, axis, keepdims)

    def reshape(self, *shape: Any) -> Tensor:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    def transpose(self, *axes: int) -> Tensor:
        return transpose(self, axes or None)

    @property
    def T(self) -> Tensor:  # noqa: N802 - NumPy's name
        return transpose(self, None)

    def exp(self) -> Tensor:
        return exp(self)

    def log(self) -> Tensor:
        return log(self)

    # relu, tanh, sigmoid and flatten are the functional layer's (one implementation each;
    # it imports this module, so the module-level names below import it at call time).
    def relu(self) -> Tensor:
        return relu(self)

    def tanh(self) -> Tensor:
        return tanh(self)

    def sigmoid(self) -> Tensor:
        return sigmoid(self)

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Tensor:
        return flatten(self, start_dim, end_dim)


def tensor_like(value: ArrayLike, reference: Tensor) -> Tensor:
    """Wrap a constant as a Tensor of ``reference``'s float dtype (no gradient)."""
    if isinstance(value, Tensor):
        return value
    array = np.asarray(value)
    if array.dtype.kind in "iubf" and reference.dtype.kind == "f":
        array = array.astype(reference.dtype, copy=False)
    return Tensor(array)


def as_tensor(value: ArrayLike) -> Tensor:
    return value if isinstance(value, Tensor) else Tensor(value)


# ---------------------------------------------------------------------------------------
# Elementwise arithmetic. Each forward is followed by its VJP.


def add(a: ArrayLike, b: ArrayLike) -> Tensor:
    a = as_tensor(a)
    b = tensor_like(b, a)
    return Tensor.from_op(a.data + b.data, (a, b),
                          lambda g: (unbroadcast(g, a.shape), unbroadcast(g, b.shape)), op="add")


def mul(a: ArrayLike, b: ArrayLike) -> Tensor:
    a = as_tensor(a)
    b = tensor_like(b, a)
    return Tensor.from_op(a.data * b.data, (a, b),
                          lambda g: (unbroadcast(g * b.data, a.shape),
                                     unbroadcast(g * a.data, b.shape)), op="mul")


def neg(a: Tensor) -> Tensor:
    return Tensor.from_op(-a.data, (a,), lambda g: (-g,), op="neg")


def reciprocal(a: Tensor) -> Tensor:
    out = 1.0 / a.data
    return Tensor.from_op(out, (a,), lambda g: (-g * out * out,), op="reciprocal")


def power(a: ArrayLike, exponent: ArrayLike) -> Tensor:
    """``a ** exponent``; a Tensor exponent gets the gradient ``a**b * log(a)`` too."""
    a = as_tensor(a)
    if isinstance(exponent, Tensor):
        b = exponent
        out = a.data ** b.data
        return Tensor.from_op(out, (a, b), lambda g: (
            unbroadcast(g * b.data * a.data ** (b.data - 1), a.shape),
            unbroadcast(g * out * np.log(np.where(a.data > 0, a.data, 1)), b.shape)), op="pow")
    # A Python float keeps float32 float32 (NumPy's weak scalar rule); np.float64 would not.
    scalar = float(exponent) if np.ndim(exponent) == 0 else np.asarray(exponent, a.dtype)
    out = a.data ** scalar
    return Tensor.from_op(out, (a,), lambda g: (g * scalar * a.data ** (scalar - 1),),
                          op="pow", attrs={"exponent": scalar})


def exp(a: Tensor) -> Tensor:
    out = np.exp(a.data)
    return Tensor.from_op(out, (a,), lambda g: (g * out,), op="exp")


def log(a: Tensor) -> Tensor:
    return Tensor.from_op(np.log(a.data), (a,), lambda g: (g / a.data,), op="log")


def sqrt(a: Tensor) -> Tensor:
    out = np.sqrt(a.data)
    return Tensor.from_op(out, (a,), lambda g: (g * 0.5 / out,), op="sqrt")


def abs_(a: Tensor) -> Tensor:
    return Tensor.from_op(np.abs(a.data), (a,), lambda g: (g * np.sign(a.data),), op="abs")


def relu(a: Tensor) -> Tensor:
    """:func:`cnnlab.functional.relu` (NaN stays NaN, as in PyTorch); also ``Tensor.relu``."""
    from .functional import relu as functional_relu  # the layer above: import at call time

    return functional_relu(a)


def tanh(a: Tensor) -> Tensor:
    """:func:`cnnlab.functional.tanh`; also ``Tensor.tanh``."""
    from .functional import tanh as functional_tanh

    return functional_tanh(a)


def sigmoid(a: Tensor) -> Tensor:
    """:func:`cnnlab.functional.sigmoid`; also ``Tensor.sigmoid``."""
    from .functional import sigmoid as functional_sigmoid

    return functional_sigmoid(a)


def where(condition: ArrayLike, a: ArrayLike, b: ArrayLike) -> Tensor:
    """Elementwise ``a if condition else b``; gradient flows to the chosen side."""
    cond = np.asarray(condition.data if isinstance(condition, Tensor) else condition, bool)
    if isinstance(b, Tensor) and not isinstance(a, Tensor):
        a = tensor_like(a, b)  # a constant takes the Tensor operand's dtype
    a = as_tensor(a)
    b = tensor_like(b, a)
    return Tensor.from_op(np.where(cond, a.data, b.data), (a, b),
                          lambda g: (unbroadcast(np.where(cond, g, 0), a.shape),
                                     unbroadcast(np.where(cond, 0, g), b.shape)), op="where")


def maximum(a: ArrayLike, b: ArrayLike) -> Tensor:
    """Elementwise maximum; at ties the gradient is split evenly, as in ``torch.maximum``."""
    a = as_tensor(a)
    b = tensor_like(b, a)
    share_a = ((a.data > b.data) + 0.5 * (a.data == b.data)).astype(a.dtype, copy=False)
    return Tensor.from_op(np.maximum(a.data, b.data), (a, b),
                          lambda g: (unbroadcast(g * share_a, a.shape),
                                     unbroadcast(g * (1 - share_a), b.shape)), op="maximum")


def clip(a: Tensor, low: float | None, high: float | None) -> Tensor:
    out = np.clip(a.data, low, high)
    inside = out == a.data
    return Tensor.from_op(out, (a,), lambda g: (g * inside,), op="clip",
                          attrs={"low": low, "high": high})


# ---------------------------------------------------------------------------------------
# Linear algebra and reductions.


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` with NumPy's broadcasting over leading axes (1-D operands as in NumPy)."""
    a_vec, b_vec = a.ndim == 1, b.ndim == 1
    a2 = a.data[None, :] if a_vec else a.data
    b2 = b.data[:, None] if b_vec else b.data

    def vjp(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        g2 = g
        if b_vec:  # restore b's column axis first: for vector @ vector, g is 0-d
            g2 = np.expand_dims(g2, -1)
        if a_vec:
            g2 = np.expand_dims(g2, -2)
        ga = unbroadcast(g2 @ np.swapaxes(b2, -1, -2), a2.shape)
        gb = unbroadcast(np.swapaxes(a2, -1, -2) @ g2, b2.shape)
        return ga.reshape(a.shape), gb.reshape(b.shape)

    return Tensor.from_op(a.data @ b.data, (a, b), vjp, op="matmul")


def _expand_reduced(g: np.ndarray, shape: tuple[int, ...], axis: Any, keepdims: bool
                    ) -> np.ndarray:
    if axis is None:
        return np.broadcast_to(np.reshape(g, (1,) * len(shape)), shape)
    if not keepdims:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        axes = tuple(ax % len(shape) for ax in axes)
        g = np.expand_dims(g, tuple(sorted(axes)))
    return np.broadcast_to(g, shape)


def sum_(a: Tensor, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
         ) -> Tensor:
    return Tensor.from_op(np.sum(a.data, axis=axis, keepdims=keepdims), (a,),
                          lambda g: (_expand_reduced(g, a.shape, axis, keepdims),),
                          op="sum", attrs={"axis": axis, "keepdims": keepdims})


def mean(a: Tensor, axis: int | tuple[int, ...] | None = None, keepdims: bool = False
         ) -> Tensor:
    out = np.mean(a.data, axis=axis, keepdims=keepdims)
    count = a.data.size / max(np.size(out), 1) if a.data.size else 1
    return Tensor.from_op(out, (a,),
                          lambda g: (_expand_reduced(g / count, a.shape, axis, keepdims),),
                          op="mean", attrs={"axis": axis, "keepdims": keepdims})


def amax(a: Tensor, axis: int | None = None, keepdims: bool = False) -> Tensor:
    """Maximum; the gradient is shared equally among tied maxima."""
    out = np.max(a.data, axis=axis, keepdims=True)
    mask = a.data == out
    share = (mask / mask.sum(axis=axis, keepdims=True)).astype(a.dtype, copy=False)
    result = out if keepdims else np.squeeze(out, axis=axis)
    return Tensor.from_op(result, (a,),
                          lambda g: (_expand_reduced(g, a.shape, axis, keepdims) * share,),
                          op="max", attrs={"axis": axis, "keepdims": keepdims})


# ---------------------------------------------------------------------------------------
# Shape ops.


def reshape(a: Tensor, shape: tuple[int, ...]) -> Tensor:
    return Tensor.from_op(a.data.reshape(shape), (a,), lambda g: (g.reshape(a.shape),),
                          op="reshape")


def flatten(a: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    """:func:`cnnlab.functional.flatten`; also ``Tensor.flatten``."""
    from .functional import flatten as functional_flatten

    return functional_flatten(a, start_dim, end_dim)


def transpose(a: Tensor, axes: Sequence[int] | None = None) -> Tensor:
    if axes is not None:  # negative axes would break the argsort inverse below
        axes = tuple(int(axis) + a.ndim if axis < 0 else int(axis) for axis in axes)
    inverse = None if axes is None else tuple(np.argsort(axes))
    return Tensor.from_op(np.transpose(a.data, axes), (a,),
                          lambda g: (np.transpose(g, inverse),),
                          op="transpose", attrs={"axes": axes})


def getitem(a: Tensor, index: Any) -> Tensor:
    if isinstance(index, Tensor):
        index = index.data

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        full = np.zeros_like(a.data)
        np.add.at(full, index, g)
        return (full,)

    return Tensor.from_op(a.data[index], (a,), vjp, op="getitem", attrs={"index": index})


def concatenate(tensors: Sequence[ArrayLike], axis: int = 0) -> Tensor:
    parts = [as_tensor(t) for t in tensors]
    sizes = np.cumsum([p.shape[axis] for p in parts])[:-1]
    return Tensor.from_op(np.concatenate([p.data for p in parts], axis=axis), parts,
                          lambda g: tuple(np.split(g, sizes, axis=axis)),
                          op="concatenate", attrs={"axis": axis})


def stack(tensors: Sequence[ArrayLike], axis: int = 0) -> Tensor:
    parts = [as_tensor(t) for t in tensors]
    return Tensor.from_op(np.stack([p.data for p in parts], axis=axis), parts,
                          lambda g: tuple(np.moveaxis(g, axis, 0)),
                          op="stack", attrs={"axis": axis})


def grad(output: Tensor, inputs: Sequence[Tensor], gradient: ArrayLike | None = None
         ) -> list[np.ndarray | None]:
    """d(output)/d(input) for each leaf tensor in ``inputs`` (``None`` where ``output`` does
    not depend on it), scaled by ``gradient`` as in :meth:`Tensor.backward`.

    Unlike ``backward`` it writes no ``.grad``: several threads may each differentiate
    their own graph over the same parameters (PyTorch's ``torch.autograd.grad``, for leaf
    inputs: a tensor computed by an op is refused, as is one that does not require grad).
    """
    positions: dict[int, list[int]] = {}
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, Tensor) or not tensor.requires_grad:
            raise ValueError(f"grad: inputs[{i}] must be a Tensor that requires grad")
        if tensor._backward is not None:
            raise ValueError(f"grad: inputs[{i}] is the output of an op; grad takes leaf "
                             f"tensors (parameters, inputs)")
        positions.setdefault(id(tensor), []).append(i)
    result: list[np.ndarray | None] = [None] * len(inputs)
    for leaf, leaf_grad in output._leaf_gradients(gradient, "grad"):
        for i in positions.get(id(leaf), ()):
            result[i] = leaf_grad.copy()
    return result
