"""Which algorithm computes a convolution, and the calls that run it.

The convolution's dispatcher: :func:`conv_nd` / :func:`conv_transpose_nd` and their VJPs
take canonical arguments (:class:`ConvRequest`, normalised by ``_args.py``) and arrays with
a batch axis, resolve ``algorithm`` (the caller's or the cost model's :func:`choose_conv_method`)
and call one kernel: ``gemm.py`` (im2col + one GEMM per chunk), ``fft.py`` (products of
spectra) or ``reference.py`` (the lecture's sum, ``algorithm="direct"``). The transposed
convolution is the adjoint of the convolution, so it is computed by the convolution's
input-VJP, and vice versa (Dumoulin & Visin 2016, section 4).

The cost model: ``choose_conv_method`` returns a name; ``ALGORITHMS`` lists what may be
forced. A new algorithm joins by adding its name there and a cost function beside the two
below.

Cost constants were fitted on the 2-core development machine by
``python benchmarks/bench_conv.py --fit`` (see BENCHMARKS.md): the GEMM path sustains
about ``GEMM_FLOPS_PER_S`` on its useful work plus one pass over the column buffer at
``COPY_BYTES_PER_S``; the FFT path about ``FFT_FLOPS_PER_S`` on its transforms and
``SPECTRAL_FLOPS_PER_S`` on the per-frequency channel products
(:func:`cnnlab.ops.fft.fft_flops`, :func:`cnnlab.ops.fft.spectral_product_flops`).
The choice only has to be right where the two differ by a
lot (a 5x5 kernel: GEMM; a 31x31 kernel or a 255-tap 1-D kernel: FFT).
``pooling_in_conv_pays`` makes the same kind of choice for a convolution followed by max
pooling: one strided convolution (``conv_pool.py``) or the two ops.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ._args import PadPairs, prod
from .fft import fft_conv_backward, fft_conv_forward, fft_flops, spectral_product_flops
from .gemm import GemmPlan, all_finite, conv_backward, conv_forward, gemm_plan
from .pad import pad_backward, pad_forward

ALGORITHMS = ("auto", "gemm", "fft")

GEMM_FLOPS_PER_S = 1.2e11
COPY_BYTES_PER_S = 3.5e10
FFT_FLOPS_PER_S = 1.3e10
# The spectral channel contraction is thousands of small complex matmuls (one per
# frequency), far below BLAS's large-matrix rate: ResNet 3x3 picked FFT and ran 3x slower
# than GEMM until this term got its own rate (benchmarks/bench_conv.py --fit).
SPECTRAL_FLOPS_PER_S = 4.0e9
# Fixed cost of one call (transform planning, spectra allocation) that makes FFT lose on
# small problems whatever their flop count; GEMM's column set-up is far cheaper.
FFT_CALL_SECONDS = 3e-4
GEMM_CALL_SECONDS = 2e-5


def gemm_seconds(geo: GemmPlan, itemsize: int) -> float:
    taps = prod(geo.kernel)
    flops = 2.0 * geo.columns * geo.out_channels * taps * geo.in_channels / geo.groups
    col_bytes = 2.0 * geo.columns * taps * geo.in_channels * itemsize
    return GEMM_CALL_SECONDS + flops / GEMM_FLOPS_PER_S + col_bytes / COPY_BYTES_PER_S


def fft_seconds(geo: GemmPlan) -> float:
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(geo.in_spatial, geo.padding))
    args = (geo.batch, geo.in_channels, geo.out_channels, geo.groups, padded)
    products = spectral_product_flops(*args)
    transforms = fft_flops(*args) - products
    return FFT_CALL_SECONDS + transforms / FFT_FLOPS_PER_S + products / SPECTRAL_FLOPS_PER_S


# Passes over the stride-1 convolution's output that its max pooling costs when run on its
# own (the forward's strided 2-tap stages and the backward), at COPY_BYTES_PER_S. With it
# the model picks the faster of the two on every shape of benchmarks/bench_conv_pool.py:
# the fused layer for LeNet-5's, CIFAR's first and an 8->16 3x3 layer, the two ops for a
# 64->64 3x3 and a 256->256 1x1 layer (the shifted kernels' zeros cost more there).
POOL_PASSES = 6


@lru_cache(maxsize=512)
def pooling_in_conv_pays(stride_one: GemmPlan, fused: GemmPlan, itemsize: int = 4
                         ) -> bool:
    """Whether the strided convolution ``fused`` (:mod:`cnnlab.ops.conv_pool`) is cheaper
    than the stride-1 convolution ``stride_one`` followed by its max pooling."""
    pool_bytes = POOL_PASSES * stride_one.columns * stride_one.out_channels * itemsize
    separate = gemm_seconds(stride_one, itemsize) + pool_bytes / COPY_BYTES_PER_S
    return gemm_seconds(fused, itemsize) < separate


@lru_cache(maxsize=512)
def choose_conv_method(geo: GemmPlan, itemsize: int = 4) -> str:
    """``'gemm'`` or ``'fft'``: whichever the cost model says is faster for this geometry."""
    if geo.batch == 0 or geo.columns == 0:
        return "gemm"
    return "fft" if fft_seconds(geo) < gemm_seconds(geo, itemsize) else "gemm"

@dataclass(frozen=True)
class ConvRequest:
    """Canonical settings of one convolution (``padding``: per-dimension (lo, hi))."""

    stride: tuple[int, ...]
    padding: PadPairs
    dilation: tuple[int, ...]
    groups: int
    padding_mode: str = "zeros"
    algorithm: str = "auto"
    layout: str = "auto"  # GEMM column order: "auto", "image" or "batch" (gemm_plan)


def bias_grad(gy: np.ndarray) -> np.ndarray:
    """VJP of adding ``bias[c]`` over (N, C, *spatial): sum over batch and space.

    ``einsum`` runs 2-4x faster than ``sum(axis=(0, 2, ...))`` on these shapes.
    """
    return np.einsum("ncl->c", gy.reshape(gy.shape[0], gy.shape[1], prod(gy.shape[2:])))


def _prepare(x: np.ndarray, w_shape: tuple[int, ...], spec: ConvRequest
             ) -> tuple[np.ndarray, GemmPlan]:
    """Pad explicitly for non-zero modes; zero padding is folded into the GEMM grid."""
    if spec.padding_mode != "zeros":
        x = pad_forward(x, spec.padding, spec.padding_mode)
        padding = ((0, 0),) * len(spec.padding)
    else:
        padding = spec.padding
    geo = gemm_plan(x.shape, w_shape, spec.stride, padding, spec.dilation, spec.groups,
                        spec.layout)
    return x, geo


def _method(geo: GemmPlan, spec: ConvRequest, *arrays: np.ndarray | None) -> str:
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


def _zero_padded(x: np.ndarray, geo: GemmPlan) -> np.ndarray:
    return pad_forward(x, geo.padding, "zeros")


def conv_nd(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, spec: ConvRequest,
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
    x: np.ndarray, w: np.ndarray, gy: np.ndarray, spec: ConvRequest,
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


def _transpose_geometry(x_shape: tuple[int, ...], w_shape: tuple[int, ...], spec: ConvRequest,
                        out_spatial: tuple[int, ...]) -> GemmPlan:
    """The convolution whose adjoint is this transposed convolution.

    That convolution maps (N, C_out_t, *out_spatial) to x's shape with weight ``w`` read as
    (C_in_t, C_out_t/groups, *k), i.e. C_out = x's channels.
    """
    conv_x_shape = (x_shape[0], w_shape[1] * spec.groups, *out_spatial)
    return gemm_plan(conv_x_shape, w_shape, spec.stride, spec.padding, spec.dilation,
                         spec.groups)


def conv_transpose_nd(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, spec: ConvRequest,
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
    x: np.ndarray, w: np.ndarray, gy: np.ndarray, spec: ConvRequest,
    need_input: bool = True, need_weight: bool = True, need_bias: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """VJPs of :func:`conv_transpose_nd`: grad_x is the convolution of gy; grad_w is the
    convolution's weight-VJP with the roles of input and output gradient swapped."""
    out_spatial = gy.shape[2:]
    geo = _transpose_geometry(x.shape, w.shape, spec, out_spatial)
    conv_spec = ConvRequest(spec.stride, spec.padding, spec.dilation, spec.groups, "zeros",
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
