"""Pooling layers: thin wrappers that store settings and call ``cnnlab.functional``.

Each family (max, average, adaptive average, adaptive max, blur) has one base class; the
1d/2d/3d subclasses only name the functional op of their spatial rank. Settings are kept as
given (an int stays an int), as PyTorch does, and validated by the functional op.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class PoolSpec:
    """A downsampling pooling's settings, per spatial axis where a tuple: what a swap
    (:func:`replace_pooling`) keeps. ``kind`` is "max", "avg" or "blur" (an
    :class:`AntialiasedPool`, whose ``base`` is the pooling it blurs, or a plain BlurPool,
    window = stride, base "max")."""

    kind: str
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    dilation: tuple[int, ...]
    ceil_mode: bool = False
    count_include_pad: bool = True
    base: str = "max"

    @property
    def spatial_dims(self) -> int:
        return len(self.kernel_size)


class AntialiasedPool(Module):
    """Zhang 2019's anti-aliased pooling ("Making Convolutional Networks Shift-Invariant
    Again"): the pooling ``spec.base`` ("max" or "avg", with ``spec``'s window, padding,
    dilation) densely, at stride 1, then a binomial blur of ``filter_size`` taps at
    ``spec.stride`` (reflect padding, as the antialiased-cnns package does). Its output has
    the strided pooling's size, ``floor((n + 2p - d(k-1) - 1) / s) + 1`` (with
    ``ceil_mode``, the dense map is extended at its end by its last values until the blur
    gives the ceil-mode size). For max pooling this is Zhang's MaxBlurPool.
    :func:`replace_pooling` puts it in the place of a model's poolings and back."""

    def __init__(self, spec: PoolSpec, filter_size: int = 4) -> None:
        super().__init__()
        self.spec, self.filter_size = spec, filter_size

    @property
    def kind(self) -> str:
        return self.spec.base

    @property
    def kernel_size(self) -> tuple[int, ...]:
        return self.spec.kernel_size

    @property
    def stride(self) -> tuple[int, ...]:
        return self.spec.stride

    @property
    def padding(self) -> tuple[int, ...]:
        return self.spec.padding

    def forward(self, x: Any) -> Any:
        spec = self.spec
        nd = spec.spatial_dims
        if spec.base == "max":
            dense = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1](
                x, spec.kernel_size, 1, spec.padding, spec.dilation)
        else:
            dense = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[nd - 1](
                x, spec.kernel_size, 1, spec.padding, False, spec.count_include_pad)
        if spec.ceil_mode:
            dense = self._extend_for_ceil_mode(x, dense)
        blur = (F.blur_pool1d, F.blur_pool2d, F.blur_pool3d)[nd - 1]
        return blur(dense, self.filter_size, spec.stride, "reflect")

    def _extend_for_ceil_mode(self, x: Any, dense: Any) -> Any:
        """Repeat the dense map's last values until the blur's ceil(m / s) outputs are
        the ceil-mode pooling's."""
        pads: list[int] = []
        for axis in reversed(range(self.spec.spatial_dims)):  # F.pad: last axis first
            pads += [0, ceil_mode_extra(self.spec, axis, x.shape[2 + axis],
                                        dense.shape[2 + axis])]
        return F.pad(dense, tuple(pads), mode="replicate") if any(pads) else dense

    def extra_repr(self) -> str:
        spec = self.spec
        return (f"kind={spec.base!r}, kernel_size={spec.kernel_size}, stride={spec.stride}, "
                f"padding={spec.padding}, filter_size={self.filter_size}")


POOL_KINDS = ("max", "avg", "blur")


def ceil_mode_extra(spec: PoolSpec, axis: int, n: int, dense: int) -> int:
    """Samples to add at the end of a dense (stride-1) pooled map of ``dense`` samples
    along ``axis`` so that a blur at ``spec``'s stride, ``ceil(m / s)`` outputs, gives the
    ceil-mode pooling's size for an input of ``n`` (PyTorch's rule: the last window
    starts inside the input or its left padding)."""
    s, p = spec.stride[axis], spec.padding[axis]
    span = n + 2 * p - spec.dilation[axis] * (spec.kernel_size[axis] - 1) - 1
    target = -(-span // s) + 1
    if (target - 1) * s >= n + p:
        target -= 1
    return max(0, (target - 1) * s + 1 - dense)


def _ints(value: Any, n: int) -> tuple[int, ...]:
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value)
    return (int(value),) * n


