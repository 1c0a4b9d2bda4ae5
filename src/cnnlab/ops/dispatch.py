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

The cost model is the one of the library: the layers' :func:`choose_conv_method` and
:func:`cnnlab.signal.choose_conv_method` (through :func:`convolve_seconds`) share its
constants, each defined once beside the benchmark that fitted it
(``benchmarks/bench_conv.py --fit`` for the layers' terms, ``benchmarks/bench_signal.py
--fit`` for those only signal's plain convolutions exercise). The GEMM path sustains about
``GEMM_FLOPS_PER_S`` on its useful work plus one pass over the column buffer at
``COPY_BYTES_PER_S``; the FFT path about ``FFT_FLOPS_PER_S`` on its transforms and
``SPECTRAL_FLOPS_PER_S`` on the per-frequency channel products
(:func:`cnnlab.ops.fft.fft_flops`, :func:`cnnlab.ops.fft.spectral_product_flops`).
The choice only has to be right where the two differ by a
lot (a 5x5 kernel: GEMM; a 31x31 kernel or a 255-tap 1-D kernel: FFT).
``pooling_in_conv_pays`` makes the same kind of choice for a convolution followed by max
pooling: one strided convolution (``conv_pool.py``) or the two ops.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from . import reference
from ._args import ConvRequest, all_finite, prod, signal_mode_window
from .fft import (
    fft_conv_backward,
    fft_conv_forward,
    fft_flops,
    fft_shape,
    spectral_product_flops,
    transform_flops,
)
from .gemm import GemmPlan, conv_backward, conv_forward, gemm_plan
from .pad import pad_backward, pad_forward

ALGORITHMS = ("auto", "direct", "gemm", "fft")

# --- the cost model ---------------------------------------------------------------------
# Each constant is fitted by the benchmark named beside it, on the 2-core development machine
# (AVX-512 Xeon/EPYC, NumPy 2.4, SciPy 1.17, OpenBLAS 0.3.31). Flop rates are float32 rates:
# a float64 (or complex128) SIMD lane holds half as many numbers and runs at half the rate
# (scipy.fft.rfftn measured 1.6-1.9x slower in float64, see ``_rate``); byte rates need no
# such factor, the bytes already count the itemsize.

# GEMM engine (ops/gemm.py): layers, and cnnlab.signal's N-D direct sums.
# benchmarks/bench_conv.py --fit
GEMM_FLOPS_PER_S = 1.2e11        # useful multiply-adds of the GEMMs, x2
COPY_BYTES_PER_S = 3.5e10        # writing plus reading the column buffer
GEMM_CALL_SECONDS = 2e-5         # plan, padded grid and output of one engine call

# FFT (ops/fft.py). Transforms, on the flops of cnnlab.ops.fft.transform_flops.
# benchmarks/bench_conv.py --fit: many lines per transform, which pocketfft runs several at
# a time in SIMD registers.
FFT_FLOPS_PER_S = 1.3e10
# A transform along one axis of an array with no other axis, i.e. a single line (convolve
# of two 1-D signals): nothing to vectorise across, and long lines outgrow the caches
# (rfft of 10^5 float64 samples: 3.1e9-3.3e9 flop/s). benchmarks/bench_signal.py --fit: least
# squares says 1.3e10, pulled up by short lines that stay in cache, and then misjudges
# 10^5-sample signals; choices are best and flat for 5e9..9e9 (83 of 87 right).
FFT_LINE_FLOPS_PER_S = 7e9
# The spectral channel contraction is thousands of small complex matmuls (one per
# frequency), far below BLAS's large-matrix rate: ResNet 3x3 picked FFT and ran 3x slower
# than GEMM until this term got its own rate (benchmarks/bench_conv.py --fit).
SPECTRAL_FLOPS_PER_S = 4.0e9
# Fixed costs of one call, which make FFT lose on small problems whatever their flop count.
# The two paths differ: a layer regroups channels, transposes spectra and runs a batched
# matmul (benchmarks/bench_conv.py --fit); cnnlab.signal's fft_convolve is three bare
# scipy.fft calls, a product and a crop (benchmarks/bench_signal.py --fit).
FFT_LAYER_CALL_SECONDS = 3e-4
FFT_CONVOLVE_CALL_SECONDS = 3.8e-5

# numpy.convolve: cnnlab.signal's 1-D direct sum (SciPy's too). It computes each output as
# one dot product, so it costs per output and per multiply-add; measured in float64, used
# for every dtype. benchmarks/bench_signal.py --fit
NP_CONVOLVE_CALL_SECONDS = 3.4e-6
NP_CONVOLVE_OUTPUT_SECONDS = 9.5e-9
NP_CONVOLVE_MACS_PER_S = 1.56e10


def _rate(flops_per_s: float, itemsize: int) -> float:
    """A float32 flop rate scaled to numbers of ``itemsize`` bytes: half of it for float64
    (and complex64), a quarter for complex128."""
    return flops_per_s * 4.0 / max(itemsize, 4)


def _gemm_engine_seconds(columns: int, taps: int, in_channels: int, out_channels: int,
                         groups: int, itemsize: int) -> float:
    """Modelled time of :func:`cnnlab.ops.gemm.conv_forward`: call overhead, GEMM flops and
    one write plus one read of the (taps * C_in, columns) column buffer."""
    flops = 2.0 * columns * out_channels * taps * in_channels / groups
    col_bytes = 2.0 * columns * taps * in_channels * itemsize
    return (GEMM_CALL_SECONDS + flops / _rate(GEMM_FLOPS_PER_S, itemsize)
            + col_bytes / COPY_BYTES_PER_S)


def gemm_seconds(geo: GemmPlan, itemsize: int) -> float:
    """Modelled seconds of the GEMM forward of a layer with this geometry."""
    return _gemm_engine_seconds(geo.columns, prod(geo.kernel), geo.in_channels,
                                geo.out_channels, geo.groups, itemsize)


def fft_seconds(geo: GemmPlan, itemsize: int = 4) -> float:
    """Modelled seconds of the FFT forward of a layer (:func:`cnnlab.ops.fft.fft_flops`)."""
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(geo.in_spatial, geo.padding))
    args = (geo.batch, geo.in_channels, geo.out_channels, geo.groups, padded)
    products = spectral_product_flops(*args)
    transforms = fft_flops(*args) - products
    return (FFT_LAYER_CALL_SECONDS + transforms / _rate(FFT_FLOPS_PER_S, itemsize)
            + products / _rate(SPECTRAL_FLOPS_PER_S, itemsize))


