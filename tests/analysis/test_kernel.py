"""kernel_of on black boxes whose kernels are known: every cnnlab.functional conv1d/conv2d
configuration (hypothesis), scipy.ndimage.correlate/convolve in each mode, cnnlab and torch
modules; and the operators that are not convolutions (ReLU, max pooling, a position-
weighted product), each with its measured errors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from cnnlab import functional as F
from cnnlab import nn
from cnnlab.analysis import kernel_of

MODES = ("zeros", "circular", "reflect", "replicate")
SCIPY_MODES = {"constant": "zeros", "wrap": "circular", "nearest": "replicate",
               "mirror": "reflect"}


def _dense(weight, groups):
    """A grouped weight (C_out, C_in / groups, *k) as the dense (C_out, C_in, *k)."""
    c_out, per_group = weight.shape[:2]
    dense = np.zeros((c_out, per_group * groups, *weight.shape[2:]))
    out_per_group = c_out // groups
    for o in range(c_out):
        g = o // out_per_group
        dense[o, g * per_group:(g + 1) * per_group] = weight[o]
    return dense


@st.composite
def conv_config(draw):
    nd = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 2]))
    c_in = groups * draw(st.integers(1, 2))
    c_out = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 4)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    mode = draw(st.sampled_from(MODES))
    spatial = tuple(draw(st.integers(9, 16)) for _ in range(nd))
    if draw(st.booleans()) and stride == (1,) * nd:
        padding = draw(st.sampled_from(["same", "valid"]))
    else:
        padding = tuple((draw(st.integers(0, 3)), draw(st.integers(0, 3)))
                        for _ in range(nd))
    seed = draw(st.integers(0, 2**16))
    return nd, groups, c_in, c_out, kernel, stride, dilation, mode, spatial, padding, seed


@settings(max_examples=40, deadline=None)
@given(conv_config(), st.booleans())
def test_recovers_every_functional_convolution(config, with_bias):
    nd, groups, c_in, c_out, kernel, stride, dilation, mode, spatial, padding, seed = config
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((c_out, c_in // groups, *kernel))
    bias = rng.standard_normal(c_out) if with_bias else None
    conv = (F.conv1d, F.conv2d)[nd - 1]

    def operator(x):
        return conv(x[None], weight, bias, stride=stride, padding=padding,
                    dilation=dilation, groups=groups, padding_mode=mode)[0]

    try:
        expected = operator(np.zeros((c_in, *spatial)))
    except ValueError:
        return  # an impossible configuration (the engine says why)
    found = kernel_of(operator, (c_in, *spatial), rng=np.random.default_rng(0))
    assert found.affine and found.linear == (bias is None), found
    assert found.shift_equivariant, found
    assert found.kernel is not None, found
    np.testing.assert_allclose(found.kernel, _dense(weight, groups), atol=1e-12)
    if bias is not None:
        np.testing.assert_allclose(found.bias, bias, atol=1e-12)
    taps = [k for k in kernel]
    assert found.dilation == tuple(d if k > 1 else 1 for d, k in zip(dilation, taps))
    assert found.stride == tuple(s if n > 1 else found.stride[i]
                                 for i, (s, n) in enumerate(zip(stride,
                                                                expected.shape[1:])))
    assert found.residual <= 1e-12
    x = rng.standard_normal((c_in, *spatial))
    np.testing.assert_allclose(found.rebuild(x), operator(x), atol=1e-10)
    # the boundary is the padding mode, or one the engine says gives the same operator
    # (no padding, or padding never read: "zeros" is then reported)
    if found.boundary != mode:
        assert found.boundary == "zeros"
        same = conv(x[None], weight, bias, stride=stride, padding=padding,
                    dilation=dilation, groups=groups, padding_mode="zeros")[0]
        np.testing.assert_allclose(same, operator(x), atol=1e-10)


@pytest.mark.parametrize("mode", sorted(SCIPY_MODES))
@pytest.mark.parametrize("shape", [(3,), (4,), (3, 4), (2, 5)])
@pytest.mark.parametrize("function", [ndimage.correlate, ndimage.convolve])
def test_recovers_scipy_ndimage_kernels_and_boundaries(mode, shape, function):
    rng = np.random.default_rng(len(shape) * 10 + shape[-1])
    weights = rng.standard_normal((1, *shape))  # a size-1 channel axis: any mode fits it
    spatial = (17,) if len(shape) == 1 else (17, 14)
    found = kernel_of(lambda x: function(x, weights, mode=mode), (1, *spatial),
                      rng=np.random.default_rng(1))
    correlation = weights if function is ndimage.correlate else weights[
        (slice(None),) + (slice(None, None, -1),) * len(shape)]
    assert found.linear and found.shift_equivariant
    np.testing.assert_allclose(found.kernel[0], correlation, atol=1e-13)
    assert found.boundary == SCIPY_MODES[mode]
    assert found.stride == (1,) * len(shape) and found.dilation == (1,) * len(shape)
    # scipy centres the kernel at k // 2 (correlate); convolve mirrors it, so an even
    # kernel's origin moves by one
    lows = tuple(k // 2 if function is ndimage.correlate else (k - 1) // 2 for k in shape)
    assert tuple(lo for lo, _ in found.padding) == lows
    assert found.residual < 1e-13


def test_scipy_reflect_is_not_a_torch_boundary():
    # scipy's "reflect" repeats the edge sample (b a | a b c): for a 3-tap kernel, one
    # sample of padding, that is "replicate"; with two it is neither torch mode
    weights = np.array([[1.0, -2.0, 0.5, 0.25, 3.0]])
    found = kernel_of(lambda x: ndimage.correlate(x, weights, mode="reflect"), (1, 20))
    np.testing.assert_allclose(found.kernel[0], weights, atol=1e-14)
    assert found.boundary is None and found.residual > 0.01
    assert "no boundary rule" in found.note
    with pytest.raises(ValueError, match="rebuild: no convolution was recovered"):
        found.rebuild(np.zeros((1, 20)))


def test_cnnlab_and_torch_modules():
    torch = pytest.importorskip("torch")
    conv = nn.Conv2d(2, 3, (3, 2), stride=(2, 1), padding=1, dilation=(1, 2),
                     padding_mode="replicate", rng=np.random.default_rng(0))
    conv.train()
    found = kernel_of(conv, (2, 12, 11))
    assert conv.training  # the module was probed as a copy
    np.testing.assert_allclose(found.kernel, conv.weight.data, atol=1e-6)
    np.testing.assert_allclose(found.bias, conv.bias.data, atol=1e-6)
    assert (found.stride, found.dilation, found.boundary) == ((2, 1), (1, 2), "replicate")
    assert not found.linear and found.affine

    layer = torch.nn.Conv1d(1, 2, 5, padding=4, dilation=2, padding_mode="circular")
    found = kernel_of(layer, (1, 30))
    np.testing.assert_allclose(found.kernel, layer.weight.detach().numpy(), atol=1e-6)
    assert found.boundary == "circular" and found.padding == ((4, 4),)


def test_a_stride_two_convolution_is_equivariant_to_even_shifts():
    weight = np.random.default_rng(0).standard_normal((1, 1, 3))
    found = kernel_of(lambda x: F.conv1d(x[None], weight, stride=2, padding=1)[0], (1, 32))
    assert found.shift_equivariant and found.stride == (2,)
    assert found.equivariance_error < 1e-12


@pytest.mark.parametrize("operator, shape", [(nn.ReLU(), (1, 16)),
                                             (nn.MaxPool2d(2), (1, 12, 12)),
                                             (nn.Sequential(nn.Conv1d(1, 1, 3), nn.Tanh()),
                                              (1, 16))])
def test_nonlinear_operators_are_not_linear(operator, shape):
    found = kernel_of(operator, shape, rng=np.random.default_rng(0))
    assert not found.linear and not found.affine and found.kernel is None
    assert found.linearity_error > 1e-3
    assert "not linear" in str(found)


def test_max_pooling_is_still_shift_equivariant_at_its_stride():
    found = kernel_of(nn.MaxPool2d(2), (1, 16, 16), rng=np.random.default_rng(0))
    assert found.shift_equivariant and found.stride == (2, 2)
    assert found.equivariance_error == 0


def test_position_weighted_operator_is_not_shift_equivariant():
    ramp = np.linspace(0.5, 2.0, 24)
    found = kernel_of(lambda x: np.roll(x, 1, axis=-1) * ramp, (1, 24),
                      rng=np.random.default_rng(0))
    assert found.linear and not found.shift_equivariant and found.kernel is None
    assert found.equivariance_error > 1e-3
    assert "not shift-equivariant" in str(found)


def test_a_64x64_operator():
    weights = np.random.default_rng(0).standard_normal((1, 5, 5))
    found = kernel_of(lambda x: ndimage.correlate(x, weights, mode="nearest"), (1, 64, 64))
    assert found.boundary == "replicate"
    np.testing.assert_allclose(found.kernel[0], weights, atol=1e-13)


def test_bad_operators_and_arguments():
    with pytest.raises(ValueError, match="kernel_of: the operator must keep the number of "
                                         r"dimensions.*\(1, 8\) into \(8,\)"):
        kernel_of(lambda x: x[0], (1, 8))
    with pytest.raises(ValueError, match=r"kernel_of: the operator raised ZeroDivisionError"):
        kernel_of(lambda x: 1 / 0, (1, 8))
    with pytest.raises(TypeError, match="kernel_of: operator must be a callable"):
        kernel_of(3, (1, 8))
    with pytest.raises(ValueError, match="kernel_of: input_shape must be"):
        kernel_of(lambda x: x, (8,))
    with pytest.raises(ValueError, match="kernel_of: tol must be a positive number"):
        kernel_of(lambda x: x, (1, 8), tol=0)


def test_a_constant_that_varies_with_position_is_not_a_bias():
    # LeNet-1989's per-unit biases: affine, the linear part a convolution, but f(0)
    # varies with position, so shifting the input does not shift the output
    def op(x):
        return ndimage.correlate(x, [[1.0, 2.0, -1.0]], mode="constant") + np.linspace(
            0, 1, 16)[None]

    found = kernel_of(op, (1, 16), rng=np.random.default_rng(0))
    assert found.affine and not found.linear and found.bias is None
    assert not found.shift_equivariant and found.equivariance_error > 1e-3
    # padding with -1 (LeNet-1989's background): the kernel holds inside, not at borders
    def padded(x):
        return F.conv2d(F.pad(x[None], (2, 2, 2, 2), value=-1.0), np.ones((1, 1, 3, 3)))[0]

    found = kernel_of(padded, (1, 12, 12), rng=np.random.default_rng(0))
    np.testing.assert_allclose(found.kernel, np.ones((1, 1, 3, 3)), atol=1e-12)
    assert found.boundary is None and found.residual > 0.1
    assert "not one bias per channel" in found.note


def test_too_small_an_input_says_so():
    weight = np.array([[[1.0, 2.0, 3.0]]])
    found = kernel_of(lambda x: F.conv1d(x[None], weight, stride=2, dilation=3,
                                         padding=1)[0], (1, 7))
    assert found.kernel is None and "probe a larger input_shape" in found.note
    found = kernel_of(lambda x: F.conv1d(x[None], weight, stride=2, dilation=3,
                                         padding=1)[0], (1, 20))
    np.testing.assert_allclose(found.kernel, weight)
