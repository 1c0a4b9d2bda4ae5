"""Convolution by FFTs: the layers' multi-channel correlation with its two VJPs, and the
plain N-D linear convolution (whole or by overlap-add) behind :mod:`cnnlab.signal`.

Convolution theorem on a periodic domain (the lecture's [-pi, pi]): convolution becomes a
pointwise product of spectra. Zero-padding both inputs to at least the length of the
result stops the circular product from wrapping around, and ``next_fast_len`` rounds each
length up to one with small prime factors. Both users go through the same two transforms,
:func:`spectrum` and :func:`inverse_spectrum`.

**Layers** (:func:`fft_conv_forward`): the channel sum is a small matrix product per
frequency::

    Y[f] (N, C_out) = X[f] (N, C_in) @ conj(W[f]) (C_in, C_out)

The stride-1 correlation of the padded input (length ``P``) with the dilated kernel is read
off a transform of length ``L >= P``; no product wraps around because every lag that is
kept stays inside ``[0, P)``. Stride is "stride 1 followed by downsampling" (the lecture),
and the VJPs are the same products with the roles swapped::

    grad_X[f] = grad_Y[f] @ W[f].T           grad_W[f] = X[f].T @ conj(grad_Y[f])

**Plain convolution** (:func:`fft_convolve`, SciPy's ``fftconvolve``): one input, one
kernel, real or complex, over any subset of axes (the others broadcast), at the full length
``s1 + s2 - 1``. :func:`oa_convolve` (SciPy's ``oaconvolve``) cuts the larger input into
blocks, convolves each with the smaller one at a short transform length and adds the
overlapping tails.

Worker threads do not change results. ``scipy.fft`` (pocketfft) splits an N-D transform
into independent 1-D transforms along each axis and hands whole lines to threads
(``thread_count`` and ``general_nd`` in pocketfft_hdronly.h); every line is transformed by
the same plan, with the same operations in the same order, whichever thread runs it or
whether it shares SIMD lanes with other lines. Measured on NumPy 2.4 / SciPy 1.17 (AVX-512
machine): ``rfftn``, ``irfftn``, ``fftn`` and ``ifftn`` of float32 and float64 arrays, 1 to
17 lines of lengths 16 to 4103 and batched (B, C, *space) arrays as the layers use them,
are bitwise identical for ``workers`` = 1, 2, 3, 4, 5 and 8 (850 configurations);
``tests/test_signal.py`` keeps asserting it, for SciPy upgrades. So :data:`WORKERS`
follows the core count for speed (on large arrays) without making results follow it.
"""

from __future__ import annotations

import math
import os

import numpy as np
import scipy.fft as sfft

from ._args import prod

# Threads per transform: all cores (safe for reproducibility, see the module docstring) for
# arrays of at least PARALLEL_FFT_SIZE numbers, one thread below, where starting and joining
# threads costs more than they save. rfftn + irfftn, 1 vs 2 workers on the 2-core machine:
# 1.16x-1.64x slower with 2 below 1.4e5 numbers (a 286^2 image, 4 x 8 lines of 4350), even
# at 1.6e5-5.7e5, 0.6x-0.8x from 1.0e6 (16 x 286^2, 8 x 16 x 94^2, 16 x 32 x 4350).
# The cores this process may run on (its affinity mask: taskset, a shard worker), not all.
WORKERS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
    os.cpu_count() or 1)
PARALLEL_FFT_SIZE = 2**18


# --- the transforms both users share ---------------------------------------------------------

def fft_shape(lengths: tuple[int, ...], real: bool = True) -> tuple[int, ...]:
    """Transform lengths ``>= lengths`` with small prime factors (``next_fast_len``)."""
    return tuple(sfft.next_fast_len(n, real=real) for n in lengths)


