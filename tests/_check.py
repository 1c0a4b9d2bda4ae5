"""Shared oracle checks: run an op in cnnlab and in torch (float64), compare values and grads.

``check_op`` is the one helper every op test goes through (STYLE.md, rule 14): same inputs,
same upstream gradient, forward values, shape and dtype compared, then every input's
gradient. ``finite_difference_grad`` is the float64 numeric gradient for checks that need
no oracle at all.

Below autograd, ``check_vjp`` does the same for a kernel's (forward, backward) pair of array
functions against another pair: the reference's (``cnnlab.ops.reference``, the first
oracle of the fast paths) or torch's (``torch_vjp``). ``torch_conv`` and
``torch_conv_transpose`` are torch oracles for canonical (per-side, any mode) padding, and
``conv_case`` / ``conv_transpose_case`` draw canonical convolutions for the kernel tests.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from cnnlab import Tensor
from cnnlab.ops import reference
from cnnlab.ops._args import conv_output_shape, conv_padding, conv_transpose_output_shape
from cnnlab.ops.dispatch import ConvRequest

# Tolerances by dtype: float64 agrees to ~1e-10 relative; float32 to ~1e-4.
TOLERANCES = {np.dtype(np.float64): (1e-10, 1e-10), np.dtype(np.float32): (1e-4, 1e-4)}


def tolerance(dtype: Any) -> tuple[float, float]:
    """(atol, rtol) for comparing a result of ``dtype`` with a float64 oracle."""
    return TOLERANCES[np.dtype(dtype)]


def assert_close(ours: np.ndarray, expected: np.ndarray, atol: float, rtol: float,
                 what: str) -> None:
    """Values agree (NaN where the oracle has NaN, same infinities); shapes must match.

    The absolute tolerance is scaled by the oracle's magnitude so that sums of many
    products are compared relative to their size, never loosened in absolute terms.
    """
    ours, expected = np.asarray(ours), np.asarray(expected)
    assert ours.shape == expected.shape, f"{what}: shape {ours.shape} != {expected.shape}"
    finite = expected[np.isfinite(expected)]
    scale = max(float(np.abs(finite).max()), 1.0) if finite.size else 1.0
    np.testing.assert_allclose(ours, expected, atol=atol * scale, rtol=rtol, equal_nan=True,
                               err_msg=what)


def _to_torch(value: np.ndarray | None) -> torch.Tensor | None:
    if value is None:
        return None
    return torch.tensor(np.asarray(value, dtype=np.float64), requires_grad=True)


def check_op(
    our_fn: Callable[..., Any],
    torch_fn: Callable[..., Any],
    inputs: Sequence[np.ndarray | None],
    kwargs: dict[str, Any] | None = None,
    grad: bool = True,
    atol: float | None = None,
    rtol: float | None = None,
    torch_kwargs: dict[str, Any] | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Compare ``our_fn(*Tensors, **kwargs)`` with ``torch_fn(*torch tensors, **kwargs)``.

    ``inputs`` are NumPy arrays (``None`` is passed through, e.g. a missing bias). cnnlab
    runs in each input's dtype; torch always runs in float64, as the oracle. ``torch_kwargs``
    replaces ``kwargs`` for torch when the two spell an option differently. With ``grad``,
    one random upstream gradient is pushed back through both and every input's ``.grad``
    is compared. Tolerances default to :data:`TOLERANCES` for the inputs' dtype.

    Returns our forward output (as an array) for further checks.
    """
    kwargs = {} if kwargs is None else kwargs
    torch_kwargs = kwargs if torch_kwargs is None else torch_kwargs
    rng = np.random.default_rng(0) if rng is None else rng
    dtype = next(np.asarray(a).dtype for a in inputs if a is not None)
    default_atol, default_rtol = tolerance(dtype)
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol

    ours_in = [None if a is None else Tensor(np.asarray(a).copy(), requires_grad=grad)
               for a in inputs]
    torch_in = [_to_torch(a) for a in inputs]
    ours = our_fn(*ours_in, **kwargs)
    expected = torch_fn(*torch_in, **torch_kwargs)

    assert isinstance(ours, Tensor), f"Tensor in must give Tensor out, got {type(ours)}"
    assert ours.dtype == dtype, f"output dtype {ours.dtype} != input dtype {dtype}"
    assert_close(ours.data, expected.detach().numpy(), atol, rtol, "forward")
    if not grad:
        return ours.data

    upstream = rng.standard_normal(ours.shape)
    ours.backward(upstream.astype(dtype))
    expected.backward(torch.from_numpy(upstream))
    for index, (mine, theirs) in enumerate(zip(ours_in, torch_in, strict=True)):
        if mine is None:
            continue
        assert mine.grad is not None, f"input {index}: no gradient"
        assert mine.grad.shape == mine.shape, f"input {index}: grad shape {mine.grad.shape}"
        assert mine.grad.dtype == dtype, f"input {index}: grad dtype {mine.grad.dtype}"
        assert_close(mine.grad, theirs.grad.numpy(), atol, rtol, f"grad of input {index}")
    return ours.data


