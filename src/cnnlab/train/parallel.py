"""Data parallelism over one machine's cores: a batch's gradient as the sum of its shards'.

What it buys. NumPy runs an op on one core except inside BLAS, and most of a small CNN's
training step is not BLAS (column copies, pooling, activations, layout changes). Splitting
the batch into shards and differentiating them at the same time keeps every core busy on
all of it, as PyTorch's DistributedDataParallel does with processes: a LeNet-5 step on
mnist5k (batch 128, two shards of 64) took 5.3 ms with two processes and 8.9 ms with one
(``--threads 1``), on the 2-core development VM (train time per step over 160 steps,
minimum of 5 alternating runs; ``python benchmarks/bench_train.py`` times whole runs). On
Linux the shards run in forked worker processes (:class:`ProcessShards`); elsewhere in
threads (:class:`ThreadShards`), which share one interpreter lock (a LeNet-5 step: 8.2 ms
in two threads, 6.4 ms in two processes).

How to turn it off: ``cnnlab train --threads 1`` (``TrainConfig(threads=1)``) runs the same
shards one after another in the trainer's process, with the same bits. The price of a plan
that ignores the machine is paid on one core: LeNet-5's two shards of 64 images, one after
the other, take 8.3 ms against 7.5 ms for the 128 images as one (each shard repeats the
step's per-op Python work).

The shard plan is a function of the batch and the model, never of the machine:
:func:`shard_count` splits a batch of ``n`` samples of ``v`` input values into the largest
power of two of shards no larger than ``n * v // MIN_SHARD_VALUES``, ``n`` and
:data:`MAX_SHARDS` (one shard when the model couples the samples of a batch: BatchNorm's
batch statistics, Dropout's one generator, ``batch_independent = False``). The workers
(``--threads``, by default one per available core) only decide who executes the shards:
with ``w`` workers each runs a contiguous block of about ``shards / w`` of them, and a power
of two of shards splits evenly over 1, 2, 4 or 8 workers.

Same bits on any number of cores (of one CPU architecture and BLAS build). For a loss that
is a mean over the batch, ``grad = sum_s (n_s / n) grad(loss_s)``; each shard's term is
computed by the same code with one BLAS thread wherever it runs, and the trainer adds the
terms in shard order (:func:`sum_shards`), so the weights do not depend on the worker
count, on processes versus threads, or on the order in which shards finish. BLAS is held at
one thread for every training step, sharded or not (:func:`single_threaded_blas`), because
OpenBLAS's thread count changes rounding: it splits long reductions over its threads. With
1 versus 2 threads (OpenBLAS 0.3.31, threadpoolctl), 404 of 1,746 float32/float64 products
``a @ b``, ``a.T @ b``, ``a @ b.T`` (M in 25, 128, 1000; K from 1 to 100,000; N from 1 to
6,272) differed in their last bits: 351 of the 516 with K >= 784, which is where the
convolution's weight gradient lies (K = batch x output positions), and 53 of the 1,230 with
smaller K. MNIST-1D's CNN, never sharded, reached other weights within 300 steps. One
thread is also faster there: 1.5 ms per MNIST-1D step against 1.7 ms with two BLAS threads
(minimum of 5 alternating runs of 600 steps), whose workers spin on the core the step
needs. Holding BLAS needs threadpoolctl (in the ``train`` extra); without it BLAS runs as
the environment sets it (``OPENBLAS_NUM_THREADS=1`` does the same), the shards run one
after another by default, and the last bits may follow the machine's BLAS threads.

What else a shard may bring back: a :class:`ShardProbe` (the activation statistics of
``--stats``, :mod:`cnnlab.train.stats`) records something while each shard runs, wherever
it runs; each shard's record comes back as the third element of its result, in shard
order like the gradients, for the trainer to combine. """

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
from contextlib import AbstractContextManager
from functools import cache
from typing import Any, Protocol

import numpy as np

from .. import nn
from ..autograd import Tensor
from ..ops._args import prod

# A shard smaller than this many input values costs more in per-op Python overhead than a
# second core wins back: MNIST-1D's CNN (100 sequences of 40) trains faster unsharded,
# LeNet-5 (128 images of 28x28) 1.4x faster in two shards (benchmarks/bench_train.py).
MIN_SHARD_VALUES = 2**15
# At most this many shards: up to 8 cores work on a batch. Every shard repeats the step's
# per-op Python work, about 0.7 ms for LeNet-5 (one shard of 8 images takes 1.2 ms, of 64
# 4.1 ms, of 256 16.2 ms, on one core), which a machine with fewer cores than shards pays
# for nothing.
MAX_SHARDS = 8


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


