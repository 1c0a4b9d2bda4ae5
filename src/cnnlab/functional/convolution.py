"""Convolution and transposed convolution layers as functions: ``conv``, ``conv1d/2d/3d``,
``conv_transpose1d/2d/3d``.

Each public function checks and normalises its arguments once (``ops/_args.py``), builds a
:class:`cnnlab.ops.dispatch.ConvRequest` and binds the dispatcher's forward to its VJP
(``ops/dispatch.py``, which runs ``ops/gemm.py``, ``ops/fft.py`` or ``ops/reference.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..ops._args import (
    PADDING_MODES,
    check_choice,
    check_conv_operands,
    check_conv_transpose_operands,
    checked_conv_output_shape,
    checked_conv_transpose_output_shape,
    conv_padding,
    pad_pairs,
    to_tuple,
)
from ..ops.dispatch import (
    ALGORITHMS,
    ConvRequest,
    conv_nd,
    conv_nd_backward,
    conv_transpose_nd,
    conv_transpose_nd_backward,
)
from ..ops.pad import check_pad_fits
from ._binding import (
    ArrayOrTensor,
    IntOrTuple,
    _batched,
    _float_arrays,
    _needs,
    _wrap,
)

# Largest conv input for which the forward keeps anything for the weight gradient (its
# columns when they fit cnnlab.ops.gemm.KEEP_COLS_BYTES, else its padded grid); above it
# the backward rebuilds the grid rather than hold a second copy of a large activation.
KEEP_GRID_BYTES = 16 * 2**20


def conv(
    input: ArrayOrTensor,
    weight: ArrayOrTensor,
    bias: ArrayOrTensor | None = None,
    stride: IntOrTuple = 1,
    padding: IntOrTuple | Sequence[Sequence[int]] | str = 0,
    dilation: IntOrTuple = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
    algorithm: str = "auto",
) -> ArrayOrTensor:
    """N-D convolution layer (cross-correlation), the one implementation behind conv1d/2d/3d.

    The number of spatial dimensions is the weight's rank minus 2.

    Parameters
    ----------
    input : (N, C_in, *spatial) or (C_in, *spatial)
        Unbatched input gives unbatched output.
    weight : (C_out, C_in/groups, *kernel)
    bias : (C_out,) or None
    stride, dilation : int or tuple of one int per spatial dimension (>= 1)
    padding : int, per-dimension tuple, per-side pairs ``((lo, hi), ...)``, or ``'valid'``,
        ``'same'`` (``ceil(n / stride)`` outputs), ``'full'`` or ``'causal'`` (1-D).
    groups : int
        C_in and C_out split into ``groups`` independent blocks.
    padding_mode : ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.
    algorithm : ``'auto'`` (the cost model picks GEMM or FFT), ``'gemm'``, ``'fft'`` or
        ``'direct'`` (the definition as a direct sum, :mod:`cnnlab.ops.reference`).

    Returns
    -------
    (N, C_out, *out) or (C_out, *out)
        ``out = floor((n + lo + hi - d*(k-1) - 1) / s) + 1`` per spatial dimension
        (:func:`cnnlab.ops._args.conv_output_shape`)::

            y[n, o, p] = bias[o] + sum_{c, k} x_pad[n, g(o)*C_in/groups + c, p*s + k*d] w[o, c, k]

        with ``g(o) = o // (C_out/groups)`` the group of output channel ``o``.

    Examples
    --------
    A 4-D weight makes a 2-D convolution; stride 2 and padding 1 halve 5 to 3:

    >>> conv(np.ones((2, 3, 5, 5)), np.ones((4, 3, 3, 3)), stride=2, padding=1).shape
    (2, 4, 3, 3)
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                 None, "conv")


def _conv_operands(x: Any, weight: Any, bias: Any, groups: int, spatial_dims: int | None,
                   fn: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int, bool]:
    """A convolution's checked arrays: (x batched, w, b, spatial_dims, whether x was
    unbatched); ``spatial_dims`` None takes it from the weight."""
    arrays = _float_arrays(fn, ("input", "weight"), input=x, weight=weight, bias=bias)
    x_arr, w_arr, b_arr = arrays["input"], arrays["weight"], arrays.get("bias")
    if spatial_dims is None:
        spatial_dims = w_arr.ndim - 2
        if spatial_dims < 1:
            raise ValueError(f"{fn}: weight must be at least 3-D, got shape {w_arr.shape}")
    x_arr, unbatched = _batched(x_arr, spatial_dims, fn)
    check_conv_operands(x_arr.shape, w_arr.shape, None if b_arr is None else b_arr.shape,
                        groups, fn)
    return x_arr, w_arr, b_arr, spatial_dims, unbatched