def finite_difference_grad(fn: Callable[..., np.ndarray], arrays: Sequence[np.ndarray],
                           eps: float = 1e-6) -> list[np.ndarray]:
    """Central differences of the scalar ``fn(*arrays)`` w.r.t. each array (float64).

    ``fn`` must return a scalar (e.g. ``(conv(x, w) * upstream).sum()``); each entry costs
    two evaluations, so keep the arrays tiny.
    """
    arrays = [np.array(a, dtype=np.float64, copy=True) for a in arrays]
    grads = []
    for array in arrays:
        grad = np.zeros_like(array)
        flat, flat_grad = array.reshape(-1), grad.reshape(-1)
        for i in range(flat.size):
            original = flat[i]
            flat[i] = original + eps
            plus = float(fn(*arrays))
            flat[i] = original - eps
            minus = float(fn(*arrays))
            flat[i] = original
            flat_grad[i] = (plus - minus) / (2 * eps)
        grads.append(grad)
    return grads


def check_array_and_tensor(ours: Callable, theirs: Callable, x: np.ndarray,
                           rng: np.random.Generator, grad: bool = True) -> np.ndarray:
    """:func:`check_op` on one input, plus the NumPy path: an array in gives an array of
    the same dtype out, equal to the Tensor result."""
    out = check_op(ours, theirs, [x], grad=grad, rng=rng)
    array_out = ours(x)
    assert isinstance(array_out, np.ndarray) and array_out.dtype == x.dtype
    np.testing.assert_array_equal(array_out, out)
    return out


def numeric_grad_check(fn: Callable, x: np.ndarray, rng: np.random.Generator,
                       eps: float = 1e-6, tol: float = 1e-7) -> None:
    """Central differences of <fn(x), g> against the VJP, in float64."""
    g = rng.standard_normal(np.shape(fn(x)))
    x_t = Tensor(x, requires_grad=True)
    fn(x_t).backward(g)
    (numeric,) = finite_difference_grad(lambda v: np.sum(fn(v) * g), [x], eps=eps)
    np.testing.assert_allclose(x_t.grad, numeric, rtol=tol, atol=tol)


def draw_padding(draw: Any, nd: int, most_pairs: int = 2) -> Any:
    """A hypothesis draw of a convolution's ``padding`` in each form cnnlab takes: an int, one
    int per dimension, per-side pairs (each side up to ``most_pairs``), or a string."""
    forms = ["int", "tuple", "pairs", "valid", "same", "full"] + (["causal"] if nd == 1 else [])
    form = draw(st.sampled_from(forms))
    if form == "int":
        return draw(st.integers(0, 2))
    if form == "tuple":
        return tuple(draw(st.integers(0, 2)) for _ in range(nd))
    if form == "pairs":
        return tuple((draw(st.integers(0, most_pairs)), draw(st.integers(0, most_pairs)))
                     for _ in range(nd))
    return form


# ---------------------------------------------------------------------------------------
# Kernels below autograd (ops/): a (forward, backward) pair of array functions is checked
# against another pair, the reference's or torch's (torch_vjp), with one upstream gradient.

ArrayVJP = tuple[Callable[..., np.ndarray],
                 Callable[..., Sequence[np.ndarray | None]] | None]


