"""Shape rules and argument normalisation in cnnlab.ops._args.

Each rule is checked against the shapes torch actually produces and against the formulas of
Dumoulin & Visin (2016), "A guide to convolution arithmetic for deep learning"; the
receptive field against the support of a real gradient.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given
from hypothesis import strategies as st

from cnnlab.ops._args import (
    conv_output_shape,
    conv_padding,
    conv_transpose_output_shape,
    pool_output_shape,
    receptive_field,
    to_tuple,
)

TORCH_CONV = {1: TF.conv1d, 2: TF.conv2d, 3: TF.conv3d}
TORCH_CONV_T = {1: TF.conv_transpose1d, 2: TF.conv_transpose2d, 3: TF.conv_transpose3d}
TORCH_MAX_POOL = {1: TF.max_pool1d, 2: TF.max_pool2d, 3: TF.max_pool3d}

sizes = st.integers(1, 12)
kernels = st.integers(1, 5)
strides = st.integers(1, 4)
dilations = st.integers(1, 3)
pads = st.integers(0, 3)


def torch_zeros(*shape):
    return torch.zeros(shape, dtype=torch.float64)


# ---------------------------------------------------------------------------------------
# to_tuple


def test_to_tuple_broadcasts_and_checks():
    assert to_tuple(3, 2, "stride", "conv2d") == (3, 3)
    assert to_tuple((1, 2, 3), 3, "stride", "conv3d") == (1, 2, 3)
    assert to_tuple([4], 3, "stride", "conv3d") == (4, 4, 4)
    assert to_tuple(np.int64(2), 1, "stride", "conv1d") == (2,)
    assert to_tuple((np.int32(1), 2), 2, "dilation", "conv2d") == (1, 2)
    assert all(type(v) is int for v in to_tuple((np.int32(1), 2), 2, "dilation", "conv2d"))
    assert to_tuple(0, 2, "padding", "conv2d", minimum=0) == (0, 0)
    assert to_tuple(-1, 1, "shift", "roll", minimum=None) == (-1,)


@pytest.mark.parametrize(
    ("value", "ndim", "minimum", "error", "pattern"),
    [
        ((1, 2), 3, 1, ValueError, r"conv3d: stride must be an int or a tuple of 3 ints.*\(1, 2\)"),
        ((1, 2, 3, 4), 3, 1, ValueError, r"conv3d: stride.*3 ints"),
        (0, 2, 1, ValueError, r"conv3d: stride must be >= 1.*\(0, 0\)"),
        ((2, -1), 2, 0, ValueError, r"conv3d: stride must be >= 0.*\(2, -1\)"),
        (1.0, 2, 1, TypeError, r"conv3d: stride.*float"),
        ("2", 2, 1, TypeError, r"conv3d: stride.*str"),
        (None, 2, 1, TypeError, r"conv3d: stride"),
        (True, 2, 1, TypeError, r"conv3d: stride"),
        ((1, 2.5), 2, 1, TypeError, r"conv3d: stride must contain ints"),
    ],
)
def test_to_tuple_errors(value, ndim, minimum, error, pattern):
    with pytest.raises(error, match=pattern):
        to_tuple(value, ndim, "stride", "conv3d", minimum=minimum)


# ---------------------------------------------------------------------------------------
# conv_padding


def test_conv_padding_forms():
    args = ((7, 6), (3, 2), (1, 1), (1, 2))
    assert conv_padding(1, *args, "conv2d") == ((1, 1), (1, 1))
    assert conv_padding((2, 0), *args, "conv2d") == ((2, 2), (0, 0))
    assert conv_padding(((1, 0), (0, 3)), *args, "conv2d") == ((1, 0), (0, 3))
    assert conv_padding([[1, 0], [0, 3]], *args, "conv2d") == ((1, 0), (0, 3))
    assert conv_padding("valid", *args, "conv2d") == ((0, 0), (0, 0))
    # full: d*(k-1) each side
    assert conv_padding("full", *args, "conv2d") == ((2, 2), (2, 2))
    assert conv_padding("causal", (9,), (4,), (1,), (3,), "conv1d") == ((9, 0),)
    # same, stride 1: total d*(k-1), the odd pixel on the high side
    assert conv_padding("same", *args, "conv2d") == ((1, 1), (1, 1))
    assert conv_padding("same", (8,), (4,), (1,), (1,), "conv1d") == ((1, 2),)


@pytest.mark.parametrize(
    ("padding", "error", "pattern"),
    [
        ("half", ValueError, r"conv2d: padding must be.*'valid'.*got 'half'"),
        ("causal", ValueError, r"conv2d: padding='causal' needs 1 spatial dimension, got 2"),
        (-1, ValueError, r"conv2d: padding must be >= 0"),
        (((1, 0), (0, -2)), ValueError, r"conv2d: padding must be >= 0"),
        (((1, 0),), ValueError, r"conv2d: padding as per-side pairs must be 2"),
        (((1, 0, 1), (0, 1, 0)), ValueError, r"conv2d: padding as per-side pairs"),
        ((1, 2, 3), ValueError, r"conv2d: padding must be an int or a tuple of 2 ints"),
        (1.5, TypeError, r"conv2d: padding"),
    ],
)
def test_conv_padding_errors(padding, error, pattern):
    with pytest.raises(error, match=pattern):
        conv_padding(padding, (7, 6), (3, 3), (1, 1), (1, 1), "conv2d")


@given(n=sizes, k=kernels, s=strides, d=dilations)
def test_same_padding_gives_ceil_n_over_s_outputs(n, k, s, d):
    """TensorFlow/Keras 'SAME': ceil(n / s) outputs with the least padding, split with the
    extra pixel on the high side."""
    ((lo, hi),) = conv_padding("same", (n,), (k,), (s,), (d,), "conv1d")
    assert 0 <= hi - lo <= 1
    assert conv_output_shape((n,), (k,), (s,), ((lo, hi),), (d,)) == (math.ceil(n / s),)
    if lo + hi > 0:  # the least padding: one pixel less loses the last output
        less = ((lo, hi - 1),) if hi > lo else ((lo - 1, hi),)
        assert conv_output_shape((n,), (k,), (s,), less, (d,)) == (math.ceil(n / s) - 1,)


@pytest.mark.filterwarnings("ignore:Using padding='same':UserWarning")
@given(n=sizes, k=kernels, d=dilations)
def test_same_padding_stride_one_matches_torch(n, k, d):
    pairs = conv_padding("same", (n,), (k,), (1,), (d,), "conv1d")
    x = torch.arange(float(n), dtype=torch.float64).reshape(1, 1, n)
    w = torch.ones(1, 1, k, dtype=torch.float64)
    expected = TF.conv1d(x, w, padding="same", dilation=d)
    explicit = TF.conv1d(TF.pad(x, list(pairs[0])), w, dilation=d)
    torch.testing.assert_close(explicit, expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------
# conv_output_shape and conv_transpose_output_shape against torch.


@st.composite
def conv_geometries(draw):
    nd = draw(st.integers(1, 3))
    kernel = tuple(draw(kernels) for _ in range(nd))
    stride = tuple(draw(strides) for _ in range(nd))
    dilation = tuple(draw(dilations) for _ in range(nd))
    padding = tuple((draw(pads), draw(pads)) for _ in range(nd))
    size = tuple(draw(st.integers(1, 9)) for _ in range(nd))
    for n, k, d, (lo, hi) in zip(size, kernel, dilation, padding, strict=True):
        assume(n + lo + hi >= d * (k - 1) + 1)
    return size, kernel, stride, padding, dilation


@given(geometry=conv_geometries())
def test_conv_output_shape_matches_torch(geometry):
    size, kernel, stride, padding, dilation = geometry
    x = TF.pad(torch_zeros(1, 1, *size), [v for pair in reversed(padding) for v in pair])
    y = TORCH_CONV[len(size)](x, torch_zeros(1, 1, *kernel), stride=stride,
                              dilation=dilation)
    assert conv_output_shape(size, kernel, stride, padding, dilation) == tuple(y.shape[2:])


@given(geometry=conv_geometries())
def test_conv_output_shape_symmetric_padding_matches_torch_padding(geometry):
    size, kernel, stride, padding, dilation = geometry
    symmetric = tuple((lo, lo) for lo, _ in padding)
    for n, k, d, (lo, _) in zip(size, kernel, dilation, symmetric, strict=True):
        assume(n + 2 * lo >= d * (k - 1) + 1)
    y = TORCH_CONV[len(size)](torch_zeros(1, 1, *size), torch_zeros(1, 1, *kernel),
                              stride=stride, padding=tuple(lo for lo, _ in padding),
                              dilation=dilation)
    assert conv_output_shape(size, kernel, stride, symmetric, dilation) == tuple(y.shape[2:])


@given(geometry=conv_geometries(), data=st.data())
def test_conv_transpose_output_shape_matches_torch(geometry, data):
    size, kernel, stride, padding, dilation = geometry
    symmetric = tuple((lo, lo) for lo, _ in padding)
    output_padding = tuple(data.draw(st.integers(0, max(s, d) - 1))
                           for s, d in zip(stride, dilation, strict=True))
    expected_size = conv_transpose_output_shape(size, kernel, stride, symmetric, dilation,
                                                output_padding)
    assume(all(o >= 1 for o in expected_size))
    y = TORCH_CONV_T[len(size)](torch_zeros(1, 1, *size), torch_zeros(1, 1, *kernel),
                                stride=stride, padding=tuple(lo for lo, _ in padding),
                                output_padding=output_padding, dilation=dilation)
    assert expected_size == tuple(y.shape[2:])


@given(geometry=conv_geometries())
def test_conv_transpose_output_shape_per_side_padding(geometry):
    """Per-side padding crops (lo, hi) off the unpadded transposed convolution."""
    size, kernel, stride, padding, dilation = geometry
    zero = ((0, 0),) * len(size)
    full = conv_transpose_output_shape(size, kernel, stride, zero, dilation, (0,) * len(size))
    cropped = conv_transpose_output_shape(size, kernel, stride, padding, dilation,
                                          (0,) * len(size))
    assert cropped == tuple(f - lo - hi for f, (lo, hi) in zip(full, padding, strict=True))


# Dumoulin & Visin's relationships, numbered as in the guide (section 2-4).


@given(i=st.integers(1, 30), k=kernels, s=strides, p=pads)
def test_dumoulin_visin_relationships(i, k, s, p):
    def out(i, k, s, p, d=1):
        return conv_output_shape((i,), (k,), (s,), ((p, p),), (d,))[0]

    assume(i + 2 * p >= k)
    assert out(i, k, 1, 0) == i - k + 1  # relationship 1: no padding, unit strides
    assert out(i, k, 1, p) == i - k + 2 * p + 1  # relationship 2: padding, unit strides
    if k % 2 == 1:
        assert out(i, k, 1, k // 2) == i  # relationship 3: half (same) padding
    assert out(i, k, 1, k - 1) == i + k - 1  # relationship 4: full padding
    assert out(i, k, s, 0) == (i - k) // s + 1  # relationship 5
    assert out(i, k, s, p) == (i + 2 * p - k) // s + 1  # relationship 6
    # relationship 15 (dilation): the effective kernel is k + (k-1)(d-1)
    assert out(i + 5, k, s, p, 2) == (i + 5 + 2 * p - k - (k - 1)) // s + 1


@given(i=st.integers(1, 30), k=kernels, s=strides, p=pads, d=dilations)
def test_transposed_shape_inverts_the_convolution(i, k, s, p, d):
    """Relationship 14: with a = (i + 2p - d(k-1) - 1) mod s as output padding, the
    transposed convolution maps the convolution's output size back to i."""
    assume(i + 2 * p >= d * (k - 1) + 1)
    o = conv_output_shape((i,), (k,), (s,), ((p, p),), (d,))[0]
    a = (i + 2 * p - d * (k - 1) - 1) % s
    assert conv_transpose_output_shape((o,), (k,), (s,), ((p, p),), (d,), (a,)) == (i,)
    # relationship 8/11: o' = s(i' - 1) + k - 2p (+ a), unit dilation
    assert conv_transpose_output_shape((o,), (k,), (s,), ((p, p),), (1,), (0,)) == (
        s * (o - 1) + k - 2 * p,
    )


