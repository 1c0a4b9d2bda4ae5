"""The FFT convolution (ops/fft.py), forced, against the reference and torch, float64.

Each test forces ``algorithm="fft"``, whatever the cost model in ops/dispatch.py would
choose, and counts the calls of the FFT kernels, so the forcing cannot silently fall back
to the GEMM: forward and both VJPs, with strides, dilation, groups and every padding mode,
the transposed convolution, the kernels on their own (large kernels too), and the
documented fallback for NaN/inf. Values are compared with the reference
(ops/reference.py, the first oracle) and with torch through ``check_vjp``.
Names: ``TF`` is torch.nn.functional.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _check import (
    assert_close,
    check_vjp,
    conv_arrays,
    conv_case,
    conv_transpose_case,
    count_calls,
    reference_conv,
    reference_conv_transpose,
    torch_conv_of,
    torch_conv_transpose_of,
)
from cnnlab.ops import dispatch, fft, reference
from cnnlab.ops.dispatch import ConvRequest

FFT_KERNELS = ("fft_conv_forward", "fft_conv_backward")  # as the dispatcher calls them


@pytest.mark.parametrize("nd", [1, 2, 3])
@settings(max_examples=40)
@given(data=st.data())
def test_fft_conv_matches_reference_and_torch(nd, data):
    case = data.draw(conv_case(nd, algorithm="fft"))
    x, w, b, rng = conv_arrays(case)
    request = case["request"]
    ours = (lambda x, w, b: dispatch.conv_nd(x, w, b, request),
            lambda g, x, w, b: dispatch.conv_nd_backward(x, w, g, request,
                                                         need_bias=b is not None))
    expected, theirs = reference_conv(request), torch_conv_of(request)
    with count_calls(dispatch, *FFT_KERNELS) as calls:
        check_vjp(ours, expected, [x, w, b], rng, what=f"reference {request}")
        check_vjp(ours, theirs, [x, w, b], rng, what=f"torch {request}")
    assert calls == {"fft_conv_forward": 2, "fft_conv_backward": 2}


@pytest.mark.parametrize("nd", [1, 2, 3])
@settings(max_examples=30)
@given(data=st.data())
def test_fft_conv_transpose_matches_reference_and_torch(nd, data):
    case = data.draw(conv_transpose_case(nd, algorithm="fft"))
    x, w, b, rng = conv_arrays(case, transposed=True)
    request, out_spatial = case["request"], case["out_spatial"]
    ours = (lambda x, w, b: dispatch.conv_transpose_nd(x, w, b, request, out_spatial),
            lambda g, x, w, b: dispatch.conv_transpose_nd_backward(
                x, w, g, request, need_bias=b is not None))
    expected = reference_conv_transpose(request, out_spatial)
    theirs = torch_conv_transpose_of(case)
    with count_calls(dispatch, *FFT_KERNELS) as calls:
        check_vjp(ours, expected, [x, w, b], rng, what="reference")
        check_vjp(ours, theirs, [x, w, b], rng, what="torch")
    # forward: one input-VJP; backward: a forward (grad_x) and a weight-VJP, per check
    assert calls == {"fft_conv_forward": 2, "fft_conv_backward": 4}


# ---------------------------------------------------------------------------------------
# The kernels on their own: zero-padded input in, gradient w.r.t. the padded input out.

KERNEL_CASES = [
    # (padded input shape, weight shape, stride, dilation, groups)
    ((2, 1, 300), (2, 1, 255), (1,), (1,), 1),         # a long 1-D filter: FFT's home
    ((1, 2, 40), (4, 1, 7), (3,), (4,), 2),
    ((2, 3, 21, 19), (2, 3, 9, 9), (2, 1), (1, 1), 1),  # a large 2-D kernel
    ((1, 4, 12, 13), (6, 2, 3, 4), (1, 2), (3, 2), 2),
    ((1, 2, 7, 8, 9), (2, 1, 3, 2, 3), (2, 1, 3), (1, 2, 1), 2),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "dilation", "groups"),
                         KERNEL_CASES)
def test_fft_kernels_match_reference(x_shape, w_shape, stride, dilation, groups):
    rng = np.random.default_rng(sum(x_shape))
    nd = len(stride)
    xp, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    request = ConvRequest(stride, ((0, 0),) * nd, dilation, groups)
    expected = reference.conv_forward(xp, w, None, request)
    out_spatial = expected.shape[2:]
    y = fft.fft_conv_forward(xp, w, stride, dilation, groups, out_spatial)
    assert_close(y, expected, 1e-10, 1e-10, "fft_conv_forward")
    gy = rng.standard_normal(y.shape)
    grad_x, grad_w, _ = reference.conv_backward(xp, w, gy, request, need_bias=False)
    fft_grad_x, fft_grad_w = fft.fft_conv_backward(xp, w, gy, x_shape[2:], stride, dilation,
                                                   groups)
    assert_close(fft_grad_x, grad_x, 1e-10, 1e-10, "fft_conv_backward grad_x")
    assert_close(fft_grad_w, grad_w, 1e-10, 1e-10, "fft_conv_backward grad_w")


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_forced_fft_with_nonfinite_input_takes_the_gemm_like_the_reference(bad):
    """A transform would smear one NaN/inf over every output; forced FFT then runs the
    GEMM (ops/dispatch.py), which marks exactly the windows that touch it, as the
    reference does."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 8, 9))
    x[0, 1, 3, 4] = bad
    w = rng.standard_normal((3, 2, 3, 3))
    request = ConvRequest((1, 2), ((1, 1), (1, 1)), (1, 1), 1, "circular", "fft")
    with count_calls(dispatch, *FFT_KERNELS) as calls:
        ours = dispatch.conv_nd(x, w, None, request)
    assert calls["fft_conv_forward"] == 0
    expected = reference.conv_forward(x, w, None, request)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(ours), np.isinf(expected))
    assert 0 < (~np.isfinite(expected)).sum() < expected.size
    assert_close(ours, expected, 1e-10, 1e-10, "finite outputs")
