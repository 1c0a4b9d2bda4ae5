"""The layers' sums, read straight off their definitions: the first oracle of every fast path.

Each function is one sliding-window view (:func:`cnnlab.ops.windows.window_view`) of the
padded input, ``(N, C, *out, *kernel)``, followed by an einsum with the weight or a
reduction over the kernel axes; each VJP sends its gradient back through the adjoints of
the same two steps (:func:`~cnnlab.ops.windows.window_adjoint`, then
:func:`~cnnlab.ops.pad.pad_backward`). A convolution layer computes the lecture's discrete
sum in the form CNNs (and PyTorch) use, cross-correlation, the filter not flipped::

    y[n, o, p] = bias[o] + sum_{c, k} x_pad[n, c, p*s + k*d] * w[o, c, k]

with ``c`` over the ``C_in/groups`` channels of ``o``'s group. The lecture's convolution
``(f * g)[p] = sum_k f[k] g[p - k]`` is the same sum with the filter flipped: a layer with
weight ``w[..., ::-1]`` (and ``'full'`` padding for the full result). Nothing here is fast (no
chunks, no phase grid, no transforms) and nothing is shared with ``gemm.py`` or ``fft.py``
beyond the padding and the window view, so a bug in a fast path cannot hide in both.
``algorithm="direct"`` in :mod:`cnnlab.functional` runs the convolutions through here
(:mod:`cnnlab.ops.dispatch`).

Arguments are canonical (``_args.py``): :class:`~cnnlab.ops._args.ConvRequest` and
:class:`~cnnlab.ops._args.PoolRequest`, arrays with a batch axis ``(N, C, *spatial)``.
"""

from __future__ import annotations

import numpy as np

from ._args import ConvRequest, PoolRequest, conv_output_shape, prod
from .pad import pad_backward, pad_forward
from .windows import window_adjoint, window_padding, window_view

# Einsum letters, one per spatial axis: output positions p, q, ..., kernel taps k, l, ...
# (n: batch, g: group, c: input channel, o: output channel).
_OUT_AXES = "pqrstu"
_TAP_AXES = "klmvwx"


def _subscripts(ndim: int) -> tuple[str, str]:
    """(output-position letters, kernel-tap letters) for ``ndim`` spatial axes."""
    if ndim > len(_OUT_AXES):
        raise ValueError(f"reference: at most {len(_OUT_AXES)} spatial dims, got {ndim}")
    return _OUT_AXES[:ndim], _TAP_AXES[:ndim]