# ---------------------------------------------------------------------------------------
# pool_output_shape against torch max pooling.


@st.composite
def pool_geometries(draw):
    nd = draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(strides) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)  # torch: p <= k/2
    size = tuple(draw(st.integers(1, 10)) for _ in range(nd))
    for n, k, d, p in zip(size, kernel, dilation, padding, strict=True):
        assume(n + 2 * p >= d * (k - 1) + 1)
    return size, kernel, stride, padding, dilation, draw(st.booleans())


@given(geometry=pool_geometries())
def test_pool_output_shape_matches_torch(geometry):
    size, kernel, stride, padding, dilation, ceil_mode = geometry
    y = TORCH_MAX_POOL[len(size)](torch_zeros(1, 1, *size), kernel, stride, padding,
                                  dilation, ceil_mode=ceil_mode)
    assert pool_output_shape(size, kernel, stride, padding, dilation, ceil_mode) == tuple(
        y.shape[2:])


def test_pool_output_shape_ceil_mode_examples():
    # 2x2 pooling of the lecture's 6x6 result: 3x3.
    assert pool_output_shape((6, 6), (2, 2), (2, 2), (0, 0), (1, 1), False) == (3, 3)
    # 5 with k=2, s=2: floor gives 2, ceil 3 (last window starts inside the input).
    assert pool_output_shape((5,), (2,), (2,), (0,), (1,), False) == (2,)
    assert pool_output_shape((5,), (2,), (2,), (0,), (1,), True) == (3,)
    # ceil mode may not start a window in the right padding: 6, k=2, s=2, p=1 -> 4, not 5.
    assert pool_output_shape((6,), (2,), (2,), (1,), (1,), True) == (4,)


