"""Padding and sliding windows as functions: ``pad`` (every boundary mode, negative values
crop), ``unfold`` (im2col) and ``fold`` (col2im, its adjoint). Kernels: ``ops/pad.py`` and
``ops/windows.py``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..ops._args import (
    block_grid,
    check_choice,
    prod,
    to_tuple,
    window_args,
    window_rank,
)
from ..ops.pad import check_pad_fits, pad_backward, pad_forward
from ..ops.windows import fold_nd, unfold_nd
from ._binding import (
    ArrayOrTensor,
    IntOrTuple,
    _batched,
    _data,
    _float_arrays,
    _unary_op,
    _wrap,
)


def pad(input: ArrayOrTensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0
        ) -> ArrayOrTensor:
    """Pad the last ``len(pad) // 2`` axes; ``pad`` lists (left, right) from the LAST axis
    backwards, as in ``torch.nn.functional.pad``. ``mode``: ``'constant'`` (``value``),
    ``'reflect'``, ``'replicate'`` or ``'circular'``. Negative values crop, in every mode,
    as PyTorch's do (circular wraps the cropped input; reflect and replicate read the
    original one).

    Parameters
    ----------
    input : (*, n_1, ..., n_d), d = len(pad) // 2 <= input.ndim
    pad : (lo_d, hi_d, ..., lo_1, hi_1), 2*d ints
        The last axis first, as in PyTorch; negative values crop.
    mode : ``'constant'``, ``'reflect'``, ``'replicate'`` or ``'circular'``
    value : float
        The fill of ``'constant'`` mode.

    Returns
    -------
    (*, n_1 + lo_1 + hi_1, ..., n_d + lo_d + hi_d)
        Leading axes ``*`` unchanged; each padded size must be >= 0.

    Examples
    --------
    The first pair pads the last axis (columns), the second the one before it (rows):

    >>> pad(np.ones((2, 2)), (1, 1, 0, 1)).tolist()
    [[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]
    """
    fn = "pad"
    x_arr = _data(input)
    if not isinstance(pad, Sequence) or len(pad) % 2 or len(pad) // 2 > x_arr.ndim:
        raise ValueError(f"{fn}: pad must be a sequence of (left, right) pairs for at most "
                         f"{x_arr.ndim} axes, got {pad!r}")
    if not all(isinstance(p, (int, np.integer)) for p in pad):
        raise TypeError(f"{fn}: pad values must be ints, got {pad!r}")
    check_choice(mode, ("constant", "reflect", "replicate", "circular"), "mode", fn)
    dims = len(pad) // 2
    pairs = tuple((int(pad[2 * i]), int(pad[2 * i + 1])) for i in reversed(range(dims)))
    spatial = x_arr.shape[x_arr.ndim - dims:]
    for axis, (n, (lo, hi)) in enumerate(zip(spatial, pairs)):
        if n + lo + hi < 0:
            raise ValueError(f"{fn}: pad ({lo}, {hi}) of axis {x_arr.ndim - dims + axis} "
                             f"(size {n}) leaves a negative size {n + lo + hi}")
    grow = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pairs)
    # Negative values crop. PyTorch's order: circular padding wraps the cropped input, while
    # reflect and replicate index the original input (pad, then crop); the two differ where
    # one side crops and the other reflects past it: pad (2, -4) of [1, ..., 6] with
    # 'reflect' is [3, 2, 1, 2]. Zeros are the same either way (crop first: less to copy).
    pad_first = mode in ("reflect", "replicate")
    before = x_arr.shape[x_arr.ndim - dims:] if pad_first else tuple(
        n + min(lo, 0) + min(hi, 0) for n, (lo, hi) in zip(spatial, pairs))
    if mode != "constant":
        check_pad_fits(before, grow, mode, fn)
    kernel_mode = mode if mode != "constant" else "zeros"

    def crop(sizes: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(-min(lo, 0), n + min(hi, 0)) for n, (lo, hi) in zip(sizes, pairs))

    if pad_first:
        padded = pad_forward(x_arr, grow, mode, value)
        padded_shape = padded.shape  # the VJP needs its shape only, not the array
        kept = crop(padded_shape[padded.ndim - dims:])
        out = np.array(padded[(Ellipsis, *kept)], copy=True)
        del padded

        def vjp(g: np.ndarray) -> tuple[np.ndarray]:
            g_padded = np.zeros(padded_shape, g.dtype)
            g_padded[(Ellipsis, *kept)] = g
            return (pad_backward(g_padded, grow, kernel_mode),)
    else:
        kept = crop(spatial)
        cropped = x_arr[(Ellipsis, *kept)]
        out = pad_forward(cropped, grow, mode, value)
        out = np.array(out, copy=True) if out is cropped else out

        def vjp(g: np.ndarray) -> tuple[np.ndarray]:
            full = np.zeros_like(x_arr)
            full[(Ellipsis, *kept)] = pad_backward(g, grow, kernel_mode)
            return (full,)

    return _wrap(out, [input], vjp, False, "pad",
                 {"pad": tuple(int(p) for p in pad), "mode": mode, "value": value})


def unfold(input: ArrayOrTensor, kernel_size: IntOrTuple, dilation: IntOrTuple = 1,
           padding: IntOrTuple = 0, stride: IntOrTuple = 1) -> ArrayOrTensor:
    """Extract sliding blocks (im2col), as ``torch.nn.functional.unfold``.

    ``kernel_size`` as an int means 2-D (PyTorch); as a tuple of n ints, n-D.

    Parameters
    ----------
    input : (N, C, *spatial) or (C, *spatial)
        ``len(spatial)`` is 2 for an int ``kernel_size``, else ``len(kernel_size)``.
    kernel_size, dilation, stride : int or tuple (>= 1).
    padding : int or tuple, zeros on both sides.

    Returns
    -------
    (N, C*prod(kernel_size), L) or (C*prod(kernel_size), L)
        ``L = prod(blocks)``, ``blocks`` the convolution output size
        (:func:`cnnlab.ops._args.conv_output_shape`); row ``c*prod(k) + flat(k)``, column
        the block's flat position. :func:`fold` is its adjoint.

    Examples
    --------
    The four 2x2 blocks of a 3x3 image are the four columns:

    >>> unfold(np.arange(9.0).reshape(1, 3, 3), 2).tolist()
    [[0.0, 1.0, 3.0, 4.0], [1.0, 2.0, 4.0, 5.0], [3.0, 4.0, 6.0, 7.0], [4.0, 5.0, 7.0, 8.0]]
    """
    fn = "unfold"
    spatial_dims = window_rank(kernel_size)
    x_arr, unbatched = _batched(_float_arrays(fn, input=input)["input"], spatial_dims, fn)
    kernel, dilation_t, padding_t, stride_t = window_args(kernel_size, dilation, padding,
                                                           stride, spatial_dims, fn)
    in_spatial = x_arr.shape[2:]
    blocks = block_grid(in_spatial, kernel, dilation_t, padding_t, stride_t, fn)
    out = unfold_nd(x_arr, kernel, dilation_t, padding_t, stride_t, blocks)
    return _unary_op(out, input, unbatched, lambda g: fold_nd(
        g, in_spatial, kernel, dilation_t, padding_t, stride_t, blocks), "unfold",
        {"kernel_size": kernel, "dilation": dilation_t, "padding": padding_t, "stride": stride_t})


def fold(input: ArrayOrTensor, output_size: IntOrTuple, kernel_size: IntOrTuple,
         dilation: IntOrTuple = 1, padding: IntOrTuple = 0, stride: IntOrTuple = 1
         ) -> ArrayOrTensor:
    """Sum sliding blocks back into an array (col2im), the adjoint of :func:`unfold`.

    Parameters
    ----------
    input : (N, C*prod(kernel_size), L) or (C*prod(kernel_size), L)
    output_size : int or tuple
        Spatial size of the result; an int means 2-D unless kernel_size is a tuple.
    kernel_size, dilation, padding, stride : as :func:`unfold`; L must equal the number of
        blocks that fit in ``output_size``.

    Returns
    -------
    (N, C, *output_size) or (C, *output_size)
        Overlapping blocks add, so ``fold(unfold(x))`` is ``x`` times the number of blocks
        covering each position.

    Examples
    --------
    Three length-2 blocks of ones fold back into length 4; the middle is covered twice:

    >>> fold(np.ones((1, 2, 3)), (4,), (2,)).tolist()
    [[[1.0, 2.0, 2.0, 1.0]]]
    """
    fn = "fold"
    spatial_dims = window_rank(output_size, kernel_size)
    x_arr = _float_arrays(fn, input=input)["input"]
    if x_arr.ndim not in (2, 3):
        raise ValueError(f"{fn}: input must be 2-D (C*prod(kernel_size), L) or 3-D "
                         f"(N, C*prod(kernel_size), L), got shape {x_arr.shape}")
    unbatched = x_arr.ndim == 2
    x_arr = x_arr[None] if unbatched else x_arr
    kernel, dilation_t, padding_t, stride_t = window_args(kernel_size, dilation, padding,
                                                           stride, spatial_dims, fn)
    out_spatial = to_tuple(output_size, spatial_dims, "output_size", fn)
    kernel_numel = prod(kernel)
    if x_arr.shape[1] % kernel_numel:
        raise ValueError(f"{fn}: input.shape[-2] ({x_arr.shape[1]}) must be divisible by "
                         f"prod(kernel_size) ({kernel_numel})")
    blocks = block_grid(out_spatial, kernel, dilation_t, padding_t, stride_t, fn)
    if x_arr.shape[2] != prod(blocks):
        raise ValueError(f"{fn}: input.shape[-1] ({x_arr.shape[2]}) must equal the number "
                         f"of sliding blocks {prod(blocks)} (grid {blocks})")
    out = fold_nd(x_arr, out_spatial, kernel, dilation_t, padding_t, stride_t, blocks)
    return _unary_op(out, input, unbatched, lambda g: unfold_nd(
        g, kernel, dilation_t, padding_t, stride_t, blocks), "fold",
        {"output_size": out_spatial, "kernel_size": kernel, "dilation": dilation_t,
         "padding": padding_t, "stride": stride_t})
