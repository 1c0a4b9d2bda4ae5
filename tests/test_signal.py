"""cnnlab.signal against scipy.signal, plus the lecture's claims about convolution.

Oracle: every public function is run beside its ``scipy.signal`` namesake on random 1-D,
2-D and 3-D shapes (kernels larger than the input included, odd and even sizes) through
:func:`check_scipy`, which also demands the same error when SciPy refuses the inputs.
Then SciPy's semantics at the edges (exact integers, empty inputs, the NaN/inf warning), the
lecture (commutativity, linearity, exact circular shift-equivariance, the worked correlation
example), the method chooser, the FFT shared with the layers (bits independent of worker
threads) and the error messages.
"""

from __future__ import annotations

import math
import sys
import warnings

import numpy as np
import pytest
import scipy.fft as sfft
import scipy.signal as ss
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import lambertw

import _lecture as lecture
from _check import assert_close, run_with_address_space
from cnnlab import signal as cs
from cnnlab.ops import dispatch
from cnnlab.ops import fft as ops_fft

MODES = ["full", "same", "valid"]
DTYPES = ["float64", "float32", "int64", "complex128"]
# (atol relative to the oracle's magnitude, rtol) by result kind; integers must be exact.
TOLERANCES = {"float32": (2e-5, 2e-4), "complex64": (2e-5, 2e-4)}
DEFAULT_TOLERANCE = (1e-10, 1e-9)


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Small integers for integer dtypes (exact sums), standard normals otherwise."""
    if dtype.startswith(("int", "uint")):
        return rng.integers(-9 if dtype.startswith("int") else 0, 10, shape).astype(dtype)
    if dtype.startswith("complex"):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def check_scipy(ours, theirs, *args, **kwargs) -> np.ndarray | None:
    """Same shape, dtype and values as SciPy, or the same ValueError when SciPy refuses."""
    try:
        expected = theirs(*args, **kwargs)
    except ValueError:
        with pytest.raises(ValueError, match=ours.__name__):
            ours(*args, **kwargs)
        return None
    got = ours(*args, **kwargs)
    assert got.shape == expected.shape, f"shape {got.shape} != {expected.shape}"
    assert got.dtype == expected.dtype, f"dtype {got.dtype} != {expected.dtype}"
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(got, expected)
    else:
        atol, rtol = TOLERANCES.get(str(expected.dtype), DEFAULT_TOLERANCE)
        assert_close(got, expected, atol, rtol, ours.__name__)
    return got


@st.composite
def shape_pairs(draw, ndims=(1, 2, 3), max_size=7):
    """Two shapes of one random ndim; either may be the larger in any dimension."""
    ndim = draw(st.sampled_from(ndims))
    sizes = st.integers(1, max_size)
    shape1 = tuple(draw(st.lists(sizes, min_size=ndim, max_size=ndim)))
    shape2 = tuple(draw(st.lists(sizes, min_size=ndim, max_size=ndim)))
    return shape1, shape2


seeds = st.integers(0, 2**32 - 1)


# --- oracle: scipy.signal --------------------------------------------------------------------

@settings(max_examples=250, deadline=None)
@given(shapes=shape_pairs(), dtype=st.sampled_from(DTYPES), mode=st.sampled_from(MODES),
       method=st.sampled_from(["auto", "direct", "fft"]), seed=seeds)
def test_convolve_and_correlate_match_scipy(shapes, dtype, mode, method, seed):
    rng = np.random.default_rng(seed)
    in1, in2 = (random_array(rng, s, dtype) for s in shapes)
    check_scipy(cs.convolve, ss.convolve, in1, in2, mode=mode, method=method)
    check_scipy(cs.correlate, ss.correlate, in1, in2, mode=mode, method=method)


@settings(max_examples=60, deadline=None)
@given(shapes=shape_pairs(ndims=(1, 2)), mode=st.sampled_from(MODES),
       dtypes=st.sampled_from([("int8", "int8"), ("uint8", "int8"), ("int32", "bool"),
                               ("int16", "float32")]), seed=seeds)
def test_direct_mixed_and_integer_dtypes_match_scipy_exactly(shapes, mode, dtypes, seed):
    rng = np.random.default_rng(seed)
    in1, in2 = (random_array(rng, s, d) if d != "bool" else rng.random(s) < 0.5
                for s, d in zip(shapes, dtypes, strict=True))
    check_scipy(cs.convolve, ss.convolve, in1, in2, mode=mode, method="direct")
    check_scipy(cs.correlate, ss.correlate, in1, in2, mode=mode, method="direct")


@settings(max_examples=30, deadline=None)
@given(shapes=shape_pairs(ndims=(1, 2)), mode=st.sampled_from(["full", "same"]), seed=seeds)
def test_boolean_convolution_is_logical(shapes, mode, seed):
    """bool * bool -> bool, True where some pair of Trues overlaps (np.convolve's rule).

    SciPy's N-D direct kernel has no bool loop, so the oracle runs on uint8 and tests != 0.
    """
    rng = np.random.default_rng(seed)
    in1, in2 = (rng.random(s) < 0.5 for s in shapes)
    expected = ss.convolve(in1.astype(np.uint16), in2.astype(np.uint16), mode) != 0
    for method in ("direct", "fft"):
        got = cs.convolve(in1, in2, mode, method)
        assert got.dtype == bool
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shapes", [((3,), (8,)), ((4,), (9,)), ((2, 3), (5, 6)),
                                    ((3, 2), (6, 7)), ((2, 2, 3), (3, 5, 4))])
@pytest.mark.parametrize("method", ["direct", "fft"])
def test_correlate_with_in2_larger_matches_scipy_swap(shapes, mode, method):
    """SciPy swaps the inputs when in2 is the larger one; the alignment must still match."""
    rng = np.random.default_rng(7)
    in1, in2 = (random_array(rng, s, "complex128") for s in shapes)
    got = check_scipy(cs.correlate, ss.correlate, in1, in2, mode=mode, method=method)
    if mode == "full":
        flipped = np.conj(cs.correlate(in2, in1, mode=mode, method=method))[
            (slice(None, None, -1),) * in1.ndim]
        assert_close(got, flipped, 1e-12, 1e-12, "correlate(in2, in1) reversed, conjugated")


@settings(max_examples=120, deadline=None)
@given(shapes=shape_pairs(ndims=(2,), max_size=6),
       dtype=st.sampled_from(["float64", "float32", "int64", "complex128"]),
       mode=st.sampled_from(MODES),
       boundary=st.sampled_from(["fill", "wrap", "symm", "circular", "symmetric", "pad"]),
       fillvalue=st.sampled_from([0, 1.5, -2]), seed=seeds)
def test_convolve2d_and_correlate2d_match_scipy(shapes, dtype, mode, boundary, fillvalue, seed):
    rng = np.random.default_rng(seed)
    in1, in2 = (random_array(rng, s, dtype) for s in shapes)
    for ours, theirs in ((cs.convolve2d, ss.convolve2d), (cs.correlate2d, ss.correlate2d)):
        check_scipy(ours, theirs, in1, in2, mode=mode, boundary=boundary, fillvalue=fillvalue)


@settings(max_examples=120, deadline=None)
@given(shapes=shape_pairs(max_size=9), dtype=st.sampled_from(["float64", "float32",
                                                              "int64", "complex128"]),
       mode=st.sampled_from(MODES), axes_pick=st.integers(0, 3), seed=seeds)
def test_fftconvolve_and_oaconvolve_match_scipy(shapes, dtype, mode, axes_pick, seed):
    rng = np.random.default_rng(seed)
    shape1, shape2 = shapes
    ndim = len(shape1)
    axes = [None, [0], [-1], list(range(ndim))[::-1]][axes_pick]
    if axes is not None:
        # Along axes not convolved SciPy broadcasts: make in2 size 1 or equal there.
        shape2 = tuple(n2 if a in [x % ndim for x in axes] else (1 if n2 % 2 else n1)
                       for a, (n1, n2) in enumerate(zip(shape1, shape2, strict=True)))
    in1, in2 = random_array(rng, shape1, dtype), random_array(rng, shape2, dtype)
    check_scipy(cs.fftconvolve, ss.fftconvolve, in1, in2, mode=mode, axes=axes)
    check_scipy(cs.oaconvolve, ss.oaconvolve, in1, in2, mode=mode, axes=axes)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shapes, axes", [
    (((2000,), (31,)), None),
    (((9,), (1000,)), None),
    (((300, 40), (7, 3)), None),
    (((40, 300), (3, 9)), None),
    (((120, 3), (3, 120)), None),
    (((6, 500), (1, 20)), [1]),
    (((64, 50, 2), (5, 4, 2)), [0, 1]),
])
@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128"])
def test_overlap_add_splits_long_inputs_like_scipy(shapes, axes, mode, dtype):
    """Shapes where overlap-add really cuts blocks (kernel under half the signal)."""
    rng = np.random.default_rng(3)
    in1, in2 = (random_array(rng, s, dtype) for s in shapes)
    check_scipy(cs.oaconvolve, ss.oaconvolve, in1, in2, mode=mode, axes=axes)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shapes", [((3000,), (700,)), ((700,), (3000,)),
                                    ((90, 70), (13, 40)), ((13, 40), (90, 70))])
def test_direct_on_long_inputs_and_views_matches_scipy(shapes, mode):
    """Long kernels make the engine cut its column buffer into chunks; views are fine too."""
    rng = np.random.default_rng(11)
    in1, in2 = (random_array(rng, s, "float64") for s in shapes)
    check_scipy(cs.convolve, ss.convolve, in1, in2, mode=mode, method="direct")
    reversed_view, transposed = in1[::-1], in2.T
    if in1.ndim == 2:
        reversed_view = reversed_view[:, ::2]
        in2 = transposed
    check_scipy(cs.correlate, ss.correlate, reversed_view, in2, mode=mode, method="direct")


@pytest.mark.parametrize("kernel_length", [2, 3, 10, 31, 100, 1000])
def test_overlap_add_block_length_is_scipys_optimum(kernel_length):
    """Fixed point of N = K ln(2 e N) == SciPy's Lambert-W solution, K = kernel_length - 1."""
    overlap = kernel_length - 1
    optimum = -overlap * lambertw(-1 / (2 * math.e * overlap), k=-1).real
    assert ops_fft.oa_fft_length(kernel_length) == sfft.next_fast_len(math.ceil(optimum))


def test_dtypes_follow_scipy():
    """float32 stays float32 on both paths; fftconvolve returns float for integers."""
    x32, x16 = np.ones(6, np.float32), np.ones(6, np.float16)
    assert cs.convolve(x32, x32, method="direct").dtype == np.float32
    assert cs.convolve(x32, x32, method="fft").dtype == np.float32
    assert cs.convolve(x16, x16, method="fft").dtype == np.float16
    assert cs.fftconvolve(x16, x16).dtype == ss.fftconvolve(x16, x16).dtype == np.float32
    ints = np.arange(5)
    assert cs.fftconvolve(ints, ints).dtype == np.float64
    assert cs.convolve(ints, ints, method="fft").dtype == np.int64


def test_scalars_multiply_like_scipy():
    assert cs.convolve(np.float64(3), np.float64(2)) == 6
    assert cs.correlate(np.complex128(1j), np.complex128(1j)) == 1


# --- SciPy's semantics at the edges: exact integers, empty inputs, NaN and inf ---------------

def exact_convolution(in1: np.ndarray, in2: np.ndarray) -> np.ndarray:
    """The full convolution in integer arithmetic (numpy.convolve in 1-D, SciPy's direct
    N-D sum otherwise); exact while no sum leaves int64."""
    if in1.ndim == 1:
        return np.convolve(in1, in2)
    return ss.convolve(in1, in2, method="direct")


@settings(max_examples=40, deadline=None)
@given(shapes=shape_pairs(max_size=9), bits=st.integers(20, 28), mode=st.sampled_from(MODES),
       method=st.sampled_from(["auto", "direct"]), seed=seeds)
def test_integer_convolution_is_exact(shapes, bits, mode, method, seed):
    """int64 samples up to 2**28: sums pass 2**53, where float64 arithmetic rounds."""
    rng = np.random.default_rng(seed)
    in1, in2 = (rng.integers(-2**bits, 2**bits, s) for s in shapes)
    try:
        expected = ss.convolve(in1, in2, mode, method="direct")
    except ValueError:
        return  # 'valid' with neither input larger: the error tests cover it
    got = cs.convolve(in1, in2, mode, method)
    assert got.dtype == expected.dtype == np.int64
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(cs.correlate(in1, in2, mode, method),
                                  ss.correlate(in1, in2, mode, method="direct"))


@pytest.mark.parametrize("shapes", [((5000,), (300,)), ((300,), (5000,)), ((60, 50), (9, 7)),
                                    ((12, 10, 9), (3, 4, 5))])
def test_integers_up_to_2_25_are_exact_on_long_inputs(shapes):
    """The issue's case: int64 values up to 2**25, once off by up to 128."""
    rng = np.random.default_rng(2)
    in1, in2 = (rng.integers(-2**25, 2**25, s) for s in shapes)
    np.testing.assert_array_equal(cs.convolve(in1, in2), exact_convolution(in1, in2))


def test_auto_keeps_integers_direct_where_the_fft_would_round_wrong():
    """Sums below 2**53 pass SciPy's rule, yet the float64 FFT misses some by 1 or 2."""
    in1 = np.full(100_000, 2**21, dtype=np.int64)
    in2 = np.full(1000, 2**21, dtype=np.int64)
    in2[::2] -= 1
    assert cs.choose_conv_method(in1, in2) == "direct"
    np.testing.assert_array_equal(cs.convolve(in1, in2), np.convolve(in1, in2))
    fft = np.rint(cs.fftconvolve(in1, in2)).astype(np.int64)
    assert not np.array_equal(fft, np.convolve(in1, in2)), "the rule guards a real error"


@settings(max_examples=60, deadline=None)
@given(shapes=shape_pairs(ndims=(1, 2), max_size=40), bits=st.integers(1, 40),
       dtypes=st.sampled_from([("int64", "int64"), ("int32", "int16"), ("int64", "float64"),
                               ("uint32", "uint8")]),
       mode=st.sampled_from(["full", "same"]), seed=seeds)
def test_integer_rule_gives_scipys_direct(shapes, bits, dtypes, mode, seed):
    """Wherever SciPy keeps integers direct (largest sum over 2**53 - 1), so does cnnlab."""
    rng = np.random.default_rng(seed)
    in1, in2 = (rng.integers(0, 2**bits, s).astype(d) if d != "float64"
                else rng.uniform(-2.0**bits, 2.0**bits, s)
                for s, d in zip(shapes, dtypes, strict=True))
    scipy_answer = ss.choose_conv_method(in1, in2, mode)
    largest = (int(np.abs(in1).max()) * int(np.abs(in2).max()) * min(in1.size, in2.size))
    if largest > 2**53 - 1:
        assert scipy_answer == "direct"
        assert cs.choose_conv_method(in1, in2, mode) == "direct"


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "complex128", "bool"])
@pytest.mark.parametrize("shapes", [((8,), (6,)), ((6,), (8,)), ((8, 8), (3, 3)),
                                    ((50,), (3,))])
