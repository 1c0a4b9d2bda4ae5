"""Data parallelism over one machine's cores: a batch's gradient as the sum of its shards'.

NumPy runs an op on one core except inside BLAS, and most of a small CNN's training step
is not BLAS (column copies, pooling, activations, layout changes). Splitting the batch into
shards and differentiating each in its own thread keeps every core busy on all of it, as
PyTorch's DataParallel does with devices. Meanwhile BLAS runs one thread per call, so the
shards' GEMMs do not fight each other's BLAS threads for the same cores.

For a loss that is a mean over the batch, ``grad = sum_s (n_s / n) grad(loss_s)``: the
batch gradient up to float rounding. Shards are summed in a fixed order, so the same
number of shards gives the same bits on every run, whatever order the threads finish in.
Layers that couple the samples of a batch (BatchNorm) or draw from one generator
(Dropout) declare ``batch_independent = False``, and such models are never sharded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from functools import cache
from typing import Any

from .. import nn

# A shard smaller than this many input values costs more in per-op Python overhead than a
# second core wins back: MNIST-1D's CNN (100 sequences of 40) trains faster unsharded,
# LeNet-5 (128 images of 28x28) 1.3x faster in two shards (benchmarks/bench_train.py).
MIN_SHARD_VALUES = 2**15


def available_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS reports one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def coupled_layers(model: nn.Module) -> list[str]:
    """Names of the layer types in ``model`` whose training output couples samples."""
    return sorted({type(m).__name__ for m in model.modules() if not m.batch_independent})


@cache
def _blas_controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def can_limit_blas() -> bool:
    """Whether BLAS's thread count can be set at run time (threadpoolctl is installed)."""
    return _blas_controller() is not None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Inside this block every loaded BLAS runs one thread per call."""
    controller = _blas_controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=1, user_api="blas"):
        yield


def resolve_threads(requested: int, model: nn.Module, batch_size: int,
                    sample_values: int) -> int:
    """How many shards (and threads) a training step uses; ``requested`` 0 means auto.

    Auto: one shard per available core, as long as each shard keeps at least
    :data:`MIN_SHARD_VALUES` input values; one when the model couples samples or BLAS's
    threads cannot be limited. An explicit count is used as given (capped at the batch
    size), and refused for a model that couples samples.
    """
    coupled = coupled_layers(model)
    if requested == 0:
        if coupled or not can_limit_blas():
            return 1
        by_work = batch_size * sample_values // MIN_SHARD_VALUES
        return max(1, min(available_cores(), by_work, batch_size))
    if requested > 1 and coupled:
        raise ValueError(f"train: --threads {requested} splits each batch into shards, but "
                         f"this model's {', '.join(coupled)} couples the samples of a "
                         f"batch; use --threads 1")
    return min(requested, batch_size)


def shard_bounds(size: int, shards: int) -> list[tuple[int, int]]:
    """``shards`` contiguous ``[start, stop)`` ranges covering ``range(size)``, sizes within
    one of each other (the first ones larger), none empty."""
    shards = max(1, min(shards, size))
    base, extra = divmod(size, shards)
    bounds, start = [], 0
    for index in range(shards):
        stop = start + base + (index < extra)
        bounds.append((start, stop))
        start = stop
    return bounds
