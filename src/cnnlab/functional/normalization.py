"""Normalisation and regularisation layers as functions: batch_norm, layer_norm, dropout
(``nn/normalization.py`` holds their modules). Each has its closed-form VJP."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._random import check_rng
from ..autograd import Tensor
from ..ops._args import (
    prod,
)
from ._binding import (
    ArrayOrTensor,
    IntOrTuple,
    _data,
    _float_arrays,
    _float_input,
    _needs,
    _wrap,
)


def dropout(input: ArrayOrTensor, p: float = 0.5, training: bool = True,
            rng: np.random.Generator | None = None) -> ArrayOrTensor:
    """Inverted dropout (Srivastava et al. 2014): zero each entry with probability ``p``
    and scale the survivors by ``1 / (1 - p)``, so evaluation needs no rescaling.

    ``x`` is returned unchanged when ``training`` is False or ``p == 0``. The mask is drawn
    from ``rng`` (float32 uniforms, so float32 and float64 inputs get the same mask); None
    means a fresh unseeded ``np.random.default_rng()``.
    """
    fn = "dropout"
    if not isinstance(p, (int, float, np.floating)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{fn}: p must be a probability in [0, 1], got {p!r}")
    rng = check_rng(rng, fn)
    if not training or p == 0:
        return input
    x_arr = _float_input(input, fn)
    if p == 1:
        multiplier = np.zeros_like(x_arr)
    else:
        keep = rng.random(x_arr.shape, dtype=np.float32) >= p
        multiplier = keep * x_arr.dtype.type(1.0 / (1.0 - p))
    return _wrap(x_arr * multiplier, [input], lambda g: (g * multiplier,), False)


def _per_channel(value: Any, channels: int, name: str, fn: str) -> np.ndarray | None:
    array = _data(value)
    if array is not None and array.shape != (channels,):
        raise ValueError(f"{fn}: {name} must have shape ({channels},), got {array.shape}")
    return array


def batch_norm(
    input: ArrayOrTensor,
    running_mean: np.ndarray | Tensor | None,
    running_var: np.ndarray | Tensor | None,
    weight: ArrayOrTensor | None = None,
    bias: ArrayOrTensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> ArrayOrTensor:
    """Batch normalisation (Ioffe & Szegedy 2015) over (N, *spatial) for each channel.

    Parameters
    ----------
    input : (N, C) or (N, C, *spatial)
    running_mean, running_var : (C,) arrays or None
        Used for normalisation when ``training`` is False. When ``training`` is True they
        are updated in place (if given): ``r = (1 - momentum) r + momentum * stat``, with
        the unbiased batch variance ``var * M / (M - 1)``, ``M = N * prod(spatial)``.
    weight, bias : (C,) or None (gamma and beta)
    training : normalise by the batch's mean and biased variance, not the running ones.

    Returns
    -------
    (N, C, *spatial): ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

    The VJP is the closed form (Ioffe & Szegedy, sec. 3), with ``xhat`` the normalised input:
    ``dx = weight / (M sqrt(var + eps)) * (M g - sum(g) - xhat * sum(g * xhat))``,
    ``dweight = sum(g * xhat)``, ``dbias = sum(g)``, sums over (N, *spatial).
    """
    fn = "batch_norm"
    arrays = _float_arrays(fn, input=input, weight=weight, bias=bias)
    x_arr, w_arr, b_arr = arrays["input"], arrays.get("weight"), arrays.get("bias")
    if x_arr.ndim < 2:
        raise ValueError(f"{fn}: input must be (N, C) or (N, C, *spatial), got shape "
                         f"{x_arr.shape}")
    batch, channels = x_arr.shape[:2]
    for name, value in (("weight", w_arr), ("bias", b_arr)):
        _per_channel(value, channels, name, fn)
    run_mean = _per_channel(running_mean, channels, "running_mean", fn)
    run_var = _per_channel(running_var, channels, "running_var", fn)
    x3 = x_arr.reshape(batch, channels, prod(x_arr.shape[2:]))
    count = x3.shape[0] * x3.shape[2]
    dtype = x_arr.dtype

    def per_channel(values: np.ndarray) -> np.ndarray:
        # (C,) -> (C, S): broadcasting then runs along contiguous C*S rows, about 1.4x faster
        # than against (C, 1) (measured on (100, 32, 40) float32).
        return np.repeat(values, x3.shape[2]).reshape(channels, x3.shape[2])

    if training:
        if count <= 1:
            raise ValueError(f"{fn}: expected more than 1 value per channel when training, "
                             f"got input shape {x_arr.shape}")
        # einsum reduces over (N, *spatial) several times faster than ndarray.sum(axis=(0, 2))
        mean = np.einsum("ncs->c", x3) / count
        xhat = x3 - per_channel(mean)
        var = np.einsum("ncs,ncs->c", xhat, xhat) / count
        inv_std = 1 / np.sqrt(var + eps)
        xhat *= per_channel(inv_std)
        if run_mean is not None:
            run_mean *= 1 - momentum
            run_mean += momentum * mean
        if run_var is not None:
            run_var *= 1 - momentum
            run_var += (momentum * count / (count - 1)) * var
        scale = inv_std if w_arr is None else w_arr * inv_std
        y = xhat.copy() if w_arr is None else xhat * per_channel(w_arr)
        if b_arr is not None:
            y += per_channel(b_arr)
    else:
        if run_mean is None or run_var is None:
            raise ValueError(f"{fn}: running_mean and running_var are required when "
                             f"training=False")
        mean = run_mean.astype(dtype, copy=False)
        inv_std = 1 / np.sqrt(run_var.astype(dtype, copy=False) + eps)
        scale = inv_std if w_arr is None else w_arr * inv_std
        shift = -mean * scale if b_arr is None else b_arr - mean * scale
        y = x3 * per_channel(scale)
        y += per_channel(shift)
        xhat = None
    y = y.reshape(x_arr.shape)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        g3 = g.reshape(x3.shape)
        if xhat is None:
            normalised = x3 - per_channel(mean)
            normalised *= per_channel(inv_std)
        else:
            normalised = xhat
        grad_b = np.einsum("ncs->c", g3)
        grad_w = np.einsum("ncs,ncs->c", g3, normalised)
        grad_x = None
        if _needs(input):
            grad_x = g3 * per_channel(scale)
            if training:  # the batch statistics depend on input too
                grad_x -= normalised * per_channel(scale * grad_w / count)
                grad_x -= per_channel(scale * grad_b / count)
            grad_x = grad_x.reshape(x_arr.shape)
        grads = (grad_x, None if w_arr is None else grad_w, None if b_arr is None else grad_b)
        operands = (input, weight, bias)
        return tuple(gr for gr, v in zip(grads, operands, strict=True) if v is not None)

    return _wrap(y, [input, weight, bias], vjp, False)


def layer_norm(
    input: ArrayOrTensor,
    normalized_shape: IntOrTuple,
    weight: ArrayOrTensor | None = None,
    bias: ArrayOrTensor | None = None,
    eps: float = 1e-5,
) -> ArrayOrTensor:
    """Layer normalisation (Ba et al. 2016) over the last ``len(normalized_shape)`` axes.

    Parameters
    ----------
    input : (*, *normalized_shape)
    normalized_shape : int or tuple, the trailing shape of ``x`` to normalise over.
    weight, bias : normalized_shape, or None

    Returns
    -------
    Same shape as ``x``: ``(x - mean) / sqrt(var + eps) * weight + bias`` with the mean and
    biased variance of each trailing block. The VJP is the fused closed form, as in
    :func:`batch_norm` with the roles of the axes exchanged.
    """
    fn = "layer_norm"
    arrays = _float_arrays(fn, input=input, weight=weight, bias=bias)
    x_arr, w_arr, b_arr = arrays["input"], arrays.get("weight"), arrays.get("bias")
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(normalized_shape)
    if not shape or x_arr.ndim < len(shape) or x_arr.shape[x_arr.ndim - len(shape):] != shape:
        raise ValueError(f"{fn}: input shape {x_arr.shape} must end with normalized_shape "
                         f"{shape}")
    for name, value in (("weight", w_arr), ("bias", b_arr)):
        if value is not None and value.shape != shape:
            raise ValueError(f"{fn}: {name} must have shape {shape}, got {value.shape}")
    size = int(np.prod(shape))
    x2 = x_arr.reshape(-1, size)
    xhat = x2 - x2.mean(axis=1, keepdims=True)
    var = np.einsum("md,md->m", xhat, xhat)[:, None] / size
    inv_std = 1 / np.sqrt(var + eps)
    xhat *= inv_std
    w_flat = None if w_arr is None else w_arr.reshape(-1)
    y = xhat * w_flat if w_flat is not None else xhat.copy()
    if b_arr is not None:
        y += b_arr.reshape(-1)
    y = y.reshape(x_arr.shape)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        g2 = g.reshape(x2.shape)
        grad_x = None
        if _needs(input):
            g_hat = g2 * w_flat if w_flat is not None else g2
            grad_x = g_hat - g_hat.mean(axis=1, keepdims=True)
            grad_x -= xhat * (np.einsum("md,md->m", g_hat, xhat)[:, None] / size)
            grad_x *= inv_std
            grad_x = grad_x.reshape(x_arr.shape)
        grad_w = None if w_arr is None else np.einsum("md,md->d", g2, xhat).reshape(shape)
        grad_b = None if b_arr is None else g2.sum(axis=0).reshape(shape)
        grads = (grad_x, grad_w, grad_b)
        operands = (input, weight, bias)
        return tuple(gr for gr, v in zip(grads, operands, strict=True) if v is not None)

    return _wrap(y, [input, weight, bias], vjp, False)
