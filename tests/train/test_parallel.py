"""Data-parallel shards (``--threads``): a sharded step's loss and gradient are the whole
batch's, runs stay bitwise reproducible and resumable (and the same bits in worker
processes as in threads), a failing or dying shard fails the step cleanly, and models that
couple the samples of a batch are never sharded."""

from __future__ import annotations

import multiprocessing
import os
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


def test_a_failing_shard_fails_the_step_only_after_every_shard_stopped(
        monkeypatch, tmp_path, runner):
    trainer = _trainer(3, batch_size=90)
    xb, yb = next(iter(trainer.loader))
    log, original = tmp_path / "log", trainer._shard_gradients

    def shard(x, y, weight, params):
        if np.array_equal(x, xb[30:60]):  # the first worker shard fails at once
            _log(log, "failed")
            raise FloatingPointError("shard exploded")
        if np.array_equal(x, xb[60:90]):
            time.sleep(0.3)  # the other worker shard is still running then
            _log(log, "slow shard finished")
        return original(x, y, weight, params)

    monkeypatch.setattr(trainer, "_shard_gradients", shard)
    with pytest.raises(FloatingPointError, match="shard exploded"):
        trainer._loss_and_gradients(xb, yb, list(trainer.model.parameters()))
    _log(log, "step raised")
    assert log.read_text().splitlines() == ["failed", "slow shard finished", "step raised"]
    trainer.close()


@pytest.mark.parametrize(("threads", "batch"), [(2, 100), (3, 100), (4, 90), (7, 33)])
def test_sharded_loss_and_gradient_are_the_batch_ones(threads, batch):
    whole, sharded = _trainer(1, batch_size=batch), _trainer(threads, batch_size=batch)
    assert sharded.threads == threads
    xb, yb = next(iter(whole.loader))
    params_1, params_n = list(whole.model.parameters()), list(sharded.model.parameters())
    loss_1, grads_1 = whole._loss_and_gradients(xb, yb, params_1)
    loss_n, grads_n = sharded._loss_and_gradients(xb, yb, params_n)
    assert loss_n == pytest.approx(loss_1, rel=1e-6)
    for g1, gn in zip(grads_1, grads_n, strict=True):
        scale = np.abs(g1).max()
        np.testing.assert_allclose(gn, g1, rtol=0, atol=1e-5 * scale)
    assert all(p.grad is None for p in sharded.model.parameters())


def test_worker_processes_and_threads_give_the_same_bits(monkeypatch):
    _needs_fork()
    before = set(multiprocessing.active_children())
    processes = _trainer(2, steps=15).run().model.state_dict()
    assert set(multiprocessing.active_children()) <= before  # the run stopped its workers
    monkeypatch.setattr(L, "can_fork_workers", lambda: False)
    threads = _trainer(2, steps=15).run().model.state_dict()
    assert all(processes[key].tobytes() == threads[key].tobytes() for key in processes)


def test_a_dying_worker_fails_the_step_with_a_clear_error(monkeypatch):
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
    workers = trainer._shards._processes
    trainer.close()
    assert not any(worker.is_alive() for worker in workers)


def test_a_batch_bigger_than_the_configured_one_is_sharded_too(runner):
    whole, sharded = _trainer(1, batch_size=50), _trainer(2, batch_size=50)
    x, y = _splits()[0].x, _splits()[0].y
    params_1, params_n = list(whole.model.parameters()), list(sharded.model.parameters())
    for rows in (50, 130, 40):  # the workers' buffers hold 25 rows at first
        loss_1, grads_1 = whole._loss_and_gradients(x[:rows], y[:rows], params_1)
        loss_n, grads_n = sharded._loss_and_gradients(x[:rows], y[:rows], params_n)
        assert loss_n == pytest.approx(loss_1, rel=1e-6)
        for g1, gn in zip(grads_1, grads_n, strict=True):
            np.testing.assert_allclose(gn, g1, rtol=0, atol=1e-5 * np.abs(g1).max())
    sharded.close()


def _needs_fork():
    if not P.can_fork_workers():
        pytest.skip("no fork here: shards always run in threads")


def test_a_worker_exits_when_the_trainer_is_gone():
    # The trainer's pipe ends closing (as at its exit, even by kill -9) must reach the
    # worker as end-of-file: it must not hold inherited copies of them open.
    _needs_fork()
    trainer = _trainer(3, batch_size=90)
    xb, yb = next(iter(trainer.loader))
    trainer._train_step(xb, yb)
    shards = trainer._shards
    for connection in shards._connections:
        connection.close()  # no goodbye message
    for process in shards._processes:
        process.join(timeout=10)
        assert process.exitcode == 0


