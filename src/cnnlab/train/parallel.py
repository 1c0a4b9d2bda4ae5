"""Data parallelism over one machine's cores: a batch's gradient as the sum of its shards'.

NumPy runs an op on one core except inside BLAS, and most of a small CNN's training step
is not BLAS (column copies, pooling, activations, layout changes). Splitting the batch into
shards and differentiating them at the same time keeps every core busy on all of it, as
PyTorch's DistributedDataParallel does with processes. On Linux the shards after the first
run in forked worker processes (:class:`ProcessShards`); elsewhere in threads
(:class:`ThreadShards`), which share one interpreter lock: a LeNet-5 step took 8.2 ms in
two threads and 6.4 ms in two processes (one shard alone: 9.1 ms). Meanwhile BLAS runs
one thread per call, so the shards' GEMMs do not fight each other's BLAS threads for the
same cores.

For a loss that is a mean over the batch, ``grad = sum_s (n_s / n) grad(loss_s)``: the
batch gradient up to float rounding. Shards are summed in a fixed order, so the same
number of shards gives the same bits on every run, whatever order the shards finish in,
in processes or in threads. Layers that couple the samples of a batch (BatchNorm) or draw
from one generator (Dropout) declare ``batch_independent = False``, and such models are
never sharded."""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from functools import cache
from typing import Any

import numpy as np

from .. import nn
from ..autograd import Tensor
from ..ops._args import prod

# A shard smaller than this many input values costs more in per-op Python overhead than a
# second core wins back: MNIST-1D's CNN (100 sequences of 40) trains faster unsharded,
# LeNet-5 (128 images of 28x28) 1.4x faster in two shards (benchmarks/bench_train.py).
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
def can_limit_blas() -> bool:
    """Whether BLAS's thread count can be set at run time (threadpoolctl is installed)."""
    try:
        import threadpoolctl  # noqa: F401
    except ImportError:
        return False
    return True


def _blas_controller() -> Any:
    """The thread pools of the libraries loaded now (about 2 ms to find: one per
    outermost block, so that a BLAS loaded after an earlier block is limited too)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


class _BlasLimit:
    """The process's one-thread BLAS limit and how many blocks are inside it. The outermost
    block finds the loaded BLAS libraries and sets and restores their limit (about 2 ms);
    blocks nested inside it (a shard runner inside ``Trainer.run``) only count."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.limiter: Any = None