def conv_attrs(spec: ConvRequest, kernel: tuple[int, ...]) -> dict[str, Any]:
    """A convolution's settings as the graph capture records them: ``kernel_size`` (the
    weight's spatial shape, kept here too because a weight that is not a parameter is
    recorded as a constant, without a shape), ``padding`` as (lo, hi) per spatial axis,
    as the engine applied it."""
    return {"kernel_size": tuple(int(k) for k in kernel), "stride": spec.stride,
            "padding": spec.padding, "dilation": spec.dilation, "groups": spec.groups,
            "padding_mode": spec.padding_mode}


def _conv(x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any,
          groups: int, padding_mode: str, algorithm: str, spatial_dims: int | None, fn: str
          ) -> ArrayOrTensor:
    x_arr, w_arr, b_arr, spatial_dims, unbatched = _conv_operands(x, weight, bias, groups,
                                                                   spatial_dims, fn)
    check_choice(padding_mode, PADDING_MODES, "padding_mode", fn)
    check_choice(algorithm, ALGORITHMS, "algorithm", fn)
    kernel = w_arr.shape[2:]
    stride_t = to_tuple(stride, spatial_dims, "stride", fn)
    dilation_t = to_tuple(dilation, spatial_dims, "dilation", fn)
    pads = conv_padding(padding, x_arr.shape[2:], kernel, stride_t, dilation_t, fn)
    if padding_mode != "zeros":
        check_pad_fits(x_arr.shape[2:], pads, padding_mode, fn)
    checked_conv_output_shape(x_arr.shape[2:], kernel, stride_t, pads, dilation_t, fn)
    spec = ConvRequest(stride_t, pads, dilation_t, int(groups), padding_mode, algorithm)
    # Training: keep the forward's input grid for the weight gradient (when small).
    saved = {} if _needs(weight) and x_arr.nbytes <= KEEP_GRID_BYTES else None
    y = conv_nd(x_arr, w_arr, b_arr, spec, saved)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        gx, gw, gb = conv_nd_backward(x_arr, w_arr, g, spec, _needs(x), _needs(weight),
                                      _needs(bias), saved)
        return (gx, gw, gb) if bias is not None else (gx, gw)

    return _wrap(y, [x, weight, bias], vjp, unbatched, "conv",
                 conv_attrs(spec, w_arr.shape[2:]))


def conv1d(input: ArrayOrTensor, weight: ArrayOrTensor, bias: ArrayOrTensor | None = None,
           stride: IntOrTuple = 1, padding: Any = 0, dilation: IntOrTuple = 1,
           groups: int = 1, padding_mode: str = "zeros", algorithm: str = "auto"
           ) -> ArrayOrTensor:
    """1-D convolution (cross-correlation). See :func:`conv` for every argument.

    Parameters
    ----------
    input : (N, C_in, L) or (C_in, L)
    weight : (C_out, C_in/groups, k)
    bias : (C_out,) or None

    Returns
    -------
    (N, C_out, L_out) or (C_out, L_out)
        ``L_out = floor((L + lo + hi - d*(k-1) - 1) / s) + 1``
        (:func:`cnnlab.ops._args.conv_output_shape`).

    Examples
    --------
    The kernel slides unflipped (cross-correlation): ``1*1 + 0*2 - 1*3 = -2``.

    >>> conv1d(np.array([[1.0, 2.0, 3.0, 4.0]]), np.array([[[1.0, 0.0, -1.0]]])).tolist()
    [[-2.0, -2.0]]
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                 1, "conv1d")


def conv2d(input: ArrayOrTensor, weight: ArrayOrTensor, bias: ArrayOrTensor | None = None,
           stride: IntOrTuple = 1, padding: Any = 0, dilation: IntOrTuple = 1,
           groups: int = 1, padding_mode: str = "zeros", algorithm: str = "auto"
           ) -> ArrayOrTensor:
    """2-D convolution (cross-correlation), as ``torch.nn.functional.conv2d``. See
    :func:`conv` for every argument.

    Parameters
    ----------
    input : (N, C_in, H, W) or (C_in, H, W)
    weight : (C_out, C_in/groups, kH, kW)
    bias : (C_out,) or None

    Returns
    -------
    (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        ``H_out = floor((H + lo + hi - d*(kH-1) - 1) / s) + 1``, likewise ``W_out``
        (:func:`cnnlab.ops._args.conv_output_shape`).

    Examples
    --------
    Stride 2 with padding ``k // 2`` halves the image: ``floor((32 + 4 - 4 - 1) / 2) + 1``.

    >>> conv2d(np.ones((1, 3, 32, 32)), np.ones((8, 3, 5, 5)), stride=2, padding=2).shape
    (1, 8, 16, 16)
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                 2, "conv2d")


