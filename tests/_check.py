"""Shared oracle checks: run an op in cnnlab and in torch (float64), compare values and grads.

``check_op`` is the one helper every op test goes through (STYLE.md, rule 14): same inputs,
same upstream gradient, forward values, shape and dtype compared, then every input's
gradient. ``finite_difference_grad`` is the float64 numeric gradient for checks that need
no oracle at all.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st

from cnnlab import Tensor

# Tolerances by dtype: float64 agrees to ~1e-10 relative; float32 to ~1e-4.
TOLERANCES = {np.dtype(np.float64): (1e-10, 1e-10), np.dtype(np.float32): (1e-4, 1e-4)}


def tolerance(dtype: Any) -> tuple[float, float]:
    """(atol, rtol) for comparing a result of ``dtype`` with a float64 oracle."""
    return TOLERANCES[np.dtype(dtype)]


def assert_close(ours: np.ndarray, expected: np.ndarray, atol: float, rtol: float,
                 what: str) -> None:
    """Values agree (NaN where the oracle has NaN, same infinities); shapes must match.

    The absolute tolerance is scaled by the oracle's magnitude so that sums of many
    products are compared relative to their size, never loosened in absolute terms.
    """
    ours, expected = np.asarray(ours), np.asarray(expected)
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape} != {expected.shape}"
    finite = expected[np.isfinite(expected)]
    scale = max(float(np.abs(finite).max()), 1.0) if finite.size else 1.0
    np.testing.assert_allclose(ours, expected, atol=atol * scale, rtol=rtol, equal_nan=True,
                               err_msg=what)


def _to_torch(value: np.ndarray | None) -> torch.Tensor | None:
    if value is None:
        return None
    return torch.tensor(np.asarray(value, dtype=np.float64), requires_grad=True)


def check_op(
    our_fn: Callable[..., Any],
    torch_fn: Callable[..., Any],
    inputs: Sequence[np.ndarray | None],
    kwargs: dict[str, Any] | None = None,
    grad: bool = True,
    atol: float | None = None,
    rtol: float | None = None,
    torch_kwargs: dict[str, Any] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Compare ``our_fn(*Tensors, **kwargs)`` with ``torch_fn(*torch tensors, **kwargs)``.

    ``inputs`` are NumPy arrays (``None`` is passed through, e.g. a missing bias). cnnlab
    runs in each input's dtype; torch always runs in float64, as the oracle. ``torch_kwargs``
    replaces ``kwargs`` for torch when the two spell an option differently. With ``grad``,
    one random upstream gradient is pushed back through both and every input's ``.grad``
    is compared. Tolerances default to :data:`TOLERANCES` for the inputs' dtype.

    Returns our forward output (as an array) for further checks.
    """
    kwargs = {} if kwargs is None else kwargs
    torch_kwargs = kwargs if torch_kwargs is None else torch_kwargs
    rng = np.random.default_rng(0) if rng is None else rng
    dtype = next(np.asarray(a).dtype for a in inputs if a is not None)
    default_atol, default_rtol = tolerance(dtype)
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol

    ours_in = [None if a is None else Tensor(np.asarray(a).copy(), requires_grad=grad)
               for a in inputs]
    torch_in = [_to_torch(a) for a in inputs]
    ours = our_fn(*ours_in, **kwargs)
    expected = torch_fn(*torch_in, **torch_kwargs)

    assert isinstance(ours, Tensor), f"Tensor in must give Tensor out, got {type(ours)}"
    assert ours.dtype == dtype, f"output dtype {ours.dtype} != input dtype {dtype}"
    assert_close(ours.data, expected.detach().numpy(), atol, rtol, "forward")
    if not grad:
        return ours.data

    upstream = rng.standard_normal(ours.shape)
    ours.backward(upstream.astype(dtype))
    expected.backward(torch.from_numpy(upstream))
    for index, (mine, theirs) in enumerate(zip(ours_in, torch_in, strict=True)):
        if mine is None:
            continue
        assert mine.grad is not None, f"input {index}: no gradient"
        assert mine.grad.shape == mine.shape, f"input {index}: grad shape {mine.grad.shape}"
        assert mine.grad.dtype == dtype, f"input {index}: grad dtype {mine.grad.dtype}"
        assert_close(mine.grad, theirs.grad.numpy(), atol, rtol, f"grad of input {index}")
    return ours.data


def finite_difference_grad(fn: Callable[..., np.ndarray], arrays: Sequence[np.ndarray],
                           eps: float = 1e-6) -> list[np.ndarray]:
    """Central differences of the scalar ``fn(*arrays)`` w.r.t. each array (float64).

    ``fn`` must return a scalar (e.g. ``(conv(x, w) * upstream).sum()``); each entry costs
    two evaluations, so keep the arrays tiny.
    """
    arrays = [np.array(a, dtype=np.float64, copy=True) for a in arrays]
    grads = []
    for array in arrays:
        grad = np.zeros_like(array)
        flat, flat_grad = array.reshape(-1), grad.reshape(-1)
        for i in range(flat.size):
            original = flat[i]
            flat[i] = original + eps
            plus = float(fn(*arrays))
            flat[i] = original - eps
            minus = float(fn(*arrays))
            flat[i] = original
            flat_grad[i] = (plus - minus) / (2 * eps)
        grads.append(grad)
    return grads


def check_array_and_tensor(ours: Callable, theirs: Callable, x: np.ndarray,
                           rng: np.random.Generator, grad: bool = True) -> np.ndarray:
    """:func:`check_op` on one input, plus the NumPy path: an array in gives an array of
    the same dtype out, equal to the Tensor result."""
    out = check_op(ours, theirs, [x], grad=grad, rng=rng)
    array_out = ours(x)
    assert isinstance(array_out, np.ndarray) and array_out.dtype == x.dtype
    np.testing.assert_array_equal(array_out, out)
    return out


def numeric_grad_check(fn: Callable, x: np.ndarray, rng: np.random.Generator,
                       eps: float = 1e-6, tol: float = 1e-7) -> None:
    """Central differences of <fn(x), g> against the VJP, in float64."""
    g = rng.standard_normal(np.shape(fn(x)))
    x_t = Tensor(x, requires_grad=True)
    fn(x_t).backward(g)
    (numeric,) = finite_difference_grad(lambda v: np.sum(fn(v) * g), [x], eps=eps)
    np.testing.assert_allclose(x_t.grad, numeric, rtol=tol, atol=tol)


def draw_padding(draw: Any, nd: int, most_pairs: int = 2) -> Any:
    """A hypothesis draw of a convolution's ``padding`` in each form cnnlab takes: an int, one
    int per dimension, per-side pairs (each side up to ``most_pairs``), or a string."""
    forms = ["int", "tuple", "pairs", "valid", "same", "full"] + (["causal"] if nd == 1 else [])
    form = draw(st.sampled_from(forms))
    if form == "int":
        return draw(st.integers(0, 2))
    if form == "tuple":
        return tuple(draw(st.integers(0, 2)) for _ in range(nd))
    if form == "pairs":
        return tuple((draw(st.integers(0, most_pairs)), draw(st.integers(0, most_pairs)))
                     for _ in range(nd))
    return form
