"""cnnlab.functional convolutions, transposed convolutions and pad, against torch.

Three kinds of check (STYLE.md, rule 14): the torch oracle over random options through
``check_op`` (hypothesis), float64 finite differences, and error messages. Padding modes and
per-side / string paddings are given to torch as an explicit ``F.pad`` followed by an
unpadded convolution, with the (lo, hi) pairs computed here independently of cnnlab.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given
from hypothesis import strategies as st

from _check import (
    assert_close,
    check_op,
    draw_padding,
    finite_difference_grad,
    torch_conv,
    torch_conv_transpose,
)
from cnnlab import Tensor
from cnnlab import functional as F
from cnnlab.ops import gemm as gemm_module

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_T = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}
TORCH_CONV = {1: TF.conv1d, 2: TF.conv2d, 3: TF.conv3d}
TORCH_CONV_T = {1: TF.conv_transpose1d, 2: TF.conv_transpose2d, 3: TF.conv_transpose3d}
ALGORITHMS = ("gemm", "fft")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
# Largest spatial size drawn per rank, so that a 3-D case stays a few hundred voxels.
MAX_SIZE = {1: 9, 2: 6, 3: 4}


# ---------------------------------------------------------------------------------------
# Oracles: padding pairs and torch references, written independently of cnnlab.ops._args.


def reference_pads(padding, in_spatial, kernel, stride, dilation):
    """(lo, hi) per spatial dim for every padding form of the contract."""
    nd = len(in_spatial)
    extent = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
    if padding == "valid":
        return [(0, 0)] * nd
    if padding == "full":
        return [(e, e) for e in extent]
    if padding == "causal":
        return [(extent[0], 0)]
    if padding == "same":
        # TensorFlow/Keras: ceil(n / s) outputs, the odd pixel of padding on the high side.
        pairs = []
        for n, e, s in zip(in_spatial, extent, stride, strict=True):
            total = max((math.ceil(n / s) - 1) * s + e + 1 - n, 0)
            pairs.append((total // 2, total - total // 2))
        return pairs
    if isinstance(padding, int):
        return [(padding, padding)] * nd
    if all(isinstance(p, int) for p in padding):
        return [(p, p) for p in padding]
    return [tuple(p) for p in padding]


def conv_out_size(n, lo, hi, k, s, d):
    return (n + lo + hi - d * (k - 1) - 1) // s + 1


# ---------------------------------------------------------------------------------------
# Hypothesis strategies.


@st.composite
def conv_cases(draw, nd):
    """A valid convolution: shapes, stride, padding (any form), dilation, groups, mode."""
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    padding_mode = draw(st.sampled_from(PADDING_MODES))
    padding = draw_padding(draw, nd, most_pairs=3)
    # Smallest size per dim that gives an output (fixed paddings) and fits reflect/circular.
    fixed = reference_pads(padding, (1,) * nd, kernel, (1,) * nd, dilation)
    if isinstance(padding, str) and padding == "same":
        fixed = [(0, 0)] * nd
    minimum = []
    for (lo, hi), k, d in zip(fixed, kernel, dilation, strict=True):
        need = 1
        if not isinstance(padding, str) or padding == "valid":
            need = max(need, d * (k - 1) + 1 - lo - hi)
        if padding_mode == "reflect":
            need = max(need, max(lo, hi) + 1)
        if padding_mode == "circular":
            need = max(need, max(lo, hi))
        minimum.append(need)
    in_spatial = tuple(m + draw(st.integers(0, MAX_SIZE[nd] - 1)) for m in minimum)
    pairs = reference_pads(padding, in_spatial, kernel, stride, dilation)
    for n, (lo, hi) in zip(in_spatial, pairs, strict=True):
        # 'same' pads depend on the size; keep reflect/circular within torch's limits.
        assume(padding_mode != "reflect" or max(lo, hi) < n)
        assume(padding_mode != "circular" or max(lo, hi) <= n)
    batch = draw(st.integers(1, 2))
    return {
        "x_shape": (batch, c_in, *in_spatial),
        "w_shape": (c_out, c_in // groups, *kernel),
        "bias": draw(st.booleans()),
        "kwargs": {"stride": stride, "padding": padding, "dilation": dilation,
                   "groups": groups, "padding_mode": padding_mode},
        "pairs": pairs,
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@st.composite
def conv_transpose_cases(draw, nd):
    """A valid transposed convolution; padding as int, per-dim tuple or per-side pairs."""
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    c_out_g = draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1))
                           for s, d in zip(stride, dilation, strict=True))
    form = draw(st.sampled_from(["int", "tuple", "pairs"]))
    if form == "int":
        padding = draw(st.integers(0, 2))
    elif form == "tuple":
        padding = tuple(draw(st.integers(0, 2)) for _ in range(nd))
    else:
        padding = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(nd))
    pairs = reference_pads(padding, (1,) * nd, kernel, stride, dilation)
    in_spatial = tuple(draw(st.integers(1, MAX_SIZE[nd] - 1)) for _ in range(nd))
    for n, (lo, hi), k, s, d, op in zip(in_spatial, pairs, kernel, stride, dilation,
                                        output_padding, strict=True):
        assume((n - 1) * s - lo - hi + d * (k - 1) + op + 1 >= 1)
    return {
        "x_shape": (draw(st.integers(1, 2)), c_in, *in_spatial),
        "w_shape": (c_in, c_out_g, *kernel),
        "bias": draw(st.booleans()),
        "kwargs": {"stride": stride, "padding": padding, "output_padding": output_padding,
                   "groups": groups, "dilation": dilation},
        "pairs": pairs,
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def random_inputs(case, dtype=np.float64, bias_channels=None):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    w = rng.standard_normal(case["w_shape"]).astype(dtype)
    channels = case["w_shape"][0] if bias_channels is None else bias_channels
    b = rng.standard_normal(channels).astype(dtype) if case["bias"] else None
    return x, w, b, rng


def run_conv_case(case, nd, algorithm, dtype=np.float64):
    x, w, b, rng = random_inputs(case, dtype)
    kw = case["kwargs"]

    def ours(x_t, w_t, b_t):
        return CONV[nd](x_t, w_t, b_t, algorithm=algorithm, **kw)

    def theirs(x_t, w_t, b_t):
        return torch_conv(x_t, w_t, b_t, kw["stride"], case["pairs"], kw["dilation"],
                          kw["groups"], kw["padding_mode"])

    return check_op(ours, theirs, [x, w, b], rng=rng)


def run_conv_transpose_case(case, nd, algorithm, dtype=np.float64):
    kw = case["kwargs"]
    c_out = case["w_shape"][1] * kw["groups"]
    x, w, b, rng = random_inputs(case, dtype, bias_channels=c_out)

    def ours(x_t, w_t, b_t):
        return CONV_T[nd](x_t, w_t, b_t, algorithm=algorithm, **kw)

    symmetric = all(lo == hi for lo, hi in case["pairs"])

    def theirs(x_t, w_t, b_t):
        if symmetric:  # torch's own transposed convolution, padding included
            return TORCH_CONV_T[nd](x_t, w_t, b_t, stride=kw["stride"],
                                    padding=tuple(lo for lo, _ in case["pairs"]),
                                    output_padding=kw["output_padding"], groups=kw["groups"],
                                    dilation=kw["dilation"])
        return torch_conv_transpose(x_t, w_t, b_t, kw["stride"], case["pairs"],
                                    kw["output_padding"], kw["groups"], kw["dilation"])

    return check_op(ours, theirs, [x, w, b], rng=rng)


# ---------------------------------------------------------------------------------------
# 1. Property tests against torch, float64, every option, both algorithms.


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(data=st.data())
def test_conv_matches_torch(nd, algorithm, data):
    run_conv_case(data.draw(conv_cases(nd)), nd, algorithm)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", [1, 2, 3])
@given(data=st.data())
def test_conv_transpose_matches_torch(nd, algorithm, data):
    run_conv_transpose_case(data.draw(conv_transpose_cases(nd)), nd, algorithm)


@pytest.mark.parametrize("nd", [1, 2, 3])
@given(data=st.data())
def test_algorithms_agree(nd, data):
    """gemm, fft and auto give the same forward values for the same options."""
    case = data.draw(conv_cases(nd))
    x, w, b, _ = random_inputs(case)
    results = {a: CONV[nd](x, w, b, algorithm=a, **case["kwargs"])
               for a in ("auto", "gemm", "fft")}
    for algorithm in ("auto", "fft"):
        assert_close(results[algorithm], results["gemm"], 1e-10, 1e-10, algorithm)


# Fixed float32 cases: cnnlab in float32 against torch in float64, float32 tolerance.
FLOAT32_CONV_CASES = [
    (1, (2, 4, 11), (6, 2, 3), {"stride": 2, "padding": "same", "groups": 2}),
    (1, (2, 3, 16), (4, 3, 5), {"padding": "causal", "dilation": 2}),
    (2, (2, 4, 9, 8), (4, 4, 3, 3), {"padding": ((1, 2), (0, 1)), "padding_mode": "reflect"}),
    (2, (3, 2, 7, 7), (6, 1, 3, 2), {"stride": (2, 1), "dilation": (1, 2), "groups": 2,
                                     "padding": 1, "padding_mode": "circular"}),
    (3, (1, 2, 5, 6, 5), (3, 2, 3, 3, 2), {"padding": "full", "stride": 2}),
    (3, (2, 2, 5, 5, 5), (2, 1, 2, 3, 3), {"padding": 1, "groups": 2,
                                           "padding_mode": "replicate"}),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("nd", "x_shape", "w_shape", "kwargs"), FLOAT32_CONV_CASES)
def test_conv_float32(nd, x_shape, w_shape, kwargs, algorithm):
    full = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "padding_mode": "zeros",
            **kwargs}
    stride = (full["stride"],) * nd if isinstance(full["stride"], int) else full["stride"]
    dilation = full["dilation"]
    dilation = (dilation,) * nd if isinstance(dilation, int) else dilation
    pairs = reference_pads(full["padding"], x_shape[2:], w_shape[2:], stride, dilation)
    case = {"x_shape": x_shape, "w_shape": w_shape, "bias": True, "kwargs": full,
            "pairs": pairs, "seed": 7}
    run_conv_case(case, nd, algorithm, dtype=np.float32)


FLOAT32_TRANSPOSE_CASES = [
    (1, (2, 4, 7), (4, 3, 4), {"stride": 3, "padding": 1, "output_padding": 2}),
    (2, (2, 4, 5, 4), (4, 2, 3, 3), {"stride": 2, "padding": ((1, 0), (2, 1)), "groups": 2,
                                     "output_padding": 1}),
    (3, (1, 2, 3, 4, 3), (2, 2, 3, 2, 3), {"stride": (2, 1, 2), "dilation": 2, "padding": 1}),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("nd", "x_shape", "w_shape", "kwargs"), FLOAT32_TRANSPOSE_CASES)
def test_conv_transpose_float32(nd, x_shape, w_shape, kwargs, algorithm):
    full = {"stride": 1, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1,
            **kwargs}
    pairs = reference_pads(full["padding"], x_shape[2:], w_shape[2:], (1,) * nd, (1,) * nd)
    norm = {key: ((value,) * nd if isinstance(value, int) else value)
            for key, value in full.items() if key in ("stride", "output_padding", "dilation")}
    case = {"x_shape": x_shape, "w_shape": w_shape, "bias": True,
            "kwargs": {**full, **norm}, "pairs": pairs, "seed": 11}
    run_conv_transpose_case(case, nd, algorithm, dtype=np.float32)


# Corner cases a random search reaches rarely: 1x1 kernels (the pointwise fast path), a
# kernel as large as the padded input, size-1 inputs, output padding from dilation alone.
EDGE_CONV_CASES = [
    (1, (2, 4, 7), (6, 2, 1), {"stride": 2, "groups": 2}),
    (2, (2, 3, 5, 4), (2, 3, 1, 1), {"stride": (2, 3)}),
    (2, (1, 3, 5, 4), (4, 3, 1, 1), {"padding": ((1, 0), (0, 2)), "stride": 2}),
    (3, (2, 2, 3, 4, 5), (3, 2, 1, 1, 1), {"stride": (1, 2, 3)}),
    (2, (1, 2, 3, 4), (3, 2, 4, 5), {"padding": ((1, 0), (0, 1))}),
    (1, (1, 1, 1), (1, 1, 3), {"padding": "full", "dilation": 2}),
    (1, (2, 2, 1), (2, 2, 1), {"padding": "same", "stride": 3}),
    (2, (1, 1, 2, 2), (1, 1, 3, 3), {"padding": 2, "dilation": 2}),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("nd", "x_shape", "w_shape", "kwargs"), EDGE_CONV_CASES)
def test_conv_edge_cases(nd, x_shape, w_shape, kwargs, algorithm):
    full = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "padding_mode": "zeros",
            **kwargs}
    stride = (full["stride"],) * nd if isinstance(full["stride"], int) else full["stride"]
    dilation = (full["dilation"],) * nd
    pairs = reference_pads(full["padding"], x_shape[2:], w_shape[2:], stride, dilation)
    case = {"x_shape": x_shape, "w_shape": w_shape, "bias": True, "kwargs": full,
            "pairs": pairs, "seed": 3}
    run_conv_case(case, nd, algorithm)


EDGE_TRANSPOSE_CASES = [
    (1, (1, 1, 1), (1, 1, 1), {"dilation": 2, "output_padding": 1}),
    (2, (2, 2, 3, 2), (2, 3, 1, 1), {"dilation": (2, 3), "output_padding": (1, 2)}),
    (1, (2, 4, 3), (4, 1, 1), {"stride": 3, "output_padding": 2, "groups": 2}),
    (2, (1, 2, 3, 3), (2, 2, 1, 1), {"stride": 2, "padding": ((1, 0), (0, 1))}),
    (3, (1, 2, 2, 1, 3), (2, 1, 1, 1, 1), {"stride": (1, 2, 2), "output_padding": (0, 1, 0)}),
    (1, (1, 2, 1), (2, 3, 4), {"stride": 2, "padding": ((2, 1),)}),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("nd", "x_shape", "w_shape", "kwargs"), EDGE_TRANSPOSE_CASES)
def test_conv_transpose_edge_cases(nd, x_shape, w_shape, kwargs, algorithm):
    full = {"stride": 1, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1,
            **kwargs}
    pairs = reference_pads(full["padding"], x_shape[2:], w_shape[2:], (1,) * nd, (1,) * nd)
    norm = {key: ((value,) * nd if isinstance(value, int) else value)
            for key, value in full.items() if key in ("stride", "output_padding", "dilation")}
    case = {"x_shape": x_shape, "w_shape": w_shape, "bias": True,
            "kwargs": {**full, **norm}, "pairs": pairs, "seed": 5}
    run_conv_transpose_case(case, nd, algorithm)


# ---------------------------------------------------------------------------------------
# Padding semantics checked against torch's own options (no hand-made oracle).


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_padding_mode_matches_torch_module(padding_mode, algorithm):
    torch.manual_seed(0)
    layer = torch.nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2),
                            groups=2, padding_mode=padding_mode).double()
    x = np.random.default_rng(1).standard_normal((2, 4, 7, 6))
    expected = layer(torch.from_numpy(x)).detach().numpy()
    ours = F.conv2d(x, layer.weight.detach().numpy(), layer.bias.detach().numpy(),
                    stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2,
                    padding_mode=padding_mode, algorithm=algorithm)
    assert_close(ours, expected, 1e-10, 1e-10, padding_mode)


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("kernel", "dilation"), [(3, 1), (4, 1), (2, 3), (5, 2), (4, 2)])
def test_same_padding_stride_one_matches_torch(kernel, dilation, algorithm):
    """Stride 1: PyTorch's padding='same' (odd total: the extra pixel on the high side)."""
    rng = np.random.default_rng(kernel * 10 + dilation)
    x = rng.standard_normal((2, 3, 9, 8))
    w = rng.standard_normal((2, 3, kernel, kernel - 1 if kernel > 1 else 1))
    expected = TF.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding="same",
                         dilation=dilation).numpy()
    ours = F.conv2d(x, w, padding="same", dilation=dilation, algorithm=algorithm)
    assert_close(ours, expected, 1e-10, 1e-10, "same")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("size", "kernel", "stride", "expected_pad"),
                         [(6, 3, 2, (0, 1)), (7, 3, 2, (1, 1)), (5, 4, 3, (1, 1)),
                          (5, 5, 3, (1, 2)), (8, 1, 3, (0, 0)), (3, 5, 2, (2, 2))])
