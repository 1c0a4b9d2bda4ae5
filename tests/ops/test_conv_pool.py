"""Convolution + non-overlapping max pooling as one strided convolution (ops/conv_pool.py,
functional.conv_max_pool, Sequential's fusion): the same function as the two ops."""

from __future__ import annotations

import warnings
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnlab import Tensor, nn
from cnnlab import functional as F
from cnnlab.autograd import grad
from cnnlab.functional import conv_pool as fused_module
from cnnlab.ops.conv_pool import (
    phased_view,
    pooled_bias_grad,
    pooled_weight,
    pooled_weight_grad,
    unpooled_gradient,
)
from cnnlab.ops.pool import PoolRequest, max_over_phases, max_pool_taps

POOLS = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _two_ops(x, w, b, padding, groups, pool):
    y = F.conv(x, w, b, 1, padding, 1, groups)
    return POOLS[len(pool)](y, pool, pool)


def _values_and_grads(op, x, w, b, upstream, **kw):
    xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, b))
    out = op(xt, wt, bt, **kw)
    return out.data, grad(out, [xt, wt, bt], upstream)


@st.composite
def case(draw: st.DrawFn) -> dict:
    ndim = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2]))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 3))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    pool = tuple(draw(st.integers(1, 3)) for _ in range(ndim))
    pads = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(ndim))
    # conv output at least the pool; spatial sizes kept small for 3-D
    spatial = tuple(max(k + s - 1 - lo - hi, 1) + draw(st.integers(0, 4 if ndim < 3 else 2))
                    for k, s, (lo, hi) in zip(kernel, pool, pads))
    return {"ndim": ndim, "groups": groups, "x": (draw(st.integers(1, 3)), c_in, *spatial),
            "w": (c_out, c_in // groups, *kernel), "pads": pads, "pool": pool,
            "seed": draw(st.integers(0, 2**16)), "ties": draw(st.booleans())}


@settings(max_examples=60, deadline=None)
@given(case())
def test_fused_equals_conv_then_max_pool_with_gradients(c: dict) -> None:
    rng = np.random.default_rng(c["seed"])
    x = rng.standard_normal(c["x"])
    w = rng.standard_normal(c["w"])
    if c["ties"]:  # small integers: many equal values in a window
        x, w = np.round(x * 1.5), np.round(w)
    b = rng.standard_normal(c["w"][0])
    kw = {"padding": c["pads"], "groups": c["groups"], "pool": c["pool"]}
    upstream = rng.standard_normal(_two_ops(x, w, b, **kw).shape)
    expected, expected_grads = _values_and_grads(_two_ops, x, w, b, upstream, **kw)
    # The strided convolution whatever the cost model would pick for these small shapes.
    with mock.patch.object(fused_module, "pooling_in_conv_pays", lambda *args: True):
        ours, ours_grads = _values_and_grads(
            lambda xt, wt, bt, padding, groups, pool: F.conv_max_pool(
                xt, wt, bt, padding, groups, pool), x, w, b, upstream, **kw)
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(ours_grads, expected_grads, strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-11, atol=1e-11)


def test_pooled_weight_and_its_gradient_are_adjoint() -> None:
    # <pooled(w), G> == <w, pooled_grad(G)> for weight and bias: the fold is the exact VJP.
    rng = np.random.default_rng(0)
    for w_shape, pool, groups in [((6, 2, 3, 2), (2, 3), 2), ((4, 3, 5), (2,), 1),
                                  ((2, 1, 2, 2, 3), (2, 1, 2), 1)]:
        w, b = rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
        w_big, b_big = pooled_weight(w, b, pool, groups)
        g_w, g_b = rng.standard_normal(w_big.shape), rng.standard_normal(b_big.shape)
        assert np.isclose(np.vdot(w_big, g_w), np.vdot(w, pooled_weight_grad(g_w, w_shape,
                                                                             pool, groups)))
        assert np.isclose(np.vdot(b_big, g_b), np.vdot(b, pooled_bias_grad(g_b, groups, pool)))


def test_phase_channels_are_the_stride_one_output_at_each_window_offset() -> None:
    # conv(x, W', stride=s) viewed by phase is y[s*a + p] of the stride-1 conv y.
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((6, 2, 3, 2))
    y = F.conv2d(x, w, groups=2, padding=1)
    w_big, _ = pooled_weight(w, None, (2, 3), 2)
    phased = phased_view(F.conv2d(x, w_big, stride=(2, 3), groups=2, padding=1), 2, (2, 3))
    for dy in range(2):
        for dx in range(3):
            expected = y[:, :, dy::2, dx::3][:, :, : phased.shape[-2], : phased.shape[-1]]
            np.testing.assert_allclose(
                phased[:, :, dy, dx].reshape(expected.shape), expected, rtol=1e-12)


def test_unpooled_gradient_places_phases_and_zeros_uncovered_rows() -> None:
    rng = np.random.default_rng(2)
    phased = rng.standard_normal((2, 1, 2, 2, 3, 3, 4))  # (N, g, 2, 2, C, 3, 4)
    grad_conv = unpooled_gradient(phased, (2, 2), (7, 9))  # 7 = 3*2 + 1, 9 = 4*2 + 1
    assert grad_conv.shape == (2, 3, 7, 9)
    np.testing.assert_array_equal(grad_conv[:, :, 6], 0)
    np.testing.assert_array_equal(grad_conv[:, :, :, 8], 0)
    np.testing.assert_array_equal(grad_conv[:, :, 1:6:2, 0:8:2], phased[:, 0, 1, 0])


def test_max_over_phases_takes_pytorchs_choice_among_ties_and_nan() -> None:
    # Window scan order (0,0), (0,1), (1,0), (1,1): first maximum, last NaN.
    windows = np.array([[1, 2, 2, 0], [3, 1, 3, 3], [np.nan, 1, np.nan, 2], [0, 0, 0, 0],
                        [-np.inf, -np.inf, -np.inf, -np.inf], [1, 5, 5, 1]])
    phased = windows.reshape(len(windows), 1, 2, 2, 1)  # (N, g, 2, 2, C)
    out, taps = max_over_phases(phased, 2)
    x = windows.reshape(len(windows), 1, 2, 2)  # the same windows as 2x2 images
    spec = PoolRequest((2, 2), (2, 2), (0, 0), (1, 1), (1, 1))
    expected, expected_taps, _ = max_pool_taps(x, spec)
    np.testing.assert_array_equal(out.reshape(-1), expected.reshape(-1))
    chosen = [t.reshape(len(windows), -1)[:, 0] for t in taps]
    theirs = [t.reshape(len(windows), -1)[:, 0] for t in expected_taps]
    assert [c.tolist() for c in chosen] == [t.tolist() for t in theirs]
    assert (chosen[0] * 2 + chosen[1]).tolist() == [1, 0, 2, 0, 0, 1]


@pytest.mark.parametrize("where", ["x", "w"])
def test_nan_or_inf_in_the_inputs_gives_the_two_ops_exactly(where: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 2, 8, 8)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    target = x if where == "x" else w
    target.reshape(-1)[[5, 17]] = [np.nan, np.inf]
    upstream = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    expected, expected_grads = _values_and_grads(
        lambda *a: _two_ops(*a, 0, 1, (2, 2)), x, w, b, upstream)
    ours, ours_grads = _values_and_grads(lambda *a: F.conv_max_pool(*a), x, w, b, upstream)
    np.testing.assert_array_equal(ours, expected)
    for mine, theirs in zip(ours_grads, expected_grads, strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_non_finite_upstream_gradient_spreads_as_the_two_ops_do() -> None:
    # inf times the shifted kernel's zeros would be NaN; the fused VJP must not make any.
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 1, 9, 9))
    w, b = rng.standard_normal((2, 1, 3, 3)), rng.standard_normal(2)
    upstream = rng.standard_normal((1, 2, 3, 3))
    upstream[0, 0, 1, 1] = np.inf
    _, expected = _values_and_grads(lambda *a: _two_ops(*a, 0, 1, (2, 2)), x, w, b, upstream)
    _, ours = _values_and_grads(lambda *a: F.conv_max_pool(*a), x, w, b, upstream)
    for mine, theirs in zip(ours, expected, strict=True):
        np.testing.assert_array_equal(np.isnan(mine), np.isnan(theirs))
        np.testing.assert_allclose(mine, theirs, rtol=1e-12)


