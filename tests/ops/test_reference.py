"""The reference (ops/reference.py, the lecture's sums) against torch and scipy, float64.

The reference is the first oracle of every fast path (tests/ops/test_gemm.py,
tests/ops/test_fft.py), so it is checked here against everything that does not share its
code: torch (forward and VJPs, through ``check_vjp``), ``scipy.signal.correlate`` and
``scipy.ndimage.correlate`` (forward, padding modes), float64 finite differences, the
adjoint identity of the transposed convolution, and the lecture's worked example.
Names: ``F`` is cnnlab.functional, ``TF`` torch.nn.functional.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import scipy.signal
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import _lecture as lecture
from _check import (
    assert_close,
    check_op,
    check_vjp,
    conv_arrays,
    conv_case,
    conv_transpose_case,
    finite_difference_grad,
    reference_conv,
    reference_conv_transpose,
    tolerance,
    torch_conv,
    torch_conv_of,
    torch_conv_transpose,
    torch_conv_transpose_of,
    torch_vjp,
)
from cnnlab import Tensor
from cnnlab import functional as F
from cnnlab.ops import dispatch, reference
from cnnlab.ops._args import conv_output_shape, pool_output_shape
from cnnlab.ops.dispatch import ConvRequest
from cnnlab.ops.pool import PoolRequest

NUMPY_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                  "circular": "wrap"}
NDIMAGE_MODE = {"zeros": "constant", "reflect": "mirror", "replicate": "nearest",
                "circular": "wrap"}


# ---------------------------------------------------------------------------------------
# 1. Convolution: torch (forward and VJPs), scipy (forward), every option.


@pytest.mark.parametrize("nd", [1, 2, 3])
@settings(max_examples=40)
@given(data=st.data())
def test_conv_matches_torch(nd, data):
    case = data.draw(conv_case(nd))
    x, w, b, rng = conv_arrays(case)
    request = case["request"]
    check_vjp(reference_conv(request), torch_conv_of(request), [x, w, b], rng,
              what=f"conv {request}")


def scipy_conv(x, w, b, request: ConvRequest):
    """y[n, o] = the 'valid' N-D correlation (channels included) of the padded input's
    channels of o's group with o's dilated filter, every stride-th output kept."""
    pads = ((0, 0), (0, 0), *request.padding)
    x_pad = np.pad(x, pads, mode=NUMPY_PAD_MODE[request.padding_mode])
    dilated_kernel = tuple(d * (k - 1) + 1 for k, d in zip(w.shape[2:], request.dilation))
    w_dilated = np.zeros(w.shape[:2] + dilated_kernel)
    w_dilated[(Ellipsis, *(slice(None, None, d) for d in request.dilation))] = w
    c_in_g, c_out_g = w.shape[1], w.shape[0] // request.groups
    keep = tuple(slice(None, None, s) for s in request.stride)
    y = np.empty((x.shape[0], w.shape[0], *conv_output_shape(
        x.shape[2:], w.shape[2:], request.stride, request.padding, request.dilation)))
    for n in range(x.shape[0]):
        for o in range(w.shape[0]):
            group = slice(o // c_out_g * c_in_g, (o // c_out_g + 1) * c_in_g)
            full = scipy.signal.correlate(x_pad[n, group], w_dilated[o], mode="valid",
                                          method="direct")
            y[n, o] = full[0][keep]
    return y if b is None else y + b.reshape((1, -1) + (1,) * (x.ndim - 2))


@pytest.mark.parametrize("nd", [1, 2, 3])
@settings(max_examples=30)
@given(data=st.data())
def test_conv_matches_scipy_correlate(nd, data):
    case = data.draw(conv_case(nd))
    x, w, b, _ = conv_arrays(case)
    ours = reference.conv_forward(x, w, b, case["request"])
    assert_close(ours, scipy_conv(x, w, b, case["request"]), 1e-10, 1e-10, "scipy")


@pytest.mark.parametrize("padding_mode", NDIMAGE_MODE)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_padding_modes_match_scipy_ndimage(nd, padding_mode):
    """Odd kernels, half-kernel padding, stride 1: ``scipy.ndimage.correlate`` with the
    same boundary rule (its 'mirror' is reflect, 'nearest' replicate, 'wrap' circular)."""
    rng = np.random.default_rng(nd)
    kernel = (3, 5, 3)[:nd]
    x = rng.standard_normal((2, 2, *(7, 6, 5)[:nd]))
    w = rng.standard_normal((1, 2, *kernel))
    request = ConvRequest((1,) * nd, tuple((k // 2, k // 2) for k in kernel), (1,) * nd, 1,
                          padding_mode)
    expected = np.stack([
        sum(scipy.ndimage.correlate(x[n, c], w[0, c], mode=NDIMAGE_MODE[padding_mode])
            for c in range(2))
        for n in range(2)])[:, None]
    assert_close(reference.conv_forward(x, w, None, request), expected, 1e-10, 1e-10,
                 padding_mode)


def test_conv_float32_keeps_its_dtype():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 4, 7, 6)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 2)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    request = ConvRequest((2, 1), ((1, 2), (0, 1)), (1, 2), 2, "reflect")
    check_vjp(reference_conv(request), torch_conv_of(request), [x, w, b], rng,
              *tolerance(np.float32), what="float32")


# ---------------------------------------------------------------------------------------
# 2. Transposed convolution: torch, and the adjoint of the convolution.


@pytest.mark.parametrize("nd", [1, 2, 3])
@settings(max_examples=40)
@given(data=st.data())
def test_conv_transpose_matches_torch(nd, data):
    case = data.draw(conv_transpose_case(nd))
    x, w, b, rng = conv_arrays(case, transposed=True)
    check_vjp(reference_conv_transpose(case["request"], case["out_spatial"]),
              torch_conv_transpose_of(case), [x, w, b], rng, what="conv_transpose")


@pytest.mark.parametrize("nd", [1, 2, 3])
@settings(max_examples=30)
@given(data=st.data())
def test_conv_transpose_is_the_adjoint_of_conv(nd, data):
    """<conv_transpose(x), u> = <x, conv(u)> (Dumoulin & Visin 2016, section 4): the conv
    reads u (N, C_out_t, *out) with the same weight, as (C_out = C_in_t, C_out_t/g, *k);
    with output padding past the stride it has extra outputs, which x does not meet."""
    case = data.draw(conv_transpose_case(nd))
    x, w, _, rng = conv_arrays(case, transposed=True)
    request = case["request"]
    y = reference.conv_transpose_forward(x, w, None, request, case["out_spatial"])
    u = rng.standard_normal(y.shape)
    conv_u = reference.conv_forward(u, w, None, request)
    conv_u = conv_u[(Ellipsis, *(slice(0, n) for n in x.shape[2:]))]
    assert_close(np.vdot(y, u), np.vdot(x, conv_u), 1e-10, 1e-10, "adjoint")


# ---------------------------------------------------------------------------------------
# 3. Finite differences of the VJPs, float64, tiny shapes. The sums are linear in each
# argument, so central differences have no truncation error and a large step is exact.

FD_EPS, FD_TOL = 1e-3, 1e-8


def assert_vjp_matches_finite_differences(forward, backward, arrays, rng):
    upstream = rng.standard_normal(forward(*arrays).shape)
    numeric = finite_difference_grad(lambda *a: float((forward(*a) * upstream).sum()),
                                     arrays, eps=FD_EPS)
    for index, (ours, expected) in enumerate(zip(backward(upstream, *arrays), numeric,
                                                 strict=True)):
        assert_close(ours, expected, FD_TOL, FD_TOL, f"grad of input {index}")


FD_CONV_CASES = [
    ((1, 2, 7), (2, 2, 3), ConvRequest((1,), ((4, 0),), (2,), 1, "zeros")),
    ((2, 2, 6), (2, 1, 2), ConvRequest((2,), ((2, 1),), (1,), 2, "circular")),
    ((1, 2, 5, 4), (2, 2, 3, 2), ConvRequest((2, 1), ((1, 1), (0, 1)), (1, 1), 1, "reflect")),
    ((1, 2, 4, 5), (4, 1, 2, 2), ConvRequest((1, 1), ((1, 1), (2, 0)), (2, 1), 2,
                                             "replicate")),
    ((1, 1, 3, 4, 3), (2, 1, 2, 2, 2), ConvRequest((2, 2, 2), ((1, 0), (0, 1), (1, 1)),
                                                   (1, 1, 1), 1, "zeros")),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "request_"), FD_CONV_CASES)
def test_conv_vjp_finite_differences(x_shape, w_shape, request_):
    rng = np.random.default_rng(len(x_shape))
    arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape),
              rng.standard_normal(w_shape[0])]
    assert_vjp_matches_finite_differences(*reference_conv(request_), arrays, rng)


FD_TRANSPOSE_CASES = [
    ((1, 2, 4), (2, 2, 3), ConvRequest((3,), ((1, 1),), (1,), 1), (12,)),  # output_padding 2
    ((2, 2, 3), (2, 1, 2), ConvRequest((1,), ((0, 2),), (2,), 2), (3,)),   # output_padding 1
    ((1, 2, 3, 2), (2, 1, 3, 2), ConvRequest((2, 1), ((1, 0), (0, 1)), (1, 1), 1), (6, 2)),
    ((1, 2, 2, 2, 2), (2, 1, 2, 1, 2), ConvRequest((2, 2, 2), ((1, 1), (0, 0), (0, 0)),
                                                   (1, 1, 1), 2), (2, 3, 4)),
]


@pytest.mark.parametrize(("x_shape", "w_shape", "request_", "out_spatial"),
                         FD_TRANSPOSE_CASES)
def test_conv_transpose_vjp_finite_differences(x_shape, w_shape, request_, out_spatial):
    rng = np.random.default_rng(len(x_shape) + 10)
    groups = request_.groups
    arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape),
              rng.standard_normal(w_shape[1] * groups)]
    assert_vjp_matches_finite_differences(*reference_conv_transpose(request_, out_spatial),
                                          arrays, rng)


# ---------------------------------------------------------------------------------------
# 4. Poolings: forward (and the max / avg VJPs) against torch, every option.


@st.composite
def pool_case(draw, dilation=True, padding=True, at_least_kernel=False):
    """Shape (N, C, *spatial), a canonical PoolRequest, ceil_mode and a seed.

    ``at_least_kernel``: inputs no smaller than the kernel, which torch's avg_pool3d
    requires even when padding would make the window fit.
    """
    nd = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dil = tuple(draw(st.integers(1, 2)) if dilation else 1 for _ in range(nd))
    pad = tuple(draw(st.integers(0, k // 2)) if padding else 0 for k in kernel)
    spatial = tuple(max(1, d * (k - 1) + 1 - 2 * p, k if at_least_kernel else 1)
                    + draw(st.integers(0, 4 if nd < 3 else 2))
                    for k, d, p in zip(kernel, dil, pad, strict=True))
    ceil_mode = draw(st.booleans())
    out = pool_output_shape(spatial, kernel, stride, pad, dil, ceil_mode)
    return {"nd": nd, "shape": (2, 2, *spatial), "ceil_mode": ceil_mode,
            "request": PoolRequest(kernel, stride, pad, dil, out),
            "seed": draw(st.integers(0, 2**31 - 1))}


def torch_pool_options(case: dict, *names: str) -> dict:
    request = case["request"]
    every = {"kernel_size": request.kernel, "stride": request.stride,
             "padding": request.padding, "dilation": request.dilation,
             "ceil_mode": case["ceil_mode"]}
    return {name: every[name] for name in names}


@settings(max_examples=60)
@given(pool_case())
def test_max_pool_matches_torch(case):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    request = case["request"]
    options = torch_pool_options(case, "kernel_size", "stride", "padding", "dilation",
                                 "ceil_mode")
    torch_fn = torch_vjp(lambda t: getattr(TF, f"max_pool{case['nd']}d")(t, **options))
    out = reference.max_pool(x, request)
    # A window of padding only (possible with dilation) is -inf; torch's backward then
    # writes out of bounds (tests/ops/test_pool.py): compare the forward only there.
    backward = (None if np.isinf(out).any()
                else lambda g, v: [reference.max_pool_backward(v, g, request)])
    check_vjp((lambda v: reference.max_pool(v, request), backward), torch_fn, [x], rng,
              what="max_pool")


@settings(max_examples=40)
@given(pool_case(), st.sampled_from(["ties", "nan", "-inf"]))
def test_max_pool_backward_ties_nan_and_inf_follow_torch(case, kind):
    """Integer values (many ties): the first maximum; NaN: the last NaN; -inf: the first
    tap on the input (PyTorch's scan)."""
    rng = np.random.default_rng(case["seed"])
    x = rng.integers(0, 3, size=case["shape"]).astype(np.float64)
    if kind == "nan":
        x[rng.random(x.shape) < 0.3] = np.nan
    if kind == "-inf":
        x[rng.random(x.shape) < 0.5] = -np.inf
    request = case["request"]
    options = torch_pool_options(case, "kernel_size", "stride", "padding", "dilation",
                                 "ceil_mode")
    pool = getattr(TF, f"max_pool{case['nd']}d")
    out = reference.max_pool(x, request)
    expected, indices = pool(torch.from_numpy(x), return_indices=True, **options)
    assert_close(out, expected.numpy(), 0, 0, "max_pool")
    if (indices.numpy() >= np.prod(x.shape[2:])).any():
        return  # a window of padding only: torch's backward writes out of bounds
    grad = rng.standard_normal(out.shape)
    x_torch = torch.from_numpy(x).requires_grad_()
    pool(x_torch, **options).backward(torch.from_numpy(grad))
    assert_close(reference.max_pool_backward(x, grad, request), x_torch.grad.numpy(),
                 1e-12, 1e-12, "max_pool_backward")


@settings(max_examples=60)
@given(pool_case(dilation=False, at_least_kernel=True), st.booleans(),
       st.sampled_from([None, 1, 3, -2]))
def test_avg_pool_matches_torch(case, count_include_pad, divisor_override):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["shape"])
    request, nd = case["request"], case["nd"]
    options = {**torch_pool_options(case, "stride", "padding", "ceil_mode"),
               "count_include_pad": count_include_pad, "divisor_override": divisor_override}

    def torch_avg(t):
        if nd > 1:
            return getattr(TF, f"avg_pool{nd}d")(t, request.kernel, **options)
        # torch's avg_pool1d has no divisor_override: pool (..., L, 1) in 2-D instead.
        return TF.avg_pool2d(t[..., None], (request.kernel[0], 1), (request.stride[0], 1),
                             (request.padding[0], 0), case["ceil_mode"], count_include_pad,
                             divisor_override)[..., 0]

    ours = (lambda v: reference.avg_pool(v, request, count_include_pad, divisor_override),
            lambda g, v: [reference.avg_pool_backward(g, v.shape[2:], request,
                                                      count_include_pad, divisor_override)])
    check_vjp(ours, torch_vjp(torch_avg), [x], rng, what="avg_pool")


