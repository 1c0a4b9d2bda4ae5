"""The GEMM convolution (ops/gemm.py), forced path by path, against the reference and torch.

Each property test forces one path of the GEMM kernel, whatever the cost model in
ops/dispatch.py would choose, and asserts that the forcing took: both column layouts
(``layout="image"`` / ``"batch"``), the pointwise 1x1 path, many column chunks (a small
``COLS_BUDGET_BYTES``), the columns or the input grid kept for the weight gradient, and
the transposed convolution. Values and both VJPs are compared with the reference
(ops/reference.py, the first oracle) and with torch, in float64, through ``check_vjp``.
Names: ``TF`` is torch.nn.functional.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from _check import (
    check_vjp,
    conv_arrays,
    conv_case,
    conv_transpose_case,
    count_calls,
    reference_conv,
    reference_conv_transpose,
    torch_conv_of,
    torch_conv_transpose_of,
)
from cnnlab.ops import dispatch, gemm, reference
from cnnlab.ops.dispatch import ConvRequest

LAYOUTS = ("image", "batch")


def gemm_conv(request: ConvRequest, keep: str | None = None):
    """The dispatcher's convolution on the GEMM path as a (forward, backward) pair.

    ``keep``: what the forward leaves for the weight gradient, ``"cols"`` or ``"grid"``
    (``None``: nothing, the backward rebuilds its columns); asserted, except on the
    pointwise path, which keeps nothing.
    """
    assert request.algorithm == "gemm"

    def backward(g, x, w, b):
        saved = None if keep is None else {}
        dispatch.conv_nd(x, w, b, request, saved)
        if keep is not None and not gemm.is_pointwise(plan_of(x, w, request)):
            assert set(saved) == {keep}, f"saved {set(saved)}, expected {keep}"
        return dispatch.conv_nd_backward(x, w, g, request, need_bias=b is not None,
                                         saved=saved)

    return (lambda x, w, b: dispatch.conv_nd(x, w, b, request), backward)


def plan_of(x: np.ndarray, w: np.ndarray, request: ConvRequest) -> gemm.GemmPlan:
    """The plan the dispatcher's GEMM path runs (non-zero modes pad first)."""
    return dispatch._prepare(x, w.shape, request)[1]


def check_gemm_conv(case: dict, keep: str | None = None) -> None:
    x, w, b, rng = conv_arrays(case)
    request = case["request"]
    ours = gemm_conv(request, keep)
    check_vjp(ours, reference_conv(request), [x, w, b], rng, what=f"reference {request}")
    check_vjp(ours, torch_conv_of(request), [x, w, b], rng, what=f"torch {request}")


# ---------------------------------------------------------------------------------------
# 1. Both column layouts, forward and both VJPs, every option.


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("nd", [1, 2, 3])
@settings(max_examples=30)
@given(data=st.data())
def test_each_column_layout_matches_reference_and_torch(nd, layout, data):
    case = data.draw(conv_case(nd, algorithm="gemm", layout=layout))
    x, w, _, _ = conv_arrays(case)
    assert plan_of(x, w, case["request"]).batch_inner == (layout == "batch")
    check_gemm_conv(case)


@pytest.mark.parametrize("keep", ["cols", "grid"])
@pytest.mark.parametrize("layout", LAYOUTS)
@settings(max_examples=20)
@given(nd=st.integers(1, 3), data=st.data())
def test_weight_gradient_from_kept_columns_or_grid(keep, layout, nd, data):
    """Training keeps the forward's columns (small layers) or its input grid (large ones,
    forced here by a zero ``KEEP_COLS_BYTES``) for the weight gradient."""
    case = data.draw(conv_case(nd, algorithm="gemm", layout=layout))
    with pytest.MonkeyPatch.context() as patch:
        if keep == "grid":
            patch.setattr(gemm, "KEEP_COLS_BYTES", -1)
        check_gemm_conv(case, keep)


# ---------------------------------------------------------------------------------------
# 2. The pointwise path: a 1x1 kernel without padding is one matrix product per image.