def _by_group(a: np.ndarray, groups: int) -> np.ndarray:
    """(N, C, ...) -> (N, groups, C/groups, ...): channel ``g*C/groups + c`` at [:, g, c]."""
    return a.reshape(a.shape[0], groups, a.shape[1] // groups, *a.shape[2:])


def _weight_by_group(w: np.ndarray, groups: int) -> np.ndarray:
    """(C_out, C_in/g, *kernel) -> (g, C_out/g, C_in/g, *kernel), a view."""
    return w.reshape(groups, w.shape[0] // groups, *w.shape[1:])


def _add_bias(y: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    if bias is not None:
        y = y + bias.reshape((1, -1) + (1,) * (y.ndim - 2))
    return y


# ---------------------------------------------------------------------------------------
# Convolution: y = einsum(window_view(pad(x)), w).


def _conv_windows(x: np.ndarray, kernel: tuple[int, ...], request: ConvRequest) -> np.ndarray:
    """x_pad[n, c, p*s + k*d] as a view (N, C_in, *out, *kernel), any padding mode."""
    out_spatial = conv_output_shape(x.shape[2:], kernel, request.stride, request.padding,
                                    request.dilation)
    x_pad = pad_forward(x, request.padding, request.padding_mode)
    return window_view(x_pad, kernel, request.stride, request.dilation, out_spatial)


def conv_forward(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None,
                 request: ConvRequest) -> np.ndarray:
    """``y[n, o, p] = bias[o] + sum_{c, k} x_pad[n, c, p*s + k*d] w[o, c, k]``.

    x: (N, C_in, *spatial), w: (C_out, C_in/groups, *kernel), bias: (C_out,) or None
    -> (N, C_out, *out), ``out`` by :func:`cnnlab.ops._args.conv_output_shape`. Groups: the
    channels are split into (groups, C/groups) and each group sums over its own.

    >>> from cnnlab.ops.dispatch import ConvRequest
    >>> request = ConvRequest(stride=(1,), padding=((1, 1),), dilation=(1,), groups=1)
    >>> conv_forward(np.array([[[1.0, 2.0, 3.0]]]), np.ones((1, 1, 3)), None, request)
    array([[[3., 6., 5.]]])
    """
    p, k = _subscripts(x.ndim - 2)
    groups = request.groups
    windows = _by_group(_conv_windows(x, w.shape[2:], request), groups)
    y = np.einsum(f"ngc{p}{k},goc{k}->ngo{p}", windows, _weight_by_group(w, groups))
    return _add_bias(y.reshape(x.shape[0], w.shape[0], *y.shape[3:]), bias)


def conv_backward(
    x: np.ndarray, w: np.ndarray, gy: np.ndarray, request: ConvRequest,
    need_input: bool = True, need_weight: bool = True, need_bias: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """VJPs of :func:`conv_forward` for x, w and bias, each ``None`` when not needed.

    gy: (N, C_out, *out). The sum is linear in each argument, so each gradient is the same
    sum with the output gradient in its place::

        grad_w[o, c, k] = sum_{n, p} x_pad[n, c, p*s + k*d] gy[n, o, p]
        grad_x_pad[n, c, p*s + k*d] += sum_o gy[n, o, p] w[o, c, k]   (window_adjoint)
        grad_x = pad_backward(grad_x_pad)     (every padded sample back onto its source)
        grad_bias[o] = sum_{n, p} gy[n, o, p]

    >>> from cnnlab.ops.dispatch import ConvRequest
    >>> request = ConvRequest(stride=(1,), padding=((0, 0),), dilation=(1,), groups=1)
    >>> gx, gw, _ = conv_backward(np.array([[[1.0, 2.0, 3.0]]]), np.ones((1, 1, 2)),
    ...                           np.ones((1, 1, 2)), request, need_bias=False)
    >>> gx.tolist(), gw.tolist()
    ([[[1.0, 2.0, 1.0]]], [[[3.0, 5.0]]])
    """
    p, k = _subscripts(x.ndim - 2)
    groups = request.groups
    windows = _by_group(_conv_windows(x, w.shape[2:], request), groups)
    gy_grouped = _by_group(gy, groups)
    grad_x = grad_w = grad_bias = None
    if need_weight:
        grad_w = np.einsum(f"ngc{p}{k},ngo{p}->goc{k}", windows, gy_grouped).reshape(w.shape)
    if need_input:
        grad_windows = np.einsum(f"ngo{p},goc{k}->ngc{p}{k}", gy_grouped,
                                 _weight_by_group(w, groups))
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(x.shape[2:], request.padding))
        grad_pad = window_adjoint(grad_windows.reshape(x.shape[:2] + grad_windows.shape[3:]),
                                  padded, request.stride, request.dilation)
        grad_x = np.ascontiguousarray(pad_backward(grad_pad, request.padding,
                                                   request.padding_mode))
    if need_bias:
        grad_bias = gy.sum(axis=(0, *range(2, gy.ndim)))
    return grad_x, grad_w, grad_bias


# ---------------------------------------------------------------------------------------
# Transposed convolution: the adjoint of the convolution (Dumoulin & Visin 2016, section 4).


def conv_transpose_forward(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None,
                           request: ConvRequest, out_spatial: tuple[int, ...]) -> np.ndarray:
    """Each input sample scatters ``x[n, c, i] * w[c, o, k]`` to output ``i*s + k*d - lo``::

        y_pad[n, o, i*s + k*d] += sum_c x[n, c, i] w[c, o, k];   y = crop(y_pad) + bias

    which is the adjoint of :func:`conv_forward` (its input-VJP with ``x`` as the output
    gradient): one einsum into windows (N, C_out, *in, *kernel), then
    :func:`~cnnlab.ops.windows.window_adjoint` adds them up and the padding is cropped.
    Output positions that no sample reaches (``output_padding`` past the last window) stay 0.

    x: (N, C_in, *spatial), w: (C_in, C_out/groups, *kernel), bias: (C_out,) or None
    -> (N, C_out, *out_spatial), ``out_spatial`` by
    :func:`cnnlab.ops._args.conv_transpose_output_shape`.

    >>> from cnnlab.ops.dispatch import ConvRequest
    >>> request = ConvRequest(stride=(2,), padding=((0, 0),), dilation=(1,), groups=1)
    >>> conv_transpose_forward(np.array([[[1.0, 2.0]]]), np.ones((1, 1, 3)), None, request,
    ...                        (5,))
    array([[[1., 1., 3., 2., 2.]]])
    """
    p, k = _subscripts(x.ndim - 2)
    groups = request.groups
    windows = np.einsum(f"ngc{p},gco{k}->ngo{p}{k}", _by_group(x, groups),
                        _weight_by_group(w, groups))
    c_out = w.shape[1] * groups
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(out_spatial, request.padding))
    y_pad = window_adjoint(windows.reshape(x.shape[0], c_out, *windows.shape[3:]), padded,
                           request.stride, request.dilation)
    return _add_bias(np.ascontiguousarray(pad_backward(y_pad, request.padding)), bias)


def conv_transpose_backward(
    x: np.ndarray, w: np.ndarray, gy: np.ndarray, request: ConvRequest,
    need_input: bool = True, need_weight: bool = True, need_bias: bool = True,
) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """VJPs of :func:`conv_transpose_forward`: both read the window view of the zero-padded
    output gradient that the scatter wrote to, ``gy_pad[n, o, i*s + k*d]``::

        grad_x[n, c, i] = sum_{o, k} gy_pad[n, o, i*s + k*d] w[c, o, k]   (a convolution)
        grad_w[c, o, k] = sum_{n, i} x[n, c, i] gy_pad[n, o, i*s + k*d]
        grad_bias[o] = sum_{n, p} gy[n, o, p]

    gy: (N, C_out, *out_spatial).

    >>> from cnnlab.ops.dispatch import ConvRequest
    >>> request = ConvRequest(stride=(2,), padding=((0, 0),), dilation=(1,), groups=1)
    >>> gy = np.array([[[1.0, 0.0, 0.0, 0.0, 2.0]]])
    >>> gx, gw, gb = conv_transpose_backward(np.array([[[1.0, 2.0]]]), np.ones((1, 1, 3)),
    ...                                      gy, request)
    >>> gx.tolist(), gw.tolist(), gb.tolist()
    ([[[1.0, 2.0]]], [[[1.0, 0.0, 4.0]]], [3.0])
    """
    p, k = _subscripts(x.ndim - 2)
    groups = request.groups
    gy_pad = pad_forward(gy, request.padding)
    windows = _by_group(window_view(gy_pad, w.shape[2:], request.stride, request.dilation,
                                    x.shape[2:]), groups)  # (N, g, C_out/g, *in, *kernel)
    grad_x = grad_w = grad_bias = None
    if need_input:
        grad_x = np.einsum(f"ngo{p}{k},gco{k}->ngc{p}", windows, _weight_by_group(w, groups))
        grad_x = grad_x.reshape(x.shape)
    if need_weight:
        grad_w = np.einsum(f"ngc{p},ngo{p}{k}->gco{k}", _by_group(x, groups), windows)
        grad_w = grad_w.reshape(w.shape)
    if need_bias:
        grad_bias = gy.sum(axis=(0, *range(2, gy.ndim)))
    return grad_x, grad_w, grad_bias


# ---------------------------------------------------------------------------------------
# Pooling: a reduction over the kernel axes of the window view. Padding is ``padding`` on
# the low side and whatever the last window needs on the high side
# (:func:`~cnnlab.ops.windows.window_padding`: more than ``padding`` in ceil mode).


def _pool_windows(x: np.ndarray, request: PoolRequest, fill: float) -> np.ndarray:
    """x_pad[n, c, p*s + k*d] as a view (N, C, *out, *kernel), padded with ``fill``."""
    pads = window_padding(x.shape[2:], request.padding, request.kernel, request.stride,
                          request.dilation, request.out_spatial)
    x_pad = pad_forward(x, pads, "zeros", value=fill)
    return window_view(x_pad, request.kernel, request.stride, request.dilation,
                       request.out_spatial)


def _kernel_axes(request: PoolRequest) -> tuple[int, ...]:
    ndim = len(request.kernel)
    return tuple(range(2 + ndim, 2 + 2 * ndim))


def _inside(in_spatial: tuple[int, ...], request: PoolRequest, count_padding: bool
            ) -> np.ndarray:
    """Whether each tap of each window (*out, *kernel) falls on the input (``count_padding``:
    on the input or its padding; never on the ceil-mode overhang past the padding)."""
    pads = window_padding(in_spatial, request.padding, request.kernel, request.stride,
                          request.dilation, request.out_spatial)
    inside = np.zeros(tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, pads)), bool)
    region = tuple(slice(0, n + 2 * p) if count_padding else slice(p, p + n)
                   for n, p in zip(in_spatial, request.padding))
    inside[region] = True
    return window_view(inside, request.kernel, request.stride, request.dilation,
                       request.out_spatial)


