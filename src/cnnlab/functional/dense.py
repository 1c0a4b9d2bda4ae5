"""The linear layer and reshaping as functions: ``linear`` and ``flatten``."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..ops._args import (
    check_dim,
    prod,
)
from ._binding import (
    ArrayOrTensor,
    _data,
    _float_arrays,
    _needs,
    _wrap,
)


def linear(input: ArrayOrTensor, weight: ArrayOrTensor, bias: ArrayOrTensor | None = None
           ) -> ArrayOrTensor:
    """Affine map ``y = x @ weight.T + bias`` as one GEMM over all leading axes.

    Parameters
    ----------
    input : (*, in_features)
    weight : (out_features, in_features)
    bias : (out_features,) or None

    Returns
    -------
    (*, out_features). VJPs are GEMMs too: ``dx = g @ W``, ``dW = g^T x``, ``db = sum g``.

    >>> linear(np.ones((2, 3)), np.ones((4, 3))).shape
    (2, 4)
    """
    fn = "linear"
    arrays = _float_arrays(fn, ("input", "weight"), input=input, weight=weight, bias=bias)
    x_arr, w_arr, b_arr = arrays["input"], arrays["weight"], arrays.get("bias")
    if w_arr.ndim != 2:
        raise ValueError(f"{fn}: weight must be 2-D (out_features, in_features), got shape "
                         f"{w_arr.shape}")
    if x_arr.ndim < 1:
        raise ValueError(f"{fn}: input must be at least 1-D (*, in_features), got a 0-D "
                         f"array")
    if x_arr.shape[-1] != w_arr.shape[1]:
        raise ValueError(f"{fn}: input.shape[-1] ({x_arr.shape[-1]}) must equal "
                         f"weight.shape[1] (in_features {w_arr.shape[1]})")
    if b_arr is not None and b_arr.shape != (w_arr.shape[0],):
        raise ValueError(f"{fn}: bias must have shape ({w_arr.shape[0]},), got {b_arr.shape}")
    x2 = x_arr.reshape(-1, w_arr.shape[1])
    y = x2 @ w_arr.T
    if b_arr is not None:
        y += b_arr
    out_shape = (*x_arr.shape[:-1], w_arr.shape[0])

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        g2 = g.reshape(-1, w_arr.shape[0])
        grad_x = (g2 @ w_arr).reshape(x_arr.shape) if _needs(input) else None
        grad_w = g2.T @ x2 if _needs(weight) else None
        if bias is None:
            return grad_x, grad_w
        return grad_x, grad_w, (g2.sum(axis=0) if _needs(bias) else None)

    return _wrap(y.reshape(out_shape), [input, weight, bias], vjp, False, "linear")


def flatten(input: ArrayOrTensor, start_dim: int = 0, end_dim: int = -1) -> ArrayOrTensor:
    """Merge axes ``start_dim..end_dim`` (inclusive) into one, as ``torch.flatten``.

    Parameters
    ----------
    input : (d_0, ..., d_{n-1})
    start_dim, end_dim : the first and last axis merged (negative counts from the end)

    Returns
    -------
    (d_0, ..., d_{start-1}, d_start * ... * d_end, d_{end+1}, ...), a view where NumPy can.

    >>> flatten(np.zeros((2, 3, 4)), 1).shape
    (2, 12)
    """
    fn = "flatten"
    x_arr = _data(input)
    ndim = max(x_arr.ndim, 1)
    start, end = check_dim(start_dim, ndim, fn), check_dim(end_dim, ndim, fn)
    if start > end:
        raise ValueError(f"{fn}: start_dim ({start_dim}) must not come after end_dim "
                         f"({end_dim}) for a {x_arr.ndim}-D input")
    merged = prod(x_arr.shape[start:end + 1])
    out = x_arr.reshape((*x_arr.shape[:start], merged, *x_arr.shape[end + 1:]))
    return _wrap(out, [input], lambda g: (g.reshape(x_arr.shape),), False,
                 op="flatten", attrs={"start_dim": start_dim, "end_dim": end_dim})