def test_same_padding_with_stride_is_tensorflow(size, kernel, stride, expected_pad,
                                                algorithm):
    """ceil(n / s) outputs; the extra pixel of an odd total pads the high side (TF/Keras)."""
    rng = np.random.default_rng(size)
    x = rng.standard_normal((1, 2, size))
    w = rng.standard_normal((3, 2, kernel))
    ours = F.conv1d(x, w, stride=stride, padding="same", algorithm=algorithm)
    assert ours.shape == (1, 3, math.ceil(size / stride))
    padded = TF.pad(torch.from_numpy(x), list(expected_pad))
    expected = TF.conv1d(padded, torch.from_numpy(w), stride=stride).numpy()
    assert_close(ours, expected, 1e-10, 1e-10, "same with stride")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_full_and_causal_padding(algorithm):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 1, 10))
    w = rng.standard_normal((1, 1, 4))
    full = F.conv1d(x, w, padding="full", dilation=2, algorithm=algorithm)
    assert full.shape == (2, 1, 10 + 2 * 3)
    expected = TF.conv1d(torch.from_numpy(x), torch.from_numpy(w), padding=6,
                         dilation=2).numpy()
    assert_close(full, expected, 1e-10, 1e-10, "full")
    causal = F.conv1d(x, w, padding="causal", dilation=2, algorithm=algorithm)
    assert causal.shape == x.shape
    # Causal: output t depends on inputs <= t only, so it is the first 10 outputs of 'full'.
    assert_close(causal, full[..., :10], 1e-10, 1e-10, "causal")
    bumped = x.copy()
    bumped[..., 6] += 100.0
    changed = F.conv1d(bumped, w, padding="causal", dilation=2, algorithm=algorithm)
    assert_close(changed[..., :6], causal[..., :6], 1e-10, 1e-10, "causal: no look-ahead")


