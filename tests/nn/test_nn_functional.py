"""cnnlab.functional activations, losses, normalisations, dropout, linear and flatten.

Three checks per op (STYLE.md, rule 14): torch as the oracle through ``check_op`` (forward
and every input gradient; float64 and float32, hypothesis over shapes and options), float64
finite differences, and error messages. Plus: array in gives array out, float32 stays
float32, numerically extreme inputs stay finite.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _check import assert_close, check_op, finite_difference_grad
from cnnlab import Tensor
from cnnlab import functional as F

DTYPES = (np.float64, np.float32)
shapes = hnp.array_shapes(min_dims=1, max_dims=4, max_side=5)


def _data(shape, seed, dtype=np.float64, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def fd_check(fn, arrays, seed=0):
    """Every array's gradient of ``sum(fn(*tensors) * upstream)`` by central differences."""
    arrays = [np.asarray(a, np.float64) for a in arrays]
    tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    (out * upstream).sum().backward()
    expected = finite_difference_grad(
        lambda *xs: np.sum(np.asarray(fn(*xs)) * upstream), arrays)
    for index, (tensor, grad) in enumerate(zip(tensors, expected, strict=True)):
        assert_close(tensor.grad, grad, 1e-6, 1e-5, f"finite differences, input {index}")


# ---------------------------------------------------------------------------------------
# Activations.

ACTIVATIONS = {
    "relu": (F.relu, TF.relu),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda x: TF.leaky_relu(x, 0.2)),
    "leaky_relu_default": (F.leaky_relu, TF.leaky_relu),
    "leaky_relu_steep": (lambda x: F.leaky_relu(x, 1.5), lambda x: TF.leaky_relu(x, 1.5)),
    "gelu": (F.gelu, TF.gelu),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"),
                  lambda x: TF.gelu(x, approximate="tanh")),
    "sigmoid": (F.sigmoid, torch.sigmoid),
    "tanh": (F.tanh, torch.tanh),
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes, seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_activation_like_torch(name, dtype, shape, seed):
    ours, theirs = ACTIVATIONS[name]
    x = _data(shape, seed, dtype, scale=3.0)
    x.flat[0] = 0.0  # the kink: relu'(0) = 0, leaky_relu'(0) = slope, as in torch
    check_op(ours, theirs, [x])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_finite_differences_and_array_out(name):
    ours, _ = ACTIVATIONS[name]
    x = _data((3, 4), 1) + 0.05  # keep off the kink
    fd_check(ours, [x])
    out = ours(x.astype(np.float32))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "gelu", "gelu_tanh"])
def test_activation_extreme_inputs_are_finite(name):
    ours, theirs = ACTIVATIONS[name]
    x = np.array([-1e4, -800.0, -40.0, -1e-8, 0.0, 1e-8, 40.0, 800.0, 1e4])
    check_op(ours, theirs, [x])


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_passes_no_nonfinite_gradient_where_it_is_flat(dtype):
    """Upstream NaN/inf where x <= 0 gives 0, as torch's threshold_backward (a product with
    the 0/1 mask would give NaN there); where x > 0, or x is NaN, it passes through."""
    x = np.array([-2.0, 0.0, 1.5, -1.0, 3.0, 0.5, np.nan, np.nan], dtype)
    upstream = np.array([np.nan, np.inf, 2.0, -np.inf, np.nan, -1.0, 5.0, np.nan], dtype)
    ours = Tensor(x, requires_grad=True)
    F.relu(ours).backward(upstream)
    theirs = torch.tensor(x, requires_grad=True)
    TF.relu(theirs).backward(torch.tensor(upstream))
    np.testing.assert_array_equal(ours.grad, theirs.grad.numpy())
    assert ours.grad.dtype == dtype


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes, seed=st.integers(0, 2**16), data=st.data())
@settings(max_examples=20)
def test_softmax_like_torch(fn, dtype, shape, seed, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    torch_fn = TF.softmax if fn is F.softmax else TF.log_softmax
    check_op(lambda x: fn(x, dim), lambda x: torch_fn(x, dim), [_data(shape, seed, dtype, 5.0)])


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
def test_softmax_finite_differences_and_no_overflow(fn):
    fd_check(lambda x: fn(x, 1), [_data((2, 4, 3), 2)])
    torch_fn = TF.softmax if fn is F.softmax else TF.log_softmax
    check_op(lambda x: fn(x, -1), lambda x: torch_fn(x, -1),
             [np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]])])


