"""PyTorch-named differentiable ops on NumPy arrays or :class:`cnnlab.Tensor`.

Layout is channels-first, ``x: (N, C, *spatial)`` (or unbatched ``(C, *spatial)``), and a
convolution layer computes cross-correlation, as in ``torch.nn.functional``. A NumPy input
gives a NumPy output (float32 and float64 preserved); a Tensor input gives a Tensor that
records the op for autograd. Each public op validates and normalises its arguments once
(``ops/_args.py``), then binds an ``ops`` kernel and its VJP.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import special

from ._random import check_rng
from .autograd import Tensor
from .ops._args import (
    PADDING_MODES,
    conv_output_shape,
    conv_padding,
    conv_transpose_output_shape,
    pad_pairs,
    pool_output_shape,
    prod,
    to_tuple,
)
from .ops.conv_pool import (
    phased_view,
    pooled_bias_grad,
    pooled_weight,
    pooled_weight_grad,
    unpooled_gradient,
)
from .ops.dispatch import (
    ALGORITHMS,
    ConvRequest,
    choose_conv_method,
    conv_nd,
    conv_nd_backward,
    conv_transpose_nd,
    conv_transpose_nd_backward,
    pooling_in_conv_pays,
)
from .ops.gemm import all_finite, gemm_plan
from .ops.pad import check_pad_fits, pad_backward, pad_forward
from .ops.pool import (
    PoolRequest,
    adaptive_avg_pool_nd,
    adaptive_avg_pool_nd_backward,
    adaptive_max_pool_nd,
    avg_pool_nd,
    avg_pool_nd_backward,
    binomial_filter,
    lp_pool_nd,
    lp_pool_nd_backward,
    max_over_phases,
    max_over_phases_backward,
    max_pool_nd,
    max_pool_nd_backward,
    max_pool_taps,
    max_pool_taps_backward,
    max_unpool_nd,
    max_unpool_nd_backward,
)
from .ops.windows import fold_nd, unfold_nd

ArrayOrTensor = np.ndarray | Tensor

# Largest conv input for which the forward keeps anything for the weight gradient (its
# columns when they fit cnnlab.ops.gemm.KEEP_COLS_BYTES, else its padded grid); above it
# the backward rebuilds the grid rather than hold a second copy of a large activation.
KEEP_GRID_BYTES = 16 * 2**20
IntOrTuple = int | Sequence[int]


# ---------------------------------------------------------------------------------------
# Helpers shared by every op: array/Tensor in, same kind out; dtype and batch checks.


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


def _wrap(out: np.ndarray, inputs: Sequence[Any], vjp: Callable[[np.ndarray], Sequence[Any]],
          unbatched: bool) -> ArrayOrTensor:
    """Return ``out`` as an array, or as a Tensor whose VJP is ``vjp`` if any input is one."""
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

    return Tensor.from_op(out, parents, batched_vjp)


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


def _check_groups(groups: Any, fn: str) -> None:
    if isinstance(groups, (bool, np.bool_)) or not isinstance(groups, (int, np.integer)):
        raise TypeError(f"{fn}: groups must be an int, got {type(groups).__name__} {groups!r}")
    if groups < 1:
        raise ValueError(f"{fn}: groups must be >= 1, got {groups}")


def _check_choice(value: Any, allowed: Sequence[str], name: str, fn: str) -> None:
    if value not in allowed:
        raise ValueError(f"{fn}: {name} must be one of {tuple(allowed)}, got {value!r}")


# ---------------------------------------------------------------------------------------
# Convolution.


def _conv_checks(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, groups: int,
                 spatial_dims: int, fn: str) -> None:
    if w.ndim != spatial_dims + 2:
        raise ValueError(
            f"{fn}: weight must be {spatial_dims + 2}-D (C_out, C_in/groups, *kernel), "
            f"got shape {w.shape}"
        )
    _check_groups(groups, fn)
    if w.shape[1] * groups != x.shape[1]:
        raise ValueError(
            f"{fn}: weight.shape[1]*groups ({w.shape[1]}*{groups} = {w.shape[1] * groups}) "
            f"must equal input.shape[1] ({x.shape[1]})"
        )
    if w.shape[0] % groups:
        raise ValueError(
            f"{fn}: weight.shape[0] (out_channels {w.shape[0]}) must be divisible by "
            f"groups ({groups})"
        )
    if any(k < 1 for k in w.shape[2:]) or w.shape[0] < 1:
        raise ValueError(f"{fn}: weight sizes must be positive, got shape {w.shape}")
    if b is not None and b.shape != (w.shape[0],):
        raise ValueError(f"{fn}: bias must have shape ({w.shape[0]},), got {b.shape}")


def conv(
    x: ArrayOrTensor,
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

    Parameters
    ----------
    x : (N, C_in, *spatial) or (C_in, *spatial)
    weight : (C_out, C_in/groups, *kernel)
    bias : (C_out,) or None
    stride, dilation : int or tuple of one int per spatial dimension (>= 1)
    padding : int, per-dimension tuple, per-side pairs ``((lo, hi), ...)``, or ``'valid'``,
        ``'same'`` (``ceil(n / stride)`` outputs), ``'full'`` or ``'causal'`` (1-D).
    groups : C_in and C_out split into ``groups`` independent blocks.
    padding_mode : ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``.
    algorithm : ``'auto'`` (cost model), ``'gemm'`` or ``'fft'``.

    Returns
    -------
    (N, C_out, *out) with ``out = floor((n + lo + hi - d*(k-1) - 1) / s) + 1``
    (:func:`cnnlab.ops._args.conv_output_shape`)::

        y[n, o, p] = bias[o] + sum_{c, k} x_pad[n, g(o)*C_in/groups + c, p*s + k*d] w[o, c, k]

    >>> conv(np.ones((1, 1, 4)), np.ones((1, 1, 3))).tolist()
    [[[3.0, 3.0]]]
    """
    return _conv(x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
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
    _conv_checks(x_arr, w_arr, b_arr, groups, spatial_dims, fn)
    return x_arr, w_arr, b_arr, spatial_dims, unbatched


def _conv(x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any,
          groups: int, padding_mode: str, algorithm: str, spatial_dims: int | None, fn: str
          ) -> ArrayOrTensor:
    x_arr, w_arr, b_arr, spatial_dims, unbatched = _conv_operands(x, weight, bias, groups,
                                                                   spatial_dims, fn)
    _check_choice(padding_mode, PADDING_MODES, "padding_mode", fn)
    _check_choice(algorithm, ALGORITHMS, "algorithm", fn)
    kernel = w_arr.shape[2:]
    stride_t = to_tuple(stride, spatial_dims, "stride", fn)
    dilation_t = to_tuple(dilation, spatial_dims, "dilation", fn)
    pads = conv_padding(padding, x_arr.shape[2:], kernel, stride_t, dilation_t, fn)
    if padding_mode != "zeros":
        check_pad_fits(x_arr.shape[2:], pads, padding_mode, fn)
    out_spatial = conv_output_shape(x_arr.shape[2:], kernel, stride_t, pads, dilation_t)
    if any(o < 1 for o in out_spatial):
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(x_arr.shape[2:], pads))
        extent = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation_t))
        raise ValueError(
            f"{fn}: kernel (dilated size {extent}) is larger than the padded input "
            f"{padded}"
        )
    spec = ConvRequest(stride_t, pads, dilation_t, int(groups), padding_mode, algorithm)
    # Training: keep the forward's input grid for the weight gradient (when small).
    saved = {} if _needs(weight) and x_arr.nbytes <= KEEP_GRID_BYTES else None
    y = conv_nd(x_arr, w_arr, b_arr, spec, saved)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        gx, gw, gb = conv_nd_backward(x_arr, w_arr, g, spec, _needs(x), _needs(weight),
                                      _needs(bias), saved)
        return (gx, gw, gb) if bias is not None else (gx, gw)

    return _wrap(y, [x, weight, bias], vjp, unbatched)


def conv1d(x: ArrayOrTensor, weight: ArrayOrTensor, bias: ArrayOrTensor | None = None,
           stride: IntOrTuple = 1, padding: Any = 0, dilation: IntOrTuple = 1,
           groups: int = 1, padding_mode: str = "zeros", algorithm: str = "auto"
           ) -> ArrayOrTensor:
    """1-D convolution: x (N, C_in, L), weight (C_out, C_in/groups, k). See :func:`conv`."""
    return _conv(x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                 1, "conv1d")


def conv2d(x: ArrayOrTensor, weight: ArrayOrTensor, bias: ArrayOrTensor | None = None,
           stride: IntOrTuple = 1, padding: Any = 0, dilation: IntOrTuple = 1,
           groups: int = 1, padding_mode: str = "zeros", algorithm: str = "auto"
           ) -> ArrayOrTensor:
    """2-D convolution: x (N, C_in, H, W), weight (C_out, C_in/groups, kH, kW). See
    :func:`conv`."""
    return _conv(x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                 2, "conv2d")


def conv3d(x: ArrayOrTensor, weight: ArrayOrTensor, bias: ArrayOrTensor | None = None,
           stride: IntOrTuple = 1, padding: Any = 0, dilation: IntOrTuple = 1,
           groups: int = 1, padding_mode: str = "zeros", algorithm: str = "auto"
           ) -> ArrayOrTensor:
    """3-D convolution: x (N, C_in, D, H, W), weight (C_out, C_in/groups, kD, kH, kW)."""
    return _conv(x, weight, bias, stride, padding, dilation, groups, padding_mode, algorithm,
                 3, "conv3d")


