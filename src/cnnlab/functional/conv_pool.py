"""A stride-1 convolution followed by non-overlapping max pooling, as one op:
``conv_max_pool`` (kernel: ``ops/conv_pool.py``). It falls back to the two ops of
``convolution.py`` and ``pooling.py`` where the cost model says the fusion does not pay."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..ops._args import (
    all_finite,
    conv_padding,
    prod,
    to_tuple,
)
from ..ops.conv_pool import (
    phased_view,
    pooled_bias_grad,
    pooled_weight,
    pooled_weight_grad,
    unpooled_gradient,
)
from ..ops.dispatch import (
    ConvRequest,
    choose_conv_method,
    conv_nd,
    conv_nd_backward,
    pooling_in_conv_pays,
)
from ..ops.gemm import gemm_plan
from ..ops.pool import (
    max_over_phases,
    max_over_phases_backward,
)
from ._binding import (
    ArrayOrTensor,
    IntOrTuple,
    _needs,
    _wrap,
)
from .convolution import KEEP_GRID_BYTES, _conv, _conv_operands, conv_attrs
from .pooling import _max_pool


def conv_max_pool(input: ArrayOrTensor, weight: ArrayOrTensor, bias: ArrayOrTensor | None = None,
                  padding: IntOrTuple | Sequence[Sequence[int]] | str = 0, groups: int = 1,
                  pool_size: IntOrTuple = 2) -> ArrayOrTensor:
    """``max_pool(conv(x, weight, bias, padding=padding, groups=groups), pool_size)``, as one
    strided convolution (:mod:`cnnlab.ops.conv_pool`) where the cost model says that is
    faster (:func:`cnnlab.ops.dispatch.pooling_in_conv_pays`: layers with few input
    channels, such as LeNet-5's), else as the two ops. :class:`cnnlab.nn.Sequential` runs a
    convolution layer followed by such a max pooling layer with it.

    The convolution has stride 1 and no dilation; the pooling window is ``pool_size`` with
    the same stride, no padding, floor mode. Results agree with the two ops' up to float
    rounding: BLAS may sum the strided convolution in another order (so a window whose
    values tie in one may not tie in the other, as between any two convolution codes,
    PyTorch's included), and gradients are summed by pooling phase. Among the values it
    computes, ties go to the first maximum in the window and NaN to the last, as PyTorch's
    scan; inputs with NaN or inf take the two ops.

    Parameters
    ----------
    input : (N, C_in, *spatial) or (C_in, *spatial)
    weight : (C_out, C_in/groups, *kernel)
        Its rank minus 2 sets the number of spatial dimensions, as in :func:`conv`.
    bias : (C_out,) or None
    padding, groups : as :func:`conv`
    pool_size : int or one int per spatial dimension (>= 1)
        The pooling window and its stride.

    Returns
    -------
    (N, C_out, *pooled) or (C_out, *pooled)
        ``pooled = conv_out // pool_size`` (floor mode), ``conv_out`` the stride-1
        convolution's size ``n + lo + hi - (k-1)``
        (:func:`cnnlab.ops._args.conv_output_shape` with stride and dilation 1).

    Examples
    --------
    The convolution of ``0, ..., 7`` with ``[1, 1, 1]`` is ``[3, 6, 9, 12, 15, 18]``;
    pairs then keep their maximum:

    >>> conv_max_pool(np.arange(8.0).reshape(1, 1, 8), np.ones((1, 1, 3))).tolist()
    [[[6.0, 12.0, 18.0]]]
    """
    return _conv_max_pool(input, weight, bias, padding, groups, pool_size, None,
                          ("conv_max_pool", "conv_max_pool"))


def _conv_max_pool(x: Any, weight: Any, bias: Any, padding: Any, groups: int, pool_size: Any,
                   spatial_dims: int | None, fns: tuple[str, str]) -> ArrayOrTensor:
    """:func:`conv_max_pool`; ``fns``: the (convolution, pooling) names errors report."""
    fn, pool_fn = fns
    x_arr, w_arr, b_arr, spatial_dims, unbatched = _conv_operands(x, weight, bias, groups,
                                                                   spatial_dims, fn)
    ones = (1,) * spatial_dims
    pads = conv_padding(padding, x_arr.shape[2:], w_arr.shape[2:], ones, ones, fn)
    pool = to_tuple(pool_size, spatial_dims, "pool_size", pool_fn)
    geo = gemm_plan(x_arr.shape, w_arr.shape, ones, pads, ones, int(groups))
    if min(geo.out_spatial, default=0) >= 1 and any(
            o < s for o, s in zip(geo.out_spatial, pool)):
        raise ValueError(f"{pool_fn}: pool_size {pool} is larger than the convolution's "
                         f"output {geo.out_spatial} in some dimension")
    big_shape = (w_arr.shape[0] * prod(pool), w_arr.shape[1],
                 *(k + s - 1 for k, s in zip(w_arr.shape[2:], pool)))
    layout = "batch" if geo.batch_inner else "image"  # the stride-1 conv's column order
    fused = gemm_plan(x_arr.shape, big_shape, pool, pads, ones, int(groups), layout)
    if (x_arr.shape[0] == 0 or min(geo.out_spatial, default=0) < 1
            or choose_conv_method(geo, x_arr.itemsize) != "gemm"
            or not pooling_in_conv_pays(geo, fused, x_arr.itemsize)
            or not (all_finite(x_arr) and all_finite(w_arr) and all_finite(b_arr))):
        # The two ops: their own errors, FFT or the smaller GEMM when faster, NaN and inf.
        y = _conv(x, weight, bias, 1, padding, 1, groups, "zeros", "auto", spatial_dims, fn)
        return _max_pool(y, pool, pool, 0, 1, False, False, spatial_dims, pool_fn)
    w_big, b_big = pooled_weight(w_arr, b_arr, pool, int(groups))
    spec = ConvRequest(pool, pads, ones, int(groups), "zeros", "gemm", layout)
    saved = {} if _needs(weight) and x_arr.nbytes <= KEEP_GRID_BYTES else None
    y = conv_nd(x_arr, w_big, b_big, spec, saved)
    phased = phased_view(y, int(groups), pool)
    out, taps = max_over_phases(phased, spatial_dims)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        finite = all_finite(g)
        g_phased = max_over_phases_backward(g, taps, phased.shape, finite)
        if finite:
            gx, gw, gb = conv_nd_backward(x_arr, w_big, g_phased.reshape(y.shape), spec,
                                          _needs(x), _needs(weight), _needs(bias), saved)
            gw = None if gw is None else pooled_weight_grad(gw, w_arr.shape, pool, int(groups))
            gb = None if gb is None else pooled_bias_grad(gb, int(groups), pool)
        else:  # inf * W''s zeros would be NaN: the stride-1 convolution's own VJP
            g_conv = unpooled_gradient(g_phased, pool, geo.out_spatial)
            gx, gw, gb = conv_nd_backward(x_arr, w_arr, g_conv, ConvRequest(ones, pads, ones,
                                                                         int(groups)),
                                          _needs(x), _needs(weight), _needs(bias))
        return (gx, gw, gb) if bias is not None else (gx, gw)

    return _wrap(out, [x, weight, bias], vjp, unbatched, "conv_max_pool",
                 {**conv_attrs(ConvRequest(ones, pads, ones, int(groups)), w_arr.shape[2:]),
                  "pool_size": pool})
