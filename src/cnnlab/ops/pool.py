"""N-D pooling kernels on arrays ``(N, C, *spatial)``, each forward with its VJP below it.

Every fixed-window pooling reads :func:`cnnlab.ops.windows.window_view` of the padded
input, ``(N, C, *out, *kernel)``, and reduces over the kernel axes. Max pooling records the
flat input index of each maximum (PyTorch's ``return_indices``), so its backward and
``max_unpool`` are one scatter / gather on flat indices. Adaptive pooling gathers its
variable windows through one flat index map. Arguments are canonical (see ``_args.py``):
per-dimension tuples, validated by the caller.
"""

from __future__ import annotations

from math import comb

import numpy as np

from ._args import PoolRequest, all_finite, prod
from ._args import PoolRequest as PoolSpec  # noqa: F401 - its name before issue 12
from .pad import pad_backward, pad_forward
from .windows import window_adjoint, window_padding, window_view


def _output_grids(out_spatial: tuple[int, ...]) -> list[np.ndarray]:
    """``arange(o_i)`` for each spatial axis, shaped to broadcast against (N, C, *out)."""
    ndim = len(out_spatial)
    grids = []
    for axis, size in enumerate(out_spatial):
        shape = [1] * (2 + ndim)
        shape[2 + axis] = size
        grids.append(np.arange(size).reshape(shape))
    return grids


def _flat_index(coords: list[np.ndarray], in_spatial: tuple[int, ...]) -> np.ndarray:
    """Row-major flat index into ``in_spatial`` (no bounds check, as PyTorch's formula)."""
    flat = np.zeros(np.broadcast_shapes(*(c.shape for c in coords)), dtype=np.int64)
    for coord, size in zip(coords, in_spatial, strict=True):
        flat = flat * size + coord
    return flat


def scatter_flat(values: np.ndarray, indices: np.ndarray, in_spatial: tuple[int, ...]
                 ) -> np.ndarray:
    """Sum ``values`` (N, C, ...) into zeros (N, C, *in_spatial) at flat ``indices``.

    One ``bincount`` over (channel-offset + index); out-of-range indices are dropped.
    """
    batch, channels = values.shape[:2]
    size = prod(in_spatial)
    per_plane = prod(values.shape[2:])
    indices = np.broadcast_to(indices, values.shape).reshape(batch * channels, per_plane)
    inside = (indices >= 0) & (indices < size)
    offsets = np.arange(batch * channels, dtype=np.int64)[:, None] * size
    flat = np.where(inside, indices + offsets, 0).ravel()
    weights = np.where(inside, values.reshape(batch * channels, per_plane), 0).ravel()
    summed = np.bincount(flat, weights=weights, minlength=batch * channels * size)
    return summed.astype(values.dtype, copy=False).reshape(batch, channels, *in_spatial)


