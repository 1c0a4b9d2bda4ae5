"""``Linear``, ``Identity`` and ``Flatten``."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .._random import check_rng
from ..ops._args import _is_int
from . import init
from .module import Module, Parameter, check_dtype


def check_positive_int(value: Any, name: str, owner: str) -> int:
    if not _is_int(value) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return int(value)


class Identity(Module):
    """Returns its input unchanged (accepts and ignores any constructor arguments)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: Any) -> Any:
        return x


class Linear(Module):
    """Affine layer ``y = x @ weight.T + bias``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    rng : np.random.Generator or None (a fresh unseeded one)
    dtype : float32 (default) or float64

    Shape
    -----
    input (*, in_features) -> output (*, out_features)

    Attributes
    ----------
    weight : Parameter (out_features, in_features), ``U(-1/sqrt(in), 1/sqrt(in))`` (PyTorch's
        ``kaiming_uniform_(a=sqrt(5))``)
    bias : Parameter (out_features,), same distribution, or None

    >>> Linear(3, 2, rng=np.random.default_rng(0))(np.ones((4, 3), np.float32)).shape
    (4, 2)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        self.in_features = check_positive_int(in_features, "in_features", "Linear")
        self.out_features = check_positive_int(out_features, "out_features", "Linear")
        dtype = check_dtype(dtype, "Linear")
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype))
        if bias:
            self.bias = Parameter(np.empty(self.out_features, dtype))
        else:
            self.register_parameter("bias", None)
        init.default_weight_and_bias_(self.weight, self.bias, rng=check_rng(rng, "Linear"))

    def forward(self, x: Any) -> Any:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Merge axes ``start_dim..end_dim`` into one (default: all but the batch axis).

    Shape: (N, *rest) -> (N, prod(rest)) with the defaults.
    """

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x: Any) -> Any:
        return F.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
