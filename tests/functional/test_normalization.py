"""cnnlab.functional normalisation and regularisation (batch_norm, layer_norm, dropout) and the
kernels in cnnlab.ops.normalization. As every op test: torch as the oracle (``check_op``),
float64 finite differences (``fd_check``), error messages.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _check import DTYPES, assert_close, check_op, fd_check, random_array
from cnnlab import Tensor
from cnnlab import functional as F

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
    fd_check(lambda x: F.dropout(x, 0.4, rng=np.random.default_rng(5)), [random_array((4, 5), 20)])
    fd_check(lambda x: F.flatten(x, 1) * np.arange(12.0), [random_array((2, 3, 4), 21)])


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
    x = random_array((3, 2, 4), 10)
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
             [random_array((3, 4), 11), random_array((4,), 12), random_array((4,), 13)])
    with pytest.raises(ValueError, match=r"input shape \(2, 3\) must end with normalized_shape"):
        F.layer_norm(np.ones((2, 3)), (2,))
    with pytest.raises(ValueError, match=r"weight must have shape \(3,\), got \(2,\)"):
        F.layer_norm(np.ones((2, 3)), 3, np.ones(2))