def gather_flat(source: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``source`` (N, C, *spatial) read at flat ``indices`` (N, C, ...) per (n, c) plane."""
    batch, channels = source.shape[:2]
    planes = source.reshape(batch, channels, prod(source.shape[2:]))
    picked = np.take_along_axis(planes, indices.reshape(batch, channels, prod(indices.shape[2:])),
                                axis=-1)
    return picked.reshape(indices.shape)


# ---------------------------------------------------------------------------------------
# Max pooling.


def _argmax_like_torch(columns: np.ndarray) -> np.ndarray:
    """Argmax over the last axis with PyTorch's scan rule (see :func:`_axis_max`)."""
    arg = np.argmax(columns, axis=-1)
    nan = np.isnan(columns)
    if nan.any():
        has_nan = nan.any(axis=-1)
        last_nan = columns.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
        arg = np.where(has_nan, last_nan, arg)
    return arg


def _axis_taps(a: np.ndarray, axis: int, spec: PoolRequest) -> list[np.ndarray]:
    """The ``kernel[axis]`` strided views of ``a`` (N, C, *spatial) along spatial ``axis``:
    view ``t`` holds ``a[..., o*s + t*d, ...]`` for ``o < out_spatial[axis]``."""
    k, s, d, o = (spec.kernel[axis], spec.stride[axis], spec.dilation[axis],
                  spec.out_spatial[axis])
    lead = (slice(None),) * (2 + axis)
    return [a[(*lead, slice(t * d, t * d + (o - 1) * s + 1, s))] for t in range(k)]


def _axis_max(a: np.ndarray, axis: int, spec: PoolRequest, nan_aware: bool
              ) -> tuple[np.ndarray, np.ndarray]:
    """Running max along one spatial axis: (max, tap index along that axis), PyTorch's rule.

    PyTorch scans a window in order and takes a value when ``val > max or isnan(val)``
    (aten/src/ATen/native/cpu/MaxPoolKernel.cpp): ties go to the first maximum, and a
    window holding NaN returns its LAST NaN. A rectangular window's max is the max over
    rows of the row maxima, and this rule picks the same element done axis by axis.
    """
    return _running_max(_axis_taps(a, axis, spec), nan_aware)


def _running_max(taps: list[np.ndarray], nan_aware: bool) -> tuple[np.ndarray, np.ndarray]:
    """Elementwise max of same-shape ``taps`` scanned in order, with the index of the one
    taken (PyTorch's rule, see :func:`_axis_max`): int8 (int64 past 127 taps)."""
    if len(taps) == 1:
        return taps[0].copy(), np.zeros(taps[0].shape, np.int8)
    better = np.greater(taps[1], taps[0])  # decided before the running max moves
    if nan_aware:
        better |= np.isnan(taps[1])
    out = np.maximum(taps[0], taps[1])  # NaN-propagating, like the scan
    if len(taps) == 2:
        return out, better.view(np.int8)  # 0/1: no second array
    arg = better.astype(np.int8 if len(taps) <= 127 else np.int64)
    taken = np.empty_like(arg)
    for index, view in enumerate(taps[2:], start=2):
        np.greater(view, out, out=better)
        if nan_aware:
            better |= np.isnan(view)
        np.maximum(out, view, out=out)
        # A tap taken now has a larger index than any taken before: arg = max(arg, index
        # where taken, else 0), two fast passes (np.copyto with where= took 60x longer).
        np.multiply(better, arg.dtype.type(index), out=taken, casting="unsafe")
        np.maximum(arg, taken, out=arg)
    return out, arg


def max_pool_taps(x: np.ndarray, spec: PoolRequest
                  ) -> tuple[np.ndarray, tuple[np.ndarray, ...], bool]:
    """x (N, C, *spatial) -> (max (N, C, *out), per-axis tap indices of each max, whether
    the max is finite everywhere).

    Separable: the window max is reduced one spatial axis at a time, last axis first, so a
    ``k x k`` window costs ``2(k - 1)`` vectorised passes, not ``k*k - 1``. ``taps[a]`` is
    the tap index along axis ``a`` chosen by the stage that reduced it (shape: input size
    on axes before ``a``, output size from ``a`` on). That is all
    :func:`max_pool_taps_backward` needs; :func:`max_pool_nd` turns it into PyTorch's
    flat indices when they are asked for.
    """
    pads = window_padding(x.shape[2:], spec.padding, spec.kernel, spec.stride, spec.dilation,
                          spec.out_spatial)
    padded = pad_forward(x, pads, "zeros", value=-np.inf)
    out, taps = _separable_max(padded, spec, nan_aware=False)
    finite = all_finite(out)
    if not finite:  # a NaN in x reaches the output (np.maximum propagates it)
        out, taps = _separable_max(padded, spec, nan_aware=True)
    return out, taps, finite


def _separable_max(padded: np.ndarray, spec: PoolRequest, nan_aware: bool
                   ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    out, taps = padded, []
    for axis in reversed(range(len(spec.kernel))):
        out, arg = _axis_max(out, axis, spec, nan_aware)
        taps.insert(0, arg)
    return out, tuple(taps)


def max_over_phases(phased: np.ndarray, ndim: int) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Max over the window axes of ``phased`` (N, g, s_1, ..., s_ndim, C/g, *out) -> (N, C,
    *out), and the index chosen along each window axis.

    Axis ``s_i`` holds window offset ``0 .. s_i - 1`` along spatial axis ``i`` of a
    non-overlapping pooling window (see :mod:`cnnlab.ops.conv_pool`). The axes are reduced
    last first, as :func:`max_pool_taps` does, so ties and NaN follow PyTorch's scan rule.
    """
    out, taps = _phase_max(phased, ndim, nan_aware=False)
    if not all_finite(out):
        out, taps = _phase_max(phased, ndim, nan_aware=True)
    return out.reshape(out.shape[0], -1, *out.shape[3:]), taps


def _phase_max(phased: np.ndarray, ndim: int, nan_aware: bool
               ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    out, taps = phased, []
    for axis in reversed(range(2, 2 + ndim)):
        lead = (slice(None),) * axis
        out, arg = _running_max([out[(*lead, index)] for index in range(out.shape[axis])],
                                nan_aware)
        taps.insert(0, arg)
    return out, tuple(taps)


def max_over_phases_backward(grad: np.ndarray, taps: tuple[np.ndarray, ...],
                             phased_shape: tuple[int, ...], finite: bool | None = None
                             ) -> np.ndarray:
    """VJP of :func:`max_over_phases`: grad (N, C, *out) -> (phased_shape), each output's
    gradient at the window offset it took, zeros elsewhere. ``finite``: whether ``grad`` is
    known to be finite (None: check)."""
    grad = grad.reshape((*taps[0].shape[:2], -1, *grad.shape[2:]))  # (N, g, C/g, *out)
    if finite is None:
        finite = all_finite(grad)  # then it stays finite: each stage copies or zeroes
    for stage, arg in enumerate(taps):
        axis = 2 + stage
        shape = (*grad.shape[:axis], phased_shape[axis], *grad.shape[axis:])
        grad_in = (np.empty if finite else np.zeros)(shape, grad.dtype)
        views = [grad_in[(*(slice(None),) * axis, index)] for index in range(shape[axis])]
        _route_to_chosen(grad, arg, views, finite)
        grad = grad_in
    return grad


def _route_to_chosen(grad: np.ndarray, arg: np.ndarray, views: list[np.ndarray],
                     finite: bool) -> None:
    """``views[t] <- grad`` where ``arg == t``, for taps whose views do not overlap (the
    places no tap chose keep what they hold: zeros, unless every element is written).

    A product with the 0/1 mask is the fast form (about 8x a masked copy), but 0 * NaN or
    0 * inf would leak a non-finite gradient to the taps not chosen: only when ``finite``.
    """
    if finite and len(views) == 2:
        # Tap 1 takes grad * chosen, tap 0 the rest: grad - that is grad or exactly 0.
        # (_running_max keeps a 2-tap choice as the int8 view of a bool array.)
        np.multiply(grad, arg.view(np.bool_), out=views[1])
        np.subtract(grad, views[1], out=views[0])
        return
    for index, view in enumerate(views):
        if finite:
            np.multiply(grad, arg == index, out=view)
        else:
            np.copyto(view, grad, where=arg == index)


def _flat_taps(taps: tuple[np.ndarray, ...], spec: PoolRequest) -> np.ndarray:
    """Per-axis tap indices -> the C-order tap index into ``kernel`` of each window's max."""
    out_shape = taps[0].shape
    ndim = len(spec.kernel)
    lead = [np.arange(n).reshape((n,) + (1,) * (ndim + 1 - i))
            for i, n in enumerate(out_shape[:2])]
    grids = _output_grids(spec.out_spatial)
    chosen: list[np.ndarray] = []
    for axis, arg in enumerate(taps):
        # the stage of ``axis`` saw the earlier axes at input resolution
        index = [grids[b] * spec.stride[b] + chosen[b] * spec.dilation[b] if b < axis
                 else grids[b] for b in range(ndim)]
        chosen.append(arg[(*lead, *index)].astype(np.int64))
    flat = np.zeros(out_shape, np.int64)
    for axis, tap in enumerate(chosen):
        flat = flat * spec.kernel[axis] + tap
    return flat


def max_pool_taps_backward(grad: np.ndarray, out: np.ndarray, taps: tuple[np.ndarray, ...],
                           in_spatial: tuple[int, ...], spec: PoolRequest,
                           out_finite: bool = False) -> np.ndarray:
    """VJP of :func:`max_pool_taps`: the stages in reverse, each sending an output's gradient
    to the tap it chose along its axis (overlapping windows add up). ``out_finite``: the
    forward found ``out`` finite (then no window is all -inf, which is not checked again)."""
    if not out_finite and out.size and not out.min() > -np.inf:
        # -inf windows take PyTorch's "first in-bounds tap" index (NaN: also the exact path).
        _, indices = _flat_indices(out, _flat_taps(taps, spec), in_spatial, spec)
        return scatter_flat(grad, indices, in_spatial)
    pads = window_padding(in_spatial, spec.padding, spec.kernel, spec.stride, spec.dilation,
                          spec.out_spatial)
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, pads))
    known_finite = False
    for axis, arg in enumerate(taps):
        shape = (*grad.shape[:2 + axis], padded[axis], *grad.shape[3 + axis:])
        # Windows that do not overlap (stride >= dilated kernel) write disjoint slices.
        k, s, d = spec.kernel[axis], spec.stride[axis], spec.dilation[axis]
        disjoint = s >= d * (k - 1) + 1
        # A finite gradient stays finite through a disjoint stage (each element is a
        # copy or a zero); overlapping windows add up, and a sum can overflow to inf.
        finite = known_finite or all_finite(grad)
        known_finite = finite and disjoint
        # Windows that tile the axis (k == s, no dilation: the usual 2x2 pooling) write
        # every element, so only the others start from zeros.
        tiles = finite and d == 1 and s == k and k * grad.shape[2 + axis] == shape[2 + axis]
        grad_in = (np.empty if tiles else np.zeros)(shape, dtype=grad.dtype)
        views = _axis_taps(grad_in, axis, spec)
        if disjoint:
            _route_to_chosen(grad, arg, views, finite)
            grad = grad_in
            continue
        # PyTorch adds an input's gradients in output order. Tap t of output o reads input
        # o*s + t*d, so of the outputs reaching one input the later taps are the earlier
        # outputs: taps in reverse add them in PyTorch's order (its exact sums along one
        # overlapping axis; over several, the stages group the sums differently).
        for index, view in reversed(list(enumerate(views))):
            chosen = arg == index
            if finite:
                view += grad * chosen
            else:
                np.add(view, grad, out=view, where=chosen)
        grad = grad_in
    return pad_backward(grad, pads)


