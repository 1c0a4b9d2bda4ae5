"""Normalisation and regularisation layers: ``BatchNorm1d/2d/3d``, ``LayerNorm``,
``Dropout``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from .. import functional as F
from .._random import check_rng
from ..autograd import Tensor
from .linear import check_positive_int
from .module import Module, Parameter, check_dtype


class _BatchNorm(Module):
    """Batch normalisation over (N, *spatial) per channel (Ioffe & Szegedy 2015).

    Parameters
    ----------
    num_features : int, the number of channels C
    eps : float added to the variance
    momentum : float, or None for a cumulative average over all batches seen
    affine : learn ``weight`` (ones) and ``bias`` (zeros), each (C,)
    bias : with ``affine``, also learn the bias (keyword-only, as in PyTorch 2.13)
    track_running_stats : keep ``running_mean`` (zeros), ``running_var`` (ones) and
        ``num_batches_tracked`` (int64 0-d) buffers, updated in training and used in eval
        (as PyTorch: running variance is the unbiased batch variance's average)
    dtype : float32 (default) or float64

    Shape: input and output ``(N, C, *spatial)``; see :func:`cnnlab.functional.batch_norm`.
    """

    input_ndims: ClassVar[tuple[int, ...]]
    input_layout: ClassVar[str]
    batch_independent = False  # normalises by the batch's statistics

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, *,
                 bias: bool = True, dtype: Any = np.float32) -> None:
        super().__init__()
        name = type(self).__name__
        self.num_features = check_positive_int(num_features, "num_features", name)
        if eps <= 0:
            raise ValueError(f"{name}: eps must be positive, got {eps}")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"{name}: momentum must be in [0, 1] or None, got {momentum}")
        self.eps, self.momentum = eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = check_dtype(dtype, name)
        if affine:
            self.weight = Parameter(np.ones(num_features, dtype))
        else:
            self.register_parameter("weight", None)
        if affine and bias:
            self.bias = Parameter(np.zeros(num_features, dtype))
        else:
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(buffer, None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x: Any) -> Any:
        ndim = x.ndim if isinstance(x, Tensor) else np.ndim(x)
        if ndim not in self.input_ndims:
            raise ValueError(f"{type(self).__name__}: expected input {self.input_layout}, got "
                             f"a {ndim}-D input")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked += 1
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or not self.track_running_stats
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            use_batch_stats, factor, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L); see :class:`_BatchNorm`."""

    input_ndims = (2, 3)
    input_layout = "(N, C) or (N, C, L)"


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W); see :class:`_BatchNorm`.

    >>> bn = BatchNorm2d(3)
    >>> sorted(bn.state_dict())
    ['bias', 'num_batches_tracked', 'running_mean', 'running_var', 'weight']
    """

    input_ndims = (4,)
    input_layout = "(N, C, H, W)"


class BatchNorm3d(_BatchNorm):
    """Batch normalisation of (N, C, D, H, W); see :class:`_BatchNorm`."""

    input_ndims = (5,)
    input_layout = "(N, C, D, H, W)"


class LayerNorm(Module):
    """Layer normalisation (Ba et al. 2016) over the trailing ``normalized_shape`` axes.

    Attributes: ``weight`` (ones) and ``bias`` (zeros) of shape ``normalized_shape`` when
    ``elementwise_affine`` (``bias=False`` drops the bias). Shape: input (*,
    *normalized_shape), output the same; see :func:`cnnlab.functional.layer_norm`.
    """

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, *,
                 dtype: Any = np.float32) -> None:
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
            else tuple(normalized_shape)
        for size in shape:
            check_positive_int(size, "normalized_shape", "LayerNorm")
        self.normalized_shape = tuple(int(s) for s in shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        dtype = check_dtype(dtype, "LayerNorm")
        if elementwise_affine:
            self.weight = Parameter(np.ones(self.normalized_shape, dtype))
        else:
            self.register_parameter("weight", None)
        if elementwise_affine and bias:
            self.bias = Parameter(np.zeros(self.normalized_shape, dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, x: Any) -> Any:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class Dropout(Module):
    """Inverted dropout with probability ``p`` in training; identity in eval.

    The mask is drawn from ``rng`` (stored on the layer; None: a fresh unseeded generator),
    so a seeded generator makes a training run reproducible.
    """

    batch_independent = False  # one generator's draws, in batch order

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"Dropout: p must be a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = check_rng(rng, "Dropout")

    def forward(self, x: Any) -> Any:
        return F.dropout(x, self.p, self.training, self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"
