"""cnnlab.functional activations (relu, leaky_relu, gelu, sigmoid, tanh, softmax, log_softmax)
and their kernels in cnnlab.ops.activation. As every op test: torch as the oracle
(``check_op``), float64 finite differences (``fd_check``), error messages.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from _check import ARRAY_SHAPES, DTYPES, check_op, fd_check, random_array
from cnnlab import Tensor
from cnnlab import functional as F

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
@given(shape=ARRAY_SHAPES, seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_activation_like_torch(name, dtype, shape, seed):
    ours, theirs = ACTIVATIONS[name]
    x = random_array(shape, seed, dtype, scale=3.0)
    x.flat[0] = 0.0  # the kink: relu'(0) = 0, leaky_relu'(0) = slope, as in torch
    check_op(ours, theirs, [x])


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_finite_differences_and_array_out(name):
    ours, _ = ACTIVATIONS[name]
    x = random_array((3, 4), 1) + 0.05  # keep off the kink
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
@given(shape=ARRAY_SHAPES, seed=st.integers(0, 2**16), data=st.data())
@settings(max_examples=20)
def test_softmax_like_torch(fn, dtype, shape, seed, data):
    dim = data.draw(st.integers(-len(shape), len(shape) - 1))
    torch_fn = TF.softmax if fn is F.softmax else TF.log_softmax
    check_op(lambda x: fn(x, dim), lambda x: torch_fn(x, dim),
             [random_array(shape, seed, dtype, 5.0)])


@pytest.mark.parametrize("fn", [F.softmax, F.log_softmax])
def test_softmax_finite_differences_and_no_overflow(fn):
    fd_check(lambda x: fn(x, 1), [random_array((2, 4, 3), 2)])
    torch_fn = TF.softmax if fn is F.softmax else TF.log_softmax
    check_op(lambda x: fn(x, -1), lambda x: torch_fn(x, -1),
             [np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]])])