# ---------------------------------------------------------------------------------------
# receptive_field against the support of a real gradient.


@st.composite
def conv_stacks(draw):
    count = draw(st.integers(1, 4))
    return [{"kernel": draw(st.integers(1, 4)), "stride": draw(st.integers(1, 3)),
             "padding": draw(st.integers(0, 2)), "dilation": draw(st.integers(1, 2))}
            for _ in range(count)]


def gradient_support(layers, length, index, transposed=False):
    """Input indices that output ``index`` of the stack depends on (all-ones kernels)."""
    x = torch.zeros(1, 1, length, dtype=torch.float64, requires_grad=True)
    y = x
    for layer in layers:
        w = torch.ones(1, 1, layer["kernel"], dtype=torch.float64)
        op = TF.conv_transpose1d if transposed else TF.conv1d
        y = op(y, w, stride=layer["stride"], padding=layer["padding"],
               dilation=layer["dilation"])
    assert index < y.shape[-1]
    y[0, 0, index].backward()
    nonzero = torch.nonzero(x.grad[0, 0]).flatten()
    return int(nonzero.min()), int(nonzero.max())


@given(layers=conv_stacks())
def test_receptive_field_matches_gradient_support(layers):
    fields = receptive_field(layers)
    assert len(fields) == len(layers)
    jump, size = 1, 1
    for layer, field in zip(layers, fields, strict=True):
        size += layer["dilation"] * (layer["kernel"] - 1) * jump
        jump *= layer["stride"]
        assert field["jump"] == jump and field["size"] == size
    last = fields[-1]
    # The first output whose whole field lies inside the input (pixel i spans [i, i+1)).
    index = max(0, math.ceil((last["size"] / 2 - last["start"]) / last["jump"]))
    centre = last["start"] + index * last["jump"]
    first, final = centre - last["size"] / 2, centre + last["size"] / 2 - 1
    assert first == int(first) and first >= 0
    length = int(final) + 1 + 3 * int(last["jump"]) + 10
    assert gradient_support(layers, length, index) == (int(first), int(final))