def _window_counts(in_spatial: tuple[int, ...], request: PoolRequest,
                   count_padding: bool) -> np.ndarray:
    """``count[p] = sum_k 1[p*s + k*d inside]`` (*out), see :func:`_inside`."""
    ndim = len(in_spatial)
    return _inside(in_spatial, request, count_padding).sum(axis=tuple(range(ndim, 2 * ndim)))


def max_pool(x: np.ndarray, request: PoolRequest) -> np.ndarray:
    """``y[n, c, p] = max_k x_pad[n, c, p*s + k*d]``, padding -inf (NaN propagates).

    x: (N, C, *spatial) -> (N, C, *out_spatial), ``out_spatial`` by
    :func:`cnnlab.ops._args.pool_output_shape` (held in ``request``).

    >>> from cnnlab.ops.pool import PoolRequest
    >>> request = PoolRequest(kernel=(2,), stride=(2,), padding=(1,), dilation=(1,),
    ...                       out_spatial=(3,))
    >>> max_pool(np.array([[[1.0, 5.0, 2.0, 3.0]]]), request).tolist()
    [[[1.0, 5.0, 3.0]]]
    """
    return _pool_windows(x, request, -np.inf).max(axis=_kernel_axes(request))


def max_pool_backward(x: np.ndarray, gy: np.ndarray, request: PoolRequest) -> np.ndarray:
    """VJP of :func:`max_pool`: each output's gradient goes to the tap it took, by PyTorch's
    scan (``val > max or isnan(val)``, aten/src/ATen/native/cpu/MaxPoolKernel.cpp): the first
    maximum in C order over the kernel, the last NaN of a window holding NaN, and the first
    tap on the input of a window whose max is -inf. Overlapping windows add up. A window of
    padding only sends its gradient into the padding, where it is dropped (PyTorch writes
    it out of bounds). gy: (N, C, *out) -> (N, C, *spatial).

    >>> from cnnlab.ops.pool import PoolRequest
    >>> request = PoolRequest(kernel=(2,), stride=(1,), padding=(0,), dilation=(1,),
    ...                       out_spatial=(3,))
    >>> max_pool_backward(np.array([[[1.0, 5.0, 5.0, 3.0]]]), np.ones((1, 1, 3)),
    ...                   request).tolist()
    [[[0.0, 2.0, 1.0, 0.0]]]
    """
    windows = _pool_windows(x, request, -np.inf)
    taps = windows.reshape(*windows.shape[: x.ndim], prod(request.kernel))
    first_inside = np.argmax(_inside(x.shape[2:], request, False).reshape(
        *request.out_spatial, -1), axis=-1)
    chosen = np.where(taps.max(axis=-1) == -np.inf, first_inside, np.argmax(taps, axis=-1))
    nan = np.isnan(taps)
    last_nan = taps.shape[-1] - 1 - np.argmax(nan[..., ::-1], axis=-1)
    chosen = np.where(nan.any(axis=-1), last_nan, chosen)
    taken = np.arange(taps.shape[-1]) == chosen[..., None]
    grad_taps = np.where(taken, gy[..., None], 0).astype(gy.dtype)
    return _pool_adjoint(grad_taps.reshape(windows.shape), x.shape[2:], request)


