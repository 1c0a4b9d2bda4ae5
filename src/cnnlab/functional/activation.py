"""Activations as functions: relu, leaky_relu, gelu, sigmoid, tanh, softmax, log_softmax.

Each forward runs in the input's dtype (float32 stays float32: constants are Python floats,
which NumPy treats as "weak", so no float64 temporaries) and its VJP closure sits just
below it. ``Tensor.relu()`` and the other Tensor methods of the same names call these."""

from __future__ import annotations

import numpy as np
from scipy import special

from ..ops._args import (
    check_choice,
    check_dim,
)
from ..ops.gemm import all_finite
from ._binding import (
    ArrayOrTensor,
    _float_input,
    _wrap,
)

_SQRT_2_OVER_PI = (2.0 / np.pi) ** 0.5
_INV_SQRT_2PI = (2.0 * np.pi) ** -0.5
_GELU_TANH_COEF = 0.044715  # Hendrycks & Gimpel (2016), eq. for the tanh approximation


def relu(input: ArrayOrTensor) -> ArrayOrTensor:
    """``max(x, 0)`` elementwise; the gradient at 0 is 0, as in PyTorch.

    >>> relu(np.array([-1.0, 0.0, 2.0])).tolist()
    [0.0, 0.0, 2.0]
    """
    x_arr = _float_input(input, "relu")
    return _wrap(np.maximum(x_arr, 0), [input], lambda g: (_pass_where_positive(g, x_arr),),
                 False)


def _pass_where_positive(g: np.ndarray, x: np.ndarray) -> np.ndarray:
    """0 where ``x <= 0``, else ``g`` (PyTorch's threshold_backward, so a NaN ``x`` passes
    its gradient): a product with the mask, ten times faster than np.where, unless ``g``
    holds NaN/inf (0 * NaN is NaN)."""
    passes = np.logical_not(np.less_equal(x, 0))  # an array even for 0-d x
    if all_finite(g):
        return g * passes
    return np.where(passes, g, np.zeros((), g.dtype))


def leaky_relu(input: ArrayOrTensor, negative_slope: float = 0.01) -> ArrayOrTensor:
    """``x if x > 0 else negative_slope * x`` (Maas et al. 2013); slope at 0 as for x < 0."""
    x_arr = _float_input(input, "leaky_relu")
    # Masks by arithmetic, not np.where: a data-dependent select is several times slower.
    slope = np.multiply(x_arr > 0, 1.0 - negative_slope, dtype=x_arr.dtype)
    slope += negative_slope
    return _wrap(x_arr * slope, [input], lambda g: (g * slope,), False)


def gelu(input: ArrayOrTensor, approximate: str = "none") -> ArrayOrTensor:
    """Gaussian error linear unit ``x * Phi(x)`` (Hendrycks & Gimpel 2016).

    ``approximate='tanh'`` uses ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.
    """
    fn = "gelu"
    check_choice(approximate, ("none", "tanh"), "approximate", fn)
    x_arr = _float_input(input, fn)
    if approximate == "none":
        cdf = special.ndtr(x_arr)
        out = x_arr * cdf

        def vjp(g: np.ndarray) -> tuple[np.ndarray]:
            pdf = np.exp(-0.5 * x_arr * x_arr) * _INV_SQRT_2PI
            return (g * (cdf + x_arr * pdf),)
    else:
        cube = _GELU_TANH_COEF * x_arr * x_arr * x_arr
        t = np.tanh(_SQRT_2_OVER_PI * (x_arr + cube))
        out = 0.5 * x_arr * (1 + t)

        def vjp(g: np.ndarray) -> tuple[np.ndarray]:
            d_inner = _SQRT_2_OVER_PI * (1 + 3 * _GELU_TANH_COEF * x_arr * x_arr)
            return (g * (0.5 * (1 + t) + 0.5 * x_arr * (1 - t * t) * d_inner),)

    return _wrap(out, [input], vjp, False)


def _sigmoid_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sigmoid(x), exp(-|x|))`` without overflow and with full relative precision:
    ``sigmoid(x) = r`` for ``x >= 0`` and ``e * r`` for ``x < 0``, ``r = 1 / (1 + e)``.
    The two cases are blended arithmetically (a select is slower on random signs)."""
    e = np.exp(-np.abs(x))
    blend = 1 - e
    blend *= x >= 0
    blend += e  # 1 where x >= 0, else e
    blend /= 1 + e
    return blend, e


def sigmoid(input: ArrayOrTensor) -> ArrayOrTensor:
    """Logistic ``1 / (1 + exp(-x))``, overflow-free; the VJP is ``g * y * (1 - y)``.

    >>> sigmoid(np.array([0.0])).tolist()
    [0.5]
    """
    out = _sigmoid_parts(_float_input(input, "sigmoid"))[0]
    return _wrap(out, [input], lambda g: (g * out * (1 - out),), False)


def tanh(input: ArrayOrTensor) -> ArrayOrTensor:
    """Hyperbolic tangent; the VJP reuses the output: ``g * (1 - y^2)``."""
    out = np.tanh(_float_input(input, "tanh"))
    return _wrap(out, [input], lambda g: (g * (1 - out * out),), False)


def softmax(input: ArrayOrTensor, dim: int) -> ArrayOrTensor:
    """``exp(x) / sum(exp(x))`` along ``dim`` (shifted by the maximum, so no overflow).

    ``dim`` is required: PyTorch's implicit choice is deprecated.

    >>> softmax(np.array([0.0, 0.0]), dim=0).tolist()
    [0.5, 0.5]
    """
    x_arr = _float_input(input, "softmax")
    axis = check_dim(dim, x_arr.ndim, "softmax")
    out = np.exp(x_arr - x_arr.max(axis=axis, keepdims=True))
    out /= out.sum(axis=axis, keepdims=True)

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        # J^T g = y * (g - <g, y>) for the Jacobian diag(y) - y y^T.
        grad = g * out
        grad -= out * grad.sum(axis=axis, keepdims=True)
        return (grad,)

    return _wrap(out, [input], vjp, False)


def log_softmax(input: ArrayOrTensor, dim: int) -> ArrayOrTensor:
    """``x - logsumexp(x)`` along ``dim``, computed from the max-shifted input."""
    x_arr = _float_input(input, "log_softmax")
    axis = check_dim(dim, x_arr.ndim, "log_softmax")
    out = x_arr - x_arr.max(axis=axis, keepdims=True)
    out -= np.log(np.exp(out).sum(axis=axis, keepdims=True))

    def vjp(g: np.ndarray) -> tuple[np.ndarray]:
        return (g - np.exp(out) * g.sum(axis=axis, keepdims=True),)

    return _wrap(out, [input], vjp, False)
