"""N-D cross-correlation by real FFTs, with its two VJPs, for large kernels and long signals.

Convolution theorem on a periodic domain (the lecture's [-pi, pi]): correlation becomes a
pointwise product of spectra, and the channel sum a small matrix product per frequency::

    Y[f] (N, C_out) = X[f] (N, C_in) @ conj(W[f]) (C_in, C_out)

The stride-1 correlation of the padded input (length ``P``) with the dilated kernel is read
off a transform of length ``L >= P``; no product wraps around because every lag that is
kept stays inside ``[0, P)``. Stride is "stride 1 followed by downsampling" (the lecture),
and the VJPs are the same products with the roles swapped::

    grad_X[f] = grad_Y[f] @ W[f].T           grad_W[f] = X[f].T @ conj(grad_Y[f])
"""

from __future__ import annotations

import os

import numpy as np
import scipy.fft as sfft

from ._args import prod

WORKERS = os.cpu_count() or 1


def _dilated(w: np.ndarray, dilation: tuple[int, ...]) -> np.ndarray:
    """(O, C, *k) -> (O, C, *(d*(k-1)+1)) with zeros between taps."""
    if all(d == 1 for d in dilation):
        return w
    extent = tuple(d * (k - 1) + 1 for k, d in zip(w.shape[2:], dilation))
    out = np.zeros(w.shape[:2] + extent, dtype=w.dtype)
    out[(Ellipsis, *(slice(None, None, d) for d in dilation))] = w
    return out


def _fft_shape(padded: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sfft.next_fast_len(p, real=True) for p in padded)