_BLAS_LIMIT = _BlasLimit()
# A forked child inherits its parent's blocks along with the BLAS libraries' settings (fork
# copies both): a shard worker forked inside Trainer.run's block is already single-threaded
# and must not set the limit again. Setting it makes OpenBLAS start its thread pool afresh
# (it shuts the pool down before a fork), and the new threads spin for about 0.1 s on the
# cores the shards need: LeNet-5's first steps took 48, 37, 32 and 22 ms instead of 8.
# Only the lock is new (another thread may have held it at the fork).
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: setattr(_BLAS_LIMIT, "lock", threading.Lock()))


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Inside this block every loaded BLAS runs one thread per call (re-entrant, and
    shared by the threads of the process, as the limit itself is)."""
    if not can_limit_blas():
        yield
        return
    state = _BLAS_LIMIT
    with state.lock:
        if state.depth == 0:
            _release_blas_control()
            state.limiter = _blas_controller().limit(limits=1, user_api="blas")
            _release_blas_control()
        state.depth += 1
    try:
        yield
    finally:
        with state.lock:
            state.depth -= 1
            if state.depth == 0:
                _release_blas_control()
                state.limiter.restore_original_limits()
                _release_blas_control()
                state.limiter = None


def _release_blas_control() -> None:
    """Let any thread set OpenBLAS's thread count next. threadpoolctl (3.7+) lets only the
    thread that set it last change it again, until released, and ignores the others; the
    limit here is the process's, entered and left by whichever thread comes first and
    last, so it never keeps that ownership."""
    import threadpoolctl

    clear = getattr(getattr(threadpoolctl, "OpenBLASController", None),
                    "clear_controlling_thread", None)
    if clear is not None:
        clear(force=True)


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


# A process waiting for its shard partner polls for this long before it sleeps in the
# kernel. Waking a sleeping process costs 50-170 us in a VM (a pipe round trip after 1 or
# 7 ms idle: 53 and 172 us asleep, 25 and 52 us polling); a LeNet-5 step has two such
# waits, the worker's for its next shard and the trainer's for the worker's reply. Only
# when every shard has a core of its own: else the poll takes time from a shard.
SPIN_SECONDS = 0.002

# -- shard runners ---------------------------------------------------------------------------

ShardResult = tuple[float, list[np.ndarray | None]]

# compute(x, y, weight, params) -> (weight * loss, weight * d loss / d params): one shard.
ShardCompute = Callable[[np.ndarray, np.ndarray, float, list[Tensor]], ShardResult]
ShardJob = tuple[np.ndarray, np.ndarray, float]


def sum_shards(results: list[ShardResult]) -> ShardResult:
    """The batch's (loss, gradients) from its shards' weighted ones, each gradient summed
    left to right over the shards (a fixed order: the same bits on every run); a gradient
    no shard reached stays None."""
    loss = sum(value for value, _ in results)
    grads = []
    for shards in zip(*(shard for _, shard in results)):
        present = [g for g in shards if g is not None]
        total = present[0] if present else None
        for g in present[1:]:
            total = total + g
        grads.append(total)
    return loss, grads


def can_fork_workers() -> bool:
    """Whether shards may run in forked worker processes: Linux only (macOS's system
    libraries, Accelerate among them, are not fork-safe; Windows has no fork)."""
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


class ThreadShards:
    """Shards 1.. in a thread pool, shard 0 in the caller's thread; BLAS one thread each."""

    def __init__(self, shards: int) -> None:
        self._shards = shards
        self._pool = ThreadPoolExecutor(shards - 1, "cnnlab-shard")

    def fits(self, compute: ShardCompute, jobs: list[ShardJob], params: list[Tensor]
             ) -> bool:
        return len(jobs) <= self._shards

    def run(self, compute: ShardCompute, jobs: list[ShardJob], params: list[Tensor]
            ) -> list[ShardResult]:
        with single_threaded_blas():
            futures = [self._pool.submit(compute, *job, params) for job in jobs[1:]]
            try:
                first = compute(*jobs[0], params)
            finally:
                wait(futures)  # never leave a shard running past this step
        return [first] + [future.result() for future in futures]

    def close(self) -> None:
        self._pool.shutdown()


