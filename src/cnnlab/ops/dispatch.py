"""Which algorithm computes a convolution: an explicit, testable cost model.

``choose_conv_method`` returns a name; ``ALGORITHMS`` lists what may be forced. A new
algorithm joins by adding its name here and a cost function beside the two below.

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

from functools import lru_cache

from ._args import prod
from .conv import ConvGeometry
from .fft import fft_flops, spectral_product_flops

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


def gemm_seconds(geo: ConvGeometry, itemsize: int) -> float:
    taps = prod(geo.kernel)
    flops = 2.0 * geo.columns * geo.out_channels * taps * geo.in_channels / geo.groups
    col_bytes = 2.0 * geo.columns * taps * geo.in_channels * itemsize
    return GEMM_CALL_SECONDS + flops / GEMM_FLOPS_PER_S + col_bytes / COPY_BYTES_PER_S


def fft_seconds(geo: ConvGeometry) -> float:
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
def pooling_in_conv_pays(stride_one: ConvGeometry, fused: ConvGeometry, itemsize: int = 4
                         ) -> bool:
    """Whether the strided convolution ``fused`` (:mod:`cnnlab.ops.conv_pool`) is cheaper
    than the stride-1 convolution ``stride_one`` followed by its max pooling."""
    pool_bytes = POOL_PASSES * stride_one.columns * stride_one.out_channels * itemsize
    separate = gemm_seconds(stride_one, itemsize) + pool_bytes / COPY_BYTES_PER_S
    return gemm_seconds(fused, itemsize) < separate


@lru_cache(maxsize=512)
def choose_conv_method(geo: ConvGeometry, itemsize: int = 4) -> str:
    """``'gemm'`` or ``'fft'``: whichever the cost model says is faster for this geometry."""
    if geo.batch == 0 or geo.columns == 0:
        return "gemm"
    return "fft" if fft_seconds(geo) < gemm_seconds(geo, itemsize) else "gemm"