def convolve_seconds(shape1: tuple[int, ...], shape2: tuple[int, ...], mode: str,
                     dtype: np.dtype) -> dict[str, float]:
    """Modelled seconds of ``cnnlab.signal.convolve(in1, in2, mode, method)`` for
    ``method`` ``'direct'`` and ``'fft'``, with non-empty inputs of these shapes whose
    ``np.result_type`` is ``dtype``.

    ``'direct'``: numpy.convolve for 1-D inputs (one dot product per output); otherwise the
    GEMM engine with a batch of one, one channel, the smaller input as the kernel and one
    column per kept output. ``'fft'``: three transforms of the full size ``s1 + s2 - 1``
    (:func:`cnnlab.ops.fft.fft_convolve`; a complex transform is twice a real one), at
    :data:`FFT_LINE_FLOPS_PER_S` when they are a single line. Modes select outputs:
    ``full`` ``s1 + s2 - 1``, ``same`` ``s1``, ``valid`` ``|s1 - s2| + 1``.
    """
    dtype = np.dtype(dtype)
    full, _, kept = signal_mode_window(shape1, shape2, mode)
    taps = min(prod(shape1), prod(shape2))
    # Bytes per number as computed: bool and ints in 64 bits (exact int64 sums, or float64
    # transforms), float16 in float32.
    itemsize = 8 if dtype.kind in "biu" else 4 if dtype == np.float16 else dtype.itemsize
    complex_input = dtype.kind == "c"
    if len(shape1) == 1:
        # numpy.convolve's outputs overlap the shorter input in all but the ends.
        outputs = prod(kept) if mode != "same" or shape1[0] >= shape2[0] else prod(full)
        macs = outputs * taps * (4.0 if complex_input else 1.0)  # a complex one is four
        direct = (NP_CONVOLVE_CALL_SECONDS + outputs * NP_CONVOLVE_OUTPUT_SECONDS
                  + macs / NP_CONVOLVE_MACS_PER_S)
    else:
        direct = _gemm_engine_seconds(prod(kept), taps, 1, 1, 1, itemsize)
    shape = fft_shape(full, real=not complex_input)
    single_line = sum(n > 1 for n in full) == 1
    rate = FFT_LINE_FLOPS_PER_S if single_line else FFT_FLOPS_PER_S
    # A complex transform is two real ones' work on numbers of half the itemsize.
    transforms = 3.0 * (2.0 if complex_input else 1.0) * transform_flops(shape)
    real_itemsize = itemsize // 2 if complex_input else itemsize
    fft = FFT_CONVOLVE_CALL_SECONDS + transforms / _rate(rate, real_itemsize)
    return {"direct": direct, "fft": fft}


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
    return "fft" if fft_seconds(geo, itemsize) < gemm_seconds(geo, itemsize) else "gemm"


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
    if spec.algorithm == "direct":
        return reference.conv_forward(x, w, bias, spec)
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
    if spec.algorithm == "direct":
        return reference.conv_backward(x, w, gy, spec, need_input, need_weight, need_bias)
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
                     spec.groups, spec.layout)


def conv_transpose_nd(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, spec: ConvRequest,
                      out_spatial: tuple[int, ...]) -> np.ndarray:
    """x: (N, C_in, *spatial), w: (C_in, C_out/groups, *kernel) -> (N, C_out, *out_spatial).

    The adjoint of the convolution with the same stride, padding, dilation and groups.
    """
    if spec.algorithm == "direct":
        return reference.conv_transpose_forward(x, w, bias, spec, out_spatial)
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
    if spec.algorithm == "direct":
        return reference.conv_transpose_backward(x, w, gy, spec, need_input, need_weight,
                                                 need_bias)
    out_spatial = gy.shape[2:]
    geo = _transpose_geometry(x.shape, w.shape, spec, out_spatial)
    conv_spec = ConvRequest(spec.stride, spec.padding, spec.dilation, spec.groups, "zeros",
                            spec.algorithm, spec.layout)
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
