"""Data-parallel shards: a sharded step's loss and gradient are the whole batch's; the shard
plan follows the batch and the model, never the machine, so the weights are the same bits
for any worker count (``--threads``), in worker processes or threads, and on a 1-core and
a 2-core run of the CLI; runs stay resumable; a failing or dying shard fails the step
cleanly; models that couple the samples of a batch are never sharded."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from functools import cache
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from cnnlab import nn
from cnnlab.data import ArrayDataset, available_datasets, load_dataset
from cnnlab.train import Trainer, default_config, load_checkpoint
from cnnlab.train import loop as L
from cnnlab.train import parallel as P
from cnnlab.train.loop import CHECKPOINT_NAME

if "mnist1d" not in {name for name, _, ready, _ in available_datasets() if ready}:
    pytest.skip("mnist1d is not available offline here", allow_module_level=True)


@cache
def _splits() -> tuple[ArrayDataset, ArrayDataset]:
    train_set, test_set = load_dataset("mnist1d")
    return (ArrayDataset(train_set.x[:500], train_set.y[:500]),
            ArrayDataset(test_set.x[:200], test_set.y[:200]))


def _trainer(threads: int, **overrides) -> Trainer:
    options = {"steps": 12, "batch_size": 100, "lr": 1e-2, "progress": False,
               "eval_every": 0, "seed": 3, "threads": threads, **overrides}
    return Trainer(default_config("mnist1d", "cnn", **options), datasets=_splits())


def _plan(monkeypatch, shards: int) -> None:
    """Split every batch of at least ``shards`` samples into ``shards`` (a power of two):
    MNIST-1D's batches are too small to be sharded by the default plan."""
    monkeypatch.setattr(P, "MIN_SHARD_VALUES", 1)
    monkeypatch.setattr(P, "MAX_SHARDS", shards)


@pytest.fixture
def two_shards(monkeypatch):
    _plan(monkeypatch, 2)


RUNNERS = ["process", "thread"] if P.can_fork_workers() else ["thread"]


@pytest.fixture(params=RUNNERS)
def runner(request, monkeypatch):
    """Shards in worker processes (where the OS can fork) and in threads."""
    if request.param == "thread":
        monkeypatch.setattr(L, "can_fork_workers", lambda: False)
    return request.param


def _log(path: Path, line: str) -> None:
    """Append a line; works from a worker process too (one write, O_APPEND)."""
    with open(path, "a") as file:
        file.write(line + "\n")


def _same_bits(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(a[key].tobytes() == b[key].tobytes() for key in a)


# -- the shard plan ---------------------------------------------------------------------------


def test_the_shard_plan_follows_the_batch_and_not_the_cores(monkeypatch):
    assert P.shard_count(128, 28 * 28, True) == 2     # LeNet-5's batches: 3 x 32k values
    assert P.shard_count(32, 28 * 28, True) == 1      # mnist5k's last, short batch
    assert P.shard_count(100, 40, True) == 1          # MNIST-1D's batches
    assert P.shard_count(512, 28 * 28, True) == 8     # 12 x 32k values: 8, a power of two
    assert P.shard_count(10**5, 28 * 28, True) == P.MAX_SHARDS
    assert P.shard_count(1, 10**6, True) == 1         # never more shards than samples
    assert P.shard_count(3, 10**6, True) == 2
    for cores in (1, 2, 3, 8):
        monkeypatch.setattr(P, "available_cores", lambda cores=cores: cores)
        trainer = _trainer(0, batch_size=2000)        # 80k values: two shards
        workers = cores if P.can_limit_blas() else 1
        assert (trainer.shards, trainer.workers, trainer.threads) == (2, workers,
                                                                      min(workers, 2))


@pytest.mark.parametrize("layer", [nn.BatchNorm2d(4), nn.Dropout(0.1)])
def test_models_that_couple_samples_are_not_sharded(layer):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), layer, nn.ReLU())
    assert P.coupled_layers(model) == [type(layer).__name__]
    assert P.shard_count(128, 28 * 28, False) == 1
    assert P.shard_count(10**5, 28 * 28, False) == 1


def test_workers_default_to_the_available_cores(monkeypatch):
    monkeypatch.setattr(P, "available_cores", lambda: 6)
    assert P.resolve_workers(0) == (6 if P.can_limit_blas() else 1)
    assert P.resolve_workers(3) == 3


