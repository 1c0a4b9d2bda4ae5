"""The lecture's claims about convolution, checked on cnnlab.functional.

Each test states one claim of the lecture (/work/shared/seed, "Convolution: commutativity /
linearity / shift-equivariance", "Boundary conditions and stride") or of Dumoulin & Visin
(2016, section 4: the transposed convolution is the adjoint of the convolution), and checks
it for random signals and options with both algorithms, in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import _lecture as lecture
from _check import assert_close
from cnnlab import functional as F

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
ALGORITHMS = ("gemm", "fft")
MAX_SIZE = {1: 12, 2: 7, 3: 5}
TOL = 1e-10


def true_convolution(f, g, algorithm):
    """The lecture's (f * g)[n] = sum_k f[k] g[n - k] on zero-padded 1-D signals: a
    convolution layer (cross-correlation) with the flipped kernel and 'full' padding."""
    return F.conv1d(f[None, None], g[::-1].copy()[None, None], padding="full",
                    algorithm=algorithm)[0, 0]


@st.composite
def signals(draw, max_len=9):
    length = draw(st.integers(1, max_len))
    values = draw(st.lists(st.floats(-10, 10), min_size=length, max_size=length))
    return np.array(values, dtype=np.float64)


@st.composite
def layer_options(draw, nd, modes=("zeros", "reflect", "replicate", "circular")):
    """Shapes and options for a convolution of rank ``nd`` with explicit (lo, hi) padding."""
    groups = draw(st.integers(1, 2))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(nd))
    size = tuple(draw(st.integers(3, MAX_SIZE[nd])) for _ in range(nd))
    mode = draw(st.sampled_from(modes))
    for n, (lo, hi), k, d in zip(size, padding, kernel, dilation, strict=True):
        assume(n + lo + hi >= d * (k - 1) + 1)
    return {
        "x_shape": (draw(st.integers(1, 2)), c_in, *size),
        "w_shape": (c_out, c_in // groups, *kernel),
        "kwargs": {"padding": padding, "dilation": dilation, "groups": groups,
                   "padding_mode": mode},
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


# ---------------------------------------------------------------------------------------
# Commutativity: f * g == g * f.


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@given(f=signals(), g=signals())
def test_convolution_commutes(f, g, algorithm):
    fg = true_convolution(f, g, algorithm)
    gf = true_convolution(g, f, algorithm)
    assert fg.shape == (len(f) + len(g) - 1,)
    scale = max(np.abs(f).max() * np.abs(g).sum(), 1.0)
    np.testing.assert_allclose(fg, gf, atol=TOL * scale, rtol=TOL)
    # ... and both are the textbook convolution sum.
    np.testing.assert_allclose(fg, np.convolve(f, g), atol=TOL * scale, rtol=TOL)


# ---------------------------------------------------------------------------------------
# Linearity: G(a x + b z) = a G(x) + b G(z), in the input and in the filter.


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(case=st.data(), a=st.floats(-3, 3), b=st.floats(-3, 3))
def test_convolution_is_linear(nd, algorithm, case, a, b):
    options = case.draw(layer_options(nd))
    rng = np.random.default_rng(options["seed"])
    x, z = rng.standard_normal((2, *options["x_shape"]))
    w, v = rng.standard_normal((2, *options["w_shape"]))
    kw = {**options["kwargs"], "algorithm": algorithm}
    conv = CONV[nd]
    combined = conv(a * x + b * z, w, **kw)
    assert_close(combined, a * conv(x, w, **kw) + b * conv(z, w, **kw), TOL, TOL, "input")
    combined = conv(x, a * w + b * v, **kw)
    assert_close(combined, a * conv(x, w, **kw) + b * conv(x, v, **kw), TOL, TOL, "filter")


# ---------------------------------------------------------------------------------------
# Shift-equivariance: T_v(x) * w == T_v(x * w).


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(case=st.data())
def test_circular_same_convolution_is_exactly_shift_equivariant(nd, algorithm, case):
    """On a periodic domain (circular padding, 'same' size) every shift commutes."""
    options = case.draw(layer_options(nd, modes=("circular",)))
    kernel, dilation = options["w_shape"][2:], options["kwargs"]["dilation"]
    size = options["x_shape"][2:]
    for n, k, d in zip(size, kernel, dilation, strict=True):
        assume(d * (k - 1) <= n)  # circular padding of at most one period
    shift = tuple(case.draw(st.integers(-n, n)) for n in size)
    rng = np.random.default_rng(options["seed"])
    x = rng.standard_normal(options["x_shape"])
    w = rng.standard_normal(options["w_shape"])
    kw = {**options["kwargs"], "padding": "same", "algorithm": algorithm}
    axes = tuple(range(2, 2 + nd))
    y = CONV[nd](x, w, **kw)
    assert y.shape[2:] == size
    shifted = CONV[nd](np.roll(x, shift, axis=axes), w, **kw)
    assert_close(shifted, np.roll(y, shift, axis=axes), TOL, TOL, f"shift {shift}")


def interior_mask(size, kernel, dilation, pads, shift):
    """Outputs whose window, in the shifted input, lies in the part that moved intact:
    indices ``j`` with ``shift <= j < n`` (shift >= 0) or ``0 <= j < n + shift`` (< 0)."""
    masks = []
    for n, k, d, (lo, hi), v in zip(size, kernel, dilation, pads, shift, strict=True):
        first = np.arange(n + lo + hi - d * (k - 1)) - lo  # first input index per output
        last = first + d * (k - 1)
        low, high = (v, n) if v >= 0 else (0, n + v)
        masks.append((first >= low) & (last < high))
    return np.ix_(*masks)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(case=st.data())
def test_zero_padded_convolution_is_shift_equivariant_away_from_the_border(nd, algorithm,
                                                                            case):
    options = case.draw(layer_options(nd, modes=("zeros",)))
    size = options["x_shape"][2:]
    shift = tuple(case.draw(st.integers(-(n // 2), n // 2)) for n in size)
    rng = np.random.default_rng(options["seed"])
    x = rng.standard_normal(options["x_shape"])
    w = rng.standard_normal(options["w_shape"])
    kw = {**options["kwargs"], "algorithm": algorithm}
    axes = tuple(range(2, 2 + nd))
    y_shifted_input = CONV[nd](np.roll(x, shift, axis=axes), w, **kw)
    shifted_output = np.roll(CONV[nd](x, w, **kw), shift, axis=axes)
    mask = interior_mask(size, options["w_shape"][2:], kw["dilation"], kw["padding"], shift)
    inside = (Ellipsis, *mask)
    assume(y_shifted_input[inside].size > 0)
    assert_close(y_shifted_input[inside], shifted_output[inside], TOL, TOL, f"shift {shift}")


# ---------------------------------------------------------------------------------------
# Stride: "the same as no stride followed by downsampling".


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(case=st.data())
def test_stride_is_stride_one_then_downsampling(nd, algorithm, case):
    options = case.draw(layer_options(nd))
    stride = tuple(case.draw(st.integers(1, 4)) for _ in range(nd))
    rng = np.random.default_rng(options["seed"])
    x = rng.standard_normal(options["x_shape"])
    w = rng.standard_normal(options["w_shape"])
    b = rng.standard_normal(options["w_shape"][0])
    kw = {**options["kwargs"], "algorithm": algorithm}
    dense = CONV[nd](x, w, b, stride=1, **kw)
    strided = CONV[nd](x, w, b, stride=stride, **kw)
    keep = (Ellipsis, *(slice(None, None, s) for s in stride))
    assert_close(strided, dense[keep], TOL, TOL, f"stride {stride}")


# ---------------------------------------------------------------------------------------
# The transposed convolution is the adjoint: <conv(x, w), y> == <x, conv_transpose(y, w)>.


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(case=st.data())
def test_transposed_convolution_is_the_adjoint(nd, algorithm, case):
    options = case.draw(layer_options(nd, modes=("zeros",)))
    stride = tuple(case.draw(st.integers(1, 3)) for _ in range(nd))
    kw = {key: options["kwargs"][key] for key in ("padding", "dilation", "groups")}
    size, kernel = options["x_shape"][2:], options["w_shape"][2:]
    # The transposed convolution's output must have x's size: output_padding (< stride)
    # takes up the input samples that the last stride step skips.
    output_padding = []
    for axis, (lo, hi) in enumerate(kw["padding"]):
        span = size[axis] + lo + hi - kw["dilation"][axis] * (kernel[axis] - 1) - 1
        output_padding.append(span % stride[axis])
    rng = np.random.default_rng(options["seed"])
    x = rng.standard_normal(options["x_shape"])
    w = rng.standard_normal(options["w_shape"])
    forward = CONV[nd](x, w, stride=stride, algorithm=algorithm, **kw)
    y = rng.standard_normal(forward.shape)
    backward = CONV_T[nd](y, w, stride=stride, output_padding=output_padding,
                          algorithm=algorithm, **kw)
    assert backward.shape == x.shape
    left, right = np.vdot(forward, y), np.vdot(x, backward)
    scale = np.abs(forward).sum() * np.abs(y).max() + 1.0
    assert abs(left - right) <= TOL * scale, (left, right)


# ---------------------------------------------------------------------------------------
# The worked example: a 6x6 image, a 3x3 'X' filter, zero padding 1.

LECTURE_IMAGE, LECTURE_FILTER, LECTURE_RESULT = lecture.IMAGE, lecture.FILTER, lecture.FEATURE_MAP


@pytest.mark.parametrize("padding", [1, "same", (1, 1), ((1, 1), (1, 1))],
                         ids=["int", "same", "tuple", "pairs"])
@pytest.mark.parametrize("algorithm", ("auto", "gemm"))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lecture_worked_example_exactly(dtype, algorithm, padding):
    """Small integers are exact in floating point, so the sums must be too."""
    image = np.array(LECTURE_IMAGE, dtype=dtype)[None, None]
    kernel = np.array(LECTURE_FILTER, dtype=dtype)[None, None]
    result = F.conv2d(image, kernel, padding=padding, algorithm=algorithm)
    assert result.dtype == dtype
    np.testing.assert_array_equal(result[0, 0], np.array(LECTURE_RESULT, dtype=dtype))
    # Unbatched (C, H, W) gives the same.
    np.testing.assert_array_equal(F.conv2d(image[0], kernel, padding=padding,
                                           algorithm=algorithm)[0], result[0, 0])


@pytest.mark.parametrize("padding", [1, "same"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lecture_worked_example_fft(dtype, padding):
    """The FFT path rounds through complex spectra: equal within its dtype's tolerance, and
    exactly equal after rounding to the nearest integer."""
    image = np.array(LECTURE_IMAGE, dtype=dtype)[None, None]
    kernel = np.array(LECTURE_FILTER, dtype=dtype)[None, None]
    result = F.conv2d(image, kernel, padding=padding, algorithm="fft")
    assert result.dtype == dtype
    tol = 1e-10 if dtype == np.float64 else 1e-4
    assert_close(result[0, 0], np.array(LECTURE_RESULT, dtype=np.float64), tol, tol, "fft")
    np.testing.assert_array_equal(np.rint(result[0, 0]), LECTURE_RESULT)