# ---------------------------------------------------------------------------------------
# Classification losses.


@st.composite
def classification_case(draw):
    batch = draw(st.integers(1, 5))
    classes = draw(st.integers(2, 6))
    extra = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, (batch, *extra))
    if draw(st.booleans()):  # ignore some positions
        target[rng.random(target.shape) < 0.3] = -100
    weight = rng.uniform(0.2, 2.0, classes) if draw(st.booleans()) else None
    return rng.standard_normal((batch, classes, *extra)) * 3, target, weight


def _tensor_or_none(array):
    return None if array is None else torch.from_numpy(np.asarray(array, np.float64))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=classification_case(), smoothing=st.sampled_from([0.0, 0.1, 0.45]))
@settings(max_examples=20)
def test_cross_entropy_like_torch(reduction, dtype, case, smoothing):
    logits, target, weight = case
    if reduction == "mean" and np.all(target == -100):
        target.flat[0] = 0  # torch's mean over no targets is nan
    w = None if weight is None else weight.astype(dtype)
    check_op(
        lambda x: F.cross_entropy(x, target, w, reduction=reduction,
                                  label_smoothing=smoothing),
        lambda x: TF.cross_entropy(x, torch.from_numpy(target), _tensor_or_none(weight),
                                   reduction=reduction, label_smoothing=smoothing),
        [logits.astype(dtype)],
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(case=classification_case())
@settings(max_examples=20)
def test_nll_loss_like_torch(reduction, case):
    scores, target, weight = case
    if reduction == "mean" and np.all(target == -100):
        target.flat[0] = 0
    check_op(
        lambda x: F.nll_loss(x, target, weight, reduction=reduction),
        lambda x: TF.nll_loss(x, torch.from_numpy(target), _tensor_or_none(weight),
                              reduction=reduction),
        [scores],
    )


def test_cross_entropy_custom_ignore_index_and_unbatched():
    logits = _data((4, 3), 3)
    target = np.array([0, 7, 2, 7])
    check_op(lambda x: F.cross_entropy(x, target, ignore_index=7, label_smoothing=0.2),
             lambda x: TF.cross_entropy(x, torch.from_numpy(target), ignore_index=7,
                                        label_smoothing=0.2), [logits])
    for reduction in ("mean", "none"):
        check_op(lambda x, r=reduction: F.cross_entropy(x, np.array(1), reduction=r),
                 lambda x, r=reduction: TF.cross_entropy(x, torch.tensor(1), reduction=r),
                 [logits[0]])


def test_cross_entropy_finite_differences_and_extremes():
    target = np.array([[0, 2], [1, 1]])
    weight = np.array([0.5, 1.0, 2.0])
    fd_check(lambda x: F.cross_entropy(x, target, weight, label_smoothing=0.1),
             [_data((2, 3, 2), 4)])
    fd_check(lambda x: F.nll_loss(x, target, weight, reduction="none"), [_data((2, 3, 2), 5)])
    huge = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]])
    check_op(lambda x: F.cross_entropy(x, np.array([1, 1])),
             lambda x: TF.cross_entropy(x, torch.tensor([1, 1])), [huge])


def test_cross_entropy_array_in_array_out_and_dtype():
    out = F.cross_entropy(np.zeros((2, 4), np.float32), np.array([0, 3]))
    assert isinstance(out, np.ndarray) and out.shape == () and out.dtype == np.float32
    np.testing.assert_allclose(out, np.log(4), rtol=1e-6)