def max_pool_nd(x: np.ndarray, spec: PoolRequest) -> tuple[np.ndarray, np.ndarray]:
    """x (N, C, *spatial) -> (max (N, C, *out), flat input indices (N, C, *out) int64).

    Padding is -inf. ``indices[n, c, o]`` is the row-major index into ``spatial`` of the
    chosen element, as ``torch.nn.functional.max_pool*d(..., return_indices=True)``.
    """
    out, taps, _ = max_pool_taps(x, spec)
    return _flat_indices(out, _flat_taps(taps, spec), x.shape[2:], spec)


def _flat_indices(out: np.ndarray, arg: np.ndarray, in_spatial: tuple[int, ...],
                  spec: PoolRequest) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.unravel_index(arg, spec.kernel)
    # A window whose max is -inf (all -inf, or padding only) keeps PyTorch's initial index:
    # its first in-bounds tap, k = ceil(max(-start, 0) / d) per axis.
    all_inf = out == -np.inf
    coords = []
    for grid, offset, s, p, d in zip(_output_grids(spec.out_spatial), offsets, spec.stride,
                                     spec.padding, spec.dilation, strict=True):
        start = grid * s - p
        first_inside = -(-np.maximum(-start, 0) // d)
        coords.append(start + np.where(all_inf, first_inside, offset) * d)
    return out, _flat_index(coords, in_spatial)


def max_pool_nd_backward(grad: np.ndarray, indices: np.ndarray, in_spatial: tuple[int, ...]
                         ) -> np.ndarray:
    """VJP of :func:`max_pool_nd`: each output's gradient goes to its argmax (summed)."""
    return scatter_flat(grad, indices, in_spatial)


# ---------------------------------------------------------------------------------------
# Average pooling.


def avg_pool_divisor(in_spatial: tuple[int, ...], spec: PoolRequest, count_include_pad: bool,
                     divisor_override: int | None) -> np.ndarray | int:
    """The divisor of each window (*out), as PyTorch's AvgPoolKernel.cpp.

    With ``count_include_pad`` a window counts the padded input it covers (clipped at
    ``n + padding``, so ceil-mode overhang beyond the padding is not counted); otherwise
    only real input samples. Both counts are products of per-axis counts.
    """
    if divisor_override is not None:
        return divisor_override
    divisor = np.ones((), dtype=np.int64)
    for n, k, s, p, o in zip(in_spatial, spec.kernel, spec.stride, spec.padding,
                             spec.out_spatial, strict=True):
        start = np.arange(o) * s - p
        end = np.minimum(start + k, n + p)
        if count_include_pad:
            count = end - start
        else:
            count = np.minimum(end, n) - np.maximum(start, 0)
        divisor = np.multiply.outer(divisor, count)
    return divisor


def avg_pool_nd(x: np.ndarray, spec: PoolRequest, count_include_pad: bool = True,
                divisor_override: int | None = None) -> np.ndarray:
    """x (N, C, *spatial) -> window sums / :func:`avg_pool_divisor`, (N, C, *out)."""
    ndim = len(spec.kernel)
    pads = window_padding(x.shape[2:], spec.padding, spec.kernel, spec.stride, spec.dilation,
                          spec.out_spatial)
    windows = window_view(pad_forward(x, pads), spec.kernel, spec.stride, spec.dilation,
                          spec.out_spatial)
    sums = windows.sum(axis=tuple(range(2 + ndim, 2 + 2 * ndim)))
    divisor = avg_pool_divisor(x.shape[2:], spec, count_include_pad, divisor_override)
    return (sums / divisor).astype(x.dtype, copy=False)


def avg_pool_nd_backward(grad: np.ndarray, in_spatial: tuple[int, ...], spec: PoolRequest,
                         count_include_pad: bool = True, divisor_override: int | None = None
                         ) -> np.ndarray:
    """VJP of :func:`avg_pool_nd`: ``grad / divisor`` spread over each window (col2im)."""
    ndim = len(spec.kernel)
    divisor = avg_pool_divisor(in_spatial, spec, count_include_pad, divisor_override)
    per_window = (grad / divisor).astype(grad.dtype, copy=False)
    windows = np.broadcast_to(per_window[(Ellipsis, *(None,) * ndim)],
                              per_window.shape + spec.kernel)
    pads = window_padding(in_spatial, spec.padding, spec.kernel, spec.stride, spec.dilation,
                          spec.out_spatial)
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, pads, strict=True))
    return pad_backward(window_adjoint(windows, padded, spec.stride, spec.dilation), pads)