class ProcessShards:
    """Shards 1.. in forked worker processes, shard 0 in the caller; no GIL between them.

    Threads share one interpreter lock, and a LeNet-5 shard holds it for about a sixth of
    its time (op dispatch, autograd bookkeeping): two threads queue for it at every op.
    Processes do not. The workers are forked from the trainer, so each holds its own copy
    of the model; every step the caller writes the current weights, and each worker's
    rows of the batch, into memory shared with the workers (an anonymous ``mmap``, freed
    with the last process that maps it), and each worker writes its shard's gradients
    back there. A worker computes with the same code and the same one-thread BLAS as a
    thread would, so the weights come out bitwise the same as with :class:`ThreadShards`.
    """

    def __init__(self, compute: ShardCompute, params: list[Tensor], jobs: list[ShardJob],
                 batch_size: int) -> None:
        """Workers for ``jobs[1:]``, with row buffers for any batch of up to
        ``batch_size`` rows split into ``len(jobs)`` shards (the first shard is the
        largest one :func:`shard_bounds` makes)."""
        x, y, _ = jobs[0]
        workers = len(jobs) - 1
        start, stop = shard_bounds(max(batch_size, sum(len(job[0]) for job in jobs)),
                                   len(jobs))[0]
        rows = stop - start
        self._params = params
        specs = [(p.data.shape, p.data.dtype) for p in params]
        self._weights = _shared_arrays(specs)
        self._grads = [_shared_arrays(specs) for _ in range(workers)]
        self._x, self._y = [], []
        for _ in range(workers):
            x_rows, y_rows = _shared_arrays([((rows, *x.shape[1:]), x.dtype),
                                             ((rows, *y.shape[1:]), y.dtype)])
            self._x.append(x_rows)
            self._y.append(y_rows)
        self._compute = compute
        self._spin = SPIN_SECONDS if len(jobs) <= available_cores() else 0.0
        self._index = {id(p): i for i, p in enumerate(params)}
        self._connections: list[Any] = []
        self._processes: list[Any] = []
        # Registered first, so that workers started before a failure here are stopped too.
        self._finalizer = weakref.finalize(self, _stop_workers, self._connections,
                                           self._processes)
        context = mp.get_context("fork")
        try:
            for index in range(workers):
                ours, theirs = context.Pipe()
                self._connections.append(ours)
                process = context.Process(
                    target=_serve, name=f"cnnlab-shard-{index + 1}", daemon=True,
                    args=(theirs, list(self._connections), compute, params, self._weights,
                          self._grads[index], self._x[index], self._y[index], self._spin))
                with warnings.catch_warnings():
                    # Python >= 3.12 warns on fork() while other threads exist (OpenBLAS's
                    # idle workers, tqdm's monitor). OpenBLAS shuts its pool down before a
                    # fork and the child keeps the one-thread limit (see _BLAS_LIMIT); the
                    # child runs nothing but NumPy on its own copies and never touches tqdm.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    process.start()
                theirs.close()
                self._processes.append(process)
        except BaseException:
            self._finalizer()
            raise

    def fits(self, compute: ShardCompute, jobs: list[ShardJob], params: list[Tensor]
             ) -> bool:
        """Whether these workers can run ``jobs[1:]``: the same computation and parameters
        they were forked with, and rows that fit their buffers (else start new workers)."""
        return (compute == self._compute and len(jobs) - 1 <= len(self._x)
                and all(id(p) in self._index for p in params)
                and all(x.shape[1:] == slot.shape[1:] and x.dtype == slot.dtype
                        and len(x) <= len(slot) and y.shape[1:] == rows.shape[1:]
                        and y.dtype == rows.dtype
                        for (x, y, _), slot, rows in zip(jobs[1:], self._x, self._y)))

    def run(self, compute: ShardCompute, jobs: list[ShardJob], params: list[Tensor]
            ) -> list[ShardResult]:
        """Shard 0 here with ``compute``, the others in the workers (which run the
        ``compute`` they were forked with: :meth:`fits` checks it is the same)."""
        trainable = [self._index[id(p)] for p in params]
        for param, shared in zip(self._params, self._weights):
            np.copyto(shared, param.data)
        sent = []
        try:
            for worker, (x, y, weight) in enumerate(jobs[1:]):
                self._x[worker][:len(x)] = x
                self._y[worker][:len(y)] = y
                try:
                    self._connections[worker].send((len(x), weight, trainable))
                except OSError:  # it died since the last step
                    raise self._died(worker) from None
                sent.append(worker)
            with single_threaded_blas():
                first = compute(*jobs[0], params)
        finally:
            replies = self._receive_all(sent)  # never leave a shard running past this step
        results = [first]
        for worker, (loss, missing) in zip(sent, replies):
            shard = [None if i in missing else self._grads[worker][i].copy()
                     for i in trainable]
            results.append((loss, shard))
        return results

    def _receive_all(self, workers: list[int]) -> list[tuple[float, set[int]]]:
        """Every worker's reply; the first failure is raised once all have answered."""
        replies, failure = [], None
        for worker in workers:
            try:
                replies.append(self._receive(worker))
            except Exception as error:
                failure = failure or error
        if failure is not None:
            raise failure
        return replies

    def _receive(self, worker: int) -> tuple[float, set[int]]:
        try:
            connection = self._connections[worker]
            _await(connection, self._spin)
            status, *payload = connection.recv()
        except (EOFError, OSError):
            raise self._died(worker) from None
        if status == "error":  # the worker's own exception, its traceback as the cause
            error, trace = payload
            raise error from _ShardWorkerError(f"in shard worker {worker + 1}:\n{trace}")
        return payload[0], set(payload[1])

    def _died(self, worker: int) -> RuntimeError:
        self._processes[worker].join(timeout=5)  # reap it, for its exit code
        code = self._processes[worker].exitcode
        return RuntimeError(f"train: shard worker {worker + 1} died (exit code {code}); "
                            f"use --threads 1 to train in one process")

    def close(self) -> None:
        """Stop the workers (also done when this object is garbage-collected)."""
        self._finalizer()