def test_constant_weights_take_the_input_dtype():
    """Class / element weights are constants: float64 weights do not upcast float32 logits."""
    logits = Tensor(np.zeros((2, 3), np.float32), requires_grad=True)
    loss = F.cross_entropy(logits, np.array([0, 2]), np.array([1.0, 2.0, 3.0]))
    loss.backward()
    assert loss.dtype == np.float32 and logits.grad.dtype == np.float32
    bce = F.binary_cross_entropy_with_logits(logits, np.ones((2, 3), np.float32),
                                             np.ones(3), pos_weight=np.full(3, 2.0))
    assert bce.dtype == np.float32


# ---------------------------------------------------------------------------------------
# Regression and binary losses.


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=shapes, seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_mse_loss_like_torch(reduction, dtype, shape, seed):
    check_op(lambda x, t: F.mse_loss(x, t, reduction=reduction),
             lambda x, t: TF.mse_loss(x, t, reduction=reduction),
             [_data(shape, seed, dtype), _data(shape, seed + 1, dtype)])


@st.composite
def bce_case(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=4))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    logits = rng.standard_normal(shape) * 4
    target = rng.random(shape)
    weight = pos_weight = None
    if draw(st.booleans()):
        weight = rng.uniform(0.1, 2.0, shape[draw(st.integers(0, len(shape) - 1)):])
    if draw(st.booleans()):
        pos_weight = rng.uniform(0.1, 3.0, shape[-1:])
    return logits, target, weight, pos_weight


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@given(case=bce_case())
@settings(max_examples=20)
def test_bce_with_logits_like_torch(reduction, case):
    logits, target, weight, pos_weight = case
    check_op(
        lambda x, t: F.binary_cross_entropy_with_logits(x, t, weight, reduction=reduction,
                                                        pos_weight=pos_weight),
        lambda x, t: TF.binary_cross_entropy_with_logits(
            x, t, _tensor_or_none(weight), reduction=reduction,
            pos_weight=_tensor_or_none(pos_weight)),
        [logits, target],
    )


def test_bce_with_logits_float32_extremes_and_finite_differences():
    x = np.array([-1e4, -100.0, -5.0, 0.0, 5.0, 100.0, 1e4], np.float32)
    t = np.array([1.0, 0.0, 0.3, 0.5, 1.0, 1.0, 0.0], np.float32)
    out = check_op(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction="none"),
                   lambda a, b: TF.binary_cross_entropy_with_logits(a, b, reduction="none"),
                   [x, t])
    assert np.all(np.isfinite(out))
    pos = np.array([0.5, 2.0])
    fd_check(lambda a, b: F.binary_cross_entropy_with_logits(a, b, pos_weight=pos),
             [_data((3, 2), 6), np.random.default_rng(7).random((3, 2))])
    fd_check(lambda a, b: F.mse_loss(a, b, reduction="sum"), [_data((3, 2), 8),
                                                               _data((3, 2), 9)])


# ---------------------------------------------------------------------------------------
# Dropout.