# ---------------------------------------------------------------------------------------
# Power-average (LP) pooling, as torch.nn.functional.lp_pool*d computes it:
#   y = (sign(a) * relu(|a|) * prod(kernel)) ** (1/p),  a = avg_pool(x ** p)
# so y = (sum x^p)^(1/p) away from ceil-mode overhang, and the gradient is zero where a = 0.


def lp_pool_nd(x: np.ndarray, norm_type: float, spec: PoolRequest) -> np.ndarray:
    """x (N, C, *spatial) -> (N, C, *out); ``norm_type`` = +-inf is max of |x| / -max(-|x|)."""
    if norm_type == np.inf:
        return max_pool_nd(np.abs(x), spec)[0]
    if norm_type == -np.inf:
        return -max_pool_nd(-np.abs(x), spec)[0]
    sums = avg_pool_nd(x ** norm_type, spec) * prod(spec.kernel)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sums ** (1.0 / norm_type)).astype(x.dtype, copy=False)


def lp_pool_nd_backward(grad: np.ndarray, x: np.ndarray, norm_type: float, spec: PoolRequest
                        ) -> np.ndarray:
    """VJP of :func:`lp_pool_nd` (PyTorch's chain rule, including its zero at a = 0)."""
    if abs(norm_type) == np.inf:
        sign = 1 if norm_type > 0 else -1
        _, indices = max_pool_nd(sign * np.abs(x), spec)
        return max_pool_nd_backward(grad, indices, x.shape[2:]) * np.sign(x)
    kernel_numel = prod(spec.kernel)
    average = avg_pool_nd(x ** norm_type, spec)
    with np.errstate(invalid="ignore", divide="ignore"):
        outer = grad * (1.0 / norm_type) * (average * kernel_numel) ** (1.0 / norm_type - 1)
        grad_average = np.where(average != 0, outer * kernel_numel, 0).astype(grad.dtype)
        grad_power = avg_pool_nd_backward(grad_average, x.shape[2:], spec)
        return grad_power * (norm_type * x ** (norm_type - 1))