def _pool_adjoint(grad_windows: np.ndarray, in_spatial: tuple[int, ...],
                  request: PoolRequest) -> np.ndarray:
    """Adjoint of :func:`_pool_windows` (zero fill): window gradients -> (N, C, *spatial)."""
    pads = window_padding(in_spatial, request.padding, request.kernel, request.stride,
                          request.dilation, request.out_spatial)
    padded = tuple(n + lo + hi for n, (lo, hi) in zip(in_spatial, pads))
    grad = window_adjoint(grad_windows, padded, request.stride, request.dilation)
    return np.ascontiguousarray(pad_backward(grad, pads))


def _avg_divisor(in_spatial: tuple[int, ...], request: PoolRequest, count_include_pad: bool,
                 divisor_override: int | None) -> np.ndarray | int:
    if divisor_override is not None:
        return divisor_override
    return _window_counts(in_spatial, request, count_include_pad)


def avg_pool(x: np.ndarray, request: PoolRequest, count_include_pad: bool = True,
             divisor_override: int | None = None) -> np.ndarray:
    """``y[n, c, p] = sum_k x_pad[n, c, p*s + k*d] / divisor[p]``, padding zeros.

    ``divisor``: ``divisor_override`` when given, else the number of taps on the input
    (``count_include_pad``: on the input or its zero padding), never counting a ceil-mode
    overhang past the padding (PyTorch's AvgPoolKernel.cpp). x: (N, C, *spatial) ->
    (N, C, *out_spatial).

    >>> from cnnlab.ops.pool import PoolRequest
    >>> request = PoolRequest(kernel=(2,), stride=(2,), padding=(0,), dilation=(1,),
    ...                       out_spatial=(2,))
    >>> avg_pool(np.array([[[1.0, 3.0, 4.0]]]), request).tolist()  # ceil mode: [4] alone
    [[[2.0, 4.0]]]
    """
    sums = _pool_windows(x, request, 0.0).sum(axis=_kernel_axes(request))
    divisor = _avg_divisor(x.shape[2:], request, count_include_pad, divisor_override)
    return (sums / divisor).astype(x.dtype, copy=False)