@settings(max_examples=40)
@given(pool_case(dilation=False, padding=False, at_least_kernel=True),
       st.sampled_from([1.0, 2.0, 3.0, 1.5, np.inf, -np.inf]))
def test_lp_pool_matches_torch(case, norm_type):
    rng = np.random.default_rng(case["seed"])
    x = rng.uniform(0.1, 2.0, case["shape"])
    if norm_type != 1.5:  # a negative sum of a fractional power is NaN in both
        x *= rng.choice([-1.0, 1.0], size=x.shape)
    request, nd = case["request"], case["nd"]
    kernel = request.kernel if nd > 1 else request.kernel[0]
    torch_fn = torch_vjp(lambda t: getattr(TF, f"lp_pool{nd}d")(
        t, norm_type, kernel, request.stride, case["ceil_mode"]))
    check_vjp((lambda v: reference.lp_pool(v, norm_type, request), None), torch_fn, [x],
              what=f"lp_pool p={norm_type}")


@settings(max_examples=40)
@given(st.integers(1, 3), st.data(), st.booleans())
def test_adaptive_pool_matches_torch(nd, data, is_max):
    spatial = tuple(data.draw(st.integers(1, 7 if nd < 3 else 4)) for _ in range(nd))
    out = tuple(data.draw(st.integers(1, 6)) for _ in range(nd))
    x = np.random.default_rng(data.draw(st.integers(0, 2**31))).standard_normal(
        (2, 2, *spatial))
    kind = "max" if is_max else "avg"
    ours = getattr(reference, f"adaptive_{kind}_pool")
    theirs = getattr(TF, f"adaptive_{kind}_pool{nd}d")
    check_vjp((lambda v: ours(v, out), None), torch_vjp(lambda t: theirs(t, out)), [x],
              what=f"adaptive_{kind}_pool")