def pooling_spec(module: Any) -> PoolSpec | None:
    """The :class:`PoolSpec` of a downsampling pooling layer, read by class name so that
    torch's ``MaxPool2d`` counts as cnnlab's does; None for any other module, and for
    poolings at stride 1 (they do not downsample)."""
    name = type(module).__name__
    if name in ("AntialiasedPool", "TorchAntialiasedPool") and hasattr(module, "spec"):
        return replace(module.spec, kind="blur")
    for kind, prefix in (("max", "MaxPool"), ("avg", "AvgPool"), ("blur", "BlurPool")):
        if name in (f"{prefix}1d", f"{prefix}2d", f"{prefix}3d"):
            nd = int(name[-2])
            stride = _ints(module.stride if module.stride is not None
                           else module.kernel_size, nd)
            if all(s == 1 for s in stride):
                return None
            if kind == "blur":
                return PoolSpec("blur", stride, stride, (0,) * nd, (1,) * nd)
            return PoolSpec(kind, _ints(module.kernel_size, nd), stride,
                            _ints(getattr(module, "padding", 0), nd),
                            _ints(getattr(module, "dilation", 1), nd),
                            bool(getattr(module, "ceil_mode", False)),
                            bool(getattr(module, "count_include_pad", True)),
                            base=kind)
    return None


def _checked_swap(spec: PoolSpec, kind: str) -> str:
    """The pooling the swap builds on: the source's own for "blur", ``kind`` otherwise;
    a ValueError where the settings do not carry over."""
    base = spec.base if kind == "blur" else kind
    if base == "avg" and any(d != 1 for d in spec.dilation):
        raise ValueError(f"replace_pooling: a max pooling with dilation {spec.dilation} has "
                         f"no average pooling with the same window (average pooling has "
                         f"no dilation)")
    return base


def cnnlab_pooling(spec: PoolSpec, kind: str, filter_size: int) -> Module:
    """The cnnlab layer of ``kind`` for the pooling ``spec``: for "blur" an
    :class:`AntialiasedPool` around the pooling it replaces; for "max" and "avg" that
    pooling with the same window, stride, padding, ceil mode (and dilation or
    ``count_include_pad``, where the kind has them)."""
    base = _checked_swap(spec, kind)
    nd = spec.spatial_dims
    if kind == "blur":
        return AntialiasedPool(replace(spec, kind="blur", base=base), filter_size)
    if kind == "max":
        return (MaxPool1d, MaxPool2d, MaxPool3d)[nd - 1](
            spec.kernel_size, spec.stride, spec.padding, spec.dilation,
            ceil_mode=spec.ceil_mode)
    return (AvgPool1d, AvgPool2d, AvgPool3d)[nd - 1](
        spec.kernel_size, spec.stride, spec.padding, spec.ceil_mode, spec.count_include_pad)


def replace_pooling(model: Any, kind: str, filter_size: int = 4,
                    make: Callable[[PoolSpec, str, int], Any] = cnnlab_pooling) -> Any:
    """A copy of ``model`` whose every downsampling pooling layer is ``kind`` ("max",
    "avg" or "blur", see :func:`cnnlab_pooling`), its parameters and buffers shared with
    ``model`` (the same objects). ``make`` builds each replacement (the default, cnnlab
    layers; :func:`cnnlab.analysis.swap_pooling` passes torch's for a torch model: the
    walk only needs ``parameters()``, ``named_buffers()``, ``modules()`` and
    ``_modules``). Poolings a ``forward`` calls as functions are not layers and stay."""
    memo: dict[int, Any] = {id(p): p for p in model.parameters()}
    memo.update({id(b): b for _, b in model.named_buffers() if b is not None})
    result = copy.deepcopy(model, memo)
    spec = pooling_spec(result)
    if spec is not None:  # the model is itself one pooling layer
        return make(spec, kind, filter_size)
    for parent in list(result.modules()):
        for name, child in list(parent._modules.items()):
            spec = pooling_spec(child) if child is not None else None
            if spec is not None:
                parent._modules[name] = make(spec, kind, filter_size)
    return result
