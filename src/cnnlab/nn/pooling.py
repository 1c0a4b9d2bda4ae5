"""Pooling layers: thin wrappers that store settings and call ``cnnlab.functional``.

Each family (max, average, adaptive average, adaptive max, blur) has one base class; the
1d/2d/3d subclasses only name the functional op of their spatial rank. Settings are kept as
given (an int stays an int), as PyTorch does, and validated by the functional op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from .. import functional as F
from .module import Module


def _single(value: Any) -> Any:
    return (value,) if isinstance(value, int) else value


class _MaxPoolNd(Module):
    _functional: ClassVar[Callable[..., Any]]

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1, return_indices: bool = False, ceil_mode: bool = False
                 ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, x: Any) -> Any:
        return self._functional(x, self.kernel_size, self.stride, self.padding, self.dilation,
                                self.ceil_mode, self.return_indices)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class MaxPool1d(_MaxPoolNd):
    """Max over windows of (N, C, L); stride defaults to ``kernel_size``. Output length per
    :func:`cnnlab.ops._args.pool_output_shape`. See ``torch.nn.MaxPool1d``."""

    _functional = staticmethod(F.max_pool1d)


class MaxPool2d(_MaxPoolNd):
    """Max over windows of (N, C, H, W) -> (N, C, H_out, W_out); stride defaults to
    ``kernel_size``; ``return_indices`` also returns PyTorch's flat argmax indices."""

    _functional = staticmethod(F.max_pool2d)


class MaxPool3d(_MaxPoolNd):
    """Max over windows of (N, C, D, H, W); see :class:`MaxPool2d`."""

    _functional = staticmethod(F.max_pool3d)


class _AvgPoolNd(Module):
    _functional: ClassVar[Callable[..., Any]]

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: int | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def forward(self, x: Any) -> Any:
        return self._functional(x, self.kernel_size, self.stride, self.padding, self.ceil_mode,
                                self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool1d(_AvgPoolNd):
    """Mean over windows of (N, C, L); see :class:`AvgPool2d`. Like PyTorch's, it stores
    ``kernel_size``, ``stride`` and ``padding`` as 1-tuples."""

    _functional = staticmethod(F.avg_pool1d)

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__(_single(kernel_size), None if stride is None else _single(stride),
                         _single(padding), ceil_mode, count_include_pad)


class AvgPool2d(_AvgPoolNd):
    """Mean over windows of (N, C, H, W); stride defaults to ``kernel_size``. The divisor
    counts padded positions unless ``count_include_pad=False``, or is ``divisor_override``."""

    _functional = staticmethod(F.avg_pool2d)


class AvgPool3d(_AvgPoolNd):
    """Mean over windows of (N, C, D, H, W); see :class:`AvgPool2d`."""

    _functional = staticmethod(F.avg_pool3d)


class _AdaptivePoolNd(Module):
    _functional: ClassVar[Callable[..., Any]]

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, x: Any) -> Any:
        return self._functional(x, self.output_size)

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"


class AdaptiveAvgPool1d(_AdaptivePoolNd):
    """Mean pooling to a fixed output length: (N, C, L) -> (N, C, output_size)."""

    _functional = staticmethod(F.adaptive_avg_pool1d)


class AdaptiveAvgPool2d(_AdaptivePoolNd):
    """Mean pooling to a fixed output size (H_out, W_out); output ``i`` of ``n`` inputs
    averages ``[floor(i n / out), ceil((i + 1) n / out))``. ``AdaptiveAvgPool2d(1)`` is
    global average pooling."""

    _functional = staticmethod(F.adaptive_avg_pool2d)


class AdaptiveAvgPool3d(_AdaptivePoolNd):
    """Mean pooling to a fixed (D_out, H_out, W_out)."""

    _functional = staticmethod(F.adaptive_avg_pool3d)


class _AdaptiveMaxPoolNd(_AdaptivePoolNd):
    def __init__(self, output_size: Any, return_indices: bool = False) -> None:
        super().__init__(output_size)
        self.return_indices = return_indices

    def forward(self, x: Any) -> Any:
        return self._functional(x, self.output_size, self.return_indices)


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """Max pooling to a fixed output length: (N, C, L) -> (N, C, output_size)."""

    _functional = staticmethod(F.adaptive_max_pool1d)


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """Max pooling to a fixed output size (H_out, W_out), windows as
    :class:`AdaptiveAvgPool2d`."""

    _functional = staticmethod(F.adaptive_max_pool2d)


class AdaptiveMaxPool3d(_AdaptiveMaxPoolNd):
    """Max pooling to a fixed (D_out, H_out, W_out)."""

    _functional = staticmethod(F.adaptive_max_pool3d)


class _BlurPoolNd(Module):
    _functional: ClassVar[Callable[..., Any]]

    def __init__(self, kernel_size: Any = 3, stride: Any = 2, padding_mode: str = "reflect"
                 ) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding_mode = kernel_size, stride, padding_mode

    def forward(self, x: Any) -> Any:
        return self._functional(x, self.kernel_size, self.stride, self.padding_mode)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding_mode={self.padding_mode!r}")


class BlurPool1d(_BlurPoolNd):
    """Anti-aliased downsampling (Zhang 2019): binomial low-pass per channel, then stride."""

    _functional = staticmethod(F.blur_pool1d)


class BlurPool2d(_BlurPoolNd):
    """Anti-aliased downsampling of (N, C, H, W) (Zhang 2019, "Making Convolutional
    Networks Shift-Invariant Again"): binomial low-pass per channel, then stride."""

    _functional = staticmethod(F.blur_pool2d)


class BlurPool3d(_BlurPoolNd):
    """Anti-aliased downsampling of (N, C, D, H, W); see :class:`BlurPool2d`."""

    _functional = staticmethod(F.blur_pool3d)