def torch_vjp(torch_fn: Callable[..., torch.Tensor]) -> ArrayVJP:
    """``torch_fn`` as a (forward, backward) pair on NumPy arrays, in float64:
    ``forward(*arrays)`` and ``backward(upstream, *arrays)`` -> one grad per array (None for
    a None input, zeros for an input the output does not depend on)."""

    def forward(*arrays: np.ndarray | None) -> np.ndarray:
        return torch_fn(*(_to_torch(a) for a in arrays)).detach().numpy()

    def backward(upstream: np.ndarray, *arrays: np.ndarray | None) -> list[np.ndarray | None]:
        tensors = [_to_torch(a) for a in arrays]
        torch_fn(*tensors).backward(torch.from_numpy(np.asarray(upstream, np.float64)))
        return [None if t is None else (t.grad.numpy() if t.grad is not None
                                        else np.zeros(t.shape)) for t in tensors]

    return forward, backward


def check_vjp(ours: ArrayVJP, oracle: ArrayVJP, inputs: Sequence[np.ndarray | None],
              rng: np.random.Generator | None = None, atol: float | None = None,
              rtol: float | None = None, what: str = "") -> np.ndarray:
    """:func:`check_op` for array kernels: ``ours`` and ``oracle`` are (forward, backward)
    pairs; ``backward(upstream, *inputs)`` returns one gradient per input, ``None`` only
    for an input that is ``None`` (a missing bias); any other missing gradient fails.
    Forward values, shape and dtype are compared, then, unless ``ours`` has no backward,
    every gradient for one random upstream.

    Returns our forward output.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    dtype = next(np.asarray(a).dtype for a in inputs if a is not None)
    default_atol, default_rtol = tolerance(dtype)
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    out = ours[0](*inputs)
    assert out.dtype == dtype, f"{what}: output dtype {out.dtype} != input dtype {dtype}"
    assert_close(out, oracle[0](*inputs), atol, rtol, f"{what} forward")
    if ours[1] is None:
        return out
    upstream = rng.standard_normal(out.shape).astype(dtype)
    expected = oracle[1](upstream, *inputs)
    grads = ours[1](upstream, *inputs)
    assert len(grads) == len(inputs), f"{what}: {len(grads)} grads for {len(inputs)} inputs"
    for index, (mine, theirs) in enumerate(zip(grads, expected, strict=True)):
        if inputs[index] is None:
            continue
        assert mine is not None, f"{what}: no gradient for input {index}"
        assert mine.dtype == dtype, f"{what}: grad {index} dtype {mine.dtype}"
        assert_close(mine, theirs, atol, rtol, f"{what} grad of input {index}")
    return out


# ---------------------------------------------------------------------------------------
# torch oracles for canonical convolutions: per-side (lo, hi) pairs and padding modes.

TORCH_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
                  "circular": "circular"}


def torch_pad_list(pairs: Sequence[tuple[int, int]]) -> list[int]:
    """Per-dim (lo, hi) pairs -> torch.nn.functional.pad's flat list, last dim first."""
    return [v for lo, hi in reversed(pairs) for v in (lo, hi)]


def torch_conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
               stride: Sequence[int], pairs: Sequence[tuple[int, int]],
               dilation: Sequence[int], groups: int, padding_mode: str) -> torch.Tensor:
    """torch oracle: pad explicitly in ``padding_mode``, then an unpadded convolution."""
    nd = w.dim() - 2
    if any(v for pair in pairs for v in pair):
        x = torch.nn.functional.pad(x, torch_pad_list(pairs), mode=TORCH_PAD_MODE[padding_mode])
    conv = getattr(torch.nn.functional, f"conv{nd}d")
    def as_torch(value):  # an int, or a per-dimension sequence
        return tuple(value) if isinstance(value, Sequence) else value

    return conv(x, w, b, stride=as_torch(stride), padding=0, dilation=as_torch(dilation),
                groups=groups)


