"""clip_grad_norm_ and clip_grad_value_ against torch.nn.utils."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cnnlab import Tensor
from cnnlab.optim import clip_grad_norm_, clip_grad_value_

torch = pytest.importorskip("torch")

SHAPES = [(4, 3), (5,), (2, 3, 3), (6,)]


def make_pair(seed: int, dtype: type = np.float64, scale: float = 1.0
              ) -> tuple[list[Tensor], list]:
    """The same gradients on cnnlab and torch parameters; parameter 3 has none."""
    rng = np.random.default_rng(seed)
    ours, theirs = [], []
    for i, shape in enumerate(SHAPES):
        ours.append(Tensor(np.zeros(shape, dtype)))
        theirs.append(torch.zeros(shape, dtype=getattr(torch, np.dtype(dtype).name),
                                  requires_grad=True))
        if i != 3:
            grad = (scale * rng.standard_normal(shape)).astype(dtype)
            ours[-1].grad = grad.copy()
            theirs[-1].grad = torch.from_numpy(grad.copy())
    return ours, theirs


def assert_grads_close(ours: list[Tensor], theirs: list, rtol: float) -> None:
    for mine, their in zip(ours, theirs, strict=True):
        if their.grad is None:
            assert mine.grad is None
        else:
            np.testing.assert_allclose(mine.grad, their.grad.numpy(), rtol=rtol, atol=0)


@pytest.mark.parametrize("max_norm", [0.1, 1e3])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, 0.0, math.inf, -math.inf, "inf"])
@pytest.mark.parametrize(("dtype", "rtol"), [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_clip_grad_norm_matches_torch(norm_type, max_norm: float, dtype: type,
                                      rtol: float) -> None:
    ours, theirs = make_pair(seed=0, dtype=dtype)
    total = clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert isinstance(total, float)
    assert total == pytest.approx(expected.item(), rel=rtol)
    assert_grads_close(ours, theirs, rtol)
    for tensor in ours:
        assert tensor.grad is None or tensor.grad.dtype == dtype


def test_clip_grad_norm_single_tensor_and_no_grads() -> None:
    tensor = Tensor(np.zeros(2))
    assert clip_grad_norm_(tensor, 1.0) == 0.0
    tensor.grad = np.array([3.0, 4.0])
    assert clip_grad_norm_(tensor, 10.0) == 5.0
    np.testing.assert_array_equal(tensor.grad, [3.0, 4.0])  # under the limit: untouched


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_clip_grad_norm_nonfinite(bad: float) -> None:
    ours, theirs = make_pair(seed=1)
    ours[0].grad[1, 2] = bad
    theirs[0].grad[1, 2] = bad
    with pytest.raises(ValueError, match=r"clip_grad_norm_: the total norm of order 2.0 of the "
                                         r"gradients is non-finite"):
        clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)
    with pytest.raises(RuntimeError, match="non-finite"):
        torch.nn.utils.clip_grad_norm_(theirs, 1.0, error_if_nonfinite=True)
    # Without the check both scale by the non-finite norm (zeros, infs and NaNs alike).
    total = clip_grad_norm_(ours, 1.0)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 1.0)
    np.testing.assert_equal(total, expected.item())
    for mine, their in zip(ours, theirs, strict=True):
        if their.grad is not None:
            np.testing.assert_array_equal(mine.grad, their.grad.numpy())


def test_clip_grad_value_matches_torch() -> None:
    ours, theirs = make_pair(seed=2, scale=3.0)
    clip_grad_value_(ours, 1.5)
    torch.nn.utils.clip_grad_value_(theirs, 1.5)
    assert_grads_close(ours, theirs, rtol=0)
    assert max(np.abs(t.grad).max() for t in ours if t.grad is not None) == 1.5


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda p: clip_grad_norm_(p, -1.0), ValueError,
     r"clip_grad_norm_: max_norm must be >= 0, got -1.0"),
    (lambda p: clip_grad_norm_(p, 1.0, norm_type="two"), ValueError,
     r"clip_grad_norm_: norm_type must be a number, 'inf' or '-inf', got 'two'"),
    (lambda p: clip_grad_norm_(p, 1.0, norm_type=None), TypeError,
     r"clip_grad_norm_: norm_type must be a real number, got NoneType"),
    (lambda p: clip_grad_norm_([np.zeros(2)], 1.0), TypeError,
     r"clip_grad_norm_: parameters\[0\] must be a cnnlab Tensor, got ndarray"),
    (lambda p: clip_grad_value_(p, -0.5), ValueError,
     r"clip_grad_value_: clip_value must be >= 0, got -0.5"),
])
def test_bad_arguments(call, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        call([Tensor(np.zeros(2))])
