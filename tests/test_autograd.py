"""cnnlab.autograd against torch.autograd: every primitive's value and VJP, and the graph.

Each op runs on float64 Tensors in cnnlab and in torch through ``check_op`` (one random
upstream gradient, every input's ``.grad`` compared); hypothesis draws broadcastable shapes
and reduction axes. Graph tests cover shared subgraphs, diamonds, repeated backward,
``no_grad`` and error messages.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from _check import assert_close, check_op, finite_difference_grad, tolerance
from cnnlab import Tensor, no_grad
from cnnlab import autograd as ag

RNG = np.random.default_rng(1234)


def _normal(shape: tuple[int, ...], rng: np.random.Generator = RNG) -> np.ndarray:
    return rng.standard_normal(shape)


def _positive(shape: tuple[int, ...], rng: np.random.Generator = RNG) -> np.ndarray:
    return rng.uniform(0.5, 2.0, shape)


two_shapes = hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3,
                                               max_side=4)


# ---------------------------------------------------------------------------------------
# Elementwise arithmetic with broadcasting.

BINARY = {
    "add": (lambda a, b: a + b, lambda a, b: a + b),
    "sub": (lambda a, b: a - b, lambda a, b: a - b),
    "mul": (lambda a, b: a * b, lambda a, b: a * b),
    "div": (lambda a, b: a / b, lambda a, b: a / b),
    "maximum": (ag.maximum, torch.maximum),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(shapes=two_shapes, seed=st.integers(0, 2**16))
def test_binary_ops_broadcast_like_torch(name, shapes, seed):
    rng = np.random.default_rng(seed)
    a_shape, b_shape = shapes.input_shapes
    a = _normal(a_shape, rng)
    b = _positive(b_shape, rng) * rng.choice([-1.0, 1.0], b_shape)  # no division by ~0
    ours, theirs = BINARY[name]
    check_op(ours, theirs, [a, b], rng=rng)


@pytest.mark.parametrize("constant", [2.0, np.float64(-1.5), np.arange(1.0, 4.0)])
def test_ops_with_constants_on_either_side(constant):
    x = _positive((2, 3))
    check_op(lambda t: (constant - t) * constant + t / constant - constant / t,
             lambda t: (torch.as_tensor(constant) - t) * torch.as_tensor(constant)
             + t / torch.as_tensor(constant) - torch.as_tensor(constant) / t, [x])


UNARY = {
    "neg": (lambda t: -t, lambda t: -t, _normal),
    "exp": (ag.exp, torch.exp, _normal),
    "log": (ag.log, torch.log, _positive),
    "sqrt": (ag.sqrt, torch.sqrt, _positive),
    "abs": (ag.abs_, torch.abs, _normal),
    "relu": (ag.relu, torch.relu, _normal),
    "tanh": (ag.tanh, torch.tanh, _normal),
    "sigmoid": (ag.sigmoid, torch.sigmoid, _normal),
    "pow2": (lambda t: t**2, lambda t: t**2, _normal),
    "pow3": (lambda t: t**3, lambda t: t**3, _normal),
    "pow-1": (lambda t: t**-1, lambda t: t**-1, _positive),
    "pow2.5": (lambda t: t**2.5, lambda t: t**2.5, _positive),
    "pow0.5": (lambda t: t**0.5, lambda t: t**0.5, _positive),
    "clip": (lambda t: ag.clip(t, -0.5, 0.7), lambda t: torch.clamp(t, -0.5, 0.7), _normal),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=4), seed=st.integers(0, 999))
def test_unary_ops_like_torch(name, shape, seed):
    ours, theirs, draw = UNARY[name]
    check_op(ours, theirs, [draw(shape, np.random.default_rng(seed))])


def test_sigmoid_is_stable_for_large_inputs():
    x = np.array([-800.0, -40.0, 0.0, 40.0, 800.0])
    check_op(ag.sigmoid, torch.sigmoid, [x])


def test_float32_stays_float32():
    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    y = ((x * 2.0 + np.float64(1.0)) / 3 - 1).exp().sum(axis=0).mean()
    assert y.dtype == np.float32
    y.backward()
    assert x.grad.dtype == np.float32


# ---------------------------------------------------------------------------------------
# Matrix products.

MATMUL_SHAPES = [
    ((3,), (3,)),
    ((3,), (3, 2)),
    ((4, 3), (3,)),
    ((4, 3), (3, 2)),
    ((2, 4, 3), (3, 5)),
    ((4,), (2, 4, 3)),
    ((2, 1, 3, 4), (5, 4, 2)),
    ((5, 3, 4), (4,)),
]


@pytest.mark.parametrize(("a_shape", "b_shape"), MATMUL_SHAPES)
def test_matmul_like_torch(a_shape, b_shape):
    check_op(lambda a, b: a @ b, torch.matmul, [_normal(a_shape), _normal(b_shape)])


def test_matmul_with_array_operand_on_either_side():
    x, w = _normal((2, 3)), _normal((3, 4))
    check_op(lambda t: (t @ w).sum() + (w.T @ t.T).sum(),
             lambda t: (t @ torch.from_numpy(w)).sum() + (torch.from_numpy(w).T @ t.T).sum(),
             [x])


# ---------------------------------------------------------------------------------------
# Reductions.


@st.composite
def shape_and_axis(draw, allow_tuple=True):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, max_side=4))
    ndim = len(shape)
    kind = draw(st.sampled_from(["none", "int", "tuple"] if allow_tuple else ["none", "int"]))
    if kind == "none":
        axis = None
    elif kind == "int":
        axis = draw(st.integers(-ndim, ndim - 1))
    else:
        axes = draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True))
        axis = tuple(a - ndim if draw(st.booleans()) else a for a in axes)
    return shape, axis, draw(st.booleans())


@given(case=shape_and_axis(), seed=st.integers(0, 999))
def test_sum_like_torch(case, seed):
    shape, axis, keepdims = case
    dims = {} if axis is None else {"dim": axis, "keepdim": keepdims}
    ours = (lambda t: t.sum(axis=axis, keepdims=keepdims)) if axis is not None else (
        lambda t: t.sum())
    check_op(ours, lambda t: t.sum(**dims), [_normal(shape, np.random.default_rng(seed))])


@given(case=shape_and_axis(), seed=st.integers(0, 999))
def test_mean_like_torch(case, seed):
    shape, axis, keepdims = case
    dims = {} if axis is None else {"dim": axis, "keepdim": keepdims}
    ours = (lambda t: t.mean(axis=axis, keepdims=keepdims)) if axis is not None else (
        lambda t: t.mean())
    check_op(ours, lambda t: t.mean(**dims), [_normal(shape, np.random.default_rng(seed))])


@given(case=shape_and_axis(), seed=st.integers(0, 999), ties=st.booleans())
def test_max_like_torch_amax(case, seed, ties):
    """Ties share the gradient equally, as ``torch.amax``."""
    shape, axis, keepdims = case
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, shape).astype(float) if ties else _normal(shape, rng)
    dims = {"dim": () if axis is None else axis, "keepdim": keepdims}
    check_op(lambda t: t.max(axis=axis, keepdims=keepdims), lambda t: torch.amax(t, **dims),
             [x])


# ---------------------------------------------------------------------------------------
# Shape ops and indexing.


def test_reshape_and_flatten_like_torch():
    x = _normal((2, 3, 4))
    check_op(lambda t: t.reshape(4, -1), lambda t: t.reshape(4, -1), [x])
    check_op(lambda t: t.reshape((24,)), lambda t: t.reshape(24), [x])
    check_op(lambda t: t.flatten(1), lambda t: t.flatten(1), [x])
    check_op(lambda t: t.flatten(0, 1), lambda t: t.flatten(0, 1), [x])


@pytest.mark.parametrize("axes", [None, (0, 1, 2), (2, 0, 1), (1, 2, 0), (0, -1, 1),
                                  (-1, -3, -2)])
def test_transpose_like_torch(axes):
    x = _normal((2, 3, 4))
    torch_axes = (2, 1, 0) if axes is None else axes
    if axes is None:
        check_op(lambda t: t.T, lambda t: t.permute(*torch_axes), [x])
    check_op(lambda t: t.transpose(*axes) if axes else t.transpose(),
             lambda t: t.permute(*torch_axes), [x])


INDICES = [
    (1,),
    (slice(None), 2),
    (slice(0, 2), slice(1, None)),
    (Ellipsis, 1),
    (None, 0),
    (np.array([0, 0, 1, 0]),),  # fancy with repeats: gradients add up
    (slice(None), np.array([3, 1, 3, 3])),
    (np.array([0, 1, 1]), np.array([2, 2, 0])),
    (np.array([[0, 1], [1, 1]]),),
]


@pytest.mark.parametrize("index", INDICES, ids=[str(i) for i in range(len(INDICES))])
def test_getitem_like_torch(index):
    x = _normal((2, 4, 3))
    torch_index = tuple(torch.from_numpy(i) if isinstance(i, np.ndarray) else i for i in index)
    check_op(lambda t: t[index], lambda t: t[torch_index], [x])


def test_getitem_boolean_mask_and_negative_step():
    x = _normal((3, 4))
    mask = x > 0
    check_op(lambda t: t[mask], lambda t: t[torch.from_numpy(mask)], [x])
    # torch has no negative steps; flip is the same selection.
    check_op(lambda t: t[::-1, 1:3], lambda t: torch.flip(t, (0,))[:, 1:3], [x])
    check_op(lambda t: t[Tensor(np.array([2, 2]))], lambda t: t[torch.tensor([2, 2])], [x])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concatenate_and_stack_like_torch(axis):
    shapes = [(2, 3), (2, 3), (2, 3)]
    arrays = [_normal(s) for s in shapes]
    check_op(lambda *ts: ag.concatenate(ts, axis=axis), lambda *ts: torch.cat(ts, dim=axis),
             arrays)
    check_op(lambda *ts: ag.stack(ts, axis=axis), lambda *ts: torch.stack(ts, dim=axis),
             arrays)
    uneven = [_normal((2, 1)), _normal((2, 4))]
    check_op(lambda *ts: ag.concatenate(ts, axis=1), lambda *ts: torch.cat(ts, dim=1), uneven)


def test_concatenate_mixed_tensor_and_array():
    const = _normal((1, 3))
    check_op(lambda t: ag.concatenate([t, const], axis=0),
             lambda t: torch.cat([t, torch.from_numpy(const)], dim=0), [_normal((2, 3))])


@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=3, max_dims=3, max_side=3),
       seed=st.integers(0, 999))
def test_where_broadcasts_like_torch(shapes, seed):
    rng = np.random.default_rng(seed)
    cond_shape, a_shape, b_shape = shapes.input_shapes
    cond = np.asarray(rng.random(cond_shape) > 0.5)
    check_op(lambda a, b: ag.where(cond, a, b),
             lambda a, b: torch.where(torch.from_numpy(cond), a, b),
             [_normal(a_shape, rng), _normal(b_shape, rng)])


def test_maximum_at_ties_splits_the_gradient_like_torch():
    a_np, b_np = np.array([1.0, 3.0, 3.0]), np.array([2.0, 3.0, 1.0])
    a = Tensor(a_np, requires_grad=True)
    b = Tensor(b_np, requires_grad=True)
    ag.maximum(a, b).sum().backward()
    ta = torch.tensor(a_np, requires_grad=True)
    tb = torch.tensor(b_np, requires_grad=True)
    torch.maximum(ta, tb).sum().backward()
    np.testing.assert_array_equal(a.grad, ta.grad.numpy())
    np.testing.assert_array_equal(b.grad, tb.grad.numpy())
    np.testing.assert_array_equal(a.grad, [0.0, 0.5, 1.0])


# ---------------------------------------------------------------------------------------
# The graph: shared subgraphs, diamonds, accumulation, no_grad, errors.


def test_shared_subgraph_and_diamond_like_torch():
    def build(x, w, exp, log):
        h = x @ w                  # shared by both branches
        left = exp(h) * h          # diamond: h -> left, h -> right -> out
        right = log(h * h + 1.0)
        return (left + right * x.sum() + h).sum()

    x, w = _normal((3, 4)) * 0.3, _normal((4, 2)) * 0.3
    check_op(lambda a, b: build(a, b, ag.exp, ag.log),
             lambda a, b: build(a, b, torch.exp, torch.log), [x, w])


def test_same_tensor_used_many_times_and_in_both_operands():
    check_op(lambda t: (t * t * t + t @ t.T + t.T @ t).sum(),
             lambda t: (t * t * t + t @ t.T + t.T @ t).sum(), [_normal((3, 3))])


def test_finite_differences_of_a_composite_expression():
    x0, w0 = _normal((2, 3)), _normal((3, 3))

    def value(x, w):
        return float(np.sum(np.tanh(x @ w) ** 2 / (1 + np.exp(-x.sum(axis=0)))))

    x, w = Tensor(x0, requires_grad=True), Tensor(w0, requires_grad=True)
    ((ag.tanh(x @ w) ** 2) / (1 + ag.exp(-x.sum(axis=0)))).sum().backward()
    expected = finite_difference_grad(value, [x0, w0])
    assert_close(x.grad, expected[0], 1e-7, 1e-6, "dx")
    assert_close(w.grad, expected[1], 1e-7, 1e-6, "dw")


def test_backward_twice_accumulates_like_torch():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    y.backward()
    y.backward()
    np.testing.assert_allclose(x.grad, 4 * x.data)
    x.zero_grad()
    assert x.grad is None


def test_only_leaves_that_require_grad_get_grad():
    x = Tensor(np.ones(2), requires_grad=True)
    c = Tensor(np.ones(2))
    hidden = x * 2
    (hidden * c).sum().backward()
    assert c.grad is None and hidden.grad is None
    np.testing.assert_allclose(x.grad, [2.0, 2.0])


def test_no_grad_records_nothing_and_restores_state():
    x = Tensor(np.ones(2), requires_grad=True)
    with no_grad():
        y = x * 2
        assert not ag.is_grad_enabled()
    assert ag.is_grad_enabled() and not y.requires_grad and y._parents == ()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()
    with pytest.raises(ValueError, match="boom"), no_grad():
        raise ValueError("boom")
    assert ag.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = Tensor(np.array([3.0]), requires_grad=True)
    (x * x.detach()).sum().backward()
    np.testing.assert_allclose(x.grad, [3.0])


def test_deep_chain_has_no_recursion_limit():
    x = Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(5000):
        y = y * 1.0 + 0.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_backward_errors():
    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"gradient shape \(2,\) must match"):
        (x * 2).backward(np.ones(2))
    (x * 2).backward(Tensor(np.ones(3)))
    np.testing.assert_allclose(x.grad, 2 * np.ones(3))


def test_float32_stays_float32_through_mixed_ops_and_their_gradients():
    x = Tensor(np.full((2, 3), 2.0, np.float32), requires_grad=True)
    cond = np.array([[True, False, True], [False, True, False]])
    outputs = [x.max(axis=1), ag.maximum(x, 0.0), ag.where(cond, 1.0, x), x ** np.float64(2),
               2.0 ** x, x * np.float64(3.0), x / 2.0]
    for y in outputs:
        assert y.dtype == np.float32
    for y in outputs:
        x.grad = None
        y.sum().backward()
        assert x.grad.dtype == np.float32


def test_power_with_a_tensor_exponent_and_a_scalar_base_like_torch():
    a_np, b_np = np.array([1.5, 2.0, 0.5]), np.array([2.0, 3.0, -1.0])
    a, b = Tensor(a_np, requires_grad=True), Tensor(b_np, requires_grad=True)
    ((a ** b).sum() + (3.0 ** b).sum()).backward()
    ta = torch.tensor(a_np, requires_grad=True)
    tb = torch.tensor(b_np, requires_grad=True)
    ((ta ** tb).sum() + (3.0 ** tb).sum()).backward()
    np.testing.assert_allclose(a.grad, ta.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(b.grad, tb.grad.numpy(), rtol=1e-12)


# -- autograd.grad: gradients without .grad, safe across threads -----------------------------


def _two_layer_graph(x: np.ndarray, w1: Tensor, w2: Tensor) -> Tensor:
    hidden = (Tensor(x) @ w1).relu()
    return ((hidden @ w2) ** 2).mean()


def test_grad_matches_backward_and_writes_no_grad():
    rng = np.random.default_rng(5)
    w1 = Tensor(rng.standard_normal((4, 6)), requires_grad=True)
    w2 = Tensor(rng.standard_normal((6, 3)), requires_grad=True)
    unused = Tensor(rng.standard_normal(2), requires_grad=True)
    x = rng.standard_normal((5, 4))
    g1, g2, g_unused = ag.grad(_two_layer_graph(x, w1, w2), [w1, w2, unused])
    assert w1.grad is None and w2.grad is None and g_unused is None
    _two_layer_graph(x, w1, w2).backward()
    np.testing.assert_array_equal(g1, w1.grad)
    np.testing.assert_array_equal(g2, w2.grad)


def test_grad_scales_by_the_given_gradient():
    rng = np.random.default_rng(6)
    w1 = Tensor(rng.standard_normal((4, 6)), requires_grad=True)
    w2 = Tensor(rng.standard_normal((6, 3)), requires_grad=True)
    x = rng.standard_normal((5, 4))
    (full,) = ag.grad(_two_layer_graph(x, w1, w2), [w1])
    (scaled,) = ag.grad(_two_layer_graph(x, w1, w2), [w1], np.asarray(0.25))
    np.testing.assert_allclose(scaled, 0.25 * full, rtol=1e-12)


def test_grad_of_shards_from_threads_sums_to_the_batch_gradient():
    """Two threads differentiate their own half-batch graphs over shared leaves: the
    weighted sum equals the whole batch's gradient (mean loss), and no .grad is written."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    w1 = Tensor(rng.standard_normal((4, 6)), requires_grad=True)
    w2 = Tensor(rng.standard_normal((6, 3)), requires_grad=True)
    x = rng.standard_normal((8, 4))
    whole = ag.grad(_two_layer_graph(x, w1, w2), [w1, w2])
    with ThreadPoolExecutor(2) as pool:
        halves = list(pool.map(
            lambda part: ag.grad(_two_layer_graph(part, w1, w2), [w1, w2], np.asarray(0.5)),
            [x[:4], x[4:]]))
    for i in range(2):
        np.testing.assert_allclose(halves[0][i] + halves[1][i], whole[i], rtol=1e-12)
    assert w1.grad is None and w2.grad is None


