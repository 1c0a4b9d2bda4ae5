"""unfold (im2col) and fold (col2im) against torch.nn.functional, and as each other's adjoint.

torch supports 2-D only; the N-D path is checked through 2-D torch calls with unit axes,
through the adjoint identity <unfold(x), c> = <x, fold(c)>, and through
fold(unfold(x)) = x * (number of windows covering each position).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

from _check import check_array_and_tensor as check_op
from _check import numeric_grad_check
from cnnlab import functional as F


def _close(ours: np.ndarray, expected: np.ndarray, tol: float = 1e-10) -> None:
    np.testing.assert_allclose(ours, expected, rtol=tol, atol=tol, equal_nan=True)


@st.composite
def window_case(draw: st.DrawFn, dims: int = 2) -> dict:
    """Kernel, dilation, padding, stride and a spatial size where at least one block fits."""
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    spatial = tuple(
        max(1, d * (k - 1) + 1 - 2 * p) + draw(st.integers(0, 4 if dims < 3 else 2))
        for k, d, p in zip(kernel, dilation, padding, strict=True)
    )
    return {"kernel": kernel, "dilation": dilation, "padding": padding, "stride": stride,
            "spatial": spatial, "batched": draw(st.booleans()),
            "channels": draw(st.integers(1, 3)), "seed": draw(st.integers(0, 2**31))}


def _options(case: dict) -> dict:
    return {k: case[k] for k in ("dilation", "padding", "stride")}


def _blocks(case: dict) -> tuple[int, ...]:
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, d, p, s in zip(case["spatial"], case["kernel"], case["dilation"],
                                 case["padding"], case["stride"], strict=True)
    )


@given(window_case())
def test_unfold_matches_torch(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    shape = ((2,) if case["batched"] else ()) + (case["channels"], *case["spatial"])
    x = rng.standard_normal(shape)
    opts = _options(case)
    check_op(lambda v: F.unfold(v, case["kernel"], **opts),
             lambda v: TF.unfold(v, case["kernel"], **opts), x, rng)


@given(window_case())
def test_fold_matches_torch(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    rows = case["channels"] * int(np.prod(case["kernel"]))
    shape = ((2,) if case["batched"] else ()) + (rows, int(np.prod(_blocks(case))))
    cols = rng.standard_normal(shape)
    opts = _options(case)
    check_op(lambda v: F.fold(v, case["spatial"], case["kernel"], **opts),
             lambda v: TF.fold(v, case["spatial"], case["kernel"], **opts), cols, rng)


def test_int_arguments_mean_two_dimensions_as_in_torch() -> None:
    x = np.random.default_rng(0).standard_normal((1, 2, 5, 6))
    _close(F.unfold(x, 3, padding=1, stride=2),
           TF.unfold(torch.from_numpy(x), 3, padding=1, stride=2).numpy())
    cols = F.unfold(x[..., :5], 2)
    _close(F.fold(cols, 5, 2), TF.fold(torch.from_numpy(cols), 5, 2).numpy())


@given(window_case(dims=1))
def test_unfold_1d_matches_torch_with_a_unit_axis(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((2, case["channels"], *case["spatial"]))
    (k,), (d,), (p,), (s,) = case["kernel"], case["dilation"], case["padding"], case["stride"]
    expected = TF.unfold(torch.from_numpy(x)[:, :, None], (1, k), (1, d), (0, p), (1, s))
    _close(F.unfold(x, (k,), (d,), (p,), (s,)), expected.numpy())


@given(st.sampled_from([1, 2, 3]).flatmap(window_case))
def test_fold_is_the_adjoint_of_unfold_in_nd(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((2, case["channels"], *case["spatial"]))
    opts = _options(case)
    cols = F.unfold(x, case["kernel"], **opts)
    c = rng.standard_normal(cols.shape)
    folded = F.fold(c, case["spatial"], case["kernel"], **opts)
    np.testing.assert_allclose(np.sum(cols * c), np.sum(x * folded), rtol=1e-10)


def _window_count(case: dict) -> np.ndarray:
    """How many windows read each input position: a product of per-axis counts."""
    count = np.ones(())
    for n, k, d, p, s, o in zip(case["spatial"], case["kernel"], case["dilation"],
                                case["padding"], case["stride"], _blocks(case), strict=True):
        axis = np.zeros(n)
        for block in range(o):
            for tap in range(k):
                position = block * s + tap * d - p
                if 0 <= position < n:
                    axis[position] += 1
        count = np.multiply.outer(count, axis)
    return count


@given(st.sampled_from([1, 2, 3]).flatmap(window_case))
def test_fold_of_unfold_is_x_times_the_window_count(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((2, case["channels"], *case["spatial"]))
    opts = _options(case)
    round_trip = F.fold(F.unfold(x, case["kernel"], **opts), case["spatial"],
                         case["kernel"], **opts)
    _close(round_trip, x * _window_count(case))


def test_unfold_layout_is_channel_major_then_kernel_row_major() -> None:
    x = np.arange(2 * 3 * 3, dtype=np.float64).reshape(1, 2, 3, 3)
    cols = F.unfold(x, 2)
    # row c*4 + (i*2 + j) holds channel c at kernel offset (i, j); column = block index.
    assert cols[0, 0].tolist() == [0, 1, 3, 4]
    assert cols[0, 3].tolist() == [4, 5, 7, 8]
    assert cols[0, 4].tolist() == [9, 10, 12, 13]


def test_unfold_and_fold_finite_differences() -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 2, 4, 5))
    numeric_grad_check(lambda v: F.unfold(v, (2, 3), dilation=(1, 2), padding=1, stride=2),
                       x, rng)
    cols = rng.standard_normal((1, 2 * 4, 10))
    numeric_grad_check(lambda v: F.fold(v, (4, 5), 2, padding=(1, 0), stride=(1, 2)),
                       cols, rng)


def test_float32_is_preserved() -> None:
    x = np.ones((2, 4, 4), dtype=np.float32)
    cols = F.unfold(x, 2)
    assert cols.dtype == np.float32 and cols.shape == (8, 9)
    assert F.fold(cols, 4, 2).dtype == np.float32


@pytest.mark.parametrize(("call", "match"), [
    (lambda: F.unfold(np.zeros((1, 1, 2, 2)), 3), r"unfold: no sliding block fits"),
    (lambda: F.unfold(np.zeros((2, 2)), 2), r"unfold: input must be 3-D .* or 4-D"),
    (lambda: F.unfold(np.zeros((1, 1, 4, 4)), 2, stride=0), r"unfold: stride must be >= 1"),
    (lambda: F.unfold(np.zeros((1, 1, 4, 4)), 2, padding=-1),
     r"unfold: padding must be >= 0"),
    (lambda: F.fold(np.zeros((1, 5, 9)), 4, 2),
     r"fold: input.shape\[-2\] \(5\) must be divisible by prod\(kernel_size\) \(4\)"),
    (lambda: F.fold(np.zeros((1, 4, 8)), 4, 2),
     r"fold: input.shape\[-1\] \(8\) must equal the number of sliding blocks 9"),
    (lambda: F.fold(np.zeros((1, 4, 9)), 1, 2), r"fold: no sliding block fits"),
    (lambda: F.fold(np.zeros((4,)), 4, 2), r"fold: input must be 2-D"),
    (lambda: F.fold(np.zeros((1, 4, 9)), (4, 4, 4), (2, 2)),
     r"fold: kernel_size must be an int or a tuple of 3 ints"),
])
def test_errors(call: Callable, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call()