def conv3d(input: ArrayOrTensor, weight: ArrayOrTensor, bias: ArrayOrTensor | None = None,
           stride: IntOrTuple = 1, padding: Any = 0, dilation: IntOrTuple = 1,
           groups: int = 1, padding_mode: str = "zeros", algorithm: str = "auto"
           ) -> ArrayOrTensor:
    """3-D convolution (cross-correlation). See :func:`conv` for every argument.

    Parameters
    ----------
    input : (N, C_in, D, H, W) or (C_in, D, H, W)
    weight : (C_out, C_in/groups, kD, kH, kW)
    bias : (C_out,) or None

    Returns
    -------
    (N, C_out, D_out, H_out, W_out) or (C_out, D_out, H_out, W_out)
        Each size by :func:`cnnlab.ops._args.conv_output_shape`.

    Examples
    --------
    >>> conv3d(np.ones((1, 1, 3, 3, 3)), np.ones((2, 1, 2, 2, 2))).shape
    (1, 2, 2, 2, 2)
    """
    return _conv(input, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                 3, "conv3d")


def _conv_transpose(x: Any, weight: Any, bias: Any, stride: Any, padding: Any,
                    output_padding: Any, groups: int, dilation: Any, spatial_dims: int,
                    algorithm: str, fn: str) -> ArrayOrTensor:
    arrays = _float_arrays(fn, ("input", "weight"), input=x, weight=weight, bias=bias)
    x_arr, w_arr, b_arr = arrays["input"], arrays["weight"], arrays.get("bias")
    x_arr, unbatched = _batched(x_arr, spatial_dims, fn)
    check_conv_transpose_operands(x_arr.shape, w_arr.shape,
                                  None if b_arr is None else b_arr.shape, groups, fn)
    check_choice(algorithm, ALGORITHMS, "algorithm", fn)
    kernel = w_arr.shape[2:]
    stride_t = to_tuple(stride, spatial_dims, "stride", fn)
    dilation_t = to_tuple(dilation, spatial_dims, "dilation", fn)
    pads = pad_pairs(padding, spatial_dims, "padding", fn)
    out_pad = to_tuple(output_padding, spatial_dims, "output_padding", fn, minimum=0)
    out_spatial = checked_conv_transpose_output_shape(x_arr.shape[2:], kernel, stride_t,
                                                      pads, dilation_t, out_pad, fn)
    spec = ConvRequest(stride_t, pads, dilation_t, int(groups), "zeros", algorithm)
    y = conv_transpose_nd(x_arr, w_arr, b_arr, spec, out_spatial)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        gx, gw, gb = conv_transpose_nd_backward(x_arr, w_arr, g, spec, _needs(x),
                                                _needs(weight), _needs(bias))
        return (gx, gw, gb) if bias is not None else (gx, gw)

    return _wrap(y, [x, weight, bias], vjp, unbatched, "conv_transpose",
                 {**conv_attrs(spec, w_arr.shape[2:]), "output_padding": out_pad})