def test_negative_threads_are_refused():
    with pytest.raises(ValueError, match=r"^train: threads must be >= 0 \(0: auto\), got -1"):
        default_config("mnist1d", "cnn", threads=-1)


@pytest.mark.parametrize(("size", "shards"), [(10, 3), (128, 2), (5, 8), (1, 1), (33, 7)])
def test_shard_bounds_cover_the_batch_evenly(size, shards):
    bounds = P.shard_bounds(size, shards)
    assert len(bounds) == min(size, shards)
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(a[1] == b[0] for a, b in pairwise(bounds))
    sizes = [stop - start for start, stop in bounds]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


# -- the same bits whoever runs the shards -----------------------------------------------------


@pytest.mark.parametrize(("shards", "workers", "batch"),
                         [(2, 2, 100), (4, 2, 100), (4, 3, 90), (8, 3, 33), (2, 1, 64)])
def test_sharded_loss_and_gradient_are_the_batch_ones(monkeypatch, shards, workers, batch):
    _plan(monkeypatch, shards)
    sharded = _trainer(workers, batch_size=batch)
    assert (sharded.shards, sharded.threads) == (shards, min(shards, workers))
    xb, yb = next(iter(sharded.loader))
    params = list(sharded.model.parameters())
    loss_1, grads_1 = sharded._shard_gradients(xb, yb, 1.0, params)  # the whole batch
    loss_n, grads_n = sharded._loss_and_gradients(xb, yb, params)
    assert loss_n == pytest.approx(loss_1, rel=1e-6)
    for g1, gn in zip(grads_1, grads_n, strict=True):
        scale = np.abs(g1).max()
        np.testing.assert_allclose(gn, g1, rtol=0, atol=1e-5 * scale)
    assert all(p.grad is None for p in sharded.model.parameters())
    sharded.close()


def test_the_weights_do_not_depend_on_the_worker_count(monkeypatch, runner):
    # Four shards: one worker runs all four, two run two each, three run 1 + 1 + 2.
    _plan(monkeypatch, 4)
    runs = [_trainer(workers, steps=10).run().model.state_dict() for workers in (1, 2, 3)]
    assert _same_bits(runs[0], runs[1]) and _same_bits(runs[0], runs[2])


def test_worker_processes_and_threads_give_the_same_bits(monkeypatch, two_shards):
    _needs_fork()
    before = set(multiprocessing.active_children())
    processes = _trainer(2, steps=15).run().model.state_dict()
    assert set(multiprocessing.active_children()) <= before  # the run stopped its workers
    monkeypatch.setattr(L, "can_fork_workers", lambda: False)
    threads = _trainer(2, steps=15).run().model.state_dict()
    assert _same_bits(processes, threads)


def test_training_steps_run_blas_on_one_thread_even_unsharded(monkeypatch):
    # OpenBLAS's thread count changes the rounding of long reductions (the convolution's
    # weight gradient), so even a one-shard step must not use the machine's BLAS threads.
    if not P.can_limit_blas():
        pytest.skip("threadpoolctl is not installed")
    trainer = _trainer(0)
    assert trainer.shards == 1
    seen, original = [], trainer._shard_gradients

    def shard(x, y, weight, params):
        seen.append(set(_blas_threads()))
        return original(x, y, weight, params)

    monkeypatch.setattr(trainer, "_shard_gradients", shard)
    xb, yb = next(iter(trainer.loader))
    trainer._train_step(xb, yb)  # outside run(), which holds the limit for the whole run
    trainer.run()
    assert seen and all(threads == {1} for threads in seen)


def _weights_digest(folder: Path) -> str:
    arrays, _ = load_checkpoint(folder / CHECKPOINT_NAME)
    model = {key: value for key, value in arrays.items() if key.startswith("model.")}
    return hashlib.sha256(b"".join(model[key].tobytes() for key in sorted(model))).hexdigest()


@pytest.mark.skipif(shutil.which("taskset") is None or P.available_cores() < 2,
                    reason="needs taskset and at least 2 cores")