def test_small_inputs_choose_direct_like_scipy(shapes, dtype):
    rng = np.random.default_rng(4)
    in1, in2 = (random_array(rng, s, dtype) if dtype != "bool" else rng.random(s) < 0.5
                for s in shapes)
    assert cs.choose_conv_method(in1, in2) == ss.choose_conv_method(in1, in2) == "direct"


EMPTY_PAIRS = [((0,), (3,)), ((3,), (0,)), ((0,), (0,)), ((0, 2), (1, 1)), ((2, 0), (2, 2)),
               ((2, 3), (0, 3)), ((1, 0, 2), (2, 2, 2))]


@pytest.mark.parametrize("shapes", EMPTY_PAIRS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "complex128"])
def test_empty_inputs_give_empty_transforms_like_scipy(shapes, mode, dtype):
    """fftconvolve and oaconvolve return SciPy's empty float64 array whatever the shapes."""
    in1, in2 = (np.ones(s, dtype) for s in shapes)
    for ours, theirs in ((cs.fftconvolve, ss.fftconvolve), (cs.oaconvolve, ss.oaconvolve)):
        got = check_scipy(ours, theirs, in1, in2, mode=mode)
        assert got is not None and got.shape == (0,)


@pytest.mark.parametrize("shapes", EMPTY_PAIRS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("method", ["auto", "direct", "fft"])
def test_empty_inputs_raise_in_convolve_and_choose_direct(shapes, mode, method):
    """SciPy's convolve and correlate raise on empty 1-D input (numpy.convolve's check);
    cnnlab raises the same ValueError for every empty input, naming the argument."""
    in1, in2 = (np.ones(s) for s in shapes)
    name = "in1" if in1.size == 0 else "in2"
    for fn in ("convolve", "correlate"):
        with pytest.raises(ValueError, match=rf"{fn}: {name} must not be empty, got shape"):
            getattr(cs, fn)(in1, in2, mode, method)
    with np.errstate(all="ignore"):  # SciPy's cost model takes log(0) here
        expected = ss.choose_conv_method(in1, in2, mode)
    assert cs.choose_conv_method(in1, in2, mode) == expected == "direct"


def scipy_2d_crashes(shape1, shape2, mode, boundary) -> bool:
    """SciPy 1.17's _convolve2d dies (SIGFPE) wrapping or mirroring an empty in1 into a
    non-empty 'full' output, so those cases are not run through it."""
    full = [n1 + n2 - 1 for n1, n2 in zip(shape1, shape2, strict=True)]
    return (0 in shape1 and mode == "full" and boundary in ("wrap", "symm")
            and min(full) > 0)


@pytest.mark.parametrize("shapes", [((2, 2), (0, 1)), ((3, 2), (0, 4)), ((0, 3), (2, 2)),
                                    ((0, 3), (2, 0)), ((0, 0), (0, 0)), ((0, 2), (1, 1)),
                                    ((0, 1), (2, 2)), ((1, 0), (2, 2))])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm"])
def test_empty_inputs_in_2d_like_scipy(shapes, mode, boundary):
    """The mode's shape (an empty kernel sums to zero, an empty in1 reads only the fill
    value), or SciPy's ValueError; where SciPy crashes, a ValueError or zeros."""
    rng = np.random.default_rng(5)
    in1, in2 = (rng.standard_normal(s) for s in shapes)
    for ours, theirs in ((cs.convolve2d, ss.convolve2d), (cs.correlate2d, ss.correlate2d)):
        if not scipy_2d_crashes(in1.shape, in2.shape, mode, boundary):
            check_scipy(ours, theirs, in1, in2, mode=mode, boundary=boundary, fillvalue=1.5)
        elif in2.size == 0:
            np.testing.assert_array_equal(ours(in1, in2, mode, boundary), np.zeros((1, 2)))
        else:
            with pytest.raises(ValueError, match=rf"{ours.__name__}: boundary='{boundary}' "
                                                 r"cannot extend an empty in1"):
                ours(in1, in2, mode, boundary)


@pytest.mark.parametrize("fn", ["convolve", "correlate"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, complex(0, np.nan)])
def test_fft_on_nan_or_inf_warns_like_scipy(fn, bad):
    """One bad sample makes every FFT output non-finite; both libraries say so."""
    rng = np.random.default_rng(6)
    in1 = rng.standard_normal(40) + (0j if isinstance(bad, complex) else 0)
    in1[7] = bad
    in2 = rng.standard_normal(5)
    with np.errstate(invalid="ignore"):  # inf * 0 inside the transforms
        with pytest.warns(RuntimeWarning, match=rf"{fn}: method='fft' on input with NaN or "
                                                r"inf makes the whole output NaN or inf"):
            got = getattr(cs, fn)(in1, in2, method="fft")
        with pytest.warns(RuntimeWarning, match="fft convolution on input with NAN or inf"):
            expected = getattr(ss, fn)(in1, in2, method="fft")
    assert not np.isfinite(got).any() and not np.isfinite(expected).any()


@pytest.mark.parametrize("fn", ["convolve", "correlate"])
def test_auto_keeps_nan_to_the_windows_it_touches(fn):
    """'auto' answers 'direct' for non-finite input: no warning, SciPy's direct result."""
    rng = np.random.default_rng(7)
    in1, in2 = rng.standard_normal(100_000), rng.standard_normal(1000)  # FFT-sized
    assert cs.choose_conv_method(in1, in2) == "fft"
    in1[500] = np.nan
    assert cs.choose_conv_method(in1, in2) == "direct"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = getattr(cs, fn)(in1, in2)
    expected = getattr(ss, fn)(in1, in2, method="direct")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    assert np.isnan(got).sum() == 1000
    finite = np.isfinite(expected)
    assert_close(got[finite], expected[finite], 1e-10, 1e-9, fn)


# --- the lecture's claims --------------------------------------------------------------------

@settings(max_examples=40, deadline=None)
@given(shapes=shape_pairs(), method=st.sampled_from(["direct", "fft"]), seed=seeds)
def test_convolution_commutes(shapes, method, seed):
    """f * g == g * f in 'full' mode (the lecture: convolution is commutative)."""
    rng = np.random.default_rng(seed)
    f, g = (random_array(rng, s, "float64") for s in shapes)
    assert_close(cs.convolve(f, g, method=method), cs.convolve(g, f, method=method),
                 1e-12, 1e-12, "commutativity")
    ints_f, ints_g = (random_array(rng, s, "int64") for s in shapes)
    np.testing.assert_array_equal(cs.convolve(ints_f, ints_g, method=method),
                                  cs.convolve(ints_g, ints_f, method=method))


@settings(max_examples=40, deadline=None)
@given(shapes=shape_pairs(), mode=st.sampled_from(["full", "same"]),
       method=st.sampled_from(["direct", "fft"]), seed=seeds)
def test_convolution_is_linear(shapes, mode, method, seed):
    """(a f + b h) * g == a (f * g) + b (h * g)."""
    rng = np.random.default_rng(seed)
    f, h = random_array(rng, shapes[0], "float64"), random_array(rng, shapes[0], "float64")
    g = random_array(rng, shapes[1], "float64")
    a, b = rng.standard_normal(2)
    left = cs.convolve(a * f + b * h, g, mode, method)
    right = a * cs.convolve(f, g, mode, method) + b * cs.convolve(h, g, mode, method)
    assert_close(left, right, 1e-12, 1e-10, "linearity")


@settings(max_examples=40, deadline=None)
@given(shapes=shape_pairs(ndims=(2,), max_size=8), shift=st.tuples(st.integers(-9, 9),
                                                                   st.integers(-9, 9)),
       flip=st.booleans(), seed=seeds)
def test_circular_convolution_is_exactly_shift_equivariant(shapes, shift, flip, seed):
    """On the torus (boundary='wrap'), conv(roll(x)) == roll(conv(x)), bit for bit.

    Integer-valued float64 samples make every sum exact, so equality is exact.
    """
    rng = np.random.default_rng(seed)
    x = random_array(rng, shapes[0], "int64").astype(np.float64)
    w = random_array(rng, shapes[1], "int64").astype(np.float64)
    op = cs.convolve2d if flip else cs.correlate2d
    shifted_first = op(np.roll(x, shift, axis=(0, 1)), w, mode="same", boundary="wrap")
    shifted_after = np.roll(op(x, w, mode="same", boundary="wrap"), shift, axis=(0, 1))
    np.testing.assert_array_equal(shifted_first, shifted_after)


def test_zero_fill_breaks_shift_equivariance_at_the_border():
    """Zero padding is why the lecture's equivariance is only approximate on finite images."""
    x = np.zeros((6, 6))
    x[2, 5] = 1.0
    w = np.ones((3, 3))
    shifted_first = cs.convolve2d(np.roll(x, 1, axis=1), w, mode="same")
    shifted_after = np.roll(cs.convolve2d(x, w, mode="same"), 1, axis=1)
    assert not np.array_equal(shifted_first, shifted_after)
    wrapped = cs.convolve2d(np.roll(x, 1, axis=1), w, mode="same", boundary="wrap")
    np.testing.assert_array_equal(
        wrapped, np.roll(cs.convolve2d(x, w, mode="same", boundary="wrap"), 1, axis=1))


LECTURE_IMAGE, LECTURE_FILTER, LECTURE_OUTPUT = lecture.IMAGE, lecture.FILTER, lecture.FEATURE_MAP


def test_lecture_worked_example():
    """The lecture's 6x6 image correlated with the 'X' filter, zero fill, 'same' size."""
    got = cs.correlate2d(LECTURE_IMAGE, LECTURE_FILTER, mode="same")
    assert got.dtype == LECTURE_IMAGE.dtype
    np.testing.assert_array_equal(got, LECTURE_OUTPUT)
    np.testing.assert_array_equal(ss.correlate2d(LECTURE_IMAGE, LECTURE_FILTER, "same"),
                                  LECTURE_OUTPUT)
    # The filter is symmetric, so the N-D functions give the same numbers on every path.
    for method in ("direct", "fft"):
        np.testing.assert_array_equal(
            cs.correlate(LECTURE_IMAGE, LECTURE_FILTER, "same", method), LECTURE_OUTPUT)
        np.testing.assert_array_equal(
            cs.convolve(LECTURE_IMAGE, LECTURE_FILTER, "same", method), LECTURE_OUTPUT)


@settings(max_examples=40, deadline=None)
@given(shapes=shape_pairs(max_size=9), mode=st.sampled_from(MODES),
       dtype=st.sampled_from(["float64", "complex128"]), seed=seeds)
def test_fft_and_direct_agree(shapes, mode, dtype, seed):
    rng = np.random.default_rng(seed)
    in1, in2 = (random_array(rng, s, dtype) for s in shapes)
    try:
        direct = cs.convolve(in1, in2, mode, "direct")
    except ValueError:
        return  # 'valid' with neither input larger: covered by the error tests
    assert_close(cs.convolve(in1, in2, mode, "fft"), direct, 1e-10, 1e-9, "fft vs direct")
    assert_close(cs.oaconvolve(in1, in2, mode), direct, 1e-10, 1e-9, "overlap-add vs direct")


# --- choosing the method ---------------------------------------------------------------------

def test_choose_conv_method_is_the_shared_cost_model():
    """The answer is the comparison of dispatch.convolve_seconds, nothing hidden."""
    rng = np.random.default_rng(0)
    cases = [((100_000,), (1000,), "fft"), ((50,), (3,), "direct"),
             ((256, 256), (31, 31), "fft"), ((64, 64), (3, 3), "direct")]
    for shape1, shape2, expected in cases:
        in1, in2 = rng.standard_normal(shape1), rng.standard_normal(shape2)
        seconds = dispatch.convolve_seconds(shape1, shape2, "full", np.dtype(np.float64))
        assert cs.choose_conv_method(in1, in2) == min(seconds, key=seconds.get) == expected
    # cnnlab.signal keeps no cost constants of its own.
    assert not [name for name in vars(cs) if name.endswith(("_PER_S", "_SECONDS"))]


def test_choose_conv_method_keeps_exact_integers_direct():
    """SciPy's rule: integer sums that might pass 2**53 - 1, and booleans, stay direct;
    small integers go to the FFT where it is faster, and their result is still exact."""
    fits = np.full(100_000, 2**10, dtype=np.int64)
    taps = np.full(1000, 2**10, dtype=np.int64)
    big = np.full(1000, 2**22, dtype=np.int64)  # 1000 * 2**44 > 2**53
    assert cs.choose_conv_method(fits, taps) == ss.choose_conv_method(fits, taps) == "fft"
    assert cs.choose_conv_method(big, big) == ss.choose_conv_method(big, big) == "direct"
    flags = np.ones(5000, dtype=bool)
    assert cs.choose_conv_method(flags, flags) == "direct"
    result = cs.convolve(fits, taps)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, np.convolve(fits, taps))


