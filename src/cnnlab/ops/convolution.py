"""N-D convolution and transposed convolution on arrays: padding modes, algorithm, bias.

These functions take canonical arguments (see ``_args.py``) and arrays with a batch axis,
and run whichever algorithm :func:`choose_conv_method` picks (or the caller forces). The
transposed convolution is the adjoint of the convolution, so it is computed by the
convolution's input-VJP, and vice versa (Dumoulin & Visin 2016, section 4).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._args import PadPairs, prod
from .conv import ConvGeometry, all_finite, conv_backward, conv_forward, conv_geometry
from .dispatch import choose_conv_method
from .fft import fft_conv_backward, fft_conv_forward
from .pad import pad_backward, pad_forward


@dataclass(frozen=True)
class ConvSpec:
    """Canonical settings of one convolution (``padding``: per-dimension (lo, hi))."""

    stride: tuple[int, ...]
    padding: PadPairs
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str = "zeros"
    algorithm: str = "auto"
    layout: str = "auto"  # GEMM column order: "auto", "image" or "batch" (conv_geometry)


def bias_grad(gy: np.ndarray) -> np.ndarray:
    """VJP of adding ``bias[c]`` over (N, C, *spatial): sum over batch and space.

    ``einsum`` runs 2-4x faster than ``sum(axis=(0, 2, ...))`` on these shapes.
    """
    return np.einsum("ncl->c", gy.reshape(gy.shape[0], gy.shape[1], prod(gy.shape[2:])))


def _prepare(x: np.ndarray, w_shape: tuple[int, ...], spec: ConvSpec
             ) -> tuple[np.ndarray, ConvGeometry]:
    """Pad explicitly for non-zero modes; zero padding is folded into the GEMM grid."""
    if spec.padding_mode != "zeros":
        x = pad_forward(x, spec.padding, spec.padding_mode)
        padding = ((0, 0),) * len(spec.padding)
    else:
        padding = spec.padding
    geo = conv_geometry(x.shape, w_shape, spec.stride, padding, spec.dilation, spec.groups,
                        spec.layout)
    return x, geo


def _method(geo: ConvGeometry, spec: ConvSpec, *arrays: np.ndarray | None) -> str:
    """The algorithm for this call: the caller's choice or the cost model's, except that
    an empty batch, or any NaN/inf among ``arrays``, goes to GEMM: a transform would smear
    one NaN over every output, where IEEE arithmetic marks only the windows that touch it.
    """
    if geo.batch == 0:
        return "gemm"
    itemsize = next(a.itemsize for a in arrays if a is not None)
    method = choose_conv_method(geo, itemsize) if spec.algorithm == "auto" else spec.algorithm
    if method == "fft" and not all(all_finite(a) for a in arrays):
        return "gemm"
    return method


def _zero_padded(x: np.ndarray, geo: ConvGeometry) -> np.ndarray:
    return pad_forward(x, geo.padding, "zeros")


def conv_nd(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, spec: ConvSpec,
            saved: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """x: (N, C_in, *spatial), w: (C_out, C_in/groups, *kernel) -> (N, C_out, *out).

    ``saved``: a dict in which the GEMM path leaves what :func:`conv_nd_backward` can reuse.
    """
    x_in, geo = _prepare(x, w.shape, spec)
    if _method(geo, spec, x, w) == "fft":
        y = fft_conv_forward(_zero_padded(x_in, geo), w, geo.stride, geo.dilation, geo.groups,
                             geo.out_spatial)
        if bias is not None:
            y += bias.reshape((1, -1) + (1,) * len(geo.kernel))
        return y
    return conv_forward(x_in, w, geo, saved, bias)


def conv_nd_backward(
    x: np.ndarray, w: np.ndarray, gy: np.ndarray, spec: ConvSpec,
    need_input: bool = True, need_weight: bool = True, need_bias: bool = True,
    saved: dict[str, np.ndarray] | None = None,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """VJPs of :func:`conv_nd` for x, w and bias (each ``None`` when not needed)."""
    x_in, geo = _prepare(x, w.shape, spec)
    if _method(geo, spec, x, w, gy) == "fft":
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(geo.in_spatial, geo.padding))
        gx, gw = fft_conv_backward(_zero_padded(x_in, geo) if need_weight else None, w, gy,
                                   padded, geo.stride, geo.dilation, geo.groups,
                                   need_input, need_weight)
        if gx is not None:
            gx = pad_backward(gx, geo.padding, "zeros")
    else:
        gx, gw = conv_backward(x_in, w, gy, geo, need_input, need_weight, saved)
    if gx is not None and spec.padding_mode != "zeros":
        gx = np.ascontiguousarray(pad_backward(gx, spec.padding, spec.padding_mode))
    gb = bias_grad(gy) if need_bias else None
    return gx, gw, gb


def _transpose_geometry(x_shape: tuple[int, ...], w_shape: tuple[int, ...], spec: ConvSpec,
                        out_spatial: tuple[int, ...]) -> ConvGeometry:
    """The convolution whose adjoint is this transposed convolution.

    That convolution maps (N, C_out_t, *out_spatial) to x's shape with weight ``w`` read as
    (C_in_t, C_out_t/groups, *k), i.e. C_out = x's channels.
    """
    conv_x_shape = (x_shape[0], w_shape[1] * spec.groups, *out_spatial)
    return conv_geometry(conv_x_shape, w_shape, spec.stride, spec.padding, spec.dilation,
                         spec.groups)


def conv_transpose_nd(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, spec: ConvSpec,
                      out_spatial: tuple[int, ...]) -> np.ndarray:
    """x: (N, C_in, *spatial), w: (C_in, C_out/groups, *kernel) -> (N, C_out, *out_spatial).

    The adjoint of the convolution with the same stride, padding, dilation and groups.
    """
    geo = _transpose_geometry(x.shape, w.shape, spec, out_spatial)
    if _method(geo, spec, x, w) == "fft":
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(geo.in_spatial, geo.padding))
        gx, _ = fft_conv_backward(None, w, x, padded, geo.stride, geo.dilation, geo.groups,
                                  need_input=True, need_weight=False)
        y = np.ascontiguousarray(pad_backward(gx, geo.padding, "zeros"))
    else:
        y, _ = conv_backward(None, w, x, geo, need_input=True, need_weight=False)
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * len(geo.kernel))
    return y


def conv_transpose_nd_backward(
    x: np.ndarray, w: np.ndarray, gy: np.ndarray, spec: ConvSpec,
    need_input: bool = True, need_weight: bool = True, need_bias: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """VJPs of :func:`conv_transpose_nd`: grad_x is the convolution of gy; grad_w is the
    convolution's weight-VJP with the roles of input and output gradient swapped."""
    out_spatial = gy.shape[2:]
    geo = _transpose_geometry(x.shape, w.shape, spec, out_spatial)
    conv_spec = ConvSpec(spec.stride, spec.padding, spec.dilation, spec.groups, "zeros",
                         spec.algorithm)
    gx = gw = None
    if need_input or need_weight:
        if _method(geo, spec, x, w, gy) == "fft":
            padded_gy = pad_forward(gy, geo.padding, "zeros")
            if need_input:
                gx = fft_conv_forward(padded_gy, w, geo.stride, geo.dilation, geo.groups,
                                      geo.out_spatial)
                gx = _crop_to(gx, x.shape[2:])
            if need_weight:
                padded = padded_gy.shape[2:]
                x_full = _pad_to(x, geo.out_spatial)
                _, gw = fft_conv_backward(padded_gy, w, x_full, padded, geo.stride,
                                          geo.dilation, geo.groups, False, True)
        else:
            if need_input:
                gx = _crop_to(conv_nd(gy, w, None, conv_spec), x.shape[2:])
            if need_weight:
                _, gw = conv_backward(gy, w, x, geo, need_input=False, need_weight=True)
    gb = bias_grad(gy) if need_bias else None
    return gx, gw, gb


def _crop_to(a: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    if a.shape[2:] == tuple(spatial):
        return a
    return np.ascontiguousarray(a[(Ellipsis, *(slice(0, n) for n in spatial))])


def _pad_to(a: np.ndarray, spatial: tuple[int, ...]) -> np.ndarray:
    if a.shape[2:] == tuple(spatial):
        return a
    out = np.zeros(a.shape[:2] + tuple(spatial), dtype=a.dtype)
    out[(Ellipsis, *(slice(0, n) for n in a.shape[2:]))] = a
    return out
