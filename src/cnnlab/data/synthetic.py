"""Synthetic tasks generated on the fly, for models that are not classifiers.

- ``delayed_copy``: white noise and the same noise delayed by ``delay`` steps. A causal
  sequence model (output t sees inputs <= t, e.g. WaveNet) can reproduce the delayed copy
  only if its receptive field covers ``delay + 1`` samples; otherwise the best it can do
  is predict zero (the noise it needs has not reached it).
- ``shapes_segmentation``: noisy images of random filled rectangles and discs with their
  binary masks, a small per-pixel segmentation task for a U-Net.

Both are NumPy only and draw every random number from the injected ``rng``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._random import check_rng


def _positive_int(value: Any, name: str, fn: str, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{fn}: {name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {value}")
    return int(value)


def delayed_copy(n: int, length: int, delay: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal noise sequences and their copies delayed by ``delay`` samples.

    ``y[:, :, t] = x[:, :, t - delay]`` for ``t >= delay`` and 0 before (zero fill).

    Parameters
    ----------
    n : int, number of sequences (>= 1)
    length : int, samples per sequence L (>= 1)
    delay : int, shift to the right in samples (>= 0)
    rng : numpy.random.Generator

    Returns
    -------
    x : ndarray of shape (n, 1, L), float32
    y : ndarray of shape (n, 1, L), float32

    >>> x, y = delayed_copy(2, 5, 2, np.random.default_rng(0))
    >>> bool(np.array_equal(y[:, :, 2:], x[:, :, :3])), float(np.abs(y[:, :, :2]).sum())
    (True, 0.0)
    """
    fn = "delayed_copy"
    n = _positive_int(n, "n", fn)
    length = _positive_int(length, "length", fn)
    delay = _positive_int(delay, "delay", fn, minimum=0)
    rng = check_rng(rng, fn, required=True)
    x = rng.standard_normal((n, 1, length)).astype(np.float32)
    y = np.zeros_like(x)
    if delay < length:
        y[:, :, delay:] = x[:, :, :length - delay]
    return x, y


def shapes_segmentation(n: int, size: int, rng: np.random.Generator, *,
                        max_shapes: int = 3, noise: float = 0.5
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Noisy images of 1 to ``max_shapes`` filled rectangles and discs, with their masks.

    Each shape has a random position, extent (between ``size/5`` and ``size/2``) and
    brightness in [0.6, 1.0] (overlaps keep the brighter value); the background is 0.
    Gaussian noise of standard deviation ``noise`` is added to every pixel, so a single
    pixel's value is ambiguous and its neighbourhood decides.

    Parameters
    ----------
    n : int, number of images (>= 1)
    size : int, side of the square images (>= 4)
    rng : numpy.random.Generator
    max_shapes : int, most shapes per image (>= 1)
    noise : float, standard deviation of the additive pixel noise (>= 0)

    Returns
    -------
    images : ndarray of shape (n, 1, size, size), float32
    masks : ndarray of shape (n, 1, size, size), float32 in {0, 1} (1: inside a shape)

    >>> images, masks = shapes_segmentation(2, 16, np.random.default_rng(0))
    >>> images.shape, masks.shape, sorted(np.unique(masks).tolist())
    ((2, 1, 16, 16), (2, 1, 16, 16), [0.0, 1.0])
    """
    fn = "shapes_segmentation"
    n = _positive_int(n, "n", fn)
    size = _positive_int(size, "size", fn, minimum=4)
    max_shapes = _positive_int(max_shapes, "max_shapes", fn)
    if not noise >= 0:
        raise ValueError(f"{fn}: noise must be >= 0, got {noise}")
    rng = check_rng(rng, fn, required=True)
    rows, cols = np.mgrid[0:size, 0:size]
    rows, cols = rows + 0.5, cols + 0.5  # pixel centres
    clean = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, size, size), bool)
    smallest, largest = max(size / 5, 1.0), max(size / 2, 2.0)
    for index in range(n):
        for _ in range(int(rng.integers(1, max_shapes, endpoint=True))):
            centre_row, centre_col = rng.uniform(0, size, size=2)
            brightness = rng.uniform(0.6, 1.0)
            if rng.random() < 0.5:  # axis-aligned rectangle, half-extents in [small, large]/2
                half_h, half_w = rng.uniform(smallest, largest, size=2) / 2
                inside = ((np.abs(rows - centre_row) <= half_h)
                          & (np.abs(cols - centre_col) <= half_w))
            else:  # disc
                radius = rng.uniform(smallest, largest) / 2
                inside = (rows - centre_row) ** 2 + (cols - centre_col) ** 2 <= radius**2
            clean[index] = np.where(inside, np.maximum(clean[index], brightness),
                                    clean[index])
            masks[index] |= inside
    images = clean + noise * rng.standard_normal(clean.shape).astype(np.float32)
    return images[:, None].astype(np.float32), masks[:, None].astype(np.float32)