def test_choose_conv_method_measure_returns_timings():
    method, times = cs.choose_conv_method(np.ones(40), np.ones(5), measure=True)
    assert method in ("direct", "fft")
    assert set(times) == {"direct", "fft"} and all(t > 0 for t in times.values())
    assert method == min(times, key=times.get)


# --- the FFT shared with the layers --------------------------------------------------------

@pytest.mark.parametrize("shape, axes", [((4, 8, 64, 64), (2, 3)), ((4, 16, 4096), (2,)),
                                         ((3, 5, 6, 7, 9), (2, 3, 4)), ((1, 1, 100_007), (2,)),
                                         ((257, 129), (0, 1))])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fft_bits_do_not_depend_on_worker_threads(shape, axes, dtype):
    """pocketfft gives each 1-D line to one thread: rfftn/irfftn (and fftn/ifftn) of
    batched arrays, as ops/fft.py calls them, are bitwise equal for 1, 2 and 4 workers, so
    ops.fft.WORKERS may follow the core count. A SciPy that split a line would fail here."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal(shape).astype(dtype)
    s = ops_fft.fft_shape(tuple(shape[a] + 30 for a in axes))
    complex_x = x + 1j * x[..., ::-1]
    transforms = [(sfft.rfftn, x), (sfft.fftn, complex_x)]
    for forward, data in transforms:
        inverse = sfft.irfftn if forward is sfft.rfftn else sfft.ifftn
        spectrum = forward(data, s=s, axes=axes, workers=1)
        back = inverse(spectrum, s=s, axes=axes, workers=1)
        for workers in (2, 4):
            assert forward(data, s=s, axes=axes, workers=workers).tobytes() == \
                spectrum.tobytes()
            assert inverse(spectrum, s=s, axes=axes, workers=workers).tobytes() == \
                back.tobytes()


@pytest.mark.parametrize("workers", [2, 4])
def test_fft_convolutions_do_not_depend_on_worker_threads(workers, monkeypatch):
    """The layers' FFT convolution and signal's, with ops.fft.WORKERS at 1 and more."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 6, 40, 40)).astype(np.float32)
    w = rng.standard_normal((8, 6, 9, 9)).astype(np.float32)
    signal, kernel = rng.standard_normal(20_000), rng.standard_normal(255)
    image, blur = rng.standard_normal((300, 200)), rng.standard_normal((31, 31))

    def run():
        return (ops_fft.fft_conv_forward(x, w, (1, 1), (1, 1), 1, (32, 32)),
                *ops_fft.fft_conv_backward(x, w, rng_gy, (40, 40), (1, 1), (1, 1), 1),
                ops_fft.fft_convolve(signal, kernel, [0]),
                ops_fft.fft_convolve(image, blur, [0, 1]),
                ops_fft.oa_convolve(image, blur, [0, 1]))

    rng_gy = np.random.default_rng(10).standard_normal((4, 8, 32, 32)).astype(np.float32)
    monkeypatch.setattr(ops_fft, "PARALLEL_FFT_SIZE", 0)  # threads even for small arrays
    monkeypatch.setattr(ops_fft, "WORKERS", 1)
    single = run()
    monkeypatch.setattr(ops_fft, "WORKERS", workers)
    for ours, reference in zip(run(), single, strict=True):
        assert ours.dtype == reference.dtype and ours.tobytes() == reference.tobytes()