# ---------------------------------------------------------------------------------------
# Adaptive pooling: output o of n inputs reads [floor(o*n/out), ceil((o+1)*n/out)).


def adaptive_index_map(in_spatial: tuple[int, ...], out_spatial: tuple[int, ...]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Flat input index of each tap and its validity, both (prod(out), prod(max_window)).

    Windows differ in size by at most one per axis; shorter ones repeat their last sample
    in the padded taps, which are marked invalid (harmless to max, masked out of sums).
    """
    per_axis_index, per_axis_valid = [], []
    for n, o in zip(in_spatial, out_spatial, strict=True):
        start = (np.arange(o) * n) // o
        end = -(-(np.arange(o) + 1) * n // o)
        taps = start[:, None] + np.arange(int((end - start).max()))[None, :]
        per_axis_valid.append(taps < end[:, None])
        per_axis_index.append(np.minimum(taps, end[:, None] - 1))
    ndim = len(in_spatial)
    flat = np.zeros((1,) * (2 * ndim), dtype=np.int64)
    valid = np.ones((1,) * (2 * ndim), dtype=bool)
    axes = zip(per_axis_index, per_axis_valid, in_spatial, strict=True)
    for axis, (index, inside, n) in enumerate(axes):
        shape = [1] * (2 * ndim)  # axes (*out, *taps)
        shape[axis], shape[ndim + axis] = index.shape
        flat = flat * n + index.reshape(shape)
        valid = valid & inside.reshape(shape)
    rows = prod(out_spatial)
    return flat.reshape(rows, -1), np.broadcast_to(valid, flat.shape).reshape(rows, -1)


def adaptive_avg_pool_nd(x: np.ndarray, out_spatial: tuple[int, ...]) -> np.ndarray:
    """x (N, C, *spatial) -> (N, C, *out_spatial): the mean of each adaptive window."""
    flat, valid = adaptive_index_map(x.shape[2:], out_spatial)
    planes = x.reshape(*x.shape[:2], prod(x.shape[2:]))
    weights = valid / valid.sum(axis=1, keepdims=True)
    out = np.einsum("ncok,ok->nco", planes[:, :, flat], weights.astype(x.dtype))
    return out.reshape(*x.shape[:2], *out_spatial)


def adaptive_avg_pool_nd_backward(grad: np.ndarray, in_spatial: tuple[int, ...]
                                  ) -> np.ndarray:
    """VJP of :func:`adaptive_avg_pool_nd`: ``grad / window size`` scattered to each tap."""
    flat, valid = adaptive_index_map(in_spatial, grad.shape[2:])
    weights = (valid / valid.sum(axis=1, keepdims=True)).astype(grad.dtype)
    taps = grad.reshape(*grad.shape[:2], prod(grad.shape[2:]), 1) * weights
    return scatter_flat(taps, flat, in_spatial)


def adaptive_max_pool_nd(x: np.ndarray, out_spatial: tuple[int, ...]
                         ) -> tuple[np.ndarray, np.ndarray]:
    """x (N, C, *spatial) -> (max, flat input indices), each (N, C, *out_spatial)."""
    flat, _ = adaptive_index_map(x.shape[2:], out_spatial)
    columns = x.reshape(*x.shape[:2], prod(x.shape[2:]))[:, :, flat]  # (N, C, prod(out), taps)
    arg = _argmax_like_torch(columns)
    out = np.take_along_axis(columns, arg[..., None], axis=-1)[..., 0]
    indices = flat[np.arange(flat.shape[0]), arg]
    shape = (*x.shape[:2], *out_spatial)
    return out.reshape(shape), indices.reshape(shape)


# The VJP of adaptive max pooling is max_pool_nd_backward on its indices.


# ---------------------------------------------------------------------------------------
# Max unpooling: scatter values to their recorded indices (zeros elsewhere).


def max_unpool_nd(x: np.ndarray, indices: np.ndarray, out_spatial: tuple[int, ...]
                  ) -> np.ndarray:
    """x, indices (N, C, *in) -> (N, C, *out_spatial) with ``out.flat[indices] = x``."""
    batch, channels = x.shape[:2]
    out = np.zeros((batch * channels, prod(out_spatial)), dtype=x.dtype)
    rows = np.arange(batch * channels)[:, None]
    per_plane = prod(x.shape[2:])
    out[rows, indices.reshape(batch * channels, per_plane)] = x.reshape(batch * channels,
                                                                         per_plane)
    return out.reshape(batch, channels, *out_spatial)


def max_unpool_nd_backward(grad: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """VJP of :func:`max_unpool_nd`: read the gradient back at the indices."""
    return gather_flat(grad, indices)


# ---------------------------------------------------------------------------------------
# Blur pooling filter (Zhang 2019, "Making Convolutional Networks Shift-Invariant Again").


def binomial_filter(kernel: tuple[int, ...], dtype: np.dtype | type = np.float64
                    ) -> np.ndarray:
    """Normalised binomial low-pass filter (*kernel): outer product of Pascal-triangle rows.

    >>> binomial_filter((3,)).tolist()
    [0.25, 0.5, 0.25]
    """
    result = np.ones((), dtype=np.float64)
    for k in kernel:
        row = np.array([comb(k - 1, j) for j in range(k)], dtype=np.float64)
        result = np.multiply.outer(result, row / row.sum())
    return result.astype(dtype)
