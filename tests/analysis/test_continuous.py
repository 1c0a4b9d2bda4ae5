"""periodic_convolution against closed forms, and frequency_response against the engine's
own circular convolution of sinusoids."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab import functional as F
from cnnlab.analysis import conv_matrix_stats, frequency_response, periodic_convolution


def _grid(n: int) -> np.ndarray:
    return np.linspace(-np.pi, np.pi, n, endpoint=False)


def _gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-x**2 / (2 * sigma**2)) / (sigma * np.sqrt(2 * np.pi))


def _periodic_gauss(x: np.ndarray, sigma: float) -> np.ndarray:
    """The Gaussian wrapped onto [-pi, pi): the sum of its 2 pi-shifted copies."""
    return sum(_gauss(x + 2 * np.pi * k, sigma) for k in range(-3, 4))


def test_gaussian_convolved_with_gaussian_is_the_wider_gaussian():
    # On the circle, wrapped Gaussians convolve as Gaussians on the line do: variances add.
    x = _grid(256)
    out = periodic_convolution(_periodic_gauss(x, 0.3), _periodic_gauss(x, 0.4))
    np.testing.assert_allclose(out, _periodic_gauss(x, 0.5), rtol=1e-12, atol=1e-14)


def test_box_convolved_with_box_is_the_triangle():
    x = _grid(4096)
    a = np.pi / 4
    box = (np.abs(x) < a).astype(float)
    out = periodic_convolution(box, box)
    triangle = np.maximum(0.0, 2 * a - np.abs(x))
    assert np.abs(out - triangle).max() <= 2 * (2 * np.pi / 4096)  # the rectangle rule's O(h)


def test_commutative_linear_and_shift_equivariant():
    rng = np.random.default_rng(0)
    f, g, h = rng.standard_normal((3, 64))
    fg = periodic_convolution(f, g)
    np.testing.assert_allclose(fg, periodic_convolution(g, f), atol=1e-12)
    np.testing.assert_allclose(periodic_convolution(2 * f - 3 * h, g),
                               2 * fg - 3 * periodic_convolution(h, g), atol=1e-12)
    for shift in (1, 5, 32):  # shift by `shift` samples: the output shifts the same way
        np.testing.assert_allclose(periodic_convolution(np.roll(f, shift), g),
                                   np.roll(fg, shift), atol=1e-12)


def test_two_dimensional_gaussians():
    x = _grid(64)
    xx, yy = np.meshgrid(x, x, indexing="ij")
    f = _periodic_gauss(xx, 0.3) * _periodic_gauss(yy, 0.3)
    out = periodic_convolution(f, f)
    s = np.sqrt(0.18)
    np.testing.assert_allclose(out, _periodic_gauss(xx, s) * _periodic_gauss(yy, s),
                               rtol=1e-12, atol=1e-14)


def test_periodic_convolution_refuses_mismatched_or_odd_grids():
    with pytest.raises(ValueError, match="periodic_convolution: f and g"):
        periodic_convolution(np.ones(8), np.ones(6))
    with pytest.raises(ValueError, match="periodic_convolution: every axis needs an even"):
        periodic_convolution(np.ones(7), np.ones(7))


def test_frequency_response_is_what_the_layer_does_to_a_sinusoid():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((3, 1, 5))
    n = 32
    response = frequency_response(w, n)
    j = np.arange(n)
    for k in (0, 3, 7, 16):  # a cosine of k cycles per n samples
        x = np.cos(2 * np.pi * k * j / n)[None, None]
        y = F.conv1d(x, w, padding=((0, 4),), padding_mode="circular")[0]
        h = response.response[:, 0, k]
        expected = np.real(h[:, None] * np.exp(2j * np.pi * k * j / n))
        np.testing.assert_allclose(y, expected, atol=1e-12)
    # The same numbers are conv_matrix_stats' eigenvalues with the kernel's origin at 0.
    stats = conv_matrix_stats(w, (1, n), padding=((0, 4),), padding_mode="circular")
    np.testing.assert_allclose(stats.eigenvalues, response.response, atol=1e-12)


def test_low_high_and_band_pass_filters():
    f = np.fft.fftfreq(64)
    low = frequency_response(np.array([0.5, 0.5]), 64)
    np.testing.assert_allclose(low.magnitude, np.abs(np.cos(np.pi * f)), atol=1e-12)
    high = frequency_response(np.array([1.0, -1.0]), 64)
    np.testing.assert_allclose(high.magnitude, np.abs(2 * np.sin(np.pi * f)), atol=1e-12)
    filters = np.stack([[0.25, 0.5, 0.25, 0, 0], [-0.25, 0.5, -0.25, 0, 0],
                        [-0.5, 0, 1.0, 0, -0.5]])[:, None]  # low, high, band (f = 1/4)
    peaks = frequency_response(filters, 64).peak_frequency()
    np.testing.assert_allclose(peaks[:, 0], [0.0, 0.5, 0.25])
    two_d = frequency_response(np.ones((2, 3, 3)), (8, 8))
    assert two_d.response.shape == (2, 8, 8) and two_d.magnitude[0, 0, 0] == pytest.approx(9)


@pytest.mark.parametrize("n", [3, (8, 8, 8), "8", (2,)])
def test_frequency_response_bad_sizes(n):
    with pytest.raises(ValueError, match="frequency_response: n must"):
        frequency_response(np.ones((2, 1, 4)), n)