def test_a_worker_dead_since_the_last_step_gives_a_clear_error():
    _needs_fork()
    trainer = _trainer(2)
    xb, yb = next(iter(trainer.loader))
    trainer._train_step(xb, yb)
    worker = trainer._shards._processes[0]
    worker.kill()
    worker.join()
    with pytest.raises(RuntimeError, match=r"^train: shard worker 1 died \(exit code -9\)"):
        trainer._train_step(xb, yb)
    trainer.close()


def test_a_short_last_batch_keeps_the_workers(monkeypatch):
    _needs_fork()
    started = []
    original = P.ProcessShards.__init__

    def counting(self, *args, **kwargs):
        started.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(P.ProcessShards, "__init__", counting)
    train_set, test_set = _splits()
    datasets = (ArrayDataset(train_set.x[:402], train_set.y[:402]), test_set)
    options = {"steps": 15, "batch_size": 100, "progress": False, "eval_every": 0,
               "threads": 3}  # every fifth batch has 2 rows: fewer rows than shards
    Trainer(default_config("mnist1d", "cnn", **options), datasets=datasets).run()
    assert started == [1]


def test_sharded_runs_are_bitwise_reproducible():
    first = _trainer(2, steps=15).run()
    second = _trainer(2, steps=15).run()
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(a[key].tobytes() == b[key].tobytes() for key in a)


def test_sharded_training_follows_the_unsharded_run():
    sharded = _trainer(2, steps=15).run().model.state_dict()
    whole = _trainer(1, steps=15).run().model.state_dict()
    for key in whole:
        np.testing.assert_allclose(sharded[key], whole[key], rtol=1e-3, atol=1e-4)


def test_sharded_resume_reaches_the_uninterrupted_weights(tmp_path):
    reference = _trainer(2, steps=17).run().model.state_dict()
    folder = tmp_path / "run"
    _trainer(2, steps=7, checkpoint_dir=str(folder), checkpoint_every=3).run()
    assert load_checkpoint(folder / CHECKPOINT_NAME)[1]["step"] == 7
    resumed = _trainer(2, steps=17, checkpoint_dir=str(folder), checkpoint_every=3,
                       resume=True).run().model.state_dict()
    assert all(reference[key].tobytes() == resumed[key].tobytes() for key in reference)


def test_a_failing_shard_fails_the_step(monkeypatch, tmp_path, runner):
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


def test_auto_threads_shard_big_batches_only(monkeypatch):
    monkeypatch.setattr(P, "available_cores", lambda: 2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())
    assert P.resolve_threads(0, model, 128, 28 * 28) == 2   # LeNet-5's batches
    assert P.resolve_threads(0, model, 100, 40) == 1        # MNIST-1D's batches
    assert P.resolve_threads(0, model, 1, 10**6) == 1       # never more shards than samples
    monkeypatch.setattr(P, "available_cores", lambda: 1)
    assert P.resolve_threads(0, model, 128, 28 * 28) == 1


@pytest.mark.parametrize("layer", [nn.BatchNorm2d(4), nn.Dropout(0.1)])
def test_models_that_couple_samples_are_not_sharded(monkeypatch, layer):
    monkeypatch.setattr(P, "available_cores", lambda: 2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), layer, nn.ReLU())
    assert P.resolve_threads(0, model, 128, 28 * 28) == 1
    name = type(layer).__name__
    with pytest.raises(ValueError, match=rf"^train: --threads 2 .* this model's {name} "
                                         r"couples the samples of a batch; use --threads 1"):
        P.resolve_threads(2, model, 128, 28 * 28)
    assert P.resolve_threads(1, model, 128, 28 * 28) == 1


def test_negative_threads_are_refused():
    with pytest.raises(ValueError, match=r"^train: threads must be >= 0 \(0: auto\), got -1"):
        default_config("mnist1d", "cnn", threads=-1)


@pytest.mark.parametrize("threads", [1, 2])
def test_frozen_parameters_are_left_alone(threads, runner):
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


@pytest.mark.parametrize(("size", "shards"), [(10, 3), (128, 2), (5, 8), (1, 1), (33, 7)])
def test_shard_bounds_cover_the_batch_evenly(size, shards):
    bounds = P.shard_bounds(size, shards)
    assert len(bounds) == min(size, shards)
    assert bounds[0][0] == 0 and bounds[-1][1] == size
    assert all(a[1] == b[0] for a, b in pairwise(bounds))
    sizes = [stop - start for start, stop in bounds]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1


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