def conv_max_pool(x: ArrayOrTensor, weight: ArrayOrTensor, bias: ArrayOrTensor | None = None,
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
    x : (N, C_in, *spatial) or (C_in, *spatial)
    weight : (C_out, C_in/groups, *kernel)
    bias : (C_out,) or None
    padding, groups : as :func:`conv`
    pool_size : int or one int per spatial dimension (>= 1)

    Returns
    -------
    (N, C_out, *(conv_out // pool_size)), ``conv_out`` the stride-1 convolution's size.

    >>> conv_max_pool(np.arange(8.0).reshape(1, 1, 8), np.ones((1, 1, 3))).tolist()
    [[[6.0, 12.0, 18.0]]]
    """
    return _conv_max_pool(x, weight, bias, padding, groups, pool_size, None,
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

    return _wrap(out, [x, weight, bias], vjp, unbatched)


# ---------------------------------------------------------------------------------------
# Transposed convolution (the adjoint of the convolution).


def _conv_transpose(x: Any, weight: Any, bias: Any, stride: Any, padding: Any,
                    output_padding: Any, groups: int, dilation: Any, spatial_dims: int,
                    algorithm: str, fn: str) -> ArrayOrTensor:
    arrays = _float_arrays(fn, ("input", "weight"), input=x, weight=weight, bias=bias)
    x_arr, w_arr, b_arr = arrays["input"], arrays["weight"], arrays.get("bias")
    x_arr, unbatched = _batched(x_arr, spatial_dims, fn)
    if w_arr.ndim != spatial_dims + 2:
        raise ValueError(f"{fn}: weight must be {spatial_dims + 2}-D "
                         f"(C_in, C_out/groups, *kernel), got shape {w_arr.shape}")
    _check_groups(groups, fn)
    if w_arr.shape[0] != x_arr.shape[1]:
        raise ValueError(f"{fn}: weight.shape[0] ({w_arr.shape[0]}) must equal "
                         f"input.shape[1] ({x_arr.shape[1]})")
    if x_arr.shape[1] % groups:
        raise ValueError(f"{fn}: input channels ({x_arr.shape[1]}) must be divisible by "
                         f"groups ({groups})")
    c_out = w_arr.shape[1] * groups
    if b_arr is not None and b_arr.shape != (c_out,):
        raise ValueError(f"{fn}: bias must have shape ({c_out},), got {b_arr.shape}")
    _check_choice(algorithm, ALGORITHMS, "algorithm", fn)
    kernel = w_arr.shape[2:]
    stride_t = to_tuple(stride, spatial_dims, "stride", fn)
    dilation_t = to_tuple(dilation, spatial_dims, "dilation", fn)
    pads = pad_pairs(padding, spatial_dims, "padding", fn)
    out_pad = to_tuple(output_padding, spatial_dims, "output_padding", fn, minimum=0)
    for axis, (op, s, d) in enumerate(zip(out_pad, stride_t, dilation_t)):
        if op >= max(s, d):
            raise ValueError(f"{fn}: output_padding ({op}) must be smaller than stride ({s}) "
                             f"or dilation ({d}) in spatial dim {axis}")
    out_spatial = conv_transpose_output_shape(x_arr.shape[2:], kernel, stride_t, pads,
                                              dilation_t, out_pad)
    if any(o < 1 for o in out_spatial):
        raise ValueError(f"{fn}: output size {out_spatial} is not positive; padding {pads} "
                         f"is too large for input {x_arr.shape[2:]}")
    spec = ConvRequest(stride_t, pads, dilation_t, int(groups), "zeros", algorithm)
    y = conv_transpose_nd(x_arr, w_arr, b_arr, spec, out_spatial)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        gx, gw, gb = conv_transpose_nd_backward(x_arr, w_arr, g, spec, _needs(x),
                                                _needs(weight), _needs(bias))
        return (gx, gw, gb) if bias is not None else (gx, gw)

    return _wrap(y, [x, weight, bias], vjp, unbatched)


def conv_transpose1d(x: ArrayOrTensor, weight: ArrayOrTensor,
                     bias: ArrayOrTensor | None = None, stride: IntOrTuple = 1,
                     padding: Any = 0, output_padding: IntOrTuple = 0, groups: int = 1,
                     dilation: IntOrTuple = 1, algorithm: str = "auto") -> ArrayOrTensor:
    """1-D transposed convolution: x (N, C_in, L), weight (C_in, C_out/groups, k).

    Output length ``(L-1)*s - 2p + d*(k-1) + output_padding + 1``
    (:func:`cnnlab.ops._args.conv_transpose_output_shape`).
    """
    return _conv_transpose(x, weight, bias, stride, padding, output_padding, groups,
                           dilation, 1, algorithm, "conv_transpose1d")


def conv_transpose2d(x: ArrayOrTensor, weight: ArrayOrTensor,
                     bias: ArrayOrTensor | None = None, stride: IntOrTuple = 1,
                     padding: Any = 0, output_padding: IntOrTuple = 0, groups: int = 1,
                     dilation: IntOrTuple = 1, algorithm: str = "auto") -> ArrayOrTensor:
    """2-D transposed convolution: x (N, C_in, H, W), weight (C_in, C_out/groups, kH, kW)."""
    return _conv_transpose(x, weight, bias, stride, padding, output_padding, groups,
                           dilation, 2, algorithm, "conv_transpose2d")


def conv_transpose3d(x: ArrayOrTensor, weight: ArrayOrTensor,
                     bias: ArrayOrTensor | None = None, stride: IntOrTuple = 1,
                     padding: Any = 0, output_padding: IntOrTuple = 0, groups: int = 1,
                     dilation: IntOrTuple = 1, algorithm: str = "auto") -> ArrayOrTensor:
    """3-D transposed convolution: x (N, C_in, D, H, W), weight (C_in, C_out/groups, *k)."""
    return _conv_transpose(x, weight, bias, stride, padding, output_padding, groups,
                           dilation, 3, algorithm, "conv_transpose3d")


# ---------------------------------------------------------------------------------------
# Padding.


def pad(x: ArrayOrTensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0
        ) -> ArrayOrTensor:
    """Pad the last ``len(pad) // 2`` axes; ``pad`` lists (left, right) from the LAST axis
    backwards, as in ``torch.nn.functional.pad``. ``mode``: ``'constant'``, ``'reflect'``,
    ``'replicate'`` or ``'circular'``. Negative values crop.

    >>> pad(np.arange(3.0), (1, 2)).tolist()
    [0.0, 0.0, 1.0, 2.0, 0.0, 0.0]
    """
    fn = "pad"
    x_arr = _data(x)
    if not isinstance(pad, Sequence) or len(pad) % 2 or len(pad) // 2 > x_arr.ndim:
        raise ValueError(f"{fn}: pad must be a sequence of (left, right) pairs for at most "
                         f"{x_arr.ndim} axes, got {pad!r}")
    if not all(isinstance(p, (int, np.integer)) for p in pad):
        raise TypeError(f"{fn}: pad values must be ints, got {pad!r}")
    _check_choice(mode, ("constant", "reflect", "replicate", "circular"), "mode", fn)
    dims = len(pad) // 2
    pairs = tuple((int(pad[2 * i]), int(pad[2 * i + 1])) for i in reversed(range(dims)))
    grow = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pairs)
    spatial = x_arr.shape[x_arr.ndim - dims:]
    crop = tuple(slice(-min(lo, 0), n - (-min(hi, 0))) for n, (lo, hi) in zip(spatial, pairs))
    if mode != "constant":
        check_pad_fits(tuple(s.stop - s.start for s in crop), grow, mode, fn)
    cropped = x_arr[(Ellipsis, *crop)]
    out = pad_forward(cropped, grow, mode, value)
    out = np.array(out, copy=True) if out is cropped else out

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        g_cropped = pad_backward(g, grow, mode if mode != "constant" else "zeros")
        full = np.zeros_like(x_arr)
        full[(Ellipsis, *crop)] = g_cropped
        return (full,)

    return _wrap(out, [x], vjp, False)


# ---------------------------------------------------------------------------------------
# Pooling
#
# Max/avg/LP pooling, adaptive pooling, max unpooling, blur pooling and unfold/fold. Each
# has ONE N-D implementation (``_max_pool``, ``_avg_pool``, ...) that the 1d/2d/3d names
# call with their spatial rank; the kernels live in ``ops/pool.py`` and ``ops/windows.py``.


def _unary_op(out: np.ndarray, x: Any, unbatched: bool,
              backward: Callable[[np.ndarray], np.ndarray]) -> ArrayOrTensor:
    """Bind a one-input kernel's output to its VJP ``backward`` (batched grad -> grad)."""
    return _wrap(out, [x], lambda g: (backward(g),), unbatched)


def _like_input(x: Any, indices: np.ndarray) -> np.ndarray | Tensor:
    """Indices come back as the input's kind: an int64 array, or a Tensor for a Tensor."""
    return Tensor(indices) if isinstance(x, Tensor) else indices


def _pool_spec(in_spatial: tuple[int, ...], kernel_size: Any, stride: Any, padding: Any,
               dilation: Any, ceil_mode: bool, fn: str) -> PoolRequest:
    """Normalise pooling arguments; PyTorch's rules: stride defaults to kernel_size and
    padding may be at most half the (undilated) kernel."""
    spatial_dims = len(in_spatial)
    kernel = to_tuple(kernel_size, spatial_dims, "kernel_size", fn)
    stride_t = kernel if stride is None else to_tuple(stride, spatial_dims, "stride", fn)
    padding_t = to_tuple(padding, spatial_dims, "padding", fn, minimum=0)
    dilation_t = to_tuple(dilation, spatial_dims, "dilation", fn)
    half = tuple(k // 2 for k in kernel)
    if any(p > h for p, h in zip(padding_t, half, strict=True)):
        raise ValueError(
            f"{fn}: padding {padding_t} must be <= kernel_size // 2 {half} in every "
            f"dimension, got kernel_size {kernel}"
        )
    out_spatial = pool_output_shape(in_spatial, kernel, stride_t, padding_t, dilation_t,
                                    bool(ceil_mode))
    if any(o < 1 for o in out_spatial):
        raise ValueError(
            f"{fn}: output size {out_spatial} must be >= 1 in every dimension; input "
            f"{tuple(in_spatial)} is too small for kernel_size {kernel}, stride {stride_t}, "
            f"padding {padding_t}, dilation {dilation_t}"
        )
    return PoolRequest(kernel, stride_t, padding_t, dilation_t, out_spatial)


def _max_pool(x: Any, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              ceil_mode: bool, return_indices: bool, spatial_dims: int, fn: str) -> Any:
    x_arr, unbatched = _batched(_float_arrays(fn, input=x)["input"], spatial_dims, fn)
    in_spatial = x_arr.shape[2:]
    spec = _pool_spec(in_spatial, kernel_size, stride, padding, dilation, ceil_mode, fn)
    if not return_indices:
        out, arg, finite = max_pool_taps(x_arr, spec)
        return _unary_op(out, x, unbatched, lambda g: max_pool_taps_backward(
            g, out, arg, in_spatial, spec, out_finite=finite))
    out, indices = max_pool_nd(x_arr, spec)
    y = _unary_op(out, x, unbatched, lambda g: max_pool_nd_backward(g, indices, in_spatial))
    return y, _like_input(x, indices[0] if unbatched else indices)


def max_pool1d(x: ArrayOrTensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """1-D max pooling: x (N, C, L) or (C, L). See :func:`max_pool2d`."""
    return _max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 1,
                     "max_pool1d")


def max_pool2d(x: ArrayOrTensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """Max pooling over ``(kernel_size)`` windows, as ``torch.nn.functional.max_pool2d``.

    Parameters
    ----------
    x : (N, C, H, W) or (C, H, W)
    kernel_size, stride, dilation : int or tuple of 2 ints (>= 1); stride defaults to
        kernel_size.
    padding : int or tuple of 2 ints, implicit -inf on both sides, at most kernel_size // 2.
    ceil_mode : round the output size up; a window may overhang the right edge, but must
        start inside the input or the left padding.
    return_indices : also return, for each output, the int64 flat index into (H, W) of the
        maximum (ties: first; a window holding NaN gives NaN and its last NaN).

    Returns
    -------
    (N, C, H_out, W_out) with ``out = floor((n + 2p - d*(k-1) - 1) / s) + 1`` (or ceil,
    :func:`cnnlab.ops._args.pool_output_shape`); with ``return_indices``, ``(out, indices)``.

    >>> max_pool2d(np.array([[[1.0, 2.0], [4.0, 3.0]]]), 2, return_indices=True)[1].tolist()
    [[[2]]]
    """
    return _max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 2,
                     "max_pool2d")


def max_pool3d(x: ArrayOrTensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, dilation: IntOrTuple = 1, ceil_mode: bool = False,
               return_indices: bool = False) -> Any:
    """3-D max pooling: x (N, C, D, H, W) or (C, D, H, W). See :func:`max_pool2d`."""
    return _max_pool(x, kernel_size, stride, padding, dilation, ceil_mode, return_indices, 3,
                     "max_pool3d")


def _avg_pool(x: Any, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
              count_include_pad: bool, divisor_override: int | None, spatial_dims: int,
              fn: str) -> ArrayOrTensor:
    x_arr, unbatched = _batched(_float_arrays(fn, input=x)["input"], spatial_dims, fn)
    in_spatial = x_arr.shape[2:]
    spec = _pool_spec(in_spatial, kernel_size, stride, padding, 1, ceil_mode, fn)
    if divisor_override is not None:
        if not isinstance(divisor_override, (int, np.integer)) or isinstance(divisor_override,
                                                                             bool):
            raise TypeError(f"{fn}: divisor_override must be an int or None, "
                            f"got {type(divisor_override).__name__} {divisor_override!r}")
        if divisor_override == 0:
            raise ValueError(f"{fn}: divisor_override must be non-zero, got 0")
        divisor_override = int(divisor_override)
    include = bool(count_include_pad)
    out = avg_pool_nd(x_arr, spec, include, divisor_override)
    return _unary_op(out, x, unbatched, lambda g: avg_pool_nd_backward(
        g, in_spatial, spec, include, divisor_override))


def avg_pool1d(x: ArrayOrTensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None
               ) -> ArrayOrTensor:
    """1-D average pooling: x (N, C, L) or (C, L). See :func:`avg_pool2d`.

    ``torch.nn.functional.avg_pool1d`` has no ``divisor_override``; it is accepted here so
    that the three ranks share one signature.
    """
    return _avg_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, 1, "avg_pool1d")


def avg_pool2d(x: ArrayOrTensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None
               ) -> ArrayOrTensor:
    """Average pooling, as ``torch.nn.functional.avg_pool2d``.

    Parameters
    ----------
    x : (N, C, H, W) or (C, H, W)
    kernel_size, stride : int or tuple of 2 ints (>= 1); stride defaults to kernel_size.
    padding : int or tuple of 2 ints, implicit zeros on both sides, at most kernel_size // 2.
    ceil_mode : round the output size up (see :func:`max_pool2d`).
    count_include_pad : divide by the window's size including zero padding (but never the
        ceil-mode overhang past the padding); otherwise by its number of input samples.
    divisor_override : a non-zero int used as every window's divisor instead.

    Returns
    -------
    (N, C, H_out, W_out), sizes from :func:`cnnlab.ops._args.pool_output_shape`.

    >>> avg_pool2d(np.arange(16.0).reshape(1, 4, 4), 2).tolist()
    [[[2.5, 4.5], [10.5, 12.5]]]
    """
    return _avg_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
                     divisor_override, 2, "avg_pool2d")


def avg_pool3d(x: ArrayOrTensor, kernel_size: IntOrTuple, stride: IntOrTuple | None = None,
               padding: IntOrTuple = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None
               ) -> ArrayOrTensor:
    """3-D average pooling: x (N, C, D, H, W) or (C, D, H, W). See :func:`avg_pool2d`."""
    return _avg_pool(x, kernel_size, stride, padding, ceil_mode, count_include_pad,
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
    spec = _pool_spec(x_arr.shape[2:], kernel_size, stride, 0, 1, ceil_mode, fn)
    out = lp_pool_nd(x_arr, norm, spec)
    return _unary_op(out, x, unbatched, lambda g: lp_pool_nd_backward(g, x_arr, norm, spec))


def lp_pool1d(x: ArrayOrTensor, norm_type: float, kernel_size: IntOrTuple,
              stride: IntOrTuple | None = None, ceil_mode: bool = False) -> ArrayOrTensor:
    """1-D power-average pooling: x (N, C, L) or (C, L). See :func:`lp_pool2d`."""
    return _lp_pool(x, norm_type, kernel_size, stride, ceil_mode, 1, "lp_pool1d")


def lp_pool2d(x: ArrayOrTensor, norm_type: float, kernel_size: IntOrTuple,
              stride: IntOrTuple | None = None, ceil_mode: bool = False) -> ArrayOrTensor:
    """Power-average pooling ``(sum_window x**p) ** (1/p)``, as ``torch``'s ``lp_pool2d``.

    Computed as PyTorch does, ``(avg_pool(x**p) * prod(kernel_size)) ** (1/p)``, so a
    ceil-mode window that overhangs the input is rescaled the same way, a negative sum
    gives NaN for fractional ``1/p``, and the gradient is zero where the sum is zero.
    ``norm_type`` = inf is max pooling of ``|x|``. No padding.

    Parameters
    ----------
    x : (N, C, H, W) or (C, H, W)
    norm_type : p, a non-zero number (or +-inf).
    kernel_size, stride : int or tuple of 2 ints; stride defaults to kernel_size.

    Returns
    -------
    (N, C, H_out, W_out), sizes from :func:`cnnlab.ops._args.pool_output_shape`.

    >>> lp_pool2d(np.full((1, 2, 2), 3.0), 2, 2).tolist()
    [[[6.0]]]
    """
    return _lp_pool(x, norm_type, kernel_size, stride, ceil_mode, 2, "lp_pool2d")


def lp_pool3d(x: ArrayOrTensor, norm_type: float, kernel_size: IntOrTuple,
              stride: IntOrTuple | None = None, ceil_mode: bool = False) -> ArrayOrTensor:
    """3-D power-average pooling: x (N, C, D, H, W) or (C, D, H, W). See :func:`lp_pool2d`."""
    return _lp_pool(x, norm_type, kernel_size, stride, ceil_mode, 3, "lp_pool3d")


def _adaptive_output_size(output_size: Any, in_spatial: tuple[int, ...], fn: str
                          ) -> tuple[int, ...]:
    """int or tuple, where ``None`` keeps that input size -> positive ints."""
    ndim = len(in_spatial)
    if output_size is None:
        output_size = in_spatial
    elif (isinstance(output_size, Sequence) and not isinstance(output_size, str)
          and len(output_size) == ndim):
        pairs = zip(in_spatial, output_size, strict=True)
        output_size = tuple(n if o is None else o for n, o in pairs)
    return to_tuple(output_size, ndim, "output_size", fn)


def _adaptive_pool(x: Any, output_size: Any, is_max: bool, return_indices: bool,
                   spatial_dims: int, fn: str) -> Any:
    x_arr, unbatched = _batched(_float_arrays(fn, input=x)["input"], spatial_dims, fn)
    in_spatial = x_arr.shape[2:]
    out_spatial = _adaptive_output_size(output_size, in_spatial, fn)
    if not is_max:
        out = adaptive_avg_pool_nd(x_arr, out_spatial)
        return _unary_op(out, x, unbatched,
                         lambda g: adaptive_avg_pool_nd_backward(g, in_spatial))
    out, indices = adaptive_max_pool_nd(x_arr, out_spatial)
    y = _unary_op(out, x, unbatched, lambda g: max_pool_nd_backward(g, indices, in_spatial))
    if not return_indices:
        return y
    return y, _like_input(x, indices[0] if unbatched else indices)


def adaptive_avg_pool1d(x: ArrayOrTensor, output_size: IntOrTuple) -> ArrayOrTensor:
    """1-D adaptive average pooling: x (N, C, L) or (C, L). See :func:`adaptive_avg_pool2d`."""
    return _adaptive_pool(x, output_size, False, False, 1, "adaptive_avg_pool1d")


def adaptive_avg_pool2d(x: ArrayOrTensor, output_size: Any) -> ArrayOrTensor:
    """Average over adaptive windows so the output has ``output_size``, as PyTorch.

    Output ``i`` of ``n`` inputs averages ``[floor(i*n/out), ceil((i+1)*n/out))`` per axis.

    Parameters
    ----------
    x : (N, C, H, W) or (C, H, W)
    output_size : int or (H_out, W_out), ``None`` entries keep the input size.

    Returns
    -------
    (N, C, H_out, W_out)

    >>> adaptive_avg_pool2d(np.arange(6.0).reshape(1, 2, 3), (1, 2)).tolist()
    [[[2.0, 3.0]]]
    """
    return _adaptive_pool(x, output_size, False, False, 2, "adaptive_avg_pool2d")


def adaptive_avg_pool3d(x: ArrayOrTensor, output_size: Any) -> ArrayOrTensor:
    """3-D adaptive average pooling: x (N, C, D, H, W) or (C, D, H, W)."""
    return _adaptive_pool(x, output_size, False, False, 3, "adaptive_avg_pool3d")


def adaptive_max_pool1d(x: ArrayOrTensor, output_size: IntOrTuple,
                        return_indices: bool = False) -> Any:
    """1-D adaptive max pooling: x (N, C, L) or (C, L). See :func:`adaptive_max_pool2d`."""
    return _adaptive_pool(x, output_size, True, return_indices, 1, "adaptive_max_pool1d")


def adaptive_max_pool2d(x: ArrayOrTensor, output_size: Any, return_indices: bool = False
                        ) -> Any:
    """Max over the adaptive windows of :func:`adaptive_avg_pool2d`, as PyTorch.

    Parameters
    ----------
    x : (N, C, H, W) or (C, H, W)
    output_size : int or (H_out, W_out), ``None`` entries keep the input size.
    return_indices : also return the int64 flat index into (H, W) of each maximum.

    Returns
    -------
    (N, C, H_out, W_out), or ``(out, indices)``.

    >>> adaptive_max_pool2d(np.arange(6.0).reshape(1, 2, 3), 1).tolist()
    [[[5.0]]]
    """
    return _adaptive_pool(x, output_size, True, return_indices, 2, "adaptive_max_pool2d")


def adaptive_max_pool3d(x: ArrayOrTensor, output_size: Any, return_indices: bool = False
                        ) -> Any:
    """3-D adaptive max pooling: x (N, C, D, H, W) or (C, D, H, W)."""
    return _adaptive_pool(x, output_size, True, return_indices, 3, "adaptive_max_pool3d")


def _unpool_output_size(in_spatial: tuple[int, ...], kernel: tuple[int, ...],
                        stride: tuple[int, ...], padding: tuple[int, ...], output_size: Any,
                        fn: str) -> tuple[int, ...]:
    """Default ``(n - 1)*s - 2p + k``; a given size must lie strictly within one stride of
    it (``torch.nn.functional._unpool_output_size``)."""
    ndim = len(in_spatial)
    default = tuple((n - 1) * s - 2 * p + k
                    for n, k, s, p in zip(in_spatial, kernel, stride, padding, strict=True))
    if output_size is None:
        sizes = default
    else:
        if (isinstance(output_size, Sequence) and not isinstance(output_size, str)
                and len(output_size) == ndim + 2):
            output_size = tuple(output_size)[2:]
        sizes = to_tuple(output_size, ndim, "output_size", fn)
        for axis, (size, base, s) in enumerate(zip(sizes, default, stride, strict=True)):
            if not base - s < size < base + s:
                raise ValueError(
                    f"{fn}: output_size[{axis}] must be strictly between {base - s} and "
                    f"{base + s} (default {base} +- stride {s}), got {size}"
                )
    if any(o < 1 for o in sizes):
        raise ValueError(f"{fn}: output size {sizes} must be >= 1 in every dimension")
    return sizes


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
    stride_t = kernel if stride is None else to_tuple(stride, spatial_dims, "stride", fn)
    padding_t = to_tuple(padding, spatial_dims, "padding", fn, minimum=0)
    out_spatial = _unpool_output_size(x_arr.shape[2:], kernel, stride_t, padding_t,
                                      output_size, fn)
    size = prod(out_spatial)
    if index_arr.size and (index_arr.min() < 0 or index_arr.max() >= size):
        raise ValueError(
            f"{fn}: indices must lie in [0, {size}) for output size {out_spatial}, got "
            f"values in [{index_arr.min()}, {index_arr.max()}]"
        )
    out = max_unpool_nd(x_arr, index_arr, out_spatial)
    return _unary_op(out, x, unbatched, lambda g: max_unpool_nd_backward(g, index_arr))


def max_unpool1d(x: ArrayOrTensor, indices: Any, kernel_size: IntOrTuple,
                 stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                 output_size: Sequence[int] | None = None) -> ArrayOrTensor:
    """1-D max unpooling: x, indices (N, C, L) or (C, L). See :func:`max_unpool2d`."""
    return _max_unpool(x, indices, kernel_size, stride, padding, output_size, 1,
                       "max_unpool1d")


def max_unpool2d(x: ArrayOrTensor, indices: Any, kernel_size: IntOrTuple,
                 stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                 output_size: Sequence[int] | None = None) -> ArrayOrTensor:
    """Partial inverse of :func:`max_pool2d`: each value goes to its index, zeros elsewhere.

    Parameters
    ----------
    x : (N, C, H, W) or (C, H, W)
    indices : int array of x's shape, flat indices into (H_out, W_out) (from
        ``max_pool2d(..., return_indices=True)``).
    kernel_size, stride, padding : those of the max pooling; stride defaults to kernel_size.
    output_size : (H_out, W_out) or (N, C, H_out, W_out); default ``(n - 1)*s - 2p + k``.

    Returns
    -------
    (N, C, H_out, W_out)

    >>> max_unpool2d(np.array([[[5.0]]]), np.array([[[2]]]), 2).tolist()
    [[[0.0, 0.0], [5.0, 0.0]]]
    """
    return _max_unpool(x, indices, kernel_size, stride, padding, output_size, 2,
                       "max_unpool2d")


def max_unpool3d(x: ArrayOrTensor, indices: Any, kernel_size: IntOrTuple,
                 stride: IntOrTuple | None = None, padding: IntOrTuple = 0,
                 output_size: Sequence[int] | None = None) -> ArrayOrTensor:
    """3-D max unpooling: x, indices (N, C, D, H, W) or (C, D, H, W)."""
    return _max_unpool(x, indices, kernel_size, stride, padding, output_size, 3,
                       "max_unpool3d")


def _blur_pool(x: Any, kernel_size: Any, stride: Any, padding_mode: str, spatial_dims: int,
               fn: str) -> ArrayOrTensor:
    x_arr, _ = _batched(_float_arrays(fn, input=x)["input"], spatial_dims, fn)
    kernel = to_tuple(kernel_size, spatial_dims, "kernel_size", fn)
    stride_t = to_tuple(stride, spatial_dims, "stride", fn)
    _check_choice(padding_mode, PADDING_MODES, "padding_mode", fn)
    channels = x_arr.shape[1]
    # One binomial filter per channel: a depthwise convolution (groups = C).
    weight = np.repeat(binomial_filter(kernel, x_arr.dtype)[None, None], channels, axis=0)
    # k - 1 samples of padding, the extra one on the high side (Zhang's BlurPool), so the
    # blurred signal keeps its size and the stride alone sets the output: ceil(n / s).
    pads = tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel)
    source = x if isinstance(x, Tensor) else _data(x).astype(x_arr.dtype, copy=False)
    return _conv(source, weight, None, stride_t, pads, 1, channels, padding_mode, "auto",
                 spatial_dims, fn)


def blur_pool1d(x: ArrayOrTensor, kernel_size: IntOrTuple = 3, stride: IntOrTuple = 2,
                padding_mode: str = "reflect") -> ArrayOrTensor:
    """1-D anti-aliased downsampling: x (N, C, L) or (C, L). See :func:`blur_pool2d`."""
    return _blur_pool(x, kernel_size, stride, padding_mode, 1, "blur_pool1d")


def blur_pool2d(x: ArrayOrTensor, kernel_size: IntOrTuple = 3, stride: IntOrTuple = 2,
                padding_mode: str = "reflect") -> ArrayOrTensor:
    """Anti-aliased downsampling (BlurPool; Zhang 2019, "Making Convolutional Networks
    Shift-Invariant Again"): low-pass filter each channel, then subsample.

    The filter is the normalised binomial kernel (a row of Pascal's triangle, e.g.
    ``[1, 2, 1] / 4`` for size 3; outer product across axes), applied as a depthwise
    :func:`conv` after ``k - 1`` samples of ``padding_mode`` padding.

    Parameters
    ----------
    x : (N, C, H, W) or (C, H, W)
    kernel_size : int or tuple of 2 ints (>= 1); 1 is plain subsampling.
    stride : int or tuple of 2 ints (>= 1).
    padding_mode : ``'reflect'`` (default), ``'replicate'``, ``'circular'`` or ``'zeros'``.

    Returns
    -------
    (N, C, ceil(H / s_H), ceil(W / s_W))

    >>> (blur_pool1d(np.array([[0.0, 0.0, 4.0, 0.0, 0.0]]), 3, 1).round(12) + 0.0).tolist()
    [[0.0, 1.0, 2.0, 1.0, 0.0]]
    """
    return _blur_pool(x, kernel_size, stride, padding_mode, 2, "blur_pool2d")


def blur_pool3d(x: ArrayOrTensor, kernel_size: IntOrTuple = 3, stride: IntOrTuple = 2,
                padding_mode: str = "reflect") -> ArrayOrTensor:
    """3-D anti-aliased downsampling: x (N, C, D, H, W) or (C, D, H, W)."""
    return _blur_pool(x, kernel_size, stride, padding_mode, 3, "blur_pool3d")


def _window_rank(*sizes: Any) -> int:
    """Spatial rank of unfold/fold: the first argument given as a tuple, else 2 (torch)."""
    for size in sizes:
        if isinstance(size, Sequence) and not isinstance(size, str) and len(size) > 0:
            return len(size)
    return 2


def _window_args(kernel_size: Any, dilation: Any, padding: Any, stride: Any,
                 spatial_dims: int, fn: str) -> tuple[tuple[int, ...], ...]:
    kernel = to_tuple(kernel_size, spatial_dims, "kernel_size", fn)
    dilation_t = to_tuple(dilation, spatial_dims, "dilation", fn)
    padding_t = to_tuple(padding, spatial_dims, "padding", fn, minimum=0)
    stride_t = to_tuple(stride, spatial_dims, "stride", fn)
    return kernel, dilation_t, padding_t, stride_t


def _block_grid(in_spatial: tuple[int, ...], kernel: tuple[int, ...],
                dilation: tuple[int, ...], padding: tuple[int, ...],
                stride: tuple[int, ...], fn: str) -> tuple[int, ...]:
    """Number of sliding blocks per axis (the convolution output size), each >= 1."""
    blocks = conv_output_shape(in_spatial, kernel, stride, tuple((p, p) for p in padding),
                               dilation)
    if any(b < 1 for b in blocks):
        raise ValueError(
            f"{fn}: no sliding block fits: spatial size {tuple(in_spatial)} with padding "
            f"{padding} is smaller than the dilated kernel "
            f"{tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation, strict=True))}"
        )
    return blocks


def unfold(x: ArrayOrTensor, kernel_size: IntOrTuple, dilation: IntOrTuple = 1,
           padding: IntOrTuple = 0, stride: IntOrTuple = 1) -> ArrayOrTensor:
    """Extract sliding blocks (im2col), as ``torch.nn.functional.unfold``.

    ``kernel_size`` as an int means 2-D (PyTorch); as a tuple of n ints, n-D.

    Parameters
    ----------
    x : (N, C, *spatial) or (C, *spatial)
    kernel_size, dilation, stride : int or tuple (>= 1).
    padding : int or tuple, zeros on both sides.

    Returns
    -------
    (N, C*prod(kernel_size), L), ``L = prod(blocks)`` with ``blocks`` the convolution output
    size (:func:`cnnlab.ops._args.conv_output_shape`); row ``c*prod(k) + flat(k)``.
    :func:`fold` is its adjoint.

    >>> unfold(np.arange(4.0).reshape(1, 1, 4), (2,), stride=(2,)).tolist()
    [[[0.0, 2.0], [1.0, 3.0]]]
    """
    fn = "unfold"
    spatial_dims = _window_rank(kernel_size)
    x_arr, unbatched = _batched(_float_arrays(fn, input=x)["input"], spatial_dims, fn)
    kernel, dilation_t, padding_t, stride_t = _window_args(kernel_size, dilation, padding,
                                                           stride, spatial_dims, fn)
    in_spatial = x_arr.shape[2:]
    blocks = _block_grid(in_spatial, kernel, dilation_t, padding_t, stride_t, fn)
    out = unfold_nd(x_arr, kernel, dilation_t, padding_t, stride_t, blocks)
    return _unary_op(out, x, unbatched, lambda g: fold_nd(
        g, in_spatial, kernel, dilation_t, padding_t, stride_t, blocks))


def fold(x: ArrayOrTensor, output_size: IntOrTuple, kernel_size: IntOrTuple,
         dilation: IntOrTuple = 1, padding: IntOrTuple = 0, stride: IntOrTuple = 1
         ) -> ArrayOrTensor:
    """Sum sliding blocks back into an array (col2im), the adjoint of :func:`unfold`.

    Parameters
    ----------
    x : (N, C*prod(kernel_size), L) or (C*prod(kernel_size), L)
    output_size : spatial size of the result; an int means 2-D unless kernel_size is a tuple.
    kernel_size, dilation, padding, stride : as :func:`unfold`; L must equal the number of
        blocks that fit in ``output_size``.

    Returns
    -------
    (N, C, *output_size); ``fold(unfold(x))`` is ``x`` times the number of blocks covering
    each position.

    >>> fold(np.ones((1, 2, 3)), (4,), (2,)).tolist()
    [[[1.0, 2.0, 2.0, 1.0]]]
    """
    fn = "fold"
    spatial_dims = _window_rank(output_size, kernel_size)
    x_arr = _float_arrays(fn, input=x)["input"]
    if x_arr.ndim not in (2, 3):
        raise ValueError(f"{fn}: input must be 2-D (C*prod(kernel_size), L) or 3-D "
                         f"(N, C*prod(kernel_size), L), got shape {x_arr.shape}")
    unbatched = x_arr.ndim == 2
    x_arr = x_arr[None] if unbatched else x_arr
    kernel, dilation_t, padding_t, stride_t = _window_args(kernel_size, dilation, padding,
                                                           stride, spatial_dims, fn)
    out_spatial = to_tuple(output_size, spatial_dims, "output_size", fn)
    kernel_numel = prod(kernel)
    if x_arr.shape[1] % kernel_numel:
        raise ValueError(f"{fn}: input.shape[-2] ({x_arr.shape[1]}) must be divisible by "
                         f"prod(kernel_size) ({kernel_numel})")
    blocks = _block_grid(out_spatial, kernel, dilation_t, padding_t, stride_t, fn)
    if x_arr.shape[2] != prod(blocks):
        raise ValueError(f"{fn}: input.shape[-1] ({x_arr.shape[2]}) must equal the number "
                         f"of sliding blocks {prod(blocks)} (grid {blocks})")
    out = fold_nd(x_arr, out_spatial, kernel, dilation_t, padding_t, stride_t, blocks)
    return _unary_op(out, x, unbatched, lambda g: unfold_nd(
        g, kernel, dilation_t, padding_t, stride_t, blocks))


# ---------------------------------------------------------------------------------------
# Activations, losses, normalisation, dropout
#
# Each forward runs in the input's dtype (float32 stays float32: constants are Python floats,
# which NumPy treats as "weak", so no float64 temporaries) and its VJP closure sits just
# below it. Losses and normalisations each have one fused VJP (``softmax - onehot`` for
# cross-entropy, the closed-form batch-norm gradient) instead of a graph of primitives:
# they run in every training step.

REDUCTIONS = ("mean", "sum", "none")
_SQRT_2_OVER_PI = (2.0 / np.pi) ** 0.5
_INV_SQRT_2PI = (2.0 * np.pi) ** -0.5
_GELU_TANH_COEF = 0.044715  # Hendrycks & Gimpel (2016), eq. for the tanh approximation


def _float_input(x: Any, fn: str, name: str = "input") -> np.ndarray:
    """One array's data as float32/float64 (ints become float64, as in ``_float_arrays``)."""
    array = x.data if isinstance(x, Tensor) else np.asarray(x)
    if array.dtype == np.float32 or array.dtype == np.float64:
        return array
    if array.dtype.kind in "iub":
        return array.astype(np.float64)
    raise TypeError(f"{fn}: {name} must be float32 or float64, got dtype {array.dtype}")


def _axis(dim: Any, ndim: int, fn: str) -> int:
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{fn}: dim must be an int, got {type(dim).__name__} {dim!r}")
    if ndim == 0 or not -ndim <= dim < ndim:
        raise ValueError(f"{fn}: dim must be in [{-ndim}, {ndim}) for a {ndim}-D input, "
                         f"got {dim}")
    return int(dim) % ndim


def relu(x: ArrayOrTensor) -> ArrayOrTensor:
    """``max(x, 0)`` elementwise; the gradient at 0 is 0, as in PyTorch.

    >>> relu(np.array([-1.0, 0.0, 2.0])).tolist()
    [0.0, 0.0, 2.0]
    """
    x_arr = _float_input(x, "relu")
    return _wrap(np.maximum(x_arr, 0), [x], lambda g: (_pass_where_positive(g, x_arr),),
                 False)


def _pass_where_positive(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """0 where ``x <= 0``, else ``g`` (PyTorch's threshold_backward, so a NaN ``x`` passes
    its gradient): a product with the mask, ten times faster than np.where, unless ``g``
    holds NaN/inf (0 * NaN is NaN)."""
    passes = np.less_equal(x, 0)
    np.logical_not(passes, out=passes)
    if all_finite(g):
        return g * passes
    return np.where(passes, g, np.zeros((), g.dtype))


def leaky_relu(x: ArrayOrTensor, negative_slope: float = 0.01) -> ArrayOrTensor:
    """``x if x > 0 else negative_slope * x`` (Maas et al. 2013); slope at 0 as for x < 0."""
    x_arr = _float_input(x, "leaky_relu")
    # Masks by arithmetic, not np.where: a data-dependent select is several times slower.
    slope = np.multiply(x_arr > 0, 1.0 - negative_slope, dtype=x_arr.dtype)
    slope += negative_slope
    return _wrap(x_arr * slope, [x], lambda g: (g * slope,), False)


def gelu(x: ArrayOrTensor, approximate: str = "none") -> ArrayOrTensor:
    """Gaussian error linear unit ``x * Phi(x)`` (Hendrycks & Gimpel 2016).

    ``approximate='tanh'`` uses ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.
    """
    fn = "gelu"
    _check_choice(approximate, ("none", "tanh"), "approximate", fn)
    x_arr = _float_input(x, fn)
    if approximate == "none":
        cdf = special.ndtr(x_arr)
        out = x_arr * cdf

        def vjp(g: np.ndarray) -> tuple[np.ndarray]:
            pdf = np.exp(-0.5 * x_arr * x_arr) * _INV_SQRT_2PI
            return (g * (cdf + x_arr * pdf),)
    else:
        cube = _GELU_TANH_COEF * x_arr * x_arr * x_arr
        t = np.tanh(_SQRT_2_OVER_PI * (x_arr + cube))
        out = 0.5 * x_arr * (1 + t)

        def vjp(g: np.ndarray) -> tuple[np.ndarray]:
            d_inner = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_COEF * x_arr * x_arr)
            return (g * (0.5 * (1 + t) + 0.5 * x_arr * (1 - t * t) * d_inner),)

    return _wrap(out, [x], vjp, False)


def _sigmoid_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sigmoid(x), exp(-|x|))`` without overflow and with full relative precision:
    ``sigmoid(x) = r`` for ``x >= 0`` and ``e * r`` for ``x < 0``, ``r = 1 / (1 + e)``.
    The two cases are blended arithmetically (a select is slower on random signs)."""
    e = np.exp(-np.abs(x))
    blend = 1 - e
    blend *= x >= 0
    blend += e  # 1 where x >= 0, else e
    blend /= 1 + e
    return blend, e


def sigmoid(x: ArrayOrTensor) -> ArrayOrTensor:
    """Logistic ``1 / (1 + exp(-x))``, overflow-free; the VJP is ``g * y * (1 - y)``.

    >>> sigmoid(np.array([0.0])).tolist()
    [0.5]
    """
    out = _sigmoid_parts(_float_input(x, "sigmoid"))[0]
    return _wrap(out, [x], lambda g: (g * out * (1 - out),), False)


def tanh(x: ArrayOrTensor) -> ArrayOrTensor:
    """Hyperbolic tangent; the VJP reuses the output: ``g * (1 - y^2)``."""
    out = np.tanh(_float_input(x, "tanh"))
    return _wrap(out, [x], lambda g: (g * (1 - out * out),), False)


def softmax(x: ArrayOrTensor, dim: int) -> ArrayOrTensor:
    """``exp(x) / sum(exp(x))`` along ``dim`` (shifted by the maximum, so no overflow).

    ``dim`` is required: PyTorch's implicit choice is deprecated.

    >>> softmax(np.array([0.0, 0.0]), dim=0).tolist()
    [0.5, 0.5]
    """
    x_arr = _float_input(x, "softmax")
    axis = _axis(dim, x_arr.ndim, "softmax")
    out = np.exp(x_arr - x_arr.max(axis=axis, keepdims=True))
    out /= out.sum(axis=axis, keepdims=True)

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        # J^T g = y * (g - <g, y>) for the Jacobian diag(y) - y y^T.
        grad = g * out
        grad -= out * grad.sum(axis=axis, keepdims=True)
        return (grad,)

    return _wrap(out, [x], vjp, False)


def log_softmax(x: ArrayOrTensor, dim: int) -> ArrayOrTensor:
    """``x - logsumexp(x)`` along ``dim``, computed from the max-shifted input."""
    x_arr = _float_input(x, "log_softmax")
    axis = _axis(dim, x_arr.ndim, "log_softmax")
    out = x_arr - x_arr.max(axis=axis, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=axis, keepdims=True))

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        return (g - np.exp(out) * g.sum(axis=axis, keepdims=True),)

    return _wrap(out, [x], vjp, False)


# -- classification losses ---------------------------------------------------------------


def _class_target(target: Any, scores: np.ndarray, ignore_index: int, fn: str
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, bool]:
    """Validate class indices against scores (N, C, *d) or (C,).

    Returns ``(scores (N, C, *d), safe_target (N, *d), valid mask or None, unbatched)``:
    ignored entries of ``safe_target`` are replaced by class 0 and masked by ``valid``.
    """
    target_arr = target.data if isinstance(target, Tensor) else np.asarray(target)
    if target_arr.dtype.kind not in "iu":
        raise TypeError(f"{fn}: target must hold integer class indices, got dtype "
                        f"{target_arr.dtype}")
    unbatched = scores.ndim == 1
    if unbatched:
        scores, target_arr = scores[None], target_arr[None]
    if scores.ndim < 2:
        raise ValueError(f"{fn}: input must be (C,), (N, C) or (N, C, d1, ...), got shape "
                         f"{scores.shape}")
    expected = (scores.shape[0], *scores.shape[2:])
    if target_arr.shape != expected:
        raise ValueError(f"{fn}: target shape {target_arr.shape[unbatched:]} must be "
                         f"{expected[unbatched:]} for input shape {scores.shape[unbatched:]}")
    ignored = target_arr == ignore_index
    valid = None
    if ignored.any():
        valid = ~ignored
        target_arr = np.where(valid, target_arr, 0)
    if target_arr.size and (target_arr.min() < 0 or target_arr.max() >= scores.shape[1]):
        bad = target_arr[(target_arr < 0) | (target_arr >= scores.shape[1])][0]
        raise ValueError(f"{fn}: target values must be in [0, {scores.shape[1]}) or "
                         f"ignore_index ({ignore_index}), got {bad}")
    return scores, target_arr, valid, unbatched


def _at_target(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``scores[n, target[n, *d], *d]``: (N, C, *d), (N, *d) -> (N, *d)."""
    if scores.ndim == 2:
        return scores[np.arange(scores.shape[0]), target]
    return np.take_along_axis(scores, target[:, None], axis=1)[:, 0]


def _add_at_target(scores: np.ndarray, target: np.ndarray, values: Any) -> None:
    """``scores[n, target[n, *d], *d] += values`` in place (one class per position)."""
    if scores.ndim == 2:
        scores[np.arange(scores.shape[0]), target] += values
        return
    values = np.broadcast_to(values, target.shape)
    index = target[:, None]
    picked = np.take_along_axis(scores, index, axis=1)
    np.put_along_axis(scores, index, picked + np.expand_dims(values, 1), axis=1)


def _constant(value: Any, dtype: np.dtype, name: str, fn: str) -> np.ndarray | None:
    """A constant operand (class or element weights; no gradient) in the input's dtype."""
    if value is None:
        return None
    return _float_input(value, fn, name).astype(dtype, copy=False)


def _class_weight(weight: Any, scores: np.ndarray, fn: str) -> np.ndarray | None:
    if weight is None:
        return None
    w = _constant(weight, scores.dtype, "weight", fn)
    if w.shape != (scores.shape[1],):
        raise ValueError(f"{fn}: weight must have shape ({scores.shape[1]},) (one per "
                         f"class), got {w.shape}")
    return w


def _reduce(loss: np.ndarray, reduction: str, denominator: float) -> np.ndarray:
    if reduction == "none":
        return loss
    total = loss.sum()
    return np.asarray(total / denominator if reduction == "mean" else total)


def _reduction_scale(g: np.ndarray, unbatched: bool, reduction: str, denominator: float
                     ) -> np.ndarray:
    """Upstream gradient of each element's loss: (N, *d) for 'none', else a scalar."""
    if reduction == "none":
        return g[None] if unbatched else g
    return g / denominator if reduction == "mean" else g


def _batch_out(out: np.ndarray, unbatched: bool, reduction: str) -> np.ndarray:
    return out[0] if unbatched and reduction == "none" else out


def cross_entropy(
    input: ArrayOrTensor,
    target: Any,
    weight: ArrayOrTensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> ArrayOrTensor:
    """Cross-entropy of logits against class indices: ``log_softmax`` + ``nll_loss`` fused.

    Parameters
    ----------
    input : (N, C), (N, C, d1, ..., dk) or (C,)
        Unnormalised scores (logits); the class axis is 1.
    target : int array (N,), (N, d1, ..., dk) or ()
        Class indices in ``[0, C)``, or ``ignore_index`` (contributes nothing).
    weight : (C,) or None
        Per-class rescaling (a constant, cast to the input's dtype: no gradient flows to it).
    reduction : ``'mean'`` (divide by the summed weights of the non-ignored targets),
        ``'sum'`` or ``'none'``.
    label_smoothing : float in [0, 1]
        Target distribution ``(1 - eps) onehot + eps / C`` (Szegedy et al. 2016, sec. 7).

    Returns
    -------
    Scalar, or (N, d1, ..., dk) with ``reduction='none'``. Per element, with
    ``q_c = (1 - eps) w_y [c = y] + (eps / C) w_c``: ``loss = -sum_c q_c log softmax(x)_c``.
    Its gradient w.r.t. the logits is ``softmax(x) * sum_c q_c - q`` (``softmax - onehot``
    without weights or smoothing).

    >>> float(cross_entropy(np.zeros((1, 4)), np.array([2]))) == float(np.log(4))
    True
    """
    fn = "cross_entropy"
    _check_choice(reduction, REDUCTIONS, "reduction", fn)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must be in [0, 1], got {label_smoothing}")
    logits = _float_input(input, fn)
    logits, safe_target, valid, unbatched = _class_target(target, logits, ignore_index, fn)
    w = _class_weight(weight, logits, fn)
    num_classes = logits.shape[1]

    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    log_probs = shifted
    log_probs -= np.log(sum_exp)

    # Weight of the target class per element (zero where ignored), and the mean's divisor.
    target_weight = None if w is None else w[safe_target]
    if valid is not None:
        target_weight = valid.astype(logits.dtype) if w is None else target_weight * valid
    loss = -_at_target(log_probs, safe_target)
    if target_weight is not None:
        loss *= target_weight
    class_w = 1 if w is None else w.reshape((1, -1) + (1,) * (logits.ndim - 2))
    if label_smoothing > 0:
        smooth = -(log_probs * class_w).sum(axis=1)
        if valid is not None:
            smooth *= valid
        loss = (1 - label_smoothing) * loss + (label_smoothing / num_classes) * smooth
    denominator = float(loss.size if target_weight is None else target_weight.sum())
    out = _batch_out(_reduce(loss, reduction, denominator), unbatched, reduction)

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        scale = _reduction_scale(g, unbatched, reduction, denominator)
        grad = exp / sum_exp  # softmax
        if target_weight is None and label_smoothing == 0:
            _add_at_target(grad, safe_target, -1)
        else:
            # grad = softmax * sum_c q_c - q, with q = hot * onehot + smooth (per class).
            hot = ((1 - label_smoothing) * target_weight if target_weight is not None
                   else np.full(safe_target.shape, 1 - label_smoothing, logits.dtype))
            smooth_total = label_smoothing * (1.0 if w is None else float(w.mean()))
            if valid is not None:
                mask = valid.astype(logits.dtype)
            total = hot + (smooth_total if valid is None else smooth_total * mask)
            grad *= np.expand_dims(total, 1)
            if label_smoothing > 0:
                smooth = (label_smoothing / num_classes) * class_w
                grad -= smooth if valid is None else smooth * np.expand_dims(mask, 1)
            _add_at_target(grad, safe_target, -hot)
        grad *= np.expand_dims(scale, 1) if reduction == "none" else scale
        return (grad[0] if unbatched else grad,)

    return _wrap(out, [input], vjp, False)


def nll_loss(
    input: ArrayOrTensor,
    target: Any,
    weight: ArrayOrTensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
) -> ArrayOrTensor:
    """Negative log-likelihood ``-w[y] * input[n, y]`` of log-probabilities.

    Shapes and ``reduction`` as :func:`cross_entropy` (``input`` holds log-probabilities,
    e.g. from :func:`log_softmax` over dim 1).
    """
    fn = "nll_loss"
    _check_choice(reduction, REDUCTIONS, "reduction", fn)
    log_probs = _float_input(input, fn)
    log_probs, safe_target, valid, unbatched = _class_target(target, log_probs,
                                                             ignore_index, fn)
    w = _class_weight(weight, log_probs, fn)
    target_weight = None if w is None else w[safe_target]
    if valid is not None:
        target_weight = valid.astype(log_probs.dtype) if w is None else target_weight * valid
    loss = -_at_target(log_probs, safe_target)
    if target_weight is not None:
        loss *= target_weight
    denominator = float(loss.size if target_weight is None else target_weight.sum())
    out = _batch_out(_reduce(loss, reduction, denominator), unbatched, reduction)

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        scale = _reduction_scale(g, unbatched, reduction, denominator)
        grad = np.zeros_like(log_probs)
        hot = scale if target_weight is None else target_weight * scale
        _add_at_target(grad, safe_target, -np.broadcast_to(hot, safe_target.shape))
        return (grad[0] if unbatched else grad,)

    return _wrap(out, [input], vjp, False)


# -- regression and binary losses ---------------------------------------------------------


def _same_shape(input: np.ndarray, target: np.ndarray, fn: str) -> None:
    # PyTorch broadcasts with a warning; a shape mismatch is almost always a bug.
    if input.shape != target.shape:
        raise ValueError(f"{fn}: target shape {target.shape} must equal input shape "
                         f"{input.shape}")


def mse_loss(input: ArrayOrTensor, target: ArrayOrTensor, *, reduction: str = "mean"
             ) -> ArrayOrTensor:
    """Mean squared error ``(input - target)^2``, reduced by ``reduction``.

    ``input`` and ``target`` have the same shape (no broadcasting); the result is a scalar,
    or that shape with ``reduction='none'``. Gradients flow to both.

    >>> float(mse_loss(np.array([1.0, 3.0]), np.array([0.0, 0.0])))
    5.0
    """
    fn = "mse_loss"
    _check_choice(reduction, REDUCTIONS, "reduction", fn)
    arrays = _float_arrays(fn, ("input", "target"), input=input, target=target)
    x_arr, t_arr = arrays["input"], arrays["target"]
    _same_shape(x_arr, t_arr, fn)
    diff = x_arr - t_arr
    if reduction == "none":
        out = diff * diff
    else:
        flat = diff.reshape(-1)
        total = np.dot(flat, flat)
        out = np.asarray(total / max(diff.size, 1) if reduction == "mean" else total)

    def vjp(g: np.ndarray) -> tuple[Any, Any]:
        scale = 2 * g if reduction != "mean" else g * (2.0 / max(diff.size, 1))
        grad = diff * scale
        return grad, (-grad if _needs(target) else None)

    return _wrap(out, [input, target], vjp, False)


def _broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def binary_cross_entropy_with_logits(
    input: ArrayOrTensor,
    target: ArrayOrTensor,
    weight: ArrayOrTensor | None = None,
    *,
    reduction: str = "mean",
    pos_weight: ArrayOrTensor | None = None,
) -> ArrayOrTensor:
    """Binary cross-entropy of logits ``x`` against probabilities ``t``, sigmoid fused in.

    ``loss = -w [p t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]``, computed stably as
    ``w [(1 - t) x + (1 + (p - 1) t) softplus(-x)]``.

    Parameters
    ----------
    input, target : same shape (*)
    weight : broadcastable to (*), or None; a constant rescaling per element.
    pos_weight : broadcastable to (*) along the trailing (class) axes, or None; weight of
        the positive term. Both weights are constants, cast to the input's dtype.

    Returns
    -------
    Scalar, or (*) with ``reduction='none'``. Gradients flow to ``input`` (``w (sigmoid(x)
    (1 + (p - 1) t) - p t)``) and ``target``.
    """
    fn = "binary_cross_entropy_with_logits"
    _check_choice(reduction, REDUCTIONS, "reduction", fn)
    arrays = _float_arrays(fn, ("input", "target"), input=input, target=target)
    x_arr, t_arr = arrays["input"], arrays["target"]
    w_arr = _constant(weight, x_arr.dtype, "weight", fn)
    p_arr = _constant(pos_weight, x_arr.dtype, "pos_weight", fn)
    _same_shape(x_arr, t_arr, fn)
    for name, extra in (("weight", w_arr), ("pos_weight", p_arr)):
        if extra is not None and not _broadcasts_to(extra.shape, x_arr.shape):
            raise ValueError(f"{fn}: {name} shape {extra.shape} must broadcast to input "
                             f"shape {x_arr.shape}")
    sigma, e = _sigmoid_parts(x_arr)
    softplus_neg = np.log1p(e)  # -log sigmoid(x) = max(-x, 0) + log(1 + exp(-|x|))
    softplus_neg += np.maximum(-x_arr, 0)
    positive_coef = 1 if p_arr is None else 1 + (p_arr - 1) * t_arr
    loss = (1 - t_arr) * x_arr + positive_coef * softplus_neg
    if w_arr is not None:
        loss *= w_arr
    out = _reduce(loss, reduction, float(max(loss.size, 1)))

    def vjp(g: np.ndarray) -> tuple[Any, Any]:
        scale = g if reduction != "mean" else g / max(loss.size, 1)
        if w_arr is not None:
            scale = scale * w_arr
        grad_x = sigma * positive_coef
        grad_x -= t_arr if p_arr is None else p_arr * t_arr
        grad_x *= scale
        grad_t = None
        if _needs(target):
            grad_t = -x_arr if p_arr is None else (p_arr - 1) * softplus_neg - x_arr
            grad_t = grad_t * scale
        return grad_x, grad_t

    return _wrap(out, [input, target], vjp, False)


# -- dropout ---------------------------------------------------------------------------


def dropout(x: ArrayOrTensor, p: float = 0.5, training: bool = True,
            rng: np.random.Generator | None = None) -> ArrayOrTensor:
    """Inverted dropout (Srivastava et al. 2014): zero each entry with probability ``p``
    and scale the survivors by ``1 / (1 - p)``, so evaluation needs no rescaling.

    ``x`` is returned unchanged when ``training`` is False or ``p == 0``. The mask is drawn
    from ``rng`` (float32 uniforms, so float32 and float64 inputs get the same mask); None
    means a fresh unseeded ``np.random.default_rng()``.
    """
    fn = "dropout"
    if not isinstance(p, (int, float, np.floating)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{fn}: p must be a probability in [0, 1], got {p!r}")
    rng = check_rng(rng, fn)
    if not training or p == 0:
        return x
    x_arr = _float_input(x, fn)
    if p == 1:
        multiplier = np.zeros_like(x_arr)
    else:
        keep = rng.random(x_arr.shape, dtype=np.float32) >= p
        multiplier = keep * x_arr.dtype.type(1.0 / (1.0 - p))
    return _wrap(x_arr * multiplier, [x], lambda g: (g * multiplier,), False)


# -- normalisation -----------------------------------------------------------------------


def _per_channel(value: Any, channels: int, name: str, fn: str) -> np.ndarray | None:
    array = _data(value)
    if array is not None and array.shape != (channels,):
        raise ValueError(f"{fn}: {name} must have shape ({channels},), got {array.shape}")
    return array


def batch_norm(
    x: ArrayOrTensor,
    running_mean: np.ndarray | Tensor | None,
    running_var: np.ndarray | Tensor | None,
    weight: ArrayOrTensor | None = None,
    bias: ArrayOrTensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> ArrayOrTensor:
    """Batch normalisation (Ioffe & Szegedy 2015) over (N, *spatial) for each channel.

    Parameters
    ----------
    x : (N, C) or (N, C, *spatial)
    running_mean, running_var : (C,) arrays or None
        Used for normalisation when ``training`` is False. When ``training`` is True they
        are updated in place (if given): ``r = (1 - momentum) r + momentum * stat``, with
        the unbiased batch variance ``var * M / (M - 1)``, ``M = N * prod(spatial)``.
    weight, bias : (C,) or None (gamma and beta)
    training : normalise by the batch's mean and biased variance, not the running ones.

    Returns
    -------
    (N, C, *spatial): ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

    The VJP is the closed form (Ioffe & Szegedy, sec. 3), with ``xhat`` the normalised input:
    ``dx = weight / (M sqrt(var + eps)) * (M g - sum(g) - xhat * sum(g * xhat))``,
    ``dweight = sum(g * xhat)``, ``dbias = sum(g)``, sums over (N, *spatial).
    """
    fn = "batch_norm"
    arrays = _float_arrays(fn, input=x, weight=weight, bias=bias)
    x_arr, w_arr, b_arr = arrays["input"], arrays.get("weight"), arrays.get("bias")
    if x_arr.ndim < 2:
        raise ValueError(f"{fn}: input must be (N, C) or (N, C, *spatial), got shape "
                         f"{x_arr.shape}")
    batch, channels = x_arr.shape[:2]
    for name, value in (("weight", w_arr), ("bias", b_arr)):
        _per_channel(value, channels, name, fn)
    run_mean = _per_channel(running_mean, channels, "running_mean", fn)
    run_var = _per_channel(running_var, channels, "running_var", fn)
    x3 = x_arr.reshape(batch, channels, prod(x_arr.shape[2:]))
    count = x3.shape[0] * x3.shape[2]
    dtype = x_arr.dtype

    def per_channel(values: np.ndarray) -> np.ndarray:
        # (C,) -> (C, S): broadcasting then runs along contiguous C*S rows, about 1.4x faster
        # than against (C, 1) (measured on (100, 32, 40) float32).
        return np.repeat(values, x3.shape[2]).reshape(channels, x3.shape[2])

    if training:
        if count <= 1:
            raise ValueError(f"{fn}: expected more than 1 value per channel when training, "
                             f"got input shape {x_arr.shape}")
        # einsum reduces over (N, *spatial) several times faster than ndarray.sum(axis=(0, 2))
        mean = np.einsum("ncs->c", x3) / count
        xhat = x3 - per_channel(mean)
        var = np.einsum("ncs,ncs->c", xhat, xhat) / count
        inv_std = 1 / np.sqrt(var + eps)
        xhat *= per_channel(inv_std)
        if run_mean is not None:
            run_mean *= 1 - momentum
            run_mean += momentum * mean
        if run_var is not None:
            run_var *= 1 - momentum
            run_var += (momentum * count / (count - 1)) * var
        scale = inv_std if w_arr is None else w_arr * inv_std
        y = xhat.copy() if w_arr is None else xhat * per_channel(w_arr)
        if b_arr is not None:
            y += per_channel(b_arr)
    else:
        if run_mean is None or run_var is None:
            raise ValueError(f"{fn}: running_mean and running_var are required when "
                             f"training=False")
        mean = run_mean.astype(dtype, copy=False)
        inv_std = 1 / np.sqrt(run_var.astype(dtype, copy=False) + eps)
        scale = inv_std if w_arr is None else w_arr * inv_std
        shift = -mean * scale if b_arr is None else b_arr - mean * scale
        y = x3 * per_channel(scale)
        y += per_channel(shift)
        xhat = None
    y = y.reshape(x_arr.shape)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        g3 = g.reshape(x3.shape)
        if xhat is None:
            normalised = x3 - per_channel(mean)
            normalised *= per_channel(inv_std)
        else:
            normalised = xhat
        grad_b = np.einsum("ncs->c", g3)
        grad_w = np.einsum("ncs,ncs->c", g3, normalised)
        grad_x = None
        if _needs(x):
            grad_x = g3 * per_channel(scale)
            if training:  # the batch statistics depend on x too
                grad_x -= normalised * per_channel(scale * grad_w / count)
                grad_x -= per_channel(scale * grad_b / count)
            grad_x = grad_x.reshape(x_arr.shape)
        grads = (grad_x, None if w_arr is None else grad_w, None if b_arr is None else grad_b)
        return tuple(gr for gr, v in zip(grads, (x, weight, bias), strict=True) if v is not None)

    return _wrap(y, [x, weight, bias], vjp, False)


def layer_norm(
    x: ArrayOrTensor,
    normalized_shape: IntOrTuple,
    weight: ArrayOrTensor | None = None,
    bias: ArrayOrTensor | None = None,
    eps: float = 1e-5,
) -> ArrayOrTensor:
    """Layer normalisation (Ba et al. 2016) over the last ``len(normalized_shape)`` axes.

    Parameters
    ----------
    x : (*, *normalized_shape)
    normalized_shape : int or tuple, the trailing shape of ``x`` to normalise over.
    weight, bias : normalized_shape, or None

    Returns
    -------
    Same shape as ``x``: ``(x - mean) / sqrt(var + eps) * weight + bias`` with the mean and
    biased variance of each trailing block. The VJP is the fused closed form, as in
    :func:`batch_norm` with the roles of the axes exchanged.
    """
    fn = "layer_norm"
    arrays = _float_arrays(fn, input=x, weight=weight, bias=bias)
    x_arr, w_arr, b_arr = arrays["input"], arrays.get("weight"), arrays.get("bias")
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(normalized_shape)
    if not shape or x_arr.ndim < len(shape) or x_arr.shape[x_arr.ndim - len(shape):] != shape:
        raise ValueError(f"{fn}: input shape {x_arr.shape} must end with normalized_shape "
                         f"{shape}")
    for name, value in (("weight", w_arr), ("bias", b_arr)):
        if value is not None and value.shape != shape:
            raise ValueError(f"{fn}: {name} must have shape {shape}, got {value.shape}")
    size = int(np.prod(shape))
    x2 = x_arr.reshape(-1, size)
    xhat = x2 - x2.mean(axis=1, keepdims=True)
    var = np.einsum("md,md->m", xhat, xhat)[:, None] / size
    inv_std = 1 / np.sqrt(var + eps)
    xhat *= inv_std
    w_flat = None if w_arr is None else w_arr.reshape(-1)
    y = xhat * w_flat if w_flat is not None else xhat.copy()
    if b_arr is not None:
        y += b_arr.reshape(-1)
    y = y.reshape(x_arr.shape)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        g2 = g.reshape(x2.shape)
        grad_x = None
        if _needs(x):
            g_hat = g2 * w_flat if w_flat is not None else g2
            grad_x = g_hat - g_hat.mean(axis=1, keepdims=True)
            grad_x -= xhat * (np.einsum("md,md->m", g_hat, xhat)[:, None] / size)
            grad_x *= inv_std
            grad_x = grad_x.reshape(x_arr.shape)
        grad_w = None if w_arr is None else np.einsum("md,md->d", g2, xhat).reshape(shape)
        grad_b = None if b_arr is None else g2.sum(axis=0).reshape(shape)
        grads = (grad_x, grad_w, grad_b)
        return tuple(gr for gr, v in zip(grads, (x, weight, bias), strict=True) if v is not None)

    return _wrap(y, [x, weight, bias], vjp, False)


# -- linear layer and reshaping ----------------------------------------------------------


def linear(x: ArrayOrTensor, weight: ArrayOrTensor, bias: ArrayOrTensor | None = None
           ) -> ArrayOrTensor:
    """Affine map ``y = x @ weight.T + bias`` as one GEMM over all leading axes.

    Parameters
    ----------
    x : (*, in_features)
    weight : (out_features, in_features)
    bias : (out_features,) or None

    Returns
    -------
    (*, out_features). VJPs are GEMMs too: ``dx = g @ W``, ``dW = g^T x``, ``db = sum g``.

    >>> linear(np.ones((2, 3)), np.ones((4, 3))).shape
    (2, 4)
    """
    fn = "linear"
    arrays = _float_arrays(fn, ("input", "weight"), input=x, weight=weight, bias=bias)
    x_arr, w_arr, b_arr = arrays["input"], arrays["weight"], arrays.get("bias")
    if w_arr.ndim != 2:
        raise ValueError(f"{fn}: weight must be 2-D (out_features, in_features), got shape "
                         f"{w_arr.shape}")
    if x_arr.ndim < 1 or x_arr.shape[-1] != w_arr.shape[1]:
        raise ValueError(f"{fn}: input.shape[-1] ({x_arr.shape[-1:]}) must equal "
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
        grad_x = (g2 @ w_arr).reshape(x_arr.shape) if _needs(x) else None
        grad_w = g2.T @ x2 if _needs(weight) else None
        if bias is None:
            return grad_x, grad_w
        return grad_x, grad_w, (g2.sum(axis=0) if _needs(bias) else None)

    return _wrap(y.reshape(out_shape), [x, weight, bias], vjp, False)


def flatten(x: ArrayOrTensor, start_dim: int = 0, end_dim: int = -1) -> ArrayOrTensor:
    """Merge axes ``start_dim..end_dim`` (inclusive) into one, as ``torch.flatten``.

    >>> flatten(np.zeros((2, 3, 4)), 1).shape
    (2, 12)
    """
    fn = "flatten"
    x_arr = _data(x)
    ndim = max(x_arr.ndim, 1)
    start, end = _axis(start_dim, ndim, fn), _axis(end_dim, ndim, fn)
    if start > end:
        raise ValueError(f"{fn}: start_dim ({start_dim}) must not come after end_dim "
                         f"({end_dim}) for a {x_arr.ndim}-D input")
    merged = prod(x_arr.shape[start:end + 1])
    out = x_arr.reshape((*x_arr.shape[:start], merged, *x_arr.shape[end + 1:]))
    return _wrap(out, [x], lambda g: (g.reshape(x_arr.shape),), False)
