"""Normalisation and regularisation layers as functions: batch_norm, layer_norm, dropout
(``nn/normalization.py`` holds their modules). Each has its closed-form VJP."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._random import check_rng
from ..autograd import Tensor
from ..ops import normalization as kernels
from ..ops._args import check_bool, prod
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

    Parameters
    ----------
    input : (*) any shape
    p : the probability of zeroing an entry, in [0, 1]
    training : False (or ``p == 0``) returns ``input`` itself, unchanged.
    rng : the generator the mask is drawn from (float32 uniforms, so float32 and float64
        inputs get the same mask); None means a fresh unseeded ``np.random.default_rng()``.

    Returns
    -------
    (*), the input's shape: each entry 0 or ``input / (1 - p)``.

    >>> out = dropout(np.ones(8), 0.5, rng=np.random.default_rng(0))
    >>> sorted(set(out.tolist()))
    [0.0, 2.0]
    """
    fn = "dropout"
    if not isinstance(p, (int, float, np.floating)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"{fn}: p must be a probability in [0, 1], got {p!r}")
    rng = check_rng(rng, fn)
    if not check_bool(training, "training", fn) or p == 0:
        return input
    x_arr = _float_input(input, fn)
    if p == 1:
        multiplier = np.zeros_like(x_arr)
    else:
        keep = rng.random(x_arr.shape, dtype=np.float32) >= p
        multiplier = keep * x_arr.dtype.type(1.0 / (1.0 - p))
    return _wrap(x_arr * multiplier, [input], lambda g: (g * multiplier,), False, op="dropout",
                 attrs={"p": p})


def _per_channel(value: Any, channels: int, name: str, fn: str) -> np.ndarray | None:
    array = _data(value)
    if array is not None and array.shape != (channels,):
        raise ValueError(f"{fn}: {name} must have shape ({channels},), got {array.shape}")
    return array


def _present(grads: tuple[Any, ...], operands: tuple[Any, ...]) -> tuple[Any, ...]:
    """The gradients of the operands that were given (``_wrap`` drops None operands)."""
    return tuple(grad for grad, operand in zip(grads, operands, strict=True)
                 if operand is not None)


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

    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> batch_norm(x, None, None, training=True, eps=0.0).tolist()
    [[-1.0, -1.0], [1.0, 1.0]]
    """
    fn = "batch_norm"
    arrays = _float_arrays(fn, input=input, weight=weight, bias=bias)
    x_arr, w_arr, b_arr = arrays["input"], arrays.get("weight"), arrays.get("bias")
    if x_arr.ndim < 2:
        raise ValueError(f"{fn}: input must be (N, C) or (N, C, *spatial), got shape "
                         f"{x_arr.shape}")
    channels = x_arr.shape[1]
    for name, value in (("weight", w_arr), ("bias", b_arr)):
        _per_channel(value, channels, name, fn)
    run_mean = _per_channel(running_mean, channels, "running_mean", fn)
    run_var = _per_channel(running_var, channels, "running_var", fn)
    training = check_bool(training, "training", fn)
    if training and x_arr.shape[0] * prod(x_arr.shape[2:]) <= 1:
        raise ValueError(f"{fn}: expected more than 1 value per channel when training, "
                         f"got input shape {x_arr.shape}")
    if not training and (run_mean is None or run_var is None):
        raise ValueError(f"{fn}: running_mean and running_var are required when "
                         f"training=False")
    y, saved = kernels.batch_norm(x_arr, run_mean, run_var, w_arr, b_arr, training, momentum,
                                  eps)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        grad_x, grad_w, grad_b = kernels.batch_norm_backward(g, saved, _needs(input))
        return _present((grad_x, grad_w, grad_b), (input, weight, bias))

    return _wrap(y, [input, weight, bias], vjp, False, "batch_norm",
                 {"training": bool(training), "eps": eps})


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
    normalized_shape : int or tuple, the trailing shape of ``input`` to normalise over.
    weight, bias : normalized_shape, or None

    Returns
    -------
    Same shape as ``input``: ``(x - mean) / sqrt(var + eps) * weight + bias`` with the mean and
    biased variance of each trailing block. The VJP is the fused closed form, as in
    :func:`batch_norm` with the roles of the axes exchanged.

    >>> layer_norm(np.array([[1.0, 3.0], [0.0, 10.0]]), 2, eps=0.0).tolist()
    [[-1.0, 1.0], [-1.0, 1.0]]
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
    y, saved = kernels.layer_norm(x_arr, shape, w_arr, b_arr, eps)

    def vjp(g: np.ndarray) -> tuple[Any, ...]:
        grad_x, grad_w, grad_b = kernels.layer_norm_backward(g, saved, _needs(input))
        return _present((grad_x, grad_w.reshape(shape), grad_b.reshape(shape)),
                        (input, weight, bias))

    return _wrap(y, [input, weight, bias], vjp, False, "layer_norm", {"eps": eps})
