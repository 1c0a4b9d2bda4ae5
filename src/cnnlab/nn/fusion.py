"""The conv + max-pool rewrite: a named pass over a :class:`~cnnlab.nn.Sequential`'s layers.

What it buys. A ``ConvNd`` followed by a ``MaxPoolNd`` whose window is its stride (LeNet-5's
``Conv2d`` + ``MaxPool2d(2)``) runs as one op, :func:`cnnlab.functional.conv_max_pool`: the
lecture's "stride = stride 1 followed by downsampling" read backwards, the pooling window's
offsets become extra output channels of one strided convolution, so the columns cover only
the pooled positions. :func:`cnnlab.ops.dispatch.pooling_in_conv_pays` (applied inside that
op) still chooses, per call, between the strided convolution and the two ops; this pass only
decides which layer pairs are offered to it. Measured on the 2-core development VM: a
LeNet-5 training step on mnist5k (batch 128, two shards) took 5.3 ms with the pass and
6.6 ms with ``fuse_conv_pool = False`` (train time per step over 160 steps, minimum of 4
alternating runs); per layer, ``python benchmarks/bench_conv_pool.py`` (rows ``lenet-c1``
and ``lenet-c3``; BENCHMARKS.md: one 64-image shard, 6.66 -> 5.74 ms).

How to turn it off: ``model.fuse_conv_pool = False`` on a ``Sequential`` (the class default
is True) runs every layer on its own; nothing else changes, the state-dict keys included
(the pass adds no module and no parameter, so PyTorch interop and old checkpoints see the
same keys).

When the pass stands aside, so that a pair runs as its two layers:

- either layer is not the library's own class (a subclass may compute something else) or
  has ``forward`` set on the instance (a patched layer runs its own code);
- module calls are being observed (:func:`cnnlab.nn.hooks.calls_observed`, during
  :func:`cnnlab.analysis.trace`): the trace records the layers as written;
- either layer has hooks registered (:func:`has_hooks`): a hook must see its layer's own
  output, which the fused op never builds;
- the settings are not the plain ones (convolution stride 1, no dilation, zero padding;
  pooling window = stride, no padding or dilation, floor mode, no indices).

The plan is rebuilt on every call, from the layers as they are then: looking at a dozen
layers costs about 10 us against a LeNet-5 step's 5 ms, and a plan cached across calls
would go stale when a hook is registered on a child or a layer's setting is changed, which
the ``Sequential`` holding it never sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .. import functional as F
from ..ops._args import _is_int, is_default_stride
from .conv import Conv1d, Conv2d, Conv3d
from .hooks import calls_observed
from .module import Module
from .pooling import MaxPool1d, MaxPool2d, MaxPool3d

# The per-module hook registries of PyTorch's ``nn.Module`` (issue 14 adds them to ours).
HOOK_DICTS = ("_forward_pre_hooks", "_forward_hooks", "_backward_pre_hooks", "_backward_hooks")

# The layer pairs the pass fuses: exactly these classes, never a subclass.
_FUSABLE = {Conv1d: MaxPool1d, Conv2d: MaxPool2d, Conv3d: MaxPool3d}

Step = Callable[[Any], Any]


def has_hooks(module: Module) -> bool:
    """Whether ``module`` has a forward (pre-)hook or a backward (pre-)hook registered, read
    from the registries PyTorch keeps on every module (:data:`HOOK_DICTS`; a module without
    them has none)."""
    return any(getattr(module, name, None) for name in HOOK_DICTS)


class ConvMaxPool(NamedTuple):
    """One step of a plan: ``pool(conv(x))`` as :func:`cnnlab.functional.conv_max_pool`,
    with the two layers' own parameters and settings (it holds no state of its own)."""

    conv: Module
    pool: Module
    pool_size: tuple[int, ...]

    def __call__(self, x: Any) -> Any:
        conv, n = self.conv, self.conv.spatial_dims
        return F._conv_max_pool(x, conv.weight, conv.bias, conv.padding, conv.groups,
                                self.pool_size, n, (f"conv{n}d", f"max_pool{n}d"))


def fuse_conv_max_pool(modules: Sequence[Module]) -> list[Step]:
    """The steps that compute ``modules`` applied in order: each fusable ``ConvNd`` +
    ``MaxPoolNd`` pair (see the module docstring) as one :class:`ConvMaxPool`, every other
    module as itself.

    >>> from cnnlab.nn import Conv2d, MaxPool2d, ReLU
    >>> steps = fuse_conv_max_pool([Conv2d(1, 6, 5), MaxPool2d(2), ReLU()])
    >>> [type(step).__name__ for step in steps]
    ['ConvMaxPool', 'ReLU']
    """
    steps: list[Step] = []
    index = 0
    while index < len(modules):
        module = modules[index]
        pool_size = (fused_pool_size(module, modules[index + 1])
                     if index + 1 < len(modules) else None)
        if pool_size is None:
            steps.append(module)
            index += 1
        else:
            steps.append(ConvMaxPool(module, modules[index + 1], pool_size))
            index += 2
    return steps


def fused_pool_size(conv: Module, pool: Module) -> tuple[int, ...] | None:
    """The pooling window when ``pool(conv(x))`` may run as :func:`F.conv_max_pool`, else
    None (the conditions are listed in the module docstring)."""
    if (_FUSABLE.get(type(conv)) is not type(pool)
            or "forward" in vars(conv) or "forward" in vars(pool)
            or has_hooks(conv) or has_hooks(pool) or calls_observed()):
        return None
    n = conv.spatial_dims
    kernel = _int_tuple(pool.kernel_size, n)
    stride = kernel if is_default_stride(pool.stride) else _int_tuple(pool.stride, n)
    plain_conv = (conv.stride == (1,) * n and conv.dilation == (1,) * n
                  and conv.padding_mode == "zeros")
    plain_pool = (kernel is not None and kernel == stride and min(kernel) >= 1
                  and _int_tuple(pool.padding, n) == (0,) * n
                  and _int_tuple(pool.dilation, n) == (1,) * n
                  and pool.ceil_mode is False and pool.return_indices is False)
    return kernel if plain_conv and plain_pool else None


def _int_tuple(value: Any, n: int) -> tuple[int, ...] | None:
    """``value`` as n ints (an int repeated, or a sequence of n ints), else None."""
    if _is_int(value):
        return (int(value),) * n
    if isinstance(value, (tuple, list)) and len(value) == n and all(map(_is_int, value)):
        return tuple(int(v) for v in value)
    return None