def test_pool_vjps_finite_differences():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 5, 4))
    spatial = x.shape[2:]
    for count_include_pad, divisor_override in [(True, None), (False, None), (True, 5)]:
        request = PoolRequest((3, 2), (2, 1), (1, 1), (1, 1),
                              pool_output_shape(spatial, (3, 2), (2, 1), (1, 1), (1, 1),
                                                True))
        assert_vjp_matches_finite_differences(
            lambda v, r=request, c=count_include_pad, d=divisor_override:
                reference.avg_pool(v, r, c, d),
            lambda g, v, r=request, c=count_include_pad, d=divisor_override:
                [reference.avg_pool_backward(g, v.shape[2:], r, c, d)],
            [x], rng)
    # Max pooling is linear near an input with distinct values (the step is far smaller
    # than any gap between them).
    request = PoolRequest((2, 3), (1, 2), (1, 1), (2, 1),
                          pool_output_shape(spatial, (2, 3), (1, 2), (1, 1), (2, 1), True))
    assert_vjp_matches_finite_differences(
        lambda v: reference.max_pool(v, request),
        lambda g, v: [reference.max_pool_backward(v, g, request)], [x], rng)


# ---------------------------------------------------------------------------------------
# 5. The lecture's worked example, computed by the lecture's sum.


