"""``ResidualBlock``: the basic ResNet block (He et al. 2016, fig. 2), any spatial rank."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._random import check_rng
from .activation import ReLU
from .container import Sequential
from .conv import Conv1d, Conv2d, Conv3d
from .linear import check_positive_int
from .module import Module
from .normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d

_CONV = {1: Conv1d, 2: Conv2d, 3: Conv3d}
_BATCH_NORM = {1: BatchNorm1d, 2: BatchNorm2d, 3: BatchNorm3d}


class ResidualBlock(Module):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    ``conv1`` is 3x3 with ``stride``, ``conv2`` 3x3 (both padding 1, no bias). The shortcut
    is the identity, or ``downsample = Sequential(1x1 conv with stride, BatchNorm)`` when the
    stride or the channel count changes. Sub-module names match torchvision's
    ``BasicBlock`` (``conv1``, ``bn1``, ``conv2``, ``bn2``, ``downsample.0``,
    ``downsample.1``), so state dicts load across.

    Parameters
    ----------
    in_channels, out_channels : int
    stride : int
    dims : spatial rank, 1 (e.g. MNIST-1D), 2 or 3
    rng, dtype : as for :class:`Conv2d`

    Shape: (N, C_in, *spatial) -> (N, C_out, *ceil(spatial / stride)).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, dims: int = 2,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__()
        if dims not in _CONV:
            raise ValueError(f"ResidualBlock: dims must be 1, 2 or 3, got {dims!r}")
        check_positive_int(stride, "stride", "ResidualBlock")
        rng = check_rng(rng, "ResidualBlock")
        conv, batch_norm = _CONV[dims], _BATCH_NORM[dims]
        self.conv1 = conv(in_channels, out_channels, 3, stride, 1, bias=False, rng=rng,
                          dtype=dtype)
        self.bn1 = batch_norm(out_channels, dtype=dtype)
        self.relu = ReLU()
        self.conv2 = conv(out_channels, out_channels, 3, 1, 1, bias=False, rng=rng, dtype=dtype)
        self.bn2 = batch_norm(out_channels, dtype=dtype)
        if stride != 1 or in_channels != out_channels:
            self.downsample = Sequential(
                conv(in_channels, out_channels, 1, stride, bias=False, rng=rng, dtype=dtype),
                batch_norm(out_channels, dtype=dtype),
            )
        else:
            self.add_module("downsample", None)
        self.stride = stride

    def forward(self, x: Any) -> Any:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)