def _workers(a: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    """Threads for transforming ``a`` to ``shape`` along ``axes``, by the size of the
    transform (its lines times their padded length), not of ``a``: a small kernel padded to
    a large spectrum is a large transform."""
    kept = {axis % a.ndim for axis in axes}
    lines = prod(tuple(n for axis, n in enumerate(a.shape) if axis not in kept))
    return WORKERS if lines * prod(shape) >= PARALLEL_FFT_SIZE else 1


def spectrum(a: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...], real: bool = True
             ) -> np.ndarray:
    """Transform of ``a`` zero-padded to ``shape`` along ``axes``: the half spectrum
    (``rfftn``, last of ``axes`` of length ``shape[-1] // 2 + 1``) for real input, the full
    spectrum (``fftn``) for complex input."""
    transform = sfft.rfftn if real else sfft.fftn
    return transform(a, s=shape, axes=axes, workers=_workers(a, shape, axes))


def inverse_spectrum(spec: np.ndarray, shape: tuple[int, ...], axes: tuple[int, ...],
                     real: bool = True) -> np.ndarray:
    """Inverse of :func:`spectrum`: lengths ``shape`` along ``axes``, real if ``real``."""
    transform = sfft.irfftn if real else sfft.ifftn
    return transform(spec, s=shape, axes=axes, workers=_workers(spec, shape, axes))


def transform_flops(shape: tuple[int, ...]) -> float:
    """Real flops of one real-input transform of ``shape``: ``2.5 N log2 N``, ``N = prod``
    (half of a complex transform's ``5 N log2 N``)."""
    size = prod(shape)
    return 2.5 * size * math.log2(max(size, 2))


# --- the layers: multi-channel correlation and its VJPs --------------------------------------

def _dilated(w: np.ndarray, dilation: tuple[int, ...]) -> np.ndarray:
    """(O, C, *k) -> (O, C, *(d*(k-1)+1)) with zeros between taps."""
    if all(d == 1 for d in dilation):
        return w
    extent = tuple(d * (k - 1) + 1 for k, d in zip(w.shape[2:], dilation))
    out = np.zeros(w.shape[:2] + extent, dtype=w.dtype)
    out[(Ellipsis, *(slice(None, None, d) for d in dilation))] = w
    return out