def conv_transpose1d(input: ArrayOrTensor, weight: ArrayOrTensor,
                     bias: ArrayOrTensor | None = None, stride: IntOrTuple = 1,
                     padding: Any = 0, output_padding: IntOrTuple = 0, groups: int = 1,
                     dilation: IntOrTuple = 1, algorithm: str = "auto") -> ArrayOrTensor:
    """1-D transposed convolution, the adjoint of :func:`conv1d` (its input gradient). See
    :func:`conv_transpose2d` for every argument.

    Parameters
    ----------
    input : (N, C_in, L) or (C_in, L)
    weight : (C_in, C_out/groups, k)
    bias : (C_out,) or None

    Returns
    -------
    (N, C_out, L_out) or (C_out, L_out)
        ``L_out = (L-1)*s - lo - hi + d*(k-1) + output_padding + 1``
        (:func:`cnnlab.ops._args.conv_transpose_output_shape`).

    Examples
    --------
    Each input scatters ``input * weight`` at stride 2; overlaps add (``1 + 2 = 3``):

    >>> conv_transpose1d(np.array([[[1.0, 2.0]]]), np.ones((1, 1, 3)), stride=2).tolist()
    [[[1.0, 1.0, 3.0, 2.0, 2.0]]]
    """
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups,
                           dilation, 1, algorithm, "conv_transpose1d")


def conv_transpose2d(input: ArrayOrTensor, weight: ArrayOrTensor,
                     bias: ArrayOrTensor | None = None, stride: IntOrTuple = 1,
                     padding: Any = 0, output_padding: IntOrTuple = 0, groups: int = 1,
                     dilation: IntOrTuple = 1, algorithm: str = "auto") -> ArrayOrTensor:
    """2-D transposed convolution, as ``torch.nn.functional.conv_transpose2d``: the adjoint
    of :func:`conv2d` with the same stride, padding, dilation and groups (upsampling).

    Parameters
    ----------
    input : (N, C_in, H, W) or (C_in, H, W)
    weight : (C_in, C_out/groups, kH, kW)
        Indexed as the matching :func:`conv2d`'s weight (C_out and C_in swap roles).
    bias : (C_out,) or None
    stride, dilation : int or tuple of 2 ints (>= 1)
    padding : int, tuple of 2 ints or per-side pairs ``((lo, hi), (lo, hi))``, removed from
        the output's borders (the padding of the matching :func:`conv2d`).
    output_padding : int or tuple of 2 ints, each smaller than its stride or dilation
        Extra rows/columns on the high side, to pick among the input sizes that a strided
        :func:`conv2d` maps to the same output size.
    groups : int
        C_in and C_out split into ``groups`` independent blocks.
    algorithm : ``'auto'``, ``'gemm'``, ``'fft'`` or ``'direct'``, as :func:`conv`.

    Returns
    -------
    (N, C_out, H_out, W_out) or (C_out, H_out, W_out)
        ``H_out = (H-1)*s - lo - hi + d*(kH-1) + output_padding + 1``, likewise ``W_out``
        (:func:`cnnlab.ops._args.conv_transpose_output_shape`).

    Examples
    --------
    Kernel 4, stride 2, padding 1 doubles the size: ``15*2 - 2 + 3 + 1 = 32``.

    >>> conv_transpose2d(np.ones((1, 8, 16, 16)), np.ones((8, 3, 4, 4)), stride=2,
    ...                  padding=1).shape
    (1, 3, 32, 32)
    """
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups,
                           dilation, 2, algorithm, "conv_transpose2d")


def conv_transpose3d(input: ArrayOrTensor, weight: ArrayOrTensor,
                     bias: ArrayOrTensor | None = None, stride: IntOrTuple = 1,
                     padding: Any = 0, output_padding: IntOrTuple = 0, groups: int = 1,
                     dilation: IntOrTuple = 1, algorithm: str = "auto") -> ArrayOrTensor:
    """3-D transposed convolution. See :func:`conv_transpose2d` for every argument.

    Parameters
    ----------
    input : (N, C_in, D, H, W) or (C_in, D, H, W)
    weight : (C_in, C_out/groups, kD, kH, kW)
    bias : (C_out,) or None

    Returns
    -------
    (N, C_out, D_out, H_out, W_out) or (C_out, D_out, H_out, W_out)
        Each size by :func:`cnnlab.ops._args.conv_transpose_output_shape`.

    Examples
    --------
    >>> conv_transpose3d(np.ones((1, 2, 2, 2, 2)), np.ones((2, 1, 2, 2, 2)), stride=2).shape
    (1, 1, 4, 4, 4)
    """
    return _conv_transpose(input, weight, bias, stride, padding, output_padding, groups,
                           dilation, 3, algorithm, "conv_transpose3d")
