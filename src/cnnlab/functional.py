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

from .autograd import Tensor
from .ops._args import (
    PADDING_MODES,
    conv_output_shape,
    conv_padding,
    conv_transpose_output_shape,
    pad_pairs,
    to_tuple,
)
from .ops.convolution import (
    ConvSpec,
    conv_nd,
    conv_nd_backward,
    conv_transpose_nd,
    conv_transpose_nd_backward,
)
from .ops.dispatch import ALGORITHMS
from .ops.pad import check_pad_fits, pad_backward, pad_forward

ArrayOrTensor = np.ndarray | Tensor
IntOrTuple = int | Sequence[int]


# ---------------------------------------------------------------------------------------
# Helpers shared by every op: array/Tensor in, same kind out; dtype and batch checks.


def _data(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    return value.data if isinstance(value, Tensor) else np.asarray(value)


def _float_arrays(fn: str, **arrays: Any) -> dict[str, np.ndarray]:
    """Check the named arrays share one float dtype (ints, alone, become float64)."""
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
        return vjp(g[None] if unbatched else g)

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
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive int, got {groups!r}")
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


def _conv(x: Any, weight: Any, bias: Any, stride: Any, padding: Any, dilation: Any,
          groups: int, padding_mode: str, algorithm: str, spatial_dims: int | None, fn: str
          ) -> ArrayOrTensor:
    arrays = _float_arrays(fn, input=x, weight=weight, bias=bias)
    x_arr, w_arr, b_arr = arrays["input"], arrays["weight"], arrays.get("bias")
    if spatial_dims is None:
        spatial_dims = w_arr.ndim - 2
        if spatial_dims < 1:
            raise ValueError(f"{fn}: weight must be at least 3-D, got shape {w_arr.shape}")
    x_arr, unbatched = _batched(x_arr, spatial_dims, fn)
    _conv_checks(x_arr, w_arr, b_arr, groups, spatial_dims, fn)
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
    spec = ConvSpec(stride_t, pads, dilation_t, int(groups), padding_mode, algorithm)
    y = conv_nd(x_arr, w_arr, b_arr, spec)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        gx, gw, gb = conv_nd_backward(x_arr, w_arr, g, spec, _needs(x), _needs(weight),
                                      _needs(bias))
        if gx is not None and unbatched:
            gx = gx[0]
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


# ---------------------------------------------------------------------------------------
# Transposed convolution (the adjoint of the convolution).


def _conv_transpose(x: Any, weight: Any, bias: Any, stride: Any, padding: Any,
                    output_padding: Any, groups: int, dilation: Any, spatial_dims: int,
                    algorithm: str, fn: str) -> ArrayOrTensor:
    arrays = _float_arrays(fn, input=x, weight=weight, bias=bias)
    x_arr, w_arr, b_arr = arrays["input"], arrays["weight"], arrays.get("bias")
    x_arr, unbatched = _batched(x_arr, spatial_dims, fn)
    if w_arr.ndim != spatial_dims + 2:
        raise ValueError(f"{fn}: weight must be {spatial_dims + 2}-D "
                         f"(C_in, C_out/groups, *kernel), got shape {w_arr.shape}")
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise ValueError(f"{fn}: groups must be a positive int, got {groups!r}")
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
    spec = ConvSpec(stride_t, pads, dilation_t, int(groups), "zeros", algorithm)
    y = conv_transpose_nd(x_arr, w_arr, b_arr, spec, out_spatial)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        gx, gw, gb = conv_transpose_nd_backward(x_arr, w_arr, g, spec, _needs(x),
                                                _needs(weight), _needs(bias))
        if gx is not None and unbatched:
            gx = gx[0]
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