def _spectrum(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(B, C, *space) -> (F, B, C) complex, F = prod of the half-spectrum shape."""
    axes = tuple(range(2, 2 + len(shape)))
    spec = sfft.rfftn(a, s=shape, axes=axes, workers=WORKERS)
    return spec.reshape(a.shape[0], a.shape[1], -1).transpose(2, 0, 1)


def _grouped(spec: np.ndarray, groups: int) -> np.ndarray:
    """(F, B, C) -> (F, g, B, C/g)."""
    f, b, c = spec.shape
    return spec.reshape(f, b, groups, c // groups).transpose(0, 2, 1, 3)


def _ungrouped(spec: np.ndarray) -> np.ndarray:
    """(F, g, B, C/g) -> (F, B, C)."""
    f, g, b, cg = spec.shape
    return spec.transpose(0, 2, 1, 3).reshape(f, b, g * cg)


def _signal(spec: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """(F, B, C) half spectrum -> (B, C, *shape) real."""
    _, b, c = spec.shape
    half = (*shape[:-1], shape[-1] // 2 + 1)
    cube = spec.transpose(1, 2, 0).reshape(b, c, *half)
    axes = tuple(range(2, 2 + len(shape)))
    return sfft.irfftn(cube, s=shape, axes=axes, workers=WORKERS).astype(dtype, copy=False)


def _downsample(y: np.ndarray, count: tuple[int, ...], stride: tuple[int, ...]) -> np.ndarray:
    return y[(Ellipsis, *(slice(0, (o - 1) * s + 1, s) for o, s in zip(count, stride)))]


def fft_conv_forward(
    xp: np.ndarray, w: np.ndarray, stride: tuple[int, ...], dilation: tuple[int, ...],
    groups: int, out_spatial: tuple[int, ...],
) -> np.ndarray:
    """xp: padded (N, C_in, *P); w: (C_out, C_in/g, *k) -> (N, C_out, *out_spatial)."""
    shape = _fft_shape(xp.shape[2:])
    wd = _dilated(w, dilation)
    x_spec = _grouped(_spectrum(xp, shape), groups)
    # The weight as (g*C_in/g, C_out/g, *k): its spectrum is then (F, g, C_in/g, C_out/g).
    c_out, c_in_g = w.shape[:2]
    w_spec = _spectrum(wd.reshape(groups, c_out // groups, c_in_g, *wd.shape[2:])
                       .transpose(0, 2, 1, *range(3, wd.ndim + 1))
                       .reshape(groups * c_in_g, c_out // groups, *wd.shape[2:]), shape)
    # w_spec: (F, g*C_in/g, C_out/g) -> (F, g, C_in/g, C_out/g)
    w_spec = w_spec.reshape(w_spec.shape[0], groups, c_in_g, c_out // groups)
    y_spec = np.matmul(x_spec, np.conj(w_spec))
    y = _signal(_ungrouped(y_spec), shape, xp.dtype)
    return np.ascontiguousarray(_downsample(y, out_spatial, stride))


def fft_conv_backward(
    xp: np.ndarray | None, w: np.ndarray, gy: np.ndarray, padded: tuple[int, ...],
    stride: tuple[int, ...], dilation: tuple[int, ...], groups: int,
    need_input: bool = True, need_weight: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """VJPs of :func:`fft_conv_forward`: grad wrt the padded input (N, C_in, *P), and wrt w."""
    shape = _fft_shape(padded)
    n, c_out = gy.shape[:2]
    c_in_g = w.shape[1]
    # Stride s: the upsampled gradient has zeros between the kept outputs.
    up = np.zeros((n, c_out, *shape), dtype=gy.dtype)
    up[(Ellipsis, *(slice(0, (o - 1) * s + 1, s) for o, s in zip(gy.shape[2:], stride)))] = gy
    gy_spec = _grouped(_spectrum(up, shape), groups)  # (F, g, N, C_out/g)
    grad_x = grad_w = None
    if need_input:
        wd = _dilated(w, dilation)
        w_spec = _spectrum(wd, shape)
        # (F, C_out, C_in/g) -> (F, g, C_out/g, C_in/g)
        w_spec = w_spec.reshape(w_spec.shape[0], groups, c_out // groups, c_in_g)
        gx_spec = np.matmul(gy_spec, w_spec)
        gx = _signal(_ungrouped(gx_spec), shape, gy.dtype)
        grad_x = np.ascontiguousarray(gx[(Ellipsis, *(slice(0, p) for p in padded))])
    if need_weight:
        x_spec = _grouped(_spectrum(xp, shape), groups)  # (F, g, N, C_in/g)
        gw_spec = np.matmul(x_spec.transpose(0, 1, 3, 2), np.conj(gy_spec))  # (F,g,Cin/g,Cout/g)
        f = gw_spec.shape[0]
        gw_spec = gw_spec.transpose(0, 1, 3, 2).reshape(f, 1, c_out * c_in_g)
        lags = _signal(gw_spec, shape, gy.dtype)[0].reshape(c_out, c_in_g, *shape)
        keep = tuple(slice(0, d * (k - 1) + 1, d) for k, d in zip(w.shape[2:], dilation))
        grad_w = np.ascontiguousarray(lags[(Ellipsis, *keep)])
    return grad_x, grad_w


def spectral_product_flops(batch: int, c_in: int, c_out: int, groups: int,
                           padded: tuple[int, ...]) -> float:
    """Real flops of the per-frequency channel contraction (N, C_in) @ (C_in, C_out)."""
    size = prod(_fft_shape(padded))
    return float(8 * (size / 2) * batch * c_in * c_out / groups)


def fft_flops(batch: int, c_in: int, c_out: int, groups: int, padded: tuple[int, ...]) -> float:
    """Rough real-flop count of :func:`fft_conv_forward` (transforms plus the spectral
    products of :func:`spectral_product_flops`), for the dispatchers' cost models."""
    size = prod(_fft_shape(padded))
    transforms = (batch * c_in + batch * c_out + c_in * c_out // groups) * 2.5 * size * np.log2(
        max(size, 2))
    return float(transforms + spectral_product_flops(batch, c_in, c_out, groups, padded))