def test_dropout_mask_scale_and_gradient():
    x = Tensor(np.ones((200, 50), np.float32), requires_grad=True)
    y = F.dropout(x, 0.3, rng=np.random.default_rng(0))
    assert y.dtype == np.float32
    np.testing.assert_allclose(np.unique(y.data), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs((y.data == 0).mean() - 0.3) < 0.02
    upstream = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    y.backward(upstream)
    np.testing.assert_allclose(x.grad, upstream * y.data, rtol=1e-6)


def test_dropout_is_reproducible_and_identity_when_off():
    x = np.ones((4, 5))
    first = F.dropout(x, 0.5, rng=np.random.default_rng(3))
    second = F.dropout(x, 0.5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(first, second)
    assert F.dropout(x, 0.5, training=False) is x
    assert F.dropout(x, 0.0) is x
    np.testing.assert_array_equal(F.dropout(x, 1.0), np.zeros_like(x))
    x32 = F.dropout(x.astype(np.float32), 0.5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(x32 == 0, first == 0)  # same mask for both dtypes


def test_dropout_and_flatten_finite_differences():
    fd_check(lambda x: F.dropout(x, 0.4, rng=np.random.default_rng(5)), [_data((4, 5), 20)])
    fd_check(lambda x: F.flatten(x, 1) * np.arange(12.0), [_data((2, 3, 4), 21)])


def test_dropout_errors():
    with pytest.raises(ValueError, match=r"dropout: p must be a probability in \[0, 1\], got 1\.5"):
        F.dropout(np.ones(2), 1.5)
    with pytest.raises(TypeError, match=r"dropout: rng must be a numpy\.random\.Generator"):
        F.dropout(np.ones(2), 0.5, rng=np.random.RandomState(0))


# ---------------------------------------------------------------------------------------
# Normalisation.


@st.composite
def batch_norm_case(draw):
    spatial = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    batch = draw(st.integers(1, 4))
    if batch * int(np.prod(spatial)) == 1:
        batch = 2
    channels = draw(st.integers(1, 4))
    return (batch, channels, *spatial), draw(st.integers(0, 2**16))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@given(case=batch_norm_case(), momentum=st.sampled_from([0.1, 0.5, 1.0]))
@settings(max_examples=15)
def test_batch_norm_like_torch(training, affine, dtype, case, momentum):
    shape, seed = case
    rng = np.random.default_rng(seed)
    channels = shape[1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    running = [rng.standard_normal(channels), rng.uniform(0.5, 2.0, channels)]
    ours_running = [r.astype(dtype) for r in running]
    torch_running = [torch.from_numpy(r.copy()) for r in running]
    params = [rng.uniform(0.5, 1.5, channels).astype(dtype),
              rng.standard_normal(channels).astype(dtype)] if affine else []
    check_op(
        lambda x, *wb: F.batch_norm(x, *ours_running, *wb, training=training,
                                    momentum=momentum),
        lambda x, *wb: TF.batch_norm(x, *torch_running, *wb, training=training,
                                     momentum=momentum),
        [x, *params],
    )
    atol = 1e-10 if dtype == np.float64 else 1e-5
    for ours, theirs in zip(ours_running, torch_running, strict=True):
        assert ours.dtype == dtype
        assert_close(ours, theirs.numpy(), atol, atol, "running statistics")


def test_batch_norm_without_running_stats_and_finite_differences():
    x = _data((3, 2, 4), 10)
    check_op(lambda a, w, b: F.batch_norm(a, None, None, w, b, training=True),
             lambda a, w, b: TF.batch_norm(a, None, None, w, b, training=True),
             [x, np.array([0.5, 2.0]), np.array([0.1, -0.3])])
    fd_check(lambda a, w, b: F.batch_norm(a, None, None, w, b, training=True),
             [x, np.array([0.5, 2.0]), np.array([0.1, -0.3])])
    mean, var = np.array([0.2, -0.1]), np.array([1.5, 0.7])
    fd_check(lambda a, w: F.batch_norm(a, mean, var, w, training=False),
             [x, np.array([0.5, 2.0])])


def test_batch_norm_errors():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        F.batch_norm(np.ones((1, 3)), None, None, training=True)
    with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\), got \(2,\)"):
        F.batch_norm(np.ones((2, 3)), np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        F.batch_norm(np.ones((2, 3)), None, None, training=False)
    with pytest.raises(ValueError, match=r"input must be \(N, C\)"):
        F.batch_norm(np.ones(3), None, None, training=True)


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=4), seed=st.integers(0, 999),
       data=st.data())
@settings(max_examples=20)
def test_layer_norm_like_torch(dtype, shape, seed, data):
    normalized = shape[data.draw(st.integers(0, len(shape) - 1)):]
    affine = data.draw(st.sampled_from(["both", "weight", "none"]))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + 1).astype(dtype)
    params = {"both": [rng.uniform(0.5, 1.5, normalized), rng.standard_normal(normalized)],
              "weight": [rng.uniform(0.5, 1.5, normalized)], "none": []}[affine]
    check_op(lambda x, *wb: F.layer_norm(x, normalized, *wb),
             lambda x, *wb: TF.layer_norm(x, normalized, *wb),
             [x, *[p.astype(dtype) for p in params]])


def test_layer_norm_finite_differences_and_errors():
    fd_check(lambda a, w, b: F.layer_norm(a, 4, w, b),
             [_data((3, 4), 11), _data((4,), 12), _data((4,), 13)])
    with pytest.raises(ValueError, match=r"input shape \(2, 3\) must end with normalized_shape"):
        F.layer_norm(np.ones((2, 3)), (2,))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\), got \(2,\)"):
        F.layer_norm(np.ones((2, 3)), 3, np.ones(2))