def _lenet_like(fuse: bool) -> nn.Sequential:
    rng = np.random.default_rng(5)
    model = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2, rng=rng), nn.MaxPool2d(2), nn.ReLU(),
                          nn.Conv2d(4, 6, 3, rng=rng), nn.MaxPool2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 2 * 2, 3, rng=rng))
    model.fuse_conv_pool = fuse
    return model


def test_sequential_fuses_conv_and_pool_to_the_same_function(monkeypatch) -> None:
    calls = []
    fused_op = F._conv_max_pool
    monkeypatch.setattr(F, "_conv_max_pool", lambda *a: calls.append(a[5]) or fused_op(*a))
    x = np.random.default_rng(6).standard_normal((3, 1, 12, 12)).astype(np.float32)
    results = []
    for fuse in (True, False):
        model = _lenet_like(fuse)
        logits = model(Tensor(x))
        F.cross_entropy(logits, np.array([0, 1, 2])).backward()
        results.append((logits.data, [p.grad for p in model.parameters()]))
    assert calls == [(2, 2), (2, 2)]  # both pairs fused, only when asked
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(results[0][1], results[1][1], strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("conv_kw, pool_kw", [
    ({"stride": 2}, {}), ({"dilation": 2}, {}), ({"padding_mode": "reflect", "padding": 1}, {}),
    ({}, {"stride": 1}), ({}, {"ceil_mode": True}), ({}, {"padding": 1}),
])
def test_sequential_leaves_other_conv_pool_pairs_alone(monkeypatch, conv_kw, pool_kw) -> None:
    monkeypatch.setattr(F, "_conv_max_pool", lambda *a: pytest.fail("fused"))
    rng = np.random.default_rng(7)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, rng=rng, **conv_kw), nn.MaxPool2d(2, **pool_kw))
    x = rng.standard_normal((1, 2, 9, 9)).astype(np.float32)
    expected = model[1](model[0](x))
    np.testing.assert_array_equal(model(x), expected)