def torch_conv_transpose(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None,
                         stride: Sequence[int], pairs: Sequence[tuple[int, int]],
                         output_padding: Sequence[int], groups: int,
                         dilation: Sequence[int]) -> torch.Tensor:
    """torch oracle for per-side padding. Symmetric pairs: torch's own transposed
    convolution. Otherwise the unpadded one, extended by ``output_padding`` zeros on the
    high side, cropped by (lo, hi), then the bias."""
    nd = w.dim() - 2
    conv_t = getattr(torch.nn.functional, f"conv_transpose{nd}d")
    options = {"stride": tuple(stride), "groups": groups, "dilation": tuple(dilation)}
    if all(lo == hi for lo, hi in pairs):
        return conv_t(x, w, b, padding=tuple(lo for lo, _ in pairs),
                      output_padding=tuple(output_padding), **options)
    full = conv_t(x, w, None, padding=0, output_padding=0, **options)
    full = torch.nn.functional.pad(full, torch_pad_list([(0, op) for op in output_padding]))
    crop = tuple(slice(lo, n - hi) for n, (lo, hi) in zip(full.shape[2:], pairs, strict=True))
    out = full[(Ellipsis, *crop)]
    return out if b is None else out + b.reshape((1, -1) + (1,) * nd)


# ---------------------------------------------------------------------------------------
# Hypothesis cases for the convolution kernels (ops/), with canonical settings: the padding
# is drawn in every form (draw_padding) and normalised by cnnlab.ops._args once.

# Largest spatial size drawn per rank, so that a 3-D case stays a few hundred voxels.
CONV_MAX_SIZE = {1: 9, 2: 6, 3: 4}
CONV_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