# ---------------------------------------------------------------------------------------
# Array/Tensor surface: unbatched inputs, dtype preservation, empty batch, NaN and inf.


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_unbatched_conv(nd, algorithm):
    rng = np.random.default_rng(nd)
    x = rng.standard_normal((4, *(5,) * nd))
    w = rng.standard_normal((6, 2, *(3,) * nd))
    b = rng.standard_normal(6)
    kw = {"stride": 2, "padding": 1, "groups": 2}
    out = check_op(lambda x_t, w_t, b_t: CONV[nd](x_t, w_t, b_t, algorithm=algorithm, **kw),
                   lambda x_t, w_t, b_t: TORCH_CONV[nd](x_t, w_t, b_t, **kw), [x, w, b], rng=rng)
    assert out.shape == (6, *(3,) * nd)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_unbatched_conv_transpose(nd, algorithm):
    rng = np.random.default_rng(nd)
    x = rng.standard_normal((4, *(3,) * nd))
    w = rng.standard_normal((4, 3, *(3,) * nd))
    b = rng.standard_normal(6)
    kw = {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}
    out = check_op(lambda x_t, w_t, b_t: CONV_T[nd](x_t, w_t, b_t, algorithm=algorithm, **kw),
                   lambda x_t, w_t, b_t: TORCH_CONV_T[nd](x_t, w_t, b_t, **kw), [x, w, b],
                   rng=rng)
    assert out.shape == (6, *(6,) * nd)