def test_grad_errors_name_the_function():
    leaf = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"^grad: tensor does not require grad"):
        ag.grad(Tensor(np.ones(3)), [leaf])
    with pytest.raises(RuntimeError, match=r"^grad: gradient can be implicitly created only"):
        ag.grad(leaf * 2, [leaf])
    with pytest.raises(ValueError, match=r"^grad: gradient shape \(2,\) must match"):
        ag.grad(leaf * 2, [leaf], np.ones(2))


def test_grad_gives_a_repeated_input_its_gradient_at_every_position():
    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    b = Tensor(np.array([3.0, 4.0]), requires_grad=True)
    first, second = ag.grad((a * b).sum(), [a, a])
    np.testing.assert_array_equal(first, [3.0, 4.0])
    np.testing.assert_array_equal(second, [3.0, 4.0])
    assert first is not second


def test_grad_refuses_inputs_it_cannot_differentiate():
    a = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    hidden = a * 2
    with pytest.raises(ValueError, match=r"^grad: inputs\[0\] is the output of an op"):
        ag.grad((hidden * hidden).sum(), [hidden])
    with pytest.raises(ValueError, match=r"^grad: inputs\[1\] must be a Tensor that requires"):
        ag.grad((a * a).sum(), [a, Tensor(np.ones(2))])