def test_lecture_example():
    image = lecture.IMAGE.astype(np.float64)[None, None]
    kernel = lecture.FILTER.astype(np.float64)[None, None]
    request = ConvRequest((1, 1), ((1, 1), (1, 1)), (1, 1), 1)
    feature_map = reference.conv_forward(image, kernel, None, request)
    np.testing.assert_array_equal(feature_map[0, 0], lecture.FEATURE_MAP)
    pooled = reference.max_pool(feature_map, PoolRequest((2, 2), (2, 2), (0, 0), (1, 1),
                                                         (3, 3)))
    np.testing.assert_array_equal(pooled[0, 0], lecture.POOLED)


# ---------------------------------------------------------------------------------------
# 6. algorithm="direct" in cnnlab.functional runs the reference, with autograd.


@pytest.mark.parametrize("nd", [1, 2, 3])
@settings(max_examples=15)
@given(data=st.data())
def test_functional_direct_matches_torch(nd, data):
    case = data.draw(conv_case(nd))
    x, w, b, rng = conv_arrays(case)
    r = case["request"]
    check_op(lambda *t: F.conv(*t, stride=r.stride, padding=r.padding, dilation=r.dilation,
                               groups=r.groups, padding_mode=r.padding_mode,
                               algorithm="direct"),
             lambda *t: torch_conv(*t, r.stride, r.padding, r.dilation, r.groups,
                                   r.padding_mode), [x, w, b], rng=rng)
    t_case = data.draw(conv_transpose_case(nd))
    x, w, b, rng = conv_arrays(t_case, transposed=True)
    r, op = t_case["request"], t_case["output_padding"]
    check_op(lambda *t: getattr(F, f"conv_transpose{nd}d")(
                 *t, stride=r.stride, padding=r.padding, output_padding=op, groups=r.groups,
                 dilation=r.dilation, algorithm="direct"),
             lambda *t: torch_conv_transpose(*t, r.stride, r.padding, op, r.groups,
                                             r.dilation), [x, w, b], rng=rng)