@st.composite
def pointwise_case(draw, nd: int, algorithm: str = "gemm") -> dict:
    groups = draw(st.integers(1, 3))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    spatial = tuple(draw(st.integers(1, 6)) for _ in range(nd))
    c_in, c_out = groups * draw(st.integers(1, 3)), groups * draw(st.integers(1, 3))
    return {"x_shape": (draw(st.integers(1, 3)), c_in, *spatial),
            "w_shape": (c_out, c_in // groups, *(1,) * nd), "bias": draw(st.booleans()),
            "request": ConvRequest(stride, ((0, 0),) * nd, (1,) * nd, groups, "zeros",
                                   algorithm),
            "seed": draw(st.integers(0, 2**31 - 1))}


@pytest.mark.parametrize("nd", [1, 2, 3])
@settings(max_examples=30)
@given(data=st.data())
def test_pointwise_path_matches_reference_and_torch(nd, data):
    case = data.draw(pointwise_case(nd))
    x, w, _, _ = conv_arrays(case)
    assert gemm.is_pointwise(plan_of(x, w, case["request"]))
    with count_calls(gemm, "_pointwise_forward", "_pointwise_backward") as calls:
        check_gemm_conv(case)
    assert calls["_pointwise_forward"] >= 1 and calls["_pointwise_backward"] >= 1


# ---------------------------------------------------------------------------------------
# 3. Many column chunks: a small budget cuts the columns through images, rows and phases.


@pytest.mark.parametrize("budget", ["one unit", "300 bytes", "a third"])
@pytest.mark.parametrize("layout", LAYOUTS)
@settings(max_examples=20)
@given(nd=st.integers(1, 3), data=st.data())
def test_many_column_chunks_match_reference_and_torch(budget, layout, nd, data):
    """Chunks of one unit (an image, or one row of outputs batch-minor), of a fixed small
    size, and of a third of the columns (an uneven last chunk)."""
    case = data.draw(conv_case(nd, algorithm="gemm", layout=layout))
    x, w, _, _ = conv_arrays(case)
    plan = plan_of(x, w, case["request"])
    size = {"one unit": 1, "300 bytes": 300,
            "a third": gemm._cols_bytes(plan, x.itemsize) // 3 + 1}[budget]
    units, per_chunk = gemm._chunk_units(plan, x.itemsize, size)
    assume(per_chunk < units and not gemm.is_pointwise(plan))  # more than one chunk
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gemm, "COLS_BUDGET_BYTES", size)
        check_gemm_conv(case)


# ---------------------------------------------------------------------------------------
# 4. The transposed convolution through the GEMM (the convolution's input-VJP), both
# column layouts. Its plan takes the layout by output row length (gemm.LONG_ROW), not from
# the request, so the row length threshold is moved to force each one.


@contextlib.contextmanager
def forced_layout(layout: str):
    """gemm_plan's "auto" layout forced through ``LONG_ROW`` (plans are cached: cleared)."""
    gemm.gemm_plan.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(gemm, "LONG_ROW", 0 if layout == "image" else 10**9)
            yield
    finally:
        gemm.gemm_plan.cache_clear()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("nd", [1, 2, 3])
@settings(max_examples=30)
@given(data=st.data())
def test_conv_transpose_through_gemm_matches_reference_and_torch(nd, layout, data):
    case = data.draw(conv_transpose_case(nd, algorithm="gemm"))
    x, w, b, rng = conv_arrays(case, transposed=True)
    request, out_spatial = case["request"], case["out_spatial"]
    ours = (lambda x, w, b: dispatch.conv_transpose_nd(x, w, b, request, out_spatial),
            lambda g, x, w, b: dispatch.conv_transpose_nd_backward(
                x, w, g, request, need_bias=b is not None))
    expected = reference_conv_transpose(request, out_spatial)
    theirs = torch_conv_transpose_of(case)
    with forced_layout(layout):
        plan = dispatch._transpose_geometry(x.shape, w.shape, request, out_spatial)
        assert plan.batch_inner == (layout == "batch")
        check_vjp(ours, expected, [x, w, b], rng, what="reference")
        check_vjp(ours, theirs, [x, w, b], rng, what="torch")


@pytest.mark.parametrize("nd", [1, 2])
@settings(max_examples=20)
@given(data=st.data())
def test_pointwise_conv_transpose_matches_reference(nd, data):
    """A 1x1 transposed convolution runs the pointwise input-VJP, whose output gradient
    (here: the input) may be smaller than the plan's output (stride > 1)."""
    case = data.draw(pointwise_case(nd))
    _, w, _, rng = conv_arrays(case)  # w read as (C_in_t, C_out_t/groups, 1, ...)
    request = case["request"]
    x = rng.standard_normal((case["x_shape"][0], w.shape[0], *case["x_shape"][2:]))
    out_spatial = tuple((n - 1) * s + 1 for n, s in zip(x.shape[2:], request.stride))
    ours = (lambda v, u: dispatch.conv_transpose_nd(v, u, None, request, out_spatial),
            lambda g, v, u: dispatch.conv_transpose_nd_backward(v, u, g, request)[:2])
    expected = (lambda v, u: reference.conv_transpose_forward(v, u, None, request,
                                                              out_spatial),
                lambda g, v, u: reference.conv_transpose_backward(v, u, g, request)[:2])
    with count_calls(gemm, "_pointwise_backward") as calls:
        check_vjp(ours, expected, [x, w], rng, what="pointwise")
    assert calls["_pointwise_backward"] >= 1
