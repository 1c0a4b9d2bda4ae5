"""Convolution layers: ``Conv1d/2d/3d`` and ``ConvTranspose1d/2d/3d`` on one ``_ConvNd`` base.

The base validates and normalises the settings once (``ops/_args.py``), creates the weight
and bias with PyTorch's default initialisation, and prints them; each subclass only fixes
the spatial rank and the functional op its ``forward`` calls.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from .. import functional as F
from .._random import check_rng
from ..ops._args import PADDING_MODES, PADDING_STRINGS, check_choice, pad_pairs, to_tuple
from . import init
from .linear import check_positive_int
from .module import Module, Parameter, check_dtype


class _ConvNd(Module):
    """Shared by every convolution layer (see :class:`Conv2d` for the parameters).

    Attributes
    ----------
    weight : Parameter (out_channels, in_channels/groups, *kernel_size) for a convolution,
        (in_channels, out_channels/groups, *kernel_size) for a transposed one; drawn from
        ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with PyTorch's ``fan_in = weight.shape[1] *
        prod(kernel_size)``.
    bias : Parameter (out_channels,) from the same distribution, or None.
    """

    spatial_dims: ClassVar[int]
    transposed: ClassVar[bool]
    _functional: ClassVar[Callable[..., Any]]

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | Sequence[Sequence[int]] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        output_padding: int | Sequence[int] = 0,
        rng: np.random.Generator | None = None,
        dtype: Any = np.float32,
    ) -> None:
        super().__init__()
        name, n = type(self).__name__, self.spatial_dims
        self.in_channels = check_positive_int(in_channels, "in_channels", name)
        self.out_channels = check_positive_int(out_channels, "out_channels", name)
        self.groups = check_positive_int(groups, "groups", name)
        for what, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
            if channels % groups:
                raise ValueError(f"{name}: {what} ({channels}) must be divisible by groups "
                                 f"({groups})")
        self.kernel_size = to_tuple(kernel_size, n, "kernel_size", name)
        self.stride = to_tuple(stride, n, "stride", name)
        self.dilation = to_tuple(dilation, n, "dilation", name)
        self.output_padding = to_tuple(output_padding, n, "output_padding", name, minimum=0)
        if isinstance(padding, str):
            if self.transposed or padding not in PADDING_STRINGS:
                allowed = "an int or a tuple" if self.transposed else PADDING_STRINGS
                raise ValueError(f"{name}: padding must be {allowed}, got {padding!r}")
            self.padding: Any = padding
        else:
            pairs = pad_pairs(padding, n, "padding", name)
            symmetric = all(lo == hi for lo, hi in pairs)
            self.padding = tuple(lo for lo, _ in pairs) if symmetric else pairs
        allowed_modes = ("zeros",) if self.transposed else PADDING_MODES
        self.padding_mode = check_choice(padding_mode, allowed_modes, "padding_mode", name)
        dtype = check_dtype(dtype, name)
        if self.transposed:
            shape = (self.in_channels, self.out_channels // self.groups, *self.kernel_size)
        else:
            shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        self.weight = Parameter(np.empty(shape, dtype))
        if bias:
            self.bias = Parameter(np.empty(self.out_channels, dtype))
        else:
            self.register_parameter("bias", None)
        init.default_weight_and_bias_(self.weight, self.bias, rng=check_rng(rng, name))

    def forward(self, x: Any) -> Any:
        if self.transposed:
            return self._functional(x, self.weight, self.bias, self.stride, self.padding,
                                    self.output_padding, self.groups, self.dilation)
        return self._functional(x, self.weight, self.bias, self.stride, self.padding,
                                self.dilation, self.groups, self.padding_mode)

    def extra_repr(self) -> str:
        n = self.spatial_dims
        text = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}")
        if self.padding != (0,) * n:
            text += f", padding={self.padding}"
        if self.dilation != (1,) * n:
            text += f", dilation={self.dilation}"
        if self.output_padding != (0,) * n:
            text += f", output_padding={self.output_padding}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text


class _Conv(_ConvNd):
    transposed = False

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", *, rng: np.random.Generator | None = None,
                 dtype: Any = np.float32) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, 0, rng, dtype)


class _ConvTranspose(_ConvNd):
    transposed = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, output_padding: Any = 0, groups: int = 1,
                 bias: bool = True, dilation: Any = 1, padding_mode: str = "zeros", *,
                 rng: np.random.Generator | None = None, dtype: Any = np.float32) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, output_padding, rng, dtype)


class Conv1d(_Conv):
    """1-D convolution layer: input (N, C_in, L) -> (N, C_out, L_out); see :class:`Conv2d`."""

    spatial_dims = 1
    _functional = staticmethod(F.conv1d)


class Conv2d(_Conv):
    """2-D convolution layer (cross-correlation), as ``torch.nn.Conv2d``.

    Parameters
    ----------
    in_channels, out_channels : int (both divisible by ``groups``)
    kernel_size, stride, dilation : int or tuple of 2 ints
    padding : int, tuple, per-side pairs ``((top, bottom), (left, right))``, or ``'valid'``,
        ``'same'``, ``'full'``
    groups : int
    bias : bool
    padding_mode : ``'zeros'``, ``'reflect'``, ``'replicate'`` or ``'circular'``
    rng : np.random.Generator or None;  dtype : float32 (default) or float64

    Shape
    -----
    input (N, C_in, H, W) or (C_in, H, W) -> (N, C_out, H_out, W_out), per axis
    ``out = floor((n + lo + hi - dilation*(k-1) - 1) / stride) + 1``
    (:func:`cnnlab.ops._args.conv_output_shape`).

    Attributes: see :class:`_ConvNd` (weight ``(C_out, C_in/groups, kH, kW)``).

    >>> Conv2d(1, 4, 3, padding=1, rng=np.random.default_rng(0)).weight.shape
    (4, 1, 3, 3)
    """

    spatial_dims = 2
    _functional = staticmethod(F.conv2d)


class Conv3d(_Conv):
    """3-D convolution layer: input (N, C_in, D, H, W); see :class:`Conv2d`."""

    spatial_dims = 3
    _functional = staticmethod(F.conv3d)


class ConvTranspose1d(_ConvTranspose):
    """1-D transposed convolution: (N, C_in, L) -> (N, C_out, L_out); see
    :class:`ConvTranspose2d`."""

    spatial_dims = 1
    _functional = staticmethod(F.conv_transpose1d)


class ConvTranspose2d(_ConvTranspose):
    """2-D transposed convolution (the adjoint of :class:`Conv2d`), as in PyTorch.

    Parameters as :class:`Conv2d` plus ``output_padding`` (int or tuple, each smaller than
    the stride or the dilation); ``padding`` is an int or tuple; only ``padding_mode='zeros'``.

    Shape
    -----
    (N, C_in, H, W) -> (N, C_out, H_out, W_out), per axis
    ``out = (n - 1)*stride - 2*padding + dilation*(k-1) + output_padding + 1``
    (:func:`cnnlab.ops._args.conv_transpose_output_shape`).

    Attributes: weight ``(C_in, C_out/groups, kH, kW)``, bias ``(C_out,)``.
    """

    spatial_dims = 2
    _functional = staticmethod(F.conv_transpose2d)


class ConvTranspose3d(_ConvTranspose):
    """3-D transposed convolution: (N, C_in, D, H, W); see :class:`ConvTranspose2d`."""

    spatial_dims = 3
    _functional = staticmethod(F.conv_transpose3d)