def shard_count(samples: int, sample_values: int, batch_independent: bool) -> int:
    """How many shards a batch of ``samples`` samples of ``sample_values`` input values each
    is split into: the largest power of two no larger than ``samples * sample_values //``
    :data:`MIN_SHARD_VALUES`, ``samples`` and :data:`MAX_SHARDS`; 1 when the model couples
    the samples of a batch (``batch_independent`` False). The machine plays no part.

    >>> shard_count(128, 28 * 28, True), shard_count(100, 40, True), shard_count(128, 784, False)
    (2, 1, 1)
    """
    if not batch_independent:
        return 1
    limit = min(samples * sample_values // MIN_SHARD_VALUES, samples, MAX_SHARDS)
    return 1 << (limit.bit_length() - 1) if limit >= 1 else 1


# A few workers per core can still overlap one shard's Python with another's BLAS; more
# only queue for the cores.
MAX_WORKERS_PER_CORE = 2


def resolve_workers(requested: int) -> int:
    """How many shards may run at once (the trainer's process and its workers); 0 means
    one per available core, or one when BLAS's thread count cannot be held at one (the
    shards' BLAS threads would fight over the cores). The results do not depend on it."""
    if requested == 0:
        return available_cores() if can_limit_blas() else 1
    cap = MAX_WORKERS_PER_CORE * available_cores()
    if requested > cap:
        # More processes than cores only queue for them (issue 13: --threads 200 forked 199).
        warnings.warn(f"train: --threads {requested} is more than {MAX_WORKERS_PER_CORE} per "
                      f"available core; using {cap} (the weights do not depend on it)",
                      UserWarning, stacklevel=2)
        return cap
    return requested


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
# when every worker has a core of its own: else the poll takes time from a shard.
SPIN_SECONDS = 0.002

# -- shard runners ---------------------------------------------------------------------------

# (weight * loss, weight * d loss / d params), and with a probe a third element: its record.
ShardResult = tuple[Any, ...]

# compute(x, y, weight, params) -> (weight * loss, weight * d loss / d params): one shard.
ShardCompute = Callable[[np.ndarray, np.ndarray, float, list[Tensor]],
                        tuple[float, list[np.ndarray | None]]]
ShardJob = tuple[np.ndarray, np.ndarray, float]


class ShardProbe(Protocol):
    """Records something while a shard runs (:class:`cnnlab.train.stats.ActivationProbe`).

    ``attached()`` is entered by every process and thread that runs shards of a step, around
    its shards (re-entrant; it must let threads of one process share it); ``start()`` and
    ``stop()`` surround one shard's ``compute`` on the thread that runs it, ``stop()`` also
    when it raises, and return the shard's record (it crosses a pipe from a worker process:
    something picklable). A worker process uses the probe it was forked with.
    """

    def attached(self) -> AbstractContextManager[None]: ...

    def start(self) -> None: ...

    def stop(self) -> Any: ...


def sum_shards(results: list[ShardResult]) -> tuple[float, list[np.ndarray | None]]:
    """The batch's (loss, gradients) from its shards' weighted ones, each gradient summed
    left to right over the shards (a fixed order: the same bits on every run); a gradient
    no shard reached stays None. A probe's records (a third element) are not read."""
    loss = sum(result[0] for result in results)
    grads = []
    for shards in zip(*(result[1] for result in results)):
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


def run_in_order(compute: ShardCompute, jobs: list[ShardJob], params: list[Tensor],
                 probe: ShardProbe | None = None) -> list[ShardResult]:
    """``jobs`` one after another in the caller: one worker's share of a step (all of it
    with ``--threads 1``); with a ``probe``, each result ends with the shard's record."""
    if probe is None:
        return [compute(*job, params) for job in jobs]
    with probe.attached():
        return [_probed(compute, job, params, probe) for job in jobs]


def _probed(compute: ShardCompute, job: ShardJob, params: list[Tensor], probe: ShardProbe
            ) -> ShardResult:
    """One shard with ``probe`` recording: (loss, gradients, record)."""
    probe.start()
    try:
        loss, grads = compute(*job, params)
    finally:
        record = probe.stop()
    return loss, grads, record


class ThreadShards:
    """A step's shards over ``workers`` threads: the caller's thread runs the first block of
    them and a thread pool the others (:func:`shard_bounds` over the shards); BLAS one
    thread each."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool = ThreadPoolExecutor(workers - 1, "cnnlab-shard")

    def fits(self, compute: ShardCompute, jobs: list[ShardJob], params: list[Tensor],
             probe: ShardProbe | None = None) -> bool:
        return True  # a thread takes any block of shards

    def run(self, compute: ShardCompute, jobs: list[ShardJob], params: list[Tensor],
            probe: ShardProbe | None = None) -> list[ShardResult]:
        blocks = [jobs[lo:hi] for lo, hi in shard_bounds(len(jobs), self._workers)]
        with single_threaded_blas():
            futures = [self._pool.submit(run_in_order, compute, block, params, probe)
                       for block in blocks[1:]]
            try:
                first = run_in_order(compute, blocks[0], params, probe)
            finally:
                wait(futures)  # never leave a shard running past this step
        return first + [result for future in futures for result in future.result()]

    def close(self) -> None:
        self._pool.shutdown()


class ProcessShards:
    """A step's shards over ``workers`` processes: the caller runs the first block of them,
    forked worker processes the others (:func:`shard_bounds` over the shards); no GIL
    between them.

    Threads share one interpreter lock, and a LeNet-5 shard holds it for about a sixth of
    its time (op dispatch, autograd bookkeeping): two threads queue for it at every op.
    Processes do not. The workers are forked from the trainer, so each holds its own copy
    of the model; every step the caller writes the current weights, and each worker's
    rows of the batch, into memory shared with the workers (an anonymous ``mmap``, freed
    with the last process that maps it), and each worker writes each of its shards'
    gradients back there. A worker computes with the same code and the same one-thread
    BLAS as a thread would, so the weights come out bitwise the same as with
    :class:`ThreadShards` or in one process. A ``probe`` (forked with the workers, each
    using its own copy on its own copy of the model) records in a step run with it, and
    its records come back through the pipe.
    """

    def __init__(self, compute: ShardCompute, params: list[Tensor],
                 bounds: list[tuple[int, int]], x: np.ndarray, y: np.ndarray, workers: int,
                 probe: ShardProbe | None = None) -> None:
        """``workers - 1`` worker processes, each with room for the largest block of the
        shards ``bounds`` (those of the largest batch expected) that a worker runs, of
        samples shaped and typed as those of ``x`` and ``y``."""
        blocks = [bounds[lo:hi] for lo, hi in shard_bounds(len(bounds), workers)]
        most_shards = max(len(block) for block in blocks[1:])
        most_rows = max(block[-1][1] - block[0][0] for block in blocks[1:])
        self._params = params
        specs = [(p.data.shape, p.data.dtype) for p in params]
        self._weights = _shared_arrays(specs)
        self._workers = workers
        # _grads[worker][slot][param]: the gradients of the worker's slot-th shard.
        self._grads = [[_shared_arrays(specs) for _ in range(most_shards)]
                       for _ in range(workers - 1)]
        self._x, self._y = [], []
        for _ in range(workers - 1):
            x_rows, y_rows = _shared_arrays([((most_rows, *x.shape[1:]), x.dtype),
                                             ((most_rows, *y.shape[1:]), y.dtype)])
            self._x.append(x_rows)
            self._y.append(y_rows)
        self._compute = compute
        self._probe = probe
        self._spin = SPIN_SECONDS if workers <= available_cores() else 0.0
        self._index = {id(p): i for i, p in enumerate(params)}
        self._connections: list[Any] = []
        self._processes: list[Any] = []
        # Registered first, so that workers started before a failure here are stopped too.
        self._finalizer = weakref.finalize(self, _stop_workers, self._connections,
                                           self._processes)
        context = mp.get_context("fork")
        try:
            for index in range(workers - 1):
                ours, theirs = context.Pipe()
                self._connections.append(ours)
                process = context.Process(
                    target=_serve, name=f"cnnlab-shard-{index + 1}", daemon=True,
                    args=(theirs, list(self._connections), compute, params, self._weights,
                          self._grads[index], self._x[index], self._y[index], self._spin,
                          probe))
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

    def fits(self, compute: ShardCompute, jobs: list[ShardJob], params: list[Tensor],
             probe: ShardProbe | None = None) -> bool:
        """Whether these workers can run their blocks of ``jobs``: the same computation,
        parameters and probe (if any) they were forked with, and shards and rows that fit
        their buffers (else start new workers)."""
        blocks = [jobs[lo:hi] for lo, hi in shard_bounds(len(jobs), self._workers)]
        x_slot, y_slot = self._x[0], self._y[0]
        return (compute == self._compute and all(id(p) in self._index for p in params)
                and (probe is None or probe is self._probe)
                and all(len(block) <= len(self._grads[0])
                        and sum(len(x) for x, _, _ in block) <= len(x_slot)
                        for block in blocks[1:])
                and all(x.shape[1:] == x_slot.shape[1:] and x.dtype == x_slot.dtype
                        and y.shape[1:] == y_slot.shape[1:] and y.dtype == y_slot.dtype
                        for x, y, _ in jobs))

    def run(self, compute: ShardCompute, jobs: list[ShardJob], params: list[Tensor],
            probe: ShardProbe | None = None) -> list[ShardResult]:
        """The first block of shards here with ``compute``, the others in the workers (which
        run the ``compute`` and probe they were forked with: :meth:`fits` checks they are
        the same); the results in shard order."""
        blocks = [jobs[lo:hi] for lo, hi in shard_bounds(len(jobs), self._workers)]
        trainable = [self._index[id(p)] for p in params]
        for param, shared in zip(self._params, self._weights):
            np.copyto(shared, param.data)
        sent = []
        try:
            for worker, block in enumerate(blocks[1:]):
                start, shards = 0, []
                for x, y, weight in block:  # the block's rows, one shard after another
                    self._x[worker][start:start + len(x)] = x
                    self._y[worker][start:start + len(y)] = y
                    shards.append((len(x), weight))
                    start += len(x)
                try:
                    self._connections[worker].send((shards, trainable, probe is not None))
                except OSError:  # it died since the last step
                    raise self._died(worker) from None
                sent.append(worker)
            with single_threaded_blas():
                results = run_in_order(compute, blocks[0], params, probe)
        finally:
            replies = self._receive_all(sent)  # never leave a shard running past this step
        for worker, reply in zip(sent, replies):
            for slot, (loss, missing, record) in enumerate(reply):
                grads = self._grads[worker][slot]
                result = (loss, [None if i in missing else grads[i].copy() for i in trainable])
                results.append(result if probe is None else (*result, record))
        return results

    def _receive_all(self, workers: list[int]) -> list[list[tuple[float, set[int], Any]]]:
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

    def _receive(self, worker: int) -> list[tuple[float, set[int], Any]]:
        """A worker's (weighted loss, indices of missing gradients, probe record or None) for
        each of its shards."""
        try:
            connection = self._connections[worker]
            _await(connection, self._spin)
            status, *payload = connection.recv()
        except (EOFError, OSError):
            raise self._died(worker) from None
        if status == "error":  # the worker's own exception, its traceback as the cause
            error, trace = payload
            raise error from _ShardWorkerError(f"in shard worker {worker + 1}:\n{trace}")
        return [(loss, set(missing), record) for loss, missing, record in payload[0]]

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
           params: list[Tensor], weights: list[np.ndarray], grads: list[list[np.ndarray]],
           x: np.ndarray, y: np.ndarray, spin: float, probe: ShardProbe | None) -> None:
    """A worker's loop: one block of shards per message until ``None`` or the trainer is
    gone. ``grads[slot]``: where the block's slot-th shard's gradients go; with the
    message's probe flag set, ``probe`` records each shard and its record is sent back."""
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
            shards, trainable, probed = message
            active = probe if probed else None
            try:
                for index, param in enumerate(params):
                    param.requires_grad = index in trainable
                chosen = [params[i] for i in trainable]
                done, start = [], 0
                with active.attached() if active is not None else contextlib.nullcontext():
                    for slot, (rows, weight) in enumerate(shards):
                        stop = start + rows
                        job = (x[start:stop], y[start:stop], weight)
                        loss, shard, *record = (compute(*job, chosen) if active is None
                                                else _probed(compute, job, chosen, active))
                        missing = []
                        for index, value in zip(trainable, shard):
                            if value is None:
                                missing.append(index)
                            else:
                                np.copyto(grads[slot][index], value)
                        done.append((loss, missing, record[0] if record else None))
                        start = stop
                reply: tuple[Any, ...] = ("ok", done)
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
