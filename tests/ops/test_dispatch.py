"""The cost model of cnnlab.ops.dispatch, shared by the layers and cnnlab.signal.

What it promises, tested without timing anything: the choices the module docstring names
(a 3x3 or 5x5 layer on GEMM, a 31x31 or 255-tap kernel on FFT), one set of constants for
both users, flop rates halved for float64, and ``convolve_seconds`` built from the same
engine terms as the layers' ``gemm_seconds``.
"""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab import signal
from cnnlab.ops import dispatch
from cnnlab.ops.gemm import gemm_plan


def layer(batch, c_in, spatial, c_out, kernel, padding):
    """GEMM plan of a stride-1 layer with a cubic kernel and symmetric padding."""
    dims = len(spatial)
    return gemm_plan((batch, c_in, *spatial), (c_out, c_in, *(kernel,) * dims), (1,) * dims,
                     ((padding, padding),) * dims, (1,) * dims, 1)


@pytest.mark.parametrize("itemsize", [4, 8])
@pytest.mark.parametrize("geo, expected", [
    (layer(32, 64, (56, 56), 64, 3, 1), "gemm"),     # ResNet 3x3
    (layer(128, 1, (28, 28), 6, 5, 2), "gemm"),      # LeNet C1
    (layer(8, 16, (64, 64), 16, 31, 15), "fft"),     # 2-D k=31
    (layer(16, 32, (4096,), 32, 255, 127), "fft"),   # 1-D k=255
])
def test_layer_choices_far_from_the_crossover(geo, expected, itemsize):
    dispatch.choose_conv_method.cache_clear()
    assert dispatch.choose_conv_method(geo, itemsize) == expected


def test_float64_runs_flops_at_half_the_rate():
    """Only the per-call constants keep their value; every flop term doubles."""
    geo = layer(8, 16, (64, 64), 16, 31, 15)
    transforms_32 = dispatch.fft_seconds(geo, 4) - dispatch.FFT_LAYER_CALL_SECONDS
    transforms_64 = dispatch.fft_seconds(geo, 8) - dispatch.FFT_LAYER_CALL_SECONDS
    assert transforms_64 == pytest.approx(2 * transforms_32)
    fft_32 = dispatch.convolve_seconds((256, 256), (31, 31), "full", np.dtype(np.float32))
    fft_64 = dispatch.convolve_seconds((256, 256), (31, 31), "full", np.dtype(np.float64))
    call = dispatch.FFT_CONVOLVE_CALL_SECONDS
    assert fft_64["fft"] - call == pytest.approx(2 * (fft_32["fft"] - call))


def test_signal_direct_is_the_layer_engine_with_one_channel():
    """N-D direct = gemm_seconds of a batch-1, 1-channel layer with one column per output."""
    image, kernel = (100, 80), (9, 7)
    geo = gemm_plan((1, 1, *image), (1, 1, *kernel), (1, 1), ((8, 8), (6, 6)), (1, 1), 1)
    modelled = dispatch.convolve_seconds(image, kernel, "full", np.dtype(np.float64))
    assert modelled["direct"] == pytest.approx(dispatch.gemm_seconds(geo, 8))


def test_complex_fft_costs_two_real_transforms():
    real = dispatch.convolve_seconds((4096,), (255,), "full", np.dtype(np.float64))["fft"]
    cplx = dispatch.convolve_seconds((4096,), (255,), "full", np.dtype(np.complex128))["fft"]
    call = dispatch.FFT_CONVOLVE_CALL_SECONDS
    # Full-spectrum lengths (next_fast_len(real=False)) may differ a little from rfft's.
    assert 1.8 < (cplx - call) / (real - call) < 2.5


def test_a_single_line_transforms_at_its_own_rate():
    """A 1-D signal is one line; the same samples as 2-D rows are many lines."""
    line = dispatch.convolve_seconds((1, 20_000), (1, 255), "full", np.dtype(np.float64))
    rows = dispatch.convolve_seconds((2, 10_000), (1, 255), "full", np.dtype(np.float64))
    assert line["fft"] > rows["fft"]


def test_constants_are_defined_once():
    """Every cost constant lives in dispatch; cnnlab.signal reads them from there."""
    names = [name for name in vars(dispatch) if name.endswith(("_PER_S", "_SECONDS"))]
    assert {"FFT_LAYER_CALL_SECONDS", "FFT_CONVOLVE_CALL_SECONDS", "FFT_FLOPS_PER_S",
            "FFT_LINE_FLOPS_PER_S"} <= set(names)
    assert not [name for name in vars(signal) if name.endswith(("_PER_S", "_SECONDS"))]
