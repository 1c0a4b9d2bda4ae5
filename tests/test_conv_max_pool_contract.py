"""Contract tests for ``cnnlab.functional.conv_max_pool`` and Sequential's conv+pool fusion.

Written from the public contract only: ``conv_max_pool(x, w, b, padding, groups, pool_size)``
is ``max_pool{d}d(conv{d}d(x, w, b, stride=1, padding, dilation=1, groups), pool_size,
pool_size)`` (floor mode, no pool padding), with PyTorch's values, tie and NaN routing and
gradients. torch (float64) is the oracle throughout; cnnlab's own two ops are a second one
where non-finite values are involved.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

from _check import assert_close, draw_padding, finite_difference_grad
from cnnlab import Tensor, nn
from cnnlab import functional as F
from cnnlab.autograd import grad as autograd_grad
from cnnlab.autograd import no_grad

TOL = {np.dtype(np.float64): 1e-10, np.dtype(np.float32): 1e-5}
TORCH_CONV = {1: TF.conv1d, 2: TF.conv2d, 3: TF.conv3d}
TORCH_POOL = {1: TF.max_pool1d, 2: TF.max_pool2d, 3: TF.max_pool3d}
OUR_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}
CONV_CLS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
POOL_CLS = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
TORCH_CONV_CLS = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
TORCH_POOL_CLS = {1: torch.nn.MaxPool1d, 2: torch.nn.MaxPool2d, 3: torch.nn.MaxPool3d}


def _tol(dtype: Any) -> float:
    return TOL[np.dtype(dtype)]


def _close(ours: Any, expected: Any, dtype: Any, what: str) -> None:
    tol = _tol(dtype)
    assert_close(np.asarray(ours), np.asarray(expected), tol, tol, what)


def _same_nonfinite(ours: np.ndarray, expected: np.ndarray, what: str) -> None:
    """NaN exactly where expected has NaN, the same infinities, finite values close."""
    ours, expected = np.asarray(ours), np.asarray(expected)
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape} != {expected.shape}"
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected), err_msg=f"{what}: NaN")
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(expected),
                                  err_msg=f"{what}: +inf")
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(expected),
                                  err_msg=f"{what}: -inf")
    finite = np.isfinite(expected)
    if finite.any():
        scale = max(float(np.abs(expected[finite]).max()), 1.0)
        np.testing.assert_allclose(ours[finite], expected[finite], rtol=1e-9,
                                   atol=1e-9 * scale, err_msg=what)


# ---------------------------------------------------------------------------------------
# Oracles.


def _pairs(padding: Any, kernel: tuple[int, ...]) -> list[tuple[int, int]]:
    """Per-side padding of each spatial dim (torch's 'same': the extra one on the high side)."""
    d = len(kernel)
    if isinstance(padding, str):
        if padding == "valid":
            return [(0, 0)] * d
        if padding == "same":
            return [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel]
        if padding == "full":
            return [(k - 1, k - 1) for k in kernel]
        if padding == "causal":
            return [(k - 1, 0) for k in kernel]
        raise AssertionError(padding)
    if isinstance(padding, int):
        return [(padding, padding)] * d
    if all(isinstance(p, int) for p in padding):
        return [(p, p) for p in padding]
    return [(int(lo), int(hi)) for lo, hi in padding]


def torch_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, padding: Any,
               groups: int) -> torch.Tensor:
    d = w.ndim - 2
    if padding in ("same", "valid"):
        return TORCH_CONV[d](x, w, b, stride=1, padding=padding, dilation=1, groups=groups)
    flat: list[int] = []
    for lo, hi in reversed(_pairs(padding, tuple(w.shape[2:]))):
        flat += [lo, hi]
    return TORCH_CONV[d](TF.pad(x, flat), w, b, stride=1, padding=0, dilation=1,
                         groups=groups)


def torch_conv_max_pool(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                        padding: Any, groups: int, pool: Any) -> torch.Tensor:
    d = w.ndim - 2
    y = torch_conv(x, w, b, padding, groups)
    return TORCH_POOL[d](y, kernel_size=pool, stride=pool)


def two_ops(x: Any, w: Any, b: Any, padding: Any, groups: int, pool: Any) -> Any:
    """cnnlab's own unfused composition."""
    d = np.ndim(w.data if isinstance(w, Tensor) else w) - 2
    y = F.conv(x, w, b, stride=1, padding=padding, dilation=1, groups=groups)
    return OUR_POOL[d](y, pool, pool)


def _torch_leaf(a: np.ndarray | None) -> torch.Tensor | None:
    if a is None:
        return None
    return torch.tensor(np.array(a, dtype=np.float64, copy=True), requires_grad=True)


def torch_forward_backward(x, w, b, padding, groups, pool, upstream):
    """torch's output and (grad x, grad w, grad b) in float64."""
    xt, wt, bt = _torch_leaf(x), _torch_leaf(w), _torch_leaf(b)
    out = torch_conv_max_pool(xt, wt, bt, padding, groups, pool)
    out.backward(torch.from_numpy(np.asarray(upstream, dtype=np.float64)))
    grads = [None if t is None else t.grad.numpy() for t in (xt, wt, bt)]
    return out.detach().numpy(), grads


def ours_forward_backward(fn, x, w, b, upstream):
    """Run ``fn(x, w, b)`` on Tensors, push ``upstream`` back; output and (gx, gw, gb)."""
    ts = [None if a is None else Tensor(a, requires_grad=True) for a in (x, w, b)]
    out = fn(*ts)
    assert isinstance(out, Tensor)
    out.backward(upstream)
    return out.data, [None if t is None else t.grad for t in ts]


# ---------------------------------------------------------------------------------------
# Case generation.


