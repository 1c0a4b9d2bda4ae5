"""Pooling (max, avg, LP, adaptive, unpool, blur) against torch.nn.functional, 1/2/3-D.

Each property test draws a shape and options, runs the op on a NumPy array (forward) and on
a Tensor (backward with a random output gradient), and compares values, indices and input
gradients with torch autograd in float64. Finite differences check the VJPs independently.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import _lecture as lecture
from _check import check_array_and_tensor as check_op
from _check import numeric_grad_check as _numeric_grad_check
from cnnlab import Tensor
from cnnlab import functional as F
from cnnlab.ops.pool import binomial_filter


def _close(ours: np.ndarray, expected: np.ndarray, tol: float = 1e-10) -> None:
    np.testing.assert_allclose(ours, expected, rtol=tol, atol=tol, equal_nan=True)


def numeric_grad_check(fn: Callable, x: np.ndarray, rng: np.random.Generator,
                       eps: float = 1e-6, tol: float = 1e-6) -> None:
    _numeric_grad_check(fn, x, rng, eps=eps, tol=tol)


@st.composite
def pool_case(draw: st.DrawFn, dilation: bool = True, padding: bool = True,
              at_least_kernel: bool = False) -> dict:
    """Spatial rank, input shape and pooling options whose output size is >= 1.

    ``at_least_kernel``: 3-D inputs no smaller than the kernel, which torch's avg_pool3d
    requires even when padding would make the window fit.
    """
    dims = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dil = tuple(draw(st.integers(1, 2)) if dilation else 1 for _ in range(dims))
    pad = tuple(draw(st.integers(0, k // 2)) if padding else 0 for k in kernel)
    spatial = tuple(
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 4 if dims < 3 else 2))
        for k, d, p in zip(kernel, dil, pad, strict=True)
    )
    if at_least_kernel and dims == 3:
        spatial = tuple(max(n, k) for n, k in zip(spatial, kernel, strict=True))
    batched = draw(st.booleans())
    shape = ((2,) if batched else ()) + (draw(st.integers(1, 2)),) + spatial
    return {
        "dims": dims, "kernel": kernel, "stride": None if draw(st.booleans()) else stride,
        "dilation": dil, "padding": pad, "ceil_mode": draw(st.booleans()), "shape": shape,
        "seed": draw(st.integers(0, 2**31)),
    }


# ---------------------------------------------------------------------------------------
# Max pooling.


@given(pool_case())
def test_max_pool_matches_torch(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    name = f"max_pool{case['dims']}d"
    opts = {k: case[k] for k in ("stride", "padding", "dilation", "ceil_mode")}

    def ours(v):
        return getattr(F, name)(v, case["kernel"], **opts)

    def theirs(v):
        return getattr(TF, name)(v, case["kernel"], **opts)

    out, indices = getattr(F, name)(x, case["kernel"], return_indices=True, **opts)
    _, expected_indices = getattr(TF, name)(torch.from_numpy(x), case["kernel"],
                                           return_indices=True, **opts)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    # A window of padding only (possible with dilation) gives -inf and, in torch, an index
    # outside the input whose backward writes out of bounds: compare forward only there.
    check_op(ours, theirs, x, rng, grad=not np.isinf(out).any())


@given(pool_case(), st.sampled_from(["ties", "nan", "-inf"]))
def test_max_pool_ties_nan_and_inf_indices_match_torch(case: dict, kind: str) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.integers(0, 3, size=case["shape"]).astype(np.float64)  # many ties
    if kind == "nan":
        x[rng.random(x.shape) < 0.3] = np.nan
    if kind == "-inf":
        x[rng.random(x.shape) < 0.5] = -np.inf
    name = f"max_pool{case['dims']}d"
    opts = {k: case[k] for k in ("stride", "padding", "dilation", "ceil_mode")}
    out, indices = getattr(F, name)(x, case["kernel"], return_indices=True, **opts)
    expected, expected_indices = getattr(TF, name)(torch.from_numpy(x), case["kernel"],
                                                  return_indices=True, **opts)
    _close(out, expected.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    if np.isneginf(out).any():
        return  # torch's backward writes out of bounds there (see the padding-only test)
    # The training path (no indices asked) sends each gradient to the same element.
    grad = rng.standard_normal(out.shape)
    x_ours = Tensor(x, requires_grad=True)
    getattr(F, name)(x_ours, case["kernel"], **opts).backward(grad)
    x_theirs = torch.from_numpy(x).requires_grad_()
    getattr(TF, name)(x_theirs, case["kernel"], **opts).backward(torch.from_numpy(grad))
    _close(x_ours.grad, x_theirs.grad.numpy())


def test_max_pool_nan_propagates_and_gradient_goes_to_the_last_nan() -> None:
    x = np.array([[[1.0, np.nan, 2.0, np.nan, 0.0]]])
    out, indices = F.max_pool1d(x, 5, return_indices=True)
    assert np.isnan(out).all() and indices.tolist() == [[[3]]]
    x_t = Tensor(x, requires_grad=True)
    F.max_pool1d(x_t, 5).backward(np.ones((1, 1, 1)))
    assert x_t.grad.tolist() == [[[0.0, 0.0, 0.0, 1.0, 0.0]]]


def test_max_pool_window_of_padding_only_matches_torch_forward() -> None:
    # Taps -1 and 1 of a size-1 input are both padding: torch returns -inf and index 1 (its
    # first in-bounds tap formula); its backward then writes out of bounds (into the next
    # channel). Here the value and index match and that gradient is dropped.
    x = np.array([[[5.0], [7.0]]])
    out, indices = F.max_pool1d(x, 2, 1, 1, 2, return_indices=True)
    expected, expected_indices = TF.max_pool1d(torch.from_numpy(x), 2, 1, 1, 2,
                                              return_indices=True)
    _close(out, expected.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())
    x_t = Tensor(x, requires_grad=True)
    F.max_pool1d(x_t, 2, 1, 1, 2).backward(np.ones((1, 2, 1)))
    assert not x_t.grad.any()


def test_adaptive_max_pool_nan_index_matches_torch() -> None:
    x = np.array([[[1.0, np.nan, 3.0, np.nan, 2.0, 0.0, np.nan]]])
    out, indices = F.adaptive_max_pool1d(x, 3, return_indices=True)
    expected, expected_indices = TF.adaptive_max_pool1d(torch.from_numpy(x), 3,
                                                       return_indices=True)
    _close(out, expected.numpy())
    np.testing.assert_array_equal(indices, expected_indices.numpy())


def test_max_pool_lecture_example() -> None:
    pooled = F.max_pool2d(lecture.FEATURE_MAP[None].astype(np.float64), 2)
    np.testing.assert_array_equal(pooled[0], lecture.POOLED)


def test_max_pool_finite_differences() -> None:
    rng = np.random.default_rng(0)
    x = rng.permutation(4 * 5 * 6).reshape(1, 4, 5, 6) / 7.0  # distinct values: no ties

    def fn(v):
        return F.max_pool2d(v, (2, 3), stride=(2, 1), padding=1, dilation=(1, 2))

    numeric_grad_check(fn, x, rng, eps=1e-4)


# ---------------------------------------------------------------------------------------
# Average pooling.


@given(pool_case(dilation=False, at_least_kernel=True), st.booleans(),
       st.sampled_from([None, 1, 3, -2]))
def test_avg_pool_matches_torch(case: dict, count_include_pad: bool,
                                divisor_override: int | None) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    dims, kernel = case["dims"], case["kernel"]
    opts = {"stride": case["stride"], "padding": case["padding"],
            "ceil_mode": case["ceil_mode"], "count_include_pad": count_include_pad}

    def ours(v):
        return getattr(F, f"avg_pool{dims}d")(v, kernel, divisor_override=divisor_override,
                                              **opts)

    def theirs(v):
        if dims > 1:
            return getattr(TF, f"avg_pool{dims}d")(v, kernel,
                                                  divisor_override=divisor_override, **opts)
        # torch's avg_pool1d has no divisor_override: pool (..., L, 1) in 2-D instead.
        stride = None if opts["stride"] is None else (opts["stride"][0], 1)
        return TF.avg_pool2d(v[..., None], (kernel[0], 1), stride, (opts["padding"][0], 0),
                            opts["ceil_mode"], count_include_pad, divisor_override)[..., 0]

    check_op(ours, theirs, x, rng)


def test_avg_pool_ceil_mode_divisor_excludes_overhang() -> None:
    # Windows [0, 2), [2, 4), [4, 6) on 5 samples: the last one overhangs, divisor 1.
    assert F.avg_pool1d(np.ones((1, 1, 5)), 2, ceil_mode=True).tolist() == [[[1, 1, 1]]]
    out = F.avg_pool1d(np.ones((1, 1, 5)), 3, 2, 1, ceil_mode=True)
    _close(out, np.array([[[2 / 3, 1.0, 2 / 3]]]))


def test_avg_pool_finite_differences() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 5, 4))

    def fn(v):
        return F.avg_pool2d(v, 3, stride=2, padding=1, ceil_mode=True,
                             count_include_pad=False)

    numeric_grad_check(fn, x, rng)


# ---------------------------------------------------------------------------------------
# Power-average pooling.


@given(pool_case(dilation=False, padding=False, at_least_kernel=True),
       st.sampled_from([1, 2, 3, 1.5, np.inf]))
def test_lp_pool_matches_torch(case: dict, norm_type: float) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.uniform(0.1, 2.0, case["shape"])
    if norm_type in (2, np.inf):
        x *= rng.choice([-1.0, 1.0], size=x.shape)
    name = f"lp_pool{case['dims']}d"
    kernel = case["kernel"] if case["dims"] > 1 else case["kernel"][0]
    opts = {"stride": case["stride"], "ceil_mode": case["ceil_mode"]}
    check_op(lambda v: getattr(F, name)(v, norm_type, kernel, **opts),
             lambda v: getattr(TF, name)(v, float(norm_type), kernel, **opts), x, rng)


def test_lp_pool_gradient_is_zero_where_the_sum_is_zero() -> None:
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0] = 1.0
    x_t = Tensor(x, requires_grad=True)
    F.lp_pool2d(x_t, 2, 2).backward(np.ones((1, 1, 2, 2)))
    expected = torch.from_numpy(x).requires_grad_(True)
    TF.lp_pool2d(expected, 2.0, 2).backward(torch.ones(1, 1, 2, 2, dtype=torch.float64))
    _close(x_t.grad, expected.grad.numpy())
    assert np.isfinite(x_t.grad).all()


def test_lp_pool_finite_differences() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(0.5, 2.0, (2, 1, 5))
    numeric_grad_check(lambda v: F.lp_pool1d(v, 3, 2, 1, ceil_mode=True), x, rng)


# ---------------------------------------------------------------------------------------
# Adaptive pooling.


@st.composite
def adaptive_case(draw: st.DrawFn) -> dict:
    dims = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(1, 7 if dims < 3 else 4)) for _ in range(dims))
    out = tuple(draw(st.one_of(st.none(), st.integers(1, 6))) for _ in range(dims))
    batched = draw(st.booleans())
    shape = ((2,) if batched else ()) + (2,) + spatial
    return {"dims": dims, "shape": shape, "out": out, "seed": draw(st.integers(0, 2**31))}


@given(adaptive_case(), st.booleans())
def test_adaptive_pool_matches_torch(case: dict, is_max: bool) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    name = f"adaptive_{'max' if is_max else 'avg'}_pool{case['dims']}d"
    # torch's adaptive_*_pool1d takes no None: resolve "keep" for it.
    out_size = tuple(n if o is None else o for n, o in zip(x.shape[-case["dims"]:],
                                                          case["out"], strict=True))
    torch_size = case["out"] if case["dims"] > 1 else out_size
    check_op(lambda v: getattr(F, name)(v, case["out"]),
             lambda v: getattr(TF, name)(v, torch_size), x, rng)
    if is_max:
        _, indices = getattr(F, name)(x, case["out"], return_indices=True)
        _, expected = getattr(TF, name)(torch.from_numpy(x), torch_size, return_indices=True)
        np.testing.assert_array_equal(indices, expected.numpy())


def test_adaptive_pool_finite_differences() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 5, 7))
    numeric_grad_check(lambda v: F.adaptive_avg_pool2d(v, (3, 4)), x, rng)
    numeric_grad_check(lambda v: F.adaptive_max_pool2d(v, (2, 3)), x, rng, eps=1e-5)


# ---------------------------------------------------------------------------------------
# Max unpooling.


@given(pool_case(dilation=False), st.booleans())
def test_max_unpool_matches_torch(case: dict, explicit_size: bool) -> None:
    rng = np.random.default_rng(case["seed"])
    dims, kernel = case["dims"], case["kernel"]
    opts = {"stride": case["stride"], "padding": case["padding"]}
    x = rng.standard_normal(case["shape"])
    pooled, indices = getattr(F, f"max_pool{dims}d")(x, kernel, return_indices=True, **opts)
    stride = kernel if case["stride"] is None else case["stride"]
    default = [(n - 1) * s - 2 * p + k for n, k, s, p in
               zip(pooled.shape[-dims:], kernel, stride, case["padding"], strict=True)]
    # The input's own size is always a valid output_size (floor mode: n = default + r,
    # 0 <= r < stride); the default may be too small to hold every index when padding > 0.
    fits = min(default) >= 1 and indices.max() < np.prod(default)
    size = x.shape[-dims:] if explicit_size or not fits else None
    name = f"max_unpool{dims}d"
    index_torch = torch.from_numpy(indices)
    check_op(lambda v: getattr(F, name)(v, indices, kernel, output_size=size, **opts),
             lambda v: getattr(TF, name)(v, index_torch, kernel, output_size=size, **opts),
             pooled, rng)


def test_max_unpool_accepts_tensor_indices_and_inverts_pooling_at_maxima() -> None:
    x = Tensor(np.arange(16.0).reshape(1, 1, 4, 4), requires_grad=True)
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    assert isinstance(indices, Tensor) and indices.dtype == np.int64
    restored = F.max_unpool2d(pooled, indices, 2)
    np.testing.assert_array_equal(restored.data, x.data * (x.data % 8 >= 5) * (x.data % 2))


# ---------------------------------------------------------------------------------------
# Blur pooling (Zhang 2019).


def _manual_blur(x_t: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
                 mode: str) -> torch.Tensor:
    """Depthwise binomial conv in torch after explicit padding, then subsampling."""
    pads = []
    for k in reversed(kernel):  # TF.pad lists the last axis first
        pads += [(k - 1) // 2, k - 1 - (k - 1) // 2]
    padded = TF.pad(x_t, pads, mode="constant" if mode == "zeros" else mode)
    channels = x_t.shape[1]
    weight = torch.from_numpy(binomial_filter(kernel)).expand(channels, 1, *kernel)
    blurred = getattr(TF, f"conv{len(kernel)}d")(padded, weight, groups=channels)
    return blurred[(Ellipsis, *(slice(None, None, s) for s in stride))]


@given(st.integers(1, 3), st.integers(1, 5), st.integers(1, 3),
       st.sampled_from(["reflect", "replicate", "circular", "zeros"]), st.integers(0, 2**31))
def test_blur_pool_equals_depthwise_binomial_conv_then_subsampling(
        dims: int, k: int, s: int, mode: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    spatial = tuple(int(rng.integers(k, k + 4)) for _ in range(dims))
    x = rng.standard_normal((2, 3, *spatial))
    kernel, stride = (k,) * dims, (s,) * dims
    out = check_op(lambda v: getattr(F, f"blur_pool{dims}d")(v, k, s, mode),
                   lambda v: _manual_blur(v, kernel, stride, mode), x, rng)
    assert out.shape[2:] == tuple(-(-n // s) for n in spatial)


def test_binomial_filter_rows_of_pascals_triangle() -> None:
    np.testing.assert_allclose(binomial_filter((3,)), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(binomial_filter((5,)), np.array([1, 4, 6, 4, 1]) / 16)
    np.testing.assert_allclose(binomial_filter((3, 2)),
                               np.outer([1, 2, 1], [1, 1]) / 8)


def test_blur_pool_is_more_shift_consistent_than_strided_pooling() -> None:
    # Zhang 2019: after stride-2 downsampling, shifting the input by one sample changes
    # the output; low-pass filtering first makes the change small (high frequencies are
    # what aliases). Measure ||down(x) - down(shift(x))|| over random high-frequency signals.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 1, 64))
    shifted = np.roll(x, 1, axis=-1)

    def change(down: Callable) -> float:
        return float(np.linalg.norm(down(x) - down(shifted)))

    blur = change(lambda v: F.blur_pool1d(v, 5, 2, "circular"))
    subsample = change(lambda v: v[..., ::2])
    max_pool = change(lambda v: F.max_pool1d(v, 2, 2))
    assert blur < 0.6 * subsample and blur < 0.6 * max_pool


def test_blur_pool_finite_differences() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 5, 6))
    numeric_grad_check(lambda v: F.blur_pool2d(v, 3, 2), x, rng)


# ---------------------------------------------------------------------------------------
# Array/Tensor kinds, dtypes, unbatched inputs.


@pytest.mark.parametrize("fn", [
    lambda v: F.max_pool2d(v, 2),
    lambda v: F.avg_pool2d(v, 2, padding=1),
    lambda v: F.lp_pool2d(v, 2, 2),
    lambda v: F.adaptive_avg_pool2d(v, 3),
    lambda v: F.adaptive_max_pool2d(v, 3),
    lambda v: F.blur_pool2d(v),
])
def test_float32_and_unbatched_inputs_keep_their_kind(fn: Callable) -> None:
    x = np.random.default_rng(6).standard_normal((3, 6, 5)).astype(np.float32)
    out = fn(x)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.ndim == 3
    np.testing.assert_allclose(out, fn(x[None])[0], rtol=1e-6)
    x_t = Tensor(x, requires_grad=True)
    y = fn(x_t)
    y.backward(np.ones(y.shape, dtype=np.float32))
    assert x_t.grad.dtype == np.float32 and x_t.grad.shape == x.shape


# ---------------------------------------------------------------------------------------
# Errors name the function and the argument.


@pytest.mark.parametrize(("call", "match"), [
    (lambda x: F.max_pool2d(x, 2, padding=2), r"max_pool2d: padding \(2, 2\) must be <="),
    (lambda x: F.avg_pool2d(x, 3, padding=(0, 2)), r"avg_pool2d: padding"),
    (lambda x: F.max_pool2d(x, 0), r"max_pool2d: kernel_size must be >= 1"),
    (lambda x: F.max_pool2d(x, 2, stride=0), r"max_pool2d: stride must be >= 1"),
    (lambda x: F.avg_pool2d(x, 2, padding=-1), r"avg_pool2d: padding must be >= 0"),
    (lambda x: F.max_pool2d(x, 2, dilation=(1, 0)), r"max_pool2d: dilation must be >= 1"),
    (lambda x: F.max_pool2d(x, (2, 2, 2)), r"max_pool2d: kernel_size must be an int or a"),
    (lambda x: F.max_pool3d(x[0, 0], 2), r"max_pool3d: input must be 4-D"),
    (lambda x: F.max_pool2d(x, 7), r"max_pool2d: output size \(0, 0\) must be >= 1"),
    (lambda x: F.avg_pool1d(x[0], 7), r"avg_pool1d: output size"),
    (lambda x: F.avg_pool2d(x, 2, divisor_override=0), r"avg_pool2d: divisor_override"),
    (lambda x: F.lp_pool2d(x, 0, 2), r"lp_pool2d: norm_type must be non-zero"),
    (lambda x: F.adaptive_avg_pool2d(x, (0, 2)), r"adaptive_avg_pool2d: output_size must"),
    (lambda x: F.adaptive_max_pool2d(x, (2, 2, 2)), r"adaptive_max_pool2d: output_size"),
    (lambda x: F.blur_pool2d(x, 13), r"blur_pool2d: padding_mode='reflect' needs padding"),
    (lambda x: F.blur_pool2d(x, 3, 2, "mirror"), r"blur_pool2d: padding_mode must be one"),
    (lambda x: F.blur_pool2d(x, 3, 0), r"blur_pool2d: stride must be >= 1"),
])
def test_errors(call: Callable, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(np.zeros((2, 3, 6, 6)))


def test_max_unpool_errors() -> None:
    x = np.zeros((1, 1, 2, 2))
    indices = np.zeros((1, 1, 2, 2), dtype=np.int64)
    with pytest.raises(ValueError, match=r"max_unpool2d: output_size\[0\] must be strictly"):
        F.max_unpool2d(x, indices, 2, output_size=(6, 4))
    with pytest.raises(ValueError, match=r"max_unpool2d: indices must lie in \[0, 16\)"):
        F.max_unpool2d(x, indices + 16, 2)
    with pytest.raises(ValueError, match=r"max_unpool2d: indices must have the input's"):
        F.max_unpool2d(x, indices[..., :1], 2)
    with pytest.raises(TypeError, match=r"max_unpool2d: indices must be an integer array"):
        F.max_unpool2d(x, indices.astype(float), 2)


@pytest.mark.parametrize("kwargs", [{"kernel_size": 2}, {"kernel_size": 3, "stride": 2,
                                                        "padding": 1}])
def test_max_pool_nan_gradient_reaches_only_the_chosen_input(kwargs):
    """A NaN upstream gradient goes to its window's argmax only, as in torch (a masked
    product would leak NaN * 0 = NaN to every tap)."""
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6))
    ours = Tensor(x, requires_grad=True)
    y = F.max_pool2d(ours, **kwargs)
    g = np.ones(y.shape)
    g[0, 0, 1, 1] = np.nan
    y.backward(g)
    theirs = torch.tensor(x, requires_grad=True)
    TF.max_pool2d(theirs, **kwargs).backward(torch.tensor(g))
    np.testing.assert_array_equal(np.isnan(ours.grad), np.isnan(theirs.grad.numpy()))
    np.testing.assert_allclose(np.nan_to_num(ours.grad), np.nan_to_num(theirs.grad.numpy()))


def test_max_pool_gradient_that_overflows_between_stages_matches_torch():
    """Overlapping windows that pick the same input add their gradients up stage by stage.
    Here the upstream gradient is finite (its sum too: +2e38 and -2e38 alternate), but the
    first stage (rows, k=3, stride 1) sums two of them to +-inf in float32; the next stage
    (columns, k=2) must then not spread inf * 0 = NaN to the inputs it did not choose."""
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 2, 0] = x[0, 0, 2, 3] = 1.0  # both row windows of each column pair pick these
    ours = Tensor(x, requires_grad=True)
    y = F.max_pool2d(ours, kernel_size=(3, 2), stride=(1, 2))
    g = np.array([[[[2e38, -2e38], [2e38, -2e38]]]], np.float32)
    y.backward(g)
    theirs = torch.tensor(x, requires_grad=True)
    TF.max_pool2d(theirs, kernel_size=(3, 2), stride=(1, 2)).backward(torch.tensor(g))
    expected = theirs.grad.numpy()
    assert expected[0, 0, 2, 0] == np.inf and expected[0, 0, 2, 3] == -np.inf
    assert np.count_nonzero(expected) == 2
    np.testing.assert_array_equal(ours.grad, expected)


@pytest.mark.parametrize("upstream", [[0.10490011, -0.53566939, 0.36159506],
                                      [-3e38, 3e38, 3e38]])
def test_max_pool_overlapping_windows_add_gradients_in_torchs_order(upstream):
    """All three windows pick x[2]; torch adds their gradients in output order, so the
    float32 sum has its bits (and stays finite where the reverse order overflows)."""
    x = np.array([[[0, 0, 5, 0, 0]]], np.float32)
    g = np.array([[upstream]], np.float32)
    ours = Tensor(x, requires_grad=True)
    F.max_pool1d(ours, kernel_size=3, stride=1).backward(g)
    theirs = torch.tensor(x, requires_grad=True)
    TF.max_pool1d(theirs, kernel_size=3, stride=1).backward(torch.tensor(g))
    assert ours.grad.tobytes() == theirs.grad.numpy().tobytes()