def test_sequential_does_not_fuse_a_layer_with_its_own_forward(monkeypatch) -> None:
    monkeypatch.setattr(F, "_conv_max_pool", lambda *a: pytest.fail("fused"))

    class Doubled(nn.Conv2d):
        def forward(self, x):
            return super().forward(x) * 2

    rng = np.random.default_rng(8)
    model = nn.Sequential(Doubled(1, 2, 3, rng=rng), nn.MaxPool2d(2))
    x = rng.standard_normal((1, 1, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(model(x), model[1](model[0](x)))


@pytest.mark.parametrize("patch", ["subclass_functional", "instance_forward"])
def test_sequential_does_not_fuse_a_patched_or_extended_layer(monkeypatch, patch: str) -> None:
    # Review finding: only the library's own classes, with no forward set on the instance.
    monkeypatch.setattr(F, "_conv_max_pool", lambda *a: pytest.fail("fused"))
    rng = np.random.default_rng(9)
    if patch == "subclass_functional":
        class Doubling(nn.Conv2d):
            _functional = staticmethod(lambda *a: F.conv2d(*a) * 2)
        conv = Doubling(1, 2, 3, rng=rng)
    else:
        conv = nn.Conv2d(1, 2, 3, rng=rng)
        conv.forward = lambda x: F.conv2d(x, conv.weight) * 2
    model = nn.Sequential(conv, nn.MaxPool2d(2))
    x = rng.standard_normal((1, 1, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(model(x), model[1](model[0](x)))


def test_cost_model_keeps_wide_layers_as_two_ops(monkeypatch) -> None:
    # The shifted kernels multiply zeros: 4x the work for a 1x1 kernel, 1.8x for a 3x3 one.
    # Layers with many input channels are GEMM-bound and stay two ops (bench_conv_pool.py).
    calls = []
    monkeypatch.setattr(fused_module, "pooled_weight",
                        lambda *a: calls.append(a[0].shape) or pooled_weight(*a))
    rng = np.random.default_rng(10)
    for c_in, k, size in [(64, 1, 8), (64, 3, 16), (1, 5, 28), (6, 5, 14)]:
        x = rng.standard_normal((8, c_in, size, size)).astype(np.float32)
        w = rng.standard_normal((64 if c_in == 64 else 6, c_in, k, k)).astype(np.float32)
        expected = _two_ops(x, w, None, 0, 1, (2, 2))
        np.testing.assert_allclose(F.conv_max_pool(x, w), expected, rtol=1e-5, atol=1e-5)
    assert calls == [(6, 1, 5, 5), (6, 6, 5, 5)]


def test_opposite_infinities_give_no_warning() -> None:
    # Review finding: the finiteness check summed +inf and -inf and warned.
    x = np.zeros((1, 1, 6, 6), np.float32)
    x[0, 0, 0, 0], x[0, 0, 5, 5] = np.inf, -np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = F.conv_max_pool(x, np.ones((1, 1, 3, 3), np.float32))
    np.testing.assert_array_equal(out, _two_ops(x, np.ones((1, 1, 3, 3), np.float32), None,
                                                0, 1, (2, 2)))


def test_conv_geometry_refuses_an_unknown_layout() -> None:
    from cnnlab.ops.gemm import gemm_plan

    with pytest.raises(ValueError, match="layout must be"):
        gemm_plan((1, 1, 5, 5), (1, 1, 3, 3), (1, 1), ((0, 0), (0, 0)), (1, 1), 1, "rows")


def test_callers_error_settings_hold_in_the_input_gradient() -> None:
    # Second review: the input-gradient GEMM forced invalid="warn" over the caller's choice.
    rng = np.random.default_rng(12)
    x = Tensor(rng.standard_normal((1, 1, 8, 8)), requires_grad=True)
    w = Tensor(np.repeat(rng.standard_normal((1, 1, 3, 3)), 2, axis=0), requires_grad=True)
    out = F.conv_max_pool(x, w)  # two equal filters: the same maxima, the same columns
    upstream = np.ones(out.shape)
    upstream[0, 0, 0, 0], upstream[0, 1, 0, 0] = np.inf, -np.inf  # inf - inf: invalid
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("error")
        out.backward(upstream)
    assert np.isnan(x.grad).any()