def _layout(a: np.ndarray, kind: str) -> np.ndarray:
    """The same values in another memory layout (F-order, strided view, flipped view)."""
    if kind == "f":
        return np.asfortranarray(a)
    if kind == "strided":
        big = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), dtype=a.dtype)
        big[..., ::2] = a
        view = big[..., ::2]
        assert not view.flags.c_contiguous or a.shape[-1] <= 1
        return view
    if kind == "flipped":
        return np.flip(np.flip(a).copy())
    return a


@st.composite
def conv_pool_case(draw: st.DrawFn, dims: int | None = None) -> dict:
    d = draw(st.integers(1, 3)) if dims is None else dims
    groups = draw(st.integers(1, 2))
    cin = groups * draw(st.integers(1, 2))
    cout = groups * draw(st.integers(1, 2))
    kmax = 3 if d < 3 else 2
    kernel = tuple(draw(st.integers(1, kmax)) for _ in range(d))
    padding = draw_padding(draw, d)
    pairs = _pairs(padding, kernel)
    pool = []
    spatial = []
    for k, (lo, hi) in zip(kernel, pairs):
        n_min = max(1, k - lo - hi)
        n = draw(st.integers(n_min, n_min + (5 if d < 3 else 3)))
        conv_out = n + lo + hi - k + 1
        spatial.append(n)
        pool.append(draw(st.integers(1, min(3 if d < 3 else 2, conv_out))))
    if len(set(pool)) == 1 and draw(st.booleans()):
        pool_size: Any = pool[0]
    else:
        pool_size = draw(st.sampled_from([tuple, list]))(pool)
    batched = draw(st.booleans())
    shape = ((draw(st.integers(1, 2)),) if batched else ()) + (cin, *spatial)
    return {
        "d": d, "groups": groups, "cin": cin, "cout": cout, "kernel": kernel,
        "padding": padding, "pool_size": pool_size, "shape": shape,
        "bias": draw(st.booleans()), "layout": draw(st.sampled_from(["c", "f", "strided",
                                                                     "flipped"])),
        "seed": draw(st.integers(0, 2**31)),
    }