def test_signal_fft_is_the_ops_fft_convolution():
    """fftconvolve is ops.fft.fft_convolve plus SciPy's crop: the same bits."""
    rng = np.random.default_rng(11)
    in1, in2 = rng.standard_normal((30, 41)), rng.standard_normal((7, 5))
    full = ops_fft.fft_convolve(in1, in2, [0, 1])
    assert cs.fftconvolve(in1, in2).tobytes() == full.tobytes()
    assert cs.convolve(in1, in2, method="fft").tobytes() == full.tobytes()


# --- errors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("call, error, match", [
    (lambda: cs.convolve([1, 2], [1], mode="circular"), ValueError,
     r"convolve: mode must be one of \('full', 'valid', 'same'\), got 'circular'"),
    (lambda: cs.convolve([1, 2], [1], mode=2), TypeError,
     r"convolve: mode must be one of \(.full., .valid., .same.\), got int 2"),
    (lambda: cs.correlate([1, 2], [1], method="winograd"), ValueError,
     r"correlate: method must be one of \('auto', 'direct', 'fft'\), got 'winograd'"),
    (lambda: cs.convolve2d(np.ones((2, 2)), np.ones((2, 2)), boundary="reflect"), ValueError,
     r"convolve2d: boundary must be one of .*'symm'.*got 'reflect'"),
    (lambda: cs.convolve(np.ones((3, 3)), np.ones(3)), ValueError,
     r"convolve: in1 and in2 must have the same number of dimensions, "
     r"got in1.ndim=2 and in2.ndim=1"),
    (lambda: cs.fftconvolve(np.ones(3), np.ones((2, 2))), ValueError,
     r"fftconvolve: in1 and in2 must have the same number of dimensions"),
    (lambda: cs.correlate(np.ones(3), np.ones(0)), ValueError,
     r"correlate: in2 must not be empty, got shape \(0,\)"),
    (lambda: cs.convolve(np.ones((0, 2)), np.ones((1, 1))), ValueError,
     r"convolve: in1 must not be empty, got shape \(0, 2\)"),
    (lambda: cs.choose_conv_method(np.ones(0), np.ones(2), measure=True), ValueError,
     r"choose_conv_method: in1 must not be empty"),
    (lambda: cs.convolve2d(np.ones((0, 0)), np.ones((0, 0))), ValueError,
     r"convolve2d: mode='full' output shape \(-1, -1\) has a negative size"),
    (lambda: cs.correlate2d(np.ones((0, 3)), np.ones((2, 2)), boundary="wrap"), ValueError,
     r"correlate2d: boundary='wrap' cannot extend an empty in1 \(shape \(0, 3\)\); "
     r"use boundary='fill'"),
    (lambda: cs.convolve(np.ones((2, 5)), np.ones((3, 3)), mode="valid"), ValueError,
     r"convolve: mode='valid' needs in1 or in2 to be at least as large as the other in every "
     r"dimension, got in1.shape=\(2, 5\) and in2.shape=\(3, 3\)"),
    (lambda: cs.correlate2d(np.ones((2, 5)), np.ones((3, 3)), mode="valid"), ValueError,
     r"correlate2d: mode='valid' needs in1 or in2"),
    (lambda: cs.choose_conv_method(np.ones((4, 1)), np.ones((1, 4)), mode="valid"),
     ValueError, r"choose_conv_method: mode='valid' needs"),
    (lambda: cs.convolve(np.array(["a", "b"]), np.ones(2)), TypeError,
     r"convolve: in1 must have a numeric \(bool, int, float or complex\) dtype, got <U1"),
    (lambda: cs.convolve2d(np.ones(3), np.ones(3)), ValueError,
     r"convolve2d: in1 and in2 must both be 2-D, got ndim 1"),
    (lambda: cs.convolve2d(np.ones((2, 2)), np.ones((2, 2)), fillvalue=[1, 2]), ValueError,
     r"convolve2d: fillvalue must be a scalar, got shape \(2,\)"),
    (lambda: cs.correlate2d(np.ones((2, 2)), np.ones((2, 2)), fillvalue=1j), ValueError,
     r"correlate2d: fillvalue 1j is complex but the output dtype is float64"),
    (lambda: cs.fftconvolve(np.ones((3, 4)), np.ones((2, 3)), axes=[0]), ValueError,
     r"fftconvolve: along axis 1, which is not convolved, in1 and in2 must have equal sizes "
     r"or size 1, got in1.shape=\(3, 4\) and in2.shape=\(2, 3\)"),
    (lambda: cs.fftconvolve(np.ones(3), np.ones(2), axes=[1]), ValueError,
     r"fftconvolve: axes must lie in \[-1, 1\), got \[1\]"),
    (lambda: cs.oaconvolve(np.ones((3, 3)), np.ones((2, 2)), axes=[0, -2]), ValueError,
     r"oaconvolve: axes must be unique, got \[0, -2\]"),
    (lambda: cs.fftconvolve(np.ones(3), np.ones(2), axes=[]), ValueError,
     r"fftconvolve: axes, when given, must not be empty"),
    (lambda: cs.fftconvolve(np.ones(3), np.ones(2), axes=[0.5]), TypeError,
     r"fftconvolve: axes must be ints, got \[0.5\]"),
])
def test_errors_name_function_argument_expected_and_got(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_AS is POSIX")
def test_long_1d_direct_convolution_runs_in_bounded_memory():
    """Issue 13, item 18: 10^5 x 10^4 samples took 1.1 GiB (and 39 s) through the GEMM's
    columns; the exact direct sum is NumPy's own np.convolve now, as SciPy's, in the
    memory of its output. Under a 768 MiB address space (Python, NumPy and SciPy take
    about 260 MiB) it must finish and agree with SciPy."""
    result = run_with_address_space("""
        import numpy as np, scipy.signal
        import cnnlab.signal as cs
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal(10**5), rng.standard_normal(10**4)
        ours = cs.convolve(a, b, method="direct")
        theirs = scipy.signal.convolve(a, b, method="direct")
        print(ours.shape, float(np.abs(ours - theirs).max()))
    """, 768 * 2**20)
    assert result.returncode == 0, result.stderr
    shape, error = result.stdout.split(") ")
    assert shape == "(109999," and float(error) < 1e-9