@st.composite
def conv_case(draw: Any, nd: int, padding_modes: Sequence[str] = CONV_PADDING_MODES,
              algorithm: str = "auto", layout: str = "auto") -> dict[str, Any]:
    """A valid convolution: ``x_shape`` (N, C_in, *spatial), ``w_shape`` (C_out, C_in/g,
    *kernel), ``bias`` (bool), ``request`` (a canonical ConvRequest), ``seed``."""
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    mode = draw(st.sampled_from(padding_modes))
    padding = draw_padding(draw, nd, most_pairs=3)
    # 'same' pads depend on the size (at most the dilated extent); the others do not.
    fixed = conv_padding(padding, (1,) * nd, kernel, stride, dilation, "conv_case")
    in_spatial = []
    for (lo, hi), k, d in zip(fixed, kernel, dilation, strict=True):
        need = 1 if padding == "same" else max(1, d * (k - 1) + 1 - lo - hi)
        if mode != "zeros" and padding == "same":  # then each side is at most d*(k-1)
            need = max(need, d * (k - 1) + 1)
        elif mode == "reflect":
            need = max(need, max(lo, hi) + 1)
        elif mode == "circular":
            need = max(need, max(lo, hi))
        in_spatial.append(need + draw(st.integers(0, CONV_MAX_SIZE[nd] - 1)))
    pairs = conv_padding(padding, tuple(in_spatial), kernel, stride, dilation, "conv_case")
    assert min(conv_output_shape(in_spatial, kernel, stride, pairs, dilation)) >= 1
    return {
        "x_shape": (draw(st.integers(1, 2)), c_in, *in_spatial),
        "w_shape": (c_out, c_in // groups, *kernel),
        "bias": draw(st.booleans()),
        "request": ConvRequest(stride, pairs, dilation, groups, mode, algorithm, layout),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@st.composite
def conv_transpose_case(draw: Any, nd: int, algorithm: str = "auto") -> dict[str, Any]:
    """A valid transposed convolution: ``x_shape`` (N, C_in, *spatial), ``w_shape`` (C_in,
    C_out/g, *kernel), ``bias``, ``request`` (per-side pairs), ``output_padding``,
    ``out_spatial``, ``seed``."""
    groups = draw(st.integers(1, 3))
    c_in = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    stride = tuple(draw(st.integers(1, 3)) for _ in range(nd))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(nd))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1))
                           for s, d in zip(stride, dilation, strict=True))
    pairs = tuple((draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(nd))
    in_spatial = tuple(draw(st.integers(1, CONV_MAX_SIZE[nd] - 1)) for _ in range(nd))
    out_spatial = conv_transpose_output_shape(in_spatial, kernel, stride, pairs, dilation,
                                              output_padding)
    assume(min(out_spatial) >= 1)
    return {
        "x_shape": (draw(st.integers(1, 2)), c_in, *in_spatial),
        "w_shape": (c_in, draw(st.integers(1, 2)), *kernel),
        "bias": draw(st.booleans()),
        "request": ConvRequest(stride, pairs, dilation, groups, "zeros", algorithm),
        "output_padding": output_padding,
        "out_spatial": out_spatial,
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


def conv_arrays(case: dict[str, Any], dtype: Any = np.float64, transposed: bool = False
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.random.Generator]:
    """Random (x, w, bias or None, rng) for a :func:`conv_case` / :func:`conv_transpose_case`."""
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(case["x_shape"]).astype(dtype)
    w = rng.standard_normal(case["w_shape"]).astype(dtype)
    channels = w.shape[1] * case["request"].groups if transposed else w.shape[0]
    b = rng.standard_normal(channels).astype(dtype) if case["bias"] else None
    return x, w, b, rng


@contextlib.contextmanager
def count_calls(module: Any, *names: str) -> Iterator[dict[str, int]]:
    """Count the calls of ``module.<name>`` for each name, still calling through: a test that
    forces a path asserts that the path ran."""
    calls = dict.fromkeys(names, 0)
    with pytest.MonkeyPatch.context() as patch:
        for name in names:
            original = getattr(module, name)

            def spy(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any
                    ) -> Any:
                calls[_name] += 1
                return _original(*args, **kwargs)

            patch.setattr(module, name, spy)
        yield calls


# The float dtypes every op runs in, and small array shapes for elementwise ops.
DTYPES = (np.float64, np.float32)
ARRAY_SHAPES = hnp.array_shapes(min_dims=1, max_dims=4, max_side=5)


def random_array(shape, seed, dtype=np.float64, scale=1.0) -> np.ndarray:
    """Standard normal values (times ``scale``) of ``shape``, from ``seed``, in ``dtype``."""
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def fd_check(fn, arrays, seed=0):
    """Every array's gradient of ``sum(fn(*tensors) * upstream)`` by central differences."""
    arrays = [np.asarray(a, np.float64) for a in arrays]
    tensors = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*tensors)
    upstream = np.random.default_rng(seed).standard_normal(out.shape)
    (out * upstream).sum().backward()
    expected = finite_difference_grad(
        lambda *xs: np.sum(np.asarray(fn(*xs)) * upstream), arrays)
    for index, (tensor, grad) in enumerate(zip(tensors, expected, strict=True)):
        assert_close(tensor.grad, grad, 1e-6, 1e-5, f"finite differences, input {index}")


# ---------------------------------------------------------------------------------------
# (forward, backward) pairs of the reference kernels and of torch, for check_vjp.


def reference_conv(request: ConvRequest):
    """The reference convolution (``cnnlab.ops.reference``) as a (forward, backward) pair."""
    return (lambda x, w, b: reference.conv_forward(x, w, b, request),
            lambda g, x, w, b: reference.conv_backward(x, w, g, request,
                                                       need_bias=b is not None))


def torch_conv_of(request: ConvRequest):
    """torch's convolution with ``request``'s settings, as a (forward, backward) pair."""
    return torch_vjp(lambda x, w, b: torch_conv(x, w, b, request.stride, request.padding,
                                                request.dilation, request.groups,
                                                request.padding_mode))


def reference_conv_transpose(request: ConvRequest, out_spatial: tuple[int, ...]):
    """The reference transposed convolution as a (forward, backward) pair."""
    return (lambda x, w, b: reference.conv_transpose_forward(x, w, b, request, out_spatial),
            lambda g, x, w, b: reference.conv_transpose_backward(x, w, g, request,
                                                                 need_bias=b is not None))


def torch_conv_transpose_of(case: dict):
    """torch's transposed convolution for a :func:`conv_transpose_case`."""
    request = case["request"]
    return torch_vjp(lambda x, w, b: torch_conv_transpose(
        x, w, b, request.stride, request.padding, case["output_padding"], request.groups,
        request.dilation))


def run_with_address_space(code: str, limit_bytes: int) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh Python whose address space is capped at ``limit_bytes``
    (``RLIMIT_AS``; POSIX), with one BLAS thread and this checkout's ``src`` first on the
    path: a test that a reader or kernel stays within bounded memory."""
    prelude = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, ({limit_bytes}, {limit_bytes}))
    """)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)