def test_functional_direct_reaches_the_reference(monkeypatch):
    """Each of the four calls goes to reference.py, and only there."""
    calls = []
    for name in ("conv_forward", "conv_backward", "conv_transpose_forward",
                 "conv_transpose_backward"):
        original = getattr(reference, name)
        monkeypatch.setattr(reference, name, lambda *a, _n=name, _f=original, **k: (
            calls.append(_n), _f(*a, **k))[1])
    monkeypatch.setattr(dispatch, "conv_forward", None)  # the GEMM kernels: unreachable
    monkeypatch.setattr(dispatch, "conv_backward", None)
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal((2, 2, 5, 5)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    F.conv2d(x, w, stride=2, padding=1, algorithm="direct").sum().backward()
    F.conv_transpose2d(x, Tensor(rng.standard_normal((2, 3, 2, 2)), requires_grad=True),
                       stride=2, algorithm="direct").sum().backward()
    assert calls == ["conv_forward", "conv_backward", "conv_transpose_forward",
                     "conv_transpose_backward"]
    assert "direct" in dispatch.ALGORITHMS


@pytest.mark.parametrize("nd", [1, 2])
def test_direct_on_an_empty_batch(nd):
    x = np.zeros((0, 2, *(5,) * nd))
    w = np.random.default_rng(0).standard_normal((4, 2, *(3,) * nd))
    check_op(lambda x_t, w_t: F.conv(x_t, w_t, padding=1, stride=2, algorithm="direct"),
             lambda x_t, w_t: getattr(TF, f"conv{nd}d")(x_t, w_t, padding=1, stride=2),
             [x, w])
    w_t = np.random.default_rng(1).standard_normal((2, 3, *(3,) * nd))
    check_op(lambda x_t, w_t: getattr(F, f"conv_transpose{nd}d")(x_t, w_t, stride=2,
                                                                 algorithm="direct"),
             lambda x_t, w_t: getattr(TF, f"conv_transpose{nd}d")(x_t, w_t, stride=2),
             [x, w_t])
