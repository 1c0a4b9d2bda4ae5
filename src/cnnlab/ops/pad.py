"""Padding and its adjoint: the lecture's boundary conditions and PyTorch's other two.

``zeros`` enlarges the domain with zeros (or a constant): the lecture's "no padding",
"full padding" and arbitrary padding; ``circular`` makes it periodic, the discrete
counterpart of the lecture's convolution on [-pi, pi]; ``reflect`` (mirror without
repeating the edge) and ``replicate`` (repeat the edge) are PyTorch's further modes. Each
mode is an index map from padded positions to input positions, so the backward pass (the
adjoint) sums gradients through the same map.
"""

from __future__ import annotations

import numpy as np

from ._args import PadPairs

# PyTorch mode name -> NumPy mode name.
NUMPY_MODES = {"zeros": "constant", "constant": "constant", "reflect": "reflect",
               "replicate": "edge", "circular": "wrap"}


def check_pad_fits(in_spatial: tuple[int, ...], pairs: PadPairs, mode: str, fn: str) -> None:
    """PyTorch's limits: reflect needs pad < size, circular pad <= size, replicate size > 0."""
    for axis, (n, (lo, hi)) in enumerate(zip(in_spatial, pairs)):
        if mode == "reflect" and max(lo, hi) >= n:
            raise ValueError(
                f"{fn}: padding_mode='reflect' needs padding < input size in spatial dim "
                f"{axis}, got padding ({lo}, {hi}) for size {n}"
            )
        if mode == "circular" and max(lo, hi) > n:
            raise ValueError(
                f"{fn}: padding_mode='circular' needs padding <= input size in spatial dim "
                f"{axis}, got padding ({lo}, {hi}) for size {n}"
            )
        if mode == "replicate" and n == 0 and (lo or hi):
            raise ValueError(f"{fn}: padding_mode='replicate' cannot pad an empty dim {axis}")


def pad_forward(x: np.ndarray, pairs: PadPairs, mode: str = "zeros", value: float = 0.0
                ) -> np.ndarray:
    """Pad the trailing ``len(pairs)`` axes of ``x``: (..., *spatial) -> (..., *padded)."""
    lead = ((0, 0),) * (x.ndim - len(pairs))
    if all(lo == 0 and hi == 0 for lo, hi in pairs):
        return x
    if NUMPY_MODES[mode] == "constant":
        return np.pad(x, lead + tuple(pairs), mode="constant", constant_values=value)
    return np.pad(x, lead + tuple(pairs), mode=NUMPY_MODES[mode])


def pad_backward(grad: np.ndarray, pairs: PadPairs, mode: str = "zeros") -> np.ndarray:
    """Adjoint of :func:`pad_forward`: (..., *padded) -> (..., *spatial).

    For ``zeros`` this is a crop; otherwise each padded hyperplane is added back onto the
    input hyperplane that its index map points at (axis by axis, in reverse order).
    """
    ndim = len(pairs)
    if NUMPY_MODES[mode] == "constant":
        crop = tuple(slice(lo, g - hi) for g, (lo, hi) in zip(grad.shape[-ndim:], pairs))
        return grad[(Ellipsis, *crop)]
    for axis in reversed(range(ndim)):
        lo, hi = pairs[axis]
        if lo == 0 and hi == 0:
            continue
        ax = grad.ndim - ndim + axis
        n = grad.shape[ax] - lo - hi
        index_map = np.pad(np.arange(n), (lo, hi), mode=NUMPY_MODES[mode])
        inner = np.take(grad, np.arange(lo, lo + n), axis=ax)
        moved = np.moveaxis(inner, ax, 0)
        for u in [*range(lo), *range(lo + n, lo + n + hi)]:
            # One whole hyperplane per padded position: a loop over pad width, not pixels.
            moved[index_map[u]] += np.take(grad, u, axis=ax)
        grad = inner
    return grad