@given(k=st.integers(1, 4), d=st.integers(1, 2), p=st.integers(0, 2), data=st.data())
def test_receptive_field_of_a_transposed_layer(k, d, p, data):
    """A transposed layer divides the jump by its stride. When s divides d*(k-1), output j
    with (j + p) % s == 0 sees exactly 1 + d*(k-1)/s inputs, centred at start + j*jump."""
    s = data.draw(st.sampled_from([t for t in (1, 2, 3, 4) if (d * (k - 1)) % t == 0]))
    layer = {"kernel": k, "stride": s, "padding": p, "dilation": d, "transposed": True}
    (field,) = receptive_field([layer])
    assert field["jump"] == 1 / s
    assert field["size"] == 1 + d * (k - 1) / s
    j = 6 * s - p  # (j + p) % s == 0, far enough from the left edge
    centre = field["start"] + j * field["jump"]
    first, final = centre - field["size"] / 2, centre + field["size"] / 2 - 1
    assert math.isclose(first, round(first)) and round(first) >= 0
    support = gradient_support([layer], 12, j, transposed=True)
    assert support == (round(first), round(final))


def test_receptive_field_conv_then_transposed_restores_the_jump():
    layers = [{"kernel": 3, "stride": 2, "padding": 1, "dilation": 1},
              {"kernel": 3, "stride": 2, "padding": 1, "dilation": 1},
              {"kernel": 2, "stride": 2, "padding": 0, "dilation": 1, "transposed": True},
              {"kernel": 2, "stride": 2, "padding": 0, "dilation": 1, "transposed": True}]
    jumps = [f["jump"] for f in receptive_field(layers)]
    assert jumps == [2, 4, 2, 1]


def test_check_choice_is_the_one_option_check_with_one_template():
    """Every option check in the library goes through check_choice: a non-string is a
    TypeError, an unknown name a ValueError, both naming function, option, allowed, got."""
    from cnnlab import functional as F
    from cnnlab import nn
    from cnnlab.ops._args import check_choice

    assert check_choice("fft", ("auto", "fft"), "algorithm", "conv2d") == "fft"
    with pytest.raises(TypeError, match=r"^conv2d: algorithm must be one of \('auto', 'fft'\), "
                                        r"got int 3$"):
        check_choice(3, ("auto", "fft"), "algorithm", "conv2d")
    template = r"must be one of \(.*\), got 'nope'$"
    calls = [
        lambda: F.conv2d(np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 1, 1)), padding_mode="nope"),
        lambda: F.cross_entropy(np.zeros((1, 2)), np.zeros(1, int), reduction="nope"),
        lambda: F.gelu(np.zeros(2), approximate="nope"),
        lambda: F.pad(np.zeros(2), (1, 1), mode="nope"),
        lambda: nn.Conv2d(1, 1, 3, padding_mode="nope"),
        lambda: nn.GELU("nope"),
        lambda: nn.CrossEntropyLoss(reduction="nope"),
        lambda: nn.init.kaiming_uniform_(np.zeros((2, 2)), mode="nope"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=template):
            call()