def test_a_one_core_and_a_two_core_cli_run_give_the_same_weights(tmp_path):
    # Batches of 2,000 MNIST-1D sequences are two shards: one process runs both on one
    # core, two run one each on two cores, each with one BLAS thread.
    command = [sys.executable, "-m", "cnnlab", "train", "--data", "mnist1d", "--model", "cnn",
               "--seed", "0", "--steps", "8", "--batch-size", "2000", "--no-progress"]
    cores = sorted(os.sched_getaffinity(0))[:2]
    for name, prefix in (("one", ["taskset", "-c", str(cores[0])]),
                         ("two", ["taskset", "-c", ",".join(map(str, cores))])):
        done = subprocess.run([*prefix, *command, "--checkpoint", str(tmp_path / name)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    assert _weights_digest(tmp_path / "one") == _weights_digest(tmp_path / "two")


# -- failures ---------------------------------------------------------------------------------


def test_a_failing_shard_fails_the_step_only_after_every_shard_stopped(
        monkeypatch, tmp_path, runner):
    _plan(monkeypatch, 4)
    trainer = _trainer(3)  # the caller runs shards 0 and 1, the others one each
    xb, yb = next(iter(trainer.loader))
    log, original = tmp_path / "log", trainer._shard_gradients

    def shard(x, y, weight, params):
        if np.array_equal(x, xb[50:75]):  # the first other executor's shard fails at once
            _log(log, "failed")
            raise FloatingPointError("shard exploded")
        if np.array_equal(x, xb[75:100]):
            time.sleep(0.3)  # the second one's is still running then
            _log(log, "slow shard finished")
        return original(x, y, weight, params)

    monkeypatch.setattr(trainer, "_shard_gradients", shard)
    with pytest.raises(FloatingPointError, match="shard exploded"):
        trainer._loss_and_gradients(xb, yb, list(trainer.model.parameters()))
    _log(log, "step raised")
    assert log.read_text().splitlines() == ["failed", "slow shard finished", "step raised"]
    trainer.close()


def test_a_failing_shard_fails_the_step(monkeypatch, tmp_path, runner, two_shards):
    trainer = _trainer(2)
    xb, yb = next(iter(trainer.loader))
    log, original = tmp_path / "log", trainer._shard_gradients

    def flaky(x, y, weight, params):
        _log(log, str(len(x)))
        if np.array_equal(x, xb[50:]):
            raise FloatingPointError("shard exploded")
        return original(x, y, weight, params)

    monkeypatch.setattr(trainer, "_shard_gradients", flaky)
    before = [p.data.copy() for p in trainer.model.parameters()]
    with pytest.raises(FloatingPointError, match="shard exploded"):
        trainer._train_step(xb, yb)
    assert sorted(log.read_text().split()) == ["50", "50"]
    for p, kept in zip(trainer.model.parameters(), before, strict=True):
        np.testing.assert_array_equal(p.data, kept)  # no step was taken
    trainer.close()


def test_a_dying_worker_fails_the_step_with_a_clear_error(monkeypatch, two_shards):
    _needs_fork()
    trainer = _trainer(2)
    xb, yb = next(iter(trainer.loader))
    parent, original = os.getpid(), trainer._shard_gradients

    def shard(x, y, weight, params):
        if os.getpid() != parent:
            os._exit(3)
        return original(x, y, weight, params)

    monkeypatch.setattr(trainer, "_shard_gradients", shard)
    with pytest.raises(RuntimeError, match=r"^train: shard worker 1 died \(exit code 3\); "
                                           r"use --threads 1 to train in one process$"):
        trainer._train_step(xb, yb)
    workers = trainer._runner._processes
    trainer.close()
    assert not any(worker.is_alive() for worker in workers)


def test_a_batch_bigger_than_the_configured_one_is_sharded_too(monkeypatch, runner):
    _plan(monkeypatch, 4)
    sharded = _trainer(2, batch_size=50)
    x, y = _splits()[0].x, _splits()[0].y
    params = list(sharded.model.parameters())
    for rows in (50, 130, 40):  # the worker's buffers hold two shards of 13 rows at first
        loss_1, grads_1 = sharded._shard_gradients(x[:rows], y[:rows], 1.0, params)
        loss_n, grads_n = sharded._loss_and_gradients(x[:rows], y[:rows], params)
        assert loss_n == pytest.approx(loss_1, rel=1e-6)
        for g1, gn in zip(grads_1, grads_n, strict=True):
            np.testing.assert_allclose(gn, g1, rtol=0, atol=1e-5 * np.abs(g1).max())
    sharded.close()


def _needs_fork():
    if not P.can_fork_workers():
        pytest.skip("no fork here: shards always run in threads")


def test_a_worker_exits_when_the_trainer_is_gone(two_shards):
    # The trainer's pipe ends closing (as at its exit, even by kill -9) must reach the
    # worker as end-of-file: it must not hold inherited copies of them open.
    _needs_fork()
    trainer = _trainer(3)
    xb, yb = next(iter(trainer.loader))
    trainer._train_step(xb, yb)
    runner = trainer._runner
    for connection in runner._connections:
        connection.close()  # no goodbye message
    for process in runner._processes:
        process.join(timeout=10)
        assert process.exitcode == 0


def test_a_worker_dead_since_the_last_step_gives_a_clear_error(two_shards):
    _needs_fork()
    trainer = _trainer(2)
    xb, yb = next(iter(trainer.loader))
    trainer._train_step(xb, yb)
    worker = trainer._runner._processes[0]
    worker.kill()
    worker.join()
    with pytest.raises(RuntimeError, match=r"^train: shard worker 1 died \(exit code -9\)"):
        trainer._train_step(xb, yb)
    trainer.close()


def test_a_short_last_batch_keeps_the_workers(monkeypatch):
    _needs_fork()
    _plan(monkeypatch, 4)
    started = []
    original = P.ProcessShards.__init__

    def counting(self, *args, **kwargs):
        started.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(P.ProcessShards, "__init__", counting)
    train_set, test_set = _splits()
    datasets = (ArrayDataset(train_set.x[:402], train_set.y[:402]), test_set)
    options = {"steps": 15, "batch_size": 100, "progress": False, "eval_every": 0,
               "threads": 3}  # every fifth batch has 2 rows: two shards, not four
    Trainer(default_config("mnist1d", "cnn", **options), datasets=datasets).run()
    assert started == [1]


# -- reproducible and resumable ---------------------------------------------------------------


def test_sharded_runs_are_bitwise_reproducible(two_shards):
    first = _trainer(2, steps=15).run()
    second = _trainer(2, steps=15).run()
    assert _same_bits(first.model.state_dict(), second.model.state_dict())


def test_sharded_training_follows_the_unsharded_run(monkeypatch):
    _plan(monkeypatch, 2)
    sharded = _trainer(2, steps=15).run().model.state_dict()
    _plan(monkeypatch, 1)
    whole = _trainer(2, steps=15).run().model.state_dict()
    assert not _same_bits(sharded, whole)  # two plans: other roundings
    for key in whole:
        np.testing.assert_allclose(sharded[key], whole[key], rtol=1e-3, atol=1e-4)


def test_sharded_resume_reaches_the_uninterrupted_weights(tmp_path, two_shards):
    reference = _trainer(2, steps=17).run().model.state_dict()
    folder = tmp_path / "run"
    _trainer(2, steps=7, checkpoint_dir=str(folder), checkpoint_every=3).run()
    assert load_checkpoint(folder / CHECKPOINT_NAME)[1]["step"] == 7
    resumed = _trainer(1, steps=17, checkpoint_dir=str(folder), checkpoint_every=3,
                       resume=True).run().model.state_dict()  # resumed with one worker
    assert _same_bits(reference, resumed)


@pytest.mark.parametrize("threads", [1, 2])
def test_frozen_parameters_are_left_alone(threads, runner, two_shards):
    trainer = _trainer(threads)
    trainer.model.conv1.weight.requires_grad = False
    before = trainer.model.conv1.weight.data.copy()
    xb, yb = next(iter(trainer.loader))
    trainer._train_step(xb, yb)
    np.testing.assert_array_equal(trainer.model.conv1.weight.data, before)
    assert trainer.model.conv1.weight.grad is None
    assert trainer.model.conv2.weight.grad is not None
    trainer.model.conv1.weight.requires_grad = True  # thawed: trained again
    trainer._train_step(xb, yb)
    assert not np.array_equal(trainer.model.conv1.weight.data, before)
    trainer.close()


# -- the one-thread BLAS limit ----------------------------------------------------------------


def _blas_threads() -> list[int]:
    from threadpoolctl import threadpool_info

    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


@pytest.mark.skipif(not P.can_limit_blas(), reason="threadpoolctl is not installed")
def test_blas_limit_nests_and_restores_only_at_the_outermost_block(monkeypatch):
    controller = P._blas_controller()
    calls = []

    class Counting:  # the controller, counting how often the limit is set
        def limit(self, **kwargs):
            calls.append(kwargs)
            return controller.limit(**kwargs)

    monkeypatch.setattr(P, "_blas_controller", Counting)
    before = _blas_threads()
    with P.single_threaded_blas():
        assert set(_blas_threads()) == {1}
        with P.single_threaded_blas():
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {1}  # the inner block's end keeps the outer limit
    assert _blas_threads() == before
    assert calls == [{"limits": 1, "user_api": "blas"}]  # set once, for the outer block
    with pytest.raises(KeyError), P.single_threaded_blas():
        raise KeyError("an exception inside the block")
    assert _blas_threads() == before  # restored on the way out of an exception too


@pytest.mark.skipif(not P.can_limit_blas(), reason="threadpoolctl is not installed")
def test_blas_limit_works_from_any_thread_and_is_restored_by_the_last_one_out():
    import threading

    before = _blas_threads()
    with P.single_threaded_blas():  # the main thread first
        pass
    seen, inside, leave = [], threading.Event(), threading.Event()

    def block():
        with P.single_threaded_blas():
            seen.append(set(_blas_threads()))
            inside.set()
            leave.wait(10)

    worker = threading.Thread(target=block)
    worker.start()
    inside.wait(10)
    assert seen == [{1}]  # a later block in another thread limits BLAS too
    with P.single_threaded_blas():
        pass  # the main thread enters and leaves while the worker is inside
    assert set(_blas_threads()) == {1}
    leave.set()
    worker.join()
    assert _blas_threads() == before  # the worker, last out, restored it


def _other_threads_cpu_ticks() -> int:
    """CPU time (clock ticks) used so far by this process's threads other than the main one."""
    total = 0
    for tid in os.listdir("/proc/self/task"):
        if int(tid) != os.getpid():
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total


@pytest.mark.skipif(not P.can_limit_blas() or not P.can_fork_workers()
                    or not os.path.isdir("/proc/self/task"),
                    reason="needs threadpoolctl, fork and /proc")
def test_a_child_forked_inside_the_blas_limit_keeps_it_without_starting_blas_threads(
        monkeypatch):
    # Setting the limit again in the child would restart OpenBLAS's thread pool there, and
    # its new threads spin (about 0.1 s of CPU each) on the cores the shards need. Other
    # libraries' pools restarted at a fork (scipy.fft's, say) sleep and cost nothing.
    read, write = os.pipe()

    def no_controller():
        raise AssertionError("the child looked up the BLAS libraries to limit them again")

    with P.single_threaded_blas():
        monkeypatch.setattr(P, "_blas_controller", no_controller)
        pid = os.fork()
        if pid == 0:
            try:
                os.close(read)
                with P.single_threaded_blas():
                    a = np.ones((256, 256), np.float32)
                    a @ a
                    time.sleep(0.2)
                    report = (f"{P._BLAS_LIMIT.depth}|{sorted(set(_blas_threads()))}|"
                              f"{_other_threads_cpu_ticks()}")
                os.write(write, report.encode())
            except BaseException as error:
                os.write(write, repr(error).encode())
            finally:
                os._exit(0)
        os.close(write)
        with os.fdopen(read) as child:
            reply = child.read()
        os.waitpid(pid, 0)
    assert reply.count("|") == 2, reply
    depth, threads, ticks = reply.split("|")
    assert (depth, threads) == ("2", "[1]")  # inside the parent's block and its own
    assert int(ticks) <= 2, f"other threads of the child used {ticks} ticks of CPU"


def test_a_worker_count_far_above_the_cores_is_capped_with_a_warning(monkeypatch):
    from cnnlab.train import parallel

    monkeypatch.setattr(parallel, "available_cores", lambda: 2)
    assert parallel.resolve_workers(3) == 3
    with pytest.warns(UserWarning, match=r"--threads 200 is more than 2 per available core; "
                                         r"using 4 \(the weights do not depend on it\)"):
        assert parallel.resolve_workers(200) == 4
