"""Weight initialisation, PyTorch's ``torch.nn.init`` with an injected NumPy generator.

Every function fills its argument in place (a :class:`~cnnlab.Tensor`/Parameter's ``.data``
or a NumPy array, keeping its dtype) and returns it. Random ones take
``rng: np.random.Generator``; None means a fresh unseeded ``np.random.default_rng()``.

Fans follow PyTorch: for a weight ``(out, in, *kernel)``, ``fan_in = in * prod(kernel)`` and
``fan_out = out * prod(kernel)`` (also for transposed-convolution weights
``(in, out/groups, *kernel)``, whose roles PyTorch does not swap).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._random import check_rng
from ..autograd import Tensor
from ..ops._args import check_choice

_GAINS = {
    "linear": 1.0, "identity": 1.0, "sigmoid": 1.0,
    "conv1d": 1.0, "conv2d": 1.0, "conv3d": 1.0,
    "conv_transpose1d": 1.0, "conv_transpose2d": 1.0, "conv_transpose3d": 1.0,
    "tanh": 5.0 / 3.0,
    "relu": math.sqrt(2.0),
    "selu": 3.0 / 4.0,
}
FAN_MODES = ("fan_in", "fan_out")


def _array(tensor: Any, fn: str) -> np.ndarray:
    array = tensor.data if isinstance(tensor, Tensor) else tensor
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{fn}: tensor must be a Tensor or numpy array, got "
                        f"{type(tensor).__name__}")
    return array


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """Recommended gain for an activation (He et al. 2015; Klambauer et al. 2017 for selu).

    ``leaky_relu`` uses ``sqrt(2 / (1 + a^2))`` with ``a = param`` (default 0.01).

    >>> round(calculate_gain("leaky_relu", math.sqrt(5)) ** 2, 6)
    0.333333
    """
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        if isinstance(slope, bool) or not isinstance(slope, (int, float)):
            raise ValueError(f"calculate_gain: negative_slope must be a number, got {slope!r}")
        return math.sqrt(2.0 / (1 + slope**2))
    check_choice(nonlinearity, (*_GAINS, "leaky_relu"), "nonlinearity", "calculate_gain")
    return _GAINS[nonlinearity]


def _calculate_fan_in_and_fan_out(tensor: Any) -> tuple[int, int]:
    """``(in * prod(kernel), out * prod(kernel))`` of a weight ``(out, in, *kernel)``."""
    shape = _array(tensor, "_calculate_fan_in_and_fan_out").shape
    if len(shape) < 2:
        raise ValueError(f"_calculate_fan_in_and_fan_out: fans need a tensor with at least 2 "
                         f"dimensions, got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _calculate_correct_fan(tensor: Any, mode: str) -> int:
    check_choice(mode, FAN_MODES, "mode", "init")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _fill(tensor: Any, values: Any, fn: str) -> Any:
    array = _array(tensor, fn)
    array[...] = values  # in place, cast to the array's dtype
    return tensor


def uniform_(tensor: Any, a: float = 0.0, b: float = 1.0, *,
             rng: np.random.Generator | None = None) -> Any:
    """Fill with draws from ``U(a, b)``."""
    shape = _array(tensor, "uniform_").shape
    return _fill(tensor, check_rng(rng, "uniform_").uniform(a, b, shape), "uniform_")


def normal_(tensor: Any, mean: float = 0.0, std: float = 1.0, *,
            rng: np.random.Generator | None = None) -> Any:
    """Fill with draws from ``N(mean, std^2)``."""
    shape = _array(tensor, "normal_").shape
    return _fill(tensor, check_rng(rng, "normal_").normal(mean, std, shape), "normal_")


def constant_(tensor: Any, val: float) -> Any:
    return _fill(tensor, val, "constant_")


def zeros_(tensor: Any) -> Any:
    return _fill(tensor, 0, "zeros_")


def ones_(tensor: Any) -> Any:
    return _fill(tensor, 1, "ones_")


def xavier_uniform_(tensor: Any, gain: float = 1.0, *,
                    rng: np.random.Generator | None = None) -> Any:
    """Glorot & Bengio (2010): ``U(-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(tensor, -bound, bound, rng=rng)


def xavier_normal_(tensor: Any, gain: float = 1.0, *,
                   rng: np.random.Generator | None = None) -> Any:
    """Glorot & Bengio (2010): ``N(0, s^2)``, ``s = gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)), rng=rng)


def kaiming_uniform_(tensor: Any, a: float = 0.0, mode: str = "fan_in",
                     nonlinearity: str = "leaky_relu", *,
                     rng: np.random.Generator | None = None) -> Any:
    """He et al. (2015): ``U(-b, b)`` with ``b = gain * sqrt(3 / fan)``.

    ``gain = calculate_gain(nonlinearity, a)``; ``fan`` is ``fan_in`` (preserves forward
    variance) or ``fan_out`` (backward). PyTorch's default Linear/Conv init is
    ``a = sqrt(5)``, which gives ``b = 1 / sqrt(fan_in)``.
    """
    fan = _calculate_correct_fan(tensor, mode)
    if fan == 0:
        return tensor
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(tensor, -bound, bound, rng=rng)


def kaiming_normal_(tensor: Any, a: float = 0.0, mode: str = "fan_in",
                    nonlinearity: str = "leaky_relu", *,
                    rng: np.random.Generator | None = None) -> Any:
    """He et al. (2015): ``N(0, s^2)`` with ``s = gain / sqrt(fan)``."""
    fan = _calculate_correct_fan(tensor, mode)
    if fan == 0:
        return tensor
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan), rng=rng)


def default_weight_and_bias_(weight: Any, bias: Any | None, *,
                             rng: np.random.Generator | None = None) -> None:
    """PyTorch's ``reset_parameters`` of Linear and ConvNd: ``kaiming_uniform_(weight,
    a=sqrt(5))`` (so ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``), and the bias from
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    rng = check_rng(rng, "default_weight_and_bias_")
    kaiming_uniform_(weight, a=math.sqrt(5), rng=rng)
    if bias is not None:
        fan_in, _ = _calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        uniform_(bias, -bound, bound, rng=rng)
