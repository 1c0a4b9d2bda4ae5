"""Elementwise activations and the softmax family on arrays, each forward with its VJP below.

Each forward runs in the input's dtype (float32 stays float32: constants are Python floats,
which NumPy treats as "weak", so no float64 temporaries). A VJP takes the upstream gradient
``g`` and what the forward kept (its input or its output), and returns the gradient of the
input, the same shape. NaN and infinities follow PyTorch: relu keeps a NaN and passes its
gradient (ATen's ``threshold_backward`` tests ``x <= 0``).
"""

from __future__ import annotations

import numpy as np
from scipy import special

from ._args import all_finite

SQRT_2_OVER_PI = (2.0 / np.pi) ** 0.5
INV_SQRT_2PI = (2.0 * np.pi) ** -0.5
GELU_TANH_COEF = 0.044715  # Hendrycks & Gimpel (2016), eq. for the tanh approximation


def relu(x: np.ndarray) -> np.ndarray:
    """``max(x, 0)``; NaN stays NaN (``np.maximum`` propagates it, as ``torch.relu``).

    >>> relu(np.array([-1.0, 0.0, 2.0, np.nan])).tolist()
    [0.0, 0.0, 2.0, nan]
    """
    return np.maximum(x, 0)


def relu_backward(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """0 where ``x <= 0``, else ``g`` (PyTorch's threshold_backward, so a NaN ``x`` passes
    its gradient): a product with the mask, ten times faster than np.where, unless ``g``
    holds NaN/inf (0 * NaN is NaN)."""
    passes = np.logical_not(np.less_equal(x, 0))  # an array even for 0-d x
    if all_finite(g):
        return g * passes
    return np.where(passes, g, np.zeros((), g.dtype))


def leaky_relu(x: np.ndarray, negative_slope: float) -> tuple[np.ndarray, np.ndarray]:
    """``x if x > 0 else negative_slope * x`` (Maas et al. 2013) and its slope, which is
    also what the VJP multiplies by (at 0: the negative slope, as PyTorch).

    >>> leaky_relu(np.array([-2.0, 3.0]), 0.5)[0].tolist()
    [-1.0, 3.0]
    """
    # Masks by arithmetic, not np.where: a data-dependent select is several times slower.
    slope = np.multiply(x > 0, 1.0 - negative_slope, dtype=x.dtype)
    slope += negative_slope
    return x * slope, slope


def leaky_relu_backward(g: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """VJP of :func:`leaky_relu` from the slope it returned: ``g * slope``."""
    return g * slope


def gelu(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """Gaussian error linear unit ``x * Phi(x)`` (Hendrycks & Gimpel 2016); ``'tanh'`` uses
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    >>> gelu(np.array([0.0, 1.0])).round(4).tolist()
    [0.0, 0.8413]
    """
    if approximate == "none":
        return x * special.ndtr(x)
    return 0.5 * x * (1 + _gelu_tanh(x))


def gelu_backward(g: np.ndarray, x: np.ndarray, approximate: str = "none") -> np.ndarray:
    """VJP of :func:`gelu`: ``g * (Phi(x) + x phi(x))``, or the derivative of the tanh form."""
    if approximate == "none":
        pdf = np.exp(-0.5 * x * x) * INV_SQRT_2PI
        return g * (special.ndtr(x) + x * pdf)
    t = _gelu_tanh(x)
    d_inner = SQRT_2_OVER_PI * (1 + 3 * GELU_TANH_COEF * x * x)
    return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * d_inner)


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    cube = GELU_TANH_COEF * x * x * x
    return np.tanh(SQRT_2_OVER_PI * (x + cube))


def sigmoid_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sigmoid(x), exp(-|x|))`` without overflow and with full relative precision:
    ``sigmoid(x) = r`` for ``x >= 0`` and ``e * r`` for ``x < 0``, ``r = 1 / (1 + e)``.
    The two cases are blended arithmetically (a select is slower on random signs)."""
    e = np.exp(-np.abs(x))
    blend = 1 - e
    blend *= x >= 0
    blend += e  # 1 where x >= 0, else e
    blend /= 1 + e
    return blend, e


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic ``1 / (1 + exp(-x))``, overflow-free (:func:`sigmoid_parts`).

    >>> sigmoid(np.array([0.0, -1000.0])).tolist()
    [0.5, 0.0]
    """
    return sigmoid_parts(x)[0]


def sigmoid_backward(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """VJP of :func:`sigmoid` from its output: ``g * y * (1 - y)``."""
    return g * y * (1 - y)


def tanh_backward(g: np.ndarray, y: np.ndarray) -> np.ndarray:
    """VJP of ``np.tanh`` from its output: ``g * (1 - y^2)``."""
    return g * (1 - y * y)


def softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """``exp(x) / sum(exp(x))`` along ``axis``, shifted by the maximum (no overflow).

    >>> softmax(np.array([0.0, 0.0]), 0).tolist()
    [0.5, 0.5]
    """
    out = np.exp(x - x.max(axis=axis, keepdims=True))
    out /= out.sum(axis=axis, keepdims=True)
    return out


def softmax_backward(g: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
    """VJP of :func:`softmax` from its output: ``J^T g = y * (g - <g, y>)`` for the
    Jacobian ``diag(y) - y y^T``."""
    grad = g * y
    grad -= y * grad.sum(axis=axis, keepdims=True)
    return grad


def log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    """``x - logsumexp(x)`` along ``axis``, from the max-shifted input.

    >>> log_softmax(np.array([0.0, 0.0]), 0).round(4).tolist()
    [-0.6931, -0.6931]
    """
    out = x - x.max(axis=axis, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=axis, keepdims=True))
    return out


def log_softmax_backward(g: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
    """VJP of :func:`log_softmax` from its output: ``g - softmax(x) * sum(g)``."""
    return g - np.exp(y) * g.sum(axis=axis, keepdims=True)