def _stop_workers(connections: list[Any], processes: list[Any]) -> None:
    for connection in connections:
        with contextlib.suppress(OSError):
            connection.send(None)
        connection.close()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.terminate()
            process.join()


def _serve(connection: Any, trainer_ends: list[Any], compute: ShardCompute,
           params: list[Tensor], weights: list[np.ndarray], grads: list[np.ndarray],
           x: np.ndarray, y: np.ndarray, spin: float) -> None:
    """A worker's loop: one shard per message until ``None`` or the trainer is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    for end in trainer_ends:  # inherited copies: with them open, the trainer's exit (even
        end.close()           # a kill) would never reach ``recv`` as end-of-file
    for param, shared in zip(params, weights):
        param.data = shared  # the trainer writes the current weights here every step
    with single_threaded_blas():
        while True:
            try:
                _await(connection, spin)
                message = connection.recv()
            except (EOFError, OSError):
                return
            if message is None:
                return
            rows, weight, trainable = message
            try:
                for index, param in enumerate(params):
                    param.requires_grad = index in trainable
                loss, shard = compute(x[:rows], y[:rows], weight,
                                      [params[i] for i in trainable])
                missing = []
                for index, value in zip(trainable, shard):
                    if value is None:
                        missing.append(index)
                    else:
                        np.copyto(grads[index], value)
                reply: tuple[Any, ...] = ("ok", loss, missing)
            except Exception as error:  # the trainer raises it
                reply = ("error", _picklable(error), traceback.format_exc())
            connection.send(reply)


def _await(connection: Any, seconds: float) -> None:
    """Poll ``connection`` for up to ``seconds`` before the caller blocks on it (see
    :data:`SPIN_SECONDS`)."""
    deadline = time.perf_counter() + seconds
    while not connection.poll(0) and time.perf_counter() < deadline:
        pass


class _ShardWorkerError(Exception):
    """Where a shard worker's exception came from (its formatted traceback)."""


def _picklable(error: Exception) -> Exception:
    """``error`` itself when it survives pickling (to cross the pipe), else a RuntimeError
    with its text."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")
    return error


def _shared_arrays(specs: list[tuple[tuple[int, ...], np.dtype]]) -> list[np.ndarray]:
    """Zeroed arrays of the given shapes and dtypes in one anonymous shared mapping, which
    forked children share (each array 64-byte aligned)."""
    offsets, end = [], 0
    for shape, dtype in specs:
        end = -(-end // 64) * 64
        offsets.append(end)
        end += prod(shape) * np.dtype(dtype).itemsize
    buffer = mmap.mmap(-1, max(end, 1))
    return [np.frombuffer(buffer, dtype=dtype, count=prod(shape), offset=offset).reshape(shape)
            for (shape, dtype), offset in zip(specs, offsets)]