def _arrays(case: dict, dtype: Any, values: str = "normal"):
    rng = np.random.default_rng(case["seed"])
    wshape = (case["cout"], case["cin"] // case["groups"], *case["kernel"])
    if values == "integers":
        x = rng.integers(-1, 3, size=case["shape"]).astype(dtype)
        w = rng.integers(-1, 2, size=wshape).astype(dtype)
        b = rng.integers(-1, 2, size=case["cout"]).astype(dtype) if case["bias"] else None
    else:
        x = rng.standard_normal(case["shape"]).astype(dtype)
        w = rng.standard_normal(wshape).astype(dtype)
        b = rng.standard_normal(case["cout"]).astype(dtype) if case["bias"] else None
    return rng, _layout(x, case["layout"]), _layout(w, case["layout"]), b


def _fn(case: dict):
    def fn(x, w, b):
        return F.conv_max_pool(x, w, b, padding=case["padding"], groups=case["groups"],
                                pool_size=case["pool_size"])
    return fn


def _expected_shape(case: dict) -> tuple[int, ...]:
    pool = case["pool_size"]
    pool = [pool] * case["d"] if isinstance(pool, int) else list(pool)
    pairs = _pairs(case["padding"], case["kernel"])
    spatial = case["shape"][-case["d"]:]
    out = tuple((n + lo + hi - k + 1) // p
                for n, k, (lo, hi), p in zip(spatial, case["kernel"], pairs, pool))
    lead = case["shape"][:-case["d"] - 1]
    return (*lead, case["cout"], *out)


# ---------------------------------------------------------------------------------------
# The functional op against torch.


@settings(max_examples=40)
@given(conv_pool_case(), st.sampled_from([np.float64, np.float32]))
def test_matches_torch_values_and_gradients(case: dict, dtype: Any) -> None:
    """Forward value/shape/dtype and grads of x, w, b vs torch's conv + max_pool; the NumPy
    path gives the same array; inputs are not modified; 1/2/3-D, groups, every padding
    spelling, int/tuple/list pool_size, unbatched inputs, non-contiguous layouts."""
    rng, x, w, b = _arrays(case, dtype)
    originals = [None if a is None else a.copy() for a in (x, w, b)]
    fn = _fn(case)

    upstream = rng.standard_normal(_expected_shape(case))
    expected, expected_grads = torch_forward_backward(x, w, b, case["padding"],
                                                      case["groups"], case["pool_size"],
                                                      upstream)
    assert expected.shape == _expected_shape(case)

    out, grads = ours_forward_backward(fn, x, w, b, upstream.astype(dtype))
    assert out.dtype == np.dtype(dtype), f"output dtype {out.dtype}"
    _close(out, expected, dtype, "forward")
    for name, mine, theirs, inp in zip("xwb", grads, expected_grads, (x, w, b)):
        if inp is None:
            continue
        assert mine is not None, f"no gradient for {name}"
        assert mine.shape == inp.shape and mine.dtype == np.dtype(dtype), name
        _close(mine, theirs, dtype, f"grad {name}")

    array_out = fn(x, w, b)
    assert isinstance(array_out, np.ndarray) and array_out.dtype == np.dtype(dtype)
    _close(array_out, expected, dtype, "forward (NumPy path)")
    for name, before, after in zip("xwb", originals, (x, w, b)):
        if before is not None:
            np.testing.assert_array_equal(after, before, err_msg=f"{name} was modified")


@settings(max_examples=30)
@given(conv_pool_case(), st.sampled_from([np.float64, np.float32]))
def test_ties_route_like_torch(case: dict, dtype: Any) -> None:
    """Integer-valued x, w, b: many exact ties in each pooling window. Values and every
    gradient equal torch's (the first maximum in row-major window order wins) and cnnlab's
    unfused two ops'."""
    rng, x, w, b = _arrays(case, dtype, values="integers")
    upstream = rng.integers(-3, 4, size=_expected_shape(case)).astype(np.float64)
    expected, expected_grads = torch_forward_backward(x, w, b, case["padding"],
                                                      case["groups"], case["pool_size"],
                                                      upstream)
    out, grads = ours_forward_backward(_fn(case), x, w, b, upstream.astype(dtype))

    def unfused(x_, w_, b_):
        return two_ops(x_, w_, b_, case["padding"], case["groups"], case["pool_size"])

    out2, grads2 = ours_forward_backward(unfused, x, w, b, upstream.astype(dtype))
    # Everything is an exact small integer: no rounding anywhere, so equality.
    np.testing.assert_array_equal(out, expected, err_msg="forward vs torch")
    np.testing.assert_array_equal(out, out2, err_msg="forward vs two ops")
    for name, mine, theirs, other in zip("xwb", grads, expected_grads, grads2):
        if theirs is None:
            continue
        np.testing.assert_array_equal(mine, theirs, err_msg=f"grad {name} vs torch")
        np.testing.assert_array_equal(mine, other, err_msg=f"grad {name} vs two ops")


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("fill", [0.0, 1.0])
def test_all_equal_inputs_send_gradient_to_first_window_element(d: int, fill: float) -> None:
    """Constant input and weights: every window is one big tie; torch's routing (first
    element of each window) must be reproduced exactly."""
    x = np.full((2, 2) + (5,) * d, fill)
    w = np.ones((3, 2) + (2,) * d)
    b = np.zeros(3)
    upstream = np.arange(np.prod((2, 3) + (2,) * d), dtype=np.float64).reshape(
        (2, 3) + (2,) * d) + 1.0
    expected, expected_grads = torch_forward_backward(x, w, b, 0, 1, 2, upstream)
    out, grads = ours_forward_backward(lambda *a: F.conv_max_pool(*a, pool_size=2),
                                       x, w, b, upstream)
    np.testing.assert_array_equal(out, expected)
    for name, mine, theirs in zip("xwb", grads, expected_grads):
        np.testing.assert_array_equal(mine, theirs, err_msg=f"grad {name}")


@settings(max_examples=35)
@given(conv_pool_case(), st.sampled_from(["x", "w", "both", "b", "upstream"]),
       st.sampled_from([np.nan, np.inf, -np.inf, "mixed"]))
def test_non_finite_values_match_torch_and_two_ops(case: dict, where: str, value: Any
                                                   ) -> None:
    """NaN/inf in x, w, the bias or the upstream gradient: forward and gradients have NaN
    and inf exactly where torch's (and cnnlab's two separate ops') have them. (A non-finite
    bias makes whole channels ties or NaN: routing must follow torch's scan of conv + bias.)"""
    dtype = np.float64
    rng, x, w, b = _arrays(case, dtype)
    x, w = np.array(x), np.array(w)

    def poison(a: np.ndarray) -> np.ndarray:
        mask = rng.random(a.shape) < 0.25
        if value == "mixed":
            choices = np.array([np.nan, np.inf, -np.inf])
            a[mask] = choices[rng.integers(0, 3, size=int(mask.sum()))]
        else:
            a[mask] = value
        return a

    upstream = rng.standard_normal(_expected_shape(case))
    if where in ("x", "both"):
        x = poison(x)
    if where in ("w", "both"):
        w = poison(w)
    if where == "b" and b is not None:
        b = poison(b.copy())
    if where == "upstream":
        upstream = poison(upstream)
    expected, expected_grads = torch_forward_backward(x, w, b, case["padding"],
                                                      case["groups"], case["pool_size"],
                                                      upstream)
    out, grads = ours_forward_backward(_fn(case), x, w, b, upstream)

    def unfused(x_, w_, b_):
        return two_ops(x_, w_, b_, case["padding"], case["groups"], case["pool_size"])

    out2, grads2 = ours_forward_backward(unfused, x, w, b, upstream)
    _same_nonfinite(out, expected, "forward vs torch")
    _same_nonfinite(out, out2, "forward vs two ops")
    _same_nonfinite(F.conv_max_pool(x, w, b, padding=case["padding"],
                                     groups=case["groups"], pool_size=case["pool_size"]),
                    expected, "forward (NumPy path) vs torch")
    for name, mine, theirs, other in zip("xwb", grads, expected_grads, grads2):
        if theirs is None:
            continue
        _same_nonfinite(mine, theirs, f"grad {name} vs torch")
        _same_nonfinite(mine, other, f"grad {name} vs two ops")


def test_nan_in_a_window_routes_like_torch() -> None:
    """Several NaN conv outputs in one window: value NaN; the gradient goes where torch's
    scan sends it (x's gradient is finite since the weights are)."""
    x = np.array([[[1.0, np.nan, 2.0, np.nan, 0.0, 3.0, np.nan, 1.0]]])
    w = np.array([[[1.0]]])
    upstream = np.array([[[1.0, 2.0]]])
    expected, expected_grads = torch_forward_backward(x, w, None, 0, 1, 4, upstream)
    out, grads = ours_forward_backward(lambda a, b_, c: F.conv_max_pool(a, b_, c,
                                                                         pool_size=4),
                                       x, w, None, upstream)
    _same_nonfinite(out, expected, "forward")
    _same_nonfinite(grads[0], expected_grads[0], "grad x")
    _same_nonfinite(grads[1], expected_grads[1], "grad w")


@pytest.mark.parametrize("d", [1, 2, 3])
def test_floor_mode_drops_uncovered_rows(d: int) -> None:
    """An odd conv output: the last row/column/slice is not pooled. Values there do not
    matter and input elements feeding only them get exactly zero gradient; NaN there leaves
    the forward and x's gradient finite, as in torch."""
    rng = np.random.default_rng(d)
    k, n = 2, 6  # conv output 5 per dim, pooled 2, the 5th row dropped
    x = rng.standard_normal((2, 2) + (n,) * d)
    w = rng.standard_normal((3, 2) + (k,) * d)
    b = rng.standard_normal(3)
    upstream = rng.standard_normal((2, 3) + (2,) * d)
    out, grads = ours_forward_backward(lambda *a: F.conv_max_pool(*a, pool_size=2),
                                       x, w, b, upstream)
    assert out.shape == (2, 3) + (2,) * d
    expected, expected_grads = torch_forward_backward(x, w, b, 0, 1, 2, upstream)
    _close(out, expected, np.float64, "forward")
    for name, mine, theirs in zip("xwb", grads, expected_grads):
        _close(mine, theirs, np.float64, f"grad {name}")
    # The last input element along any axis feeds only the dropped conv output.
    for axis in range(d):
        index = [slice(None)] * (2 + d)
        index[2 + axis] = -1
        assert np.all(grads[0][tuple(index)] == 0), f"gradient in dropped rows (axis {axis})"
        changed = x.copy()
        changed[tuple(index)] = 1e6 * rng.standard_normal(changed[tuple(index)].shape)
        np.testing.assert_array_equal(F.conv_max_pool(changed, w, b, pool_size=2),
                                      F.conv_max_pool(x, w, b, pool_size=2),
                                      err_msg="dropped rows changed the output")
        poisoned = x.copy()
        poisoned[tuple(index)] = np.nan
        exp, exp_grads = torch_forward_backward(poisoned, w, b, 0, 1, 2, upstream)
        got, got_grads = ours_forward_backward(lambda *a: F.conv_max_pool(*a, pool_size=2),
                                               poisoned, w, b, upstream)
        assert np.isfinite(got).all() and np.isfinite(got_grads[0]).all()
        _same_nonfinite(got, exp, "forward, NaN in dropped rows")
        for name, mine, theirs in zip("xwb", got_grads, exp_grads):
            _same_nonfinite(mine, theirs, f"grad {name}, NaN in dropped rows")


@pytest.mark.parametrize("d, shape, cin, cout, k, padding, groups, pool", [
    (1, (4, 3, 61), 3, 8, 5, "same", 1, 3),
    (2, (4, 3, 28, 28), 3, 6, 5, 2, 1, 2),
    (2, (2, 4, 17, 15), 4, 6, 3, ((1, 0), (2, 1)), 2, (2, 3)),
    (3, (2, 2, 9, 10, 11), 2, 4, 3, 1, 2, 2),
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_medium_sizes_match_torch(d, shape, cin, cout, k, padding, groups, pool, dtype
                                  ) -> None:
    """LeNet-sized and larger cases (other code paths than the tiny ones)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal(shape).astype(dtype)
    w = (rng.standard_normal((cout, cin // groups) + (k,) * d) / k).astype(dtype)
    b = rng.standard_normal(cout).astype(dtype)
    fn = lambda *a: F.conv_max_pool(*a, padding=padding, groups=groups,  # noqa: E731
                                     pool_size=pool)
    expected_shape = torch_conv_max_pool(*(torch.from_numpy(np.float64(a)) for a in (x, w, b)),
                                         padding, groups, pool).shape
    upstream = rng.standard_normal(tuple(expected_shape))
    expected, expected_grads = torch_forward_backward(x, w, b, padding, groups, pool, upstream)
    out, grads = ours_forward_backward(fn, x, w, b, upstream.astype(dtype))
    assert out.dtype == np.dtype(dtype)
    _close(out, expected, dtype, "forward")
    for name, mine, theirs in zip("xwb", grads, expected_grads):
        assert mine.dtype == np.dtype(dtype)
        _close(mine, theirs, dtype, f"grad {name}")


def test_autograd_grad_and_backward_agree_and_accumulate() -> None:
    """``autograd.grad(out, [x, w, b], g)`` equals ``.backward(g)`` and torch; array x with a
    Tensor weight differentiates the weight only; using the op twice accumulates; no_grad
    records nothing."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 7, 6))
    w = rng.standard_normal((4, 1, 2, 3))
    b = rng.standard_normal(4)
    kw = {"padding": ((1, 0), (0, 1)), "groups": 2, "pool_size": (2, 2)}
    xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, b))
    out = F.conv_max_pool(xt, wt, bt, **kw)
    g = rng.standard_normal(out.shape)
    gx, gw, gb = autograd_grad(out, [xt, wt, bt], g)
    assert xt.grad is None and wt.grad is None, "grad() must not write .grad"
    _, expected = torch_forward_backward(x, w, b, kw["padding"], 2, (2, 2), g)
    for name, mine, theirs in zip("xwb", (gx, gw, gb), expected):
        _close(mine, theirs, np.float64, f"autograd.grad {name}")
    out.backward(g)
    for name, t, theirs in zip("xwb", (xt, wt, bt), expected):
        _close(t.grad, theirs, np.float64, f"backward {name}")

    # Array input, Tensor parameters: a Tensor out; gradient for w and b.
    w2, b2 = Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
    out2 = F.conv_max_pool(x, w2, b2, **kw)
    assert isinstance(out2, Tensor)
    gw2, gb2 = autograd_grad(out2, [w2, b2], g)
    _close(gw2, expected[1], np.float64, "grad w (array x)")
    _close(gb2, expected[2], np.float64, "grad b (array x)")

    # Twice in one graph: gradients double.
    w3, b3 = Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
    x3 = Tensor(x, requires_grad=True)
    total = F.conv_max_pool(x3, w3, b3, **kw) + F.conv_max_pool(x3, w3, b3, **kw)
    total.backward(g)
    for name, t, theirs in zip("xwb", (x3, w3, b3), expected):
        _close(t.grad, 2 * theirs, np.float64, f"accumulated {name}")

    with no_grad():
        quiet = F.conv_max_pool(xt, wt, bt, **kw)
    assert isinstance(quiet, Tensor) and not quiet.requires_grad
    _close(quiet.data, out.data, np.float64, "no_grad forward")


@pytest.mark.parametrize("d, padding", [(1, 1), (1, "same"), (2, ((1, 0), (0, 1))),
                                        (2, "valid"), (3, 1)])
def test_finite_differences(d: int, padding: Any) -> None:
    """Central differences in float64 on a tiny case, independent of torch. Seeds are
    chosen so that no pooling window has a near-tie (where max is not differentiable)."""
    groups = 2 if d == 2 else 1
    for seed in range(100):
        rng = np.random.default_rng(seed)
        n = 4 if d < 3 else 3
        x = rng.standard_normal((1, 2) + (n + (1 if d == 1 else 0),) * d)
        w = rng.standard_normal((2, 2 // groups) + (2,) * d)
        b = rng.standard_normal(2)
        y = np.asarray(F.conv(x, w, b, padding=padding, groups=groups))
        pooled = OUR_POOL[d](y, 2)
        # gap between the largest and second-largest value of each window
        crop = tuple(slice(0, (s // 2) * 2) for s in y.shape[2:])
        yc = y[(slice(None), slice(None), *crop)]
        shape = yc.shape[:2]
        for s in yc.shape[2:]:
            shape += (s // 2, 2)
        axes = tuple(range(3, 2 + 2 * d, 2))
        windows = np.moveaxis(yc.reshape(shape), axes, range(-d, 0)).reshape(
            (*pooled.shape, -1))
        top2 = np.sort(windows, axis=-1)[..., -2:]
        if np.min(top2[..., 1] - top2[..., 0]) > 1e-3:
            break
    else:
        pytest.fail("no seed without near-ties")
    g = rng.standard_normal(pooled.shape)

    def loss(x_, w_, b_):
        return np.sum(F.conv_max_pool(x_, w_, b_, padding=padding, groups=groups) * g)

    numeric = finite_difference_grad(loss, [x, w, b])
    _, grads = ours_forward_backward(
        lambda *a: F.conv_max_pool(*a, padding=padding, groups=groups), x, w, b, g)
    for name, mine, theirs in zip("xwb", grads, numeric):
        np.testing.assert_allclose(mine, theirs, rtol=1e-7, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("xdtype, wdtype", [(np.float32, np.float64), (np.float64, np.float32),
                                            (np.int64, np.float64), (np.float64, np.int64)])
def test_mixed_or_integer_dtypes_behave_like_two_ops(xdtype, wdtype) -> None:
    """Whatever cnnlab's conv + max_pool do with mixed dtypes (promote or refuse),
    conv_max_pool does the same."""
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((1, 2, 6, 6)) * 3).astype(xdtype)
    w = (rng.standard_normal((3, 2, 3, 3)) * 3).astype(wdtype)
    try:
        expected = two_ops(x, w, None, 0, 1, 2)
    except (TypeError, ValueError) as error:
        with pytest.raises(type(error), match="conv_max_pool"):
            F.conv_max_pool(x, w)
        return
    out = F.conv_max_pool(x, w)
    assert out.dtype == expected.dtype
    _close(out, expected, np.float32 if np.float32 in (xdtype, wdtype) else np.float64,
           "mixed dtypes")


# ---------------------------------------------------------------------------------------
# Bad input.


def _good() -> dict:
    return {"input": np.zeros((2, 4, 6, 6)), "weight": np.zeros((6, 2, 3, 3)),
            "bias": np.zeros(6), "padding": 0, "groups": 2, "pool_size": 2}


BAD = {
    "wrong channel count": ({"input": np.zeros((2, 3, 6, 6))}, ValueError),
    "groups do not divide out channels": ({"weight": np.zeros((5, 2, 3, 3))}, ValueError),
    "groups do not divide in channels": (
        {"input": np.zeros((2, 3, 6, 6)), "weight": np.zeros((6, 1, 3, 3)), "groups": 2},
        ValueError),
    "groups zero": ({"groups": 0}, ValueError),
    "groups negative": ({"groups": -2}, ValueError),
    "bias wrong length": ({"bias": np.zeros(5)}, ValueError),
    "bias 2-D": ({"bias": np.zeros((6, 1))}, ValueError),
    "pool larger than conv output": ({"pool_size": 5}, ValueError),
    "pool larger on one axis": ({"pool_size": (2, 5)}, ValueError),
    "pool zero": ({"pool_size": 0}, ValueError),
    "pool negative": ({"pool_size": -1}, ValueError),
    "pool tuple wrong length": ({"pool_size": (2, 2, 2)}, ValueError),
    "kernel larger than input": ({"input": np.zeros((2, 4, 2, 2))}, ValueError),
    "x rank too high": ({"input": np.zeros((1, 2, 4, 6, 6))}, ValueError),
    "x rank too low": ({"input": np.zeros((4, 6))}, ValueError),
    "weight 2-D": ({"weight": np.zeros((6, 2))}, ValueError),
    "negative padding": ({"padding": -1}, ValueError),
    "unknown padding string": ({"padding": "sideways"}, ValueError),
    "padding tuple wrong length": ({"padding": (1, 1, 1)}, ValueError),
    "pool float": ({"pool_size": 2.0}, (TypeError, ValueError)),
    "pool string": ({"pool_size": "2"}, (TypeError, ValueError)),
    "groups float": ({"groups": 2.0}, (TypeError, ValueError)),
    "pool bool": ({"pool_size": True}, (TypeError, ValueError)),
    "groups bool": ({"groups": True, "input": np.zeros((2, 2, 6, 6)),
                     "weight": np.zeros((6, 2, 3, 3))}, (TypeError, ValueError)),
    "x not numeric": ({"input": "abc"}, (TypeError, ValueError)),
    "weight None": ({"weight": None}, (TypeError, ValueError)),
    "x None": ({"input": None}, (TypeError, ValueError)),
}


@pytest.mark.parametrize("name", list(BAD))
def test_bad_input_raises_naming_the_function(name: str) -> None:
    change, error = BAD[name]
    kwargs = {**_good(), **change}
    with pytest.raises(error, match="conv_max_pool"):
        F.conv_max_pool(**kwargs)
    # Tensor inputs are refused the same way.
    tensors = {k: Tensor(v) if isinstance(v, np.ndarray) else v for k, v in kwargs.items()}
    with pytest.raises(error, match="conv_max_pool"):
        F.conv_max_pool(**tensors)


def test_empty_batch_gives_torch_shape() -> None:
    x = np.zeros((0, 4, 7, 6))
    w = np.ones((6, 2, 2, 2))
    out = F.conv_max_pool(x, w, None, groups=2, pool_size=(2, 3))
    expected = torch_conv_max_pool(torch.from_numpy(x), torch.from_numpy(w), None, 0, 2,
                                   (2, 3))
    assert out.shape == tuple(expected.shape)


def test_good_defaults_work() -> None:
    """The baseline of the bad-input table is valid (so each row tests one thing)."""
    out = F.conv_max_pool(**_good())
    assert out.shape == (2, 6, 2, 2)


# ---------------------------------------------------------------------------------------
# Sequential: fused, unfused and torch.


def _build(spec: list[tuple[str, dict]], dtype: Any, seed: int):
    """The same layers in cnnlab (seeded init) and torch (float64, cnnlab's state_dict)."""
    rng = np.random.default_rng(seed)
    ours, theirs = [], []
    for kind, kw in spec:
        if kind.startswith("conv"):
            d = int(kind[-1])
            ours.append(CONV_CLS[d](**kw, rng=rng, dtype=dtype))
            theirs.append(TORCH_CONV_CLS[d](**kw))
        elif kind.startswith("pool"):
            d = int(kind[-1])
            ours.append(POOL_CLS[d](**kw))
            theirs.append(TORCH_POOL_CLS[d](**kw))
        elif kind == "relu":
            ours.append(nn.ReLU())
            theirs.append(torch.nn.ReLU())
        elif kind == "avgpool2":
            ours.append(nn.AvgPool2d(**kw))
            theirs.append(torch.nn.AvgPool2d(**kw))
        else:
            raise AssertionError(kind)
    model = nn.Sequential(*ours)
    torch_model = torch.nn.Sequential(*theirs).double()
    state = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    torch_model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()})
    return model, torch_model


def _run_ours(model, x: np.ndarray, upstream: np.ndarray | None, tensor_input: bool):
    model.zero_grad()
    inp = Tensor(x.copy(), requires_grad=True) if tensor_input else x
    out = model(inp)
    if isinstance(out, tuple):
        return out, None, {}
    assert isinstance(out, Tensor)
    out.backward(upstream.astype(out.dtype))
    grads = {name: p.grad for name, p in model.named_parameters()}
    return out.data, (inp.grad if tensor_input else None), grads


def _run_torch(torch_model, x: np.ndarray, upstream: np.ndarray | None):
    xt = torch.tensor(np.asarray(x, dtype=np.float64), requires_grad=True)
    out = torch_model(xt)
    if isinstance(out, tuple):
        return tuple(o.detach().numpy() for o in out), None, {}
    out.backward(torch.from_numpy(upstream))
    grads = {name: p.grad.numpy() for name, p in torch_model.named_parameters()}
    return out.detach().numpy(), xt.grad.numpy(), grads


def _compare_models(spec, x_shape, dtype, seed, tensor_input=True, check_unfused=True):
    model, torch_model = _build(spec, dtype, seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal(x_shape).astype(dtype)
    with torch.no_grad():
        out_shape = torch_model(torch.from_numpy(x.astype(np.float64)))
    upstream = (None if isinstance(out_shape, tuple)
                else rng.standard_normal(tuple(out_shape.shape)))
    expected, expected_gx, expected_grads = _run_torch(torch_model, x, upstream)
    runs = [_run_ours(model, x, upstream, tensor_input)]
    if check_unfused:
        model.fuse_conv_pool = False
        runs.append(_run_ours(model, x, upstream, tensor_input))
        model.fuse_conv_pool = True
    for label, (out, gx, grads) in zip(["fused", "unfused"], runs):
        if isinstance(expected, tuple):
            assert isinstance(out, tuple) and len(out) == len(expected)
            _close(out[0].data, expected[0], dtype, f"{label} forward")
            np.testing.assert_array_equal(np.asarray(out[1]), expected[1],
                                          err_msg=f"{label} indices")
            continue
        assert out.dtype == np.dtype(dtype)
        _close(out, expected, dtype, f"{label} forward vs torch")
        if tensor_input:
            _close(gx, expected_gx, dtype, f"{label} input grad vs torch")
        assert set(grads) == set(expected_grads)
        for name in grads:
            assert grads[name] is not None, f"{label}: no grad for {name}"
            assert grads[name].dtype == np.dtype(dtype)
            _close(grads[name], expected_grads[name], dtype, f"{label} grad {name}")
    if len(runs) == 2 and not isinstance(expected, tuple):
        (o1, g1, p1), (o2, g2, p2) = runs
        _close(o1, o2, dtype, "fused vs unfused forward")
        if tensor_input:
            _close(g1, g2, dtype, "fused vs unfused input grad")
        for name in p1:
            _close(p1[name], p2[name], dtype, f"fused vs unfused grad {name}")
    return model


@st.composite
def sequential_case(draw: st.DrawFn) -> dict:
    d = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 2))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 3 if d < 3 else 2)) for _ in range(d))
    padding = draw(st.sampled_from([0, 1, "valid", "same", "tuple"]))
    if padding == "tuple":
        padding = tuple(draw(st.integers(0, 1)) for _ in range(d))
    pairs = _pairs(padding, k)
    pool, spatial = [], []
    for kk, (lo, hi) in zip(k, pairs):
        n = draw(st.integers(max(1, kk - lo - hi), max(1, kk - lo - hi) + (5 if d < 3 else 3)))
        spatial.append(n)
        pool.append(draw(st.integers(1, min(3 if d < 3 else 2, n + lo + hi - kk + 1))))
    if len(set(pool)) == 1 and draw(st.booleans()):
        kernel_size: Any = pool[0]
        stride: Any = draw(st.sampled_from([None, pool[0], tuple(pool)]))
    else:
        kernel_size = tuple(pool)
        stride = draw(st.sampled_from([None, tuple(pool), list(pool)]))
    pool_kw = {"kernel_size": kernel_size} if stride is None else {
        "kernel_size": kernel_size, "stride": stride}
    spec = [(f"conv{d}", {"in_channels": cin, "out_channels": cout, "kernel_size": k,
                          "padding": padding, "groups": groups,
                          "bias": draw(st.booleans())}),
            (f"pool{d}", pool_kw)]
    tail = draw(st.sampled_from(["end", "relu_conv", "two_pairs"]))
    if tail == "relu_conv":
        spec += [("relu", {}), (f"conv{d}", {"in_channels": cout, "out_channels": 2,
                                             "kernel_size": 1})]
    elif tail == "two_pairs":
        spec += [(f"conv{d}", {"in_channels": cout, "out_channels": 2, "kernel_size": 1}),
                 (f"pool{d}", {"kernel_size": 1})]
    batched = draw(st.booleans())
    shape = ((draw(st.integers(1, 2)),) if batched else ()) + (cin, *spatial)
    return {"spec": spec, "shape": shape, "dtype": draw(st.sampled_from([np.float32,
                                                                          np.float64])),
            "tensor_input": draw(st.booleans()), "seed": draw(st.integers(0, 2**20))}


@settings(max_examples=30)
@given(sequential_case())
def test_sequential_fused_unfused_and_torch_agree(case: dict) -> None:
    """Conv{d}d directly followed by MaxPool{d}d (stride None/equal, int/tuple/list): the
    default (fused) and ``fuse_conv_pool = False`` runs agree with each other and with the
    torch.nn.Sequential loaded from the state_dict, outputs and every gradient."""
    _compare_models(case["spec"], case["shape"], case["dtype"], case["seed"],
                    tensor_input=case["tensor_input"])


@pytest.mark.parametrize("d", [1, 2, 3])
def test_sequential_runs_the_pair_fused_by_default(d: int, monkeypatch) -> None:
    """By default the pooling layer's own op is not called (the pair is one op); with
    ``fuse_conv_pool = False`` it is; the class default stays True for other instances."""
    calls = []
    original = POOL_CLS[d]._functional

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(POOL_CLS[d], "_functional", staticmethod(spy))
    rng = np.random.default_rng(0)
    model = nn.Sequential(CONV_CLS[d](2, 3, 2, rng=rng, dtype=np.float64), POOL_CLS[d](2))
    x = rng.standard_normal((2, 2) + (5,) * d)
    fused = model(x)
    assert calls == []
    model.fuse_conv_pool = False
    unfused = model(x)
    assert calls == [1]
    assert nn.Sequential.fuse_conv_pool is True
    assert nn.Sequential(POOL_CLS[d](1)).fuse_conv_pool is True
    _close(fused.data, unfused.data, np.float64, "fused vs unfused")


def test_sequential_per_side_and_full_padding_match_functional_oracle() -> None:
    """Conv2d with per-side pairs / 'full' padding (no torch.nn equivalent) fused equals
    unfused equals torch's functional conv + max_pool with the same weights."""
    for padding in (((1, 0), (2, 1)), "full"):
        rng = np.random.default_rng(1)
        conv = nn.Conv2d(2, 4, (2, 3), padding=padding, groups=2, rng=rng, dtype=np.float64)
        model = nn.Sequential(conv, nn.MaxPool2d((2, 3)))
        x = rng.standard_normal((2, 2, 7, 8))
        outs = []
        for fuse in (True, False):
            model.fuse_conv_pool = fuse
            model.zero_grad()
            xt = Tensor(x, requires_grad=True)
            out = model(xt)
            g = np.linspace(-1, 1, out.data.size).reshape(out.shape)
            out.backward(g)
            outs.append((out.data, xt.grad, conv.weight.grad, conv.bias.grad))
        expected, expected_grads = torch_forward_backward(
            x, conv.weight.data, conv.bias.data, padding, 2, (2, 3), g)
        for got in outs:
            _close(got[0], expected, np.float64, f"forward {padding}")
            for name, mine, theirs in zip("xwb", got[1:], expected_grads):
                _close(mine, theirs, np.float64, f"grad {name} {padding}")


class _ScaledConv2d(nn.Conv2d):
    """A conv whose forward is not the plain convolution: must never be fused."""

    def forward(self, x: Any) -> Any:
        return super().forward(x) * 2.0


NON_FUSABLE = {
    "conv stride 2": ([("conv2", {"in_channels": 2, "out_channels": 3, "kernel_size": 3,
                                  "stride": 2}), ("pool2", {"kernel_size": 2})], (2, 2, 13, 12)),
    "conv dilation 2": ([("conv2", {"in_channels": 2, "out_channels": 3, "kernel_size": 2,
                                    "dilation": 2}), ("pool2", {"kernel_size": 2})],
                        (2, 2, 9, 8)),
    "reflect padding": ([("conv2", {"in_channels": 2, "out_channels": 3, "kernel_size": 3,
                                    "padding": 1, "padding_mode": "reflect"}),
                         ("pool2", {"kernel_size": 2})], (2, 2, 7, 8)),
    "circular padding": ([("conv1", {"in_channels": 2, "out_channels": 3, "kernel_size": 3,
                                     "padding": 2, "padding_mode": "circular"}),
                          ("pool1", {"kernel_size": 2})], (2, 2, 9)),
    "replicate padding": ([("conv3", {"in_channels": 1, "out_channels": 2, "kernel_size": 2,
                                      "padding": 1, "padding_mode": "replicate"}),
                           ("pool3", {"kernel_size": 2})], (1, 1, 4, 5, 3)),
    "pool stride 1": ([("conv2", {"in_channels": 2, "out_channels": 3, "kernel_size": 2}),
                       ("pool2", {"kernel_size": 2, "stride": 1})], (2, 2, 6, 7)),
    "pool kernel 3 stride 2": ([("conv2", {"in_channels": 2, "out_channels": 3,
                                           "kernel_size": 2}),
                                ("pool2", {"kernel_size": 3, "stride": 2})], (2, 2, 8, 9)),
    "pool stride bigger": ([("conv1", {"in_channels": 2, "out_channels": 3, "kernel_size": 2}),
                            ("pool1", {"kernel_size": 2, "stride": 3})], (2, 2, 11)),
    "ceil mode": ([("conv2", {"in_channels": 2, "out_channels": 3, "kernel_size": 2}),
                   ("pool2", {"kernel_size": 2, "ceil_mode": True})], (2, 2, 6, 8)),
    "pool padding": ([("conv2", {"in_channels": 2, "out_channels": 3, "kernel_size": 2}),
                      ("pool2", {"kernel_size": 2, "padding": 1})], (2, 2, 6, 7)),
    "pool dilation": ([("conv2", {"in_channels": 2, "out_channels": 3, "kernel_size": 2}),
                       ("pool2", {"kernel_size": 2, "dilation": 2})], (2, 2, 8, 8)),
    "return indices": ([("conv2", {"in_channels": 2, "out_channels": 3, "kernel_size": 2}),
                        ("pool2", {"kernel_size": 2, "return_indices": True})], (2, 2, 7, 6)),
    "conv1d then maxpool2d": ([("conv1", {"in_channels": 2, "out_channels": 3,
                                          "kernel_size": 3}),
                               ("pool2", {"kernel_size": 2})], (4, 2, 9)),
    "relu between": ([("conv2", {"in_channels": 2, "out_channels": 3, "kernel_size": 2}),
                      ("relu", {}), ("pool2", {"kernel_size": 2})], (2, 2, 7, 6)),
    "avg pool": ([("conv2", {"in_channels": 2, "out_channels": 3, "kernel_size": 2}),
                  ("avgpool2", {"kernel_size": 2})], (2, 2, 7, 6)),
}


@pytest.mark.parametrize("name", list(NON_FUSABLE))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sequential_non_fusable_pairs_match_torch(name: str, dtype: Any) -> None:
    spec, shape = NON_FUSABLE[name]
    _compare_models(spec, shape, dtype, seed=5)


def test_sequential_conv_subclass_with_own_forward_is_not_fused() -> None:
    rng = np.random.default_rng(2)
    conv = _ScaledConv2d(2, 3, 2, rng=rng, dtype=np.float64)
    model = nn.Sequential(conv, nn.MaxPool2d(2))
    x = rng.standard_normal((2, 2, 7, 6))
    expected = F.max_pool2d(conv(x).data, 2)
    _close(model(x).data, expected, np.float64, "subclass forward respected")


def test_sequential_pool_too_large_raises_value_error_both_ways() -> None:
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=rng), nn.MaxPool2d(4))
    x = np.zeros((1, 1, 5, 5), dtype=np.float32)  # conv output 3x3 < pool 4
    with pytest.raises(ValueError):
        model(x)
    model.fuse_conv_pool = False
    with pytest.raises(ValueError):
        model(x)


