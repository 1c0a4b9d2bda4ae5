"""Pooling as functions: max, average, power-average (LP), adaptive, max unpooling and
anti-aliased (blur) pooling, each with ONE N-D implementation (``_max_pool``, ``_avg_pool``,
...) that the 1d/2d/3d names call with their spatial rank. Kernels: ``ops/pool.py``.

Why this module is longer than 600 lines: it holds 21 public functions (seven poolings in
three ranks), each with its own shapes and doctest as ``torch.nn.functional`` users expect;
the N-D logic they share is about 200 lines, and splitting the ranks apart would separate
each 2-D docstring from the 1-D and 3-D ones that refer to it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..autograd import Tensor
from ..ops._args import (
    PADDING_MODES,
    PoolRequest,
    adaptive_output_size,
    check_bool,
    check_choice,
    is_default_stride,
    pool_request,
    prod,
    to_tuple,
    unpool_output_size,
)
from ..ops.pool import (
    adaptive_avg_pool_nd,
    adaptive_avg_pool_nd_backward,
    adaptive_max_pool_nd,
    avg_pool_nd,
    avg_pool_nd_backward,
    binomial_filter,
    lp_pool_nd,
    lp_pool_nd_backward,
    max_pool_nd,
    max_pool_nd_backward,
    max_pool_taps,
    max_pool_taps_backward,
    max_unpool_nd,
    max_unpool_nd_backward,
)
from ._binding import (
    ArrayOrTensor,
    IntOrTuple,
    _batched,
    _data,
    _float_arrays,
    _like_input,
    _unary_op,
)
from .convolution import _conv


def pool_attrs(spec: PoolRequest) -> dict[str, Any]:
    """A fixed-window pooling's settings as the graph capture records them (``padding``:
    the same on both sides of each axis)."""
    return {"kernel_size": spec.kernel, "stride": spec.stride, "padding": spec.padding,
            "dilation": spec.dilation}


def _max_pool(x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              ceil_mode: bool, return_indices: bool, spatial_dims: int, fn: str) -> Any:
    x_arr, unbatched = _batched(_float_arrays(fn, input=x)["input"], spatial_dims, fn)
    in_spatial = x_arr.shape[2:]
    spec = pool_request(in_spatial, kernel_size, stride, padding, dilation, ceil_mode, fn)
    if not check_bool(return_indices, "return_indices", fn):
        out, arg, finite = max_pool_taps(x_arr, spec)
        return _unary_op(out, x, unbatched, lambda g: max_pool_taps_backward(
            g, out, arg, in_spatial, spec, out_finite=finite), "max_pool",
            {**pool_attrs(spec), "ceil_mode": ceil_mode})
    out, indices = max_pool_nd(x_arr, spec)
    y = _unary_op(out, x, unbatched, lambda g: max_pool_nd_backward(g, indices, in_spatial),
                  "max_pool", {**pool_attrs(spec), "ceil_mode": ceil_mode})
    return y, _like_input(x, indices[0] if unbatched else indices)


def max_pool1d(input: ArrayOrTensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """1-D max pooling. See :func:`max_pool2d` for every argument.

    Parameters
    ----------
    input : (N, C, L) or (C, L)
    kernel_size, stride, padding, dilation : int or tuple of 1 int

    Returns
    -------
    (N, C, L_out) or (C, L_out)
        ``L_out = floor((L + 2p - d*(k-1) - 1) / s) + 1`` (or ceil,
        :func:`cnnlab.ops._args.pool_output_shape`); with ``return_indices``,
        ``(out, indices)``, indices into L.

    Examples
    --------
    Stride defaults to the window; in floor mode the last, incomplete window is dropped:

    >>> max_pool1d(np.array([[1.0, 3.0, 2.0, 5.0, 4.0]]), 2).tolist()
    [[3.0, 5.0]]
    """
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 1,
                     "max_pool1d")


def max_pool2d(input: ArrayOrTensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """Max pooling over ``(kernel_size)`` windows, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    input : (N, C, H, W) or (C, H, W)
    kernel_size, stride, dilation : int or tuple of 2 ints (>= 1); stride defaults to
        kernel_size.
    padding : int or tuple of 2 ints, implicit -inf on both sides, at most kernel_size // 2.
    ceil_mode : round the output size up; a window may overhang the right edge, but must
        start inside the input or the left padding.
    return_indices : also return, for each output, the int64 flat index into (H, W) of the
        maximum (ties: first; a window holding NaN gives NaN and its last NaN).

    Returns
    -------
    (N, C, H_out, W_out) or (C, H_out, W_out)
        ``H_out = floor((H + 2p - d*(k-1) - 1) / s) + 1`` (or ceil), likewise ``W_out``
        (:func:`cnnlab.ops._args.pool_output_shape`); with ``return_indices``,
        ``(out, indices)``, indices of the output's shape.

    Examples
    --------
    Each 2x2 block of a 4x4 image keeps its largest value:

    >>> max_pool2d(np.arange(16.0).reshape(1, 4, 4), 2).tolist()
    [[[5.0, 7.0], [13.0, 15.0]]]
    """
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 2,
                     "max_pool2d")


def max_pool3d(input: ArrayOrTensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """3-D max pooling. See :func:`max_pool2d` for every argument.

    Parameters
    ----------
    input : (N, C, D, H, W) or (C, D, H, W)
    kernel_size, stride, padding, dilation : int or tuple of 3 ints

    Returns
    -------
    (N, C, D_out, H_out, W_out) or (C, D_out, H_out, W_out)
        Each size by :func:`cnnlab.ops._args.pool_output_shape`; with ``return_indices``,
        ``(out, indices)``, flat indices into (D, H, W).

    Examples
    --------
    >>> max_pool3d(np.ones((1, 1, 4, 6, 6)), 2).shape
    (1, 1, 2, 3, 3)
    """
    return _max_pool(input, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 3,
                     "max_pool3d")


def _avg_pool(x: Any, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
              count_include_pad: bool, divisor_override: int | None, spatial_dims: int,
              fn: str) -> ArrayOrTensor:
    x_arr, unbatched = _batched(_float_arrays(fn, input=x)["input"], spatial_dims, fn)
    in_spatial = x_arr.shape[2:]
    spec = pool_request(in_spatial, kernel_size, stride, padding, 1, ceil_mode, fn)
    if divisor_override is not None:
        if not isinstance(divisor_override, (int, np.integer)) or isinstance(divisor_override,
                                                                             bool):
            raise TypeError(f"{fn}: divisor_override must be an int or None, "
                            f"got {type(divisor_override).__name__} {divisor_override!r}")
        if divisor_override == 0:
            raise ValueError(f"{fn}: divisor_override must be non-zero, got 0")
        divisor_override = int(divisor_override)
    include = check_bool(count_include_pad, "count_include_pad", fn)
    out = avg_pool_nd(x_arr, spec, include, divisor_override)
    return _unary_op(out, x, unbatched, lambda g: avg_pool_nd_backward(
        g, in_spatial, spec, include, divisor_override), "avg_pool",
        {**pool_attrs(spec), "ceil_mode": ceil_mode, "count_include_pad": include,
         "divisor_override": divisor_override})


def avg_pool1d(input: ArrayOrTensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None
               ) -> ArrayOrTensor:
    """1-D average pooling. See :func:`avg_pool2d` for every argument.

    ``torch.nn.functional.avg_pool1d`` has no ``divisor_override``; it is accepted here so
    that the three ranks share one signature.

    Parameters
    ----------
    input : (N, C, L) or (C, L)
    kernel_size, stride, padding : int or tuple of 1 int

    Returns
    -------
    (N, C, L_out) or (C, L_out)
        ``L_out = floor((L + 2p - k) / s) + 1`` (or ceil,
        :func:`cnnlab.ops._args.pool_output_shape`).

    Examples
    --------
    >>> avg_pool1d(np.array([[1.0, 2.0, 3.0, 4.0]]), 2).tolist()
    [[1.5, 3.5]]
    """
    return _avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, 1, "avg_pool1d")


def avg_pool2d(input: ArrayOrTensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None
               ) -> ArrayOrTensor:
    """Average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    input : (N, C, H, W) or (C, H, W)
    kernel_size, stride : int or tuple of 2 ints (>= 1); stride defaults to kernel_size.
    padding : int or tuple of 2 ints, implicit zeros on both sides, at most kernel_size // 2.
    ceil_mode : round the output size up (see :func:`max_pool2d`).
    count_include_pad : divide by the window's size including zero padding (but never the
        ceil-mode overhang past the padding); otherwise by its number of input samples.
    divisor_override : a non-zero int used as every window's divisor instead.

    Returns
    -------
    (N, C, H_out, W_out) or (C, H_out, W_out)
        ``H_out = floor((H + 2p - kH) / s) + 1`` (or ceil), likewise ``W_out``
        (:func:`cnnlab.ops._args.pool_output_shape`).

    Examples
    --------
    Each 2x2 block of a 4x4 image becomes its mean, e.g. ``(0 + 1 + 4 + 5) / 4``:

    >>> avg_pool2d(np.arange(16.0).reshape(1, 4, 4), 2).tolist()
    [[[2.5, 4.5], [10.5, 12.5]]]
    """
    return _avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, 2, "avg_pool2d")


def avg_pool3d(input: ArrayOrTensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None
               ) -> ArrayOrTensor:
    """3-D average pooling. See :func:`avg_pool2d` for every argument.

    Parameters
    ----------
    input : (N, C, D, H, W) or (C, D, H, W)
    kernel_size, stride, padding : int or tuple of 3 ints

    Returns
    -------
    (N, C, D_out, H_out, W_out) or (C, D_out, H_out, W_out)
        Each size by :func:`cnnlab.ops._args.pool_output_shape`.

    Examples
    --------
    >>> avg_pool3d(np.ones((2, 3, 4, 4, 4)), 2, stride=1).shape
    (2, 3, 3, 3, 3)
    """
    return _avg_pool(input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, 3, "avg_pool3d")


def _lp_pool(x: Any, norm_type: float, kernel_size: Any, stride: Any, ceil_mode: bool,
             spatial_dims: int, fn: str) -> ArrayOrTensor:
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float, np.number)):
        raise TypeError(f"{fn}: norm_type must be a number, got "
                        f"{type(norm_type).__name__} {norm_type!r}")
    if norm_type == 0 or np.isnan(norm_type):
        raise ValueError(f"{fn}: norm_type must be non-zero and not NaN, got {norm_type!r}")
    norm = float(norm_type)
    x_arr, unbatched = _batched(_float_arrays(fn, input=x)["input"], spatial_dims, fn)
    spec = pool_request(x_arr.shape[2:], kernel_size, stride, 0, 1, ceil_mode, fn)
    out = lp_pool_nd(x_arr, norm, spec)
    return _unary_op(out, x, unbatched, lambda g: lp_pool_nd_backward(g, x_arr, norm, spec),
                     "lp_pool", {**pool_attrs(spec), "norm_type": norm})


def lp_pool1d(input: ArrayOrTensor, norm_type: float, kernel_size: IntOrTuple,
              stride: IntOrTuple | None = None, ceil_mode: bool = False) -> ArrayOrTensor:
    """1-D power-average pooling. See :func:`lp_pool2d` for every argument.

    Parameters
    ----------
    input : (N, C, L) or (C, L)
    norm_type : p, a non-zero number (or +-inf).
    kernel_size, stride : int or tuple of 1 int

    Returns
    -------
    (N, C, L_out) or (C, L_out)
        ``L_out = floor((L - k) / s) + 1`` (or ceil,
        :func:`cnnlab.ops._args.pool_output_shape`).

    Examples
    --------
    With p = 2 a window gives its Euclidean norm:

    >>> lp_pool1d(np.array([[3.0, 4.0]]), 2, 2).tolist()
    [[5.0]]
    """
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 1, "lp_pool1d")


def lp_pool2d(input: ArrayOrTensor, norm_type: float, kernel_size: IntOrTuple,
              stride: IntOrTuple | None = None, ceil_mode: bool = False) -> ArrayOrTensor:
    """Power-average pooling ``(sum_window x**p) ** (1/p)``, as ``torch``'s ``lp_pool2d``.

    Computed as PyTorch does, ``(avg_pool(x**p) * prod(kernel_size)) ** (1/p)``, so a
    ceil-mode window that overhangs the input is rescaled the same way, a negative sum
    gives NaN for fractional ``1/p``, and the gradient is zero where the sum is zero.
    ``norm_type`` = inf is max pooling of ``|x|``. No padding.

    Parameters
    ----------
    input : (N, C, H, W) or (C, H, W)
    norm_type : p, a non-zero number (or +-inf).
    kernel_size, stride : int or tuple of 2 ints; stride defaults to kernel_size.

    Returns
    -------
    (N, C, H_out, W_out) or (C, H_out, W_out)
        ``H_out = floor((H - kH) / s) + 1`` (or ceil), likewise ``W_out``
        (:func:`cnnlab.ops._args.pool_output_shape`).

    Examples
    --------
    ``sqrt(4 * 3**2) = 6``:

    >>> lp_pool2d(np.full((1, 2, 2), 3.0), 2, 2).tolist()
    [[[6.0]]]
    """
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 2, "lp_pool2d")


def lp_pool3d(input: ArrayOrTensor, norm_type: float, kernel_size: IntOrTuple,
              stride: IntOrTuple | None = None, ceil_mode: bool = False) -> ArrayOrTensor:
    """3-D power-average pooling. See :func:`lp_pool2d` for every argument.

    Parameters
    ----------
    input : (N, C, D, H, W) or (C, D, H, W)
    norm_type : p, a non-zero number (or +-inf).
    kernel_size, stride : int or tuple of 3 ints

    Returns
    -------
    (N, C, D_out, H_out, W_out) or (C, D_out, H_out, W_out)
        Each size by :func:`cnnlab.ops._args.pool_output_shape`.

    Examples
    --------
    >>> lp_pool3d(np.ones((1, 1, 4, 4, 4)), 1, 2).shape
    (1, 1, 2, 2, 2)
    """
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 3, "lp_pool3d")


def _adaptive_pool(x: Any, output_size: Any, is_max: bool, return_indices: bool,
                   spatial_dims: int, fn: str) -> Any:
    x_arr, unbatched = _batched(_float_arrays(fn, input=x)["input"], spatial_dims, fn)
    in_spatial = x_arr.shape[2:]
    out_spatial = adaptive_output_size(output_size, in_spatial, fn)
    if not is_max:
        out = adaptive_avg_pool_nd(x_arr, out_spatial)
        return _unary_op(out, x, unbatched,
                         lambda g: adaptive_avg_pool_nd_backward(g, in_spatial),
                         "adaptive_avg_pool", {"output_size": out_spatial})
    out, indices = adaptive_max_pool_nd(x_arr, out_spatial)
    y = _unary_op(out, x, unbatched, lambda g: max_pool_nd_backward(g, indices, in_spatial),
                  "adaptive_max_pool", {"output_size": out_spatial})
    if not check_bool(return_indices, "return_indices", fn):
        return y
    return y, _like_input(x, indices[0] if unbatched else indices)


def adaptive_avg_pool1d(input: ArrayOrTensor, output_size: IntOrTuple) -> ArrayOrTensor:
    """1-D adaptive average pooling. See :func:`adaptive_avg_pool2d`.

    Parameters
    ----------
    input : (N, C, L) or (C, L)
    output_size : int or tuple of 1 int

    Returns
    -------
    (N, C, output_size) or (C, output_size)

    Examples
    --------
    Two outputs from five inputs: windows ``[0, 3)`` and ``[2, 5)`` overlap at 2.

    >>> adaptive_avg_pool1d(np.array([[0.0, 1.0, 2.0, 3.0, 4.0]]), 2).tolist()
    [[1.0, 3.0]]
    """
    return _adaptive_pool(input, output_size, False, False, 1, "adaptive_avg_pool1d")


def adaptive_avg_pool2d(input: ArrayOrTensor, output_size: Any) -> ArrayOrTensor:
    """Average over adaptive windows so the output has ``output_size``, as PyTorch.

    Output ``i`` of ``n`` inputs averages ``[floor(i*n/out), ceil((i+1)*n/out))`` per axis.

    Parameters
    ----------
    input : (N, C, H, W) or (C, H, W)
    output_size : int or (H_out, W_out), ``None`` entries keep the input size.

    Returns
    -------
    (N, C, H_out, W_out) or (C, H_out, W_out)
        ``output_size`` whatever the input size, its ``None`` entries replaced by the
        input's (:func:`cnnlab.ops._args.adaptive_output_size`).

    Examples
    --------
    Columns ``[0, 2)`` and ``[1, 3)`` of ``[[0, 1, 2], [3, 4, 5]]``, averaged:

    >>> adaptive_avg_pool2d(np.arange(6.0).reshape(1, 2, 3), (1, 2)).tolist()
    [[[2.0, 3.0]]]
    """
    return _adaptive_pool(input, output_size, False, False, 2, "adaptive_avg_pool2d")


def adaptive_avg_pool3d(input: ArrayOrTensor, output_size: Any) -> ArrayOrTensor:
    """3-D adaptive average pooling. See :func:`adaptive_avg_pool2d`.

    Parameters
    ----------
    input : (N, C, D, H, W) or (C, D, H, W)
    output_size : int or (D_out, H_out, W_out), ``None`` entries keep the input size.

    Returns
    -------
    (N, C, D_out, H_out, W_out) or (C, D_out, H_out, W_out)

    Examples
    --------
    ``output_size=1`` is global average pooling:

    >>> adaptive_avg_pool3d(np.ones((1, 3, 5, 7, 9)), 1).shape
    (1, 3, 1, 1, 1)
    """
    return _adaptive_pool(input, output_size, False, False, 3, "adaptive_avg_pool3d")


def adaptive_max_pool1d(input: ArrayOrTensor, output_size: IntOrTuple,
                        return_indices: bool = False) -> Any:
    """1-D adaptive max pooling. See :func:`adaptive_max_pool2d`.

    Parameters
    ----------
    input : (N, C, L) or (C, L)
    output_size : int or tuple of 1 int
    return_indices : also return the int64 index into L of each maximum.

    Returns
    -------
    (N, C, output_size) or (C, output_size), or ``(out, indices)``.

    Examples
    --------
    Windows ``[0, 3)`` and ``[2, 5)``: their maxima and where they are:

    >>> out, indices = adaptive_max_pool1d(np.array([[0.0, 4.0, 1.0, 3.0, 2.0]]), 2,
    ...                                    return_indices=True)
    >>> out.tolist(), indices.tolist()
    ([[4.0, 3.0]], [[1, 3]])
    """
    return _adaptive_pool(input, output_size, True, return_indices, 1, "adaptive_max_pool1d")


def adaptive_max_pool2d(input: ArrayOrTensor, output_size: Any, return_indices: bool = False
                        ) -> Any:
    """Max over the adaptive windows of :func:`adaptive_avg_pool2d`, as PyTorch.

    Parameters
    ----------
    input : (N, C, H, W) or (C, H, W)
    output_size : int or (H_out, W_out), ``None`` entries keep the input size.
    return_indices : also return the int64 flat index into (H, W) of each maximum.

    Returns
    -------
    (N, C, H_out, W_out) or (C, H_out, W_out), or ``(out, indices)``
        Sizes as :func:`adaptive_avg_pool2d`'s; indices of the output's shape.

    Examples
    --------
    >>> adaptive_max_pool2d(np.arange(6.0).reshape(1, 2, 3), 1).tolist()
    [[[5.0]]]
    """
    return _adaptive_pool(input, output_size, True, return_indices, 2, "adaptive_max_pool2d")


def adaptive_max_pool3d(input: ArrayOrTensor, output_size: Any, return_indices: bool = False
                        ) -> Any:
    """3-D adaptive max pooling. See :func:`adaptive_max_pool2d`.

    Parameters
    ----------
    input : (N, C, D, H, W) or (C, D, H, W)
    output_size : int or (D_out, H_out, W_out), ``None`` entries keep the input size.
    return_indices : also return the int64 flat index into (D, H, W) of each maximum.

    Returns
    -------
    (N, C, D_out, H_out, W_out) or (C, D_out, H_out, W_out), or ``(out, indices)``.

    Examples
    --------
    ``None`` keeps the depth:

    >>> adaptive_max_pool3d(np.ones((1, 3, 5, 7, 9)), (None, 2, 2)).shape
    (1, 3, 5, 2, 2)
    """
    return _adaptive_pool(input, output_size, True, return_indices, 3, "adaptive_max_pool3d")


def _max_unpool(x: Any, indices: Any, kernel_size: Any, stride: Any, padding: Any,
                output_size: Any, spatial_dims: int, fn: str) -> ArrayOrTensor:
    x_arr = _float_arrays(fn, input=x)["input"]
    index_arr = _data(indices)
    if index_arr.dtype.kind not in "iu":
        raise TypeError(f"{fn}: indices must be an integer array, got dtype {index_arr.dtype}")
    if index_arr.shape != x_arr.shape:
        raise ValueError(f"{fn}: indices must have the input's shape {x_arr.shape}, "
                         f"got {index_arr.shape}")
    x_arr, unbatched = _batched(x_arr, spatial_dims, fn)
    index_arr = index_arr.reshape(x_arr.shape).astype(np.int64, copy=False)
    kernel = to_tuple(kernel_size, spatial_dims, "kernel_size", fn)
    stride_t = kernel if is_default_stride(stride) else to_tuple(stride, spatial_dims,
                                                                 "stride", fn)
    padding_t = to_tuple(padding, spatial_dims, "padding", fn, minimum=0)
    out_spatial = unpool_output_size(x_arr.shape[2:], kernel, stride_t, padding_t,
                                      output_size, fn)
    size = prod(out_spatial)
    if index_arr.size and (index_arr.min() < 0 or index_arr.max() >= size):
        raise ValueError(
            f"{fn}: indices must lie in [0, {size}) for output size {out_spatial}, got "
            f"values in [{index_arr.min()}, {index_arr.max()}]"
        )
    out = max_unpool_nd(x_arr, index_arr, out_spatial)
    return _unary_op(out, x, unbatched, lambda g: max_unpool_nd_backward(g, index_arr),
                     "max_unpool", {"kernel_size": kernel, "stride": stride_t,
                                    "padding": padding_t, "output_size": out_spatial})


def max_unpool1d(input: ArrayOrTensor, indices: Any, kernel_size: IntOrTuple,
                 stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                 output_size: Sequence[int] | None = None) -> ArrayOrTensor:
    """1-D max unpooling. See :func:`max_unpool2d` for every argument.

    Parameters
    ----------
    input : (N, C, L) or (C, L)
    indices : int array of the input's shape, indices into L_out.
    kernel_size, stride, padding : int or tuple of 1 int
    output_size : (L_out,) or (N, C, L_out); default ``(L - 1)*s - 2p + k``.

    Returns
    -------
    (N, C, L_out) or (C, L_out)

    Examples
    --------
    >>> max_unpool1d(np.array([[3.0, 5.0]]), np.array([[1, 3]]), 2).tolist()
    [[0.0, 3.0, 0.0, 5.0]]
    """
    return _max_unpool(input, indices, kernel_size, stride, padding, output_size, 1,
                       "max_unpool1d")


def max_unpool2d(input: ArrayOrTensor, indices: Any, kernel_size: IntOrTuple,
                 stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                 output_size: Sequence[int] | None = None) -> ArrayOrTensor:
    """Partial inverse of :func:`max_pool2d`: each value goes to its index, zeros elsewhere.

    Parameters
    ----------
    input : (N, C, H, W) or (C, H, W)
    indices : int array of the input's shape
        Flat indices into (H_out, W_out), as ``max_pool2d(..., return_indices=True)``
        returns them.
    kernel_size, stride, padding : those of the max pooling; stride defaults to kernel_size.
    output_size : (H_out, W_out) or (N, C, H_out, W_out)
        Default ``(n - 1)*s - 2p + k`` per axis (the input size of the pooling, up to its
        floor); a given size must lie strictly within one stride of it
        (:func:`cnnlab.ops._args.unpool_output_size`).

    Returns
    -------
    (N, C, H_out, W_out) or (C, H_out, W_out)

    Examples
    --------
    Flat index 2 of a 2x2 output is row 1, column 0:

    >>> max_unpool2d(np.array([[[5.0]]]), np.array([[[2]]]), 2).tolist()
    [[[0.0, 0.0], [5.0, 0.0]]]
    """
    return _max_unpool(input, indices, kernel_size, stride, padding, output_size, 2,
                       "max_unpool2d")


def max_unpool3d(input: ArrayOrTensor, indices: Any, kernel_size: IntOrTuple,
                 stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                 output_size: Sequence[int] | None = None) -> ArrayOrTensor:
    """3-D max unpooling. See :func:`max_unpool2d` for every argument.

    Parameters
    ----------
    input : (N, C, D, H, W) or (C, D, H, W)
    indices : int array of the input's shape, flat indices into (D_out, H_out, W_out).
    kernel_size, stride, padding : int or tuple of 3 ints
    output_size : (D_out, H_out, W_out) or (N, C, D_out, H_out, W_out); default
        ``(n - 1)*s - 2p + k`` per axis.

    Returns
    -------
    (N, C, D_out, H_out, W_out) or (C, D_out, H_out, W_out)

    Examples
    --------
    >>> max_unpool3d(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), dtype=np.int64), 2).shape
    (1, 2, 2, 2)
    """
    return _max_unpool(input, indices, kernel_size, stride, padding, output_size, 3,
                       "max_unpool3d")


def _blur_pool(x: Any, kernel_size: Any, stride: Any, padding_mode: str, spatial_dims: int,
               fn: str) -> ArrayOrTensor:
    x_arr, _ = _batched(_float_arrays(fn, input=x)["input"], spatial_dims, fn)
    kernel = to_tuple(kernel_size, spatial_dims, "kernel_size", fn)
    stride_t = to_tuple(stride, spatial_dims, "stride", fn)
    check_choice(padding_mode, PADDING_MODES, "padding_mode", fn)
    channels = x_arr.shape[1]
    # One binomial filter per channel: a depthwise convolution (groups = C).
    weight = np.repeat(binomial_filter(kernel, x_arr.dtype)[None, None], channels, axis=0)
    # k - 1 samples of padding, the extra one on the high side (Zhang's BlurPool), so the
    # blurred signal keeps its size and the stride alone sets the output: ceil(n / s).
    pads = tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel)
    source = x if isinstance(x, Tensor) else _data(x).astype(x_arr.dtype, copy=False)
    return _conv(source, weight, None, stride_t, pads, 1, channels, padding_mode, "auto",
                 spatial_dims, fn)


def blur_pool1d(input: ArrayOrTensor, kernel_size: IntOrTuple = 3, stride: IntOrTuple = 2,
                padding_mode: str = "reflect") -> ArrayOrTensor:
    """1-D anti-aliased downsampling. See :func:`blur_pool2d` for every argument.

    Parameters
    ----------
    input : (N, C, L) or (C, L)
    kernel_size, stride : int or tuple of 1 int (>= 1)

    Returns
    -------
    (N, C, ceil(L / s)) or (C, ceil(L / s))

    Examples
    --------
    With stride 1, only the blur: an impulse spreads as ``[1, 2, 1] / 4``.

    >>> (blur_pool1d(np.array([[0.0, 0.0, 4.0, 0.0, 0.0]]), 3, 1).round(12) + 0.0).tolist()
    [[0.0, 1.0, 2.0, 1.0, 0.0]]
    """
    return _blur_pool(input, kernel_size, stride, padding_mode, 1, "blur_pool1d")


def blur_pool2d(input: ArrayOrTensor, kernel_size: IntOrTuple = 3, stride: IntOrTuple = 2,
                padding_mode: str = "reflect") -> ArrayOrTensor:
    """Anti-aliased downsampling (BlurPool; Zhang 2019, "Making Convolutional Networks
    Shift-Invariant Again"): low-pass filter each channel, then subsample.

    The filter is the normalised binomial kernel (a row of Pascal's triangle, e.g.
    ``[1, 2, 1] / 4`` for size 3; outer product across axes), applied as a depthwise
    :func:`conv` after ``k - 1`` samples of ``padding_mode`` padding.

    Parameters
    ----------
    input : (N, C, H, W) or (C, H, W)
    kernel_size : int or tuple of 2 ints (>= 1); 1 is plain subsampling.
    stride : int or tuple of 2 ints (>= 1).
    padding_mode : ``'reflect'`` (default), ``'replicate'``, ``'circular'`` or ``'zeros'``.

    Returns
    -------
    (N, C, ceil(H / s_H), ceil(W / s_W)) or (C, ceil(H / s_H), ceil(W / s_W))
        The convolution size rule (:func:`cnnlab.ops._args.conv_output_shape`) with
        ``k - 1`` padding: ``floor((n - 1) / s) + 1 = ceil(n / s)``.

    Examples
    --------
    >>> blur_pool2d(np.ones((1, 3, 7, 7))).shape
    (1, 3, 4, 4)
    """
    return _blur_pool(input, kernel_size, stride, padding_mode, 2, "blur_pool2d")


def blur_pool3d(input: ArrayOrTensor, kernel_size: IntOrTuple = 3, stride: IntOrTuple = 2,
                padding_mode: str = "reflect") -> ArrayOrTensor:
    """3-D anti-aliased downsampling. See :func:`blur_pool2d` for every argument.

    Parameters
    ----------
    input : (N, C, D, H, W) or (C, D, H, W)
    kernel_size, stride : int or tuple of 3 ints (>= 1)

    Returns
    -------
    (N, C, ceil(D / s_D), ceil(H / s_H), ceil(W / s_W)) or the same without N

    Examples
    --------
    >>> blur_pool3d(np.ones((1, 2, 5, 5, 5))).shape
    (1, 2, 3, 3, 3)
    """
    return _blur_pool(input, kernel_size, stride, padding_mode, 3, "blur_pool3d")
