"""A stride-1 convolution followed by non-overlapping max pooling, as one strided convolution.

The lecture's "stride = stride 1 followed by downsampling", read backwards. Max pooling with
kernel = stride = ``s`` reads the stride-1 output ``y`` in ``s^d`` phases, ``y_p[a] = y[s*a
+ p]`` for window offsets ``p in [0, s)^d``, and phase ``p`` is itself a stride-``s``
convolution: the kernel shifted by ``p`` inside a ``(k + s - 1)^d`` kernel of zeros. Stacking
the ``s^d`` shifted kernels as extra output channels makes every phase one strided
convolution, and the pooling an elementwise max over the phase channels::

    W'[(g, p, o), c, p + k] = w[(g, o), c, k]        (zeros elsewhere)
    pooled[n, (g, o), a] = max_p  conv(x, W', stride=s)[n, (g, p, o), a]

Why: the columns of the strided convolution cover only the pooled positions, ``s^d k^d /
(k + s - 1)^d`` times fewer values than the stride-1 convolution's (LeNet-5's 5x5 kernels
with 2x2 pools: 2.8x), and the max reads whole channel blocks instead of every other
element. The zeros of W' add exact zeros, so for finite inputs the values are the stride-1
convolution's up to the order BLAS sums them in; a NaN or inf in ``x`` or ``w`` (or in the
pooled gradient) would meet a zero of W' (0 * inf = NaN), so callers take the two-op path
for those.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import product

import numpy as np

from ._args import prod


def phase_offsets(pool: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Window offsets ``p`` in C order: the order of W''s phase channels and of PyTorch's
    scan over a pooling window."""
    return list(product(*(range(s) for s in pool)))


@lru_cache(maxsize=64)
def _pooled_index(w_shape: tuple[int, ...], pool: tuple[int, ...], groups: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Index maps between w and W' (g, S, C_out/g, C_in/g, *(k + s - 1)), built once per
    layer shape: for each element of W' the flat index into w of the value it holds
    (``w.size`` for a zero), and for each phase the flat positions in W' of w's elements."""
    c_out, c_in_g, *kernel = w_shape
    c_out_g = c_out // groups
    big = tuple(k + s - 1 for k, s in zip(kernel, pool))
    phases = phase_offsets(pool)
    shape = (groups, len(phases), c_out_g, c_in_g, *big)
    source = np.arange(prod(w_shape)).reshape(groups, c_out_g, c_in_g, *kernel)
    index = np.full(shape, prod(w_shape))
    position = np.arange(prod(shape)).reshape(shape)
    copies = []
    for offset, phase in enumerate(phases):
        window = (slice(None), offset, Ellipsis, *(slice(p, p + k) for p, k in zip(phase, kernel)))
        index[window] = source
        copies.append(position[window].reshape(-1))
    maps = index.reshape(-1), np.stack(copies)
    for cached in maps:
        cached.setflags(write=False)
    return maps


def pooled_weight(w: np.ndarray, bias: np.ndarray | None, pool: tuple[int, ...], groups: int
                  ) -> tuple[np.ndarray, np.ndarray | None]:
    """w (C_out, C_in/g, *k), bias (C_out,) -> W' (g * S * C_out/g, C_in/g, *(k + s - 1)) and
    its bias, ``S = prod(pool)``: output channels ordered (group, phase, channel)."""
    c_out, c_in_g, *kernel = w.shape
    values = np.concatenate([w.reshape(-1), np.zeros(1, w.dtype)])
    big = tuple(k + s - 1 for k, s in zip(kernel, pool))
    w_big = values[_pooled_index(w.shape, pool, groups)[0]].reshape(
        groups * prod(pool) * (c_out // groups), c_in_g, *big)
    if bias is None:
        return w_big, None
    return w_big, np.tile(bias.reshape(groups, 1, -1), (1, prod(pool), 1)).reshape(-1)


def pooled_weight_grad(grad_big: np.ndarray, w_shape: tuple[int, ...], pool: tuple[int, ...],
                       groups: int) -> np.ndarray:
    """Adjoint of :func:`pooled_weight` for the weight: W''s gradient -> w's (what each w
    value's copies in W' received, summed over phases in order)."""
    copies = grad_big.reshape(-1)[_pooled_index(w_shape, pool, groups)[1]]  # (S, w.size)
    return copies.sum(axis=0).reshape(w_shape)


def pooled_bias_grad(grad_big: np.ndarray, groups: int, pool: tuple[int, ...]) -> np.ndarray:
    """Adjoint of :func:`pooled_weight` for the bias: sum over phases."""
    return grad_big.reshape(groups, prod(pool), -1).sum(axis=1).reshape(-1)


def phased_view(y: np.ndarray, groups: int, pool: tuple[int, ...]) -> np.ndarray:
    """The strided convolution's output (N, g * S * C/g, *out) as (N, g, *pool, C/g, *out)."""
    return y.reshape(y.shape[0], groups, *pool, -1, *y.shape[2:])


def unpooled_gradient(phased_grad: np.ndarray, pool: tuple[int, ...],
                      conv_spatial: tuple[int, ...]) -> np.ndarray:
    """The phase channels' gradient (N, g, *pool, C/g, *out) laid out as the stride-1
    convolution's (N, C, *conv_spatial): ``y[s*a + p] <- y_p[a]``, zeros at positions no
    window covers (a floor-mode pooling's last rows)."""
    n, groups = phased_grad.shape[:2]
    ndim = len(pool)
    out = phased_grad.shape[3 + ndim:]
    c_g = phased_grad.shape[2 + ndim]
    grad = np.zeros((n, groups * c_g, *conv_spatial), phased_grad.dtype)
    covered = grad[(Ellipsis, *(slice(0, o * s) for o, s in zip(out, pool)))]
    # (N, g, C/g, o_1, s_1, ..., o_d, s_d) is the covered block, position s*a + p per axis
    split = covered.reshape(n, groups, c_g, *(v for pair in zip(out, pool) for v in pair))
    order = [0, 1, 2 + ndim] + [a for i in range(ndim) for a in (3 + ndim + i, 2 + i)]
    split[...] = phased_grad.transpose(order)
    return grad
