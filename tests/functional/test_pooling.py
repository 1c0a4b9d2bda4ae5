"""cnnlab.functional's pooling argument rules that PyTorch defines: ``stride=None`` and an
empty ``stride=()`` both mean "the kernel size"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab import functional as F

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("stride", [None, (), []])
@pytest.mark.parametrize(("ours", "theirs", "extra"), [
    (F.max_pool1d, torch.nn.functional.max_pool1d, {}),
    (F.max_pool2d, torch.nn.functional.max_pool2d, {}),
    (F.max_pool3d, torch.nn.functional.max_pool3d, {}),
    (F.avg_pool1d, torch.nn.functional.avg_pool1d, {}),
    (F.avg_pool2d, torch.nn.functional.avg_pool2d, {}),
    (F.avg_pool3d, torch.nn.functional.avg_pool3d, {}),
])
def test_an_empty_or_missing_stride_is_the_kernel_size(ours, theirs, extra, stride):
    dims = int(ours.__name__[-2])
    x = RNG.standard_normal((2, 3, *(7,) * dims))
    expected = theirs(torch.tensor(x), 2, stride, **extra).numpy()
    out = ours(x, 2, stride, **extra)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    assert out.shape == ours(x, 2, 2).shape == (2, 3, *(3,) * dims)


@pytest.mark.parametrize("stride", [None, ()])
def test_lp_pool_and_max_unpool_take_the_default_stride_too(stride):
    x = RNG.standard_normal((1, 2, 6, 6))
    expected = torch.nn.functional.lp_pool2d(torch.tensor(x), 2.0, 2, stride).numpy()
    np.testing.assert_allclose(F.lp_pool2d(x, 2.0, 2, stride), expected, rtol=1e-12)
    pooled, indices = F.max_pool2d(x, 2, return_indices=True)
    # torch's max_unpool takes None only; cnnlab reads () as its pooling does
    unpooled = torch.nn.functional.max_unpool2d(torch.tensor(pooled), torch.tensor(indices),
                                                2, None).numpy()
    np.testing.assert_array_equal(F.max_unpool2d(pooled, indices, 2, stride), unpooled)


def test_a_stride_of_the_wrong_length_is_still_refused():
    with pytest.raises(ValueError, match=r"max_pool2d: stride must be an int or a tuple of "
                                         r"2 ints, got \(1, 2, 3\)"):
        F.max_pool2d(np.zeros((1, 1, 4, 4)), 2, (1, 2, 3))


@pytest.mark.parametrize(("call", "name"), [
    (lambda x: F.max_pool2d(x, 2, ceil_mode="False"), "ceil_mode"),  # was a 3x3 output
    (lambda x: F.avg_pool2d(x, 2, padding=1, count_include_pad="no"), "count_include_pad"),
    (lambda x: F.max_pool2d(x, 2, return_indices=1), "return_indices"),
    (lambda x: F.lp_pool2d(x, 2.0, 2, ceil_mode="yes"), "ceil_mode"),
    (lambda x: F.adaptive_max_pool2d(x, 2, return_indices="True"), "return_indices"),
    (lambda x: F.dropout(x, 0.5, training="False"), "training"),
    (lambda x: F.batch_norm(x, np.zeros(3), np.ones(3), training="no"), "training"),
])
def test_boolean_flags_accept_bools_only(call, name):
    x = RNG.standard_normal((2, 3, 5, 5))
    with pytest.raises(TypeError, match=rf": {name} must be a bool, got str|: {name} must be a "
                                        rf"bool, got int"):
        call(x)


def test_numpy_bools_are_bools():
    x = RNG.standard_normal((1, 1, 5, 5))
    assert F.max_pool2d(x, 2, ceil_mode=np.bool_(True)).shape == (1, 1, 3, 3)
    assert F.max_pool2d(x, 2, ceil_mode=False).shape == (1, 1, 2, 2)
