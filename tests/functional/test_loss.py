"""cnnlab.functional losses (cross_entropy, nll_loss, mse_loss,
binary_cross_entropy_with_logits) and their kernels in cnnlab.ops.loss. As every op test:
torch as the oracle (``check_op``), float64 finite differences (``fd_check``), error
messages.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _check import ARRAY_SHAPES, DTYPES, check_op, fd_check, random_array
from cnnlab import Tensor
from cnnlab import functional as F

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
    logits = random_array((4, 3), 3)
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
             [random_array((2, 3, 2), 4)])
    fd_check(lambda x: F.nll_loss(x, target, weight, reduction="none"),
             [random_array((2, 3, 2), 5)])
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
@given(shape=ARRAY_SHAPES, seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_mse_loss_like_torch(reduction, dtype, shape, seed):
    check_op(lambda x, t: F.mse_loss(x, t, reduction=reduction),
             lambda x, t: TF.mse_loss(x, t, reduction=reduction),
             [random_array(shape, seed, dtype), random_array(shape, seed + 1, dtype)])


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
             [random_array((3, 2), 6), np.random.default_rng(7).random((3, 2))])
    fd_check(lambda a, b: F.mse_loss(a, b, reduction="sum"), [random_array((3, 2), 8),
                                                               random_array((3, 2), 9)])


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
