"""The sliding-window view: one N-D primitive behind pooling and unfold/fold (im2col/col2im).

A window view of a padded array ``(..., *padded)`` is ``(..., *out_spatial, *kernel)``
where element ``[..., o_1..o_n, k_1..k_n]`` is ``padded[..., o_i*s_i + k_i*d_i]``; it costs
no copy (``as_strided``). Pooling reduces over the kernel axes; unfold reorders the axes.
The adjoint, :func:`window_adjoint`, adds every window back where it was read from,
summing overlaps (col2im); it is the VJP of the view and also ``fold``.

The sliding windows of cnnlab, each named for what it serves:

- this view: the reference convolution and pooling (``reference.py``), average and LP
  pooling and max pooling's indices (``pool.py``), ``unfold``/``fold``;
- the GEMM convolution's phase grid (``gemm.py``: ``to_grid``, ``TapGroup``): the padded
  input stored once per stride phase, so that the columns of a chunk are one strided copy
  per phase instead of one per tap (the speed of every strided convolution);
- max pooling's per-axis taps (``pool.py``: ``_axis_taps``): plain strided slices along one
  axis, so that a k x k window costs 2(k - 1) passes instead of k*k - 1, and writable, since
  the backward sends each gradient to its tap through them.

The fused convolution + pooling reads its pooling windows as channel blocks
(``conv_pool.py``: ``phased_view``, a reshape), not through a window.
"""

from __future__ import annotations

from itertools import product

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ._args import PadPairs, prod
from .pad import pad_backward, pad_forward


def window_padding(
    in_spatial: tuple[int, ...],
    padding: tuple[int, ...],
    kernel: tuple[int, ...],
    stride: tuple[int, ...],
    dilation: tuple[int, ...],
    out_spatial: tuple[int, ...],
) -> PadPairs:
    """(lo, hi) padding so that ``out_spatial`` windows fit: ``lo = padding`` and ``hi`` is
    whatever the last window needs (more than ``padding`` in ceil mode, less when the last
    input samples are never read).

    >>> window_padding((5,), (0,), (2,), (2,), (1,), (3,))
    ((0, 1),)
    """
    pairs = []
    for n, p, k, s, d, o in zip(in_spatial, padding, kernel, stride, dilation, out_spatial,
                                strict=True):
        extent = (o - 1) * s + d * (k - 1) + 1
        pairs.append((p, max(extent - n - p, 0)))
    return tuple(pairs)


def window_view(
    x: np.ndarray, kernel: tuple[int, ...], stride: tuple[int, ...],
    dilation: tuple[int, ...], out_spatial: tuple[int, ...],
) -> np.ndarray:
    """Read-only view ``(..., *padded) -> (..., *out_spatial, *kernel)``, no copy.

    ``x`` must already be padded so that every window fits (see :func:`window_padding`).

    >>> window_view(np.arange(5.0), (3,), (2,), (1,), (2,)).tolist()
    [[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]]
    """
    ndim = len(kernel)
    lead = x.ndim - ndim
    for axis, (n, k, s, d, o) in enumerate(zip(x.shape[lead:], kernel, stride, dilation,
                                              out_spatial, strict=True)):
        if (o - 1) * s + d * (k - 1) + 1 > n:
            raise ValueError(f"window_view: windows overrun spatial dim {axis} of size {n}")
    spatial_strides = x.strides[lead:]
    shape = x.shape[:lead] + tuple(out_spatial) + tuple(kernel)
    strides = (
        x.strides[:lead]
        + tuple(st * s for st, s in zip(spatial_strides, stride, strict=True))
        + tuple(st * d for st, d in zip(spatial_strides, dilation, strict=True))
    )
    return as_strided(x, shape=shape, strides=strides, writeable=False)


def window_adjoint(
    windows: np.ndarray, padded_spatial: tuple[int, ...], stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> np.ndarray:
    """Adjoint of :func:`window_view` (col2im): ``(..., *out, *kernel) -> (..., *padded)``.

    Each window value is added to the position it was read from; overlaps sum. The loop runs
    over kernel offsets (``prod(kernel)`` strided slice additions), never over pixels.
    """
    ndim = len(padded_spatial)
    lead_shape = windows.shape[: windows.ndim - 2 * ndim]
    out_spatial = windows.shape[windows.ndim - 2 * ndim: windows.ndim - ndim]
    kernel = windows.shape[windows.ndim - ndim:]
    result = np.zeros(lead_shape + tuple(padded_spatial), dtype=windows.dtype)
    out_axes = (slice(None),) * ndim
    for offset in product(*(range(k) for k in kernel)):
        target = tuple(
            slice(k * d, k * d + (o - 1) * s + 1, s)
            for k, d, o, s in zip(offset, dilation, out_spatial, stride, strict=True)
        )
        result[(Ellipsis, *target)] += windows[(Ellipsis, *out_axes, *offset)]
    return result


# ---------------------------------------------------------------------------------------
# unfold (im2col) and fold (col2im): each is the other's VJP.


def unfold_nd(
    x: np.ndarray, kernel: tuple[int, ...], dilation: tuple[int, ...],
    padding: tuple[int, ...], stride: tuple[int, ...], out_spatial: tuple[int, ...],
) -> np.ndarray:
    """im2col: x (N, C, *spatial) -> (N, C*prod(kernel), prod(out_spatial)).

    Row ``c*prod(kernel) + flat(k)`` holds channel ``c`` at kernel offset ``k`` (row-major),
    column ``flat(o)`` the window at output position ``o``, as ``torch.nn.functional.unfold``.
    """
    ndim = len(kernel)
    pads = window_padding(x.shape[2:], padding, kernel, stride, dilation, out_spatial)
    windows = window_view(pad_forward(x, pads), kernel, stride, dilation, out_spatial)
    # (N, C, *out, *kernel) -> (N, C, *kernel, *out)
    order = (0, 1, *range(2 + ndim, 2 + 2 * ndim), *range(2, 2 + ndim))
    columns = windows.transpose(order)
    return columns.reshape(x.shape[0], x.shape[1] * prod(kernel), prod(out_spatial))


def fold_nd(
    columns: np.ndarray, in_spatial: tuple[int, ...], kernel: tuple[int, ...],
    dilation: tuple[int, ...], padding: tuple[int, ...], stride: tuple[int, ...],
    out_spatial: tuple[int, ...],
) -> np.ndarray:
    """col2im, the adjoint of :func:`unfold_nd`: (N, C*prod(kernel), L) -> (N, C, *in_spatial),
    summing overlapping windows. ``out_spatial`` is the block grid (``prod = L``)."""
    ndim = len(kernel)
    batch = columns.shape[0]
    channels = columns.shape[1] // prod(kernel)
    cube = columns.reshape(batch, channels, *kernel, *out_spatial)
    order = (0, 1, *range(2 + ndim, 2 + 2 * ndim), *range(2, 2 + ndim))
    windows = cube.transpose(order)  # (N, C, *out, *kernel)
    pads = window_padding(in_spatial, padding, kernel, stride, dilation, out_spatial)
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, pads, strict=True))
    return pad_backward(window_adjoint(windows, padded, stride, dilation), pads, "zeros")
