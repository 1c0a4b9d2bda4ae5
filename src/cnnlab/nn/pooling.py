"""Pooling layers: thin wrappers that store settings and call ``cnnlab.functional``.

Each family (max, average, adaptive average, adaptive max, blur) has one base class; the
1d/2d/3d subclasses only name the functional op of their spatial rank. Settings are kept as
given (an int stays an int), as PyTorch does, and validated by the functional op.
"""

from __future__ import annotations

import copy
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


class AntialiasedPool(Module):
    """Zhang 2019's anti-aliased pooling ("Making Convolutional Networks Shift-Invariant
    Again"): the pooling (``kind`` "max" or "avg", window ``kernel_size``, ``padding``)
    densely, at stride 1, then a binomial blur of ``filter_size`` taps at ``stride``
    (reflect padding, as the antialiased-cnns package does). Its output has the strided
    pooling's size: ``floor((n + 2p - k) / s) + 1``. For max pooling this is Zhang's
    MaxBlurPool. :func:`replace_pooling` puts it in a model's place of its poolings."""

    def __init__(self, kind: str, kernel_size: tuple[int, ...], stride: tuple[int, ...],
                 padding: tuple[int, ...], filter_size: int = 4) -> None:
        super().__init__()
        self.kind, self.kernel_size, self.stride = kind, kernel_size, stride
        self.padding, self.filter_size = padding, filter_size

    def forward(self, x: Any) -> Any:
        nd = len(self.kernel_size)
        pool = ((F.max_pool1d, F.max_pool2d, F.max_pool3d) if self.kind == "max"
                else (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d))[nd - 1]
        blur = (F.blur_pool1d, F.blur_pool2d, F.blur_pool3d)[nd - 1]
        return blur(pool(x, self.kernel_size, 1, self.padding), self.filter_size,
                    self.stride, "reflect")

    def extra_repr(self) -> str:
        return (f"kind={self.kind!r}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, filter_size={self.filter_size}")


POOL_KINDS = ("max", "avg", "blur")
# (kind, spatial dims, kernel, stride, padding) of a downsampling pooling
PoolSettings = tuple[str, int, tuple[int, ...], tuple[int, ...], tuple[int, ...]]


def _ints(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),) * n


def pooling_settings(module: Any) -> PoolSettings | None:
    """(kind, spatial dims, kernel, stride, padding) of a downsampling pooling layer, read
    by class name so that torch's ``MaxPool2d`` counts as cnnlab's does; None for any
    other module, and for poolings at stride 1 (they do not downsample). A plain
    BlurPool's window is its stride; an :class:`AntialiasedPool` reports kind "blur"."""
    name = type(module).__name__
    if hasattr(module, "filter_size") and hasattr(module, "kind") and name in (
            "AntialiasedPool", "TorchAntialiasedPool"):
        return ("blur", len(module.kernel_size), tuple(module.kernel_size),
                tuple(module.stride), tuple(module.padding))
    for kind, prefix in (("max", "MaxPool"), ("avg", "AvgPool"), ("blur", "BlurPool")):
        if name in (f"{prefix}1d", f"{prefix}2d", f"{prefix}3d"):
            nd = int(name[-2])
            stride = _ints(module.stride if module.stride is not None
                           else module.kernel_size, nd)
            if all(s == 1 for s in stride):
                return None
            if kind == "blur":
                return kind, nd, stride, stride, (0,) * nd
            return (kind, nd, _ints(module.kernel_size, nd), stride,
                    _ints(getattr(module, "padding", 0), nd))
    return None


def cnnlab_pooling(settings: PoolSettings, source: Any, kind: str, filter_size: int
                   ) -> Module:
    """The cnnlab layer of ``kind`` in place of the pooling ``source`` (``settings``): for
    "blur", an :class:`AntialiasedPool` around the pooling it replaces (max pooling for a
    plain BlurPool); for "max" and "avg", that pooling with the same window, stride and
    padding."""
    was, nd, kernel, stride, padding = settings
    base = getattr(source, "kind", "max") if was == "blur" else was
    if kind == "blur":
        return AntialiasedPool(base, kernel, stride, padding, filter_size)
    classes = {"max": (MaxPool1d, MaxPool2d, MaxPool3d), "avg": (AvgPool1d, AvgPool2d,
                                                                 AvgPool3d)}
    return classes[kind][nd - 1](kernel, stride, padding)


def replace_pooling(model: Any, kind: str, filter_size: int = 4,
                    make: Callable[[PoolSettings, Any, str, int], Any] = cnnlab_pooling
                    ) -> Any:
    """A copy of ``model`` whose every downsampling pooling is ``kind`` ("max", "avg" or
    "blur", see :func:`cnnlab_pooling`), its parameters and buffers shared with ``model``
    (the same objects). ``make`` builds each replacement (the default, cnnlab layers;
    :func:`cnnlab.analysis.swap_pooling` passes torch's for a torch model: the walk only
    needs ``parameters()``, ``named_buffers()``, ``modules()`` and ``_modules``)."""
    memo: dict[int, Any] = {id(p): p for p in model.parameters()}
    memo.update({id(b): b for _, b in model.named_buffers() if b is not None})
    result = copy.deepcopy(model, memo)
    found = pooling_settings(result)
    if found is not None:  # the model is itself one pooling layer
        return make(found, result, kind, filter_size)
    for parent in list(result.modules()):
        for name, child in list(parent._modules.items()):
            settings = pooling_settings(child) if child is not None else None
            if settings is not None:
                parent._modules[name] = make(settings, child, kind, filter_size)
    return result
