"""The lecture's continuous picture: convolution on the periodic domain [-pi, pi), and the
convolution theorem that makes a filter a frequency response."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..autograd import Tensor


def _samples(value: Any, name: str, fn: str) -> np.ndarray:
    array = value.data if isinstance(value, Tensor) else np.asarray(value)
    if array.dtype.kind not in "fiuc" or array.ndim == 0:
        raise TypeError(f"{fn}: {name} must be a numeric array of samples, got "
                        f"{type(value).__name__} of dtype {array.dtype}")
    return array


def periodic_convolution(f: Any, g: Any) -> np.ndarray:
    """``(f * g)(x) = integral over [-pi, pi) of f(t) g(x - t) dt`` (the lecture's
    definition), for f and g sampled on the same grid ``x_j = -pi + 2 pi j / N`` per axis
    (``np.linspace(-pi, pi, N, endpoint=False)``, N even) and extended periodically.

    Computed by FFT: the rectangle rule of the integral is the circular convolution of the
    samples times the step 2 pi / N (per axis); since ``x_j - x_m = x_{j - m + N/2}``, the
    result is that convolution rolled by N/2. The rectangle rule on a periodic grid is
    spectrally accurate for smooth periodic functions.

    Parameters
    ----------
    f, g : arrays of the same shape (1-D, or N-D on [-pi, pi)^d), each length even.

    Returns
    -------
    Samples of ``f * g`` on the same grid; real when f and g are.

    >>> bool(np.allclose(periodic_convolution(np.ones(8), np.ones(8)), 2 * np.pi))
    True
    """
    fn = "periodic_convolution"
    f_arr, g_arr = _samples(f, "f", fn), _samples(g, "g", fn)
    if f_arr.shape != g_arr.shape:
        raise ValueError(f"{fn}: f and g must be sampled on the same grid, got shapes "
                         f"{f_arr.shape} and {g_arr.shape}")
    if any(n % 2 for n in f_arr.shape):
        raise ValueError(f"{fn}: every axis needs an even number of samples (x_j - x_m must "
                         f"land on the grid -pi + 2 pi j / N), got shape {f_arr.shape}")
    axes = tuple(range(f_arr.ndim))
    circular = np.fft.ifftn(np.fft.fftn(f_arr) * np.fft.fftn(g_arr))
    step = np.prod([2 * np.pi / n for n in f_arr.shape])
    out = np.roll(circular, tuple(-(n // 2) for n in f_arr.shape), axis=axes) * step
    return out.real if f_arr.dtype.kind != "c" and g_arr.dtype.kind != "c" else out


@dataclass(frozen=True)
class FrequencyResponse:
    """``response[..., w] = sum_k weight[..., k] exp(2 pi i w . k / n)``: what a layer's
    correlation (cnnlab's and PyTorch's convolution, the filter not flipped) multiplies the
    Fourier mode ``exp(2 pi i w . j / n)`` by, for each filter; ``frequencies`` per axis in
    cycles per sample (``np.fft.fftfreq(n)``), ``magnitude = |response|``."""

    response: np.ndarray
    frequencies: tuple[np.ndarray, ...]

    @property
    def magnitude(self) -> np.ndarray:
        return np.abs(self.response)

    def peak_frequency(self) -> np.ndarray:
        """1-D only: per filter, the frequency in [0, 0.5] where the magnitude is largest
        (0 for a low-pass, 0.5 for a high-pass, between for a band-pass)."""
        if len(self.frequencies) != 1:
            raise ValueError("FrequencyResponse.peak_frequency: defined for 1-D filters, "
                             f"got {len(self.frequencies)} axes")
        freqs = self.frequencies[0]
        half = freqs >= 0
        if len(freqs) % 2 == 0:
            half[len(freqs) // 2] = True  # the Nyquist bin, fftfreq's -0.5
        peak = np.argmax(self.magnitude[..., half], axis=-1)
        return np.abs(freqs[half])[peak]


def frequency_response(weight: Any, n: int | tuple[int, ...]) -> FrequencyResponse:
    """The convolution theorem for a layer's filters: each kernel's response on ``n``
    frequencies (per axis).

    Parameters
    ----------
    weight : array or Tensor whose last axes are the kernel, e.g. (C_out, C_in, k) or
        (C_out, C_in, kh, kw).
    n : an int for 1-D kernels (the last axis), a tuple of two for 2-D ones (the last two);
        at least the kernel's size on each axis.

    >>> r = frequency_response(np.array([0.5, 0.5]), 4)
    >>> np.round(r.magnitude, 6).tolist()
    [1.0, 0.707107, 0.0, 0.707107]
    """
    fn = "frequency_response"
    w = _samples(weight, "weight", fn)
    sizes = (n,) if isinstance(n, (int, np.integer)) and not isinstance(n, bool) else n
    if (not isinstance(sizes, tuple) or not 1 <= len(sizes) <= min(2, w.ndim)
            or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                       for s in sizes)):
        raise ValueError(f"{fn}: n must be an int (1-D kernels) or a tuple of two ints "
                         f"(2-D kernels), got {n!r} for weight of shape {w.shape}")
    axes = tuple(range(w.ndim - len(sizes), w.ndim))
    kernel = tuple(w.shape[a] for a in axes)
    if any(s < k for s, k in zip(sizes, kernel)):
        raise ValueError(f"{fn}: n must be at least the kernel size {kernel} per axis, got "
                         f"{sizes}")
    # sum_k w[k] exp(+2 pi i w k / n) = n * ifft(w, n): NumPy's inverse transform's sign.
    response = np.fft.ifftn(w, s=sizes, axes=axes) * np.prod(sizes)
    return FrequencyResponse(response, tuple(np.fft.fftfreq(s) for s in sizes))