def avg_pool_backward(gy: np.ndarray, in_spatial: tuple[int, ...], request: PoolRequest,
                      count_include_pad: bool = True, divisor_override: int | None = None
                      ) -> np.ndarray:
    """VJP of :func:`avg_pool`: every tap of window ``p`` gets ``gy[p] / divisor[p]``.

    gy: (N, C, *out) -> (N, C, *in_spatial).

    >>> from cnnlab.ops.pool import PoolRequest
    >>> request = PoolRequest(kernel=(2,), stride=(1,), padding=(0,), dilation=(1,),
    ...                       out_spatial=(2,))
    >>> avg_pool_backward(np.ones((1, 1, 2)), (3,), request).tolist()
    [[[0.5, 1.0, 0.5]]]
    """
    divisor = _avg_divisor(in_spatial, request, count_include_pad, divisor_override)
    per_window = (gy / divisor).astype(gy.dtype, copy=False)
    ndim = len(request.kernel)
    grad_windows = np.broadcast_to(per_window[(Ellipsis, *(None,) * ndim)],
                                   per_window.shape + request.kernel)
    return _pool_adjoint(grad_windows, in_spatial, request)


def lp_pool(x: np.ndarray, norm_type: float, request: PoolRequest) -> np.ndarray:
    """``y[i] = (sum_k x[i*s + k]^q)^(1/q)`` for ``q = norm_type``, as PyTorch computes it::

        y = (mean_{k inside} x^q * prod(kernel)) ** (1/q)

    so a ceil-mode window that overhangs the input is rescaled to the full kernel, and a
    negative sum gives NaN for fractional ``1/q`` (:func:`cnnlab.ops.pool.lp_pool_nd`).
    ``q = inf``: ``max |x|``; ``q = -inf``: ``min |x|``. No padding. x: (N, C, *spatial)
    -> (N, C, *out_spatial).

    >>> from cnnlab.ops.pool import PoolRequest
    >>> request = PoolRequest(kernel=(2,), stride=(2,), padding=(0,), dilation=(1,),
    ...                       out_spatial=(1,))
    >>> lp_pool(np.array([[[3.0, 4.0]]]), 2.0, request).tolist()
    [[[5.0]]]
    """
    if norm_type == np.inf:
        return max_pool(np.abs(x), request)
    if norm_type == -np.inf:
        return -max_pool(-np.abs(x), request)
    sums = _pool_windows(x ** norm_type, request, 0.0).sum(axis=_kernel_axes(request))
    mean = sums / _window_counts(x.shape[2:], request, count_padding=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((mean * prod(request.kernel)) ** (1.0 / norm_type)).astype(x.dtype,
                                                                             copy=False)


# ---------------------------------------------------------------------------------------
# Adaptive pooling: output i of an axis of L inputs and M outputs reads
# [floor(i*L/M), ceil((i+1)*L/M)).


def _adaptive(x: np.ndarray, out_spatial: tuple[int, ...], reduce: str) -> np.ndarray:
    """Apply ``reduce`` ('mean' or 'max') to each adaptive window, one output at a time."""
    spatial_axes = tuple(range(2, x.ndim))
    out = np.empty(x.shape[:2] + tuple(out_spatial), dtype=x.dtype)
    for position in np.ndindex(*out_spatial):
        window = tuple(slice(i * length // outputs, -(-(i + 1) * length // outputs))
                       for i, length, outputs in zip(position, x.shape[2:], out_spatial))
        out[(Ellipsis, *position)] = getattr(x[(Ellipsis, *window)], reduce)(axis=spatial_axes)
    return out


def adaptive_avg_pool(x: np.ndarray, out_spatial: tuple[int, ...]) -> np.ndarray:
    """``y[n, c, i] = mean x[n, c, floor(i*L/M) : ceil((i+1)*L/M)]`` per spatial axis of
    ``L`` inputs and ``M`` outputs.

    x: (N, C, *spatial) -> (N, C, *out_spatial).

    >>> adaptive_avg_pool(np.array([[[1.0, 2.0, 3.0, 5.0, 8.0]]]), (2,)).tolist()
    [[[2.0, 5.333333333333333]]]
    """
    return _adaptive(x, out_spatial, "mean")


def adaptive_max_pool(x: np.ndarray, out_spatial: tuple[int, ...]) -> np.ndarray:
    """``y[n, c, i] = max x[n, c, floor(i*L/M) : ceil((i+1)*L/M)]`` (NaN propagates).

    x: (N, C, *spatial) -> (N, C, *out_spatial).

    >>> adaptive_max_pool(np.array([[[1.0, 2.0, 3.0, 5.0, 8.0]]]), (2,)).tolist()
    [[[3.0, 8.0]]]
    """
    return _adaptive(x, out_spatial, "max")