def _spectrum(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(B, C, *space) -> (F, B, C) complex, F = prod of the half-spectrum shape."""
    spec = spectrum(a, shape, tuple(range(2, 2 + len(shape))))
    return spec.reshape(a.shape[0], a.shape[1], -1).transpose(2, 0, 1)


def _grouped(spec: np.ndarray, groups: int) -> np.ndarray:
    """(F, B, C) -> (F, g, B, C/g)."""
    f, b, c = spec.shape
    return spec.reshape(f, b, groups, c // groups).transpose(0, 2, 1, 3)


def _ungrouped(spec: np.ndarray) -> np.ndarray:
    """(F, g, B, C/g) -> (F, B, C)."""
    f, g, b, cg = spec.shape
    return spec.transpose(0, 2, 1, 3).reshape(f, b, g * cg)


def _from_spectrum(spec: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """(F, B, C) half spectrum -> (B, C, *shape) real."""
    _, b, c = spec.shape
    half = (*shape[:-1], shape[-1] // 2 + 1)
    cube = spec.transpose(1, 2, 0).reshape(b, c, *half)
    out = inverse_spectrum(cube, shape, tuple(range(2, 2 + len(shape))))
    return out.astype(dtype, copy=False)


def _downsample(y: np.ndarray, count: tuple[int, ...], stride: tuple[int, ...]) -> np.ndarray:
    return y[(Ellipsis, *(slice(0, (o - 1) * s + 1, s) for o, s in zip(count, stride)))]


def fft_conv_forward(
    xp: np.ndarray, w: np.ndarray, stride: tuple[int, ...], dilation: tuple[int, ...],
    groups: int, out_spatial: tuple[int, ...],
) -> np.ndarray:
    """xp: padded (N, C_in, *P); w: (C_out, C_in/g, *k) -> (N, C_out, *out_spatial)."""
    shape = fft_shape(xp.shape[2:])
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
    y = _from_spectrum(_ungrouped(y_spec), shape, xp.dtype)
    return np.ascontiguousarray(_downsample(y, out_spatial, stride))


def fft_conv_backward(
    xp: np.ndarray | None, w: np.ndarray, gy: np.ndarray, padded: tuple[int, ...],
    stride: tuple[int, ...], dilation: tuple[int, ...], groups: int,
    need_input: bool = True, need_weight: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """VJPs of :func:`fft_conv_forward`: grad wrt the padded input (N, C_in, *P), and wrt w."""
    shape = fft_shape(padded)
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
        gx = _from_spectrum(_ungrouped(gx_spec), shape, gy.dtype)
        grad_x = np.ascontiguousarray(gx[(Ellipsis, *(slice(0, p) for p in padded))])
    if need_weight:
        x_spec = _grouped(_spectrum(xp, shape), groups)  # (F, g, N, C_in/g)
        gw_spec = np.matmul(x_spec.transpose(0, 1, 3, 2), np.conj(gy_spec))  # (F,g,Cin/g,Cout/g)
        f = gw_spec.shape[0]
        gw_spec = gw_spec.transpose(0, 1, 3, 2).reshape(f, 1, c_out * c_in_g)
        lags = _from_spectrum(gw_spec, shape, gy.dtype)[0].reshape(c_out, c_in_g, *shape)
        keep = tuple(slice(0, d * (k - 1) + 1, d) for k, d in zip(w.shape[2:], dilation))
        grad_w = np.ascontiguousarray(lags[(Ellipsis, *keep)])
    return grad_x, grad_w


def spectral_product_flops(batch: int, c_in: int, c_out: int, groups: int,
                           padded: tuple[int, ...]) -> float:
    """Real flops of the per-frequency channel contraction (N, C_in) @ (C_in, C_out)."""
    size = prod(fft_shape(padded))
    return float(8 * (size / 2) * batch * c_in * c_out / groups)


def fft_flops(batch: int, c_in: int, c_out: int, groups: int, padded: tuple[int, ...]) -> float:
    """Rough real-flop count of :func:`fft_conv_forward`: one :func:`transform_flops` per
    input image, output map and weight slice, plus :func:`spectral_product_flops`."""
    transforms = (batch * c_in + batch * c_out + c_in * c_out // groups) * transform_flops(
        fft_shape(padded))
    return float(transforms + spectral_product_flops(batch, c_in, c_out, groups, padded))


# --- plain convolution: one input, one kernel, any axes ---------------------------------------

def fft_ready(a: np.ndarray) -> np.ndarray:
    """``a`` in a precision scipy.fft computes in: bool and ints as float64, float16 as
    float32; float32/64 and complex64/128 unchanged."""
    if a.dtype.kind in "biu":
        return a.astype(np.float64)
    if a.dtype == np.float16:
        return a.astype(np.float32)
    return a


def _crop_front(a: np.ndarray, axes: list[int], lengths: list[int]) -> np.ndarray:
    index = [slice(None)] * a.ndim
    for axis, n in zip(axes, lengths, strict=True):
        index[axis] = slice(0, n)
    return a[tuple(index)]


def fft_convolve(in1: np.ndarray, in2: np.ndarray, axes: list[int]) -> np.ndarray:
    """Full linear convolution along ``axes``, broadcast product along the other axes.

    in1: (*s1), in2: (*s2), the same ndim; off ``axes`` the sizes must be equal or 1.
    Returns shape ``s1 + s2 - 1`` on ``axes`` and the broadcast size elsewhere, float for
    real input (ints computed in float64, see :func:`fft_ready`), complex for complex input.
    With no ``axes`` it is the plain product ``in1 * in2``.
    """
    if not axes:
        return in1 * in2
    in1, in2 = fft_ready(in1), fft_ready(in2)
    real = not (np.iscomplexobj(in1) or np.iscomplexobj(in2))
    full = [in1.shape[a] + in2.shape[a] - 1 for a in axes]
    shape, fft_axes = fft_shape(tuple(full), real), tuple(axes)
    product = spectrum(in1, shape, fft_axes, real) * spectrum(in2, shape, fft_axes, real)
    return _crop_front(inverse_spectrum(product, shape, fft_axes, real), axes, full)


def _largest_magnitude(a: np.ndarray) -> int:
    """max |a| as a Python int (no int64 overflow at -2**63; floats truncated)."""
    if a.dtype.kind == "b":
        return int(a.any())
    if a.dtype.kind in "iu":
        return max(int(a.max()), -int(a.min()))
    return int(np.abs(a).max())


def fft_represents_sums(in1: np.ndarray, in2: np.ndarray) -> bool:
    """SciPy's rule for integer input (``choose_conv_method``): float64 represents every
    sum, i.e. ``max|in1| * max|in2| * min(in1.size, in2.size) <= 2**53 - 1``."""
    largest = _largest_magnitude(in1) * _largest_magnitude(in2) * min(in1.size, in2.size)
    return largest <= 2**53 - 1


# Rounding a float64 FFT convolution of integers gives the exact sums only while its error
# stays under 1/2. For a transform of length N = 2**n the error is at most, to first order,
# u ||in1||_2 ||in2||_2 (3n + sqrt(5) (3n + 1) + 3n beta / u), u = 2**-53, with twiddle
# error beta (Brent & Zimmermann, Modern Computer Arithmetic, section 3.3.2, after Percival
# 2003): with beta <= u, under (13 log2 N + 3) u ||in1|| ||in2||. Checking only that the
# sums stay below 2**53 (SciPy's rule) is not enough: 10^5 samples of 2**21 convolved with
# 1000 of 2**21 or 2**21 - 1 pass it, and the FFT misses 2207 sums by 1 or 2 (largest
# error 2.27 = 0.46 u ||in1|| ||in2||; the bound is 219 u ||in1|| ||in2||).
FFT_ERROR_PER_LEVEL = 13
FFT_ERROR_FIXED = 3


def fft_rounds_exactly(in1: np.ndarray, in2: np.ndarray) -> bool:
    """Whether rounding :func:`fft_convolve` of the integer arrays ``in1`` (*s1) and ``in2``
    (*s2) over all axes to the nearest integers is sure to give the exact convolution."""
    full = tuple(n1 + n2 - 1 for n1, n2 in zip(in1.shape, in2.shape, strict=True))
    levels = math.log2(max(prod(fft_shape(full)), 2))
    norms = (float(np.linalg.norm(in1.ravel().astype(np.float64)))
             * float(np.linalg.norm(in2.ravel().astype(np.float64))))
    error = (FFT_ERROR_PER_LEVEL * levels + FFT_ERROR_FIXED) * 2.0**-53 * norms
    return error < 0.5


def oa_fft_length(kernel_length: int) -> int:
    """Block transform length minimising the cost per output sample of overlap-add.

    With overlap ``K = kernel_length - 1`` and transform length ``N``, each block yields
    ``N - K`` new samples for ``~N log2(2N)`` work; setting the derivative of
    ``N log(2N) / (N - K)`` to zero gives ``N = K ln(2 e N)`` (SciPy's ``_calc_oa_lens``,
    which solves it with the Lambert W function). The fixed-point iteration converges
    because ``K / N < 1`` there.
    """
    overlap = kernel_length - 1
    if overlap == 0:
        return 1  # a one-tap kernel: blocks of one sample, nothing overlaps
    n = 4.0 * overlap
    for _ in range(50):
        n = overlap * (1.0 + math.log(2.0 * n))
    return sfft.next_fast_len(math.ceil(n))


def _overlap_add(blocks: np.ndarray, block_axis: int, step: int, length: int) -> np.ndarray:
    """(..., n_blocks, L, ...) -> (..., length, ...): block b starts at ``b * step``.

    Each block's ``L`` samples are cut into ``ceil(L / step)`` pieces of ``step``; piece
    ``j`` of every block lands ``j`` steps later, one vectorised add per piece.
    """
    moved = np.moveaxis(blocks, (block_axis, block_axis + 1), (-2, -1))
    n_blocks, block_length = moved.shape[-2:]
    pieces = -(-block_length // step)
    out = np.zeros((*moved.shape[:-2], n_blocks + pieces - 1, step), dtype=moved.dtype)
    for j in range(pieces):
        piece = moved[..., j * step: min((j + 1) * step, block_length)]
        out[..., j: j + n_blocks, : piece.shape[-1]] += piece
    out = out.reshape(*moved.shape[:-2], -1)[..., :length]
    return np.moveaxis(out, -1, block_axis)


def oa_convolve(in1: np.ndarray, in2: np.ndarray, axes: list[int]) -> np.ndarray:
    """:func:`fft_convolve` by overlap-add of the larger input's blocks: same shapes and
    result (up to rounding), cheaper when one input is much longer than the other.

    Along each axis where the smaller input (length ``k``) is under half the larger one's
    (``n``) and more than one block results, the larger input is cut into blocks of
    ``step = oa_fft_length(k) - k + 1`` samples; every block is convolved with the smaller
    input at length ``step + k - 1`` in one batched transform, and the ``k - 1`` sample
    tails are added into the next blocks (:func:`_overlap_add`).
    """
    axes = sorted(axes)
    if not axes:
        return in1 * in2
    in1, in2 = fft_ready(in1), fft_ready(in2)
    signal, kernel = (in1, in2) if in1.size >= in2.size else (in2, in1)
    steps = {}
    for a in axes:
        n, k = signal.shape[a], kernel.shape[a]
        step = oa_fft_length(k) - k + 1
        # Blocks pay off only for a kernel under half the signal (SciPy's rule) and when
        # there is more than one of them.
        if 2 * k < n and step < n:
            steps[a] = step
    if not steps:
        return fft_convolve(in1, in2, axes)
    real = not (np.iscomplexobj(signal) or np.iscomplexobj(kernel))
    # Zero-pad the signal to whole blocks and split each blocked axis into (n_blocks, step);
    # the kernel gets a size-1 block axis there so the spectra broadcast over the blocks.
    pad, blocked_shape, kernel_shape, fft_axes, lengths = [], [], [], [], []
    for a in range(signal.ndim):
        n, k = signal.shape[a], kernel.shape[a]
        if a in steps:
            n_blocks = -(-n // steps[a])
            pad.append((0, n_blocks * steps[a] - n))
            blocked_shape += [n_blocks, steps[a]]
            kernel_shape += [1, k]
            length = steps[a] + k - 1
        else:
            pad.append((0, 0))
            blocked_shape.append(n)
            kernel_shape.append(k)
            length = n + k - 1
        if a in axes:
            fft_axes.append(len(blocked_shape) - 1)
            lengths.append(length)
    blocks = np.pad(signal, pad).reshape(blocked_shape)
    shape, transform_axes = fft_shape(tuple(lengths), real), tuple(fft_axes)
    product = (spectrum(blocks, shape, transform_axes, real)
               * spectrum(kernel.reshape(kernel_shape), shape, transform_axes, real))
    out = _crop_front(inverse_spectrum(product, shape, transform_axes, real), fft_axes,
                      lengths)
    # Fold the blocked axes from the last to the first so earlier positions stay put.
    block_positions = [fft_axes[axes.index(a)] - 1 for a in sorted(steps)]
    for a, position in reversed(list(zip(sorted(steps), block_positions, strict=True))):
        out = _overlap_add(out, position, steps[a], signal.shape[a] + kernel.shape[a] - 1)
    return out