@pytest.mark.parametrize("algorithm", ("auto", *ALGORITHMS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_in_numpy_out(dtype, algorithm):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    w = rng.standard_normal((4, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(4).astype(dtype)
    y = F.conv2d(x, w, b, padding=1, algorithm=algorithm)
    assert type(y) is np.ndarray and y.dtype == dtype and y.shape == (2, 4, 6, 5)
    w_t = rng.standard_normal((4, 2, 3, 3)).astype(dtype)
    z = F.conv_transpose2d(y, w_t, None, stride=2, algorithm=algorithm)
    assert type(z) is np.ndarray and z.dtype == dtype and z.shape == (2, 2, 13, 11)
    p = F.pad(x, (1, 2), mode="reflect")
    assert type(p) is np.ndarray and p.dtype == dtype and p.shape == (2, 3, 6, 8)


@pytest.mark.parametrize("algorithm", ("auto", *ALGORITHMS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tensor_grads_have_input_dtype(dtype, algorithm):
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((2, 3, 6)).astype(dtype), requires_grad=True)
    w = Tensor(rng.standard_normal((4, 3, 3)).astype(dtype), requires_grad=True)
    b = Tensor(rng.standard_normal(4).astype(dtype), requires_grad=True)
    y = F.conv1d(x, w, b, padding="same", algorithm=algorithm)
    assert isinstance(y, Tensor) and y.dtype == dtype
    y.backward(np.ones(y.shape, dtype))
    for t in (x, w, b):
        assert isinstance(t.grad, np.ndarray) and t.grad.dtype == dtype
        assert t.grad.shape == t.shape


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("transposed", [False, True])
def test_only_some_inputs_are_tensors(transposed, algorithm):
    """A NumPy input beside a Tensor weight: Tensor out, and only the Tensors get a grad."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 4, 6))
    w = rng.standard_normal((4, 2, 3))
    b = rng.standard_normal(4)
    fn, torch_fn = (F.conv_transpose1d, TF.conv_transpose1d) if transposed else (
        F.conv1d, TF.conv1d)
    kw = {"stride": 2, "groups": 2}
    w_t = Tensor(w, requires_grad=True)
    x_t = Tensor(x)  # a Tensor that does not require grad
    y = fn(x_t, w_t, b, algorithm=algorithm, **kw)
    assert isinstance(y, Tensor)
    upstream = rng.standard_normal(y.shape)
    y.backward(upstream)
    assert x_t.grad is None
    w_torch = torch.tensor(w, requires_grad=True)
    expected = torch_fn(torch.from_numpy(x), w_torch, torch.from_numpy(b), **kw)
    expected.backward(torch.from_numpy(upstream))
    assert_close(y.data, expected.detach().numpy(), 1e-10, 1e-10, "forward")
    assert_close(w_t.grad, w_torch.grad.numpy(), 1e-10, 1e-10, "weight grad")


@pytest.mark.parametrize("algorithm", ("auto", *ALGORITHMS))
@pytest.mark.parametrize("nd", [1, 2, 3])
def test_empty_batch(nd, algorithm):
    rng = np.random.default_rng(0)
    x = np.zeros((0, 2, *(5,) * nd))
    w = rng.standard_normal((4, 2, *(3,) * nd))
    b = rng.standard_normal(4)
    check_op(lambda x_t, w_t, b_t: CONV[nd](x_t, w_t, b_t, padding=1, stride=2,
                                            algorithm=algorithm),
             lambda x_t, w_t, b_t: TORCH_CONV[nd](x_t, w_t, b_t, padding=1, stride=2),
             [x, w, b])
    w_t = rng.standard_normal((2, 3, *(3,) * nd))
    check_op(lambda x_t, w_t, b_t: CONV_T[nd](x_t, w_t, b_t, stride=2, algorithm=algorithm),
             lambda x_t, w_t, b_t: TORCH_CONV_T[nd](x_t, w_t, b_t, stride=2),
             [x, w_t, None])


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("algorithm", ("auto", *ALGORITHMS))
@pytest.mark.parametrize("padding_mode", PADDING_MODES)
def test_nan_marks_exactly_the_windows_that_touch_it(padding_mode, algorithm):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 2, 8, 9))
    x[0, 1, 3, 4] = np.nan
    x[0, 0, 0, 8] = np.nan  # a corner: reaches the far side under circular padding
    w = rng.standard_normal((3, 2, 3, 3))
    ours = F.conv2d(x, w, padding=1, padding_mode=padding_mode, algorithm=algorithm)
    expected = torch_conv(torch.from_numpy(x), torch.from_numpy(w), None, 1, [(1, 1)] * 2, 1,
                          1, padding_mode).numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    assert 0 < np.isnan(expected).sum() < expected.size
    assert_close(ours, expected, 1e-10, 1e-10, "finite outputs")


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("algorithm", ("auto", *ALGORITHMS))
def test_inf_propagates_like_torch(algorithm):
    rng = np.random.default_rng(6)
    x = rng.uniform(0.5, 1.0, (1, 1, 12))
    x[0, 0, 3] = np.inf
    x[0, 0, 9] = -np.inf
    w = rng.uniform(0.5, 1.0, (2, 1, 3))  # positive: inf stays inf where only one touches
    w[1, 0, 1] = 0.0  # inf * 0 is NaN
    ours = F.conv1d(x, w, padding=1, algorithm=algorithm)
    expected = TF.conv1d(torch.from_numpy(x), torch.from_numpy(w), padding=1).numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(expected))
    assert_close(ours, expected, 1e-10, 1e-10, "inf")


# ---------------------------------------------------------------------------------------
# pad, like torch.nn.functional.pad.


@given(data=st.data())
def test_pad_matches_torch(data):
    nd = data.draw(st.integers(1, 3))
    mode = data.draw(st.sampled_from(["constant", "reflect", "replicate", "circular"]))
    shape = tuple(data.draw(st.integers(2, 5)) for _ in range(nd))
    limit = {"constant": 3, "reflect": 1, "replicate": 3, "circular": 2}[mode]
    pads = []
    for n in reversed(shape):
        low = -1 if mode == "constant" and n >= 3 else 0
        top = min(limit, n - 1) if mode == "reflect" else min(limit, n)
        pads += [data.draw(st.integers(low, top)), data.draw(st.integers(low, top))]
    value = data.draw(st.sampled_from([0.0, 1.5]))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    x = rng.standard_normal((2, 2, *shape))
    kw = {"mode": mode, "value": value} if mode == "constant" else {"mode": mode}
    check_op(lambda t: F.pad(t, tuple(pads), **kw), lambda t: TF.pad(t, pads, **kw), [x],
             rng=rng)


# ---------------------------------------------------------------------------------------
# 2. Finite-difference gradients, float64, tiny shapes. Conv is linear in each argument,
# so central differences have no truncation error and a large step keeps rounding small.

FD_EPS = 1e-3
FD_TOL = 1e-8

FD_CONV_CASES = [
    (1, (1, 2, 7), (2, 2, 3), {"padding": "causal", "dilation": 2}),
    (1, (2, 2, 6), (2, 1, 2), {"stride": 2, "padding": ((2, 1),), "groups": 2,
                               "padding_mode": "circular"}),
    (2, (1, 2, 5, 4), (2, 2, 3, 2), {"stride": (2, 1), "padding": "same",
                                     "padding_mode": "reflect"}),
    (2, (1, 2, 4, 5), (4, 1, 2, 2), {"dilation": (2, 1), "groups": 2, "padding": 1,
                                     "padding_mode": "replicate"}),
    (3, (1, 1, 3, 4, 3), (2, 1, 2, 2, 2), {"padding": ((1, 0), (0, 1), (1, 1)), "stride": 2}),
]


def assert_matches_finite_differences(our_fn, arrays, rng):
    """Tensor backward of sum(our_fn(...) * g) against central differences, every array."""
    out = our_fn(*arrays)
    upstream = rng.standard_normal(out.shape)
    tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    our_fn(*tensors).backward(upstream)
    numeric = finite_difference_grad(lambda *a: float((our_fn(*a) * upstream).sum()),
                                     arrays, eps=FD_EPS)
    for index, (tensor, expected) in enumerate(zip(tensors, numeric, strict=True)):
        assert_close(tensor.grad, expected, FD_TOL, FD_TOL, f"grad of input {index}")


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("nd", "x_shape", "w_shape", "kwargs"), FD_CONV_CASES)
def test_conv_finite_differences(nd, x_shape, w_shape, kwargs, algorithm):
    rng = np.random.default_rng(len(x_shape))
    arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape),
              rng.standard_normal(w_shape[0])]
    assert_matches_finite_differences(
        lambda x, w, b: CONV[nd](x, w, b, algorithm=algorithm, **kwargs), arrays, rng)


FD_TRANSPOSE_CASES = [
    (1, (1, 2, 4), (2, 2, 3), {"stride": 3, "padding": 1, "output_padding": 2}),
    (1, (2, 2, 3), (2, 1, 2), {"dilation": 2, "groups": 2, "padding": ((0, 2),),
                               "output_padding": 1}),
    (2, (1, 2, 3, 2), (2, 1, 3, 2), {"stride": (2, 1), "padding": ((1, 0), (0, 1)),
                                     "output_padding": (1, 0)}),
    (3, (1, 2, 2, 2, 2), (2, 1, 2, 1, 2), {"stride": 2, "groups": 2, "padding": (1, 0, 0)}),
]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize(("nd", "x_shape", "w_shape", "kwargs"), FD_TRANSPOSE_CASES)
def test_conv_transpose_finite_differences(nd, x_shape, w_shape, kwargs, algorithm):
    rng = np.random.default_rng(len(x_shape) + 10)
    groups = kwargs.get("groups", 1)
    arrays = [rng.standard_normal(x_shape), rng.standard_normal(w_shape),
              rng.standard_normal(w_shape[1] * groups)]
    assert_matches_finite_differences(
        lambda x, w, b: CONV_T[nd](x, w, b, algorithm=algorithm, **kwargs), arrays, rng)


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad_finite_differences(mode):
    rng = np.random.default_rng(2)
    pads = (2, 1, -1, 1) if mode == "constant" else (2, 1, 0, 1)
    x = rng.standard_normal((1, 2, 4, 3))
    assert_matches_finite_differences(lambda t: F.pad(t, pads, mode=mode), [x], rng)


# ---------------------------------------------------------------------------------------
# 5. Bad input: ValueError / TypeError naming the function and the argument.


def _x(*shape, dtype=np.float64):
    return np.zeros(shape, dtype=dtype)


CONV_ERRORS = [
    # (function, args, kwargs, exception, message pattern)
    (F.conv2d, (_x(2, 5), _x(3, 2, 3, 3)), {}, ValueError, r"conv2d.*input.*3-D"),
    (F.conv2d, (_x(1, 1, 2, 5, 5), _x(3, 2, 3, 3)), {}, ValueError, r"conv2d.*input"),
    (F.conv1d, (_x(1, 2, 5), _x(3, 2, 3, 3)), {}, ValueError, r"conv1d.*weight"),
    (F.conv2d, (_x(1, 3, 5, 5), _x(4, 2, 3, 3)), {}, ValueError, r"conv2d.*input.shape\[1\]"),
    (F.conv2d, (_x(1, 4, 5, 5), _x(4, 2, 3, 3)), {"groups": 3}, ValueError, r"conv2d.*groups"),
    (F.conv2d, (_x(1, 4, 5, 5), _x(3, 2, 3, 3)), {"groups": 2}, ValueError, r"conv2d.*groups"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), {"groups": 0}, ValueError, r"conv2d.*groups"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), {"stride": 0}, ValueError, r"conv2d.*stride"),
    (F.conv3d, (_x(1, 2, 5, 5, 5), _x(3, 2, 3, 3, 3)), {"stride": (1, -1, 1)}, ValueError,
     r"conv3d.*stride"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), {"dilation": 0}, ValueError,
     r"conv2d.*dilation"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), {"stride": (1, 1, 1)}, ValueError,
     r"conv2d.*stride"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), {"padding": -1}, ValueError,
     r"conv2d.*padding"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), {"padding": ((0, 1), (-1, 0))}, ValueError,
     r"conv2d.*padding"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), {"padding": ((0, 1),)}, ValueError,
     r"conv2d.*padding"),
    (F.conv1d, (_x(1, 2, 5), _x(3, 2, 3)), {"padding": 1.5}, TypeError, r"conv1d.*padding"),
    (F.conv1d, (_x(1, 2, 5), _x(3, 2, 3)), {"stride": 1.0}, TypeError, r"conv1d.*stride"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 6, 3)), {}, ValueError, r"conv2d.*kernel"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), {"dilation": 3}, ValueError,
     r"conv2d.*kernel"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), {"padding": "half"}, ValueError,
     r"conv2d.*padding.*'half'"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), {"padding": "causal"}, ValueError,
     r"conv2d.*causal"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), {"padding_mode": "mirror"}, ValueError,
     r"conv2d.*padding_mode.*'mirror'"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3)), {"algorithm": "winograd"}, ValueError,
     r"conv2d.*algorithm.*'winograd'"),
    (F.conv2d, (_x(1, 2, 5, 5, dtype=np.float32), _x(3, 2, 3, 3)), {}, TypeError,
     r"conv2d.*dtype"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3), _x(3, dtype=np.float32)), {}, TypeError,
     r"conv2d.*dtype"),
    (F.conv2d, (_x(1, 2, 5, 5), _x(3, 2, 3, 3), _x(4)), {}, ValueError, r"conv2d.*bias"),
    (F.conv2d, (_x(1, 2, 5, 5, dtype=np.complex128), _x(3, 2, 3, 3, dtype=np.complex128)),
     {}, TypeError, r"conv2d.*float"),
    (F.conv2d, (_x(1, 2, 3, 5), _x(3, 2, 3, 3)), {"padding": 3, "padding_mode": "reflect"},
     ValueError, r"conv2d.*reflect"),
    (F.conv1d, (_x(1, 2, 3), _x(3, 2, 3)), {"padding": ((0, 3),), "padding_mode": "reflect"},
     ValueError, r"conv1d.*reflect"),
    (F.conv1d, (_x(1, 2, 3), _x(3, 2, 3)), {"padding": 4, "padding_mode": "circular"},
     ValueError, r"conv1d.*circular"),
    (F.conv_transpose2d, (_x(1, 3, 4, 4), _x(2, 3, 3, 3)), {}, ValueError,
     r"conv_transpose2d.*weight"),
    (F.conv_transpose2d, (_x(3, 4), _x(3, 2, 3, 3)), {}, ValueError,
     r"conv_transpose2d.*input"),
    (F.conv_transpose1d, (_x(1, 3, 4), _x(3, 2, 3)), {"groups": 2}, ValueError,
     r"conv_transpose1d.*groups"),
    (F.conv_transpose2d, (_x(1, 2, 4, 4), _x(2, 2, 3, 3)), {"stride": 2, "output_padding": 2},
     ValueError, r"conv_transpose2d.*output_padding"),
    (F.conv_transpose2d, (_x(1, 2, 4, 4), _x(2, 2, 3, 3)), {"output_padding": 1}, ValueError,
     r"conv_transpose2d.*output_padding"),
    (F.conv_transpose2d, (_x(1, 2, 4, 4), _x(2, 2, 3, 3)),
     {"stride": 2, "dilation": 3, "output_padding": (2, 3)}, ValueError,
     r"conv_transpose2d.*output_padding"),
    (F.conv_transpose1d, (_x(1, 2, 4), _x(2, 2, 3)), {"stride": 0}, ValueError,
     r"conv_transpose1d.*stride"),
    (F.conv_transpose1d, (_x(1, 2, 4), _x(2, 2, 3)), {"dilation": -1}, ValueError,
     r"conv_transpose1d.*dilation"),
    (F.conv_transpose1d, (_x(1, 2, 4), _x(2, 2, 3)), {"padding": -1}, ValueError,
     r"conv_transpose1d.*padding"),
    (F.conv_transpose1d, (_x(1, 2, 2), _x(2, 2, 1)), {"padding": 2}, ValueError,
     r"conv_transpose1d.*padding"),
    (F.conv_transpose1d, (_x(1, 2, 4), _x(2, 2, 3)), {"algorithm": "im2col"}, ValueError,
     r"conv_transpose1d.*algorithm"),
    (F.conv_transpose1d, (_x(1, 2, 4, dtype=np.float32), _x(2, 2, 3)), {}, TypeError,
     r"conv_transpose1d.*dtype"),
    (F.conv_transpose1d, (_x(1, 2, 4), _x(2, 2, 3), _x(3)), {}, ValueError,
     r"conv_transpose1d.*bias"),
    (F.pad, (_x(2, 3), (1,)), {}, ValueError, r"pad.*pad"),
    (F.pad, (_x(2, 3), (1, 1, 1, 1, 1, 1)), {}, ValueError, r"pad.*pad"),
    (F.pad, (_x(2, 3), (1, 1)), {"mode": "zeros"}, ValueError, r"pad.*mode.*'zeros'"),
    (F.pad, (_x(2, 3), (3, 0)), {"mode": "reflect"}, ValueError, r"pad.*reflect"),
    (F.pad, (_x(2, 3), (1.0, 1)), {}, TypeError, r"pad.*pad"),
]


@pytest.mark.parametrize(("fn", "args", "kwargs", "error", "pattern"), CONV_ERRORS)
def test_bad_input_errors(fn, args, kwargs, error, pattern):
    with pytest.raises(error, match=pattern):
        fn(*args, **kwargs)


# ---------------------------------------------------------------------------------------
# 6. Memory: the GEMM path never builds the whole im2col matrix.


def test_small_column_budget_is_still_exact(monkeypatch):
    """Many chunks (some cutting through rows, phases and images) give the same answers."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 4, 9, 8))
    w = rng.standard_normal((6, 2, 3, 2))
    b = rng.standard_normal(6)
    kw = {"stride": (2, 1), "padding": ((1, 2), (0, 1)), "dilation": (1, 2), "groups": 2}
    reference = check_op(lambda *t: F.conv2d(*t, algorithm="gemm", **kw),
                         lambda *t: TF.conv2d(TF.pad(t[0], [0, 1, 1, 2]), *t[1:],
                                              stride=(2, 1), dilation=(1, 2), groups=2),
                         [x, w, b])
    # 3 taps * ... rows: a budget of a few hundred bytes gives chunks of a few columns.
    for budget in (1, 200, 1000, 4099):
        monkeypatch.setattr(gemm_module, "COLS_BUDGET_BYTES", budget)
        again = check_op(lambda *t: F.conv2d(*t, algorithm="gemm", **kw),
                         lambda *t: TF.conv2d(TF.pad(t[0], [0, 1, 1, 2]), *t[1:],
                                              stride=(2, 1), dilation=(1, 2), groups=2),
                         [x, w, b])
        assert_close(again, reference, 1e-12, 1e-12, f"budget {budget}")
        w_t = rng.standard_normal((6, 2, 3, 3))
        check_op(lambda *t: F.conv_transpose2d(*t, stride=2, padding=1, output_padding=1,
                                               groups=3, algorithm="gemm"),
                 lambda *t: TF.conv_transpose2d(*t, stride=2, padding=1, output_padding=1,
                                                groups=3),
                 [rng.standard_normal((2, 6, 4, 5)), w_t, None])


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_peak_memory_does_not_scale_with_im2col(monkeypatch):
    """A 5x5 kernel over 8 channels: im2col would be 25x the input; with a small budget the
    peak stays near the input-sized buffers, forward and backward."""
    budget = 64 * 1024
    monkeypatch.setattr(gemm_module, "COLS_BUDGET_BYTES", budget)
    rng = np.random.default_rng(10)
    batch, c_in, c_out, size, k = 16, 8, 2, 16, 5
    x = rng.standard_normal((batch, c_in, size, size))
    w = rng.standard_normal((c_out, c_in, k, k))
    im2col_bytes = batch * size * size * k * k * c_in * x.itemsize  # 'same' padding
    padded_input_bytes = batch * c_in * (size + k - 1) ** 2 * x.itemsize
    assert im2col_bytes > 15 * padded_input_bytes
    expected = TF.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=2).numpy()
    result = {}
    peak = _peak_bytes(lambda: result.setdefault(
        "y", F.conv2d(x, w, padding=2, algorithm="gemm")))
    assert_close(result["y"], expected, 1e-10, 1e-10, "chunked")
    # Input grid, its gradient or the output, and two column chunks, with room to spare.
    allowance = 4 * padded_input_bytes + 4 * budget
    assert peak < allowance < im2col_bytes / 3, (peak, allowance, im2col_bytes)

    x_t = Tensor(x, requires_grad=True)
    w_t = Tensor(w, requires_grad=True)
    y = F.conv2d(x_t, w_t, padding=2, algorithm="gemm")
    upstream = rng.standard_normal(y.shape)
    peak_backward = _peak_bytes(lambda: y.backward(upstream))
    assert peak_backward < allowance, (peak_backward, allowance, im2col_bytes)


def test_default_budget_bounds_the_column_buffer():
    """With the library's own budget, the peak is the input-sized buffers plus about one
    budget of columns, not the whole im2col matrix."""
    budget = gemm_module.COLS_BUDGET_BYTES
    rng = np.random.default_rng(11)
    c_in, k = 4, 3
    rows = c_in * k * k
    # Enough columns for an im2col matrix of several budgets.
    batch = math.ceil(4 * budget / (rows * 8 * 32 * 32))
    x = rng.standard_normal((batch, c_in, 32, 32))
    w = rng.standard_normal((1, c_in, k, k))
    im2col_bytes = batch * 32 * 32 * rows * x.itemsize
    padded_input_bytes = batch * c_in * 34 * 34 * x.itemsize
    peak = _peak_bytes(lambda: F.conv2d(x, w, padding=1, algorithm="gemm"))
    allowance = 3 * padded_input_bytes + budget + budget // 2
    assert peak < allowance < im2col_bytes, (peak, allowance, im2col_bytes)


@pytest.mark.parametrize("shape, kwargs", [
    ((1, 1, 9), {"stride": 3}),                      # crop-free grid, N = C_out = 1
    ((2, 3, 8, 8), {"padding": 1}),
    ((2, 2, 9), {"stride": 2, "dilation": 2}),
])
def test_a_result_survives_the_next_call(shape, kwargs):
    """Nothing the GEMM path keeps between calls (plans, index maps, once a workspace) may
    alias a result: it survives the next call (with different data) unchanged, forward and
    backward."""
    rng = np.random.default_rng(0)
    nd = len(shape) - 2
    conv = getattr(F, f"conv{nd}d")
    w = rng.standard_normal((1, shape[1]) + (3,) * nd)
    x1, x2 = rng.standard_normal(shape), rng.standard_normal(shape)
    xt = Tensor(x1, requires_grad=True)
    wt = Tensor(w, requires_grad=True)
    y1 = conv(xt, wt, algorithm="gemm", **kwargs)
    y1.backward(np.ones(y1.shape))
    saved = (y1.data.copy(), xt.grad.copy(), wt.grad.copy())
    other = Tensor(x2, requires_grad=True)
    y2 = conv(other, Tensor(w * 2, requires_grad=True), algorithm="gemm", **kwargs)
    y2.backward(np.full(y2.shape, 3.0))
    for before, after in zip(saved, (y1.data, xt.grad, wt.grad)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("algorithm", ["gemm", "fft", "auto"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_samples_no_window_reads_leave_gradients_finite(algorithm, bad):
    """A NaN/inf input (or weight) that no window reads must not turn into NaN where torch
    has finite values (a zero gradient times NaN/inf would)."""
    x = np.arange(12.0).reshape(1, 1, 12)
    x[0, 0, 11] = bad  # k=3, stride 2: windows start at 0..8, so sample 11 is never read
    w = np.array([[[1.0, 2.0, 3.0]]])
    ours_x, ours_w = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    F.conv1d(ours_x, ours_w, stride=2, algorithm=algorithm).sum().backward()
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    TF.conv1d(tx, tw, stride=2).sum().backward()
    np.testing.assert_array_equal(ours_w.grad, tw.grad.numpy())
    np.testing.assert_array_equal(ours_x.grad, tx.grad.numpy())
    # A non-finite weight: input samples that no window reads get exactly 0, as in torch.
    w_bad = np.array([[[1.0, bad, 1.0]]])
    ours_x = Tensor(np.ones((1, 1, 6)), requires_grad=True)
    F.conv1d(ours_x, Tensor(w_bad), stride=2, algorithm=algorithm).sum().backward()
    tx = torch.tensor(np.ones((1, 1, 6)), requires_grad=True)
    TF.conv1d(tx, torch.tensor(w_bad), stride=2).sum().backward()
    np.testing.assert_array_equal(ours_x.grad, tx.grad.numpy())


def test_transposed_conv_with_an_infinite_weight_matches_torch():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 5, 5))
    w = rng.standard_normal((4, 3, 3, 3))
    w[0, 0, 1, 1] = np.inf
    ours = F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1)
    theirs = TF.conv_transpose2d(torch.tensor(x), torch.tensor(w), stride=2, padding=1,
                                 output_padding=1).numpy()
    assert_close(ours, theirs, atol=1e-12, rtol=1e-12, what="conv_transpose2d")


@pytest.mark.parametrize("x_shape,kernel,kwargs", [
    ((2, 3, 4, 5), (3, 3), dict(stride=1, padding=1, output_padding=1, dilation=2)),
    ((2, 3, 20), (3,), dict(stride=2, padding=0, output_padding=2, dilation=3)),
    ((1, 3, 9, 18), (2, 3), dict(stride=(1, 2), output_padding=(1, 2), dilation=(2, 3))),
])
def test_transposed_conv_output_padding_past_stride_with_an_infinite_weight(x_shape, kernel,
                                                                          kwargs):
    """Output padding beyond the stride (allowed by dilation) leaves outputs no input
    reaches; an inf weight times their zero must not write NaN there."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((x_shape[1], 2, *kernel))
    w[1, 0, *(k - 1 for k in kernel)] = np.inf
    name = f"conv_transpose{len(kernel)}d"
    ours = getattr(F, name)(x, w, **kwargs)
    theirs = getattr(TF, name)(torch.tensor(x), torch.tensor(w), **kwargs).numpy()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_transposed_conv_weight_gradient_ignores_nan_at_output_padding_only_positions():
    """An upstream NaN at an output that no input reaches (output padding past the stride)
    leaves torch's weight gradient finite."""
    x = np.array([[[1.0, 2.0, 3.0]]])
    w = np.array([[[0.5, -1.0]]])
    grad = np.ones((1, 1, 8))
    grad[0, 0, 7] = np.nan
    kwargs = dict(stride=1, dilation=3, output_padding=2)
    ours_x, ours_w = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    F.conv_transpose1d(ours_x, ours_w, algorithm="gemm", **kwargs).backward(grad)
    tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    TF.conv_transpose1d(tx, tw, **kwargs).backward(torch.tensor(grad))
    np.testing.assert_array_equal(ours_w.grad, tw.grad.numpy())
    np.testing.assert_array_equal(ours_x.grad, tx.grad.numpy())


EMPTY_BATCH_OPS = {
    "conv2d 1x1": lambda x: F.conv2d(x, Tensor(np.ones((6, 4, 1, 1)), requires_grad=True)),
    "conv_transpose2d 1x1": lambda x: F.conv_transpose2d(
        x, Tensor(np.ones((4, 2, 1, 1)), requires_grad=True), stride=2),
    "max_pool2d": lambda x: F.max_pool2d(x, 2),
    "max_pool2d indices": lambda x: F.max_pool2d(x, 2, return_indices=True)[0],
    "avg_pool2d": lambda x: F.avg_pool2d(x, 2),
    "lp_pool2d": lambda x: F.lp_pool2d(x, 2, 2),
    "adaptive_avg_pool2d": lambda x: F.adaptive_avg_pool2d(x, 3),
    "adaptive_max_pool2d": lambda x: F.adaptive_max_pool2d(x, 3),
    "blur_pool2d": lambda x: F.blur_pool2d(x),
    "unfold": lambda x: F.unfold(x, 2),
    "batch_norm eval": lambda x: F.batch_norm(x, np.zeros(4), np.ones(4)),
}


@pytest.mark.parametrize("name", sorted(EMPTY_BATCH_OPS))
def test_every_op_works_on_an_empty_batch(name):
    x = Tensor(np.zeros((0, 4, 8, 8)), requires_grad=True)
    y = EMPTY_BATCH_OPS[name](x)
    assert y.shape[0] == 0
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("groups, error", [(True, TypeError), (2.0, TypeError),
                                           (0, ValueError)])
def test_groups_must_be_a_positive_int(groups, error):
    with pytest.raises(error, match="conv2d: groups must be"):
        F.conv2d(np.ones((1, 2, 4, 4)), np.ones((2, 2, 3, 3)), groups=groups)
    with pytest.raises(error, match="conv_transpose2d: groups must be"):
        F.conv_transpose2d(np.ones((1, 2, 4, 4)), np.ones((2, 2, 3, 3)), groups=groups)


def test_kept_columns_budget_counts_every_group():
    """The keep-or-rebuild decision sizes the columns the forward would actually keep."""
    from cnnlab.ops.gemm import _cols_bytes, conv_forward, gemm_plan

    x = np.ones((2, 4, 6, 6), np.float32)
    w = np.ones((6, 2, 3, 3), np.float32)
    geo = gemm_plan(x.shape, w.shape, (1, 1), ((1, 1), (1, 1)), (1, 1), 2)
    saved: dict = {}
    conv_forward(x, w, geo, saved)
    assert saved["cols"].nbytes == _cols_bytes(geo, x.itemsize)


@pytest.mark.parametrize(("x_shape", "w_shape"), [
    ((0, 2, 40), (3, 2, 3)),            # image-major rows (>= 16 outputs): per-image GEMMs
    ((0, 1, 5, 30), (4, 1, 3, 3)),
    ((0, 2, 6), (3, 2, 3)),             # short rows: batch-minor columns
])
def test_empty_batch_gives_zero_weight_gradient_like_torch(x_shape, w_shape):
    rng = np.random.default_rng(0)
    w = rng.standard_normal(w_shape)
    conv = {3: F.conv1d, 4: F.conv2d}[len(x_shape)]
    torch_conv = {3: TF.conv1d, 4: TF.conv2d}[len(x_shape)]
    ours_w, ours_b = Tensor(w, requires_grad=True), Tensor(np.ones(w_shape[0]), requires_grad=True)
    y = conv(Tensor(np.zeros(x_shape)), ours_w, ours_b)
    theirs_w = torch.tensor(w, requires_grad=True)
    expected = torch_conv(torch.zeros(x_shape, dtype=torch.float64), theirs_w)
    assert y.shape == tuple(expected.shape)
    y.sum().backward()
    expected.sum().backward()
    np.testing.assert_array_equal(ours_w.grad, theirs_w.grad.numpy())
    np.testing.assert_array_equal(ours_b.grad, np.zeros(w_shape[0]))


@pytest.mark.parametrize(("x_shape", "w_shape", "stride", "padding"), [
    ((2, 3, 12, 11), (4, 3, 4, 6), (2, 3), 1),  # rows of 5 outputs: batch-minor columns
    ((2, 2, 40, 40), (3, 2, 4, 4), (2, 2), 2),  # rows of 20: image-major columns
    ((1, 4, 7, 8, 9), (2, 2, 2, 4, 3), (2, 2, 3), 0),  # 3-D, groups 2
    ((3, 2, 17), (2, 2, 6), (3,), 2),  # 1-D
])
@pytest.mark.parametrize("budget", [None, 256])  # one chunk of columns, or many
def test_col2im_by_shift_matches_torch(x_shape, w_shape, stride, padding, budget,
                                       monkeypatch):
    # Kernel sizes that are multiples of the stride: the input gradient adds the taps of
    # all stride phases at one shift in one go (conv.GemmPlan.shift_groups).
    if budget is not None:
        monkeypatch.setattr(gemm_module, "COLS_BUDGET_BYTES", budget)
    nd = len(stride)
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    groups = x_shape[1] // w_shape[1]
    geo = gemm_module.gemm_plan(x_shape, w_shape, stride, ((padding, padding),) * nd,
                                    (1,) * nd, groups)
    assert geo.shift_groups
    xt = Tensor(x, requires_grad=True)
    y = CONV[nd](xt, w, stride=stride, padding=padding, groups=groups)
    upstream = rng.standard_normal(y.shape)
    y.backward(upstream)
    x_torch = torch.from_numpy(x).requires_grad_()
    y_torch = [TF.conv1d, TF.conv2d, TF.conv3d][nd - 1](
        x_torch, torch.from_numpy(w), stride=stride, padding=padding, groups=groups)
    y_torch.backward(torch.from_numpy(upstream))
    assert_close(xt.grad, x_torch.grad.numpy(), 1e-10, 1e-10, "grad_x")