# ---------------------------------------------------------------------------------------
# Linear and flatten.


@pytest.mark.parametrize("dtype", DTYPES)
@given(lead=st.lists(st.integers(1, 4), max_size=3), in_features=st.integers(1, 5),
       out_features=st.integers(1, 5), bias=st.booleans(), seed=st.integers(0, 999))
@settings(max_examples=20)
def test_linear_like_torch(dtype, lead, in_features, out_features, bias, seed):
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal((*lead, in_features)).astype(dtype),
              rng.standard_normal((out_features, in_features)).astype(dtype)]
    if bias:
        inputs.append(rng.standard_normal(out_features).astype(dtype))
    check_op(F.linear, TF.linear, inputs)


def test_linear_finite_differences_partial_grads_and_errors():
    fd_check(F.linear, [_data((2, 3), 14), _data((4, 3), 15), _data((4,), 16)])
    x = Tensor(_data((2, 3), 17), requires_grad=True)
    w = Tensor(_data((4, 3), 18))  # frozen weight: only x gets a gradient
    F.linear(x, w).sum().backward()
    assert w.grad is None
    np.testing.assert_allclose(x.grad, np.ones((2, 4)) @ w.data)
    with pytest.raises(ValueError, match=r"linear: input.shape\[-1\] \(2\) must equal"):
        F.linear(np.ones((3, 2)), np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\), got \(3,\)"):
        F.linear(np.ones((3, 3)), np.ones((4, 3)), np.ones(3))
    with pytest.raises(TypeError, match="linear: all inputs must have the same dtype"):
        F.linear(np.ones((3, 3), np.float32), np.ones((4, 3)))


@pytest.mark.parametrize(("start", "end"), [(0, -1), (1, -1), (1, 2), (-2, -1), (2, 2)])
def test_flatten_like_torch(start, end):
    check_op(lambda x: F.flatten(x, start, end), lambda x: torch.flatten(x, start, end),
             [_data((2, 3, 4, 2), 19)])
    assert F.flatten(np.zeros(())).shape == (1,)
    with pytest.raises(ValueError, match=r"flatten: start_dim \(2\) must not come after"):
        F.flatten(np.zeros((2, 3, 4)), 2, 1)


# ---------------------------------------------------------------------------------------
# Argument errors shared by the losses and softmax.


def test_loss_and_softmax_errors():
    logits = np.zeros((2, 3))
    with pytest.raises(ValueError, match="cross_entropy: reduction must be one of"):
        F.cross_entropy(logits, np.array([0, 1]), reduction="avg")
    with pytest.raises(ValueError, match=r"target values must be in \[0, 3\).*got 3"):
        F.cross_entropy(logits, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"target shape \(3,\) must be \(2,\)"):
        F.cross_entropy(logits, np.array([0, 1, 2]))
    with pytest.raises(TypeError, match="target must hold integer class indices"):
        F.cross_entropy(logits, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\)"):
        F.cross_entropy(logits, np.array([0, 1]), np.ones(2))
    with pytest.raises(ValueError, match=r"label_smoothing must be in \[0, 1\]"):
        F.cross_entropy(logits, np.array([0, 1]), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"mse_loss: target shape \(3,\) must equal input"):
        F.mse_loss(np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match=r"pos_weight shape \(3,\) must broadcast"):
        F.binary_cross_entropy_with_logits(np.zeros((2, 2)), np.zeros((2, 2)),
                                           pos_weight=np.ones(3))
    with pytest.raises(ValueError, match=r"softmax: dim must be in \[-2, 2\)"):
        F.softmax(logits, 2)
    with pytest.raises(ValueError, match="gelu: approximate must be one of"):
        F.gelu(logits, approximate="erf")
    with pytest.raises(TypeError, match="relu: input must be float32 or float64"):
        F.relu(np.zeros(2, np.complex64))