@pytest.mark.parametrize("xdtype", [np.float64, np.float32])
def test_sequential_input_dtype_handling_same_fused_or_not(xdtype) -> None:
    """A float32 model fed float64 input (and a float64 model fed float32): fused and
    unfused runs do the same thing (same result and dtype, or the same error type)."""
    rng = np.random.default_rng(4)
    model_dtype = np.float32 if xdtype == np.float64 else np.float64
    model = nn.Sequential(nn.Conv2d(2, 3, 3, rng=rng, dtype=model_dtype), nn.MaxPool2d(2))
    x = rng.standard_normal((2, 2, 8, 8)).astype(xdtype)
    results = []
    for fuse in (True, False):
        model.fuse_conv_pool = fuse
        try:
            results.append(model(x).data)
        except (TypeError, ValueError) as error:
            results.append(type(error))
    fused, unfused = results
    if isinstance(unfused, type):
        assert fused is unfused
    else:
        assert not isinstance(fused, type), f"fused raised {fused}"
        assert fused.dtype == unfused.dtype
        _close(fused, unfused, np.float32, "fused vs unfused")


@pytest.mark.parametrize("fuse", [True, False])
def test_sequential_frozen_parameters_and_no_grad(fuse: bool) -> None:
    """Frozen conv: the input still gets torch's gradient and no parameter gets one; under
    no_grad the output is the same and records nothing."""
    spec = [("conv2", {"in_channels": 2, "out_channels": 4, "kernel_size": 3,
                       "padding": 1, "groups": 2}), ("pool2", {"kernel_size": 2})]
    model, torch_model = _build(spec, np.float64, seed=9)
    model.fuse_conv_pool = fuse
    model.requires_grad_(False)
    torch_model.requires_grad_(False)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 2, 7, 9))
    xt = Tensor(x, requires_grad=True)
    out = model(xt)
    g = rng.standard_normal(out.shape)
    out.backward(g)
    x_torch = torch.tensor(x, requires_grad=True)
    expected = torch_model(x_torch)
    expected.backward(torch.from_numpy(g))
    _close(out.data, expected.detach().numpy(), np.float64, "forward")
    _close(xt.grad, x_torch.grad.numpy(), np.float64, "input grad")
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(True)
    with no_grad():
        quiet = model(Tensor(x, requires_grad=True))
    assert not quiet.requires_grad
    _close(quiet.data, out.data, np.float64, "no_grad forward")