def test_no_grad_is_per_thread():
    """One thread's no_grad() (an evaluation) must not stop another thread's graph."""
    import threading

    inside, leave = threading.Event(), threading.Event()

    def evaluate():
        with no_grad():
            inside.set()
            leave.wait(5)

    other = threading.Thread(target=evaluate)
    other.start()
    try:
        assert inside.wait(5)
        a = Tensor(np.ones(2), requires_grad=True)
        assert (a * 2).requires_grad and ag.is_grad_enabled()
    finally:
        leave.set()
        other.join()
    with no_grad():
        assert not ag.is_grad_enabled()


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_tensor_methods_and_functional_ops_are_one_implementation(name):
    """``Tensor.relu()``, ``autograd.relu`` and ``F.relu`` (and sigmoid, tanh) give the same
    values and gradients on NaN, infinities, zero and signed values, and so does torch
    (relu keeps NaN; its gradient passes where the input is NaN, as torch's
    threshold_backward)."""
    import cnnlab.functional as F

    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, -2.5, 3.0, 1e-300])
    upstream = np.linspace(-1.0, 2.0, x.size)
    torch_x = torch.tensor(x, requires_grad=True)
    expected = getattr(torch, name)(torch_x)
    expected.backward(torch.tensor(upstream))
    results = []
    for apply in (lambda t: getattr(t, name)(), getattr(ag, name), getattr(F, name)):
        t = Tensor(x.copy(), requires_grad=True)
        out = apply(t)
        out.backward(upstream)
        results.append((out.data, t.grad))
    for values, grads in results[1:]:  # the same code: the same bits
        np.testing.assert_array_equal(values, results[0][0])
        np.testing.assert_array_equal(grads, results[0][1])
    values, grads = results[0]
    atol, rtol = tolerance(np.float64)
    assert_close(values, expected.detach().numpy(), atol, rtol, f"{name} values")
    assert_close(grads, torch_x.grad.numpy(), atol, rtol, f"{name} gradient")


def test_tensor_flatten_is_the_functional_flatten_with_its_checks():
    import cnnlab.functional as F

    t = Tensor(np.arange(24.0).reshape(2, 3, 4), requires_grad=True)
    assert t.flatten(1).shape == F.flatten(t, 1).shape == (2, 12)
    with pytest.raises(ValueError, match=r"flatten: start_dim \(2\) must not come after"):
        t.flatten(2, 1)
