"""cnnlab.functional.linear and flatten (functional/dense.py). As every op test: torch as the
oracle (``check_op``), float64 finite differences (``fd_check``), error messages.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from _check import DTYPES, check_op, fd_check, random_array
from cnnlab import Tensor
from cnnlab import functional as F

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
    fd_check(F.linear, [random_array((2, 3), 14), random_array((4, 3), 15), random_array((4,), 16)])
    x = Tensor(random_array((2, 3), 17), requires_grad=True)
    w = Tensor(random_array((4, 3), 18))  # frozen weight: only x gets a gradient
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
             [random_array((2, 3, 4, 2), 19)])
    assert F.flatten(np.zeros(())).shape == (1,)
    with pytest.raises(ValueError, match=r"flatten: start_dim \(2\) must not come after"):
        F.flatten(np.zeros((2, 3, 4)), 2, 1)
