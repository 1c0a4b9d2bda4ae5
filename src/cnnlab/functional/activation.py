"""Activations as functions: relu, leaky_relu, gelu, sigmoid, tanh, softmax, log_softmax.

Each checks its input and binds the kernel and VJP of :mod:`cnnlab.ops.activation`. The
Tensor methods of the same names (``Tensor.relu()``, ...) call these: one implementation.
"""

from __future__ import annotations

import numpy as np

from ..ops import activation as kernels
from ..ops._args import check_choice, check_dim
from ._binding import ArrayOrTensor, _float_input, _wrap


def relu(input: ArrayOrTensor) -> ArrayOrTensor:
    """``max(x, 0)`` elementwise, as ``torch.relu``: NaN stays NaN; the gradient at 0 is 0.

    Parameters
    ----------
    input : (*) any shape, float32 or float64 (ints become float64)

    Returns
    -------
    (*), the input's shape and dtype.

    >>> relu(np.array([-1.0, 0.0, 2.0])).tolist()
    [0.0, 0.0, 2.0]
    """
    x = _float_input(input, "relu")
    return _wrap(kernels.relu(x), [input], lambda g: (kernels.relu_backward(g, x),), False,
                 op="relu")


def leaky_relu(input: ArrayOrTensor, negative_slope: float = 0.01) -> ArrayOrTensor:
    """``x if x > 0 else negative_slope * x`` (Maas et al. 2013); the slope at 0 is the
    negative one, as in PyTorch.

    Parameters
    ----------
    input : (*) any shape
    negative_slope : the slope for ``x <= 0``

    Returns
    -------
    (*), the input's shape.

    >>> leaky_relu(np.array([-2.0, 3.0]), 0.1).tolist()
    [-0.2, 3.0]
    """
    x = _float_input(input, "leaky_relu")
    out, slope = kernels.leaky_relu(x, negative_slope)
    return _wrap(out, [input], lambda g: (kernels.leaky_relu_backward(g, slope),), False,
                 op="leaky_relu", attrs={"negative_slope": negative_slope})


def gelu(input: ArrayOrTensor, approximate: str = "none") -> ArrayOrTensor:
    """Gaussian error linear unit ``x * Phi(x)`` (Hendrycks & Gimpel 2016), ``Phi`` the
    standard normal CDF; ``approximate='tanh'`` uses
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.

    Parameters
    ----------
    input : (*) any shape
    approximate : ``'none'`` or ``'tanh'``

    Returns
    -------
    (*), the input's shape.

    >>> gelu(np.array([-1.0, 0.0, 1.0])).round(4).tolist()
    [-0.1587, 0.0, 0.8413]
    """
    fn = "gelu"
    check_choice(approximate, ("none", "tanh"), "approximate", fn)
    x = _float_input(input, fn)
    return _wrap(kernels.gelu(x, approximate), [input],
                 lambda g: (kernels.gelu_backward(g, x, approximate),), False, op="gelu",
                 attrs={"approximate": approximate})


def sigmoid(input: ArrayOrTensor) -> ArrayOrTensor:
    """Logistic ``1 / (1 + exp(-x))``, overflow-free; the VJP is ``g * y * (1 - y)``.

    Parameters
    ----------
    input : (*) any shape

    Returns
    -------
    (*), the input's shape, values in [0, 1].

    >>> sigmoid(np.array([0.0, 1000.0, -1000.0])).tolist()
    [0.5, 1.0, 0.0]
    """
    out = kernels.sigmoid(_float_input(input, "sigmoid"))
    return _wrap(out, [input], lambda g: (kernels.sigmoid_backward(g, out),), False, op="sigmoid")


def tanh(input: ArrayOrTensor) -> ArrayOrTensor:
    """Hyperbolic tangent; the VJP reuses the output: ``g * (1 - y^2)``.

    Parameters
    ----------
    input : (*) any shape

    Returns
    -------
    (*), the input's shape, values in [-1, 1].

    >>> tanh(np.array([0.0, 100.0])).tolist()
    [0.0, 1.0]
    """
    out = np.tanh(_float_input(input, "tanh"))
    return _wrap(out, [input], lambda g: (kernels.tanh_backward(g, out),), False, op="tanh")


def softmax(input: ArrayOrTensor, dim: int) -> ArrayOrTensor:
    """``exp(x) / sum(exp(x))`` along ``dim`` (shifted by the maximum, so no overflow).

    ``dim`` is required: PyTorch's implicit choice is deprecated.

    Parameters
    ----------
    input : (*) any shape with at least one axis
    dim : the axis that sums to 1 (negative counts from the end)

    Returns
    -------
    (*), the input's shape.

    >>> softmax(np.array([[0.0, 0.0], [0.0, np.log(3.0)]]), dim=1).round(2).tolist()
    [[0.5, 0.5], [0.25, 0.75]]
    """
    x = _float_input(input, "softmax")
    axis = check_dim(dim, x.ndim, "softmax")
    out = kernels.softmax(x, axis)
    return _wrap(out, [input], lambda g: (kernels.softmax_backward(g, out, axis),), False,
                 op="softmax", attrs={"axis": axis})


def log_softmax(input: ArrayOrTensor, dim: int) -> ArrayOrTensor:
    """``x - logsumexp(x)`` along ``dim``, computed from the max-shifted input.

    Parameters
    ----------
    input : (*) any shape with at least one axis
    dim : the axis normalised over (negative counts from the end)

    Returns
    -------
    (*), the input's shape: log-probabilities along ``dim``.

    >>> np.exp(log_softmax(np.array([1.0, 1.0, 1.0, 1.0]), dim=0)).tolist()
    [0.25, 0.25, 0.25, 0.25]
    """
    x = _float_input(input, "log_softmax")
    axis = check_dim(dim, x.ndim, "log_softmax")
    out = kernels.log_softmax(x, axis)
    return _wrap(out, [input], lambda g: (kernels.log_softmax_backward(g, out, axis),), False,
                 op="log_softmax", attrs={"axis": axis})
